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
#include "sparse/memory_model.hpp"

namespace daxalloc::detail {

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
  std::array<bin, alloc::nr_size_classes> bins;
  std::unique_ptr<void*[]> storage;
  unsigned arena = 0;  // of the small allocator, where the slow path takes objects
};

class heap_impl {
 public:
  static std::unique_ptr<heap_impl> create(const std::filesystem::path& path,
                                           const heap_options& options);
  static std::unique_ptr<heap_impl> open(const std::filesystem::path& path,
                                         const heap_open_options& options);
  static std::unique_ptr<heap_impl> open(region&& r, const heap_open_options& options);
  ~heap_impl();
  heap_impl(const heap_impl&) = delete;
  heap_impl& operator=(const heap_impl&) = delete;

  [[nodiscard]] void* allocate(std::size_t size) noexcept;
  void deallocate(void* p);
  [[nodiscard]] reservation reserve(std::size_t size) noexcept;
  // r must be a reservation of this heap (owns() checks one from a caller).
  void cancel(reservation& r) noexcept;
  void cancel(void* p);
  // Whether r is a reservation this heap handed out and still holds as such:
  // a slab object of r.size's class, or a reserved run of r.size bytes whose
  // head descriptor is still free. No lock, no write.
  [[nodiscard]] bool owns(const reservation& r) const noexcept;
  [[nodiscard]] void* root(std::size_t size);
  void hot_add(std::uint64_t offset, std::uint64_t length);
  void hot_remove(std::uint64_t offset, std::uint64_t length);
  [[nodiscard]] heap_stats stats() const;
  [[nodiscard]] std::vector<std::string> check() const;
  [[nodiscard]] std::size_t usable_size(const void* p) const;
  [[nodiscard]] bool is_root(const void* p) const noexcept;
  // Every durable allocation (offset, bytes) as the media records it, in
  // address order: extents, and slab objects whose bit is set.
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> allocations() const;

  [[nodiscard]] sparse::memory_model& model() noexcept { return *model_; }
  [[nodiscard]] const sparse::memory_model& model() const noexcept { return *model_; }
  [[nodiscard]] bool unclean_shutdown() const noexcept { return unclean_; }
  [[nodiscard]] const std::vector<std::string>& repairs() const noexcept { return repairs_; }
  [[nodiscard]] std::mutex& names_mutex() const noexcept { return names_mutex_; }

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

  // A batch (daxalloc/batch.hpp): validate, write to a lane and flush, fence
  // (the commit), apply and flush; a later fence makes the targets durable
  // and retires the lane (fence()); then hand the freed objects back. Throws before anything is
  // written when an action is invalid or the batch is too large.
  void publish(std::span<const reservation> reserved,
               std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
               std::span<void* const> frees);

  // What the heap's fences run on: the region's persistence as it was at
  // open, or what a test swaps in (the crash simulators). The region itself
  // keeps the heap's wrapper, whose every fence first makes lazily
  // invalidated lanes durable.
  void use_persistence(const persistence& beneath) noexcept;

 private:
  explicit heap_impl(std::unique_ptr<sparse::memory_model> model);
  void start(bool repair);
  void rebuild(bool repair);
  void recover_root();
  [[nodiscard]] thread_cache& cache() noexcept;
  [[nodiscard]] thread_cache& cache_slow() noexcept;
  [[nodiscard]] void* take_small(unsigned cls) noexcept;
  [[nodiscard]] void* refill(thread_cache::bin& b, unsigned cls) noexcept;
  void put_small(unsigned cls, void* p) noexcept;
  void push_cached(unsigned cls, void* p) noexcept;
  [[nodiscard]] reservation reserve_slow(std::size_t size) noexcept;
  [[nodiscard]] reservation reserve_pages(std::size_t size) noexcept;
  void flush(thread_cache::bin& b, unsigned cls) noexcept;
  void drain_cache(thread_cache& c) noexcept;
  void cancel_slow(void* p);
  [[nodiscard]] std::optional<std::uint64_t> allocate_pages(std::uint64_t pages);
  bool reclaim();
  [[nodiscard]] sparse::root_slot* slot() const noexcept;
  void replay_lanes();
  [[nodiscard]] std::vector<alloc::allocated_extent> media_extents(
      std::vector<std::string>& problems) const;
  [[nodiscard]] sparse::lane_header* lane(unsigned i) const noexcept;
  [[nodiscard]] unsigned acquire_lanes(unsigned span) noexcept;
  void free_lanes(unsigned i) noexcept;
  // The heap's fence (docs/crash-consistency.md, "Publication in 1 fence"):
  // it also makes durable the targets of every applied lane and retires the
  // lanes whose targets an earlier fence made durable. A full fence (every
  // fence but a publication's commit) returns only when every lane applied
  // before it is retired durably, so that no later store of the caller can
  // be overwritten by a replay.
  // Returns how many fences it took (1 or 2).
  unsigned fence(bool full) noexcept;
  void commit_fence() noexcept;  // fence(false), counted
  void flush_targets(unsigned i) const noexcept;
  [[nodiscard]] bool meets_later_lane(unsigned i, std::uint64_t order) const noexcept;
  // Calls f(bytes, length) for each piece of lane i's inline bytes.
  template <class F>
  void for_each_inline_piece(unsigned i, std::uint64_t count, std::uint64_t total, F&& f) const;
  void apply(const sparse::log_entry* entries, std::size_t n) const noexcept;
  static void fence_flush(void* self, const void* addr, std::size_t len);
  static void fence_drain(void* self);
  static void fence_discard(void* self, const void* addr, std::size_t len);
  [[nodiscard]] std::uint64_t lane_checksum(unsigned i) const noexcept;
  [[nodiscard]] std::uint64_t inline_bytes(unsigned i) const noexcept;  // UINT64_MAX: too many
  [[nodiscard]] bool content_in_bounds(const sparse::lane_header& h) const noexcept;
  // A word a batch may store to: 8-aligned in the heap's memory outside
  // metadata pageblocks, or the name-table slot.
  [[nodiscard]] bool heap_word(const void* p) const noexcept;
  [[nodiscard]] bool log_target(const void* p) const noexcept;
  [[nodiscard]] sparse::page_descriptor* extent_head(const void* p) const noexcept;

  std::unique_ptr<sparse::memory_model> model_;
  alloc::page_allocator pages_;
  alloc::small_allocator small_;
  std::uint64_t id_;
  unsigned registry_slot_ = nr_registry_slots;
  bool unclean_ = false;
  bool opened_ = false;
  std::vector<std::string> repairs_;
  std::mutex root_mutex_;
  mutable std::mutex names_mutex_;
  std::atomic<std::uint64_t> busy_lanes_{0};
  persistence beneath_;
  // Per lane, volatile: a lane is busy from acquire_lanes until its retired
  // header is durable (then free again); `phase` moves writing -> applied
  // (targets flushed by `owner`, not yet known durable) -> retiring (zeroed
  // header flushed, not yet known durable) -> free, each step after a fence.
  // Transitions after `writing` are made under the lane's mutex and checked
  // against `generation`, which acquire_lanes increments.
  enum lane_phase : unsigned { lane_free, lane_writing, lane_applied, lane_retiring };
  struct alignas(64) lane_state {
    std::atomic<unsigned> phase{lane_free};
    std::atomic<std::uint64_t> generation{0};
    std::atomic<const void*> owner{nullptr};
    std::atomic<std::uint64_t> order{0};
    unsigned span = 1;  // consecutive lanes the batch occupies
    std::mutex mutex;
  };
  std::array<lane_state, sparse::nr_lanes> lanes_;
  std::atomic<unsigned> lanes_used_{0};  // bounds the lanes ever acquired
  std::atomic<std::uint64_t> next_order_{1};
  // Applies happen one at a time, in commit order unless reordered.
  std::mutex apply_mutex_;
  std::uint64_t last_applied_ = 0;
  std::mutex caches_mutex_;
  std::vector<std::unique_ptr<thread_cache>> caches_;
  unsigned next_arena_ = 0;  // under caches_mutex_: arenas go round
};

}  // namespace daxalloc::detail
