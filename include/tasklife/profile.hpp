// tasklife/profile.hpp — the kernel's history of the BPF task kfuncs, as
// selectable semantics profiles.
//
// What it is
//   A profile is one era of kernel/bpf/helpers.c and the task_struct layout under
//   it (kernel_config::profile picks one per kernel instance). Each profile is one
//   row of `semantics_profiles`: its name, the commits that define it, and the
//   capabilities the code asks about by name — never by the enum's order:
//
//   | profile       | era                                   | acquire takes              |
//   |---------------|---------------------------------------|----------------------------|
//   | rcu_users_inc | 90660309b0c7 (Nov 2022)               | refcount_inc(&rcu_users)   |
//   | usage_based   | 156ed20d22ee (Dec 2022, v6.2 .. v6.3) | get_task_struct (usage)    |
//   | rcu_safe      | d02c48fa1139, 22df776a9a86,           | refcount_inc_not_zero(     |
//   |               | f85671c6ef46 (v6.4+)                  |   &rcu_users)              |
//   | current       | rcu_safe + bpf_task_release_dtor      | refcount_inc_not_zero(     |
//   |               | (v6.8) + bpf_task_from_vpid (v6.13)   |   &rcu_users)              |
//
//   Which kfuncs exist in a profile and with which KF_* flags is the kfunc table's
//   business (kfunc.hpp), one row per kfunc.
//
//   Two columns are about the map side (map.hpp), each false in the newest kernel,
//   so that a row that leaves them out gets today's behaviour:
//   - dtor_on_empty_slot: bpf_obj_free_fields calls the destructor on whatever
//     the exchange took out of a referenced kptr slot, NULL too (14a324f6a67e
//     "bpf: Wire up freeing of referenced kptr", v5.19, until 1431d0b584a6 "bpf:
//     Only invoke kptr dtor following non-NULL xchg", v6.4). The task destructor
//     of those kernels, bpf_task_release, began with "if (!p) return;", which
//     fb2211a57c11 could only remove after 1431d0b584a6; a local object's drop
//     had no such check.
//   - leaks_fields_set_after_delete: a reference exchanged into a hash element
//     after its delete is never released: the delete-time free has run, and the
//     element's memory is reclaimed without a second one. Fixed in 2026 by a
//     destructor of the BPF memory allocator for hash elements (htab_mem_dtor,
//     set through bpf_mem_alloc_set_dtor; the map_kptr_race selftest), after Hou
//     Tao's report and RFC of May 2025.
//
// Members
//   semantics_profile, semantics_profile_count, acquire_style, profile_info,
//   semantics_profiles, info(profile), to_string(profile), rcu_users_in_union
//   (columns: acquire, rcu_users_in_union, from_pid_checks_acquire, release_null_safe,
//   inline_fast_path, dtor_on_empty_slot, leaks_fields_set_after_delete)
//
// Lifetime
//   Constants.
//
// Memory ordering
//   None: constant data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>

namespace tasklife {

enum class semantics_profile : std::uint8_t {
  rcu_users_inc,
  usage_based,
  rcu_safe,
  current,
  count_,  // not a profile: the number of them
};
inline constexpr std::size_t semantics_profile_count =
    static_cast<std::size_t>(semantics_profile::count_);

// What bpf_task_acquire does to take its reference.
enum class acquire_style : std::uint8_t {
  rcu_users_inc,          // refcount_inc(&rcu_users): from 0, ADD_UAF and the task dies anyway
  usage_inc,              // get_task_struct: usage +1; release is put_task_struct
  rcu_users_inc_not_zero  // refcount_inc_not_zero(&rcu_users): NULL for a dying task
};

struct profile_info {
  semantics_profile profile;
  std::string_view name;
  std::string_view commits;  // what defines the profile, for reports and docs
  acquire_style acquire;
  // rcu_users shares its storage with the RCU callback head (v5.4 .. v6.3, until
  // 22df776a9a86): a queued callback's `next` pointer overwrites it.
  bool rcu_users_in_union;
  // bpf_task_from_pid passes the acquire's result on (3f0e6f2b41d3 ignored it).
  bool from_pid_checks_acquire;
  // bpf_task_release(NULL) returns at once ("if (!p) return;", before KF_RELEASE
  // arguments became trusted in 2023); later a NULL is the verifier's error.
  bool release_null_safe;
  // The kfuncs are the kernel's bodies with nothing around them when no check is
  // watching: acquire is inc_not_zero on rcu_users, release put_task_struct_rcu_user.
  // Such profiles may take kfunc.hpp's inline fast paths.
  bool inline_fast_path;
  // bpf_obj_free_fields calls the destructor on an empty slot's NULL (see above).
  bool dtor_on_empty_slot = false;
  // A reference exchanged into a deleted hash element leaks (see above).
  bool leaks_fields_set_after_delete = false;
};

inline constexpr profile_info semantics_profiles[] = {
    {semantics_profile::rcu_users_inc, "rcu_users_inc", "90660309b0c7 (Nov 2022)",
     acquire_style::rcu_users_inc, true, false, true, false, true, true},
    {semantics_profile::usage_based, "usage_based", "156ed20d22ee (Dec 2022, v6.2)",
     acquire_style::usage_inc, true, true, true, false, true, true},
    {semantics_profile::rcu_safe, "rcu_safe",
     "d02c48fa1139 + 22df776a9a86 + f85671c6ef46 + 1431d0b584a6 (v6.4)",
     acquire_style::rcu_users_inc_not_zero, false, true, false, true, false, true},
    {semantics_profile::current, "current",
     "rcu_safe + bpf_task_release_dtor (v6.8) + bpf_task_from_vpid (v6.13) + the hash "
     "element destructor (2026)",
     acquire_style::rcu_users_inc_not_zero, false, true, false, true, false, false},
};
static_assert(std::size(semantics_profiles) == semantics_profile_count);

// A profile's row. `p` must be a profile (kernel validates its configuration).
constexpr const profile_info& info(semantics_profile p) noexcept {
  return semantics_profiles[static_cast<std::size_t>(p)];
}
constexpr bool is_valid(semantics_profile p) noexcept {
  return static_cast<std::size_t>(p) < semantics_profile_count;
}

namespace detail {
constexpr bool profile_table_in_enum_order() {
  for (std::size_t i = 0; i < semantics_profile_count; ++i) {
    if (static_cast<std::size_t>(semantics_profiles[i].profile) != i) {
      return false;
    }
  }
  return true;
}
static_assert(profile_table_in_enum_order(), "semantics_profiles must list the profiles in order");
// The inline fast paths are the bodies of acquire = inc_not_zero(rcu_users) and
// release = put_task_struct_rcu_user: no other profile may claim them.
constexpr bool fast_path_claims_hold() {
  for (const profile_info& p : semantics_profiles) {
    if (p.inline_fast_path &&
        (p.acquire != acquire_style::rcu_users_inc_not_zero || p.rcu_users_in_union)) {
      return false;
    }
  }
  return true;
}
static_assert(fast_path_claims_hold(), "inline_fast_path needs the v6.4+ acquire and layout");
// A kernel that ran the task destructor on NULL had a release that accepted NULL:
// the NULL checks went (fb2211a57c11) only once the destructor stopped (1431d0b584a6).
constexpr bool null_dtor_needs_null_safe_release() {
  for (const profile_info& p : semantics_profiles) {
    if (p.dtor_on_empty_slot && !p.release_null_safe) {
      return false;
    }
  }
  return true;
}
static_assert(null_dtor_needs_null_safe_release(),
              "dtor_on_empty_slot needs release_null_safe (1431d0b584a6 before fb2211a57c11)");
}  // namespace detail

constexpr std::string_view to_string(semantics_profile p) noexcept {
  return info(p).name;
}
constexpr bool rcu_users_in_union(semantics_profile p) noexcept {
  return info(p).rcu_users_in_union;
}

}  // namespace tasklife
