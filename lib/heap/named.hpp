// What the named-object index (named.cpp) allocated, for the iteration of
// every object (introspect.cpp).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "daxalloc/heap.hpp"

namespace daxalloc::detail {

// The index's allocations by offset: its table and the names' strings
// (object_kind::name_index) and each name's objects (object_kind::named).
// errc::corrupt for a damaged index, as every named-object call.
[[nodiscard]] std::vector<std::pair<std::uint64_t, object_kind>> named_allocations(const heap& h);

}  // namespace daxalloc::detail
