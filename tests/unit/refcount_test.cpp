// refcount_t against the kernel (docs/kernel.md §7): every lkdtm REFCOUNT_* case
// (drivers/misc/lkdtm/refcount.c, expectations from the current saturating
// implementation), the once-per-kind warning machinery, and the decrement
// variants. The kernel_test fixture fails a test on any warning it does not
// declare (ExpectSingleWarning declares the one it checks).
#include <climits>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/refcount.hpp>
#include <tasklife/testing.hpp>

namespace tasklife {
namespace {

constexpr unsigned kSaturated = static_cast<unsigned>(REFCOUNT_SATURATED);
constexpr unsigned u(int v) {
  return static_cast<unsigned>(v);
}

class RefcountTest : public testkit::kernel_test {
 protected:
  // Exactly one warning of `type` was raised and reached the sink, with the
  // kernel's message, after the counter had been saturated (and it is declared).
  void ExpectSingleWarning(refcount_saturation_type type, const refcount_t* r) {
    expect_refcount_warning(type);
    EXPECT_EQ(refcount_warnings_seen(type), 1U);
    const auto warnings = capture().refcount_warnings();
    ASSERT_EQ(warnings.size(), 1U);
    EXPECT_EQ(warnings[0].warning.type, type);
    EXPECT_EQ(warnings[0].warning.ref, r);
    EXPECT_EQ(warnings[0].warning.message, refcount_warning_message(type));
    EXPECT_TRUE(warnings[0].warning.saturated);
    EXPECT_EQ(warnings[0].value_at_warning, kSaturated)
        << "saturation is written before the warning";
  }
  void ExpectNoWarning() { EXPECT_TRUE(capture().refcount_warnings().empty()); }
};

TEST_F(RefcountTest, KernelConstants) {
  EXPECT_EQ(REFCOUNT_MAX, INT_MAX);
  EXPECT_EQ(REFCOUNT_SATURATED, INT_MIN / 2);
  EXPECT_EQ(kSaturated, 0xc0000000U);
  EXPECT_EQ(refcount_warning_message(REFCOUNT_ADD_NOT_ZERO_OVF),
            "refcount_t: saturated; leaking memory.");
  EXPECT_EQ(refcount_warning_message(REFCOUNT_ADD_OVF), "refcount_t: saturated; leaking memory.");
  EXPECT_EQ(refcount_warning_message(REFCOUNT_ADD_UAF),
            "refcount_t: addition on 0; use-after-free.");
  EXPECT_EQ(refcount_warning_message(REFCOUNT_SUB_UAF), "refcount_t: underflow; use-after-free.");
  EXPECT_EQ(refcount_warning_message(REFCOUNT_DEC_LEAK),
            "refcount_t: decrement hit 0; leaking memory.");
}

TEST_F(RefcountTest, SetReadIncDecWithoutWarnings) {
  refcount_t r{1};
  refcount_inc(&r);
  refcount_add(3, &r);
  EXPECT_EQ(refcount_read(&r), 5U);
  refcount_dec(&r);
  EXPECT_FALSE(refcount_sub_and_test(3, &r));
  EXPECT_TRUE(refcount_dec_and_test(&r));
  EXPECT_EQ(refcount_read(&r), 0U);
  refcount_set(&r, 7);
  EXPECT_EQ(refcount_read(&r), 7U);
  refcount_set_release(&r, 2);
  EXPECT_TRUE(refcount_inc_not_zero_acquire(&r));
  EXPECT_TRUE(refcount_add_not_zero_acquire(2, &r));
  EXPECT_EQ(refcount_read(&r), 5U);
  ExpectNoWarning();
}

// ---- lkdtm: overflow ----------------------------------------------------------------------

TEST_F(RefcountTest, LkdtmIncOverflow) {
  refcount_t over{REFCOUNT_MAX - 1};
  refcount_dec(&over);  // good: no overflow
  refcount_inc(&over);
  ExpectNoWarning();
  refcount_inc(&over);  // bad: the second one overflows
  EXPECT_EQ(refcount_read(&over), u(REFCOUNT_MAX));
  refcount_inc(&over);
  EXPECT_EQ(refcount_read(&over), kSaturated);
  ExpectSingleWarning(REFCOUNT_ADD_OVF, &over);
}

TEST_F(RefcountTest, LkdtmAddOverflow) {
  refcount_t over{REFCOUNT_MAX - 1};
  for (int i = 0; i < 4; ++i) {
    refcount_dec(&over);
  }
  refcount_add(4, &over);  // good: back to MAX - 1
  EXPECT_EQ(refcount_read(&over), u(REFCOUNT_MAX - 1));
  ExpectNoWarning();
  refcount_add(4, &over);  // bad
  EXPECT_EQ(refcount_read(&over), kSaturated);
  ExpectSingleWarning(REFCOUNT_ADD_OVF, &over);
}

// ---- lkdtm: zero and negative ---------------------------------------------------------------

TEST_F(RefcountTest, LkdtmDecZero) {
  refcount_t zero{2};
  refcount_dec(&zero);  // good
  ExpectNoWarning();
  refcount_dec(&zero);  // bad: hits 0 ("Zero detected: saturated")
  EXPECT_EQ(refcount_read(&zero), kSaturated);
  ExpectSingleWarning(REFCOUNT_DEC_LEAK, &zero);
}

TEST_F(RefcountTest, LkdtmIncZero) {
  refcount_t zero{0};
  EXPECT_FALSE(refcount_inc_not_zero(&zero));
  EXPECT_EQ(refcount_read(&zero), 0U) << "inc_not_zero must leave a dead counter at 0";
  ExpectNoWarning();
  refcount_inc(&zero);  // not refused: the value becomes 1, then saturates and warns
  EXPECT_EQ(refcount_read(&zero), kSaturated) << "\"Zero detected: saturated\"";
  ExpectSingleWarning(REFCOUNT_ADD_UAF, &zero);
}

TEST_F(RefcountTest, LkdtmAddZero) {
  refcount_t zero{0};
  EXPECT_FALSE(refcount_add_not_zero(3, &zero));
  EXPECT_EQ(refcount_read(&zero), 0U);
  ExpectNoWarning();
  refcount_add(3, &zero);
  EXPECT_EQ(refcount_read(&zero), kSaturated);
  ExpectSingleWarning(REFCOUNT_ADD_UAF, &zero);
}

// ---- lkdtm: one operation on a dead, negative or saturated counter ---------------------------

// A case of lkdtm's that is one operation: the counter's value before it, the
// operation (returning its result; false for the void ones), the result it must
// give (for those that give one), and the warning it raises. The counter is
// saturated afterwards in every case: saturated stays saturated.
struct lkdtm_case {
  const char* name;
  int initial;
  bool (*op)(refcount_t*);
  std::optional<bool> returns;
  refcount_saturation_type warning;
  const char* note = "";
};

void PrintTo(const lkdtm_case& c, std::ostream* os) {
  *os << c.name;
}

class RefcountLkdtmTest : public RefcountTest, public ::testing::WithParamInterface<lkdtm_case> {};

TEST_P(RefcountLkdtmTest, SaturatesAndWarnsOnce) {
  const lkdtm_case& c = GetParam();
  refcount_t r{c.initial};
  const bool result = c.op(&r);
  if (c.returns.has_value()) {
    EXPECT_EQ(result, *c.returns);
  }
  EXPECT_EQ(refcount_read(&r), kSaturated) << c.note;
  ExpectSingleWarning(c.warning, &r);
}

const lkdtm_case kLkdtmCases[] = {
    {"IncNotZeroOverflow", REFCOUNT_MAX, [](refcount_t* r) { return refcount_inc_not_zero(r); },
     true, REFCOUNT_ADD_NOT_ZERO_OVF},
    {"AddNotZeroOverflow", REFCOUNT_MAX, [](refcount_t* r) { return refcount_add_not_zero(6, r); },
     true, REFCOUNT_ADD_NOT_ZERO_OVF},
    {"DecNegative", 0,
     [](refcount_t* r) {
       refcount_dec(r);
       return false;
     },
     std::nullopt, REFCOUNT_DEC_LEAK, "\"Negative detected: saturated\""},
    {"DecAndTestNegative", 0, [](refcount_t* r) { return refcount_dec_and_test(r); }, false,
     REFCOUNT_SUB_UAF},
    {"SubAndTestNegative", 3, [](refcount_t* r) { return refcount_sub_and_test(5, r); }, false,
     REFCOUNT_SUB_UAF},
    // Added with the 2024 fix to refcount_sub_and_test: subtracting 0 from a dead
    // counter must not look like the last reference going away.
    {"SubAndTestZero", 0, [](refcount_t* r) { return refcount_sub_and_test(0, r); }, false,
     REFCOUNT_SUB_UAF},
    {"IncSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) {
       refcount_inc(r);
       return false;
     },
     std::nullopt, REFCOUNT_ADD_OVF, "\"Saturation detected: still saturated\""},
    {"DecSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) {
       refcount_dec(r);
       return false;
     },
     std::nullopt, REFCOUNT_DEC_LEAK},
    {"AddSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) {
       refcount_add(8, r);
       return false;
     },
     std::nullopt, REFCOUNT_ADD_OVF},
    {"IncNotZeroSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) { return refcount_inc_not_zero(r); }, true, REFCOUNT_ADD_NOT_ZERO_OVF},
    {"AddNotZeroSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) { return refcount_add_not_zero(7, r); }, true, REFCOUNT_ADD_NOT_ZERO_OVF},
    {"DecAndTestSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) { return refcount_dec_and_test(r); }, false, REFCOUNT_SUB_UAF},
    {"SubAndTestSaturated", REFCOUNT_SATURATED,
     [](refcount_t* r) { return refcount_sub_and_test(8, r); }, false, REFCOUNT_SUB_UAF},
};

INSTANTIATE_TEST_SUITE_P(Lkdtm, RefcountLkdtmTest, ::testing::ValuesIn(kLkdtmCases),
                         [](const ::testing::TestParamInfo<lkdtm_case>& param_info) {
                           return std::string(param_info.param.name);
                         });

// ---- lkdtm: the count walk -------------------------------------------------------------------

// lkdtm's REFCOUNT_TIMING walks up INT_MAX - 4 increments and back down; the
// final dec_and_test must report 0 at exactly the last step. The full walk takes
// ~20 s, so the step count is scaled: TASKLIFE_REFCOUNT_TIMING_STEPS (default 2^22).
TEST_F(RefcountTest, LkdtmTimingReachesZeroExactlyAtTheLastStep) {
  unsigned steps = 1U << 22;
  if (const char* env = std::getenv("TASKLIFE_REFCOUNT_TIMING_STEPS")) {
    steps = static_cast<unsigned>(std::stoul(env));
  }
  refcount_t count{1};
  for (unsigned i = 0; i < steps; ++i) {
    refcount_inc(&count);
  }
  unsigned hit_zero_at = 0;
  for (unsigned i = 0; i < steps; ++i) {
    if (refcount_dec_and_test(&count)) {
      hit_zero_at = i + 1;
      break;
    }
  }
  EXPECT_EQ(hit_zero_at, 0U) << "reached 0 early";
  EXPECT_TRUE(refcount_dec_and_test(&count)) << "the last reference must bring it to 0";
  EXPECT_EQ(refcount_read(&count), 0U);
  ExpectNoWarning();
}

// ---- WARN_ONCE per kind -------------------------------------------------------------------

TEST_F(RefcountTest, EachKindWarnsOnceUntilReset) {
  expect_refcount_warning(REFCOUNT_ADD_UAF);
  expect_refcount_warning(REFCOUNT_DEC_LEAK);
  refcount_t a{0};
  refcount_t b{0};
  refcount_inc(&a);
  refcount_inc(&b);  // same kind, second occurrence: counted, not warned
  EXPECT_EQ(refcount_warnings_seen(REFCOUNT_ADD_UAF), 2U);
  EXPECT_EQ(capture().refcount_warnings().size(), 1U);
  EXPECT_EQ(refcount_read(&b), kSaturated) << "saturation does not depend on the warning";

  refcount_t c{0};
  refcount_dec(&c);  // another kind warns independently
  EXPECT_EQ(capture().refcount_warnings().size(), 2U);

  refcount_reset_warnings();
  EXPECT_EQ(refcount_warnings_seen(REFCOUNT_ADD_UAF), 0U);
  refcount_t d{0};
  refcount_inc(&d);
  const auto warnings = capture().refcount_warnings();
  ASSERT_EQ(warnings.size(), 3U);
  EXPECT_EQ(warnings[2].warning.type, REFCOUNT_ADD_UAF);
  EXPECT_EQ(warnings[2].warning.ref, &d);
}

TEST_F(RefcountTest, WarningNamesTheCallSite) {
  expect_refcount_warning(REFCOUNT_ADD_UAF);
  refcount_t r{0};
  const int line = __LINE__ + 1;
  refcount_inc(&r);
  const auto warnings = capture().refcount_warnings();
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_EQ(warnings[0].warning.where.line(), static_cast<unsigned>(line));
  EXPECT_THAT(warnings[0].warning.where.file_name(), ::testing::HasSubstr("refcount_test.cpp"));
}

// ---- dec_if_one / dec_not_one -------------------------------------------------------------

TEST_F(RefcountTest, DecIfOneOnlyFromOne) {
  refcount_t r{2};
  EXPECT_FALSE(refcount_dec_if_one(&r));
  EXPECT_EQ(refcount_read(&r), 2U);
  refcount_dec(&r);
  EXPECT_TRUE(refcount_dec_if_one(&r));
  EXPECT_EQ(refcount_read(&r), 0U);
  EXPECT_FALSE(refcount_dec_if_one(&r));
  ExpectNoWarning();
}

TEST_F(RefcountTest, DecNotOneRefusesOneAndIgnoresSaturated) {
  refcount_t r{3};
  EXPECT_TRUE(refcount_dec_not_one(&r));
  EXPECT_EQ(refcount_read(&r), 2U);
  EXPECT_TRUE(refcount_dec_not_one(&r));
  EXPECT_FALSE(refcount_dec_not_one(&r));
  EXPECT_EQ(refcount_read(&r), 1U);
  refcount_t sat{REFCOUNT_SATURATED};
  EXPECT_TRUE(refcount_dec_not_one(&sat));
  EXPECT_EQ(refcount_read(&sat), kSaturated);
  ExpectNoWarning();
}

TEST_F(RefcountTest, DecNotOneFromZeroWarnsUnderflowWithoutSaturating) {
  expect_refcount_warning(REFCOUNT_SUB_UAF);
  refcount_t zero{0};
  EXPECT_TRUE(refcount_dec_not_one(&zero));
  EXPECT_EQ(refcount_read(&zero), 0U);
  const auto warnings = capture().refcount_warnings();
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_EQ(warnings[0].warning.message, "refcount_t: underflow; use-after-free.");
  EXPECT_FALSE(warnings[0].warning.saturated);
}

// ---- _acquire and _limited_ ----------------------------------------------------------------

TEST_F(RefcountTest, AcquireVariantsRefuseAtTheLimitInsteadOfSaturating) {
  refcount_t at_max{REFCOUNT_MAX};
  EXPECT_FALSE(refcount_inc_not_zero_acquire(&at_max));
  EXPECT_EQ(refcount_read(&at_max), u(REFCOUNT_MAX));
  refcount_t sat{REFCOUNT_SATURATED};
  EXPECT_FALSE(refcount_add_not_zero_acquire(1, &sat)) << "a saturated count is past any limit";
  EXPECT_EQ(refcount_read(&sat), kSaturated);
  refcount_t zero{0};
  EXPECT_FALSE(refcount_inc_not_zero_acquire(&zero));
  EXPECT_EQ(refcount_read(&zero), 0U);
  refcount_t limited{9};
  EXPECT_TRUE(refcount_inc_not_zero_limited_acquire(&limited, 10));
  EXPECT_FALSE(refcount_inc_not_zero_limited_acquire(&limited, 10));
  EXPECT_EQ(refcount_read(&limited), 10U);
  ExpectNoWarning();
}

// Whether another thread finds `m` locked (try_lock on a mutex the caller owns is UB).
bool HeldByThisThread(std::mutex& m) {
  bool acquired = false;
  std::thread probe([&] {
    acquired = m.try_lock();
    if (acquired) {
      m.unlock();
    }
  });
  probe.join();
  return !acquired;
}

TEST_F(RefcountTest, DecAndMutexLockHoldsTheLockOnlyForTheLastReference) {
  std::mutex lock;
  refcount_t r{2};
  EXPECT_FALSE(refcount_dec_and_mutex_lock(&r, &lock));
  EXPECT_FALSE(HeldByThisThread(lock)) << "not the last reference: the lock must not be held";
  EXPECT_TRUE(refcount_dec_and_lock(&r, &lock));
  EXPECT_TRUE(HeldByThisThread(lock)) << "the last reference returns with the lock held";
  lock.unlock();
  EXPECT_EQ(refcount_read(&r), 0U);
  ExpectNoWarning();
}

}  // namespace
}  // namespace tasklife
