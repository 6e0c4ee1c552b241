// Test support: the names the tests use unqualified, declared once in namespace
// tasklife: the kit's (tasklife::testkit) and gMock's matchers.
#pragma once

#include <gmock/gmock.h>

#include <tasklife/testing.hpp>

namespace tasklife {

using ::testing::AllOf;
using ::testing::Contains;
using testkit::contract_error;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testkit::rcu_users;
using ::testing::StartsWith;
using testkit::usage;
using testkit::about;
using testkit::capture_mode;
using testkit::contract_capture;
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

}  // namespace tasklife
