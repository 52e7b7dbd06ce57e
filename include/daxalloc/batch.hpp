// Reserve / publish / cancel batches, and the atomic allocate-and-publish and
// free-and-clear built on them (the action API of libpmemobj).
//
//   daxalloc::batch b(heap);
//   auto* node = b.make<node_t>(key, value);      // volatile until publish
//   b.set(parent->next, node);                    // 8-byte store, applied at publish
//   b.set(&root->count, root->count + 1);
//   b.defer_free(old);                            // freed at publish
//   b.publish();                                  // all or nothing, 1 fence
//
// publish() writes the batch to a redo-log lane (non-temporal stores), with
// a copy of its reserved objects' bytes when they are 4 KiB or less (larger
// ones get a fence of their own first), and fences once: the commit. Then
// it applies the batch and returns; the heap's later fences make the
// applied stores durable and retire the lane. After a crash, open replays
// every committed lane in commit order, so either every action of the batch
// happened or none did. Reserved objects are flushed in full at publish,
// after your constructor wrote them; reserve_copy() objects were written
// with non-temporal stores and need no flush. A batch holds at most
// max_actions actions (reservations + stores + writes + frees); more is
// errc::too_large. Destroying an unpublished batch cancels it. A batch on a
// read-only heap is refused when it is made (errc::read_only), as on a
// closed one (errc::invalid_argument). Act on what a batch published from
// other threads only after publish() returned, and make stores to the words
// it wrote, and writes into the objects it published, durable with
// heap::persist() (docs/crash-consistency.md, "Publication in 1 fence").
//
// Group commit: publish(durability::deferred) checks the batch and queues
// it; heap::sync() publishes everything queued (by any thread) as one batch,
// with one fence. A deferred batch takes effect at sync(): its stores are
// applied and its frees done then, not before (its reserved objects are
// yours meanwhile). After a crash the deferred batches that survive are a
// prefix of those queued, in order, and all that were queued before a
// sync() that returned. A queue that would not fit one lane (252 actions,
// 4 KiB of contents) is published by the publish() that would overflow it.
//
// A batch belongs to the heap that is open in its handle when the batch is
// made, not to the handle: moving the handle does not disturb it. Once that
// heap is closed (close(), the handle destroyed or assigned over), every
// call on the batch throws errc::invalid_argument and cancel() and the
// destructor do nothing (its reservations went with the heap): a batch can
// outlive its heap, but it can no longer act. Making a batch on an empty
// handle is errc::invalid_argument.
//
// Threads: a batch is not synchronised; use it from one thread at a time
// (it may move between threads). Batches of one heap on different threads
// publish concurrently.
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"

namespace daxalloc {

// Threads: one thread at a time per batch (see above); any number of
// batches of one heap at once.
class DAXALLOC_API batch {
 public:
  static constexpr std::size_t max_actions = 252;
  static constexpr std::size_t max_write_bytes = 64 * 1024;  // write(): a split of 4 KiB nodes

  explicit batch(heap& h);
  batch(batch&& other) noexcept;
  batch& operator=(batch&&) = delete;
  batch(const batch&) = delete;
  ~batch();

  // Volatile memory that becomes allocated at publish (errc::out_of_space).
  [[nodiscard]] void* reserve(std::size_t size);
  template <class T, class... Args>
  [[nodiscard]] T* make(Args&&... args) {
    return ::new (reserve(sizeof(T))) T(std::forward<Args>(args)...);
  }
  // reserve(size), filled with a copy of src (the engine's value already
  // sits in a buffer: no constructor). From 256 bytes up the copy is made
  // with non-temporal stores and publish does not flush it again.
  [[nodiscard]] void* reserve_copy(const void* src, std::size_t size);
  // An 8-byte store inside the heap, applied atomically with the batch.
  void set(std::uint64_t* where, std::uint64_t value);
  // Writes n bytes from src to dst (any alignment, inside the heap's
  // memory, outside its metadata) atomically with the batch: src is copied
  // now, dst is written at publish. At most max_write_bytes in all per
  // batch (errc::too_large); each write is one action. Where a write and a
  // set() overlap, the write wins; writes apply in call order. A batch with
  // writes is never
  // deferred: publish(durability::deferred) publishes the queue, then it.
  void write(void* dst, const void* src, std::size_t n);
  template <class T>
  void set(pptr<T>& where, T* value) {
    set(reinterpret_cast<std::uint64_t*>(&where), where.representation_of(value));
  }
  // Takes over a reservation made with heap::reserve; r is left empty.
  // errc::invalid_argument, and r is left as it was, for an empty one
  // (cancelled, or never made) or one that is not of this batch's heap.
  void adopt(reservation&& r);
  // Frees an allocated object atomically with the batch (checked at
  // publish); nullptr is a no-op, as for heap::deallocate.
  void defer_free(void* p);

  void publish(durability d = durability::immediate);
  void cancel() noexcept;

  // Without exceptions: `ec` set and the batch unchanged on failure.
  [[nodiscard]] void* reserve(std::size_t size, std::error_code& ec) noexcept;
  void set(std::uint64_t* where, std::uint64_t value, std::error_code& ec) noexcept;
  void write(void* dst, const void* src, std::size_t n, std::error_code& ec) noexcept;
  template <class T>
  void set(pptr<T>& where, T* value, std::error_code& ec) noexcept {
    set(reinterpret_cast<std::uint64_t*>(&where), where.representation_of(value), ec);
  }
  void adopt(reservation&& r, std::error_code& ec) noexcept;
  void defer_free(void* p, std::error_code& ec) noexcept;
  void publish(std::error_code& ec) noexcept;
  [[nodiscard]] std::size_t size() const noexcept {
    return reserved_.size() + stores_.size() + frees_.size() + writes_.size();
  }

 private:
  friend class heap;
  DAXALLOC_LOCAL void count_one();
  // reserve_copy, and publish stages the lane's copy from src (which must
  // not change until then: heap::allocate_publish publishes at once).
  [[nodiscard]] void* reserve_copy_staged(const void* src, std::size_t size);
  // The batch's heap, if it is still open (else errc::invalid_argument).
  [[nodiscard]] DAXALLOC_LOCAL detail::heap_impl& live() const;

  // Inline room for the common batches (allocate_publish, free_clear): no
  // malloc per publication.
  detail::heap_impl* heap_;
  std::uint64_t heap_id_;  // which heap heap_ was: ids are never reused
  unsigned heap_slot_;     // where the open-heap registry keeps that id
  boost::container::small_vector<reservation, 2> reserved_;
  boost::container::small_vector<std::pair<std::uint64_t*, std::uint64_t>, 2> stores_;
  boost::container::small_vector<void*, 2> frees_;
  boost::container::small_vector<std::uint64_t, 1> streamed_;  // bit k: reserved_[k] copied in
  boost::container::small_vector<copy_source, 1> sources_;     // [k]: what reserved_[k] copied
  // write(): in call order; their bytes back to back.
  boost::container::small_vector<range_write, 1> writes_;
  std::vector<std::byte> write_bytes_;
};

// Allocates `size` bytes, runs ctor(object) on them, and stores the object's
// address into `dest` (which must lie in the heap), all or nothing.
template <class T, class Ctor>
T* heap::allocate_publish(pptr<T>& dest, std::size_t size, Ctor&& ctor, durability d) {
  reservation r = reserve(size);
  T* object = static_cast<T*>(r.ptr);
  try {
    std::forward<Ctor>(ctor)(object);
  } catch (...) {
    cancel(r);
    throw;
  }
  publish_reserved(std::move(r), reinterpret_cast<std::uint64_t*>(&dest),
                   dest.representation_of(object), d);
  return object;
}

// Allocates `size` bytes holding a copy of src (non-temporal stores) and
// stores the object's address into `dest`, all or nothing.
template <class T>
T* heap::allocate_publish(pptr<T>& dest, const void* src, std::size_t size, durability d) {
  reservation r = reserve(size);
  T* object = static_cast<T*>(r.ptr);
  publish_reserved(std::move(r), reinterpret_cast<std::uint64_t*>(&dest),
                   dest.representation_of(object), d, src);
  return object;
}

template <class T, class... Args>
T* heap::make_published(pptr<T>& dest, Args&&... args) {
  return allocate_publish(dest, sizeof(T),
                          [&](T* at) { ::new (at) T(std::forward<Args>(args)...); });
}

// Frees the object `dest` points to and sets `dest` to null, all or nothing.
template <class T>
void heap::free_clear(pptr<T>& dest, durability d) {
  publish_free(reinterpret_cast<std::uint64_t*>(&dest), dest.get(), d);
}

template <class T, class Ctor>
T* heap::allocate_publish(pptr<T>& dest, std::size_t size, Ctor&& ctor, std::error_code& ec) {
  if (!writable("allocate_publish", ec)) return nullptr;
  batch b(*this);
  T* object = static_cast<T*>(b.reserve(size, ec));
  if (ec) return nullptr;
  std::forward<Ctor>(ctor)(object);
  b.set(dest, object, ec);
  if (!ec) b.publish(ec);
  return ec ? nullptr : object;  // on failure ~batch cancels the reservation
}

template <class T>
void heap::free_clear(pptr<T>& dest, std::error_code& ec) noexcept {
  free_clear_word(reinterpret_cast<std::uint64_t*>(&dest), ec);
}

}  // namespace daxalloc
