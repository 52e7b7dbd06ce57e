#include "alloc/small_allocator.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <new>

namespace daxalloc::alloc {
namespace {

using sparse::page_state;

constexpr unsigned max_slab_order = [] {
  unsigned m = 0;
  for (const auto& c : size_classes) m = std::max<unsigned>(m, c.slab_order);
  return m;
}();
static_assert(sparse::pages_per_subsection >> max_slab_order >= 1,
              "a slab lies inside one pageblock, hence inside one section");

std::atomic_ref<std::uint64_t> atomic_word(std::uint64_t* w) {
  return std::atomic_ref<std::uint64_t>(*w);
}
std::uint64_t load_word(const std::uint64_t* w) {
  return std::atomic_ref<const std::uint64_t>(*w).load(std::memory_order_relaxed);
}

// The bits of word w that stand for objects of a slab of `objects` objects.
std::uint64_t valid_bits(std::uint32_t w, std::uint32_t objects) {
  if (std::uint64_t{w} * 64 + 64 <= objects) return ~0ull;
  return objects > w * 64 ? (std::uint64_t{1} << (objects - w * 64)) - 1 : 0;
}

}  // namespace

// One arena per zone of the page allocator (default_arenas(): two per CPU,
// as jemalloc has four: enough that threads seldom share one, few enough
// that partly used slabs stay few); arena i takes its slabs' pages from zone i.
small_allocator::small_allocator(sparse::memory_model& model, page_allocator& pages)
    : model_(model),
      pages_(pages),
      base_(model.base()),
      range_(model.geo().max_range),
      section_bits_(model.geo().section_size_bits),
      chunk_map_memory_((model.geo().max_range >> chunk_shift) * 8),
      chunk_map_(static_cast<std::atomic<std::uint64_t>*>(chunk_map_memory_.data())),
      chunks_(std::uint64_t{1} << (section_bits_ - chunk_shift)),
      leaf_bytes_(chunks_ * (sizeof(slab) + wide_words * 8)),
      leaves_(new std::atomic<std::byte*>[model.geo().nr_sections()]()) {
  for (unsigned i = 0; i < pages.zones(); ++i) arenas_.push_back(std::make_unique<arena>());
  for (std::uint64_t nr = 0; nr < model.geo().nr_sections(); ++nr)
    if (model.section_present(nr)) (void)leaf_of(model.geo().section_nr_to_pfn(nr));
}

small_allocator::~small_allocator() {
  arenas_.clear();  // their lists link slabs in the leaves
  for (std::uint64_t i = 0; i < model_.geo().nr_sections(); ++i)
    if (auto* memory = leaves_[i].load()) ::daxalloc::detail::zeroed_memory(memory, leaf_bytes_);
}

// A leaf is made when its section becomes present (construction, add_span),
// so new_slab() never makes one under a class lock in practice; the
// compare-and-swap keeps a late first use correct all the same.
small_allocator::leaf small_allocator::leaf_of(std::uint64_t pfn) const {
  std::atomic<std::byte*>& slot = leaves_[pfn >> model_.geo().pfn_section_shift()];
  std::byte* memory = slot.load(std::memory_order_acquire);
  if (memory == nullptr) {
    ::daxalloc::detail::zeroed_memory fresh(leaf_bytes_);
    auto* mine = static_cast<std::byte*>(fresh.data());
    if (slot.compare_exchange_strong(memory, mine, std::memory_order_acq_rel)) {
      memory = mine;
      (void)fresh.release();  // unmapped by the destructor
    }
  }
  return leaf_at(memory);
}

small_allocator::leaf small_allocator::leaf_at(std::byte* memory) const noexcept {
  return {reinterpret_cast<slab*>(memory),
          reinterpret_cast<std::uint64_t*>(memory + chunks_ * sizeof(slab))};
}

void small_allocator::add_span(std::uint64_t offset, std::uint64_t length) {
  const std::uint64_t section = model_.geo().section_size();
  for (std::uint64_t at = offset / section * section; at < offset + length; at += section)
    (void)leaf_of(at >> sparse::page_shift);
}

small_allocator::slab* small_allocator::slab_at(std::uint64_t head) const noexcept {
  const std::uint64_t chunk = head >> min_slab_order;
  const std::uint64_t e = chunk_map_[chunk].load(std::memory_order_acquire);
  if (e == 0 || head_chunk(e) != chunk) return nullptr;
  std::byte* memory =
      leaves_[head >> model_.geo().pfn_section_shift()].load(std::memory_order_acquire);
  return &leaf_at(memory).slabs[chunk & (chunks_ - 1)];
}

small_allocator::slab* small_allocator::slab_of(const void* object) const noexcept {
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(object) - base_);
  const std::uint64_t head =
      head_chunk(chunk_map_[offset >> chunk_shift].load(std::memory_order_acquire));
  std::byte* memory = leaves_[offset >> section_bits_].load(std::memory_order_acquire);
  return &leaf_at(memory).slabs[head & (chunks_ - 1)];
}

object_location small_allocator::bit_of(const void* p, unsigned cls) const noexcept {
  const size_class& c = size_classes[cls];
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base_);
  const std::uint64_t head =
      (offset >> sparse::page_shift) & ~((std::uint64_t{1} << c.slab_order) - 1);
  const std::uint64_t i = c.index(offset - (head << sparse::page_shift) - c.header);
  return {bitmap(head) + i / 64, std::uint64_t{1} << (i % 64), cls};
}

std::optional<object_location> small_allocator::locate(const void* p) const noexcept {
  const int cls = class_of(p);
  if (cls < 0) return std::nullopt;
  return bit_of(p, static_cast<unsigned>(cls));
}

std::optional<object_location> small_allocator::locate_on_media(const void* p) const noexcept {
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
    if (d.state() != page_state::slab || d.length() != (std::uint64_t{1} << order) ||
        !sparse::descriptor_checks_out(d.load()))
      continue;
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

// The slab's head descriptor is prefetched for writing before the bitmap's
// RMW: both lines were written back (and on some CPUs evicted) by the last
// change, and their misses overlap instead of adding up.
bool small_allocator::mark_allocated(const object_location& at) const noexcept {
  __builtin_prefetch(digest_of(at.word), 1);
  const bool changed =
      (atomic_word(at.word).fetch_or(at.mask, std::memory_order_relaxed) & at.mask) == 0;
  if (changed) {
    model_.media().persist().flush(at.word, 8);
    model_.media().persist().flush(bits_changed(at.word, at.mask), 8);
  }
  return changed;
}

bool small_allocator::mark_free(const object_location& at) const noexcept {
  __builtin_prefetch(digest_of(at.word), 1);
  const bool changed =
      (atomic_word(at.word).fetch_and(~at.mask, std::memory_order_relaxed) & at.mask) != 0;
  if (changed) {
    model_.media().persist().flush(at.word, 8);
    model_.media().persist().flush(bits_changed(at.word, at.mask), 8);
  }
  return changed;
}

// A slab's bitmap lies in its head page (the largest header is 1 KiB), so
// the word names the head descriptor and the objects its bits stand for.
sparse::page_descriptor* small_allocator::digest_of(const std::uint64_t* word) const noexcept {
  const auto offset = static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(word) - base_);
  return model_.pfn_to_page(offset >> sparse::page_shift);
}

sparse::page_descriptor* small_allocator::bits_changed(const std::uint64_t* word,
                                                       std::uint64_t changed) const noexcept {
  const auto offset = static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(word) - base_);
  const std::uint64_t first = (offset & (sparse::page_size - 1)) / 8 * 64;
  std::uint64_t delta = 0;
  for (; changed; changed &= changed - 1)
    delta ^= sparse::slab_bit_digest(first + static_cast<unsigned>(std::countr_zero(changed)));
  sparse::page_descriptor* head = digest_of(word);
  std::atomic_ref<std::uint64_t>(head->info)
      .fetch_xor(sparse::slab_digest_xor(delta), std::memory_order_relaxed);
  return head;
}

std::uint64_t small_allocator::bitmap_digest(std::uint64_t pfn, unsigned cls) const noexcept {
  return sparse::slab_bitmap_digest(bitmap(pfn), size_classes[cls].objects);
}

// The volatile descriptor of a slab headed at pfn, its map words, and an
// avail bitmap of every object (the caller clears those allocated).
small_allocator::slab* small_allocator::install(std::uint64_t pfn, unsigned cls, unsigned a) {
  const size_class& c = size_classes[cls];
  const leaf l = leaf_of(pfn);
  const std::uint64_t chunk = (pfn & (model_.geo().pages_per_section() - 1)) >> min_slab_order;
  const std::uint64_t global = pfn >> min_slab_order;
  std::uint64_t* wide = l.wide + chunk * wide_words;
  slab* s = new (&l.slabs[chunk]) slab(pfn, cls, a, nullptr);
  s->avail = c.objects <= inline_objects ? s->inline_avail : wide;
  for (std::uint32_t w = 0; w * 64 < c.objects; ++w) s->avail[w] = valid_bits(w, c.objects);
  for (std::uint64_t i = 0; i < (std::uint64_t{1} << (c.slab_order - min_slab_order)); ++i)
    chunk_map_[global + i].store(((pfn << sparse::page_shift) + c.header) << 8 | cls,
                                 std::memory_order_release);
  (*arenas_[a])[cls].slabs.push_back(*s);
  return s;
}

void small_allocator::uninstall(slab* s) {
  const size_class& c = size_classes[s->cls];
  for (std::uint64_t i = 0; i < (std::uint64_t{1} << (c.slab_order - min_slab_order)); ++i)
    chunk_map_[(s->pfn >> min_slab_order) + i].store(0, std::memory_order_release);
  klass& k = (*arenas_[s->arena.load(std::memory_order_relaxed)])[s->cls];
  k.slabs.erase(k.slabs.iterator_to(*s));
  s->~slab();
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
  slab* s = install(*pfn, cls, a);
  klass& k = (*arenas_[a])[cls];
  k.partial.insert(*s);
  became_empty(k, *s);
  return s;
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
    o.slabs.erase(o.slabs.iterator_to(*s));
    k.slabs.push_back(*s);
    s->arena.store(a, std::memory_order_release);
    k.partial.insert(*s);
    became_empty(k, *s);
    return s;
  }
  return nullptr;
}

// All objects of the slab are back and clear: uncommit it (one fence) and
// return its pages.
void small_allocator::release_slab(klass& k, slab* s) {
  const std::uint64_t pfn = s->pfn, pages = std::uint64_t{1} << size_classes[s->cls].slab_order;
  sparse::page_descriptor* head = model_.pfn_to_page(pfn);
  head->store(sparse::free_descriptor);
  model_.media().persist().persist(&head->info, 8);
  k.partial.erase(k.partial.iterator_to(*s));
  no_longer_empty(k, *s);
  uninstall(s);
  pages_.free(pfn, pages);
}

// Hands out objects of k's partial slabs, lowest slab and lowest object
// first, up to n (k's lock held).
std::size_t small_allocator::take_partial(klass& k, const size_class& c, void** out,
                                          std::size_t n) {
  std::size_t got = 0;
  const std::uint32_t words = (c.objects + 63) / 64;
  while (got < n && !k.partial.empty()) {
    slab& s = *k.partial.begin();
    std::byte* objects = model_.pfn_to_virt(s.pfn) + c.header;
    if (s.in_use == 0) no_longer_empty(k, s);
    std::uint32_t w = s.low_word;
    for (; w < words && got < n; ++w) {
      std::uint64_t bits = s.avail[w];
      while (bits != 0 && got < n) {
        const auto i = static_cast<std::uint32_t>(std::countr_zero(bits));
        bits &= bits - 1;
        out[got++] = objects + (std::size_t{w} * 64 + i) * c.size;
        ++s.in_use;
      }
      s.avail[w] = bits;
      if (bits != 0) break;
    }
    s.low_word = w;
    if (s.in_use == c.objects) k.partial.erase(k.partial.iterator_to(s));
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

// `returned` objects whose avail bits the caller has set are back in s.
void small_allocator::returned(klass& k, slab& s, std::uint32_t count, const size_class& c) {
  if (s.in_use == c.objects) k.partial.insert(s);
  s.in_use -= count;
  if (s.in_use == 0) became_empty(k, s);
  // An empty slab stays (creating and releasing one costs three fences and
  // the page allocator's lock); release_empty_slabs() returns them when the
  // heap runs out of pages or before a hot-remove.
}

// The objects of one arena's slabs are returned under one lock: each pass
// locks the arena owning the first object left, returns every object of
// that arena and moves the others to the front of the array (a thread
// freeing objects other threads allocated holds objects of several arenas,
// interleaved). A slab cannot change arena while its arena's lock is held,
// so the owner read before locking is checked again under the lock. Runs of
// objects of one slab (the common case: a cache flushes what it took) cost
// a compare and a bit each.
void small_allocator::give(unsigned cls, void** objects, std::size_t n) {
  const size_class& c = size_classes[cls];
  while (n > 0) {
    const unsigned owner = slab_of(objects[0])->arena.load(std::memory_order_acquire);
    klass& k = (*arenas_[owner])[cls];
    std::size_t kept = 0;
    std::lock_guard lock(k.mutex);
    slab* s = nullptr;
    const std::byte* first = nullptr;  // s's first object
    std::uint32_t count = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto* p = static_cast<const std::byte*>(objects[i]);
      if (s == nullptr || static_cast<std::uint64_t>(p - first) >= c.bytes) {
        if (s != nullptr) returned(k, *s, count, c);
        s = slab_of(p);
        count = 0;
        if (s->arena.load(std::memory_order_relaxed) != owner) {
          objects[kept++] = objects[i];
          s = nullptr;
          continue;
        }
        first = model_.pfn_to_virt(s->pfn) + c.header;
      }
      const std::uint32_t at = c.index(static_cast<std::uint64_t>(p - first));
      s->avail[at / 64] |= std::uint64_t{1} << (at % 64);
      s->low_word = std::min(s->low_word, at / 64);
      ++count;
    }
    if (s != nullptr) returned(k, *s, count, c);
    n = kept;
  }
}

std::size_t small_allocator::release_empty_slabs() {
  std::size_t released = 0;
  for (auto& a : arenas_)
    for (klass& k : *a) {
      std::lock_guard lock(k.mutex);
      for (; !k.empty.empty(); ++released) release_slab(k, &k.empty.front());
    }
  return released;
}

template <class F>
void small_allocator::for_each_slab(F&& f) const {
  for (std::uint64_t nr = 0; nr < model_.geo().nr_sections(); ++nr) {
    std::byte* memory = leaves_[nr].load(std::memory_order_acquire);
    if (memory == nullptr) continue;
    const leaf l = leaf_at(memory);
    for (std::uint64_t chunk = 0; chunk < chunks_; ++chunk) {
      const std::uint64_t global = nr * chunks_ + chunk;
      const std::uint64_t e = chunk_map_[global].load(std::memory_order_acquire);
      if (e != 0 && head_chunk(e) == global) f(l.slabs[chunk]);
    }
  }
}

void small_allocator::rebuild(const std::vector<allocated_extent>& found,
                              std::vector<std::string>& problems, std::vector<std::uint64_t>* bad) {
  std::vector<slab*> old;
  for_each_slab([&](const slab& s) { old.push_back(const_cast<slab*>(&s)); });
  for (auto& a : arenas_)
    for (klass& k : *a) {
      std::lock_guard lock(k.mutex);
      k.partial.clear();
      k.empty.clear();
    }
  for (slab* s : old) uninstall(s);
  for (const allocated_extent& e : found) {
    if (!e.slab) continue;
    const size_class& c = size_classes[e.sub];
    klass& k = (*arenas_[0])[e.sub];
    std::lock_guard lock(k.mutex);
    slab* s = install(e.pfn, e.sub, 0);
    std::uint64_t* bits = bitmap(e.pfn);
    for (std::uint32_t w = 0; w < c.header / 8; ++w) {
      const std::uint64_t word = bits[w], valid = valid_bits(w, c.objects);
      if (word & ~valid) {
        problems.push_back("slab at " + std::to_string(e.pfn << sparse::page_shift) +
                           ": bitmap has bits set beyond its " + std::to_string(c.objects) +
                           " objects");
        if (bad) bad->push_back(e.pfn / pageblock_pages);
      }
      if (w * 64 < c.objects) s->avail[w] = valid & ~word;
      s->in_use += static_cast<std::uint32_t>(std::popcount(word & valid));
    }
    if (s->in_use == 0) became_empty(k, *s);
    if (s->in_use < c.objects) k.partial.insert(*s);
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
      // Bits are read racily (a concurrent durable allocation may or may not count).
      for (const slab& s : k.slabs) {
        const std::uint64_t* bits = bitmap(s.pfn);
        for (std::uint32_t w = 0; w < size_classes[cls].header / 8; ++w)
          out[cls].allocated += std::popcount(load_word(bits + w));
      }
    }
  return out;
}

void small_allocator::check(std::vector<std::string>& problems,
                            std::span<const std::uint64_t> digests_pending) const {
  for (unsigned a = 0; a < arenas_.size(); ++a)
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      const klass& k = (*arenas_[a])[cls];
      std::lock_guard lock(k.mutex);
      const std::string arena_class = "arena " + std::to_string(a) + ", class " +
                                      std::to_string(size_classes[cls].size) + " B: ";
      std::uint64_t empty = 0;
      for (const slab& s : k.slabs) {
        if (s.cls != cls || s.arena.load() != a || slab_at(s.pfn) != &s)
          problems.push_back(arena_class + "the slab at " +
                             std::to_string(s.pfn << sparse::page_shift) +
                             " is not this arena's and class's in the slab table");
        empty += s.in_use == 0;
        check_slab(s, problems, digests_pending);
      }
      if (empty != k.empty.size() ||
          std::any_of(k.empty.begin(), k.empty.end(), [&](const slab& s) {
            return s.in_use != 0 || s.cls != cls || slab_at(s.pfn) != &s;
          }))
        problems.push_back(arena_class + "the set of empty slabs is wrong");
      for (const slab& s : k.partial)
        if (s.cls != cls || slab_at(s.pfn) != &s || s.in_use == size_classes[cls].objects)
          problems.push_back(arena_class + "partial list holds a slab it should not");
    }
  // Every slab in the table is on its arena's list.
  std::uint64_t listed = 0, tabled = 0;
  for (const auto& a : arenas_)
    for (const klass& k : *a) {
      std::lock_guard lock(k.mutex);
      listed += k.slabs.size();
    }
  for_each_slab([&](const slab&) { ++tabled; });
  if (listed != tabled)
    problems.push_back("the slab table holds " + std::to_string(tabled) + " slabs, the arenas " +
                       std::to_string(listed));
}

void small_allocator::check_slab(const slab& s, std::vector<std::string>& problems,
                                 std::span<const std::uint64_t> digests_pending) const {
  const size_class& c = size_classes[s.cls];
  const std::string where = "slab at " + std::to_string(s.pfn << sparse::page_shift) + " (class " +
                            std::to_string(c.size) + " B): ";
  const sparse::page_descriptor& d = *model_.pfn_to_page(s.pfn);
  if (sparse::with_slab_digest(d.load(), 0) !=
      sparse::page_info(page_state::slab, s.cls, std::uint64_t{1} << c.slab_order))
    problems.push_back(where + "head descriptor does not describe this slab");
  if ((s.in_use < c.objects) != s.partial_hook::is_linked())
    problems.push_back(where + "on the partial list exactly when it has no free object");
  const std::uint64_t* bits = bitmap(s.pfn);
  std::uint64_t set = 0, avail = 0;
  for (std::uint32_t w = 0; w < c.header / 8; ++w) {
    const std::uint64_t word = load_word(bits + w), valid = valid_bits(w, c.objects);
    const std::uint64_t free = w * 64 < c.objects ? s.avail[w] : 0;
    if (word & ~valid) problems.push_back(where + "a bit beyond the objects is set");
    if (free & ~valid) problems.push_back(where + "an avail bit beyond the objects is set");
    if (free & word) problems.push_back(where + "an object is both available and allocated");
    if (free != 0 && w < s.low_word) problems.push_back(where + "an avail bit below low_word");
    set += std::popcount(word);
    avail += std::popcount(free);
  }
  if (avail + s.in_use != c.objects) problems.push_back(where + "available + in use != objects");
  if (sparse::slab_digest(d.load()) != bitmap_digest(s.pfn, s.cls) &&
      !std::binary_search(digests_pending.begin(), digests_pending.end(), s.pfn))
    problems.push_back(where + "its bitmap does not match its digest");
  if (set > s.in_use) problems.push_back(where + "more objects allocated than handed out");
}

}  // namespace daxalloc::alloc
