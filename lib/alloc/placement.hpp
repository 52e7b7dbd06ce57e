// Placement by NUMA node, shared by the page and small-object allocators:
// the node of each span of the range and the node each arena (and its zone
// of the page allocator) serves. The heap sets it (heap_impl::place_by_node)
// at open and whenever its regions change; the allocators read it on their
// slow paths only (a new pageblock, an empty slab to adopt, a slab to load).
#pragma once

#include <cstdint>
#include <vector>

namespace daxalloc::alloc {

struct node_placement {
  struct span {
    std::uint64_t first, end;  // pageblocks [first, end)
    int node;                  // -1: memory of no known node
  };
  std::vector<span> spans;
  std::vector<int> arena_node;  // per arena; empty: no placement by node

  [[nodiscard]] int node_of(std::uint64_t pageblock) const noexcept {
    for (const span& s : spans)
      if (pageblock >= s.first && pageblock < s.end) return s.node;
    return spans.empty() ? -1 : spans.front().node;  // (the heap's own memory)
  }
  // Whether the pageblock is of the node arena a serves (always, without
  // placement, and for an arena beyond the list: the movable one).
  [[nodiscard]] bool local(unsigned a, std::uint64_t pageblock) const noexcept {
    return a >= arena_node.size() || arena_node[a] == node_of(pageblock);
  }
  // The first arena that serves the pageblock's node; `otherwise` when none.
  [[nodiscard]] unsigned home(std::uint64_t pageblock, unsigned otherwise) const noexcept {
    const int node = node_of(pageblock);
    for (unsigned a = 0; a < arena_node.size(); ++a)
      if (arena_node[a] == node) return a;
    return otherwise;
  }
};

}  // namespace daxalloc::alloc
