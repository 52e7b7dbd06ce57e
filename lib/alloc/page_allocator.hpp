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
// buddy use belongs to one migratetype — unmovable for slabs and page-sized
// extents, movable for slabs of movable objects (format 7; format 6 put
// page-sized extents there), large for big extents — and requests prefer
// pageblocks of their own type, falling back in a fixed order.
//
// Zones (one per arena of the small allocator, as jemalloc gives each arena
// its own extents): a pageblock taken from the pool for buddy use belongs to
// the zone of the thread that took it, and its buddy lists are under that
// zone's lock; the pageblock's owner byte, read without a lock, sends a free
// to the owning zone. A pageblock whose pages are all free again stays in
// its zone until release_free_pageblocks() puts it back in the pool (when an
// allocation finds no room, and before a hot-remove), so two threads
// allocating and freeing extents do not meet at the pool's lock.
//
// No allocation or free takes heap memory (malloc) or walks a tree: the
// volatile state lives in tables sized by the address range, in anonymous
// memory that costs DRAM only where written (platform/zeroed_memory.hpp):
//   per page       page_shadow (16 bytes): the kernel's struct page as the
//                  buddy allocator uses it; free lists are threaded through
//                  it, and it holds the length of a run allocate() returned;
//   per pageblock  pageblock_shadow (4 bytes): owner zone, type, free pages;
//                  and one bit in the pool's bitmap.
// Who may touch what: the shadow entries and the table entry of a pageblock
// a zone owns, under that zone's lock; of a pageblock in the pool, under the
// pool's lock (pool pageblocks' entries are all zero); of the pages of an
// allocated run, the allocating call before it returns the run and free()
// (under the lock of the owning zone when there is one). The owner byte is
// written under the zone's lock and read without one by free(); a page's
// `info` word is accessed atomically, so allocated_length() needs no lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "alloc/pageblock_bitmap.hpp"
#include "alloc/placement.hpp"
#include "platform/spin_mutex.hpp"
#include "platform/zeroed_memory.hpp"
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
  unsigned sub;          // size class (slab) or owner kind (extent)
  bool movable = false;  // a slab of movable objects
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
  // Partly used pageblocks go to zone 0. Forgets all earlier state; not to be
  // called while other threads use the allocator.
  std::vector<allocated_extent> rebuild(std::vector<std::string>& problems,
                                        std::vector<std::uint64_t>* bad = nullptr);

  [[nodiscard]] unsigned zones() const noexcept { return static_cast<unsigned>(zones_.size()); }
  // Placement by node (placement.hpp): where each zone takes pool
  // pageblocks from first, `preferred[zone]`: ranges of pageblock numbers
  // [first, end), in order (its node's memory, then the nearer nodes': the
  // kernel's zonelist), the rest of the pool only when none of them has
  // one; and which zone owns a partly free pageblock that no zone owned (at
  // open, or freed from a wholly allocated one): one of its node's. Without
  // it, the lowest pool pageblock, and zone 0.
  void place(std::shared_ptr<const node_placement> placement,
             const std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>>& preferred);
  // Free pages in pageblocks [first, end): the zones' free blocks there and
  // the pool's pageblocks (a node's share of stats().free_pages).
  [[nodiscard]] std::uint64_t free_pages_in(std::uint64_t first, std::uint64_t end) const;
  // First pfn of `pages` free contiguous pages, naturally aligned when pages
  // is a power of two below a pageblock, from `zone` (or, failing that, the
  // pool or another zone); nullopt when nothing fits.
  [[nodiscard]] std::optional<std::uint64_t> allocate(std::uint64_t pages, migratetype type,
                                                      unsigned zone = 0);
  // The same, with (pfn + phase) a multiple of `align` pages (a power of
  // two; phase: the mapping's pfn, so that the address is aligned). Up to a
  // pageblock, a naturally aligned block of at least `align` pages whose
  // tail goes back at once; beyond, the lowest run of pool pageblocks that
  // starts aligned. allocated_length(pfn) is `pages`.
  [[nodiscard]] std::optional<std::uint64_t> allocate_aligned(std::uint64_t pages,
                                                              std::uint64_t align,
                                                              std::uint64_t phase, migratetype type,
                                                              unsigned zone = 0);
  // Frees pages the caller holds: a run allocate() returned, a run rebuild()
  // found, or a part of one.
  void free(std::uint64_t pfn, std::uint64_t pages);
  // The page count of the run allocate() returned at pfn, until it is freed;
  // 0 for any other pfn (a page inside a run, a free page, a run rebuild()
  // found: its length is on the media). O(1) and without a lock; exact for a
  // run the caller holds.
  [[nodiscard]] std::uint64_t allocated_length(std::uint64_t pfn) const noexcept;
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
  // Whether the pageblock is wholly free, in the pool.
  [[nodiscard]] bool in_pool(std::uint64_t pageblock) const;
  // Takes every free page of a span out of circulation, as if allocated
  // (the kernel isolates a range before migrating out of it): the pool's
  // pageblocks leave the pool, the zones' free blocks their lists. Returns
  // the runs held, each to be given back with free().
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> hold(std::uint64_t offset,
                                                                          std::uint64_t length);

 private:
  static constexpr std::size_t nr_types = 8;  // migratetype values 0..7

  // One page's volatile state: the kernel's struct page as far as the buddy
  // allocator uses it (PageBuddy, buddy_order in page->private, page->lru).
  // All zero for a page that is none of the below. `info` holds, from bit 0:
  //   2 bits  kind: 0 none; 1 buddy (the first page of a free block on a
  //           free list: PageBuddy); 2 head (the first page of a run that
  //           allocate() returned and free() has not freed);
  //   4 bits  buddy: the block's order;
  //   2 bits  0;
  //  56 bits  buddy: lru.prev, the pfn of the previous block of its list;
  //           head: the run's length in pages.
  // Lists end in pfn 0, which is in the head (a metadata pageblock), so it
  // is never free. pfns need 34 bits at most (max_physmem_bits = 46).
  struct page_shadow {
    std::uint64_t next;  // buddy: lru.next, the pfn of the next block of its list
    std::uint64_t info;
  };
  static_assert(sizeof(page_shadow) == 16 && sparse::max_physmem_bits - sparse::page_shift < 56);

  // One pageblock's volatile state; all zero unless a zone owns it.
  struct pageblock_shadow {
    std::uint8_t owner;        // zone + 1, 0: none; atomic (free() reads it without a lock)
    migratetype type;          // whose free lists hold its free blocks
    std::uint16_t free_pages;  // 0..512
  };
  static_assert(sizeof(pageblock_shadow) == 4);

  // The blocks of one order and migratetype (the kernel's free_area[order]
  // .free_list[type]), doubly linked through their first pages' shadows.
  struct free_list {
    std::uint64_t first = 0, last = 0;  // pfns; 0: empty
    std::uint64_t nr_free = 0;
  };
  // Invariants under `mutex`: free_pages is the sum of free_pages of the
  // pageblocks the zone owns, and owned[t] their count per type; a pageblock
  // is wholly free exactly when it is one block on a free list of order 9.
  struct alignas(64) zone {
    explicit zone(unsigned index) : id(index) {}
    const unsigned id;
    mutable ::daxalloc::detail::spin_mutex mutex;
    std::array<std::array<free_list, max_order + 1>, nr_types> free_lists;  // [type][order]
    std::array<std::uint64_t, nr_types> owned{};
    std::uint64_t free_pages = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> preferred;  // prefer()
  };

  [[nodiscard]] page_shadow& shadow(std::uint64_t pfn) const noexcept { return shadow_[pfn]; }
  [[nodiscard]] pageblock_shadow& block(std::uint64_t pageblock) const noexcept {
    return pageblocks_[pageblock];
  }
  [[nodiscard]] std::uint64_t info(std::uint64_t pfn) const noexcept;
  void set_info(std::uint64_t pfn, std::uint64_t info) noexcept;
  // The run allocate() returned at pfn is freed.
  void clear_head(std::uint64_t pfn) noexcept;
  void add_to_free_list(zone& z, std::uint64_t pfn, unsigned order, migratetype type) noexcept;
  void del_from_free_list(zone& z, std::uint64_t pfn, unsigned order, migratetype type) noexcept;
  // Debug checks: every shadow and table entry of the pageblock is zero.
  [[nodiscard]] bool shadow_clear(std::uint64_t pageblock) const noexcept;

  void free_block(zone& z, std::uint64_t pfn, unsigned order) noexcept;
  void free_range(zone& z, std::uint64_t pfn, std::uint64_t pages) noexcept;
  // A pageblock joins a zone with no free pages; free_range adds them.
  void own(zone& z, std::uint64_t pageblock, migratetype type) noexcept;
  void disown(zone& z, std::uint64_t pageblock) noexcept;
  [[nodiscard]] bool take_block(zone& z, unsigned order, migratetype type, bool from_pool,
                                std::uint64_t& pfn);
  [[nodiscard]] bool own_pageblock_from_pool(zone& z, migratetype type);
  // align > 1: at a pageblock whose number + phase is a multiple of it.
  [[nodiscard]] std::optional<std::uint64_t> allocate_pageblocks(std::uint64_t pages, unsigned zone,
                                                                 std::uint64_t align = 1,
                                                                 std::uint64_t phase = 0);
  [[nodiscard]] std::optional<std::uint64_t> aligned_fit(std::uint64_t count, std::uint64_t align,
                                                         std::uint64_t phase) const noexcept;
  bool set_type(std::uint64_t pageblock, migratetype type, bool fence = true);
  // The zone owning a pageblock, or none (in the pool, or wholly allocated
  // from it); read without a lock.
  [[nodiscard]] std::optional<unsigned> owner(std::uint64_t pageblock) const noexcept;

  sparse::memory_model& model_;
  const std::uint64_t nr_pages_;  // of the address range
  detail::zeroed_memory shadow_memory_, pageblocks_memory_;
  page_shadow* const shadow_;           // [pfn]
  pageblock_shadow* const pageblocks_;  // [pfn / pageblock_pages]
  mutable ::daxalloc::detail::spin_mutex pool_mutex_;
  std::atomic<std::shared_ptr<const node_placement>> placement_;    // place()
  [[nodiscard]] unsigned home_zone(std::uint64_t pageblock) const;  // zone 0 without placement
  void rehome(const node_placement& placement);
  pageblock_bitmap pool_;  // wholly free pageblocks no zone owns; under pool_mutex_
  std::vector<std::unique_ptr<zone>> zones_;
};

}  // namespace daxalloc::alloc
