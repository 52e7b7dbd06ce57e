// The page allocator: a buddy allocator over the memmap (orders 0..9 inside
// 2 MiB pageblocks) and a pool of wholly free pageblocks from which larger
// extents (any number of pages, across pageblocks and sections) are carved.
//
// Everything here is volatile and rebuilt at open from the persistent memmap:
// a page is allocated exactly when an extent or slab descriptor covers it.
// This class never writes a descriptor; its callers do (heap and slabs), and
// they own the commit of every allocation. It does write pageblock
// migratetypes (one CAS + persist each) when a free pageblock changes use.
//
// Grouping (the kernel's anti-fragmentation): each pageblock handed out for
// buddy use belongs to one migratetype — unmovable for slabs, movable for
// page-sized extents, large for big extents — and requests prefer pageblocks
// of their own type, falling back in a fixed order. A pageblock whose pages
// are all free again goes back to the common pool.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "platform/spin_mutex.hpp"
#include "sparse/memory_model.hpp"

namespace daxalloc::alloc {

using sparse::migratetype;

inline constexpr unsigned max_order =
    sparse::pageblock_order;  // buddy orders 0..9 inside a pageblock
inline constexpr std::uint64_t pageblock_pages = sparse::pages_per_subsection;

struct allocated_extent {
  std::uint64_t pfn, pages;
  bool slab;
  unsigned sub;  // size class (slab) or owner kind (extent)
};

struct page_stats {
  std::uint64_t free_pages = 0;
  std::uint64_t largest_free_pages = 0;             // largest run that one allocation could get
  std::uint64_t pool_pageblocks = 0;                // wholly free pageblocks
  std::array<std::uint64_t, 8> owned_pageblocks{};  // partly used, per migratetype
};

class page_allocator {
 public:
  explicit page_allocator(sparse::memory_model& model) : model_(model) {}

  // Scans the memmap of every present subsection except metadata and
  // quarantined (isolate) pageblocks. Problems (overlapping or out-of-range
  // extents, bad states) are appended to `problems`, and the pageblock each
  // lies in to `bad` when given; the extents and slabs found are returned.
  std::vector<allocated_extent> rebuild(std::vector<std::string>& problems,
                                        std::vector<std::uint64_t>* bad = nullptr);

  // First pfn of `pages` free contiguous pages, naturally aligned when pages
  // is a power of two below a pageblock; nullopt when nothing fits.
  [[nodiscard]] std::optional<std::uint64_t> allocate(std::uint64_t pages, migratetype type);
  void free(std::uint64_t pfn, std::uint64_t pages);

  // Hot-added memory becomes allocatable at once.
  void add_span(std::uint64_t offset, std::uint64_t length);
  // Takes a span out of the pool for hot-remove; false (nothing changed) when
  // any page of it is allocated.
  [[nodiscard]] bool isolate(std::uint64_t offset, std::uint64_t length);

  [[nodiscard]] page_stats stats() const;
  [[nodiscard]] bool is_free(std::uint64_t pfn) const;

 private:
  void pool_insert(std::uint64_t pageblock, std::uint64_t count);
  void free_block(std::uint64_t pfn, unsigned order);
  void free_range(std::uint64_t pfn, std::uint64_t pages);
  [[nodiscard]] bool take_block(unsigned order, migratetype type, std::uint64_t& pfn);
  [[nodiscard]] bool own_pageblock_from_pool(migratetype type);
  bool set_type(std::uint64_t pageblock, migratetype type, bool fence = true);

  sparse::memory_model& model_;
  mutable ::daxalloc::detail::spin_mutex mutex_;
  std::map<std::uint64_t, std::uint64_t>
      pool_;  // first pageblock -> count of wholly free pageblocks
  std::array<std::array<std::set<std::uint64_t>, max_order + 1>, 8>
      free_lists_;                                              // [type][order] -> pfns
  std::unordered_map<std::uint64_t, std::uint8_t> free_order_;  // free buddy block pfn -> order
  struct owned {
    migratetype type;
    std::uint32_t free_pages;
  };
  std::unordered_map<std::uint64_t, owned> owned_;  // partly used pageblocks
};

}  // namespace daxalloc::alloc
