// pptr<T>: an 8-byte, position-independent persistent pointer.
//
// It stores the distance from its own address to the object it points to
// (boost::interprocess::offset_ptr's idea), so a structure of pptrs inside a
// heap stays valid wherever the heap is mapped. 0 is null, so zero-filled
// memory (a fresh root object) holds null pointers. Loads and stores of the
// 8-byte word are atomic; compare_exchange works because both sides are
// converted relative to the same address.
//
// Durability is separate: store() is a plain atomic store; make it durable
// with heap::persist(), or publish it atomically with other changes through a
// batch (batch::set).
#pragma once

#include <atomic>
#include <boost/interprocess/offset_ptr.hpp>
#include <cstddef>
#include <cstdint>

#include "daxalloc/version.hpp"

namespace daxalloc {

// Threads: get, load, store and compare_exchange are atomic operations on
// the 8-byte word: any number of threads at once, as std::atomic_ref.
// Assignment from another pptr is a load then a store, not one atomic step.
template <class T>
class pptr {
 public:
  using element_type = T;

  pptr() noexcept = default;
  pptr(std::nullptr_t) noexcept {}   // NOLINT: implicit like a raw pointer
  pptr(T* p) noexcept { store(p); }  // NOLINT
  pptr(const pptr& other) noexcept { store(other.get()); }
  pptr& operator=(const pptr& other) noexcept {
    store(other.get());
    return *this;
  }
  pptr& operator=(T* p) noexcept {
    store(p);
    return *this;
  }
  template <class U>
  pptr(const boost::interprocess::offset_ptr<U>& p) noexcept {  // NOLINT
    store(p.get());
  }
  template <class U>
  operator boost::interprocess::offset_ptr<U>() const noexcept {  // NOLINT
    return boost::interprocess::offset_ptr<U>(get());
  }

  [[nodiscard]] T* get() const noexcept { return decode(word().load(std::memory_order_acquire)); }
  [[nodiscard]] T* load(std::memory_order order = std::memory_order_seq_cst) const noexcept {
    return decode(word().load(order));
  }
  void store(T* p, std::memory_order order = std::memory_order_seq_cst) noexcept {
    word().store(encode(p), order);
  }
  bool compare_exchange(T*& expected, T* desired) noexcept {
    std::int64_t want = encode(expected);
    if (word().compare_exchange_strong(want, encode(desired))) return true;
    expected = decode(want);
    return false;
  }

  T& operator*() const noexcept { return *get(); }
  T* operator->() const noexcept { return get(); }
  explicit operator bool() const noexcept { return word().load(std::memory_order_relaxed) != 0; }
  friend bool operator==(const pptr& a, const pptr& b) noexcept { return a.get() == b.get(); }
  friend bool operator==(const pptr& a, std::nullptr_t) noexcept { return !a; }

  // The stored word this pptr would hold to point at p: what batch::set logs.
  [[nodiscard]] std::uint64_t representation_of(const T* p) const noexcept {
    return static_cast<std::uint64_t>(encode(p));
  }

 private:
  [[nodiscard]] std::int64_t encode(const T* p) const noexcept {
    return p ? reinterpret_cast<std::intptr_t>(p) - reinterpret_cast<std::intptr_t>(this) : 0;
  }
  [[nodiscard]] T* decode(std::int64_t offset) const noexcept {
    return offset ? reinterpret_cast<T*>(reinterpret_cast<std::intptr_t>(this) + offset) : nullptr;
  }
  [[nodiscard]] std::atomic_ref<std::int64_t> word() const noexcept {
    return std::atomic_ref<std::int64_t>(const_cast<std::int64_t&>(offset_));
  }

  alignas(8) std::int64_t offset_ = 0;
};

static_assert(sizeof(pptr<int>) == 8);

}  // namespace daxalloc
