// Precompiled for the test targets (tests/CMakeLists.txt): the core list and GoogleTest.
#pragma once

#include "core.hpp"

#include <gtest/gtest.h>
