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

// One arena per zone of the page allocator (default_arenas(): two per CPU,
// as jemalloc has four: enough that threads seldom share one, few enough
// that partly used slabs stay few); arena i takes its slabs' pages from zone i.
small_allocator::small_allocator(sparse::memory_model& model, page_allocator& pages)
    : model_(model),
      pages_(pages),
      directory_(new std::atomic<std::atomic<slab*>*>[model.geo().nr_sections()]()) {
  for (unsigned i = 0; i < pages.zones(); ++i) arenas_.push_back(std::make_unique<arena>());
}

small_allocator::~small_allocator() {
  for (std::uint64_t i = 0; i < model_.geo().nr_sections(); ++i) delete[] directory_[i].load();
}

std::atomic<small_allocator::slab*>* small_allocator::directory_entry(std::uint64_t pfn,
                                                                      bool create) const {
  const sparse::geometry& geo = model_.geo();
  std::atomic<std::atomic<slab*>*>& root = directory_[pfn >> geo.pfn_section_shift()];
  std::atomic<slab*>* leaf = root.load(std::memory_order_acquire);
  if (leaf == nullptr) {
    if (!create) return nullptr;
    auto* fresh = new std::atomic<slab*>[geo.pages_per_section() >> min_slab_order]();
    if (root.compare_exchange_strong(leaf, fresh, std::memory_order_acq_rel))
      leaf = fresh;
    else
      delete[] fresh;  // another arena made it first
  }
  return &leaf[(pfn & (geo.pages_per_section() - 1)) >> min_slab_order];
}

small_allocator::slab* small_allocator::slab_of(const void* object,
                                                const size_class& c) const noexcept {
  const auto offset =
      static_cast<std::uint64_t>(static_cast<const std::byte*>(object) - model_.base());
  const std::uint64_t head =
      (offset >> sparse::page_shift) & ~((std::uint64_t{1} << c.slab_order) - 1);
  return directory_entry(head, false)->load(std::memory_order_acquire);
}

object_location small_allocator::bit_of(const void* p, unsigned cls) const noexcept {
  const size_class& c = size_classes[cls];
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_.base());
  const std::uint64_t head =
      (offset >> sparse::page_shift) & ~((std::uint64_t{1} << c.slab_order) - 1);
  const std::uint64_t i = c.index(offset - (head << sparse::page_shift) - c.header);
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
    if (offset < start) return std::nullopt;
    const std::uint64_t i = c.index(offset - start);
    if (i * c.size != offset - start || i >= c.objects) return std::nullopt;
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
small_allocator::slab* small_allocator::new_slab(unsigned a, unsigned cls) {
  const size_class& c = size_classes[cls];
  const std::uint64_t pages = std::uint64_t{1} << c.slab_order;
  const auto pfn = pages_.allocate(pages, migratetype::unmovable, a);
  if (!pfn) return nullptr;
  const persistence& p = model_.media().persist();
  p.memset_persist(bitmap(*pfn), 0, c.header);
  sparse::page_descriptor* head = model_.pfn_to_page(*pfn);
  head->store(sparse::page_info(page_state::slab, cls, pages));
  p.persist(&head->info, 8);
  auto s = std::make_unique<slab>(*pfn, 0, a);
  s->free.resize(c.objects);
  for (std::uint32_t i = 0; i < c.objects; ++i) s->free[i] = c.objects - 1 - i;  // lowest first
  slab* raw = s.get();
  klass& k = (*arenas_[a])[cls];
  k.slabs.emplace(*pfn, std::move(s));
  k.partial.insert(*raw);
  became_empty(k, *raw);
  directory_entry(*pfn, true)->store(raw, std::memory_order_release);
  return raw;
}

// An empty slab of another arena becomes this arena's. The caller holds this
// arena's class lock; the other's is only tried, so two arenas adopting from
// each other cannot deadlock (and a busy one is simply passed over).
small_allocator::slab* small_allocator::adopt_empty_slab(unsigned a, unsigned cls) {
  klass& k = (*arenas_[a])[cls];
  for (unsigned other = 0; other < arenas_.size(); ++other) {
    klass& o = (*arenas_[other])[cls];
    if (other == a) continue;
    std::unique_lock lock(o.mutex, std::try_to_lock);
    if (!lock || o.empty.empty()) continue;
    slab* s = &o.empty.front();
    o.partial.erase(o.partial.iterator_to(*s));
    no_longer_empty(o, *s);
    k.slabs.insert(o.slabs.extract(s->pfn));
    s->arena.store(a, std::memory_order_release);
    k.partial.insert(*s);
    became_empty(k, *s);
    return s;
  }
  return nullptr;
}

// All objects of the slab are back and clear: uncommit it (one fence) and
// return its pages.
void small_allocator::release_slab(klass& k, slab* s, unsigned cls) {
  const std::uint64_t pfn = s->pfn, pages = std::uint64_t{1} << size_classes[cls].slab_order;
  sparse::page_descriptor* head = model_.pfn_to_page(pfn);
  head->store(0);
  model_.media().persist().persist(&head->info, 8);
  directory_entry(pfn, false)->store(nullptr, std::memory_order_release);
  k.partial.erase(k.partial.iterator_to(*s));
  no_longer_empty(k, *s);
  k.slabs.erase(pfn);
  pages_.free(pfn, pages);
}

// Hands out objects of k's partial slabs, lowest slab first, up to n (k's
// lock held).
std::size_t small_allocator::take_partial(klass& k, const size_class& c, void** out,
                                          std::size_t n) {
  std::size_t got = 0;
  while (got < n && !k.partial.empty()) {
    slab& s = *k.partial.begin();
    std::byte* objects = model_.pfn_to_virt(s.pfn) + c.header;
    if (s.in_use == 0) no_longer_empty(k, s);
    while (got < n && !s.free.empty()) {
      out[got++] = objects + std::size_t{s.free.back()} * c.size;
      s.free.pop_back();
      ++s.in_use;
    }
    if (s.free.empty()) k.partial.erase(k.partial.begin());
  }
  return got;
}

// From the arena's partial slabs, then an empty slab adopted from another
// arena, then a new slab. With no pages left for one, objects of other
// arenas' partly used slabs (one lock at a time; they stay those arenas'
// and go back to them when freed).
std::size_t small_allocator::take(unsigned a, unsigned cls, void** out, std::size_t n) {
  klass& k = (*arenas_[a])[cls];
  const size_class& c = size_classes[cls];
  std::size_t got = 0;
  {
    std::lock_guard lock(k.mutex);
    got = take_partial(k, c, out, n);
    while (got < n && (adopt_empty_slab(a, cls) || new_slab(a, cls)))
      got += take_partial(k, c, out + got, n - got);
  }
  for (unsigned other = 0; got < n && other < arenas_.size(); ++other) {
    if (other == a) continue;
    klass& o = (*arenas_[other])[cls];
    std::lock_guard lock(o.mutex);
    got += take_partial(o, c, out + got, n - got);
  }
  return got;
}

void small_allocator::return_object(klass& k, slab* s, const void* object, const size_class& c) {
  const auto offset =
      static_cast<std::uint64_t>(static_cast<const std::byte*>(object) - model_.base());
  s->free.push_back(c.index(offset - (s->pfn << sparse::page_shift) - c.header));
  if (--s->in_use == 0) became_empty(k, *s);
  if (!s->partial_hook::is_linked()) k.partial.insert(*s);
  // An empty slab stays (creating and releasing one costs three fences and
  // the page allocator's lock); release_empty_slabs() returns them when the
  // heap runs out of pages or before a hot-remove.
}

// The objects of one arena's slabs are returned under one lock: each pass
// locks the arena owning the first object left, returns every object of
// that arena and moves the others to the front of the array (a thread
// freeing objects other threads allocated holds objects of several arenas,
// interleaved). A slab cannot change arena while its arena's lock is held,
// so the owner read before locking is checked again under the lock.
void small_allocator::give(unsigned cls, void** objects, std::size_t n) {
  const size_class& c = size_classes[cls];
  while (n > 0) {
    const unsigned owner = slab_of(objects[0], c)->arena.load(std::memory_order_acquire);
    klass& k = (*arenas_[owner])[cls];
    std::size_t kept = 0;
    std::lock_guard lock(k.mutex);
    for (std::size_t i = 0; i < n; ++i) {
      slab* s = slab_of(objects[i], c);
      if (s->arena.load(std::memory_order_relaxed) == owner)
        return_object(k, s, objects[i], c);
      else
        objects[kept++] = objects[i];
    }
    n = kept;
  }
}

std::size_t small_allocator::release_empty_slabs() {
  std::size_t released = 0;
  for (auto& a : arenas_)
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      klass& k = (*a)[cls];
      std::lock_guard lock(k.mutex);
      for (; !k.empty.empty(); ++released) release_slab(k, &k.empty.front(), cls);
    }
  return released;
}

void small_allocator::rebuild(const std::vector<allocated_extent>& found,
                              std::vector<std::string>& problems, std::vector<std::uint64_t>* bad) {
  for (auto& a : arenas_)
    for (klass& k : *a) {
      std::lock_guard lock(k.mutex);
      for (const auto& [pfn, s] : k.slabs) directory_entry(pfn, false)->store(nullptr);
      k.partial.clear();
      k.empty.clear();
      k.slabs.clear();
    }
  for (const allocated_extent& e : found) {
    if (!e.slab) continue;
    const size_class& c = size_classes[e.sub];
    klass& k = (*arenas_[0])[e.sub];
    const std::uint64_t* bits = bitmap(e.pfn);
    auto s = std::make_unique<slab>(e.pfn, 0, 0u);
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
    if (raw->in_use == 0) became_empty(k, *raw);
    if (!raw->free.empty()) k.partial.insert(*raw);
    k.slabs.emplace(e.pfn, std::move(s));
    directory_entry(e.pfn, true)->store(raw, std::memory_order_release);
  }
}

std::array<class_stats, nr_size_classes> small_allocator::stats() const {
  std::array<class_stats, nr_size_classes> out{};
  for (const auto& a : arenas_)
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      const klass& k = (*a)[cls];
      std::lock_guard lock(k.mutex);
      out[cls].slabs += k.slabs.size();
      out[cls].capacity += k.slabs.size() * size_classes[cls].objects;
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
  for (unsigned a = 0; a < arenas_.size(); ++a)
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      const klass& k = (*arenas_[a])[cls];
      const size_class& c = size_classes[cls];
      std::lock_guard lock(k.mutex);
      const std::string arena_class =
          "arena " + std::to_string(a) + ", class " + std::to_string(c.size) + " B: ";
      if (static_cast<std::size_t>(std::count_if(
              k.slabs.begin(), k.slabs.end(),
              [](const auto& e) { return e.second->in_use == 0; })) != k.empty.size() ||
          std::any_of(k.empty.begin(), k.empty.end(),
                      [&](const slab& s) { return !k.slabs.count(s.pfn) || s.in_use; }))
        problems.push_back(arena_class + "the set of empty slabs is wrong");
      for (const slab& s : k.partial)
        if (!k.slabs.count(s.pfn) || s.free.empty())
          problems.push_back(arena_class + "partial list holds a slab it should not");
      for (const auto& [pfn, s] : k.slabs) check_slab(pfn, *s, a, cls, problems);
    }
}

void small_allocator::check_slab(std::uint64_t pfn, const slab& s, unsigned a, unsigned cls,
                                 std::vector<std::string>& problems) const {
  const size_class& c = size_classes[cls];
  const std::string where = "slab at " + std::to_string(pfn << sparse::page_shift) + " (class " +
                            std::to_string(c.size) + " B): ";
  const sparse::page_descriptor& d = *model_.pfn_to_page(pfn);
  if (d.load() != sparse::page_info(page_state::slab, cls, std::uint64_t{1} << c.slab_order))
    problems.push_back(where + "head descriptor does not describe this slab");
  if (s.arena.load() != a || directory_entry(pfn, false) == nullptr ||
      directory_entry(pfn, false)->load() != &s)
    problems.push_back(where + "arena or directory entry is wrong");
  if (s.free.size() + s.in_use != c.objects) problems.push_back(where + "free + in use != objects");
  if (s.free.empty() == s.partial_hook::is_linked())
    problems.push_back(where + "on the partial list exactly when it has no free object");
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
  if (set > s.in_use) problems.push_back(where + "more objects allocated than handed out");
  for (auto i : s.free)
    if ((bits[i / 64] >> (i % 64)) & 1) {
      problems.push_back(where + "object " + std::to_string(i) +
                         " is on the free list but allocated");
      break;
    }
}

}  // namespace daxalloc::alloc
