// daxalloc::allocator<T>: a C++ Allocator whose pointers are
// boost::interprocess::offset_ptr, so that boost::container and
// Boost.Interprocess containers can live in a heap and be found again after
// a restart, in this process or another, wherever the heap is mapped.
//
//   using alloc_t = daxalloc::allocator<int>;
//   using vec_t = boost::container::vector<int, alloc_t>;
//   auto* v = new (h.allocate(sizeof(vec_t))) vec_t(alloc_t(h));
//
// The allocator keeps an offset pointer to its heap's base; the heap must be
// open in this process when a container allocates (errc::invalid_argument
// otherwise). Each allocation and deallocation is a durable heap::allocate /
// heap::deallocate (1 fence); a T aligned beyond 16 bytes is allocated with
// heap::allocate(size, alignof(T)). What is NOT crash-consistent: the container's
// own updates of its size, capacity and links, which are plain stores. After
// a crash a container may be torn, and memory it had just allocated may leak.
// To change a container crash-consistently, build the new version and
// publish a pointer to it (batch::set / pptr), freeing the old one in the
// same batch.
//
// deallocate is noexcept, as containers' destructors need it to be: when it
// cannot free, it changes nothing and allocator_failed_deallocations()
// counts it. An object of a heap that is no longer open stays allocated (a
// leak, like one a crash can leave); a pointer the heap refuses (not
// allocated by it, freed already, the root) is left as it was. It never
// throws and never terminates.
//
// Threads: an allocator is a value; copies may be used from any number of
// threads at once (each call is a thread-safe heap::allocate or
// heap::deallocate of the heap found by base address, without a lock for
// the first 64 open heaps). The containers themselves are not thread-safe.
#pragma once

#include <boost/interprocess/offset_ptr.hpp>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"

namespace daxalloc {

namespace detail {
// The open heap mapped at `base` (errc::invalid_argument if none).
[[nodiscard]] DAXALLOC_API void* allocate_in(const void* base, std::size_t bytes);
// The same at an address that is a multiple of `alignment` (heap::allocate(size, alignment)).
[[nodiscard]] DAXALLOC_API void* allocate_in(const void* base, std::size_t bytes,
                                             std::size_t alignment);
// Counts what it cannot free (see above).
DAXALLOC_API void deallocate_in(const void* base, void* p) noexcept;
}  // namespace detail

// How many allocator<T>::deallocate calls in this process could not free
// their memory and left it allocated (see above).
[[nodiscard]] DAXALLOC_API std::uint64_t allocator_failed_deallocations() noexcept;

// Threads: any number at once, on copies or the same object (see above).
template <class T>
class allocator {
 public:
  using value_type = T;
  using pointer = boost::interprocess::offset_ptr<T>;
  using const_pointer = boost::interprocess::offset_ptr<const T>;
  using void_pointer = boost::interprocess::offset_ptr<void>;
  using const_void_pointer = boost::interprocess::offset_ptr<const void>;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = allocator<U>;
  };

  explicit allocator(const heap& h) : base_(h.base()) {}  // errc::invalid_argument: empty heap
  template <class U>
  allocator(const allocator<U>& other) noexcept : base_(other.base()) {}  // NOLINT: rebinding
  allocator(const allocator& other) noexcept : base_(other.base()) {}
  allocator& operator=(const allocator& other) noexcept {
    base_ = other.base();
    return *this;
  }

  [[nodiscard]] pointer allocate(size_type n) {
    if (n > std::numeric_limits<size_type>::max() / sizeof(T))
      throw error(errc::too_large, "allocator: " + std::to_string(n) + " elements overflow");
    // Every size class of a multiple of 16 bytes is 16-byte aligned; more
    // takes the aligned path.
    if constexpr (alignof(T) > 16)
      return pointer(static_cast<T*>(detail::allocate_in(base(), n * sizeof(T), alignof(T))));
    else
      return pointer(static_cast<T*>(detail::allocate_in(base(), n * sizeof(T))));
  }
  void deallocate(pointer p, size_type) noexcept { detail::deallocate_in(base(), p.get()); }

  [[nodiscard]] void* base() const noexcept { return base_.get(); }
  template <class U>
  friend bool operator==(const allocator& a, const allocator<U>& b) noexcept {
    return a.base() == b.base();
  }

 private:
  boost::interprocess::offset_ptr<void> base_;
};

}  // namespace daxalloc
