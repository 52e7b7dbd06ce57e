#include "alloc/page_allocator.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>

#include "alloc/size_classes.hpp"

namespace daxalloc::alloc {
namespace {

using sparse::hex;
using sparse::page_state;

constexpr std::array<std::array<migratetype, 2>, 3> fallbacks = {{
    {migratetype::large, migratetype::movable},      // unmovable (slabs)
    {migratetype::large, migratetype::unmovable},    // movable
    {migratetype::unmovable, migratetype::movable},  // large
}};

constexpr std::size_t index(migratetype t) {
  return static_cast<std::size_t>(t);
}

}  // namespace

// Two per CPU, as jemalloc has four.
unsigned default_arenas() {
  return std::clamp(2 * std::thread::hardware_concurrency(), 1u, 64u);
}

void page_allocator::free_deleter::operator()(std::uint8_t* p) const noexcept {
  std::free(p);
}

page_allocator::page_allocator(sparse::memory_model& model, unsigned zones)
    : model_(model),
      owners_(static_cast<std::uint8_t*>(
          std::calloc(model.geo().max_range / sparse::subsection_size, 1))) {
  if (!owners_) throw std::bad_alloc();
  for (unsigned i = 0; i < std::clamp(zones, 1u, 64u); ++i)
    zones_.push_back(std::make_unique<zone>(i));
}

std::optional<unsigned> page_allocator::owner(std::uint64_t pageblock) const noexcept {
  const std::uint8_t z =
      std::atomic_ref<std::uint8_t>(owners_[pageblock]).load(std::memory_order_acquire);
  return z ? std::optional<unsigned>(z - 1u) : std::nullopt;
}

void page_allocator::own(zone& z, std::uint64_t pageblock, migratetype type,
                         std::uint32_t free_pages) {
  z.owned_blocks[pageblock] = {type, free_pages};
  std::atomic_ref<std::uint8_t>(owners_[pageblock])
      .store(static_cast<std::uint8_t>(z.id + 1), std::memory_order_release);
}

void page_allocator::disown(zone& z, std::uint64_t pageblock) {
  z.owned_blocks.erase(pageblock);
  std::atomic_ref<std::uint8_t>(owners_[pageblock]).store(0, std::memory_order_release);
}

void page_allocator::insert_run(std::map<std::uint64_t, std::uint64_t>& runs,
                                std::uint64_t pageblock, std::uint64_t count) {
  auto next = runs.lower_bound(pageblock);
  if (next != runs.end() && next->first == pageblock + count) {
    count += next->second;
    next = runs.erase(next);
  }
  if (next != runs.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == pageblock) {
      prev->second += count;
      return;
    }
  }
  runs.emplace(pageblock, count);
}

// Returns whether a flush is left for the caller's fence (fence = false).
bool page_allocator::set_type(std::uint64_t pageblock, migratetype type, bool fence) {
  const std::uint64_t pfn = pageblock * pageblock_pages;
  return model_.get_pageblock_migratetype(pfn) != type &&
         model_.set_pageblock_migratetype(pfn, type, fence);
}

// Frees one naturally aligned block of 2^order pages into its pageblock's
// buddy lists, merging with free buddies (__free_one_page).
void page_allocator::free_block(zone& z, std::uint64_t pfn, unsigned order) {
  const std::uint64_t pageblock = pfn / pageblock_pages;
  auto& lists = z.free_lists[index(z.owned_blocks.at(pageblock).type)];
  while (order < max_order) {
    const std::uint64_t buddy = pfn ^ (std::uint64_t{1} << order);
    auto it = z.free_order.find(buddy);
    if (it == z.free_order.end() || it->second != order) break;
    lists[order].erase(buddy);
    z.free_order.erase(it);
    pfn = std::min(pfn, buddy);
    ++order;
  }
  lists[order].insert(pfn);
  z.free_order[pfn] = static_cast<std::uint8_t>(order);
}

// Frees [pfn, pfn+pages) inside one pageblock the zone owns. A pageblock
// whose pages are all free stays with the zone (release_free_pageblocks).
void page_allocator::free_range(zone& z, std::uint64_t pfn, std::uint64_t pages) {
  owned& o = z.owned_blocks.at(pfn / pageblock_pages);
  o.free_pages += static_cast<std::uint32_t>(pages);
  while (pages) {
    unsigned order = std::min<unsigned>(static_cast<unsigned>(std::countr_zero(pfn)), max_order);
    while ((std::uint64_t{1} << order) > pages) --order;
    free_block(z, pfn, order);
    pfn += std::uint64_t{1} << order;
    pages -= std::uint64_t{1} << order;
  }
}

// The pages being freed are allocated, so their pageblock cannot change
// owner meanwhile: the owner read without a lock is the one to lock.
void page_allocator::free(std::uint64_t pfn, std::uint64_t pages) {
  const std::uint64_t end = pfn + pages;
  for (std::uint64_t pageblock = pfn / pageblock_pages; pageblock * pageblock_pages < end;
       ++pageblock) {
    const std::uint64_t lo = std::max(pfn, pageblock * pageblock_pages);
    const std::uint64_t hi = std::min(end, (pageblock + 1) * pageblock_pages);
    const auto z = owner(pageblock);
    if (hi - lo == pageblock_pages && !z) {  // a whole pageblock of a large extent
      std::lock_guard lock(pool_mutex_);
      insert_run(pool_, pageblock, 1);
      continue;
    }
    zone& mine = *zones_[z.value_or(0)];
    std::lock_guard lock(mine.mutex);
    if (!mine.owned_blocks.count(pageblock))
      own(mine, pageblock, model_.get_pageblock_migratetype(lo), 0);
    free_range(mine, lo, hi - lo);
  }
}

bool page_allocator::own_pageblock_from_pool(zone& z, migratetype type) {
  std::uint64_t pageblock = 0;
  {
    std::lock_guard lock(pool_mutex_);
    if (pool_.empty()) return false;
    auto run = pool_.begin();  // lowest addresses first: keeps the heap compact
    pageblock = run->first;
    if (run->second > 1) pool_.emplace(pageblock + 1, run->second - 1);
    pool_.erase(run);
  }
  set_type(pageblock, type);
  own(z, pageblock, type, static_cast<std::uint32_t>(pageblock_pages));
  z.free_lists[index(type)][max_order].insert(pageblock * pageblock_pages);
  z.free_order[pageblock * pageblock_pages] = max_order;
  return true;
}

bool page_allocator::take_block(zone& z, unsigned order, migratetype type, bool from_pool,
                                std::uint64_t& pfn) {
  const auto try_type = [&](migratetype t) {
    auto& lists = z.free_lists[index(t)];
    for (unsigned k = order; k <= max_order; ++k) {
      if (lists[k].empty()) continue;
      std::uint64_t p = *lists[k].begin();
      lists[k].erase(lists[k].begin());
      z.free_order.erase(p);
      while (k > order) {  // split, keeping the lower half (expand())
        --k;
        const std::uint64_t half = p + (std::uint64_t{1} << k);
        lists[k].insert(half);
        z.free_order[half] = static_cast<std::uint8_t>(k);
      }
      z.owned_blocks.at(p / pageblock_pages).free_pages -=
          static_cast<std::uint32_t>(std::uint64_t{1} << order);
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
                                                                 unsigned zone_index) {
  const std::uint64_t count = (pages + pageblock_pages - 1) / pageblock_pages;
  std::uint64_t first = 0;
  {
    std::lock_guard lock(pool_mutex_);
    auto best = pool_.end();
    for (auto it = pool_.begin(); it != pool_.end(); ++it)
      if (it->second >= count && (best == pool_.end() || it->second < best->second)) best = it;
    if (best == pool_.end()) return std::nullopt;
    first = best->first;
    const std::uint64_t run = best->second;
    pool_.erase(best);
    if (run > count) pool_.emplace(first + count, run - count);
  }
  bool flushed = false;
  for (std::uint64_t pb = first; pb < first + count; ++pb)
    flushed |= set_type(pb, migratetype::large, false);
  if (flushed) model_.media().persist().drain();
  if (const std::uint64_t used = pages % pageblock_pages) {
    zone& z = *zones_[zone_index % zones_.size()];
    std::lock_guard lock(z.mutex);
    const std::uint64_t last = first + count - 1;
    own(z, last, migratetype::large, 0);
    free_range(z, last * pageblock_pages + used, pageblock_pages - used);
  }
  return first * pageblock_pages;
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
    if (const std::uint64_t tail = (std::uint64_t{1} << order) - pages)
      free_range(z, pfn + pages, tail);
    return pfn;
  };
  zone& mine = *zones_[zone_index % zones_.size()];
  if (auto pfn = carve(mine, true)) return pfn;
  for (auto& other : zones_)  // the pool is empty: free blocks other zones keep
    if (other.get() != &mine)
      if (auto pfn = carve(*other, false)) return pfn;
  return std::nullopt;
}

std::size_t page_allocator::release_free_pageblocks() {
  std::size_t released = 0;
  for (auto& zp : zones_) {
    zone& z = *zp;
    std::lock_guard lock(z.mutex);
    std::vector<std::uint64_t> whole;
    for (const auto& [pageblock, o] : z.owned_blocks)
      if (o.free_pages == pageblock_pages) whole.push_back(pageblock);
    for (std::uint64_t pageblock : whole) {
      const std::uint64_t first = pageblock * pageblock_pages;
      z.free_lists[index(z.owned_blocks.at(pageblock).type)][max_order].erase(first);
      z.free_order.erase(first);
      disown(z, pageblock);
    }
    std::lock_guard pool_lock(pool_mutex_);  // zone, then pool: the order everywhere
    for (std::uint64_t pageblock : whole) insert_run(pool_, pageblock, 1);
    released += whole.size();
  }
  return released;
}

void page_allocator::add_span(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(pool_mutex_);
  for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size) {
    const std::uint64_t pfn = at >> sparse::page_shift;
    if (model_.get_pageblock_migratetype(pfn) == migratetype::metadata) continue;
    insert_run(pool_, pfn / pageblock_pages, 1);
  }
}

bool page_allocator::isolate(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(pool_mutex_);
  std::vector<std::uint64_t> blocks;
  for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size) {
    const std::uint64_t pfn = at >> sparse::page_shift;
    if (model_.get_pageblock_migratetype(pfn) == migratetype::metadata) continue;
    const std::uint64_t pb = pfn / pageblock_pages;
    auto run = pool_.upper_bound(pb);
    if (run == pool_.begin() || std::prev(run)->first + std::prev(run)->second <= pb) return false;
    blocks.push_back(pb);
  }
  for (std::uint64_t pb : blocks) {
    auto run = std::prev(pool_.upper_bound(pb));
    const std::uint64_t first = run->first, count = run->second;
    pool_.erase(run);
    if (pb > first) pool_.emplace(first, pb - first);
    if (first + count > pb + 1) pool_.emplace(pb + 1, first + count - pb - 1);
  }
  return true;
}

bool page_allocator::is_free(std::uint64_t pfn) const {
  const std::uint64_t pb = pfn / pageblock_pages;
  {
    std::lock_guard lock(pool_mutex_);
    auto run = pool_.upper_bound(pb);
    if (run != pool_.begin() && std::prev(run)->first + std::prev(run)->second > pb) return true;
  }
  const auto z = owner(pb);
  if (!z) return false;
  const zone& mine = *zones_[*z];
  std::lock_guard lock(mine.mutex);
  for (unsigned k = 0; k <= max_order; ++k) {
    const std::uint64_t head = pfn & ~((std::uint64_t{1} << k) - 1);
    auto it = mine.free_order.find(head);
    if (it != mine.free_order.end() && it->second == k) return true;
  }
  return false;
}

// Wholly free pageblocks the zones keep count as the pool's: an allocation
// that needs them gets them (release_free_pageblocks).
page_stats page_allocator::stats() const {
  page_stats s;
  std::map<std::uint64_t, std::uint64_t> runs;
  {
    std::lock_guard lock(pool_mutex_);
    runs = pool_;
  }
  for (auto [first, count] : runs) s.free_pages += count * pageblock_pages;
  for (const auto& zp : zones_) {
    std::lock_guard lock(zp->mutex);
    for (const auto& [pb, o] : zp->owned_blocks) {
      s.free_pages += o.free_pages;
      if (o.free_pages == pageblock_pages)
        insert_run(runs, pb, 1);
      else
        ++s.owned_pageblocks[index(o.type)];
    }
    for (const auto& [pfn, order] : zp->free_order)
      s.largest_free_pages = std::max(s.largest_free_pages, std::uint64_t{1} << order);
  }
  for (auto [first, count] : runs) {
    s.pool_pageblocks += count;
    s.largest_free_pages = std::max(s.largest_free_pages, count * pageblock_pages);
  }
  return s;
}

std::vector<allocated_extent> page_allocator::rebuild(std::vector<std::string>& problems,
                                                      std::vector<std::uint64_t>* bad) {
  for (auto& zp : zones_) {
    std::lock_guard lock(zp->mutex);
    for (const auto& [pb, o] : zp->owned_blocks)
      std::atomic_ref<std::uint8_t>(owners_[pb]).store(0, std::memory_order_relaxed);
    zp->owned_blocks.clear();
    zp->free_order.clear();
    for (auto& lists : zp->free_lists)
      for (auto& l : lists) l.clear();
  }
  std::map<std::uint64_t, std::uint64_t> pool;
  struct partly_used {
    std::uint64_t pageblock;
    migratetype type;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> free_runs;
  };
  std::vector<partly_used> partly;

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
        std::vector<std::pair<std::uint64_t, std::uint64_t>> free_runs;
        std::uint32_t free_pages = 0;
        // Pages inside an extent or slab found earlier must be plain tails.
        for (std::uint64_t pfn = first; pfn < std::min(covered_until, first + pageblock_pages);
             ++pfn)
          if (model_.pfn_to_page(pfn)->load() != 0) {
            report(pfn, "a descriptor inside another extent or slab");
            break;
          }
        for (std::uint64_t pfn = std::max(first, covered_until); pfn < first + pageblock_pages;) {
          const sparse::page_descriptor& d = *model_.pfn_to_page(pfn);
          if (d.state() == page_state::free) {
            // Free is the whole word zero: stray bits would surface once the
            // page became the tail of an extent.
            if (d.load() != 0) report(pfn, "free page with a non-zero descriptor " + hex(d.load()));
            if (!free_runs.empty() && free_runs.back().first + free_runs.back().second == pfn)
              ++free_runs.back().second;
            else
              free_runs.emplace_back(pfn, 1);
            ++free_pages;
            ++pfn;
            continue;
          }
          std::uint64_t length = d.length();
          bool ok = d.state() == page_state::extent || d.state() == page_state::slab;
          if (!ok) report(pfn, "unexpected state " + std::to_string(static_cast<int>(d.state())));
          if (ok && d.state() == page_state::slab) {
            const unsigned cls = d.sub();
            ok = cls < nr_size_classes &&
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
            found.push_back({pfn, length, d.state() == page_state::slab, d.sub()});
          covered_until = pfn + length;
          // Its other pages in this pageblock must be plain tails too (later
          // pageblocks are checked above, when the scan reaches them).
          for (std::uint64_t tail = pfn + 1;
               tail < std::min(covered_until, first + pageblock_pages); ++tail)
            if (model_.pfn_to_page(tail)->load() != 0) {
              report(tail, "a descriptor inside another extent or slab");
              break;
            }
          pfn += length;
        }
        const std::uint64_t pageblock = first / pageblock_pages;
        if (free_pages == pageblock_pages)
          insert_run(pool, pageblock, 1);
        else if (free_pages)
          partly.push_back(
              {pageblock, model_.get_pageblock_migratetype(first), std::move(free_runs)});
      }
    }
  }
  {
    std::lock_guard lock(pool_mutex_);
    pool_ = std::move(pool);
  }
  zone& z = *zones_[0];
  std::lock_guard lock(z.mutex);
  for (auto& p : partly) {
    own(z, p.pageblock, p.type, 0);
    for (auto [pfn, n] : p.free_runs) free_range(z, pfn, n);
  }
  return found;
}

}  // namespace daxalloc::alloc
