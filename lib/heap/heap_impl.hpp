// The heap behind include/daxalloc/heap.hpp: the sparse memory model, the
// page allocator, slabs and per-thread caches, the root object, recovery.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "alloc/small_allocator.hpp"
#include "daxalloc/heap.hpp"
#include "heap/pins.hpp"
#include "platform/media.hpp"
#include "platform/sysfs.hpp"
#include "sparse/memory_model.hpp"

namespace daxalloc::detail {
// heap::upgrade on a mapped region (sparse::upgrade with the size classes).
std::vector<std::string> upgrade_region(region& r);
}  // namespace daxalloc::detail

namespace daxalloc::detail {

// The unsafe-shutdown record for a device state (shutdown.cpp): the state's
// count and id, or all zero when the device reports none.
[[nodiscard]] sparse::shutdown_record shutdown_record_of(const media::device_state& state);

// Free objects (bits clear) a thread keeps per size class, so that the fast
// path takes no lock. Each class has a stack of them, [bottom, top) in use
// and room up to limit, all in one array: a freed object goes on top and is
// handed out first (LIFO, the cache-warm one), and a refill puts the lowest
// address on top, so a fresh slab's objects come out in ascending order. A
// heap owns the caches of all threads that used it.
struct thread_cache {
  struct bin {
    void** top;
    void** bottom;
    void** limit;
  };
  // Per slab class: a legacy class's bin takes the objects of format 4
  // slabs freed by this thread (allocations take from the others only).
  std::array<bin, alloc::nr_slab_classes> bins;
  std::unique_ptr<void*[]> storage;
  unsigned arena = 0;  // of the small allocator, where the slow path takes objects
  // Placement by node: the node this thread allocates on (its CPU's when it
  // first allocated, or prefer_node's), and the placement its arena is of.
  int node = -1;
  unsigned placement = 0;
};

class heap_impl {
 public:
  static std::unique_ptr<heap_impl> create(const std::filesystem::path& path,
                                           const heap_options& options);
  static std::unique_ptr<heap_impl> open(const std::filesystem::path& path,
                                         const heap_open_options& options);
  static std::unique_ptr<heap_impl> open(region&& r, const heap_open_options& options);
  // O_RDONLY, PROT_READ, a shared lock; recovers nothing and writes nothing
  // (not even the shutdown marker): recovery_plan() says what a read-write
  // open would do. Every call that would write is errc::read_only.
  static std::unique_ptr<heap_impl> open_read_only(const std::filesystem::path& path,
                                                   const heap_open_options& options);
  // Creates the heap if the file does not exist (or is empty, or a devdax
  // device holds no heap), else opens it: decided under the region's lock,
  // so of processes racing exactly one creates. created() tells which.
  static std::unique_ptr<heap_impl> open_or_create(const std::filesystem::path& path,
                                                   const heap_options& create_options,
                                                   const heap_open_options& open_options);
  ~heap_impl();
  heap_impl(const heap_impl&) = delete;
  heap_impl& operator=(const heap_impl&) = delete;

  [[nodiscard]] void* allocate(std::size_t size) noexcept;
  void deallocate(void* p);
  [[nodiscard]] reservation reserve(std::size_t size) noexcept;
  // With the object's address a multiple of `alignment` (a power of two up
  // to heap::max_alignment; the caller checks): a class whose objects are
  // all aligned, else an extent at an aligned page. What it takes beyond
  // the unaligned form's size is added to alignment_waste().
  [[nodiscard]] void* allocate_aligned(std::size_t size, std::size_t alignment) noexcept;
  [[nodiscard]] reservation reserve_aligned(std::size_t size, std::size_t alignment) noexcept;
  [[nodiscard]] std::uint64_t alignment_waste() const noexcept {
    return alignment_waste_.load(std::memory_order_relaxed);
  }
  // r must be a reservation of this heap (owns() checks one from a caller).
  void cancel(reservation& r) noexcept;
  void cancel(void* p);
  // Whether r is a reservation this heap handed out and still holds as such:
  // a slab object of r.size's class, or a reserved run of r.size bytes whose
  // head descriptor is still free. No lock, no write.
  [[nodiscard]] bool owns(const reservation& r) const noexcept;
  // cancel(r) if owns(r); false (and nothing done) if not.
  [[nodiscard]] bool cancel_owned(reservation& r) noexcept;
  [[nodiscard]] void* root(std::size_t size);
  void hot_add(std::uint64_t offset, std::uint64_t length);
  void hot_remove(std::uint64_t offset, std::uint64_t length);
  // Several devices (regions.cpp).
  const sparse::member_record& add_region(const std::filesystem::path& path, std::uint64_t size,
                                          int node);
  void remove_region(const std::filesystem::path& path);
  void prefer_node(int node);
  // Placement by node (regions.cpp).
  struct node_range {
    int node;
    std::uint64_t first, end;  // pageblocks
  };
  [[nodiscard]] std::vector<node_range> node_ranges() const;  // from the members
  [[nodiscard]] std::vector<node_range> placed_node_ranges() const;
  void place_by_node();
  [[nodiscard]] static std::vector<int> memory_fallback(const sysfs::numa_topology& topology,
                                                        const std::vector<int>& nodes, int node);
  [[nodiscard]] unsigned arena_for(int node);  // under caches_mutex_
  thread_cache& give_back_for_node_change();
  [[nodiscard]] heap_stats stats() const;
  [[nodiscard]] std::vector<std::string> check() const;
  // Movable objects (movable.cpp; heap.hpp has the contract).
  [[nodiscard]] void* allocate_movable(std::size_t size, std::uint64_t* owner,
                                       void (*construct)(void*, void*), void* context);
  void move_owner(std::uint64_t* from, std::uint64_t* to);
  [[nodiscard]] bool is_movable(const void* p) const noexcept;
  // The owner word of the movable object at p when its header checks out
  // (nullptr else); `refers` whether that word refers to p.
  [[nodiscard]] std::uint64_t* owner_of(const void* p, bool* refers = nullptr) const noexcept;
  compact_result compact(const compact_options& options);
  std::uint64_t trim();
  [[nodiscard]] void* pin(const std::uint64_t* owner);
  // unpin of either kind of pin: a movable object's (pin(owner)), or an
  // object's by address (pins.cpp).
  void unpin(const void* p);
  // Pins by address (pins.hpp has the model).
  std::uint32_t pin_object(const void* p);
  [[nodiscard]] std::uint32_t pins_of(const void* p) const;
  [[nodiscard]] pin_totals pins_in(std::uint64_t offset, std::uint64_t length) const;
  // Hands the memory of a durable free back to the allocators, or, for a
  // pinned object, at its last unpin (the page_free callback's role).
  void release_freed(const freed_memory& m) noexcept;
  void hand_back(const freed_memory& m) noexcept;
  void unpin_movable(const void* p);
  // What compaction did since open (heap_stats).
  struct compaction_totals {
    std::atomic<std::uint64_t> passes{0}, objects_moved{0}, bytes_moved{0}, bytes_released{0};
  };
  [[nodiscard]] const compaction_totals& compaction() const noexcept { return compacted_; }
  [[nodiscard]] std::size_t usable_size(const void* p) const;
  [[nodiscard]] bool is_root(const void* p) const noexcept;
  // Every durable allocation (offset, bytes) as the media records it, in
  // address order: extents, and slab objects whose bit is set.
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> allocations() const;

  [[nodiscard]] sparse::memory_model& model() noexcept { return *model_; }
  [[nodiscard]] const sparse::memory_model& model() const noexcept { return *model_; }
  [[nodiscard]] bool unclean_shutdown() const noexcept { return unclean_; }
  [[nodiscard]] bool read_only() const noexcept { return model_->media().read_only(); }
  [[nodiscard]] bool created() const noexcept { return created_; }
  [[nodiscard]] const daxalloc::recovery_plan& recovery_plan() const noexcept { return plan_; }
  // errc::read_only "<path>: <operation>: the heap is open read-only" on a read-only heap.
  void refuse_if_read_only(const char* operation) const;
  [[nodiscard]] const std::vector<std::string>& repairs() const noexcept { return repairs_; }
  [[nodiscard]] const std::vector<bad_block>& bad_blocks() const noexcept { return bad_blocks_; }
  // This open found an unsafe shutdown and proceeded
  // (heap_open_options::accept_unsafe_shutdown), after a full check.
  [[nodiscard]] bool unsafe_shutdown() const noexcept { return shutdown_.unsafe; }
  [[nodiscard]] const media::device_state& media_state() const noexcept { return media_; }
  [[nodiscard]] std::mutex& names_mutex() const noexcept { return names_mutex_; }
  // The name table's offset from the name-table slot's copies (0: none);
  // errc::corrupt when they agree on none.
  [[nodiscard]] std::uint64_t names_table_offset() const;
  // Copy c (0: A, 1: B) of the root and the name-table slot.
  [[nodiscard]] sparse::root_slot* root_copy(int c) const noexcept {
    return reinterpret_cast<sparse::root_slot*>(
        model_->base() + (c == 0 ? sparse::root_slot_offset : root_b_offset_));
  }
  [[nodiscard]] sparse::names_slot* names_copy(int c) const noexcept {
    return reinterpret_cast<sparse::names_slot*>(
        model_->base() + (c == 0 ? sparse::names_slot_offset : names_b_offset_));
  }

  // This heap's id in the process (never reused) and its slot in the
  // registry of open heaps (nr_registry_slots: none, it was full).
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] unsigned registry_slot() const noexcept { return registry_slot_; }
  static constexpr unsigned nr_registry_slots = 64;
  // Whether the heap with this id and slot is still open: one atomic load,
  // (a lock when it has no slot). What a batch checks before each call.
  [[nodiscard]] static bool is_open(std::uint64_t id, unsigned slot);
  // Called from a thread's exit: its cached objects go back to the slabs.
  void release_cache(thread_cache* cache) noexcept;

  // A batch (daxalloc/batch.hpp): validate, write to a lane (non-temporal
  // stores) with the heap's pending write-backs, fence once (the commit),
  // apply; later fences make the targets durable and retire the lane
  // (fence_window). Then hand the freed objects back. Throws before anything
  // is written when an action is invalid or the batch is too large.
  // `streamed` marks reserved objects whose bytes were copied in with
  // non-temporal stores (no flush needed): bit k for reserved[k]; a
  // sources[k] holds the first bytes of reserved[k] (what it was copied
  // from), and the lane's copy is staged from it.
  void publish(std::span<const reservation> reserved,
               std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
               std::span<void* const> frees, std::span<const std::uint64_t> streamed = {},
               bool stores_checked = false, std::span<const copy_source> sources = {},
               std::span<const range_write> writes = {}, const std::byte* write_bytes = nullptr);
  // Deferred publication (group commit): the batch is checked and queued;
  // sync() publishes every queued batch as one, with one commit fence.
  void publish_deferred(std::span<const reservation> reserved,
                        std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
                        std::span<void* const> frees, std::span<const std::uint64_t> streamed,
                        std::span<const range_write> writes = {},
                        const std::byte* write_bytes = nullptr);
  // n bytes at dst inside present memory outside the metadata, or
  // errc::invalid_argument (batch::write).
  void check_write_target(const void* dst, std::size_t n) const;
  void sync();
  void sync_locked();  // under group_mutex_
  // Bytes copied into a reservation with non-temporal stores, pending
  // until the next fence of this thread.
  void stream(void* dest, const void* src, std::size_t n) const noexcept {
    beneath_.copy_nodrain(dest, src, n);
  }

  // What the heap's fences run on: the region's persistence as it was at
  // open, or what a test swaps in (the crash simulators). The region itself
  // keeps the heap's wrapper, whose every fence first makes lazily
  // invalidated lanes durable.
  void use_persistence(const persistence& beneath) noexcept;

 private:
  explicit heap_impl(std::unique_ptr<sparse::memory_model> model);
  void start(bool repair);
  void rebuild(bool repair);
  // media.cpp: each bad block of media_ placed and reported; a pageblock of
  // memory holding one quarantined; with repair, cleared (the provider).
  void handle_bad_blocks(bool repair);
  [[nodiscard]] bad_block place_bad_block(const media::bad_range& range) const;
  void recover_root();
  void recover_slots();  // integrity.cpp: choose each slot's copy (no stores)
  void rewrite_stale_slots();
  // The problem of inspect_root with a slot (empty: none) and whether its
  // object is marked allocated.
  [[nodiscard]] std::pair<std::string, bool> inspect_root_slot(const sparse::root_slot& s) const;
  [[nodiscard]] bool names_slot_word(std::uint64_t offset) const noexcept;
  [[nodiscard]] int names_slot_word_copy(std::uint64_t offset) const noexcept;
  [[nodiscard]] std::uint64_t media_allocation_size(std::uint64_t offset) const noexcept;
  // Why a committed lane holds an action no batch makes; empty if none.
  [[nodiscard]] std::string lane_problem(const sparse::lane_header& h) const;
  void check_heap_metadata(std::vector<std::string>& problems) const;
  // Digests of slab bitmaps and memmap pages, recorded at a clean close and
  // checked at the next open (integrity.cpp).
  template <class F>
  void for_each_memmap_block(F&& f) const;
  // f(head descriptor, pfn) for every slab (format 5 or legacy) whose head
  // descriptor checks out and names a class, in a present pageblock outside
  // quarantine.
  template <class F>
  void for_each_slab_head(F&& f) const;
  [[nodiscard]] bool slab_bitmap_bits(std::uint64_t offset, std::uint64_t mask) const noexcept;
  [[nodiscard]] std::uint64_t memmap_page_digest(std::uint64_t span, std::uint64_t block,
                                                 std::uint64_t k) const noexcept;
  void record_digests() noexcept;
  [[nodiscard]] std::string objects_in_pageblock(std::uint64_t pageblock) const;
  void digest_problems(std::vector<std::string>& problems, std::vector<std::uint64_t>& bad);
  // The descriptor pages (4 KiB of memmap per 2 MiB) of the present
  // pageblocks the allocators scan (not metadata, not quarantined), probed
  // before a scan loads them: a problem (and its pageblock in `bad`) per
  // pageblock whose descriptors do not read. Whether a load faulted (not
  // only listed bad blocks).
  bool unreadable_descriptors(std::vector<std::string>& problems,
                              std::vector<std::uint64_t>* bad) const;
  void reconcile_slabs(std::vector<std::string>& problems, std::vector<std::uint64_t>& bad);
  // check(): every allocated movable object's header and owner (movable.cpp).
  void check_movable(const std::vector<alloc::allocated_extent>& found,
                     std::vector<std::string>& problems) const;
  // Moves the movable object at `object` into the slot `dest` (handed out
  // by the small allocator, same class): false when it was not moved.
  bool relocate(void* object, void* dest, compact_result& result);
  bool move_unpinned(void* object, void* dest, compact_result& result);
  void release_after_moves(compact_result& result);
  // hot_remove of a span that holds movable slabs and free memory only: its
  // free pages held, every object moved out (below), its slabs released.
  // Empty when the span is free now; else why not (nothing changed but
  // what moved).
  [[nodiscard]] std::string migrate_out(std::uint64_t offset, std::uint64_t length);
  [[nodiscard]] std::atomic<std::uint32_t>& pin_count(const void* p) const noexcept;
  [[nodiscard]] thread_cache& cache() noexcept;
  [[nodiscard]] thread_cache& cache_slow() noexcept;
  [[nodiscard]] void* take_small(unsigned cls) noexcept;
  [[nodiscard]] void* refill(thread_cache::bin& b, unsigned cls) noexcept;
  void put_small(unsigned cls, void* p) noexcept;
  void push_cached(unsigned cls, void* p) noexcept;
  [[nodiscard]] reservation reserve_slow(std::size_t size) noexcept;
  [[nodiscard]] reservation reserve_pages(std::size_t size, std::uint64_t align = 1) noexcept;
  // The extent's head descriptor, durably (the commit of allocate).
  [[nodiscard]] void* commit_extent(std::uint64_t pfn, std::uint64_t pages) noexcept;
  // Adds what an aligned object of `usable` bytes takes beyond what size would.
  void note_alignment_waste(std::size_t size, std::uint64_t usable) noexcept;
  // Whether a reservation is a slab object: by its size and its address, as
  // an aligned extent may be as small as a page.
  [[nodiscard]] bool in_slab(const reservation& r) const noexcept {
    return r.size <= alloc::max_small_size && small_.any_class_of(r.ptr) >= 0;
  }
  void flush(thread_cache::bin& b, unsigned cls) noexcept;
  void drain_cache(thread_cache& c) noexcept;
  void cancel_slow(void* p);
  // `align`: pages, a power of two (the run's address a multiple of it).
  [[nodiscard]] std::optional<std::uint64_t> allocate_pages(std::uint64_t pages,
                                                            std::uint64_t align = 1);
  bool reclaim();
  void give_back_for_hot_remove();
  [[nodiscard]] sparse::root_slot* slot() const noexcept;
  void replay_lanes();
  void plan_lane_replay();  // read-only: what replay_lanes would do, into plan_
  void note_lane_bits(const sparse::lane_header& h);  // into lane_bits_
  [[nodiscard]] std::vector<alloc::allocated_extent> media_extents(
      std::vector<std::string>& problems) const;
  [[nodiscard]] sparse::lane_header* lane(unsigned i) const noexcept;
  [[nodiscard]] unsigned acquire_lanes(unsigned span) noexcept;
  void free_lanes(unsigned i) noexcept;
  // The heap's fences (docs/crash-consistency.md, "Publication in 1 fence").
  // A fence is a window: open_window() retires the lanes whose targets an
  // earlier fence made durable (their zeroed headers are written) and
  // flushes the targets of every applied lane; the caller adds its own
  // write-backs (a lane, an object); close_window() drains once and moves
  // the lanes on. No locked instruction runs between the first write-back
  // of a window and its drain: on x86 it would wait for them as a fence
  // does. fence(full): one window; a full fence (every fence but a
  // publication's commit) adds windows until every lane applied before it
  // is retired durably, so that no later store of the caller can be
  // overwritten by a replay. Return how many fences they took.
  struct fence_window {
    std::uint64_t applied = 0;                          // lanes whose targets this window flushed
    std::uint64_t retiring = 0;                         // lanes whose zeroed headers it wrote
    std::array<std::uint64_t, sparse::nr_lanes> state;  // as noted, per lane
  };
  [[nodiscard]] fence_window open_window() noexcept;
  void close_window(const fence_window& w) noexcept;
  unsigned fence(bool full) noexcept;
  void commit_fence() noexcept;  // one window, counted
  void flush_targets(unsigned i) const noexcept;
  [[nodiscard]] bool meets_later_lane(unsigned i, std::uint64_t order) const noexcept;
  // Calls f(bytes, length) for each piece of the inline bytes of the lane
  // image at `first` (a lane, or a staged copy of consecutive lanes).
  template <class B, class F>
  static void for_each_inline_piece(B* first, std::uint64_t count, std::uint64_t total, F&& f);
  // Applies the entries' stores, or (bits) their bitmap changes.
  void apply(const sparse::log_entry* entries, std::size_t n, bool bits) const noexcept;
  void apply(const sparse::log_entry* entries, std::size_t n) const noexcept {
    apply(entries, n, false);
    apply(entries, n, true);
  }
  static void fence_flush(void* self, const void* addr, std::size_t len);
  static void fence_drain(void* self);
  static void fence_discard(void* self, const void* addr, std::size_t len);
  [[nodiscard]] std::uint64_t lane_checksum(unsigned i) const noexcept;
  [[nodiscard]] static std::uint64_t image_checksum(const sparse::lane_header& h,
                                                    std::uint64_t inline_total) noexcept;
  [[nodiscard]] std::uint64_t inline_bytes(unsigned i) const noexcept;  // UINT64_MAX: too many
  [[nodiscard]] bool content_in_bounds(const sparse::lane_header& h) const noexcept;
  // A word a batch may store to: 8-aligned in the heap's memory outside
  // metadata pageblocks, or the name-table slot.
  [[nodiscard]] bool heap_word(const void* p) const noexcept;
  void check_store_target(const void* where) const;  // heap_word, or errc::invalid_argument
  struct object_to_free {
    std::optional<alloc::object_location> small;  // its slab bit, or
    const sparse::page_descriptor* head;          // its extent's head
  };
  [[nodiscard]] object_to_free check_free(void* p) const;
  // Loads the slab of a small object before its bit is cleared;
  // errc::corrupt when the slab's bitmap is damaged.
  void load_slab_of(const void* object, const char* operation) const;
  [[nodiscard]] sparse::page_descriptor* extent_head(const void* p) const noexcept;
  // The unsafe-shutdown record (shutdown.cpp). inspect_shutdown_record runs
  // before the open writes anything (sparse::open_options::before_writes):
  // it refuses an unsafe shutdown with errc::unsafe_shutdown unless
  // accepted. finish_shutdown_record runs after recovery, before the heap is
  // marked open: after an accepted unsafe shutdown the full check, then
  // (read-write) the current device state into the record.
  struct shutdown_verdict {
    bool unsafe = false;          // an unsafe shutdown, accepted
    bool damaged_record = false;  // the record failed its checksum: ignored
  };
  [[nodiscard]] static shutdown_verdict inspect_shutdown_record(
      const std::string& path, const sparse::superblock& sb, const sparse::shutdown_record& record,
      const media::device_state& now, bool accept);
  void finish_shutdown_record();
  [[nodiscard]] sparse::shutdown_record* shutdown_record_on_media() const noexcept;

  std::unique_ptr<sparse::memory_model> model_;
  alloc::page_allocator pages_;
  alloc::small_allocator small_;
  std::uint64_t id_;
  std::atomic<std::uint64_t> hot_remove_epoch_{0};  // hot-removes begun (heap_word)
  std::byte* lane_zero_;  // the first redo lane (the geometry's offsets cost divisions)
  unsigned registry_slot_ = nr_registry_slots;
  // Where copy B of the root slot and of the name-table slot are (the slot
  // page, geometry::slots_offset()), fixed at open: read on fast paths.
  std::uint64_t root_b_offset_;   // copy B of the root slot
  std::uint64_t names_b_offset_;  // 16-byte aligned
  bool unclean_ = false;
  bool opened_ = false;           // marked open on the media: closing marks it clean
  bool created_ = false;          // this handle's open created the heap
  daxalloc::recovery_plan plan_;  // read-only opens: the recovery not done
  bool root_pending_ = false;     // read-only: recovery would finish or clear the root slot
  int root_copy_ = 0;  // the copy of each slot in use (B only read-only, when A is stale)
  int names_copy_ = 0;
  bool repair_ = false;  // opened with heap_open_options::repair
  int stale_root_ = -1;  // the copy recover_slots found stale, until rewritten
  int stale_names_ = -1;
  std::vector<std::string> repairs_;
  // What the media said at open (platform/media.hpp): its bad blocks and
  // the unsafe-shutdown state of its DIMMs.
  media::device_state media_;
  std::vector<bad_block> bad_blocks_;  // media_'s bad blocks in the heap (media.cpp)
  shutdown_verdict shutdown_;          // what inspect_shutdown_record found at this open
  // The bitmap bits (word offset, mask) of the committed lanes this open
  // replays: changes a crash may have left half made (reconcile_slabs).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> lane_bits_;
  // Read-only: slabs whose digest reconcile_slabs would rewrite (sorted).
  std::vector<std::uint64_t> digests_pending_;
  std::mutex root_mutex_;
  mutable std::mutex names_mutex_;
  std::atomic<std::uint64_t> busy_lanes_{0};
  persistence beneath_;
  // Per lane, volatile: a lane is busy from acquire_lanes until its retired
  // header is durable (then free again). `state` is generation << 8 | phase,
  // one word so that every step is a compare-and-swap against the
  // generation noted (acquire_lanes increments it): writing -> applied
  // (targets stored, not flushed) -> covered (a fence made its targets
  // durable) -> retiring (claimed by one thread, which wrote its zeroed
  // header) -> free (after that thread's next drain).
  enum lane_phase : std::uint64_t {
    lane_free,
    lane_writing,
    lane_applied,
    lane_covered,
    lane_retiring
  };
  // (64: a group commit of 16 publications writes 32 words)
  static constexpr unsigned max_noted_targets = 64;
  static constexpr unsigned max_noted_ranges = 8;
  // Calls f(offset, bytes) for each range write of lane i's batch.
  template <class F>
  void for_each_range(unsigned i, F&& f) const noexcept;
  struct alignas(64) lane_state {
    std::atomic<std::uint64_t> state{lane_free};
    std::atomic<std::uint64_t> order{0};
    unsigned span = 1;           // consecutive lanes the batch occupies
    std::uint64_t sequence = 0;  // its header's, kept by the retired header
    // The batch's store and bit targets (entry target words, its content
    // entries left out), so that fences need not read the lane back; more
    // than max_noted_targets: read it.
    std::atomic<unsigned> targets_noted{0};
    std::array<std::atomic<std::uint64_t>, max_noted_targets> targets{};
    // Its range writes (offset, bytes), flushed with the targets; more than
    // max_noted_ranges: read from the lane (every content entry).
    std::atomic<unsigned> ranges_noted{0};
    std::array<std::atomic<std::uint64_t>, 2 * max_noted_ranges> ranges{};
  };
  std::array<lane_state, sparse::nr_lanes> lanes_;
  std::atomic<unsigned> lanes_used_{0};  // bounds the lanes ever acquired
  std::atomic<std::uint64_t> next_order_{1};
  // Applies happen one at a time, in commit order unless reordered.
  std::mutex apply_mutex_;
  std::uint64_t last_applied_ = 0;
  // Deferred publications, queued until sync() (or until a lane is full).
  struct deferred_group {
    std::vector<reservation> reserved;
    std::vector<std::pair<std::uint64_t*, std::uint64_t>> stores;
    std::vector<void*> frees;
    std::vector<std::uint64_t> streamed;
    std::uint64_t content = 0;
    void clear() noexcept {
      reserved.clear();
      stores.clear();
      frees.clear();
      streamed.clear();
      content = 0;
    }
  };
  std::mutex group_mutex_;
  deferred_group group_;
  // Bytes aligned allocations and reservations took beyond the unaligned
  // size, since open (never decreased: a free does not know the alignment).
  std::atomic<std::uint64_t> alignment_waste_{0};
  // Pins of movable objects: counts in slots by address hash (two objects
  // may share a slot: compaction then passes over both, never neither), and
  // pin_moving while compaction moves the object of a slot.
  static constexpr std::size_t nr_pin_slots = std::size_t{1} << 16;
  std::unique_ptr<std::atomic<std::uint32_t>[]> pins_ {
    new std::atomic<std::uint32_t>[ nr_pin_slots ]()
  };
  object_pins object_pins_;  // pins by address (heap::pin(p))
  std::mutex compact_mutex_;
  unsigned compact_class_ = 0;  // under compact_mutex_: where the next pass goes on
  compaction_totals compacted_;
  mutable std::mutex caches_mutex_;
  std::vector<std::unique_ptr<thread_cache>> caches_;
  unsigned next_arena_ = 0;  // under caches_mutex_: arenas go round
  // Under caches_mutex_: the node each arena serves (-1: memory of no known
  // node); empty when the heap has memory of one node only.
  std::vector<int> arena_node_;
  std::vector<node_range> node_ranges_;
  std::atomic<unsigned> placement_generation_{0};  // changes when arena_node_ does
  void follow_placement(thread_cache& c);
  sysfs::numa_topology topology_;  // under caches_mutex_: as place_by_node read it
};

}  // namespace daxalloc::detail
