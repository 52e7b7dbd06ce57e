#include "alloc/small_allocator.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace daxalloc::alloc {
namespace {

using sparse::page_state;

constexpr unsigned max_slab_order = [] {
  unsigned m = 0;
  for (const auto& c : size_classes) m = std::max<unsigned>(m, c.slab_order);
  return m;
}();

std::atomic_ref<std::uint64_t> atomic_word(std::uint64_t* w) {
  return std::atomic_ref<std::uint64_t>(*w);
}

}  // namespace

small_allocator::~small_allocator() = default;

object_location small_allocator::bit_of(const void* p, unsigned cls) const noexcept {
  const size_class& c = size_classes[cls];
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_.base());
  const std::uint64_t head =
      (offset >> sparse::page_shift) & ~((std::uint64_t{1} << c.slab_order) - 1);
  const std::uint64_t i = (offset - (head << sparse::page_shift) - c.header) / c.size;
  return {bitmap(head) + i / 64, std::uint64_t{1} << (i % 64), cls};
}

std::optional<object_location> small_allocator::locate(const void* p) const noexcept {
  const auto* at = static_cast<const std::byte*>(p);
  if (!model_.media().contains(at)) return std::nullopt;
  const auto offset = static_cast<std::uint64_t>(at - model_.base());
  const std::uint64_t pfn = offset >> sparse::page_shift;
  // Not in a quarantined pageblock: its slabs are not the allocator's.
  if (!model_.pfn_valid(pfn) || model_.get_pageblock_migratetype(pfn) == migratetype::isolate)
    return std::nullopt;
  for (unsigned order = min_slab_order; order <= max_slab_order; ++order) {
    const std::uint64_t head = pfn & ~((std::uint64_t{1} << order) - 1);
    const sparse::page_descriptor& d = *model_.pfn_to_page(head);
    if (d.state() != page_state::slab || d.length() != (std::uint64_t{1} << order)) continue;
    if (d.sub() >= nr_size_classes || size_classes[d.sub()].slab_order != order)
      return std::nullopt;
    const size_class& c = size_classes[d.sub()];
    const std::uint64_t start = (head << sparse::page_shift) + c.header;
    if (offset < start || (offset - start) % c.size) return std::nullopt;
    const std::uint64_t i = (offset - start) / c.size;
    if (i >= c.objects) return std::nullopt;
    return object_location{bitmap(head) + i / 64, std::uint64_t{1} << (i % 64), d.sub()};
  }
  return std::nullopt;
}

bool small_allocator::mark_allocated(const object_location& at) const noexcept {
  const bool changed =
      (atomic_word(at.word).fetch_or(at.mask, std::memory_order_relaxed) & at.mask) == 0;
  if (changed) model_.media().persist().flush(at.word, 8);
  return changed;
}

bool small_allocator::mark_free(const object_location& at) const noexcept {
  const bool changed =
      (atomic_word(at.word).fetch_and(~at.mask, std::memory_order_relaxed) & at.mask) != 0;
  if (changed) model_.media().persist().flush(at.word, 8);
  return changed;
}

// A new slab: zero its bitmap and make that durable, then commit the head
// descriptor (two fences, once per slab). A crash in between leaves free
// pages with a zeroed bitmap in them: nothing.
small_allocator::slab* small_allocator::new_slab(unsigned cls) {
  const size_class& c = size_classes[cls];
  const std::uint64_t pages = std::uint64_t{1} << c.slab_order;
  const auto pfn = pages_.allocate(pages, migratetype::unmovable);
  if (!pfn) return nullptr;
  const persistence& p = model_.media().persist();
  p.memset_persist(bitmap(*pfn), 0, c.header);
  sparse::page_descriptor* head = model_.pfn_to_page(*pfn);
  head->store(sparse::page_info(page_state::slab, cls, pages));
  p.persist(&head->info, 8);
  auto s = std::make_unique<slab>(slab{*pfn, 0, {}, true});
  s->free.resize(c.objects);
  for (std::uint32_t i = 0; i < c.objects; ++i) s->free[i] = c.objects - 1 - i;  // lowest first
  slab* raw = s.get();
  classes_[cls].slabs.emplace(*pfn, std::move(s));
  classes_[cls].partial.push_back(raw);
  count_empty(classes_[cls], +1);
  return raw;
}

// All objects of the slab are back and clear: uncommit it (one fence) and
// return its pages.
void small_allocator::release_slab(klass& k, slab* s, unsigned cls) {
  const std::uint64_t pfn = s->pfn, pages = std::uint64_t{1} << size_classes[cls].slab_order;
  sparse::page_descriptor* head = model_.pfn_to_page(pfn);
  head->store(0);
  model_.media().persist().persist(&head->info, 8);
  k.partial.erase(std::find(k.partial.begin(), k.partial.end(), s));
  k.slabs.erase(pfn);
  count_empty(k, -1);
  pages_.free(pfn, pages);
}

std::size_t small_allocator::take(unsigned cls, void** out, std::size_t n) {
  klass& k = classes_[cls];
  const size_class& c = size_classes[cls];
  std::lock_guard lock(k.mutex);
  std::size_t got = 0;
  while (got < n) {
    slab* s = k.partial.empty() ? new_slab(cls) : k.partial.back();
    if (s == nullptr) break;
    std::byte* objects = model_.pfn_to_virt(s->pfn) + c.header;
    if (s->in_use == 0) count_empty(k, -1);
    while (got < n && !s->free.empty()) {
      out[got++] = objects + std::size_t{s->free.back()} * c.size;
      s->free.pop_back();
      ++s->in_use;
    }
    if (s->free.empty()) {
      k.partial.erase(std::find(k.partial.begin(), k.partial.end(), s));
      s->listed = false;
    }
  }
  return got;
}

void small_allocator::give(unsigned cls, void* const* objects, std::size_t n) {
  klass& k = classes_[cls];
  const size_class& c = size_classes[cls];
  const std::uint64_t pages = std::uint64_t{1} << c.slab_order;
  std::lock_guard lock(k.mutex);
  for (std::size_t i = 0; i < n; ++i) {
    const auto offset =
        static_cast<std::uint64_t>(static_cast<std::byte*>(objects[i]) - model_.base());
    const std::uint64_t head = (offset >> sparse::page_shift) & ~(pages - 1);
    slab* s = k.slabs.at(head).get();
    s->free.push_back(
        static_cast<std::uint32_t>((offset - (head << sparse::page_shift) - c.header) / c.size));
    if (--s->in_use == 0) count_empty(k, +1);
    if (!s->listed) {
      k.partial.push_back(s);
      s->listed = true;
    }
    // An empty slab stays (creating and releasing one costs three fences and
    // the page allocator's lock); release_empty_slabs() returns them when the
    // heap runs out of pages or before a hot-remove.
  }
}

std::size_t small_allocator::release_empty_slabs() {
  std::size_t released = 0;
  for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
    if (empty_slabs_.load(std::memory_order_relaxed) == 0) break;
    klass& k = classes_[cls];
    std::lock_guard lock(k.mutex);
    if (k.empty == 0) continue;
    std::vector<slab*> empty;
    for (const auto& [pfn, s] : k.slabs)
      if (s->in_use == 0) empty.push_back(s.get());
    for (slab* s : empty) release_slab(k, s, cls);
    released += empty.size();
  }
  return released;
}

void small_allocator::rebuild(const std::vector<allocated_extent>& found,
                              std::vector<std::string>& problems, std::vector<std::uint64_t>* bad) {
  for (auto& k : classes_) {
    std::lock_guard lock(k.mutex);
    k.partial.clear();
    k.slabs.clear();
    count_empty(k, -static_cast<std::ptrdiff_t>(k.empty));
  }
  for (const allocated_extent& e : found) {
    if (!e.slab) continue;
    const size_class& c = size_classes[e.sub];
    klass& k = classes_[e.sub];
    const std::uint64_t* bits = bitmap(e.pfn);
    auto s = std::make_unique<slab>(slab{e.pfn, 0, {}, false});
    for (std::uint32_t w = 0; w < c.header / 8; ++w) {
      std::uint64_t word = bits[w];
      if (w * 64 + 64 > c.objects) {
        const std::uint64_t beyond =
            c.objects > w * 64 ? ~((std::uint64_t{1} << (c.objects - w * 64)) - 1) : ~0ull;
        if (word & beyond) {
          problems.push_back("slab at " + std::to_string(e.pfn << sparse::page_shift) +
                             ": bitmap has bits set beyond its " + std::to_string(c.objects) +
                             " objects");
          if (bad) bad->push_back(e.pfn / pageblock_pages);
          word &= ~beyond;
        }
      }
      s->in_use += static_cast<std::uint32_t>(std::popcount(word));
    }
    for (std::uint32_t i = c.objects; i-- > 0;)
      if (!((bits[i / 64] >> (i % 64)) & 1)) s->free.push_back(i);
    slab* raw = s.get();
    std::lock_guard lock(k.mutex);
    if (raw->in_use == 0) count_empty(k, +1);
    if (!raw->free.empty()) {
      k.partial.push_back(raw);
      raw->listed = true;
    }
    k.slabs.emplace(e.pfn, std::move(s));
  }
}

std::array<class_stats, nr_size_classes> small_allocator::stats() const {
  std::array<class_stats, nr_size_classes> out{};
  for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
    const klass& k = classes_[cls];
    std::lock_guard lock(k.mutex);
    out[cls].slabs = k.slabs.size();
    out[cls].capacity = k.slabs.size() * size_classes[cls].objects;
    for (const auto& [pfn, s] : k.slabs) {
      const std::uint64_t* bits = bitmap(pfn);
      for (std::uint32_t w = 0; w < size_classes[cls].header / 8; ++w)
        out[cls].allocated += std::popcount(
            std::atomic_ref<const std::uint64_t>(bits[w]).load(std::memory_order_relaxed));
    }
  }
  return out;
}

void small_allocator::check(std::vector<std::string>& problems) const {
  for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
    const klass& k = classes_[cls];
    const size_class& c = size_classes[cls];
    std::lock_guard lock(k.mutex);
    if (static_cast<std::size_t>(std::count_if(k.slabs.begin(), k.slabs.end(), [](const auto& e) {
          return e.second->in_use == 0;
        })) != k.empty)
      problems.push_back("class " + std::to_string(c.size) + " B: count of empty slabs is wrong");
    for (const auto& [pfn, s] : k.slabs) {
      const std::string where = "slab at " + std::to_string(pfn << sparse::page_shift) +
                                " (class " + std::to_string(c.size) + " B): ";
      const sparse::page_descriptor& d = *model_.pfn_to_page(pfn);
      if (d.load() != sparse::page_info(page_state::slab, cls, std::uint64_t{1} << c.slab_order))
        problems.push_back(where + "head descriptor does not describe this slab");
      if (s->free.size() + s->in_use != c.objects)
        problems.push_back(where + "free + in use != objects");
      const std::uint64_t* bits = bitmap(pfn);
      std::uint64_t set = 0;
      for (std::uint32_t i = 0; i < c.header * 8; ++i) {
        const bool bit =
            (std::atomic_ref<const std::uint64_t>(bits[i / 64]).load(std::memory_order_relaxed) >>
             (i % 64)) &
            1;
        if (bit && i >= c.objects)
          problems.push_back(where + "bit " + std::to_string(i) + " beyond the objects is set");
        set += bit;
      }
      if (set > s->in_use) problems.push_back(where + "more objects allocated than handed out");
      for (auto i : s->free)
        if ((bits[i / 64] >> (i % 64)) & 1) {
          problems.push_back(where + "object " + std::to_string(i) +
                             " is on the free list but allocated");
          break;
        }
    }
  }
}

}  // namespace daxalloc::alloc
