#include "alloc/page_allocator.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <mutex>
#include <thread>

#include "alloc/size_classes.hpp"

namespace daxalloc::alloc {
namespace {

using sparse::hex;
using sparse::page_state;

constexpr std::array<std::array<migratetype, 2>, 3> fallbacks = {{
    {migratetype::large, migratetype::movable},      // unmovable (slabs, page extents)
    {migratetype::large, migratetype::unmovable},    // movable (movable slabs)
    {migratetype::unmovable, migratetype::movable},  // large
}};

constexpr std::size_t index(migratetype t) {
  return static_cast<std::size_t>(t);
}

// page_shadow::info (page_allocator.hpp has the layout).
constexpr std::uint64_t kind_mask = 3, kind_buddy = 1, kind_head = 2;
constexpr std::uint64_t buddy_info(unsigned order, std::uint64_t prev) {
  return kind_buddy | std::uint64_t{order} << 2 | prev << 8;
}
constexpr std::uint64_t head_info(std::uint64_t pages) {
  return kind_head | pages << 8;
}
constexpr bool page_buddy(std::uint64_t info) {
  return (info & kind_mask) == kind_buddy;
}
constexpr unsigned buddy_order(std::uint64_t info) {
  return static_cast<unsigned>(info >> 2 & 15);
}
constexpr std::uint64_t lru_prev(std::uint64_t info) {
  return info >> 8;
}

constexpr std::uint64_t pages_of(unsigned order) {
  return std::uint64_t{1} << order;
}

}  // namespace

// Two per CPU, as jemalloc has four.
unsigned default_arenas() {
  return std::clamp(2 * std::thread::hardware_concurrency(), 1u, 64u);
}

page_allocator::page_allocator(sparse::memory_model& model, unsigned zones)
    : model_(model),
      nr_pages_(model.geo().max_range >> sparse::page_shift),
      shadow_memory_(nr_pages_ * sizeof(page_shadow)),
      pageblocks_memory_(nr_pages_ / pageblock_pages * sizeof(pageblock_shadow)),
      shadow_(static_cast<page_shadow*>(shadow_memory_.data())),
      pageblocks_(static_cast<pageblock_shadow*>(pageblocks_memory_.data())),
      pool_(nr_pages_ / pageblock_pages) {
  for (unsigned i = 0; i < std::clamp(zones, 1u, 64u); ++i)
    zones_.push_back(std::make_unique<zone>(i));
}

std::optional<unsigned> page_allocator::owner(std::uint64_t pageblock) const noexcept {
  const std::uint8_t z =
      std::atomic_ref<std::uint8_t>(block(pageblock).owner).load(std::memory_order_acquire);
  return z ? std::optional<unsigned>(z - 1u) : std::nullopt;
}

std::uint64_t page_allocator::info(std::uint64_t pfn) const noexcept {
  return std::atomic_ref<std::uint64_t>(shadow(pfn).info).load(std::memory_order_relaxed);
}

void page_allocator::set_info(std::uint64_t pfn, std::uint64_t info) noexcept {
  std::atomic_ref<std::uint64_t>(shadow(pfn).info).store(info, std::memory_order_relaxed);
}

bool page_allocator::shadow_clear(std::uint64_t pageblock) const noexcept {
  for (std::uint64_t pfn = pageblock * pageblock_pages; pfn < (pageblock + 1) * pageblock_pages;
       ++pfn)
    if (shadow(pfn).next || info(pfn)) return false;
  return !owner(pageblock) && block(pageblock).free_pages == 0;
}

// Lower addresses first, without sorting: a block below the list's first goes
// in front, any other at the back, and allocations take the front. Blocks
// that arrive in address order (rebuild's scan, the halves of a split) keep
// the list sorted, and a freed block below the front is used next, so the
// low end of the heap fills first, much as with the address-ordered sets
// this replaces. The front is not always the lowest block (one that went to
// the back may be below the next front once the front is taken): a
// preference, not a guarantee, that costs one comparison.
void page_allocator::add_to_free_list(zone& z, std::uint64_t pfn, unsigned order,
                                      migratetype type) noexcept {
  assert(pfn != 0 && pfn % pages_of(order) == 0 && info(pfn) == 0 && shadow(pfn).next == 0);
  free_list& l = z.free_lists[index(type)][order];
  if (l.first == 0) {
    set_info(pfn, buddy_info(order, 0));
    l.first = l.last = pfn;
  } else if (pfn < l.first) {
    shadow(pfn).next = l.first;
    set_info(pfn, buddy_info(order, 0));
    set_info(l.first, buddy_info(order, pfn));
    l.first = pfn;
  } else {
    set_info(pfn, buddy_info(order, l.last));
    shadow(l.last).next = pfn;
    l.last = pfn;
  }
  ++l.nr_free;
}

void page_allocator::del_from_free_list(zone& z, std::uint64_t pfn, unsigned order,
                                        migratetype type) noexcept {
  const std::uint64_t i = info(pfn), prev = lru_prev(i), next = shadow(pfn).next;
  assert(page_buddy(i) && buddy_order(i) == order);
  free_list& l = z.free_lists[index(type)][order];
  if (prev)
    shadow(prev).next = next;
  else
    l.first = next;
  if (next)
    set_info(next, buddy_info(order, prev));
  else
    l.last = prev;
  shadow(pfn).next = 0;
  set_info(pfn, 0);
  --l.nr_free;
}

void page_allocator::own(zone& z, std::uint64_t pageblock, migratetype type) noexcept {
  pageblock_shadow& b = block(pageblock);
  assert(b.owner == 0 && b.free_pages == 0);
  b.type = type;
  ++z.owned[index(type)];
  std::atomic_ref<std::uint8_t>(b.owner).store(static_cast<std::uint8_t>(z.id + 1),
                                               std::memory_order_release);
}

// A wholly free pageblock leaves the zone, with nothing left in its shadow.
void page_allocator::disown(zone& z, std::uint64_t pageblock) noexcept {
  pageblock_shadow& b = block(pageblock);
  assert(b.free_pages == pageblock_pages);
  --z.owned[index(b.type)];
  z.free_pages -= pageblock_pages;
  b.type = migratetype::unmovable;
  b.free_pages = 0;
  std::atomic_ref<std::uint8_t>(b.owner).store(0, std::memory_order_release);
}

// Returns whether a flush is left for the caller's fence (fence = false).
bool page_allocator::set_type(std::uint64_t pageblock, migratetype type, bool fence) {
  const std::uint64_t pfn = pageblock * pageblock_pages;
  return model_.get_pageblock_migratetype(pfn) != type &&
         model_.set_pageblock_migratetype(pfn, type, fence);
}

// Frees one naturally aligned block of 2^order pages into its pageblock's
// buddy lists, merging with free buddies (__free_one_page). A buddy is free
// at the same order exactly when its first page is PageBuddy with that order.
void page_allocator::free_block(zone& z, std::uint64_t pfn, unsigned order) noexcept {
  const migratetype type = block(pfn / pageblock_pages).type;
  while (order < max_order) {
    const std::uint64_t buddy = pfn ^ pages_of(order);
    const std::uint64_t i = info(buddy);
    if (!page_buddy(i) || buddy_order(i) != order) break;
    del_from_free_list(z, buddy, order, type);
    pfn = std::min(pfn, buddy);
    ++order;
  }
  add_to_free_list(z, pfn, order, type);
}

// Frees [pfn, pfn+pages) inside one pageblock the zone owns. A pageblock
// whose pages are all free stays with the zone (release_free_pageblocks).
void page_allocator::free_range(zone& z, std::uint64_t pfn, std::uint64_t pages) noexcept {
  pageblock_shadow& b = block(pfn / pageblock_pages);
  assert(b.owner == z.id + 1 && b.free_pages + pages <= pageblock_pages);
  b.free_pages = static_cast<std::uint16_t>(b.free_pages + pages);
  z.free_pages += pages;
  while (pages) {
    unsigned order = std::min<unsigned>(static_cast<unsigned>(std::countr_zero(pfn)), max_order);
    while (pages_of(order) > pages) --order;
    free_block(z, pfn, order);
    pfn += pages_of(order);
    pages -= pages_of(order);
  }
}

// The pages being freed are allocated, so their pageblock can change owner
// meanwhile only by place() moving it to another zone (or by a free of its
// other pages owning it): the owner is read again under the zone's lock.
void page_allocator::free(std::uint64_t pfn, std::uint64_t pages) {
  const std::uint64_t end = pfn + pages;
  for (std::uint64_t pageblock = pfn / pageblock_pages; pageblock * pageblock_pages < end;
       ++pageblock) {
    const std::uint64_t lo = std::max(pfn, pageblock * pageblock_pages);
    const std::uint64_t hi = std::min(end, (pageblock + 1) * pageblock_pages);
    auto z = owner(pageblock);
    if (hi - lo == pageblock_pages && !z) {  // a whole pageblock of a large extent
      std::lock_guard lock(pool_mutex_);
      clear_head(lo);
      assert(shadow_clear(pageblock));
      pool_.insert(pageblock);
      continue;
    }
    zone* locked = zones_[z ? *z : home_zone(pageblock)].get();
    locked->mutex.lock();
    while (owner(pageblock) != z) {  // moved meanwhile
      locked->mutex.unlock();
      z = owner(pageblock);
      locked = zones_[z ? *z : home_zone(pageblock)].get();
      locked->mutex.lock();
    }
    zone& mine = *locked;
    std::lock_guard lock(mine.mutex, std::adopt_lock);
    // No owner (after open, for a pageblock that was wholly allocated): a
    // zone of its node takes it with its media type, unless a free of its
    // other pages has.
    if (!owner(pageblock)) own(mine, pageblock, model_.get_pageblock_migratetype(lo));
    if (lo == pfn) clear_head(lo);  // before free_range may make it a free block's first page
    free_range(mine, lo, hi - lo);
  }
}

// Only a head mark: a page that is anything else keeps its state.
void page_allocator::clear_head(std::uint64_t pfn) noexcept {
  if ((info(pfn) & kind_mask) == kind_head) set_info(pfn, 0);
}

std::uint64_t page_allocator::allocated_length(std::uint64_t pfn) const noexcept {
  if (pfn >= nr_pages_) return 0;
  const std::uint64_t i = info(pfn);
  return (i & kind_mask) == kind_head ? i >> 8 : 0;
}

// The pageblock at the lowest address: keeps the heap compact.
void page_allocator::place(
    std::shared_ptr<const node_placement> placement,
    const std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>>& preferred) {
  if (placement && !placement->arena_node.empty()) rehome(*placement);
  placement_.store(std::move(placement));
  std::lock_guard lock(pool_mutex_);  // (read under it)
  for (std::size_t z = 0; z < zones_.size(); ++z)
    zones_[z]->preferred = z < preferred.size() ? preferred[z] : decltype(zone::preferred){};
}

// Partly free pageblocks a zone owns that are of another zone's node go to
// that zone, with their free blocks (a zone keeps only its node's memory:
// what it owned before the placement changed, or found at open before it).
// Every zone's lock is held, in order: nothing else holds two.
void page_allocator::rehome(const node_placement& placement) {
  std::vector<std::unique_lock<::daxalloc::detail::spin_mutex>> locks;
  for (auto& zp : zones_) locks.emplace_back(zp->mutex);
  std::vector<std::uint64_t> moving;
  for (auto& zp : zones_) {
    zone& z = *zp;
    moving.clear();
    for (const auto& lists : z.free_lists)
      for (const free_list& l : lists)
        for (std::uint64_t p = l.first; p; p = shadow(p).next)
          if (!placement.local(z.id, p / pageblock_pages) &&
              placement.home(p / pageblock_pages, z.id) != z.id)
            moving.push_back(p / pageblock_pages);
    std::sort(moving.begin(), moving.end());
    moving.erase(std::unique(moving.begin(), moving.end()), moving.end());
    for (const std::uint64_t pb : moving) {
      zone& to = *zones_[placement.home(pb, z.id)];
      pageblock_shadow& b = block(pb);
      for (std::uint64_t pfn = pb * pageblock_pages; pfn < (pb + 1) * pageblock_pages;) {
        const std::uint64_t i = info(pfn);
        if (!page_buddy(i)) {
          ++pfn;
          continue;
        }
        const unsigned order = buddy_order(i);
        del_from_free_list(z, pfn, order, b.type);
        add_to_free_list(to, pfn, order, b.type);
        pfn += pages_of(order);
      }
      z.free_pages -= b.free_pages;
      to.free_pages += b.free_pages;
      --z.owned[index(b.type)];
      ++to.owned[index(b.type)];
      std::atomic_ref<std::uint8_t>(b.owner).store(static_cast<std::uint8_t>(to.id + 1),
                                                   std::memory_order_release);
    }
  }
}

unsigned page_allocator::home_zone(std::uint64_t pageblock) const {
  const auto placement = placement_.load();
  return placement ? placement->home(pageblock, 0) : 0;
}

bool page_allocator::own_pageblock_from_pool(zone& z, migratetype type) {
  std::uint64_t pageblock = 0;
  {
    std::lock_guard lock(pool_mutex_);
    pageblock = pool_.size();
    for (const auto& [first, end] : z.preferred)
      if (const std::uint64_t at = pool_.next_set(std::min(first, pool_.size()));
          at < std::min(end, pool_.size())) {
        pageblock = at;
        break;
      }
    if (pageblock == pool_.size()) pageblock = pool_.next_set(0);
    if (pageblock == pool_.size()) return false;
    pool_.erase(pageblock);
  }
  set_type(pageblock, type);
  own(z, pageblock, type);
  free_range(z, pageblock * pageblock_pages, pageblock_pages);  // one order-9 block
  return true;
}

bool page_allocator::take_block(zone& z, unsigned order, migratetype type, bool from_pool,
                                std::uint64_t& pfn) {
  const auto try_type = [&](migratetype t) {
    auto& lists = z.free_lists[index(t)];
    for (unsigned k = order; k <= max_order; ++k) {
      const std::uint64_t p = lists[k].first;
      if (p == 0) continue;
      del_from_free_list(z, p, k, t);
      while (k > order) {  // split, keeping the lower half (expand())
        --k;
        add_to_free_list(z, p + pages_of(k), k, t);
      }
      pageblock_shadow& b = block(p / pageblock_pages);
      b.free_pages = static_cast<std::uint16_t>(b.free_pages - pages_of(order));
      z.free_pages -= pages_of(order);
      pfn = p;
      return true;
    }
    return false;
  };
  if (try_type(type)) return true;
  if (from_pool && own_pageblock_from_pool(z, type) && try_type(type)) return true;
  if (index(type) < fallbacks.size())
    for (migratetype t : fallbacks[index(type)])
      if (try_type(t)) return true;
  return false;
}

// Whole pageblocks from the pool, best fit; the rest of the last one is
// freed into the zone's buddy lists of type large.
std::optional<std::uint64_t> page_allocator::allocate_pageblocks(std::uint64_t pages,
                                                                 unsigned zone_index,
                                                                 std::uint64_t align,
                                                                 std::uint64_t phase) {
  const std::uint64_t count = (pages + pageblock_pages - 1) / pageblock_pages;
  std::uint64_t first = 0;
  {
    std::lock_guard lock(pool_mutex_);
    std::optional<std::uint64_t> best;
    if (align == 1)  // the zone's preferred ranges first (its node's memory)
      for (const auto& [from, to] : zones_[zone_index % zones_.size()]->preferred)
        if ((best = pool_.best_fit(count, from, to))) break;
    if (!best) best = align == 1 ? pool_.best_fit(count) : aligned_fit(count, align, phase);
    if (!best) return std::nullopt;
    first = *best;
    for (std::uint64_t pb = first; pb < first + count; ++pb) pool_.erase(pb);
  }
  set_info(first * pageblock_pages, head_info(pages));  // its pageblock is no one's but ours
  bool flushed = false;
  for (std::uint64_t pb = first; pb < first + count; ++pb)
    flushed |= set_type(pb, migratetype::large, false);
  if (flushed) model_.media().persist().drain();
  // (The head's own pageblock too, for an aligned run of less than one.)
  if (const std::uint64_t used = pages % pageblock_pages) {
    zone& z = *zones_[zone_index % zones_.size()];
    std::lock_guard lock(z.mutex);
    const std::uint64_t last = first + count - 1;
    own(z, last, migratetype::large);
    free_range(z, last * pageblock_pages + used, pageblock_pages - used);
  }
  return first * pageblock_pages;
}

// The lowest run of `count` pool pageblocks that starts where (pageblock +
// phase) is a multiple of align: first fit, a candidate per aligned start
// (a 1 GiB alignment has one per 512 pageblocks), skipping past each gap.
std::optional<std::uint64_t> page_allocator::aligned_fit(std::uint64_t count, std::uint64_t align,
                                                         std::uint64_t phase) const noexcept {
  const auto aligned_from = [&](std::uint64_t pb) {
    return (pb + phase + align - 1) / align * align - phase;
  };
  for (std::uint64_t pb = aligned_from(pool_.next_set(0)); pb + count <= pool_.size();) {
    std::uint64_t gap = pb;
    while (gap < pb + count && pool_.contains(gap)) ++gap;
    if (gap == pb + count) return pb;
    pb = aligned_from(pool_.next_set(gap + 1));
  }
  return std::nullopt;
}

std::optional<std::uint64_t> page_allocator::allocate(std::uint64_t pages, migratetype type,
                                                      unsigned zone_index) {
  if (pages == 0) return std::nullopt;
  if (pages >= pageblock_pages) return allocate_pageblocks(pages, zone_index);
  const unsigned order = static_cast<unsigned>(std::bit_width(pages - 1));
  const auto carve = [&](zone& z, bool from_pool) -> std::optional<std::uint64_t> {
    std::lock_guard lock(z.mutex);
    std::uint64_t pfn = 0;
    if (!take_block(z, order, type, from_pool, pfn)) return std::nullopt;
    if (const std::uint64_t tail = pages_of(order) - pages) free_range(z, pfn + pages, tail);
    set_info(pfn, head_info(pages));
    return pfn;
  };
  zone& mine = *zones_[zone_index % zones_.size()];
  if (auto pfn = carve(mine, true)) return pfn;
  for (auto& other : zones_)  // the pool is empty: free blocks other zones keep
    if (other.get() != &mine)
      if (auto pfn = carve(*other, false)) return pfn;
  return std::nullopt;
}

std::optional<std::uint64_t> page_allocator::allocate_aligned(std::uint64_t pages,
                                                              std::uint64_t align,
                                                              std::uint64_t phase, migratetype type,
                                                              unsigned zone_index) {
  assert(std::has_single_bit(align));
  if (pages == 0) return std::nullopt;
  phase %= align;
  if (phase % std::min(align, pageblock_pages) != 0) return std::nullopt;  // (a 2 MiB mapping)
  if (align > pageblock_pages)  // whole pageblocks at an aligned one
    return allocate_pageblocks(pages, zone_index, align / pageblock_pages, phase / pageblock_pages);
  // A run below a pageblock starts on a multiple of its power-of-two
  // ceiling, a run of pageblocks on a pageblock: asking for `align` pages
  // is aligned enough, and the tail beyond `pages` goes back at once.
  const std::uint64_t asked = std::max(pages, align);
  const auto run = allocate(asked, type, zone_index);
  if (!run || asked == pages) return run;
  free(*run + pages, asked - pages);
  set_info(*run, head_info(pages));
  return run;
}

// The wholly free pageblocks are exactly the blocks of order 9.
std::size_t page_allocator::release_free_pageblocks() {
  std::size_t released = 0;
  for (auto& zp : zones_) {
    zone& z = *zp;
    std::lock_guard lock(z.mutex);
    if (std::none_of(z.free_lists.begin(), z.free_lists.end(),
                     [](const auto& lists) { return lists[max_order].nr_free; }))
      continue;
    std::lock_guard pool_lock(pool_mutex_);  // zone, then pool: the order everywhere
    for (std::size_t t = 0; t < nr_types; ++t)
      while (const std::uint64_t first = z.free_lists[t][max_order].first) {
        del_from_free_list(z, first, max_order, static_cast<migratetype>(t));
        disown(z, first / pageblock_pages);
        assert(shadow_clear(first / pageblock_pages));
        pool_.insert(first / pageblock_pages);
        ++released;
      }
  }
  return released;
}

void page_allocator::add_span(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(pool_mutex_);
  for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size) {
    const std::uint64_t pfn = at >> sparse::page_shift;
    if (model_.get_pageblock_migratetype(pfn) == migratetype::metadata) continue;
    assert(shadow_clear(pfn / pageblock_pages));
    pool_.insert(pfn / pageblock_pages);
  }
}

bool page_allocator::isolate(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(pool_mutex_);
  const auto each = [&](auto f) {
    for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size) {
      const std::uint64_t pfn = at >> sparse::page_shift;
      if (model_.get_pageblock_migratetype(pfn) != migratetype::metadata &&
          !f(pfn / pageblock_pages))
        return false;
    }
    return true;
  };
  if (!each([&](std::uint64_t pb) { return pool_.contains(pb); })) return false;
  each([&](std::uint64_t pb) {
    pool_.erase(pb);
    return true;
  });
  // Memory on its way out keeps no DRAM: the span's shadow is all zero (pool
  // and metadata pageblocks), so its pages can go back to the kernel.
  shadow_memory_.zero((offset >> sparse::page_shift) * sizeof(page_shadow),
                      (length >> sparse::page_shift) * sizeof(page_shadow));
  return true;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> page_allocator::hold(std::uint64_t offset,
                                                                          std::uint64_t length) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> held;
  for (std::uint64_t pb = offset >> sparse::subsection_shift;
       pb < (offset + length) >> sparse::subsection_shift; ++pb) {
    const std::uint64_t first = pb * pageblock_pages;
    if (model_.get_pageblock_migratetype(first) == migratetype::metadata) continue;
    {
      std::lock_guard lock(pool_mutex_);
      if (pool_.contains(pb)) {
        pool_.erase(pb);
        set_info(first, head_info(pageblock_pages));
        held.emplace_back(first, pageblock_pages);
        continue;
      }
    }
    const auto z = owner(pb);
    if (!z) continue;  // wholly allocated (or taken meanwhile: then not held)
    zone& mine = *zones_[*z];
    std::lock_guard lock(mine.mutex);
    if (owner(pb) != z) continue;
    pageblock_shadow& b = block(pb);
    for (std::uint64_t pfn = first; pfn < first + pageblock_pages;) {
      const std::uint64_t i = info(pfn);
      if (!page_buddy(i)) {
        ++pfn;
        continue;
      }
      const std::uint64_t pages = pages_of(buddy_order(i));
      del_from_free_list(mine, pfn, buddy_order(i), b.type);
      b.free_pages = static_cast<std::uint16_t>(b.free_pages - pages);
      mine.free_pages -= pages;
      set_info(pfn, head_info(pages));
      held.emplace_back(pfn, pages);
      pfn += pages;
    }
  }
  return held;
}

bool page_allocator::in_pool(std::uint64_t pageblock) const {
  std::lock_guard lock(pool_mutex_);
  return pool_.contains(pageblock);
}

bool page_allocator::is_free(std::uint64_t pfn) const {
  if (pfn >= nr_pages_) return false;
  const std::uint64_t pb = pfn / pageblock_pages;
  {
    std::lock_guard lock(pool_mutex_);
    if (pool_.contains(pb)) return true;
  }
  const auto z = owner(pb);
  if (!z) return false;
  const zone& mine = *zones_[*z];
  std::lock_guard lock(mine.mutex);
  if (owner(pb) != z) return is_free(pfn);  // moved meanwhile (place())
  for (unsigned k = 0; k <= max_order; ++k) {
    const std::uint64_t i = info(pfn & ~(pages_of(k) - 1));
    if (page_buddy(i) && buddy_order(i) == k) return true;
  }
  return false;
}

// Wholly free pageblocks the zones keep count as the pool's: an allocation
// that needs them gets them (release_free_pageblocks).
page_stats page_allocator::stats() const {
  page_stats s;
  pageblock_bitmap whole(pool_.size());  // the pool's and the zones' wholly free pageblocks
  for (const auto& zp : zones_) {
    const zone& z = *zp;
    std::lock_guard lock(z.mutex);
    s.free_pages += z.free_pages;
    for (std::size_t t = 0; t < nr_types; ++t) {
      const auto& lists = z.free_lists[t];
      s.owned_pageblocks[t] += z.owned[t] - lists[max_order].nr_free;
      for (std::uint64_t p = lists[max_order].first; p; p = shadow(p).next)
        whole.insert(p / pageblock_pages);
      for (unsigned k = 0; k <= max_order; ++k)
        if (lists[k].nr_free) s.largest_free_pages = std::max(s.largest_free_pages, pages_of(k));
    }
  }
  {
    std::lock_guard lock(pool_mutex_);
    s.free_pages += pool_.count() * pageblock_pages;
    whole.unite(pool_);
  }
  s.pool_pageblocks = whole.count();
  whole.for_each_run([&](std::uint64_t, std::uint64_t count) {
    s.largest_free_pages = std::max(s.largest_free_pages, count * pageblock_pages);
  });
  return s;
}

std::uint64_t page_allocator::free_pages_in(std::uint64_t first, std::uint64_t end) const {
  std::uint64_t pages = 0;
  for (const auto& zp : zones_) {
    const zone& z = *zp;
    std::lock_guard lock(z.mutex);
    for (const auto& lists : z.free_lists)
      for (unsigned k = 0; k <= max_order; ++k)
        for (std::uint64_t p = lists[k].first; p; p = shadow(p).next)
          if (p / pageblock_pages >= first && p / pageblock_pages < end) pages += pages_of(k);
  }
  std::lock_guard lock(pool_mutex_);
  for (std::uint64_t pb = pool_.next_set(first); pb < std::min(end, pool_.size());
       pb = pool_.next_set(pb + 1))
    pages += pageblock_pages;
  return pages;
}

std::vector<allocated_extent> page_allocator::rebuild(std::vector<std::string>& problems,
                                                      std::vector<std::uint64_t>* bad) {
  // Forget everything; the tables' pages go back to the kernel.
  for (auto& zp : zones_) {
    std::lock_guard lock(zp->mutex);
    zp->free_lists = {};
    zp->owned = {};
    zp->free_pages = 0;
  }
  shadow_memory_.zero(0, shadow_memory_.size());
  pageblocks_memory_.zero(0, pageblocks_memory_.size());
  {
    std::lock_guard lock(pool_mutex_);
    pool_.clear();
  }
  std::vector<std::pair<std::uint64_t, std::uint64_t>> free_runs;  // of one pageblock

  const auto& geo = model_.geo();
  std::vector<allocated_extent> found;
  std::uint64_t covered_until = 0;  // pages before this pfn belong to an extent already found
  const auto usable = [&](std::uint64_t pfn) {
    if (!model_.pfn_valid(pfn)) return false;
    const migratetype type = model_.get_pageblock_migratetype(pfn);
    return type != migratetype::metadata && type != migratetype::isolate;
  };
  const auto report = [&](std::uint64_t pfn, std::string what) {
    problems.push_back("page at " + hex(pfn << sparse::page_shift) + ": " + std::move(what));
    if (bad) bad->push_back(pfn / pageblock_pages);
  };
  for (std::uint64_t root = 0; root < geo.nr_roots(); ++root) {
    if (model_.directory_entry(root) != 1) continue;
    for (std::uint64_t nr = root * geo.sections_per_root();
         nr < std::min<std::uint64_t>((root + 1) * geo.sections_per_root(), geo.nr_sections());
         ++nr) {
      if (!model_.section_present(nr)) continue;
      for (unsigned s = 0; s < geo.subsections_per_section(); ++s) {
        const std::uint64_t first = geo.section_nr_to_pfn(nr) + s * pageblock_pages;
        if (!usable(first)) continue;
        free_runs.clear();
        std::uint32_t free_pages = 0;
        // Pages inside an extent or slab found earlier must be plain tails.
        for (std::uint64_t pfn = first; pfn < std::min(covered_until, first + pageblock_pages);
             ++pfn)
          if (model_.pfn_to_page(pfn)->load() != sparse::free_descriptor) {
            report(pfn, "a descriptor inside another extent or slab");
            break;
          }
        for (std::uint64_t pfn = std::max(first, covered_until); pfn < first + pageblock_pages;) {
          const sparse::page_descriptor& d = *model_.pfn_to_page(pfn);
          if (d.state() == page_state::free) {
            // Free is one exact word: stray bits would surface once the
            // page became the tail of an extent (and a zeroed descriptor
            // fails its check bits).
            if (d.load() != sparse::free_descriptor)
              report(pfn, "free page with a damaged descriptor " + hex(d.load()));
            if (!free_runs.empty() && free_runs.back().first + free_runs.back().second == pfn)
              ++free_runs.back().second;
            else
              free_runs.emplace_back(pfn, 1);
            ++free_pages;
            ++pfn;
            continue;
          }
          std::uint64_t length = d.length();
          bool ok = sparse::descriptor_checks_out(d.load());
          if (!ok) {
            report(pfn, "descriptor " + hex(d.load()) + " fails its check bits");
          } else if (d.state() != page_state::extent && !sparse::is_slab(d.state())) {
            report(pfn, "unexpected state " + std::to_string(static_cast<int>(d.state())));
            ok = false;
          }
          if (ok && sparse::is_slab(d.state())) {
            const unsigned cls = d.sub();
            ok = cls < nr_slab_classes &&
                 length == (std::uint64_t{1} << size_classes[cls].slab_order) && pfn % length == 0;
            if (!ok)
              report(pfn, "slab descriptor with class " + std::to_string(cls) + " and length " +
                              std::to_string(length) + " is inconsistent");
          }
          if (ok && (length == 0 || length > geo.max_range >> sparse::page_shift)) {
            report(pfn, "extent length " + std::to_string(length) + " is impossible");
            ok = false;
          }
          for (std::uint64_t at = pfn; ok && at < pfn + length;
               at = (at / pageblock_pages + 1) * pageblock_pages)
            if (!usable(at)) {
              report(pfn, "extent of " + std::to_string(length) +
                              " pages runs into absent, metadata or quarantined memory at " +
                              hex(at << sparse::page_shift));
              ok = false;
            }
          if (!ok)
            length = 1;  // treat the page as allocated; check() reports it
          else
            found.push_back({pfn, length, sparse::is_slab(d.state()), d.sub(),
                             d.state() == page_state::movable_slab});
          covered_until = pfn + length;
          // Its other pages in this pageblock must be plain tails too (later
          // pageblocks are checked above, when the scan reaches them).
          for (std::uint64_t tail = pfn + 1;
               tail < std::min(covered_until, first + pageblock_pages); ++tail)
            if (model_.pfn_to_page(tail)->load() != sparse::free_descriptor) {
              report(tail, "a descriptor inside another extent or slab");
              break;
            }
          pfn += length;
        }
        const std::uint64_t pageblock = first / pageblock_pages;
        if (free_pages == pageblock_pages) {
          std::lock_guard lock(pool_mutex_);
          pool_.insert(pageblock);
        } else if (free_pages) {
          zone& z = *zones_[home_zone(pageblock)];
          std::lock_guard lock(z.mutex);
          own(z, pageblock, model_.get_pageblock_migratetype(first));
          for (auto [pfn, n] : free_runs) free_range(z, pfn, n);
        }
      }
    }
  }
  return found;
}

}  // namespace daxalloc::alloc
