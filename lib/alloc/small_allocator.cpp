#include "alloc/small_allocator.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>

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

std::uint64_t load_word(const std::uint64_t* w) {
  return std::atomic_ref<const std::uint64_t>(*w).load(std::memory_order_relaxed);
}

// The object bits of a bitmap word of a slab of class c.
std::uint64_t object_bits(const size_class& c, std::uint64_t word) {
  return c.word_bits == legacy_word_bits ? word : word & sparse::slab_word_data_mask;
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
  for (unsigned i = 0; i <= pages.zones(); ++i) arenas_.push_back(std::make_unique<arena>());
  movable_arena_ = pages.zones();
  for (std::uint64_t nr = 0; nr < model.geo().nr_sections(); ++nr)
    if (model.section_present(nr)) (void)leaf_of(model.geo().section_nr_to_pfn(nr));
}

small_allocator::~small_allocator() {
  arenas_.clear();  // their lists link slabs in the leaves
  for (auto& kind : unloaded_)
    for (unloaded_class& u : kind) u.slabs.clear();
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

// The slab's class and first object from its chunk's map word: an object
// handed out for a class may lie in its legacy twin's slab.
object_location small_allocator::bit_of(const void* p) const noexcept {
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base_);
  const std::uint64_t e = chunk_map_[offset >> chunk_shift].load(std::memory_order_relaxed);
  const auto cls = static_cast<unsigned>(e & 0xff);
  const size_class& c = size_classes[cls];
  const std::uint32_t i = c.index(offset - (e >> 8));
  return {bitmap(((e >> 8) - c.header) >> sparse::page_shift) + c.word_of(i), c.mask_of(i), cls};
}

std::optional<object_location> small_allocator::locate(const void* p) const noexcept {
  if (any_class_of(p) < 0) return std::nullopt;
  return bit_of(p);
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
    if (!sparse::is_slab(d.state()) || d.length() != (std::uint64_t{1} << order) ||
        !sparse::descriptor_checks_out(d.load()))
      continue;
    if (d.sub() >= nr_slab_classes || size_classes[d.sub()].slab_order != order ||
        (d.state() == page_state::movable_slab && is_legacy_class(d.sub())))
      return std::nullopt;
    const size_class& c = size_classes[d.sub()];
    const std::uint64_t start = (head << sparse::page_shift) + c.header +
                                (d.state() == page_state::movable_slab ? movable_skew : 0);
    if (offset < start) return std::nullopt;
    const std::uint64_t i = c.index(offset - start);
    if (i * c.size != offset - start || i >= c.objects) return std::nullopt;
    return object_location{bitmap(head) + c.word_of(static_cast<std::uint32_t>(i)),
                           c.mask_of(static_cast<std::uint32_t>(i)), d.sub()};
  }
  return std::nullopt;
}

// A format 5 word changes with its check bits in one compare-and-swap, and
// only its own line is written back. A legacy slab's head descriptor is
// prefetched for writing before the bitmap's RMW: both lines were written
// back (and on some CPUs evicted) by the last change, and their misses
// overlap instead of adding up.
std::uint64_t small_allocator::change_bits(std::uint64_t* word, std::uint64_t mask, bool set,
                                           unsigned cls) const noexcept {
  std::atomic_ref<std::uint64_t> ref(*word);
  if (is_legacy_class(cls)) {
    const std::uint64_t changed = set ? mask & ~ref.fetch_or(mask, std::memory_order_release)
                                      : mask & ref.fetch_and(~mask, std::memory_order_release);
    if (changed) (void)bits_changed(word, changed);
    return changed;
  }
  std::uint64_t old = ref.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t changed = set ? mask & ~old : mask & old;
    if (changed == 0) return 0;
    if (ref.compare_exchange_weak(old, old ^ sparse::slab_word_flip(changed),
                                  std::memory_order_release, std::memory_order_relaxed))
      return changed;
  }
}

unsigned small_allocator::word_class(const std::uint64_t* word) const noexcept {
  const auto offset = static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(word) - base_);
  return model_.pfn_to_page(offset >> sparse::page_shift)->sub();
}

bool small_allocator::mark(const object_location& at, bool set) const noexcept {
  const bool legacy = is_legacy_class(at.cls);
  if (legacy) __builtin_prefetch(head_of(at.word), 1);
  if (change_bits(at.word, at.mask, set, at.cls) == 0) return false;
  model_.media().persist().flush(at.word, 8);
  if (legacy) model_.media().persist().flush(head_of(at.word), 8);
  return true;
}

// A slab's bitmap lies in its head page (the largest header is 1,152 bytes), so
// the word names the head descriptor and the objects its bits stand for.
sparse::page_descriptor* small_allocator::head_of(const std::uint64_t* word) const noexcept {
  const auto offset = static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(word) - base_);
  return model_.pfn_to_page(offset >> sparse::page_shift);
}

sparse::page_descriptor* small_allocator::digest_of(const std::uint64_t* word) const noexcept {
  sparse::page_descriptor* head = head_of(word);
  return is_legacy_class(head->sub()) ? head : nullptr;
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
  return sparse::slab_bitmap_digest(bitmap(pfn), size_classes[cls].objects,
                                    size_classes[cls].word_bits);
}

std::string small_allocator::bitmap_problem(std::uint64_t pfn, unsigned cls) const {
  const size_class& c = size_classes[cls];
  const std::uint64_t* bits = bitmap(pfn);
  for (std::uint32_t w = 0; w < c.header / 8; ++w) {
    const std::uint64_t word = load_word(bits + w);
    if (!is_legacy_class(cls) && !sparse::slab_word_checks_out(word))
      return "bitmap word " + std::to_string(w) + " fails its check bits";
    if (object_bits(c, word) & ~c.valid_bits(w))
      return "bitmap has bits set beyond its " + std::to_string(c.objects) + " objects";
  }
  return {};
}

// The volatile descriptor of a slab headed at pfn, its map words, and an
// avail bitmap of every object (the caller clears those allocated, and
// links it into a list).
small_allocator::slab* small_allocator::install(std::uint64_t pfn, unsigned cls, unsigned a,
                                                bool movable) {
  const size_class& c = size_classes[cls];
  const leaf l = leaf_of(pfn);
  const std::uint64_t chunk = (pfn & (model_.geo().pages_per_section() - 1)) >> min_slab_order;
  const std::uint64_t global = pfn >> min_slab_order;
  std::uint64_t* wide = l.wide + chunk * wide_words;
  slab* s = new (&l.slabs[chunk]) slab(pfn, cls, a, nullptr, movable);
  s->avail = c.words() <= inline_words ? s->inline_avail : wide;
  for (std::uint32_t w = 0; w < c.words(); ++w) s->avail[w] = c.valid_bits(w);
  for (std::uint64_t i = 0; i < (std::uint64_t{1} << (c.slab_order - min_slab_order)); ++i)
    chunk_map_[global + i].store(
        ((pfn << sparse::page_shift) + c.header + (movable ? movable_skew : 0)) << 8 | cls,
        std::memory_order_release);
  return s;
}

void small_allocator::uninstall(slab* s) {
  const size_class& c = size_classes[s->cls];
  for (std::uint64_t i = 0; i < (std::uint64_t{1} << (c.slab_order - min_slab_order)); ++i)
    chunk_map_[(s->pfn >> min_slab_order) + i].store(0, std::memory_order_release);
  if (s->state.load(std::memory_order_relaxed) == unloaded) {
    unloaded_class& u = unloaded_[s->movable][base_class(s->cls)];
    std::lock_guard lock(u.mutex);
    u.slabs.erase(u.slabs.iterator_to(*s));
  } else {
    klass& k = (*arenas_[s->arena.load(std::memory_order_relaxed)])[base_class(s->cls)];
    k.slabs.erase(k.slabs.iterator_to(*s));
  }
  s->~slab();
}

// A new slab: write its empty bitmap and make that durable, then commit the
// head descriptor (two fences, once per slab). A crash in between leaves
// free pages with an empty bitmap in them: nothing.
small_allocator::slab* small_allocator::new_slab(unsigned a, unsigned klass_index) {
  const bool movable = a == movable_arena_;
  const unsigned cls = make_legacy_slabs && !movable ? legacy_class(klass_index) : klass_index;
  const size_class& c = size_classes[cls];
  const std::uint64_t pages = std::uint64_t{1} << c.slab_order;
  const auto pfn = movable ? pages_.allocate(pages, migratetype::movable, 0)
                           : pages_.allocate(pages, migratetype::unmovable, a);
  if (!pfn) return nullptr;
  const persistence& p = model_.media().persist();
  std::uint64_t* bits = bitmap(*pfn);
  const std::uint64_t empty = is_legacy_class(cls) ? 0 : sparse::empty_slab_word;
  for (std::uint32_t w = 0; w < c.header / 8; ++w) bits[w] = empty;
  p.persist(bits, c.header);
  sparse::page_descriptor* head = model_.pfn_to_page(*pfn);
  head->store(sparse::page_info(movable ? page_state::movable_slab : page_state::slab, cls, pages));
  p.persist(&head->info, 8);
  slab* s = install(*pfn, cls, a, movable);
  klass& k = (*arenas_[a])[klass_index];
  k.slabs.push_back(*s);
  k.partial.insert(*s);
  became_empty(k, *s);
  return s;
}

// An empty slab of another arena becomes this arena's. The caller holds this
// arena's class lock; the other's is only tried, so two arenas adopting from
// each other cannot deadlock (and a busy one is simply passed over).
small_allocator::slab* small_allocator::adopt_empty_slab(unsigned a, unsigned cls) {
  klass& k = (*arenas_[a])[cls];
  if (a == movable_arena_) return nullptr;
  const auto placement = placement_.load();
  for (unsigned other = 0; other < movable_arena_; ++other) {
    klass& o = (*arenas_[other])[cls];
    if (other == a) continue;
    std::unique_lock lock(o.mutex, std::try_to_lock);
    if (!lock) continue;
    slab* s = nullptr;  // the first empty slab of a's node
    for (slab& e : o.empty)
      if (placement == nullptr || placement->local(a, e.pfn / pageblock_pages)) {
        s = &e;
        break;
      }
    if (s == nullptr) continue;
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
std::size_t small_allocator::take_partial(klass& k, void** out, std::size_t n) {
  std::size_t got = 0;
  while (got < n && !k.partial.empty()) {
    slab& s = *k.partial.begin();
    const size_class& c = size_classes[s.cls];
    const std::uint32_t words = c.words();
    std::byte* objects = model_.pfn_to_virt(s.pfn) + c.header + (s.movable ? movable_skew : 0);
    if (s.in_use == 0) no_longer_empty(k, s);
    std::uint32_t w = s.low_word;
    for (; w < words && got < n; ++w) {
      std::uint64_t bits = s.avail[w];
      while (bits != 0 && got < n) {
        const auto i = static_cast<std::uint32_t>(std::countr_zero(bits));
        bits &= bits - 1;
        out[got++] = objects + (std::size_t{w} * c.word_bits + i) * c.size;
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

// From the arena's partial slabs, then slabs of the class not loaded yet
// (a few: the cost of a take stays bounded), then an empty slab adopted
// from another arena, then a new slab; with no pages left for one, every
// slab of the class not loaded yet (an allocation never fails while free
// objects exist), then objects of other arenas' partly used slabs (one lock
// at a time; they stay those arenas' and go back to them when freed).
std::size_t small_allocator::take(unsigned a, unsigned cls, void** out, std::size_t n) {
  klass& k = (*arenas_[a])[cls];
  std::size_t got = 0;
  {
    std::lock_guard lock(k.mutex);
    got = take_partial(k, out, n);
    // Slabs of a's node first (placement by node): loaded, adopted, new;
    // then any.
    while (got < n && (load_some(a, cls, 4, true) || adopt_empty_slab(a, cls) || new_slab(a, cls) ||
                       load_some(a, cls, SIZE_MAX, false)))
      got += take_partial(k, out + got, n - got);
  }
  for (unsigned other = 0; got < n && a != movable_arena_ && other < movable_arena_; ++other) {
    if (other == a) continue;
    klass& o = (*arenas_[other])[cls];
    std::lock_guard lock(o.mutex);
    got += take_partial(o, out + got, n - got);
  }
  return got;
}

// `returned` objects whose avail bits the caller has set are back in s.
void small_allocator::returned(klass& k, slab& s, std::uint32_t count) {
  if (s.in_use == size_classes[s.cls].objects) k.partial.insert(s);
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
  const size_class* c = nullptr;  // s's
  while (n > 0) {
    const unsigned owner = slab_of(objects[0])->arena.load(std::memory_order_acquire);
    klass& k = (*arenas_[owner])[base_class(cls)];
    std::size_t kept = 0;
    std::lock_guard lock(k.mutex);
    slab* s = nullptr;
    const std::byte* first = nullptr;  // s's first object
    std::uint32_t count = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto* p = static_cast<const std::byte*>(objects[i]);
      if (s == nullptr || static_cast<std::uint64_t>(p - first) >= c->bytes) {
        if (s != nullptr) returned(k, *s, count);
        s = slab_of(p);
        count = 0;
        if (s->arena.load(std::memory_order_relaxed) != owner) {
          objects[kept++] = objects[i];
          s = nullptr;
          continue;
        }
        c = &size_classes[s->cls];
        first = model_.pfn_to_virt(s->pfn) + c->header + (s->movable ? movable_skew : 0);
      }
      const std::uint32_t at = c->index(static_cast<std::uint64_t>(p - first));
      s->avail[c->word_of(at)] |= c->mask_of(at);
      s->low_word = std::min(s->low_word, c->word_of(at));
      ++count;
    }
    if (s != nullptr) returned(k, *s, count);
    n = kept;
  }
}

std::size_t small_allocator::release_empty_slabs() {
  load_all();  // (an empty slab not loaded yet pins its pages too)
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

// Every slab found goes onto its class's unloaded list; nothing of its
// bitmap is read (eager: all of them are loaded at once).
void small_allocator::rebuild(const std::vector<allocated_extent>& found,
                              std::vector<std::string>& problems, std::vector<std::uint64_t>* bad,
                              bool eager, bool digests) {
  std::vector<slab*> old;
  for_each_slab([&](const slab& s) { old.push_back(const_cast<slab*>(&s)); });
  for (auto& a : arenas_)
    for (klass& k : *a) {
      std::lock_guard lock(k.mutex);
      k.partial.clear();
      k.empty.clear();
    }
  for (slab* s : old) uninstall(s);
  {
    std::lock_guard lock(deferred_mutex_);
    deferred_.clear();
  }
  check_digests_ = digests;
  for (const allocated_extent& e : found) {
    if (!e.slab) continue;
    unloaded_class& u = unloaded_[e.movable][base_class(e.sub)];
    std::lock_guard lock(u.mutex);
    slab* s = install(e.pfn, e.sub, e.movable ? movable_arena_ : 0, e.movable);
    s->state.store(unloaded, std::memory_order_relaxed);
    u.slabs.push_back(*s);
  }
  if (!eager) return;
  load_all();
  std::lock_guard lock(deferred_mutex_);
  for (auto& [why, pageblock] : deferred_) {
    problems.push_back(std::move(why));
    if (bad) bad->push_back(pageblock);
  }
  deferred_.clear();
}

small_allocator::slab* small_allocator::pop_unloaded(unsigned cls, bool movable,
                                                     const node_placement* local_to,
                                                     unsigned a) const {
  unloaded_class& u = unloaded_[movable][cls];
  std::lock_guard lock(u.mutex);
  if (u.slabs.empty()) return nullptr;
  // Of a's node: the lowest slab, else the highest (the regions of other
  // nodes lie above the heap's own memory, each a run of the list).
  const auto mine = [&](const slab& s) {
    return local_to == nullptr || local_to->local(a, s.pfn / pageblock_pages);
  };
  slab* s = &u.slabs.front();
  if (!mine(*s)) s = mine(u.slabs.back()) ? &u.slabs.back() : nullptr;
  if (s == nullptr) return nullptr;
  u.slabs.erase(u.slabs.iterator_to(*s));
  s->state.store(loading, std::memory_order_relaxed);
  return s;
}

// Every arena's lock of a class is held, in order: nothing else holds two
// (adopt_empty_slab only tries the second).
void small_allocator::place(std::shared_ptr<const node_placement> placement) {
  if (placement && !placement->arena_node.empty())
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      std::vector<std::unique_lock<::daxalloc::detail::spin_mutex>> locks;
      for (unsigned a = 0; a < movable_arena_; ++a) locks.emplace_back((*arenas_[a])[cls].mutex);
      for (unsigned a = 0; a < movable_arena_; ++a) {
        klass& k = (*arenas_[a])[cls];
        for (auto it = k.slabs.begin(); it != k.slabs.end();) {
          slab& s = *it++;
          const std::uint64_t pageblock = s.pfn / pageblock_pages;
          const unsigned to = placement->home(pageblock, a);
          if (placement->local(a, pageblock) || to == a) continue;
          klass& o = (*arenas_[to])[cls];
          const bool partial = s.partial_hook::is_linked(), empty = s.empty_hook::is_linked();
          if (partial) k.partial.erase(k.partial.iterator_to(s));
          if (empty) no_longer_empty(k, s);
          k.slabs.erase(k.slabs.iterator_to(s));
          o.slabs.push_back(s);
          s.arena.store(to, std::memory_order_release);
          if (partial) o.partial.insert(s);
          if (empty) became_empty(o, s);
        }
      }
    }
  placement_.store(std::move(placement));
}

// The arena a slab loads into outside take(): the movable arena, or the
// first of its node's.
unsigned small_allocator::home_of(const slab& s) const {
  if (s.movable) return movable_arena_;
  const auto placement = placement_.load();
  return placement ? placement->home(s.pfn / pageblock_pages, 0) : 0;
}

// A slab's bitmap is read once, here: its words, and after a clean close the
// digest recorded then (which it still matches: none of its bits changed
// before this load). A damaged slab is kept on the arena's `slabs` (check()
// sees it) with no object available; its problem waits for check().
bool small_allocator::load(slab& s, unsigned a) const {
  klass& k = (*arenas_[a])[base_class(s.cls)];
  const size_class& c = size_classes[s.cls];
  // Its header probed first: a bitmap that does not read makes the slab
  // damaged (never allocated from; a free of its objects is refused).
  const auto failure = model_.reader().probe(base_, s.pfn << sparse::page_shift, c.header);
  std::string why = failure ? std::string() : bitmap_problem(s.pfn, s.cls);
  if (failure)
    why = "slab at " + sparse::hex(s.pfn << sparse::page_shift) +
          ": its bitmap does not read: " + media::describe(*failure);
  else if (!why.empty())
    why = "slab at " + std::to_string(s.pfn << sparse::page_shift) + ": " + why;
  else if (check_digests_ && !is_legacy_class(s.cls) &&
           sparse::slab_digest(model_.pfn_to_page(s.pfn)->load()) != bitmap_digest(s.pfn, s.cls))
    why = "the bitmap of the slab at " + sparse::hex(s.pfn << sparse::page_shift) +
          " changed while the heap was closed (its digest recorded at close does not match)";
  s.arena.store(a, std::memory_order_relaxed);
  k.slabs.push_back(s);
  if (!why.empty()) {
    std::fill_n(s.avail, c.words(), 0);
    s.in_use = c.objects;
    {
      std::lock_guard lock(deferred_mutex_);
      deferred_.emplace_back(std::move(why), s.pfn / pageblock_pages);
    }
    s.state.store(damaged, std::memory_order_release);
    return false;
  }
  const std::uint64_t* bits = bitmap(s.pfn);
  for (std::uint32_t w = 0; w < c.words(); ++w) {
    const std::uint64_t word = object_bits(c, load_word(bits + w)), valid = c.valid_bits(w);
    s.avail[w] = valid & ~word;
    s.in_use += static_cast<std::uint32_t>(std::popcount(word & valid));
  }
  if (s.in_use == 0) became_empty(k, s);
  if (s.in_use < c.objects) k.partial.insert(s);
  s.state.store(loaded, std::memory_order_release);
  return true;
}

bool small_allocator::load_some(unsigned a, unsigned cls, std::size_t limit, bool local) const {
  const auto placement = local ? placement_.load() : nullptr;
  for (std::size_t i = 0; i < limit; ++i) {
    slab* s = pop_unloaded(cls, a == movable_arena_, placement.get(), a);
    if (s == nullptr) break;
    if (load(*s, a) && s->in_use < size_classes[s->cls].objects) return true;
  }
  return false;
}

// Into its home arena (home_of), under its class lock; a slab another
// thread is loading is waited for with no lock held.
bool small_allocator::ensure_loaded_slow(const void* object) const {
  slab* s = slab_of(object);
  const unsigned cls = base_class(s->cls);
  const unsigned into = home_of(*s);
  for (;;) {
    {
      klass& k = (*arenas_[into])[cls];
      std::lock_guard lock(k.mutex);
      bool mine = false;
      {
        unloaded_class& u = unloaded_[s->movable][cls];
        std::lock_guard unloaded_lock(u.mutex);
        if (s->state.load(std::memory_order_relaxed) == unloaded) {
          u.slabs.erase(u.slabs.iterator_to(*s));
          s->state.store(loading, std::memory_order_relaxed);
          mine = true;
        }
      }
      if (mine) return load(*s, into);
    }
    const std::uint8_t st = s->state.load(std::memory_order_acquire);
    if (st == loaded || st == damaged) return st == loaded;
    std::this_thread::yield();
  }
}

std::optional<media::read_failure> small_allocator::unreadable(const void* object) const {
  const slab* s = slab_of(object);
  return model_.reader().probe(base_, s->pfn << sparse::page_shift, size_classes[s->cls].header);
}

void small_allocator::load_all() const {
  for (const bool movable : {false, true})
    for (unsigned cls = 0; cls < nr_size_classes; ++cls)
      while (slab* s = pop_unloaded(cls, movable)) {  // (loading: no one else takes it)
        const unsigned into = home_of(*s);
        klass& k = (*arenas_[into])[cls];
        std::lock_guard lock(k.mutex);
        (void)load(*s, into);
      }
}

std::vector<slab_usage> small_allocator::movable_slabs(unsigned cls) const {
  load_all();
  std::vector<slab_usage> out;
  const klass& k = (*arenas_[movable_arena_])[cls];
  std::lock_guard lock(k.mutex);
  for (const slab& s : k.slabs)
    if (s.state.load(std::memory_order_relaxed) == loaded)
      out.push_back({s.pfn, s.in_use, size_classes[s.cls].objects});
  std::sort(out.begin(), out.end(),
            [](const slab_usage& a, const slab_usage& b) { return a.pfn < b.pfn; });
  return out;
}

// (A slab's class never changes while it is installed, so its class lock
// is found before it is taken; slab_at is read again under it.)
void* small_allocator::take_from(std::uint64_t pfn) {
  slab* s = slab_at(pfn);
  if (s == nullptr || !s->movable) return nullptr;
  klass& kc = (*arenas_[movable_arena_])[base_class(s->cls)];
  std::lock_guard lock(kc.mutex);
  if (slab_at(pfn) != s || s->state.load(std::memory_order_relaxed) != loaded ||
      !s->partial_hook::is_linked())
    return nullptr;
  const size_class& c = size_classes[s->cls];
  std::byte* objects = model_.pfn_to_virt(s->pfn) + c.header + movable_skew;
  for (std::uint32_t w = s->low_word; w < c.words(); ++w) {
    const std::uint64_t bits = s->avail[w];
    if (bits == 0) continue;
    const auto i = static_cast<std::uint32_t>(std::countr_zero(bits));
    s->avail[w] = bits & (bits - 1);
    s->low_word = w;
    if (s->in_use++ == 0) no_longer_empty(kc, *s);
    if (s->in_use == c.objects) kc.partial.erase(kc.partial.iterator_to(*s));
    return objects + (std::size_t{w} * c.word_bits + i) * c.size;
  }
  return nullptr;
}

std::optional<std::uint64_t> small_allocator::new_movable_slab(unsigned cls) {
  klass& k = (*arenas_[movable_arena_])[cls];
  std::lock_guard lock(k.mutex);
  const slab* s = new_slab(movable_arena_, cls);
  return s ? std::optional<std::uint64_t>(s->pfn) : std::nullopt;
}

std::pair<std::size_t, std::uint64_t> small_allocator::release_empty_movable_slabs() {
  std::size_t released = 0;
  std::uint64_t pages = 0;
  for (klass& k : *arenas_[movable_arena_]) {
    std::lock_guard lock(k.mutex);
    for (; !k.empty.empty(); ++released) {
      pages += std::uint64_t{1} << size_classes[k.empty.front().cls].slab_order;
      release_slab(k, &k.empty.front());
    }
  }
  return {released, pages};
}

bool small_allocator::digest_stale(std::uint64_t pfn) const noexcept {
  const slab* s = slab_at(pfn);
  if (s == nullptr) return true;
  const std::uint8_t st = s->state.load(std::memory_order_acquire);
  return st == loaded || (st != damaged && !check_digests_);
}

// From the slab table (slabs loaded or not, whichever arena's), each slab's
// class and place from its map word alone: no lock is held, so unlike
// for_each_slab it reads no slab descriptor, which a concurrent new_slab or
// release_slab may be rewriting.
std::array<class_stats, nr_size_classes> small_allocator::stats(
    std::array<std::uint64_t, 8>* by_type) const {
  std::array<class_stats, nr_size_classes> out{};
  for (std::uint64_t nr = 0; nr < model_.geo().nr_sections(); ++nr) {
    if (leaves_[nr].load(std::memory_order_acquire) == nullptr) continue;
    for (std::uint64_t global = nr * chunks_; global < (nr + 1) * chunks_; ++global) {
      const std::uint64_t e = chunk_map_[global].load(std::memory_order_acquire);
      if (e == 0 || head_chunk(e) != global) continue;
      const auto cls = static_cast<unsigned>(e & 0xff);
      const size_class& c = size_classes[cls];
      class_stats& st = out[base_class(cls)];
      const bool movable = ((e >> 8) & 63) != 0;
      ++st.slabs;
      st.movable_slabs += movable;
      st.capacity += c.objects;
      // Bits are read racily (a concurrent durable allocation may or may not count).
      const std::uint64_t* bits = bitmap(((e >> 8) - c.header) >> sparse::page_shift);
      std::uint64_t allocated = 0;
      for (std::uint32_t w = 0; w < c.words(); ++w)
        allocated += std::popcount(object_bits(c, load_word(bits + w)));
      st.allocated += allocated;
      if (movable) st.movable_allocated += allocated;
      if (by_type != nullptr) {
        const std::uint64_t pfn = ((e >> 8) - c.header) >> sparse::page_shift;
        (*by_type)[static_cast<unsigned>(model_.get_pageblock_migratetype(pfn)) & 7] +=
            allocated * (c.size - (movable ? movable_skew : 0));
      }
    }
  }
  return out;
}

void small_allocator::check(std::vector<std::string>& problems,
                            std::span<const std::uint64_t> digests_pending) const {
  load_all();  // (exact: every slab's volatile state against its bitmap)
  for (unsigned a = 0; a < arenas_.size(); ++a)
    for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
      const klass& k = (*arenas_[a])[cls];
      std::lock_guard lock(k.mutex);
      const std::string arena_class = "arena " + std::to_string(a) + ", class " +
                                      std::to_string(size_classes[cls].size) + " B: ";
      std::uint64_t empty = 0;
      for (const slab& s : k.slabs) {
        if (base_class(s.cls) != cls || s.arena.load() != a || slab_at(s.pfn) != &s)
          problems.push_back(arena_class + "the slab at " +
                             std::to_string(s.pfn << sparse::page_shift) +
                             " is not this arena's and class's in the slab table");
        empty += s.in_use == 0;
        if (s.state.load(std::memory_order_acquire) != damaged)  // (its problem: below)
          check_slab(s, problems, digests_pending);
      }
      if (empty != k.empty.size() ||
          std::any_of(k.empty.begin(), k.empty.end(), [&](const slab& s) {
            return s.in_use != 0 || base_class(s.cls) != cls || slab_at(s.pfn) != &s;
          }))
        problems.push_back(arena_class + "the set of empty slabs is wrong");
      for (const slab& s : k.partial)
        if (base_class(s.cls) != cls || slab_at(s.pfn) != &s ||
            s.in_use == size_classes[s.cls].objects)
          problems.push_back(arena_class + "partial list holds a slab it should not");
    }
  // Every slab in the table is on its arena's list.
  std::uint64_t listed = 0, tabled = 0;
  for (const auto& a : arenas_)
    for (const klass& k : *a) {
      std::lock_guard lock(k.mutex);
      listed += k.slabs.size();
    }
  for (auto& kind : unloaded_)
    for (unloaded_class& u : kind) {
      std::lock_guard lock(u.mutex);
      listed += u.slabs.size();
    }
  for_each_slab([&](const slab&) { ++tabled; });
  if (listed != tabled)
    problems.push_back("the slab table holds " + std::to_string(tabled) + " slabs, the arenas " +
                       std::to_string(listed));
  // The damaged slabs loads found (open left them to their first use).
  std::lock_guard lock(deferred_mutex_);
  for (const auto& [why, pageblock] : deferred_)
    problems.push_back(why + " (found when the slab was first used)");
}

void small_allocator::check_slab(const slab& s, std::vector<std::string>& problems,
                                 std::span<const std::uint64_t> digests_pending) const {
  const size_class& c = size_classes[s.cls];
  const std::string where = "slab at " + std::to_string(s.pfn << sparse::page_shift) + " (class " +
                            std::to_string(c.size) + " B): ";
  const sparse::page_descriptor& d = *model_.pfn_to_page(s.pfn);
  // (A format 5 slab's digest, recorded at close, is stale while the heap is open.)
  if (sparse::with_slab_digest(d.load(), 0) !=
      sparse::page_info(s.movable ? page_state::movable_slab : page_state::slab, s.cls,
                        std::uint64_t{1} << c.slab_order))
    problems.push_back(where + "head descriptor does not describe this slab");
  if ((s.in_use < c.objects) != s.partial_hook::is_linked())
    problems.push_back(where + "on the partial list exactly when it has no free object");
  if (const std::string why = bitmap_problem(s.pfn, s.cls); !why.empty())
    problems.push_back(where + why);
  const std::uint64_t* bits = bitmap(s.pfn);
  std::uint64_t set = 0, avail = 0;
  for (std::uint32_t w = 0; w < c.header / 8; ++w) {
    const std::uint64_t word = object_bits(c, load_word(bits + w)), valid = c.valid_bits(w);
    const std::uint64_t free = w < c.words() ? s.avail[w] : 0;
    if (free & ~valid) problems.push_back(where + "an avail bit beyond the objects is set");
    if (free & word) problems.push_back(where + "an object is both available and allocated");
    if (free != 0 && w < s.low_word) problems.push_back(where + "an avail bit below low_word");
    set += std::popcount(word & valid);
    avail += std::popcount(free);
  }
  if (avail + s.in_use != c.objects) problems.push_back(where + "available + in use != objects");
  if (is_legacy_class(s.cls) && sparse::slab_digest(d.load()) != bitmap_digest(s.pfn, s.cls) &&
      !std::binary_search(digests_pending.begin(), digests_pending.end(), s.pfn))
    problems.push_back(where + "its bitmap does not match its digest");
  if (set > s.in_use) problems.push_back(where + "more objects allocated than handed out");
}

}  // namespace daxalloc::alloc
