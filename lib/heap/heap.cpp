#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>

#include "daxalloc/allocator.hpp"
#include "heap/heap_impl.hpp"

namespace daxalloc {
namespace detail {
namespace {

using alloc::max_small_size;
using alloc::nr_size_classes;
using alloc::size_class_of;
using alloc::size_classes;
using sparse::migratetype;
using sparse::page_info;
using sparse::page_state;

constexpr std::uint64_t page_size = sparse::page_size;

// Heaps alive in this process, by id, so that a thread's exit can hand its
// caches back only to heaps that still exist (ids are never reused).
std::mutex live_mutex;
std::unordered_map<std::uint64_t, heap_impl*> live_heaps;
// The same heaps for a container allocator's lookup by base address, read
// without a lock (the first 64 open heaps; more are found under live_mutex),
// and their ids, for a batch's check that its heap is still open (a load of
// the id in the heap's slot: nothing of a closed heap is dereferenced).
std::array<std::atomic<heap_impl*>, heap_impl::nr_registry_slots> open_heaps{};
std::array<std::atomic<std::uint64_t>, heap_impl::nr_registry_slots> open_ids{};
std::atomic<std::uint64_t> next_id{1};

struct cache_entry {
  std::uint64_t heap_id;
  thread_cache* cache;
};
struct thread_caches {
  std::vector<cache_entry> entries;
  ~thread_caches() {
    std::lock_guard lock(live_mutex);
    for (const auto& e : entries)
      if (auto it = live_heaps.find(e.heap_id); it != live_heaps.end())
        it->second->release_cache(e.cache);
  }
};
thread_local thread_caches tls_caches;
// The fast path's only TLS access: initial-exec, an offset from %fs, no call
// to __tls_get_addr (a library loaded by dlopen() takes it from glibc's
// static TLS reserve).
[[gnu::tls_model("initial-exec")]] thread_local cache_entry tls_last{0, nullptr};

// Objects a thread cache keeps per class: 256 KiB of them, 8 to 1,024 (a
// table: the division showed up in profiles of the free path). A round of a
// thousand small objects stays in the cache; bigger rounds move half a
// cache at a time to and from the slabs, under one lock.
constexpr auto cache_capacities = [] {
  std::array<std::uint16_t, alloc::nr_slab_classes> out{};
  for (unsigned cls = 0; cls < alloc::nr_slab_classes; ++cls)
    out[cls] = static_cast<std::uint16_t>(
        std::clamp<std::size_t>(256 * 1024 / size_classes[cls].size, 8, 1024));
  return out;
}();
std::size_t cache_capacity(unsigned cls) {
  return cache_capacities[cls];
}

std::uint64_t slot_checksum(const sparse::root_slot& s) {
  return sparse::fletcher64(&s, 16);
}

// What a root slot with a valid checksum names. root() makes its object
// with reserve(size): an object of a slab of exactly the size class of
// `size`, or the first of ceil(size / 4 KiB) pages, in present memory outside
// the metadata pageblocks; it marks the object allocated after the slot is
// durable, so a slot may name an object that is still free.
struct root_object {
  std::string problem;     // why the slot names no such object; empty when it does
  bool allocated = false;  // its bitmap bit is set, or its first page heads its extent
  std::optional<alloc::object_location> bit;  // small roots
  std::uint64_t pfn = 0, pages = 0;           // the extent, or the slab of a small root
};

root_object inspect_root(const sparse::memory_model& model, const alloc::small_allocator& small,
                         const sparse::root_slot& s) {
  root_object r;
  if (s.offset < model.geo().head_size() || s.size == 0 || !model.mapped(s.offset, s.size)) {
    r.problem = "points outside the heap's memory";
    return r;
  }
  const auto usable = [&](std::uint64_t pfn) {
    return model.pfn_valid(pfn) &&
           model.get_pageblock_migratetype(pfn) != sparse::migratetype::metadata;
  };
  // A root that repair quarantined with its pageblock stays the root, as it is.
  if (usable(s.offset >> sparse::page_shift) &&
      model.get_pageblock_migratetype(s.offset >> sparse::page_shift) == migratetype::isolate) {
    r.allocated = true;
    return r;
  }
  if (s.size <= max_small_size) {
    const unsigned cls = size_class_of(s.size);
    r.bit = small.locate_on_media(model.base() + s.offset);
    r.pages = std::uint64_t{1} << size_classes[cls].slab_order;
    r.pfn = (s.offset >> sparse::page_shift) & ~(r.pages - 1);
    if (!r.bit || alloc::base_class(r.bit->cls) != cls || !usable(r.pfn))
      r.problem = "does not name an object of a slab of the " +
                  std::to_string(size_classes[cls].size) + "-byte size class";
    else
      r.allocated = (std::atomic_ref<std::uint64_t>(*r.bit->word).load() & r.bit->mask) != 0;
    return r;
  }
  r.pfn = s.offset / page_size;
  r.pages = (s.size + page_size - 1) / page_size;
  if (s.offset % page_size) {
    r.problem = "is not page aligned, as an object of more than " + std::to_string(max_small_size) +
                " bytes is";
    return r;
  }
  for (std::uint64_t at = r.pfn; at < r.pfn + r.pages;
       at = (at / alloc::pageblock_pages + 1) * alloc::pageblock_pages)
    if (!usable(at)) {
      r.problem = "runs into absent or metadata memory at " + sparse::hex(at * page_size);
      return r;
    }
  const sparse::page_descriptor& head = *model.pfn_to_page(r.pfn);
  r.allocated = head.state() == page_state::extent && head.length() == r.pages;
  if (!r.allocated && head.load() != sparse::free_descriptor)
    r.problem = "names a page whose descriptor " + sparse::hex(head.load()) +
                " is neither free nor the head of a " + std::to_string(r.pages) + "-page extent";
  return r;
}

}  // namespace

heap_impl::heap_impl(std::unique_ptr<sparse::memory_model> model)
    : model_(std::move(model)),
      pages_(*model_, alloc::default_arenas()),
      small_(*model_, pages_),
      id_(next_id++),
      lane_zero_(model_->base() + model_->geo().lanes_offset()),
      root_b_offset_(model_->geo().slots_offset() + sparse::root_slot_b_in_page),
      names_b_offset_(model_->geo().slots_offset() + sparse::names_slot_b_in_page) {}

std::unique_ptr<heap_impl> heap_impl::create(const std::filesystem::path& path,
                                             const heap_options& options) {
  sparse::create_options o;
  o.size = options.size;
  o.max_range = options.max_size;
  o.section_size_bits = options.section_size_bits;
  o.overwrite = options.overwrite;
  o.region.mode = options.mode;
  std::unique_ptr<heap_impl> h(new heap_impl(sparse::memory_model::create(path, o)));
  h->media_ = media::current().read(h->model_->media());
  h->start(false);
  h->created_ = true;
  return h;
}

std::unique_ptr<heap_impl> heap_impl::open(const std::filesystem::path& path,
                                           const heap_open_options& options) {
  region_options ro;
  ro.mode = options.mode;
  return open(region::open(path, ro), options);
}

std::unique_ptr<heap_impl> heap_impl::open(region&& r, const heap_open_options& options) {
  if (options.repair && r.read_only())
    throw error(errc::read_only, r.path().string() + ": repair writes: it needs a read-write open");
  sparse::open_options o;
  o.section_size_bits = options.section_size_bits;
  o.member_paths = options.region_paths;
  o.region.wait_for_lock = options.wait_for_lock;
  // Read first: open must not load from a known bad block.
  media::device_state state = media::current().read(r);
  o.known_bad = state.bad_blocks;
  shutdown_verdict verdict;
  o.before_writes = [&, path = r.path().string()](const sparse::superblock& sb,
                                                  const sparse::geometry& geo,
                                                  const std::byte* base) {
    verdict =
        inspect_shutdown_record(path, sb,
                                *reinterpret_cast<const sparse::shutdown_record*>(
                                    base + geo.slots_offset() + sparse::shutdown_record_in_page),
                                state, options.accept_unsafe_shutdown);
  };
  std::unique_ptr<heap_impl> h(new heap_impl(sparse::memory_model::open(std::move(r), o)));
  h->media_ = std::move(state);
  h->shutdown_ = verdict;
  h->start(options.repair);
  return h;
}

std::unique_ptr<heap_impl> heap_impl::open_read_only(const std::filesystem::path& path,
                                                     const heap_open_options& options) {
  region_options ro;
  ro.read_only = true;
  ro.mode = options.mode;
  ro.wait_for_lock = options.wait_for_lock;
  return open(region::open(path, ro), options);
}

std::unique_ptr<heap_impl> heap_impl::open_or_create(const std::filesystem::path& path,
                                                     const heap_options& create_options,
                                                     const heap_open_options& open_options) {
  region_options ro;
  ro.create = true;
  ro.size_only_if_created = true;
  ro.size = (create_options.size + sparse::subsection_size - 1) / sparse::subsection_size *
            sparse::subsection_size;
  ro.max_size = std::max(create_options.max_size, ro.size);
  ro.mode = create_options.mode;
  ro.wait_for_lock = open_options.wait_for_lock;
  if (ro.size == 0) throw error(errc::too_small, path.string() + ": create needs a size");
  region r = region::open(path, ro);
  // A devdax device always exists: it gets a heap when it holds none.
  if (!r.created() && (r.kind() != region_kind::devdax || sparse::memory_model::holds_heap(r)))
    return open(std::move(r), open_options);
  const bool made_file = r.created() && r.kind() != region_kind::devdax;
  sparse::create_options o;
  o.size = ro.size;
  o.max_range = create_options.max_size;
  o.section_size_bits = create_options.section_size_bits;
  try {
    std::unique_ptr<heap_impl> h(new heap_impl(sparse::memory_model::create(std::move(r), o)));
    h->media_ = media::current().read(h->model_->media());
    h->start(false);
    h->created_ = true;
    return h;
  } catch (...) {
    // Ours, and not a heap: nothing is lost (others waiting for the lock
    // then find no file, or an empty one, and create it themselves).
    if (made_file) std::filesystem::remove(path);
    throw;
  }
}

// Recovery: the sparse model has redone any hotplug intent; now the root's
// allocation is re-marked, the free lists and slabs are rebuilt from the
// memmap, and the heap is marked open (unclean until close).
// A read-only open takes none of the steps that write: it notes them in
// plan_ and leaves the heap as it found it (not even marked open).
void heap_impl::start(bool repair) {
  repair_ = repair;
  use_persistence(model_->media().persist());
  unclean_ = model_->super().shutdown_state != sparse::shutdown_clean;
  if (read_only()) {
    plan_.unclean_shutdown = unclean_;
    plan_.steps = model_->pending_recovery();
    plan_lane_replay();
  } else {
    replay_lanes();
  }
  recover_slots();
  recover_root();
  place_by_node();  // (rebuild gives partly used pageblocks to zones of their node)
  rebuild(repair);
  finish_shutdown_record();
  if (!read_only()) {
    model_->set_shutdown_state(sparse::shutdown_open);
    opened_ = true;
  }
  std::lock_guard lock(live_mutex);
  live_heaps[id_] = this;
  for (unsigned i = 0; i < nr_registry_slots; ++i)
    if (heap_impl* none = nullptr; open_heaps[i].compare_exchange_strong(none, this)) {
      open_ids[i].store(id_, std::memory_order_release);
      registry_slot_ = i;
      break;
    }
}

bool heap_impl::is_open(std::uint64_t id, unsigned slot) {
  if (slot < nr_registry_slots) return open_ids[slot].load(std::memory_order_acquire) == id;
  std::lock_guard lock(live_mutex);
  return live_heaps.contains(id);
}

// The allocators' state from the memmap. A problem makes open fail, or
// under repair quarantines its pageblock (kept as it is, never allocated
// from: the scan skips isolate pageblocks) and the scan runs again, until
// nothing is left; every round quarantines at least one more. The slabs'
// bitmaps are read at their first use (small_allocator: open costs the
// memmap's size, not the objects'), and their damage is reported by check()
// and refused by a free; a repair reads them all here, to quarantine it.
void heap_impl::rebuild(bool repair) {
  // The digests (slabs always, memmap pages after a clean close): checked
  // once, first.
  bool check_digests = true;
  for (;;) {
    std::vector<std::string> problems;
    std::vector<std::uint64_t> bad;  // the pageblock of each problem
    // Descriptors that do not read: their pageblocks' problems, before any
    // scan loads them (which would end the process).
    const bool faulted = unreadable_descriptors(problems, &bad);
    if (problems.empty()) {
      if (check_digests) {
        digest_problems(problems, bad);
        // Bad blocks after the digests (a quarantine changes the type they cover).
        handle_bad_blocks(repair);
      }
      check_digests = false;
      const auto found = pages_.rebuild(problems, &bad);
      small_.rebuild(found, problems, &bad, /*eager=*/repair, /*digests=*/!unclean_);
    }
    if (problems.empty()) return;
    if (!repair || bad.size() != problems.size())
      throw error(
          faulted ? errc::media_error : errc::corrupt,
          model_->media().path().string() + ": " + problems.front() +
              (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more)"
                                   : "") +
              (plan_.lanes_to_replay || !plan_.steps.empty()
                   ? " (opened read-only, before the recovery a read-write open would run)"
                   : ""));
    for (std::size_t i = 0; i < bad.size(); ++i) {
      const std::uint64_t pfn = bad[i] * alloc::pageblock_pages;
      if (model_->get_pageblock_migratetype(pfn) == migratetype::isolate) {
        // Quarantined already (by an earlier repair, or by the damage):
        // reported, as every problem repair finds is.
        repairs_.push_back("the pageblock at " + sparse::hex(pfn << sparse::page_shift) +
                           " is quarantined (kept, never allocated from): " + problems[i]);
        continue;
      }
      model_->set_pageblock_migratetype(pfn, migratetype::isolate);
      repairs_.push_back("quarantined the pageblock at " + sparse::hex(pfn << sparse::page_shift) +
                         " (kept, never allocated from): " + problems[i] + "; " +
                         objects_in_pageblock(bad[i]));
    }
  }
}

heap_impl::~heap_impl() {
  {
    std::lock_guard lock(live_mutex);
    live_heaps.erase(id_);
    if (registry_slot_ < nr_registry_slots) {
      open_ids[registry_slot_].store(0, std::memory_order_release);
      open_heaps[registry_slot_].store(nullptr, std::memory_order_release);
    }
  }
  // Deferred batches still queued are published (close is a commit point),
  // cached objects are free on the media already; only the marker is left
  // (not after a failed open: that leaves the media as it found it).
  try {
    if (opened_) sync();
  } catch (...) {  // the queue is dropped whole, as a crash would drop it
  }
  try {
    if (opened_) record_digests();
    if (opened_) model_->set_shutdown_state(sparse::shutdown_clean);
  } catch (...) {  // nothing to report to from a destructor; the next open sees "unclean"
  }
  model_->media().use_persistence(beneath_);  // the wrapper dies with this heap
}

bool heap_impl::is_root(const void* p) const noexcept {
  const sparse::root_slot* s = slot();
  return s->offset && p == model_->base() + s->offset;
}

sparse::root_slot* heap_impl::slot() const noexcept {
  return root_copy(root_copy_);
}

std::pair<std::string, bool> heap_impl::inspect_root_slot(const sparse::root_slot& s) const {
  const root_object r = inspect_root(*model_, small_, s);
  return {r.problem, r.allocated};
}

// ---- thread caches ----

inline thread_cache& heap_impl::cache() noexcept {
  if (tls_last.heap_id == id_) return *tls_last.cache;
  return cache_slow();
}

[[gnu::noinline]] thread_cache& heap_impl::cache_slow() noexcept {
  for (const auto& e : tls_caches.entries)
    if (e.heap_id == id_) {
      tls_last = e;
      return *e.cache;
    }
  auto owned = std::make_unique<thread_cache>();
  thread_cache* c = owned.get();
  // A read-only heap's caches hold nothing: every reserve and cancel takes
  // the slow path, which refuses it, and the fast paths need no test.
  const auto capacity = [&](unsigned cls) { return read_only() ? 0 : cache_capacity(cls); };
  std::size_t slots = 0;
  for (unsigned cls = 0; cls < alloc::nr_slab_classes; ++cls) slots += capacity(cls);
  c->storage = std::make_unique_for_overwrite<void*[]>(slots);  // pages taken as used
  void** at = c->storage.get();
  for (unsigned cls = 0; cls < alloc::nr_slab_classes; ++cls) {
    c->bins[cls] = {at, at, at + capacity(cls)};
    at += capacity(cls);
  }
  {
    std::lock_guard lock(caches_mutex_);
    c->node = sysfs::current_node();
    c->arena = arena_for(c->node);
    c->placement = placement_generation_.load(std::memory_order_relaxed);
    caches_.push_back(std::move(owned));
  }
  tls_caches.entries.push_back({id_, c});
  tls_last = {id_, c};
  return *c;
}

void heap_impl::drain_cache(thread_cache& c) noexcept {
  for (unsigned cls = 0; cls < alloc::nr_slab_classes; ++cls) {
    thread_cache::bin& b = c.bins[cls];
    if (b.top != b.bottom) small_.give(cls, b.bottom, static_cast<std::size_t>(b.top - b.bottom));
    b.top = b.bottom;
  }
}

void heap_impl::release_cache(thread_cache* c) noexcept {
  drain_cache(*c);
  std::lock_guard lock(caches_mutex_);
  caches_.erase(
      std::find_if(caches_.begin(), caches_.end(), [&](const auto& p) { return p.get() == c; }));
}

// Fast path: a pop from this thread's cache. Slow path: a batch from the slabs.
inline void* heap_impl::take_small(unsigned cls) noexcept {
  thread_cache::bin& b = cache().bins[cls];
  if (b.top != b.bottom) [[likely]]
    return *--b.top;
  return refill(b, cls);
}

// Half a cache of objects, lowest address on top.
[[gnu::noinline]] void* heap_impl::refill(thread_cache::bin& b, unsigned cls) noexcept {
  if (read_only()) return nullptr;
  const std::size_t batch = cache_capacity(cls) / 2;
  if (cache().placement != placement_generation_.load(std::memory_order_relaxed)) [[unlikely]]
    follow_placement(cache());
  std::size_t got = small_.take(cache().arena, cls, b.bottom, batch);
  if (got == 0 && reclaim()) got = small_.take(cache().arena, cls, b.bottom, batch);
  if (got == 0) return nullptr;
  std::reverse(b.bottom, b.bottom + got);
  b.top = b.bottom + got - 1;
  return *b.top;
}

inline void heap_impl::push_cached(unsigned cls, void* p) noexcept {
  thread_cache::bin& b = cache().bins[cls];
  if (b.top == b.limit) [[unlikely]]
    flush(b, cls);
  *b.top++ = p;
}

// A movable object goes straight back to its slab: no thread's cache holds one.
void heap_impl::put_small(unsigned cls, void* p) noexcept {
  if (small_.movable(p)) [[unlikely]]
    small_.give(cls, &p, 1);
  else
    push_cached(cls, p);
}

// A full cache gives back its older half (the bottom) and keeps the objects
// freed last.
[[gnu::noinline]] void heap_impl::flush(thread_cache::bin& b, unsigned cls) noexcept {
  const std::size_t n = static_cast<std::size_t>(b.top - b.bottom), old = n / 2;
  small_.give(cls, b.bottom, old);
  std::memmove(b.bottom, b.bottom + old, (n - old) * sizeof(void*));
  b.top -= old;
}

// ---- allocation ----

// Empty slabs and the free pageblocks zones keep go back to the pool: done
// when an allocation finds no room, before it tries once more.
// A slab a batch emptied is released only after its lane is retired
// durably (a full fence): a replay must not meet a released slab's bitmap.
bool heap_impl::reclaim() {
  (void)fence(true);
  const std::size_t slabs = small_.release_empty_slabs();
  return slabs + pages_.release_free_pageblocks() > 0;
}

// Pages for an extent, from the zone of this thread's arena.
std::optional<std::uint64_t> heap_impl::allocate_pages(std::uint64_t pages, std::uint64_t align) {
  if (read_only()) return std::nullopt;
  const auto type =
      pages >= alloc::pageblock_pages ? alloc::migratetype::large : alloc::migratetype::unmovable;
  if (cache().placement != placement_generation_.load(std::memory_order_relaxed)) [[unlikely]]
    follow_placement(cache());
  const unsigned zone = cache().arena;
  // The mapping is 2 MiB aligned; beyond, an aligned address is an offset
  // out of phase with the base's.
  const std::uint64_t phase = reinterpret_cast<std::uintptr_t>(model_->base()) / page_size;
  const auto attempt = [&] {
    return align == 1 ? pages_.allocate(pages, type, zone)
                      : pages_.allocate_aligned(pages, align, phase, type, zone);
  };
  auto pfn = attempt();
  if (!pfn && reclaim()) pfn = attempt();
  return pfn;
}

void* heap_impl::allocate(std::size_t size) noexcept {
  if (size == 0) size = 1;
  const persistence& p = model_->media().persist();
  if (size <= max_small_size) {
    const unsigned cls = size_class_of(size);
    void* object = take_small(cls);
    if (object == nullptr) return nullptr;
    small_.mark_allocated(small_.bit_of(object));  // the commit
    p.drain();
    return object;
  }
  const std::uint64_t pages = (size + page_size - 1) / page_size;
  if (pages > sparse::max_page_length) return nullptr;
  const auto pfn = allocate_pages(pages);
  return pfn ? commit_extent(*pfn, pages) : nullptr;
}

void* heap_impl::commit_extent(std::uint64_t pfn, std::uint64_t pages) noexcept {
  sparse::page_descriptor* head = model_->pfn_to_page(pfn);
  head->store(page_info(page_state::extent, 0, pages));
  model_->media().persist().persist(&head->info, 8);  // the commit
  return model_->pfn_to_virt(pfn);
}

// ---- aligned allocation ----
// Up to 64 bytes a size class whose objects are all aligned (often the
// size's own); beyond, whole pages at an aligned pfn. Freed as any object:
// by its class or by its extent's head.

void heap_impl::note_alignment_waste(std::size_t size, std::uint64_t usable) noexcept {
  const std::uint64_t unaligned = size <= max_small_size
                                      ? size_classes[size_class_of(size)].size
                                      : (size + page_size - 1) / page_size * page_size;
  if (usable > unaligned) alignment_waste_.fetch_add(usable - unaligned, std::memory_order_relaxed);
}

void* heap_impl::allocate_aligned(std::size_t size, std::size_t alignment) noexcept {
  if (size == 0) size = 1;
  if (size <= max_small_size) {
    const unsigned cls = alloc::aligned_size_class_of(size, alignment);
    if (cls < nr_size_classes) {
      void* object = take_small(cls);
      if (object == nullptr) return nullptr;
      small_.mark_allocated(small_.bit_of(object));  // the commit
      model_->media().persist().drain();
      note_alignment_waste(size, size_classes[cls].size);
      return object;
    }
  }
  const std::uint64_t pages = (size + page_size - 1) / page_size;
  if (pages > sparse::max_page_length) return nullptr;
  const auto pfn = allocate_pages(pages, std::max<std::size_t>(alignment / page_size, 1));
  if (!pfn) return nullptr;
  note_alignment_waste(size, pages * page_size);
  return commit_extent(*pfn, pages);
}

reservation heap_impl::reserve_aligned(std::size_t size, std::size_t alignment) noexcept {
  if (size == 0) size = 1;
  if (size <= max_small_size) {
    const unsigned cls = alloc::aligned_size_class_of(size, alignment);
    if (cls < nr_size_classes) {
      void* object = take_small(cls);
      if (object == nullptr) return {};
      note_alignment_waste(size, size_classes[cls].size);
      return reservation(object, size_classes[cls].size);
    }
  }
  reservation r = reserve_pages(size, std::max<std::size_t>(alignment / page_size, 1));
  if (r) note_alignment_waste(size, r.size);
  return r;
}

void heap_impl::refuse_if_read_only(const char* operation) const {
  if (read_only())
    throw error(errc::read_only, model_->media().path().string() + ": " + operation +
                                     ": the heap is open read-only");
}

// An object allocated in an earlier session may lie in a slab not loaded
// yet: loaded before its bit is cleared (else the load would count the
// object available once more). A damaged slab's objects are not freed.
void heap_impl::load_slab_of(const void* object, const char* operation) const {
  if (small_.ensure_loaded(object)) [[likely]]
    return;
  const auto slab = reinterpret_cast<std::uintptr_t>(small_.bit_of(object).word) & ~(page_size - 1);
  if (auto failure = small_.unreadable(object))
    throw error(errc::media_error,
                model_->media().path().string() + ": " + operation + ": the object at offset " +
                    std::to_string(static_cast<const std::byte*>(object) - model_->base()) +
                    " lies in the slab at " +
                    sparse::hex(slab - reinterpret_cast<std::uintptr_t>(model_->base())) +
                    ", whose bitmap does not read: " + media::describe(*failure));
  throw error(errc::corrupt,
              model_->media().path().string() + ": " + operation + ": the object at offset " +
                  std::to_string(static_cast<const std::byte*>(object) - model_->base()) +
                  " lies in the slab at " +
                  sparse::hex(slab - reinterpret_cast<std::uintptr_t>(model_->base())) +
                  ", whose bitmap is damaged (found at its first use; `daxalloc check` lists "
                  "it, a repair quarantines it)");
}

void heap_impl::deallocate(void* object) {
  if (object == nullptr) return;
  refuse_if_read_only("deallocate");
  if (is_root(object))
    throw error(errc::invalid_argument, "deallocate: the root object cannot be freed");
  const persistence& p = model_->media().persist();
  if (const int cls = small_.any_class_of(object); cls >= 0) {
    load_slab_of(object, "deallocate");  // (before its bit is cleared)
    if (!small_.mark_free(small_.bit_of(object)))
      throw error(errc::invalid_argument,
                  "deallocate: object at offset " +
                      std::to_string(static_cast<std::byte*>(object) - model_->base()) +
                      " is not allocated (double free?)");
    p.drain();  // the commit
    release_freed({object, cls});
    return;
  }
  sparse::page_descriptor* head = extent_head(object);
  if (head == nullptr)
    throw error(errc::invalid_argument,
                "deallocate: " + std::to_string(reinterpret_cast<std::uintptr_t>(object)) +
                    " was not allocated by this heap (or was freed already)");
  const std::uint64_t pages = head->length();
  head->store(sparse::free_descriptor);
  p.persist(&head->info, 8);  // the commit
  release_freed(
      {object, -1,
       static_cast<std::uint64_t>(static_cast<std::byte*>(object) - model_->base()) / page_size,
       pages});
}

// The fast paths of reserve and cancel: a pop or a push on this thread's
// cache, no lock, no call, no stack frame; everything else is a tail call
// to the slow path (as mimalloc's mi_free and mi_free_generic). Size 0 is
// the 8-byte class, as the table has it.
reservation heap_impl::reserve(std::size_t size) noexcept {
  if (size <= alloc::detail::class_table_max) [[likely]] {
    const unsigned cls = size_class_of(size);
    if (tls_last.heap_id == id_) [[likely]] {
      thread_cache::bin& b = tls_last.cache->bins[cls];
      if (b.top != b.bottom) [[likely]]
        return reservation(*--b.top, size_classes[cls].size);
    }
  }
  return reserve_slow(size);
}

[[gnu::noinline]] reservation heap_impl::reserve_slow(std::size_t size) noexcept {
  if (size <= max_small_size) {
    const unsigned cls = size_class_of(size);
    void* object = take_small(cls);
    return object ? reservation(object, size_classes[cls].size) : reservation();
  }
  return reserve_pages(size);
}

reservation heap_impl::reserve_pages(std::size_t size, std::uint64_t align) noexcept {
  const std::uint64_t pages = (size + page_size - 1) / page_size;
  if (pages > sparse::max_page_length) return {};
  const auto pfn = allocate_pages(pages, align);
  if (!pfn) return {};
  return reservation(model_->pfn_to_virt(*pfn), pages * page_size);
}

void heap_impl::cancel(reservation& r) noexcept {
  if (!r.ptr || read_only()) return;  // a read-only heap made no reservation
  if (in_slab(r))
    put_small(static_cast<unsigned>(small_.any_class_of(r.ptr)), r.ptr);
  else
    pages_.free(
        static_cast<std::uint64_t>(static_cast<std::byte*>(r.ptr) - model_->base()) / page_size,
        (r.size + page_size - 1) / page_size);
  r = {};
}

// A reservation this heap handed out: the size reserve returned or the size
// asked for (as sdallocx takes it), either naming the object's class or its
// extent's pages (an aligned extent may be as small as a page).
bool heap_impl::owns(const reservation& r) const noexcept {
  if (r.size <= max_small_size)
    if (const int cls = small_.class_of(r.ptr); cls >= 0)  // -1 outside this heap's slabs
      return alloc::base_class(static_cast<unsigned>(cls)) == size_class_of(r.size);
  const auto offset = static_cast<std::uint64_t>(static_cast<std::byte*>(r.ptr) - model_->base());
  return model_->media().contains(r.ptr, r.size) && offset % page_size == 0 &&
         pages_.allocated_length(offset / page_size) == (r.size + page_size - 1) / page_size &&
         model_->pfn_to_page(offset / page_size)->load() == sparse::free_descriptor;
}

// cancel(r) after owns(r), the common case inline: a slab object goes on
// top of this thread's cache, as cancel(void*) puts it.
bool heap_impl::cancel_owned(reservation& r) noexcept {
  if (r.size <= max_small_size) {
    const int cls = small_.class_of(r.ptr);
    if (cls < 0) [[unlikely]] {  // an aligned extent of a page or more, or not ours
      if (!owns(r)) return false;
      cancel(r);
      return true;
    }
    if (static_cast<unsigned>(cls) != size_class_of(r.size)) [[unlikely]]
      if (alloc::base_class(static_cast<unsigned>(cls)) != size_class_of(r.size)) return false;
    if (tls_last.heap_id == id_) [[likely]] {
      thread_cache::bin& b = tls_last.cache->bins[cls];
      if (b.top != b.limit) [[likely]] {
        *b.top++ = r.ptr;
        r = {};
        return true;
      }
    }
    cancel(r);
    return true;
  }
  if (!owns(r)) return false;
  cancel(r);
  return true;
}

// Free by pointer alone: the size class from the slab table, no lock.
void heap_impl::cancel(void* p) {
  if (const int cls = small_.class_of(p); cls >= 0 && tls_last.heap_id == id_) [[likely]] {
    thread_cache::bin& b = tls_last.cache->bins[cls];
    if (b.top != b.limit) [[likely]] {
      *b.top++ = p;
      return;
    }
  }
  cancel_slow(p);
}

[[gnu::noinline]] void heap_impl::cancel_slow(void* p) {
  if (p == nullptr) return;
  refuse_if_read_only("cancel");
  if (const int cls = small_.any_class_of(p); cls >= 0) {
    put_small(static_cast<unsigned>(cls), p);
    return;
  }
  // A reserved extent: the run the page allocator handed out starts here, and
  // its head descriptor is still free on the media (else it was published).
  const auto offset = static_cast<std::uint64_t>(static_cast<std::byte*>(p) - model_->base());
  const std::uint64_t pfn = offset / page_size;
  const std::uint64_t pages =
      model_->media().contains(p) && offset % page_size == 0 ? pages_.allocated_length(pfn) : 0;
  if (pages == 0 || model_->pfn_to_page(pfn)->load() != sparse::free_descriptor)
    throw error(errc::invalid_argument,
                "cancel: " + std::to_string(reinterpret_cast<std::uintptr_t>(p)) +
                    (pages ? " is allocated (deallocate it, or free it in a batch)"
                           : " is not a reserved object of this heap"));
  pages_.free(pfn, pages);
}

std::size_t heap_impl::usable_size(const void* object) const {
  if (const int cls = small_.any_class_of(object); cls >= 0)
    return small_.object_size(object, static_cast<unsigned>(cls));
  if (const sparse::page_descriptor* head = extent_head(object)) return head->length() * page_size;
  // A reserved extent (not on the media yet): the page allocator's run.
  const auto offset =
      static_cast<std::uint64_t>(static_cast<const std::byte*>(object) - model_->base());
  return model_->media().contains(object) && offset % page_size == 0
             ? pages_.allocated_length(offset / page_size) * page_size
             : 0;
}

// The head descriptor of the extent that starts at p, if the allocator owns
// it (not in a quarantined pageblock); else null.
sparse::page_descriptor* heap_impl::extent_head(const void* p) const noexcept {
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_->base());
  const std::uint64_t pfn = offset / page_size;
  if (!model_->media().contains(p) || offset % page_size || !model_->pfn_valid(pfn) ||
      model_->get_pageblock_migratetype(pfn) == migratetype::isolate)
    return nullptr;
  sparse::page_descriptor* head = model_->pfn_to_page(pfn);
  return head->state() == page_state::extent ? head : nullptr;
}

// ---- root ----

void* heap_impl::root(std::size_t size) {
  std::lock_guard lock(root_mutex_);
  sparse::root_slot* s = slot();
  if (s->offset) {
    if (s->size != size)
      throw error(errc::invalid_argument, "root: the heap's root object has " +
                                              std::to_string(s->size) + " bytes, not the " +
                                              std::to_string(size) + " asked for");
    return model_->base() + s->offset;
  }
  if (size == 0) throw error(errc::invalid_argument, "root: size 0");
  refuse_if_read_only("root: the heap has no root object yet, and creating one");
  reservation r = reserve(size);
  if (!r) throw error(errc::out_of_space, "root: no space for " + std::to_string(size) + " bytes");
  const persistence& p = model_->media().persist();
  std::memset(r.ptr, 0, size);
  p.flush(r.ptr, size);
  sparse::root_slot fresh{
      static_cast<std::uint64_t>(static_cast<std::byte*>(r.ptr) - model_->base()), size, 0, 0};
  fresh.checksum = slot_checksum(fresh);
  std::memcpy(root_copy(0), &fresh, sizeof fresh);
  p.persist(root_copy(0), sizeof fresh);  // fence 1: zeroed object and copy A: the root exists
  std::memcpy(root_copy(1), &fresh, sizeof fresh);
  p.persist(root_copy(1), sizeof fresh);  // fence 2: copy B
  if (size <= max_small_size) {
    small_.mark_allocated(small_.bit_of(r.ptr));
  } else {
    sparse::page_descriptor* head = model_->pfn_to_page(fresh.offset / page_size);
    head->store(page_info(page_state::extent, 0, r.size / page_size));
    p.flush(&head->info, 8);
  }
  p.drain();  // fence 3: its allocation (redone by recover_root after a crash)
  return r.ptr;
}

// The root slot chosen by recover_slots names the root: open refuses a heap
// whose slot names no object root() could have made (errc::corrupt, and
// nothing is written), and finishes a root() that a crash interrupted. A
// torn copy A next to an empty copy B (a root that was being created: none
// yet) was cleared by recover_slots; a read-only open only notes it.
void heap_impl::recover_root() {
  sparse::root_slot* s = slot();
  const persistence& p = model_->media().persist();
  if (sparse::root_slot_empty(*s)) return rewrite_stale_slots();
  if (!sparse::root_slot_valid(*s)) {  // a torn copy A next to an empty B: cleared
    root_pending_ = read_only();
    return rewrite_stale_slots();
  }
  const std::string where = model_->media().path().string() + ": the root slot (offset " +
                            sparse::hex(s->offset) + ", " + std::to_string(s->size) + " bytes) ";
  const root_object root = inspect_root(*model_, small_, *s);
  if (!root.problem.empty()) throw error(errc::corrupt, where + root.problem);
  if (root.allocated) return rewrite_stale_slots();
  // Only a crash inside root() leaves the object unmarked: never a heap
  // closed cleanly, and after fence 2 (copy B written) the object is zero
  // on the media. Otherwise it is damage (a cleared bit or descriptor), and
  // the object, published data, is never zeroed: refused, or under repair
  // left as it is (its pageblock's digest or descriptors report it).
  const auto* bytes = reinterpret_cast<const unsigned char*>(model_->base() + s->offset);
  const bool both_copies = stale_root_ < 0;
  const char* why =
      !unclean_ ? "the heap was closed cleanly"
      : both_copies && std::any_of(bytes, bytes + s->size, [](unsigned char b) { return b != 0; })
          ? "both slot copies were written, so root() had zeroed it, and it holds data"
          : nullptr;
  if (why) {
    const std::string what = where + "names an object that is not marked allocated, although " +
                             why + " (a damaged slab bitmap or descriptor)";
    if (!repair_) throw error(errc::corrupt, what);
    repairs_.push_back(what + ": left as it is, not zeroed");
    return rewrite_stale_slots();
  }
  if (read_only()) {
    plan_.steps.push_back("finish the root object at " + sparse::hex(s->offset) +
                          " (zero it and mark it allocated: a root() that did not complete)");
    root_pending_ = true;
    return rewrite_stale_slots();
  }
  // The crash came before root() returned: the slot may have reached the
  // media before the zeroed object did. The object must be free on the
  // media (a slot naming someone else's data is refused, never zeroed).
  std::vector<std::string> problems;
  const auto found = media_extents(problems);
  if (!problems.empty())
    throw error(errc::corrupt, where + "names an object not yet allocated, in a damaged memmap: " +
                                   problems.front());
  const auto its_slab = [&](const alloc::allocated_extent& e) {
    return e.slab && e.pfn == root.pfn && e.sub == root.bit->cls;
  };
  const auto overlaps = [&](const alloc::allocated_extent& e) {
    return e.pfn < root.pfn + root.pages && root.pfn < e.pfn + e.pages;
  };
  const bool free = root.bit ? std::any_of(found.begin(), found.end(), its_slab)
                             : std::none_of(found.begin(), found.end(), overlaps);
  if (!free) throw error(errc::corrupt, where + "names memory that another allocation holds");
  rewrite_stale_slots();
  void* object = model_->base() + s->offset;
  std::memset(object, 0, s->size);
  p.persist(object, s->size);  // zeroed before it is allocated: a crash here redoes it
  if (root.bit) {
    small_.mark_allocated(*root.bit);
  } else {
    sparse::page_descriptor* head = model_->pfn_to_page(root.pfn);
    head->store(page_info(page_state::extent, 0, root.pages));
    p.flush(&head->info, 8);
  }
  p.drain();
}

// ---- hotplug ----

void heap_impl::hot_add(std::uint64_t offset, std::uint64_t length) {
  refuse_if_read_only("hot-add");
  model_->hot_add(offset, length);
  small_.add_span(offset, length);
  pages_.add_span(offset, length);
}

// Free objects kept by this thread's cache, empty slabs and the free
// pageblocks zones keep would pin a span: given back before a hot-remove.
// The calling thread's cached objects go back before it changes arena.
thread_cache& heap_impl::give_back_for_node_change() {
  thread_cache& c = cache();
  drain_cache(c);
  return c;
}

void heap_impl::give_back_for_hot_remove() {
  drain_cache(cache());
  reclaim();
}

void heap_impl::hot_remove(std::uint64_t offset, std::uint64_t length) {
  refuse_if_read_only("hot-remove");
  const std::string what = model_->check_pfn_span("hot-remove", offset, length);
  for (std::uint64_t at = offset; at < offset + length; at += sparse::subsection_size)
    if (!model_->subsection_present(at))
      throw error(errc::not_present, what + "not all of it is present");
  // As the FS_DAX path waits for busy pages before a truncate: memory that
  // direct I/O or a device may still be using stays (freed ones included).
  if (const pin_totals pinned = pins_in(offset, length); pinned.pins != 0)
    throw error(errc::busy, what + std::to_string(pinned.pins) + " pin" +
                                (pinned.pins == 1 ? "" : "s") + " on " +
                                std::to_string(pinned.objects) + " object" +
                                (pinned.objects == 1 ? "" : "s") + " in it (" +
                                std::to_string(pinned.freed_objects) +
                                " of them freed, waiting for their last unpin); unpin them first");
  give_back_for_hot_remove();
  if (!pages_.isolate(offset, length)) {
    // Movable objects move out (the kernel's offline_pages migrates
    // MIGRATE_MOVABLE pages); anything else keeps the span.
    const std::string why = migrate_out(offset, length);
    if (why.empty()) give_back_for_hot_remove();
    if (!why.empty() || !pages_.isolate(offset, length))
      throw error(errc::in_use,
                  what + (why.empty() ? "it holds allocations or reservations (objects cached by "
                                        "other threads also keep their slabs); free them first"
                                      : why));
  }
  hot_remove_epoch_.fetch_add(1, std::memory_order_acq_rel);  // (heap_word's thread caches)
  try {
    model_->hot_remove(offset, length);
  } catch (...) {
    pages_.add_span(offset, length);
    throw;
  }
}

// ---- statistics and checks ----

// What the memmap records as allocated, read afresh (the live allocator's
// state is not consulted); problems found on the way are appended.
std::vector<alloc::allocated_extent> heap_impl::media_extents(
    std::vector<std::string>& problems) const {
  alloc::page_allocator scan(const_cast<sparse::memory_model&>(*model_));
  return scan.rebuild(problems);
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> heap_impl::allocations() const {
  std::vector<std::string> ignored;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (const auto& e : media_extents(ignored)) {
    const std::uint64_t offset = e.pfn * page_size;
    if (!e.slab) {
      out.emplace_back(offset, e.pages * page_size);
      continue;
    }
    const alloc::size_class& c = size_classes[e.sub];
    const auto* bits = reinterpret_cast<const std::uint64_t*>(model_->base() + offset);
    const std::uint32_t skew = e.movable ? alloc::movable_skew : 0;
    for (std::uint32_t i = 0; i < c.objects; ++i)
      if (c.allocated(bits, i))
        out.emplace_back(offset + c.header + skew + std::uint64_t{i} * c.size, c.size - skew);
  }
  return out;
}

heap_stats heap_impl::stats() const {
  heap_stats s;
  const auto model_stats = model_->stats();
  s.present_bytes = model_stats.present_bytes;
  s.usable_bytes = model_stats.usable_bytes;
  s.metadata_bytes = model_stats.head_bytes + model_stats.memmap_bytes;
  const auto pages = pages_.stats();
  s.free_bytes = pages.free_pages * page_size;
  s.largest_free_bytes = pages.largest_free_pages * page_size;
  s.fragmentation = s.free_bytes ? 1.0 - static_cast<double>(s.largest_free_bytes) /
                                             static_cast<double>(s.free_bytes)
                                 : 0;
  const auto classes = small_.stats(&s.allocated_bytes_by_migratetype);
  for (unsigned cls = 0; cls < nr_size_classes; ++cls) {
    if (classes[cls].slabs == 0) continue;
    s.size_classes.push_back({size_classes[cls].size, classes[cls].slabs, classes[cls].allocated,
                              classes[cls].capacity,
                              classes[cls].slabs * (page_size << size_classes[cls].slab_order)});
    // (a movable object at its usable size, as usable_size says: its header apart)
    s.allocated_bytes += classes[cls].allocated * size_classes[cls].size -
                         classes[cls].movable_allocated * alloc::movable_skew;
    s.allocated_objects += classes[cls].allocated;
    s.slab_bytes += classes[cls].slabs * (page_size << size_classes[cls].slab_order);
    s.movable_objects += classes[cls].movable_allocated;
    s.movable_bytes += classes[cls].movable_allocated * size_classes[cls].size;
    s.movable_slab_bytes +=
        classes[cls].movable_slabs * (page_size << size_classes[cls].slab_order);
  }
  s.compaction_passes = compacted_.passes.load(std::memory_order_relaxed);
  s.compaction_moved_bytes = compacted_.bytes_moved.load(std::memory_order_relaxed);
  s.compaction_released_bytes = compacted_.bytes_released.load(std::memory_order_relaxed);
  const pin_totals pinned = object_pins_.totals();
  s.pinned_objects = pinned.objects;
  s.pins = pinned.pins;
  s.pinned_bytes = pinned.bytes;
  s.pinned_freed_objects = pinned.freed_objects;
  s.pinned_freed_bytes = pinned.freed_bytes;
  // Per node: each region's pageblock range and the node it is of.
  const std::vector<node_range> ranges = placed_node_ranges();
  for (const node_range& r : ranges) {
    auto n = std::find_if(s.nodes.begin(), s.nodes.end(),
                          [&](const heap_stats::node_stats& x) { return x.node == r.node; });
    if (n == s.nodes.end()) n = s.nodes.insert(s.nodes.end(), {.node = r.node});
    ++n->regions;
    n->free_bytes += pages_.free_pages_in(r.first, r.end) * page_size;
  }
  std::sort(s.nodes.begin(), s.nodes.end(),
            [](const auto& a, const auto& b) { return a.node < b.node; });
  const auto node_of = [&](std::uint64_t pfn) -> heap_stats::node_stats& {
    const std::uint64_t pageblock = pfn / alloc::pageblock_pages;
    const auto r = std::find_if(ranges.begin(), ranges.end(), [&](const node_range& x) {
      return pageblock >= x.first && pageblock < x.end;
    });
    const int node = r == ranges.end() ? ranges.front().node : r->node;
    return *std::find_if(s.nodes.begin(), s.nodes.end(),
                         [&](const heap_stats::node_stats& x) { return x.node == node; });
  };
  {
    std::lock_guard lock(caches_mutex_);
    for (const int node : arena_node_)  // (none: no placement by node)
      for (auto& n : s.nodes) n.arenas += n.node == node;
  }
  std::vector<std::string> ignored;
  for (const auto& e : media_extents(ignored)) {
    (e.slab ? node_of(e.pfn).slab_bytes : node_of(e.pfn).extent_bytes) += e.pages * page_size;
    if (!e.slab) {
      s.extent_bytes += e.pages * page_size;
      s.allocated_bytes += e.pages * page_size;
      s.allocated_bytes_by_migratetype[static_cast<unsigned>(
                                           model_->get_pageblock_migratetype(e.pfn)) &
                                       7] += e.pages * page_size;
      ++s.allocated_objects;
    }
  }
  const auto& geo = model_->geo();
  for (std::uint64_t nr = 0; nr < geo.nr_sections(); ++nr) {
    if (!model_->section_present(nr)) {
      if (model_->directory_entry(nr / geo.sections_per_root()) == 0)
        nr += geo.sections_per_root() - 1 - nr % geo.sections_per_root();
      continue;
    }
    for (unsigned sub = 0; sub < geo.subsections_per_section(); ++sub) {
      const std::uint64_t pfn = geo.section_nr_to_pfn(nr) + sub * alloc::pageblock_pages;
      if (!model_->pfn_valid(pfn)) continue;
      ++s.pageblocks_by_migratetype[static_cast<unsigned>(model_->get_pageblock_migratetype(pfn))];
      node_of(pfn).present_bytes += sparse::subsection_size;
    }
  }
  s.alignment_waste_bytes = alignment_waste();
  s.this_thread = this_thread_persist_counters();
  s.unclean_shutdown = unclean_;
  return s;
}

bool heap_impl::unreadable_descriptors(std::vector<std::string>& problems,
                                       std::vector<std::uint64_t>* bad) const {
  bool faulted = false;
  const auto& geo = model_->geo();
  for (std::uint64_t nr = 0; nr < geo.nr_sections(); ++nr) {
    if (!model_->section_present(nr)) continue;
    const std::uint64_t start = nr << geo.section_size_bits;
    for (std::uint64_t at = start; at < start + geo.section_size(); at += sparse::subsection_size) {
      const std::uint64_t pfn = at >> sparse::page_shift;
      if (!model_->subsection_present(at)) continue;
      const migratetype type = model_->get_pageblock_migratetype(pfn);
      if (type == migratetype::metadata || type == migratetype::isolate) continue;
      if (auto failure = model_->probe_descriptors(pfn)) {
        faulted |= !failure->listed;
        problems.push_back(media::describe(*failure) + " (the descriptors of the pageblock at " +
                           sparse::hex(at) + ")");
        if (bad) bad->push_back(pfn / alloc::pageblock_pages);
      }
    }
  }
  return faulted;
}

std::vector<std::string> heap_impl::check() const {
  std::vector<std::string> problems = model_->check();
  if (!problems.empty())
    return problems;  // the allocator state cannot be trusted on a broken model
  // Nor can it when descriptors do not read: the rest would load them.
  (void)unreadable_descriptors(problems, nullptr);
  if (!problems.empty()) return problems;
  const auto found = media_extents(problems);
  // Nothing the live allocator calls free may be allocated on the media.
  for (const auto& e : found)
    for (std::uint64_t pfn = e.pfn; pfn < e.pfn + e.pages; ++pfn)
      if (pages_.is_free(pfn)) {
        problems.push_back("page at " + std::to_string(pfn * page_size) +
                           " is allocated on the media but free in the page allocator");
        break;
      }
  small_.check(problems, digests_pending_);
  check_movable(found, problems);
  const sparse::root_slot* s = slot();
  if (!sparse::root_slot_empty(*s) && !root_pending_) {
    const std::string what = "the root slot does not name an allocated object of its size: ";
    if (!sparse::root_slot_valid(*s)) {
      problems.push_back(what + "its checksum does not match");
    } else {
      const root_object root = inspect_root(*model_, small_, *s);
      if (!root.problem.empty())
        problems.push_back(what + "it " + root.problem);
      else if (!root.allocated)
        problems.push_back(what + "the object is free");
    }
  }
  check_heap_metadata(problems);
  if (opened_ && model_->super().shutdown_state != sparse::shutdown_open)
    problems.push_back("an open heap is not marked open");
  return problems;
}

// ---- the heap a container's allocator names ----

namespace {
std::atomic<std::uint64_t> failed_deallocations{0};

heap_impl* find_heap_at(const void* base) {
  for (const auto& slot : open_heaps)
    if (heap_impl* h = slot.load(std::memory_order_acquire); h && h->model().base() == base)
      return h;
  std::lock_guard lock(live_mutex);
  for (const auto& [id, h] : live_heaps)
    if (h->model().base() == base) return h;
  return nullptr;
}
}  // namespace

void* allocate_in(const void* base, std::size_t bytes, std::size_t alignment) {
  heap_impl* h = find_heap_at(base);
  if (h == nullptr)
    throw error(errc::invalid_argument,
                "allocator: no open heap is mapped at this container's heap address");
  h->refuse_if_read_only("allocator");
  if (!std::has_single_bit(alignment) || alignment > heap::max_alignment)
    throw error(errc::invalid_argument, "allocator: alignment " + std::to_string(alignment) +
                                            " is not a power of two up to 1 GiB");
  if (void* p = alignment == 1 ? h->allocate(bytes) : h->allocate_aligned(bytes, alignment))
    return p;
  throw error(errc::out_of_space, "allocator: no room for " + std::to_string(bytes) + " bytes");
}
void* allocate_in(const void* base, std::size_t bytes) {
  return allocate_in(base, bytes, 1);
}

// A failed free is counted, not reported: a container's destructor has no
// caller to report to, and std::terminate would be worse than the leak.
void deallocate_in(const void* base, void* p) noexcept {
  if (p == nullptr) return;
  try {
    if (heap_impl* h = find_heap_at(base)) return h->deallocate(p);
  } catch (const std::exception&) {  // invalid_argument, or bad_alloc building its message
  }
  failed_deallocations.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace detail

std::uint64_t allocator_failed_deallocations() noexcept {
  return detail::failed_deallocations.load(std::memory_order_relaxed);
}

}  // namespace daxalloc
