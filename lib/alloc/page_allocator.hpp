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
// of their own type, falling back in a fixed order.
//
// Zones (one per arena of the small allocator, as jemalloc gives each arena
// its own extents): a pageblock taken from the pool for buddy use belongs to
// the zone of the thread that took it, and its buddy lists are under that
// zone's lock; a lock-free owner table (one byte per pageblock) sends a free
// to the owning zone. A pageblock whose pages are all free again stays in its
// zone until release_free_pageblocks() puts it back in the pool (when an
// allocation finds no room, and before a hot-remove), so two threads
// allocating and freeing extents do not meet at the pool's lock.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
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

// Arenas (and zones) for this machine: two per CPU, 1 to 64.
[[nodiscard]] unsigned default_arenas();

struct allocated_extent {
  std::uint64_t pfn, pages;
  bool slab;
  unsigned sub;  // size class (slab) or owner kind (extent)
};

struct page_stats {
  std::uint64_t free_pages = 0;
  std::uint64_t largest_free_pages = 0;             // largest run that one allocation could get
  std::uint64_t pool_pageblocks = 0;                // wholly free pageblocks (pool and zones)
  std::array<std::uint64_t, 8> owned_pageblocks{};  // partly used, per migratetype
};

class page_allocator {
 public:
  explicit page_allocator(sparse::memory_model& model, unsigned zones = 1);
  page_allocator(const page_allocator&) = delete;
  page_allocator& operator=(const page_allocator&) = delete;

  // Scans the memmap of every present subsection except metadata and
  // quarantined (isolate) pageblocks. Problems (overlapping or out-of-range
  // extents, bad states) are appended to `problems`, and the pageblock each
  // lies in to `bad` when given; the extents and slabs found are returned.
  // Partly used pageblocks go to zone 0.
  std::vector<allocated_extent> rebuild(std::vector<std::string>& problems,
                                        std::vector<std::uint64_t>* bad = nullptr);

  [[nodiscard]] unsigned zones() const noexcept { return static_cast<unsigned>(zones_.size()); }
  // First pfn of `pages` free contiguous pages, naturally aligned when pages
  // is a power of two below a pageblock, from `zone` (or, failing that, the
  // pool or another zone); nullopt when nothing fits.
  [[nodiscard]] std::optional<std::uint64_t> allocate(std::uint64_t pages, migratetype type,
                                                      unsigned zone = 0);
  void free(std::uint64_t pfn, std::uint64_t pages);
  // Puts every wholly free pageblock the zones keep back into the pool;
  // returns how many.
  std::size_t release_free_pageblocks();

  // Hot-added memory becomes allocatable at once.
  void add_span(std::uint64_t offset, std::uint64_t length);
  // Takes a span out of the pool for hot-remove; false (nothing changed) when
  // any page of it is allocated or kept by a zone.
  [[nodiscard]] bool isolate(std::uint64_t offset, std::uint64_t length);

  [[nodiscard]] page_stats stats() const;
  [[nodiscard]] bool is_free(std::uint64_t pfn) const;

 private:
  struct owned {
    migratetype type;
    std::uint32_t free_pages;
  };
  struct alignas(64) zone {
    explicit zone(unsigned index) : id(index) {}
    const unsigned id;
    mutable ::daxalloc::detail::spin_mutex mutex;
    std::array<std::array<std::set<std::uint64_t>, max_order + 1>, 8>
        free_lists;                                              // [type][order] -> pfns
    std::unordered_map<std::uint64_t, std::uint8_t> free_order;  // free buddy block pfn -> order
    std::unordered_map<std::uint64_t, owned> owned_blocks;       // pageblock -> type, free pages
  };

  // Adds count pageblocks from `pageblock` on to runs, merging neighbours.
  static void insert_run(std::map<std::uint64_t, std::uint64_t>& runs, std::uint64_t pageblock,
                         std::uint64_t count);
  void free_block(zone& z, std::uint64_t pfn, unsigned order);
  void free_range(zone& z, std::uint64_t pfn, std::uint64_t pages);
  void own(zone& z, std::uint64_t pageblock, migratetype type, std::uint32_t free_pages);
  void disown(zone& z, std::uint64_t pageblock);
  [[nodiscard]] bool take_block(zone& z, unsigned order, migratetype type, bool from_pool,
                                std::uint64_t& pfn);
  [[nodiscard]] bool own_pageblock_from_pool(zone& z, migratetype type);
  [[nodiscard]] std::optional<std::uint64_t> allocate_pageblocks(std::uint64_t pages,
                                                                 unsigned zone);
  bool set_type(std::uint64_t pageblock, migratetype type, bool fence = true);
  // The zone owning a pageblock, or none (in the pool, or wholly allocated
  // from it); read without a lock.
  [[nodiscard]] std::optional<unsigned> owner(std::uint64_t pageblock) const noexcept;

  sparse::memory_model& model_;
  mutable ::daxalloc::detail::spin_mutex pool_mutex_;
  std::map<std::uint64_t, std::uint64_t> pool_;  // first pageblock -> count of wholly free ones
  std::vector<std::unique_ptr<zone>> zones_;
  // Owner zone + 1 per pageblock of the range (0: no zone); calloc'ed, so
  // only the pages of it that are written take memory.
  struct free_deleter {
    void operator()(std::uint8_t* p) const noexcept;
  };
  std::unique_ptr<std::uint8_t[], free_deleter> owners_;
};

}  // namespace daxalloc::alloc
