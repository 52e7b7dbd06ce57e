#include "alloc/page_allocator.hpp"

#include <algorithm>
#include <bit>

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

void page_allocator::pool_insert(std::uint64_t pageblock, std::uint64_t count) {
  auto next = pool_.lower_bound(pageblock);
  if (next != pool_.end() && next->first == pageblock + count) {
    count += next->second;
    next = pool_.erase(next);
  }
  if (next != pool_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == pageblock) {
      prev->second += count;
      return;
    }
  }
  pool_.emplace(pageblock, count);
}

// Returns whether a flush is left for the caller's fence (fence = false).
bool page_allocator::set_type(std::uint64_t pageblock, migratetype type, bool fence) {
  const std::uint64_t pfn = pageblock * pageblock_pages;
  return model_.get_pageblock_migratetype(pfn) != type &&
         model_.set_pageblock_migratetype(pfn, type, fence);
}

// Frees one naturally aligned block of 2^order pages into its pageblock's
// buddy lists, merging with free buddies (__free_one_page).
void page_allocator::free_block(std::uint64_t pfn, unsigned order) {
  const std::uint64_t pageblock = pfn / pageblock_pages;
  const std::size_t type = index(owned_.at(pageblock).type);
  while (order < max_order) {
    const std::uint64_t buddy = pfn ^ (std::uint64_t{1} << order);
    auto it = free_order_.find(buddy);
    if (it == free_order_.end() || it->second != order) break;
    free_lists_[type][order].erase(buddy);
    free_order_.erase(it);
    pfn = std::min(pfn, buddy);
    ++order;
  }
  free_lists_[type][order].insert(pfn);
  free_order_[pfn] = static_cast<std::uint8_t>(order);
}

// Frees [pfn, pfn+pages) inside one owned pageblock; a pageblock whose pages
// are all free goes back to the pool.
void page_allocator::free_range(std::uint64_t pfn, std::uint64_t pages) {
  const std::uint64_t pageblock = pfn / pageblock_pages;
  owned& o = owned_.at(pageblock);
  o.free_pages += static_cast<std::uint32_t>(pages);
  while (pages) {
    unsigned order = std::min<unsigned>(static_cast<unsigned>(std::countr_zero(pfn)), max_order);
    while ((std::uint64_t{1} << order) > pages) --order;
    free_block(pfn, order);
    pfn += std::uint64_t{1} << order;
    pages -= std::uint64_t{1} << order;
  }
  if (o.free_pages == pageblock_pages) {
    const std::uint64_t first = pageblock * pageblock_pages;
    free_lists_[index(o.type)][max_order].erase(first);
    free_order_.erase(first);
    owned_.erase(pageblock);
    pool_insert(pageblock, 1);
  }
}

void page_allocator::free(std::uint64_t pfn, std::uint64_t pages) {
  std::lock_guard lock(mutex_);
  const std::uint64_t end = pfn + pages;
  for (std::uint64_t pageblock = pfn / pageblock_pages; pageblock * pageblock_pages < end;
       ++pageblock) {
    const std::uint64_t lo = std::max(pfn, pageblock * pageblock_pages);
    const std::uint64_t hi = std::min(end, (pageblock + 1) * pageblock_pages);
    if (hi - lo == pageblock_pages) {
      owned_.erase(
          pageblock);  // a buddy order-9 allocation leaves an owned entry with no free pages
      pool_insert(pageblock, 1);
      continue;
    }
    if (!owned_.count(pageblock)) owned_[pageblock] = {model_.get_pageblock_migratetype(lo), 0};
    free_range(lo, hi - lo);
  }
}

bool page_allocator::own_pageblock_from_pool(migratetype type) {
  if (pool_.empty()) return false;
  auto run = pool_.begin();  // lowest addresses first: keeps the heap compact
  const std::uint64_t pageblock = run->first;
  if (run->second > 1) pool_.emplace(pageblock + 1, run->second - 1);
  pool_.erase(run);
  set_type(pageblock, type);
  owned_[pageblock] = {type, static_cast<std::uint32_t>(pageblock_pages)};
  free_lists_[index(type)][max_order].insert(pageblock * pageblock_pages);
  free_order_[pageblock * pageblock_pages] = max_order;
  return true;
}

bool page_allocator::take_block(unsigned order, migratetype type, std::uint64_t& pfn) {
  const auto try_type = [&](migratetype t) {
    auto& lists = free_lists_[index(t)];
    for (unsigned k = order; k <= max_order; ++k) {
      if (lists[k].empty()) continue;
      std::uint64_t p = *lists[k].begin();
      lists[k].erase(lists[k].begin());
      free_order_.erase(p);
      while (k > order) {  // split, keeping the lower half (expand())
        --k;
        const std::uint64_t half = p + (std::uint64_t{1} << k);
        lists[k].insert(half);
        free_order_[half] = static_cast<std::uint8_t>(k);
      }
      owned_.at(p / pageblock_pages).free_pages -=
          static_cast<std::uint32_t>(std::uint64_t{1} << order);
      pfn = p;
      return true;
    }
    return false;
  };
  if (try_type(type)) return true;
  if (own_pageblock_from_pool(type) && try_type(type)) return true;
  if (index(type) < fallbacks.size())
    for (migratetype t : fallbacks[index(type)])
      if (try_type(t)) return true;
  return false;
}

std::optional<std::uint64_t> page_allocator::allocate(std::uint64_t pages, migratetype type) {
  if (pages == 0) return std::nullopt;
  std::lock_guard lock(mutex_);
  if (pages >= pageblock_pages) {
    // Whole pageblocks from the pool, best fit; the rest of the last one is
    // freed into buddy lists of type large.
    const std::uint64_t count = (pages + pageblock_pages - 1) / pageblock_pages;
    auto best = pool_.end();
    for (auto it = pool_.begin(); it != pool_.end(); ++it)
      if (it->second >= count && (best == pool_.end() || it->second < best->second)) best = it;
    if (best == pool_.end()) return std::nullopt;
    const std::uint64_t first = best->first, run = best->second;
    pool_.erase(best);
    if (run > count) pool_.emplace(first + count, run - count);
    bool flushed = false;
    for (std::uint64_t pb = first; pb < first + count; ++pb)
      flushed |= set_type(pb, migratetype::large, false);
    if (flushed) model_.media().persist().drain();
    if (const std::uint64_t used = pages % pageblock_pages) {
      const std::uint64_t last = first + count - 1;
      owned_[last] = {migratetype::large, 0};
      free_range(last * pageblock_pages + used, pageblock_pages - used);
    }
    return first * pageblock_pages;
  }
  const unsigned order = static_cast<unsigned>(std::bit_width(pages - 1));
  std::uint64_t pfn = 0;
  if (!take_block(order, type, pfn)) return std::nullopt;
  if (const std::uint64_t tail = (std::uint64_t{1} << order) - pages) free_range(pfn + pages, tail);
  return pfn;
}

void page_allocator::add_span(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(mutex_);
  for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size) {
    const std::uint64_t pfn = at >> sparse::page_shift;
    if (model_.get_pageblock_migratetype(pfn) == migratetype::metadata) continue;
    pool_insert(pfn / pageblock_pages, 1);
  }
}

bool page_allocator::isolate(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(mutex_);
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
  std::lock_guard lock(mutex_);
  const std::uint64_t pb = pfn / pageblock_pages;
  auto run = pool_.upper_bound(pb);
  if (run != pool_.begin() && std::prev(run)->first + std::prev(run)->second > pb) return true;
  for (unsigned k = 0; k <= max_order; ++k) {
    const std::uint64_t head = pfn & ~((std::uint64_t{1} << k) - 1);
    auto it = free_order_.find(head);
    if (it != free_order_.end() && it->second == k) return true;
  }
  return false;
}

page_stats page_allocator::stats() const {
  std::lock_guard lock(mutex_);
  page_stats s;
  for (auto [first, count] : pool_) {
    s.pool_pageblocks += count;
    s.largest_free_pages = std::max(s.largest_free_pages, count * pageblock_pages);
  }
  s.free_pages = s.pool_pageblocks * pageblock_pages;
  for (const auto& [pb, o] : owned_) {
    s.free_pages += o.free_pages;
    ++s.owned_pageblocks[index(o.type)];
  }
  for (const auto& [pfn, order] : free_order_)
    s.largest_free_pages = std::max(s.largest_free_pages, std::uint64_t{1} << order);
  return s;
}

std::vector<allocated_extent> page_allocator::rebuild(std::vector<std::string>& problems,
                                                      std::vector<std::uint64_t>* bad) {
  std::lock_guard lock(mutex_);
  pool_.clear();
  owned_.clear();
  free_order_.clear();
  for (auto& lists : free_lists_)
    for (auto& l : lists) l.clear();

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
        if (free_pages == pageblock_pages) {
          pool_insert(pageblock, 1);
        } else if (free_pages) {
          owned_[pageblock] = {model_.get_pageblock_migratetype(first), 0};
          for (auto [pfn, n] : free_runs) free_range(pfn, n);
        }
      }
    }
  }
  return found;
}

}  // namespace daxalloc::alloc
