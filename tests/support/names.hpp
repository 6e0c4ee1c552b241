// Test support: the names the tests use unqualified, declared once in namespace
// tasklife: the kit's (tasklife::testkit) and gMock's matchers.
#pragma once

#include <gmock/gmock.h>

#include <tasklife/testing.hpp>

namespace tasklife {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using testkit::about;
using testkit::capture_mode;
using testkit::contract_capture;
using testkit::contract_error;
using testkit::HasCounters;
using testkit::HasEventsInOrder;
using testkit::HasExitState;
using testkit::HasRcuUsers;
using testkit::HasUsage;
using testkit::IsAllocatedIn;
using testkit::IsEvent;
using testkit::IsEventOf;
using testkit::IsExiting;
using testkit::IsFreedIn;
using testkit::IsHashedIn;
using testkit::IsViolation;
using testkit::IsViolationAbout;
using testkit::rcu_users;
using testkit::usage;

}  // namespace tasklife
