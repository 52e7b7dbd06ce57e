// The way from a public heap handle to the heap behind it, for the library
// and its tests (tests/, fuzz/): heap.hpp names heap_access a friend and
// declares nothing else of it, so users have no escape hatch into lib/.
#pragma once

#include <memory>
#include <utility>

#include "heap/heap_impl.hpp"

namespace daxalloc::detail {

struct heap_access {
  // errc::invalid_argument on an empty handle, as every member of heap.
  [[nodiscard]] static heap_impl& impl(const heap& h) { return h.live(); }
  // A handle around a heap opened through the internal interface.
  [[nodiscard]] static heap wrap(std::unique_ptr<heap_impl> impl) { return heap(std::move(impl)); }
};

[[nodiscard]] inline heap_impl& internals(const heap& h) {
  return heap_access::impl(h);
}

}  // namespace daxalloc::detail
