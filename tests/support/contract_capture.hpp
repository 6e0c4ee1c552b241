// Test support: the project's tests use the public GoogleTest helpers
// (tasklife/testing.hpp) under their historical names.
#pragma once

#include <tasklife/testing.hpp>

namespace tasklife::test {
using testing::contract_capture;
using testing::contract_error;
}  // namespace tasklife::test
