// Test support: the names the tests use unqualified, declared once in namespace
// tasklife: the kit's (tasklife::testing) and gMock's matchers.
#pragma once

#include <gmock/gmock.h>

#include <tasklife/testing.hpp>

namespace tasklife {

using ::testing::AllOf;
using ::testing::Contains;
using testing::contract_error;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::rcu_users;
using ::testing::StartsWith;
using testing::usage;

}  // namespace tasklife
