// The heap: a crash-consistent persistent-memory allocator on a DAX region.
//
//   auto h = daxalloc::heap::create("/mnt/pmem/heap", {.size = 1 << 30});
//   auto* root = h.root<my_root>();           // typed, zero-initialised, durable
//   void* p = h.allocate(100);                // durable when it returns (1 fence)
//   h.deallocate(p);                          // durable when it returns (1 fence)
//   auto r = h.reserve(64);                   // volatile: 0 fences, gone after a crash
//   h.cancel(r);
//
// Durability of plain allocate/deallocate: the allocation is recorded on the
// media when the call returns; if the program crashes before it stores the
// pointer somewhere durable, the object leaks (as with any malloc-like API).
// The atomic publish APIs (allocate-and-publish, batches) are built on top.
//
// A heap is opened read-write by one handle at a time: a second open, in this
// process or another, fails with errc::busy. Any number of read-only handles
// (open_read_only) may share it instead, while no read-write one has it.
// Handles are move-only; destroying a read-write one closes the heap (a clean
// shutdown).
//
// Errors: every call that can fail throws daxalloc::error, and has a form
// taking a std::error_code& last that throws nothing (as std::filesystem): it
// sets the code (comparable with errc or std::errc), keeps the message for
// last_error_message(), and returns an empty handle, a null pointer or an
// empty reservation.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "daxalloc/error.hpp"
#include "daxalloc/export.h"
#include "daxalloc/introspection.hpp"
#include "daxalloc/persist.hpp"
#include "daxalloc/region.hpp"
#include "daxalloc/version.hpp"

namespace daxalloc {

namespace detail {
class heap_impl;
struct heap_access;  // lib/: the library's and its tests' way in; not part of the API
}  // namespace detail
template <class T>
class pptr;
class batch;

struct heap_options {
  std::uint64_t size = 0;      // bytes present after create (rounded up to 2 MiB)
  std::uint64_t max_size = 0;  // address range reserved for growth; 0: 1 TiB (devdax: the device)
  unsigned section_size_bits = 27;  // 27..30: 128 MiB .. 1 GiB sections
  persistence_mode mode = persistence_mode::automatic;
  bool overwrite = false;  // devdax: replace an existing heap
};

struct heap_open_options {
  unsigned section_size_bits = 0;  // 0 accepts any; else the heap must have it
  persistence_mode mode = persistence_mode::automatic;
  // Repair instead of refusing a damaged memmap or slab: each pageblock with
  // an inconsistent page descriptor or slab bitmap is quarantined (its
  // migratetype set to isolate, durably) and never allocated from again. Its
  // bytes stay as they were: nothing published is deleted. What was done is
  // in heap::repairs(). Other damage (superblocks, section map, root slot,
  // redo lanes) is still errc::corrupt. Not with open_read_only (errc::read_only).
  bool repair = false;
  // Wait while another handle has the heap open (read-write, or read-only for
  // a read-write open), instead of failing with errc::busy.
  bool wait_for_lock = false;
  // Open a heap after an unsafe shutdown instead of refusing it with
  // errc::unsafe_shutdown: the heap was not closed cleanly and the DIMMs
  // behind it report another unsafe-shutdown count (or identity) than at its
  // last open, so stores made durable before the power loss may be lost.
  // The open then runs the full check() after recovery and refuses the heap
  // (errc::corrupt) if it finds anything; heap::unsafe_shutdown() says so.
  bool accept_unsafe_shutdown = false;
  // Where the heap's other regions (heap::add_region) are now, by their
  // index in heap::regions() minus one, when they moved since the last
  // open (a devdax device renumbered, a file renamed); an empty path, or
  // none, keeps the recorded one. A read-write open records the new paths.
  std::vector<std::filesystem::path> region_paths{};
};

// What opening a heap found: closed cleanly, recovered after an unclean
// shutdown (lanes replayed, hotplug redone, free lists rebuilt), repaired, or
// nothing: this handle created it (create, open_or_create).
enum class open_outcome { clean, recovered, repaired, created };
[[nodiscard]] DAXALLOC_API const char* to_string(open_outcome outcome) noexcept;

// Whether the media behind a heap can tell an unsafe shutdown
// (heap::shutdown_detection): DIMMs that report an identity and an
// unsafe-shutdown count (libndctl's dirty-shutdown count, through libpmem2).
// Files on tmpfs or a disk, legacy memmap= pmem and emulated NVDIMMs without
// a count cannot: then `note` says why, and an open never refuses the heap.
struct unsafe_shutdown_detection {
  bool available = false;
  std::string device_id;               // the DIMMs' unique ids, concatenated
  std::uint64_t unsafe_shutdowns = 0;  // the sum of their counts, read at this open
  std::string note;                    // why detection is not available
};

// When a publication becomes durable: when publish returns (immediate), or
// at the next heap::sync() (deferred: group commit, daxalloc/batch.hpp).
enum class durability { immediate, deferred };

// A range write of a batch (daxalloc/batch.hpp): n bytes for dst, found at
// `at` in the batch's copy of what it was given.
struct range_write {
  void* dst = nullptr;
  std::size_t at = 0;
  std::size_t n = 0;
};

// The bytes a copy-in reservation was filled from (the first `bytes` of
// the object): its redo-lane copy is taken from there (daxalloc/batch.hpp).
struct copy_source {
  const void* from = nullptr;
  std::size_t bytes = 0;
};

// A volatile reservation: memory that is yours until you cancel it or (with
// the publish API) make it durable. A crash forgets it; nothing leaks.
//
// Move-only, so that one reservation is cancelled or published once: moving
// empties the source, and there are no copies (two copies cancelled would
// hand the same memory out twice). A reservation does not know its heap and
// its destructor does nothing: one dropped without cancel or publish stays
// reserved, in volatile memory only, until the heap closes (like a leak that
// the next open forgets). `ptr` and `size` are what heap::reserve handed
// out; the explicit constructor re-forms a reservation from them (a sized
// cancel), and cancel and batch::adopt refuse one that is not a reservation
// of their heap (errc::invalid_argument).
//
// Threads: a reservation is a plain value; it may be cancelled or adopted by
// any thread, but not by two at once.
struct reservation {
  void* ptr = nullptr;
  std::size_t size = 0;

  reservation() noexcept = default;
  explicit reservation(void* object, std::size_t bytes) noexcept : ptr(object), size(bytes) {}
  reservation(reservation&& other) noexcept
      : ptr(std::exchange(other.ptr, nullptr)), size(std::exchange(other.size, 0)) {}
  // A reservation assigned over is dropped (see above), not cancelled.
  reservation& operator=(reservation&& other) noexcept {
    ptr = std::exchange(other.ptr, nullptr);
    size = std::exchange(other.size, 0);
    return *this;
  }
  reservation(const reservation&) = delete;
  reservation& operator=(const reservation&) = delete;
  ~reservation() = default;

  explicit operator bool() const noexcept { return ptr != nullptr; }
};

struct heap_stats {
  std::uint64_t present_bytes = 0;    // present subsections, metadata included
  std::uint64_t usable_bytes = 0;     // present minus head and memmap
  std::uint64_t metadata_bytes = 0;   // head + memmap
  std::uint64_t allocated_bytes = 0;  // durable allocations, at their usable size (class, pages)
  std::uint64_t allocated_objects = 0;
  std::uint64_t free_bytes = 0;  // pages the page allocator can hand out
  std::uint64_t largest_free_bytes = 0;
  double fragmentation = 0;        // 1 - largest_free / free
  std::uint64_t slab_bytes = 0;    // pages held by slabs
  std::uint64_t extent_bytes = 0;  // pages held by large objects
  // Movable objects (allocate_movable): allocated, their slots' bytes
  // (headers included), the pages their slabs hold; and what compact() did
  // since open: passes finished, bytes of objects moved, slab bytes freed.
  std::uint64_t movable_objects = 0;
  std::uint64_t movable_bytes = 0;
  std::uint64_t movable_slab_bytes = 0;
  std::uint64_t compaction_passes = 0;
  std::uint64_t compaction_moved_bytes = 0;
  std::uint64_t compaction_released_bytes = 0;
  // Pins by address (heap::pin(p)), now: objects pinned, the pins and
  // bytes on them, and of them the ones freed while pinned, whose memory
  // waits for their last unpin.
  std::uint64_t pinned_objects = 0;
  std::uint64_t pins = 0;
  std::uint64_t pinned_bytes = 0;
  std::uint64_t pinned_freed_objects = 0;
  std::uint64_t pinned_freed_bytes = 0;
  // Since open, volatile: what aligned allocations and reservations took
  // beyond the class or page-rounded size of the same unaligned request
  // (frees do not subtract it: a freed object's alignment is not kept).
  std::uint64_t alignment_waste_bytes = 0;
  std::array<std::uint64_t, 8> pageblocks_by_migratetype{};  // present pageblocks per type
  // allocated_bytes by the migratetype of the pageblock each allocation
  // starts in (movable: movable objects; unmovable: slabs and page extents)
  std::array<std::uint64_t, 8> allocated_bytes_by_migratetype{};
  struct size_class_stats {
    std::uint32_t size;
    std::uint64_t slabs, allocated, capacity;
    std::uint64_t slab_bytes;  // pages its slabs hold
  };
  std::vector<size_class_stats> size_classes;  // classes with at least one slab
  // Per NUMA node with memory in the heap (regions() gives each region's
  // node; -1: memory whose node is not known), lowest node first.
  struct node_stats {
    int node = -1;
    unsigned regions = 0;  // the heap's own file or device counts as one
    // Arenas that take this node's memory first; 0 on every node when the
    // heap's memory is all of one node (no placement by node).
    unsigned arenas = 0;
    std::uint64_t present_bytes = 0;  // present subsections, metadata included
    std::uint64_t free_bytes = 0;     // pages the page allocator can hand out
    std::uint64_t slab_bytes = 0;     // pages held by slabs
    std::uint64_t extent_bytes = 0;   // pages held by large objects
  };
  std::vector<node_stats> nodes;
  persist_counters this_thread;   // flushes and fences of the calling thread
  bool unclean_shutdown = false;  // the last close before this open did not happen
};

// What the recovery of a read-write open would do, as a read-only open found
// it (a read-only open recovers nothing: it reads the media as they are).
// Empty for a read-write handle, which did it.
struct recovery_plan {
  bool unclean_shutdown = false;   // the last read-write user did not close the heap
  unsigned lanes_to_replay = 0;    // committed batches whose redo lanes would be applied
  unsigned lanes_to_clear = 0;     // lane headers that would be cleared (replayed or torn)
  std::vector<std::string> steps;  // every step that writes, one line each, in order
  [[nodiscard]] bool empty() const noexcept { return steps.empty(); }
};

// Where a bad block lies: in memory (objects and free pages), the head
// (superblocks, section map, redo lanes, slots), the memmap (the memmap area,
// or a span's block inside the span), or memory that is not present.
enum class bad_block_location { memory, head, memmap, not_present };
// "memory", "head", "memmap", "not_present".
[[nodiscard]] DAXALLOC_API const char* to_string(bad_block_location location) noexcept;

// A bad block of the media (an uncorrectable error the device or the kernel
// knows of: address range scrub, a failed load, the block device's
// badblocks) inside the heap, as open found it (docs/media-errors.md).
struct bad_block {
  std::uint64_t offset = 0;  // bytes from the heap's start
  std::uint64_t length = 0;  // bytes
  bad_block_location location = bad_block_location::memory;
  // Its pageblocks are quarantined (migratetype isolate: kept, never
  // allocated from again); memory only.
  bool quarantined = false;
  // Allocated objects (heap offsets of their first byte) that overlap it:
  // their bytes there are lost. After a repair cleared the block they read
  // as zeros; before, a load of them is a SIGBUS (heap::read_guarded).
  std::vector<std::uint64_t> objects;
  // A slab's bitmap lies in it: which of the slab's objects were allocated
  // is unknown, and `objects` names the slab's first object only.
  bool objects_unknown = false;
  // Cleared by this open (heap_open_options::repair): the range reads as
  // zeros and is no longer bad.
  bool cleared = false;
};

// heap::compact: how much one call may do (0: no limit). An engine runs it
// in small steps from a background thread: a step stops at the first
// object boundary past either limit.
struct compact_options {
  std::uint64_t max_bytes = 0;              // bytes of objects moved
  std::chrono::nanoseconds time_budget{0};  // wall-clock time
};

// What one heap::compact call did.
struct compact_result {
  std::uint64_t objects_moved = 0;
  std::uint64_t bytes_moved = 0;     // the objects' usable bytes
  std::uint64_t objects_pinned = 0;  // left where they were: pinned (heap::pin)
  std::uint64_t objects_kept = 0;    // left: their owner word does not refer to them
  std::uint64_t slabs_released = 0;
  std::uint64_t bytes_released = 0;  // the released slabs' pages, back in the page pool
  bool finished = false;             // the pass reached every movable slab (no budget cut it)
  double seconds = 0;
};

template <class T>
class pin_guard;

// Threads: every member may be called from several threads at once on an
// open heap, except close(), destruction and move assignment, which need the
// heap quiet (no call in flight, no batch in use). Named-object calls take a
// mutex of their own; check() wants a quiet heap to report no transient
// problems.
//
// An empty handle — default-constructed, closed, or moved from — throws
// errc::invalid_argument from every member (nothing is dereferenced), except
// close() and destruction (which do nothing) and the std::nothrow forms of
// allocate and reserve (which return nullptr or an empty reservation).
class DAXALLOC_API heap {
 public:
  [[nodiscard]] static heap create(const std::filesystem::path& path, const heap_options& options);
  [[nodiscard]] static heap open(const std::filesystem::path& path,
                                 const heap_open_options& options = {});
  // O_RDONLY and PROT_READ, under a shared lock: many readers at once, none
  // while a read-write handle has the heap (errc::busy, both ways). Nothing
  // is written: no recovery (pending_recovery() says what a read-write open
  // would do), no shutdown marker, no superblock generation. Calls that write
  // (allocate, deallocate, reserve, cancel, root() of a heap without one,
  // batches, named-object creation and destruction, hot_add, hot_remove) are
  // errc::read_only; a store into the mapping is a SIGSEGV.
  [[nodiscard]] static heap open_read_only(const std::filesystem::path& path,
                                           const heap_open_options& options = {});
  // Opens the heap at `path`, or creates it with `create_options` when there
  // is none: no file, an empty file, or a devdax device without a heap. The
  // choice is made under the heap's lock, so of processes racing, exactly
  // one creates and the others open what it made (or get errc::busy while it
  // has the heap open, unless open_options.wait_for_lock). outcome() is
  // open_outcome::created for the one that created it.
  [[nodiscard]] static heap open_or_create(const std::filesystem::path& path,
                                           const heap_options& create_options,
                                           const heap_open_options& open_options = {});

  // The same, without exceptions: an empty handle (is_open() false) and `ec`
  // set on failure.
  [[nodiscard]] static heap create(const std::filesystem::path& path, const heap_options& options,
                                   std::error_code& ec) noexcept;
  [[nodiscard]] static heap open(const std::filesystem::path& path, std::error_code& ec) noexcept;
  [[nodiscard]] static heap open(const std::filesystem::path& path,
                                 const heap_open_options& options, std::error_code& ec) noexcept;
  [[nodiscard]] static heap open_read_only(const std::filesystem::path& path,
                                           std::error_code& ec) noexcept;
  [[nodiscard]] static heap open_read_only(const std::filesystem::path& path,
                                           const heap_open_options& options,
                                           std::error_code& ec) noexcept;
  [[nodiscard]] static heap open_or_create(const std::filesystem::path& path,
                                           const heap_options& create_options,
                                           std::error_code& ec) noexcept;
  [[nodiscard]] static heap open_or_create(const std::filesystem::path& path,
                                           const heap_options& create_options,
                                           const heap_open_options& open_options,
                                           std::error_code& ec) noexcept;

  heap() noexcept;  // an empty handle, as after close()
  heap(heap&& other) noexcept;
  heap& operator=(heap&& other) noexcept;
  heap(const heap&) = delete;
  heap& operator=(const heap&) = delete;
  ~heap();
  void close();  // records a clean shutdown (read-write); the handle is empty afterwards
  [[nodiscard]] bool is_open() const noexcept { return impl_ != nullptr; }

  // Durable allocation: the object is allocated on the media when this
  // returns. Objects up to 64 KiB come from slabs (8-byte aligned; 16-byte when the
  // size class is a multiple of 16),
  // larger ones are page-aligned extents; no size cap below the heap size.
  [[nodiscard]] void* allocate(std::size_t size);  // throws errc::out_of_space
  [[nodiscard]] void* allocate(std::size_t size,
                               std::nothrow_t) noexcept;  // nullptr when out of space
  void deallocate(void* p);  // durable; errc::invalid_argument for a pointer not allocated here
  // Without exceptions: nullptr and `ec` set (errc::out_of_space, read_only,
  // invalid_argument on a closed handle); the fast path is allocate's.
  [[nodiscard]] void* allocate(std::size_t size, std::error_code& ec) noexcept;
  void deallocate(void* p, std::error_code& ec) noexcept;

  // Aligned allocation and reservation: the object's address is a multiple
  // of `alignment`, a power of two up to max_alignment (else
  // errc::invalid_argument; nullptr or an empty reservation for the
  // std::nothrow forms). Up to 64 bytes it comes from a size class whose
  // objects all have it (the request's own class when that one does: no
  // cost); beyond, it is an extent of whole pages at an aligned address (a
  // page at least; above 2 MiB, wholly free pageblocks starting at one, so
  // errc::out_of_space when none is: each 1 GiB span holds its memmap, and
  // the mapping is only 2 MiB aligned). Freed,
  // cancelled and published as any object (deallocate(p), cancel,
  // batch::adopt, batch::defer_free); a reservation's size is the class's
  // or the pages' (reservation::size). stats().alignment_waste_bytes adds
  // up what alignment costs beyond the unaligned form.
  static constexpr std::size_t max_alignment = std::size_t{1} << 30;  // 1 GiB
  [[nodiscard]] void* allocate(std::size_t size, std::size_t alignment);
  [[nodiscard]] void* allocate(std::size_t size, std::size_t alignment, std::nothrow_t) noexcept;
  [[nodiscard]] void* allocate(std::size_t size, std::size_t alignment,
                               std::error_code& ec) noexcept;
  [[nodiscard]] reservation reserve(std::size_t size, std::size_t alignment);
  [[nodiscard]] reservation reserve(std::size_t size, std::size_t alignment,
                                    std::nothrow_t) noexcept;
  [[nodiscard]] reservation reserve(std::size_t size, std::size_t alignment,
                                    std::error_code& ec) noexcept;

  // Volatile reservation (0 fences) and its cancellation. cancel(r) empties
  // r; an empty r is a no-op. errc::invalid_argument, and nothing changes,
  // for a reservation that is not one of this heap (another heap's, or a
  // pointer and size that reserve did not hand out here).
  [[nodiscard]] reservation reserve(std::size_t size, std::nothrow_t) noexcept;
  [[nodiscard]] reservation reserve(std::size_t size);
  [[nodiscard]] reservation reserve(std::size_t size, std::error_code& ec) noexcept;
  void cancel(reservation& r);
  // Cancels by pointer alone (the size class comes from the object's page,
  // as free() finds it): errc::invalid_argument for a pointer that is not
  // the start of a reservable object of this heap. Cancelling something not
  // reserved (allocated, or cancelled already) is undefined, as free() twice.
  void cancel(void* p);
  void cancel(void* p, std::error_code& ec) noexcept;

  // Atomic publication (defined in daxalloc/batch.hpp; 1 fence each, 2 for
  // objects above 4 KiB; none when deferred, until sync()): after a crash
  // either the object is allocated and `dest` points to it, or neither
  // happened. `dest` must lie in the heap. The copy-in form fills the
  // object from src with non-temporal stores.
  template <class T, class Ctor>
  T* allocate_publish(pptr<T>& dest, std::size_t size, Ctor&& ctor,
                      durability d = durability::immediate);
  template <class T>
  T* allocate_publish(pptr<T>& dest, const void* src, std::size_t size,
                      durability d = durability::immediate);
  template <class T, class... Args>
  T* make_published(pptr<T>& dest, Args&&... args);
  template <class T>
  void free_clear(pptr<T>& dest, durability d = durability::immediate);
  // Without exceptions of the library's (ctor's own still propagate): nullptr
  // and `ec` set; nothing happened.
  template <class T, class Ctor>
  T* allocate_publish(pptr<T>& dest, std::size_t size, Ctor&& ctor, std::error_code& ec);
  template <class T>
  void free_clear(pptr<T>& dest, std::error_code& ec) noexcept;
  // Publishes every deferred batch queued so far (any thread's) with one
  // fence; durable when it returns. No fence when nothing is queued.
  void sync();

  // Named objects, as in Boost.Interprocess: construct<T>("name")(args...)
  // creates the object (or `count` of them), its name and its index entry in
  // one published batch: after a crash it exists completely or not at all.
  // errc::already_exists if the name is taken (find_or_construct returns the
  // existing one); find and destroy check the type (errc::invalid_argument on
  // a mismatch). Lookups scan the index: O(number of names).
  template <class T>
  [[nodiscard]] auto construct(std::string_view name, std::size_t count = 1) {
    return named_proxy<T>{this, name, count, false};
  }
  template <class T>
  [[nodiscard]] auto find_or_construct(std::string_view name, std::size_t count = 1) {
    return named_proxy<T>{this, name, count, true};
  }
  template <class T>
  [[nodiscard]] std::pair<T*, std::size_t> find(std::string_view name) const {
    auto [p, n] = named_find(name, type_tag<T>(), sizeof(T));
    return {static_cast<T*>(p), n};
  }
  // Runs the destructors, then frees the objects and the name atomically.
  template <class T>
  bool destroy(std::string_view name) {
    return named_destroy(name, type_tag<T>(), sizeof(T), [](void* p, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) static_cast<T*>(p)[i].~T();
    });
  }
  struct named_object {
    std::string name;
    void* object;
    std::size_t count;
  };
  [[nodiscard]] std::vector<named_object> named_objects() const;

  template <class T>
  struct named_proxy {
    heap* owner;
    std::string_view name;
    std::size_t count;
    bool find_existing;
    template <class... Args>
    T* operator()(Args&&... args) const {
      return static_cast<T*>(
          owner->named_create(name, type_tag<T>(), sizeof(T), count, find_existing, [&](void* p) {
            std::size_t built = 0;
            try {
              for (; built < count; ++built) ::new (static_cast<T*>(p) + built) T(args...);
            } catch (...) {
              while (built) static_cast<T*>(p)[--built].~T();
              throw;
            }
          }));
    }
  };

  // The root object: created zero-filled on first use, found again after
  // reopen. errc::invalid_argument when the stored root has another size;
  // errc::read_only for a read-only heap that has no root yet.
  [[nodiscard]] void* root(std::size_t size);
  template <class T>
  [[nodiscard]] T* root() {
    return static_cast<T*>(root(sizeof(T)));
  }
  [[nodiscard]] void* root(std::size_t size, std::error_code& ec) noexcept;
  template <class T>
  [[nodiscard]] T* root(std::error_code& ec) noexcept {
    return static_cast<T*>(root(sizeof(T), ec));
  }

  // Online growth and shrinking (2 MiB-aligned spans of byte offsets).
  void hot_add(std::uint64_t offset, std::uint64_t length);
  void hot_remove(std::uint64_t offset, std::uint64_t length);
  void hot_add(std::uint64_t offset, std::uint64_t length, std::error_code& ec) noexcept;
  void hot_remove(std::uint64_t offset, std::uint64_t length, std::error_code& ec) noexcept;

  // ---- movable objects (docs/api.md, "Movable objects") ----
  // A movable object has one owner: a pptr in the heap (outside the object)
  // that refers to it, recorded in a 16-byte header before the object. It
  // is allocated and published into its owner in one batch (1 fence), and
  // compact() may move it: copy it to another slot and, in one committed
  // batch, point the owner at the copy and free the original. So: reach a
  // movable object only through its owner; hold its address only while it
  // is pinned (pin()), or while no compact() can run. A movable object is
  // moved by copying its bytes: it holds no pptr except owners of its own
  // movable children (those are rewritten when it moves). Up to
  // max_movable_size bytes (errc::too_large); 16-byte aligned. Free one
  // with free_clear(owner); deallocate(p) frees it too, and leaves the owner.
  static constexpr std::size_t max_movable_size = 64 * 1024 - 16;
  template <class T, class Ctor>
  T* allocate_movable(pptr<T>& owner, std::size_t size, Ctor&& ctor);
  template <class T, class... Args>
  T* make_movable(pptr<T>& owner, Args&&... args);
  // Hands the object `from` refers to over to `to` (which must be null):
  // to = it, from = null, its header names `to`, all in one batch.
  template <class T>
  void move_owner(pptr<T>& from, pptr<T>& to) {
    move_owner_word(reinterpret_cast<std::uint64_t*>(&from), reinterpret_cast<std::uint64_t*>(&to));
  }
  [[nodiscard]] bool is_movable(const void* p) const;
  // The owner word a movable object's header names (null: p is not a
  // movable object of this heap).
  [[nodiscard]] const void* owner_of(const void* p) const;
  // Moves movable objects out of sparsely used slabs into denser ones at
  // lower addresses (the kernel's two compaction scanners: objects from the
  // top of each size class's slabs, free slots from the bottom), one
  // committed batch per object, and releases the slabs that empty.
  // Pinned objects stay, and their pageblock gets the compaction skip bit
  // (passed over until a pass finishes). Incremental: a call cut short by
  // the budget resumes where it stopped. One compaction at a time runs.
  compact_result compact(const compact_options& options = {});
  // Hot-removes the wholly free memory at the top of the heap (after a
  // compact(), the memory movable objects left), down to the first
  // allocated or absent subsection, and gives its storage back to the file
  // system where it allows (a punched hole; devdax keeps it). Returns the
  // bytes removed (0: the top subsection holds something). As hot_remove:
  // objects other threads cache keep their slabs.
  std::uint64_t trim();
  // Pins the object `owner` refers to (null: none): until unpin, compact()
  // does not move it. Returns its address. Counted: pins nest.
  template <class T>
  [[nodiscard]] pin_guard<T> pin(const pptr<T>& owner);
  // Releases a pin of either kind (this one, or pin(p) below);
  // errc::invalid_argument when p is not pinned.
  void unpin(const void* p);
  void unpin(const void* p, std::error_code& ec) noexcept;

  // ---- pins by address (docs/api.md, "Pins and direct I/O") ----
  // The role of a ZONE_DEVICE page's reference count: pin the allocated
  // object that starts at p while the kernel or a device uses its memory
  // (an O_DIRECT read or write, an RDMA registration). Counted: pins nest.
  // Freeing a pinned object (deallocate, a batch, free_clear) is durable at
  // once, but its memory is reused only after its last unpin (the
  // dev_pagemap's page_free callback); hot_remove of a span with pins in it
  // is errc::busy, naming how many. Pins are volatile: a crash or close
  // drops them, and a freed object is then simply free. errc::invalid_argument
  // for p that is not the start of an allocated object of this heap, for a
  // movable object (pin it through its owner), and for one freed while
  // pinned. For I/O buffers, allocate(size, 4096) (or 2 MiB) gives whole
  // aligned pages. Costs a lock of one of 64 shards; no fence.
  template <class T>
  [[nodiscard]] pin_guard<T> pin(T* p) {
    pin_object(p);
    return pin_guard<T>(*this, p);
  }
  // Pins held on the object at p now (pins by address; 0 when none).
  [[nodiscard]] std::uint32_t pin_count(const void* p) const;
  // The record of each region the heap's range is made of (the kernel's
  // struct dev_pagemap: type, alignment, node, and the pins in it): the
  // heap's own file or device first, then the regions added, in the order
  // they were added (each below the one before).
  [[nodiscard]] std::vector<region_info> regions() const;

  // ---- several devices (docs/api.md, "Regions and nodes") ----
  // Hot-adds a whole file or devdax device to the heap online, as the
  // kernel's add_memory of a new DIMM: it is mapped as a run of 1 GiB spans
  // at the top of the heap's range (below the regions added before), its
  // first 2 MiB get a label naming the heap, the superblock records it
  // (path, node, identity), and the rest of it becomes memory. A file is
  // created with `size` bytes when missing (size 0: the file's size, or the
  // whole device). All or nothing: after a crash the next open finishes an
  // add that was recorded. errc::out_of_space when the range has no room
  // above the heap's own memory (create the heap with a larger max_size),
  // errc::too_large beyond 8 regions, errc::invalid_argument for a member
  // whose persistence differs (a page-cache file beside devdax), those of
  // region::open. Returns its record.
  // `node`: the region's NUMA node when sysfs cannot tell (a file on a
  // disk or tmpfs; emulated NUMA), -1: what sysfs says.
  region_info add_region(const std::filesystem::path& path, std::uint64_t size = 0, int node = -1);
  // Placement by node: each arena of the allocators serves one node that
  // has memory in the heap and takes new pageblocks from that node's
  // regions first, then from the nearer nodes' (the kernel's zonelist,
  // by the SLIT distances in sysfs). A thread allocates through an arena of
  // the node it runs on when it first allocates (or the nearest node with
  // memory); prefer_node(n) moves the calling thread to an arena of node n
  // (errc::not_found when no region of the heap is of node n). With one
  // node, or none known, nothing changes.
  void prefer_node(int node);
  // Removes an added region online: its memory is hot-removed (movable
  // objects migrate out; anything else refuses it with errc::in_use, pins
  // with errc::busy, as hot_remove), then its record goes and it is unmapped.
  // errc::not_found for a path that is not one of the heap's added regions.
  void remove_region(const std::filesystem::path& path);

  [[nodiscard]] heap_stats stats() const;
  [[nodiscard]] open_outcome outcome() const;
  // What this open repaired (heap_open_options::repair), one line each, and
  // the pageblocks it quarantined for bad blocks.
  [[nodiscard]] const std::vector<std::string>& repairs() const;
  // The media's bad blocks inside the heap when it was opened, in offset
  // order; empty when there are none or the media cannot list them (a file
  // on tmpfs).
  [[nodiscard]] const std::vector<bad_block>& bad_blocks() const;
  // This open found an unsafe shutdown and went on
  // (heap_open_options::accept_unsafe_shutdown): check() found nothing after
  // recovery, but data written before the power loss may still be lost.
  [[nodiscard]] bool unsafe_shutdown() const;
  // What the DIMMs behind the heap said at this open (see the struct).
  [[nodiscard]] unsafe_shutdown_detection shutdown_detection() const;
  [[nodiscard]] bool read_only() const;  // opened by open_read_only
  // What a read-write open would recover (read-only handles); empty otherwise.
  [[nodiscard]] const recovery_plan& pending_recovery() const;
  // Every invariant of the persistent state and of the volatile state rebuilt
  // from it; one line per violation, empty when sound.
  [[nodiscard]] std::vector<std::string> check() const;

  // The mapping (errc::invalid_argument on an empty handle, as every member).
  [[nodiscard]] std::byte* base() const;
  // Bytes of the heap's own file or device mapped from base(); the regions
  // added to it lie above, where regions() says.
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::uint64_t offset_of(const void* p) const;
  [[nodiscard]] void* at(std::uint64_t offset) const;
  [[nodiscard]] std::size_t usable_size(
      const void* p) const;  // the slot's size in a slab (free or not), the extent's size, else 0
  [[nodiscard]] const persistence& persist() const;
  [[nodiscard]] const region& media() const;

  // Copies n bytes of the heap's memory at src to dst through a guard: a
  // load from poisoned media (a machine check), a bad block of an fsdax
  // file or a page beyond the file's end (SIGBUS) does not end the process
  // but throws errc::media_error naming the heap offset of the first
  // unreadable byte, after copying what precedes it. A bad block the
  // media listed at open is not loaded at all, and reported the same way. errc::invalid_argument
  // when [src, src+n) is not inside the mapping. A plain load of the application's own is not
  // guarded: a media error there raises SIGBUS as it would without daxalloc (docs/media-errors.md).
  // No fence; loads in cache-line order.
  void read_guarded(void* dst, const void* src, std::size_t n) const;
  // Returns the bytes copied: n, or on errc::media_error those before the
  // first unreadable byte (0 on any other error).
  std::size_t read_guarded(void* dst, const void* src, std::size_t n,
                           std::error_code& ec) const noexcept;

  // Iteration and introspection (daxalloc/introspection.hpp): read-only, so
  // also on a read-only handle. fn(const X_info&) is called once per item in
  // address order, and returns void, or bool: false stops the iteration.
  // Exceptions from fn propagate. Every allocated object (durable
  // allocations, as after a crash):
  template <class F>
  void for_each_object(F&& fn) const {
    visit_objects(detail::make_visitor<object_info>(fn));
  }
  // Every present section (one with a present subsection):
  template <class F>
  void for_each_section(F&& fn) const {
    visit_sections(detail::make_visitor<section_info>(fn));
  }
  // Every pageblock of every present section, present or not:
  template <class F>
  void for_each_pageblock(F&& fn) const {
    visit_pageblocks(detail::make_visitor<pageblock_info>(fn));
  }
  [[nodiscard]] heap_layout layout() const;
  // The on-media format version this library reads and writes.
  [[nodiscard]] static std::uint32_t format_version() noexcept;

  // Removes the heap at `path`: deletes a file, or, on a devdax device (only
  // with invalidate_device: errc::invalid_argument otherwise), clears both
  // superblocks durably, so that the device holds no heap (its data stay).
  // Taken under the heap's exclusive lock (errc::busy while it is open);
  // refuses anything that is not a heap (errc::corrupt). Returns true when a
  // file was deleted, false when a device's heap was invalidated.
  static bool remove(const std::filesystem::path& path, bool invalidate_device = false);
  // Converts the heap at `path`, of format version 2 to 7, to this
  // library's (8), in place and crash-safely (a crash leaves the old format,
  // to be upgraded again, or the new one). Slabs made by format 4 and older
  // keep their bitmap encoding and are allocated from as before; new slabs
  // are format 8's. A format 6 or 7 heap only gets new superblocks. Returns what it did; empty when
  // the heap already has this format. errc::older_format (nothing written) for another version or a
  // format 2 or 3 heap not closed cleanly (open it with the library that wrote it, close it, then
  // upgrade; a format 4 heap left by a crash is upgraded and recovered by the next open);
  // errc::busy while it is open.
  static std::vector<std::string> upgrade(const std::filesystem::path& path);

 private:
  friend class batch;
  friend struct detail::heap_access;
  // DAXALLOC_LOCAL: members that no inline code here calls stay in the library.
  DAXALLOC_LOCAL explicit heap(std::unique_ptr<detail::heap_impl> impl);
  [[nodiscard]] DAXALLOC_LOCAL detail::heap_impl& live() const;  // invalid_argument once closed
  void visit_objects(detail::visitor<object_info> fn) const;
  void visit_sections(detail::visitor<section_info> fn) const;
  void visit_pageblocks(detail::visitor<pageblock_info> fn) const;
  // errc::read_only on a read-only heap (invalid_argument once closed).
  DAXALLOC_LOCAL void refuse_writes(const char* operation) const;
  [[nodiscard]] bool writable(const char* operation, std::error_code& ec) const noexcept;
  // allocate_publish and free_clear without a batch object (batch.hpp):
  // publishes r with *dest = value (r is cancelled if that fails); with src,
  // r is filled from it first (copy-in). publish_free: frees object (null:
  // nothing) with *dest = 0.
  void publish_reserved(reservation&& r, std::uint64_t* dest, std::uint64_t value, durability d,
                        const void* src = nullptr);
  void publish_free(std::uint64_t* dest, void* object, durability d);
  // free_clear(dest, ec) of a pptr at dest.
  void free_clear_word(std::uint64_t* dest, std::error_code& ec) noexcept;
  void* allocate_movable_word(std::size_t size, std::uint64_t* owner,
                              void (*construct)(void* object, void* context), void* context);
  void move_owner_word(std::uint64_t* from, std::uint64_t* to);
  void* pin_word(const std::uint64_t* owner);
  std::uint32_t pin_object(const void* p);  // pin(p); returns the count after
  template <class T>
  static std::uint64_t type_tag() noexcept {
    // Same type, same ABI, same tag; sizeof guards against layout changes.
    std::uint64_t h = 1469598103934665603ull ^ sizeof(T);
    for (const char* c = typeid(T).name(); *c; ++c)
      h = (h ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
    return h;
  }
  void* named_create(std::string_view name, std::uint64_t type, std::size_t size, std::size_t count,
                     bool find_existing, const std::function<void(void*)>& init);
  // size: sizeof the type, which bounds the stored count of objects.
  [[nodiscard]] std::pair<void*, std::size_t> named_find(std::string_view name, std::uint64_t type,
                                                         std::size_t size) const;
  bool named_destroy(std::string_view name, std::uint64_t type, std::size_t size,
                     const std::function<void(void*, std::size_t)>& fini);
  std::unique_ptr<detail::heap_impl> impl_;
};

// A pin (heap::pin of an owner, or of an address), released at destruction.
template <class T>
class pin_guard {
 public:
  pin_guard() noexcept = default;
  pin_guard(heap& h, T* p) noexcept : heap_(&h), p_(p) {}
  pin_guard(pin_guard&& o) noexcept
      : heap_(std::exchange(o.heap_, nullptr)), p_(std::exchange(o.p_, nullptr)) {}
  pin_guard& operator=(pin_guard&& o) noexcept {
    if (this != &o) {
      reset();
      heap_ = std::exchange(o.heap_, nullptr);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  pin_guard(const pin_guard&) = delete;
  pin_guard& operator=(const pin_guard&) = delete;
  ~pin_guard() { reset(); }
  // Releases the pin (a heap closed meanwhile dropped it already).
  void reset() noexcept {
    if (p_ != nullptr) {
      std::error_code ignored;
      heap_->unpin(p_, ignored);
    }
    p_ = nullptr;
  }
  // Keeps the pin, for an unpin(p) of the caller's later; returns p.
  T* release() noexcept {
    heap_ = nullptr;
    return std::exchange(p_, nullptr);
  }
  [[nodiscard]] T* get() const noexcept { return p_; }
  T* operator->() const noexcept { return p_; }
  std::add_lvalue_reference_t<T> operator*() const noexcept { return *p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  heap* heap_ = nullptr;
  T* p_ = nullptr;
};

template <class T, class Ctor>
T* heap::allocate_movable(pptr<T>& owner, std::size_t size, Ctor&& ctor) {
  using F = std::remove_reference_t<Ctor>;
  return static_cast<T*>(allocate_movable_word(
      size, reinterpret_cast<std::uint64_t*>(&owner),
      [](void* object, void* context) { (*static_cast<F*>(context))(static_cast<T*>(object)); },
      const_cast<void*>(static_cast<const void*>(std::addressof(ctor)))));
}

template <class T, class... Args>
T* heap::make_movable(pptr<T>& owner, Args&&... args) {
  return allocate_movable(owner, sizeof(T),
                          [&](T* at) { ::new (at) T(std::forward<Args>(args)...); });
}

template <class T>
pin_guard<T> heap::pin(const pptr<T>& owner) {
  return pin_guard<T>(*this,
                      static_cast<T*>(pin_word(reinterpret_cast<const std::uint64_t*>(&owner))));
}

}  // namespace daxalloc

#include "daxalloc/batch.hpp"  // the templates declared above
