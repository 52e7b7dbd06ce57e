// Everything daxalloc's C++ API offers, in one include:
//
//   #include <daxalloc/daxalloc.hpp>
//
// Each header is also usable on its own; this one adds nothing of its own.
#pragma once

#include "daxalloc/version.hpp"  // first: it refuses a standard older than C++20

#include "daxalloc/allocator.hpp"
#include "daxalloc/batch.hpp"
#include "daxalloc/devices.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/export.h"
#include "daxalloc/heap.hpp"
#include "daxalloc/introspection.hpp"
#include "daxalloc/persist.hpp"
#include "daxalloc/pptr.hpp"
#include "daxalloc/region.hpp"
