// Pins of objects by address (heap::pin(p)): the role a ZONE_DEVICE page's
// reference count and its dev_pagemap's page_free callback play in the
// kernel. While the kernel or a device uses a page (get_user_pages for
// direct I/O, an RDMA registration) it holds a reference; a page freed by
// its owner goes back to the device's allocator only when the last
// reference is dropped (page_free). Here: pin and unpin count per object;
// a pinned object that is freed is free on the media at once (the free is
// durable, and a crash forgets the pins with the process), but its memory
// goes back to the allocators only at its last unpin.
//
// Volatile and exact: shards of address -> entry under a lock each, and a
// count of the shards that hold entries, so that a free with nothing
// pinned pays one load.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "platform/spin_mutex.hpp"

namespace daxalloc::detail {

// What a free hands back to the allocators: a slab object (cls >= 0) or
// the pages of an extent.
struct freed_memory {
  void* object = nullptr;
  int cls = -1;
  std::uint64_t pfn = 0, pages = 0;
};

struct pin_totals {
  std::uint64_t objects = 0;        // objects with at least one pin
  std::uint64_t pins = 0;           // the pins on them
  std::uint64_t bytes = 0;          // their bytes
  std::uint64_t freed_objects = 0;  // of them, freed and waiting for their last unpin
  std::uint64_t freed_bytes = 0;
};

class object_pins {
 public:
  // One more pin on the object at p of `bytes` bytes; its count after.
  // nullopt when p was freed while pinned (its memory waits for its last
  // unpin, and a new pin of it would outlive that).
  std::optional<std::uint32_t> pin(const void* p, std::uint64_t bytes);
  // One pin less on p: nullopt when p is not pinned; else the memory to
  // hand back now when that was the last pin of an object freed meanwhile
  // (object == nullptr otherwise).
  std::optional<freed_memory> unpin(const void* p);
  // The free of p is durable: true when p is pinned, so `m` waits for its
  // last unpin; false when the caller hands m back now.
  bool defer(const void* p, const freed_memory& m) noexcept;
  [[nodiscard]] std::uint32_t count(const void* p) const;
  // The pins on objects overlapping [from, to).
  [[nodiscard]] pin_totals in(std::uintptr_t from, std::uintptr_t to) const;
  [[nodiscard]] pin_totals totals() const { return in(0, UINTPTR_MAX); }
  [[nodiscard]] bool any() const noexcept {
    return busy_shards_.load(std::memory_order_acquire) != 0;
  }

 private:
  struct entry {
    std::uint32_t count = 0;
    bool freed = false;
    std::uint64_t bytes = 0;
    freed_memory memory;
  };
  struct alignas(64) shard {
    mutable spin_mutex mutex;
    std::unordered_map<std::uintptr_t, entry> entries;
  };
  static constexpr std::size_t nr_shards = 64;
  [[nodiscard]] shard& shard_of(std::uintptr_t p) const noexcept {
    return shards_[(p >> 4) * 0x9e3779b97f4a7c15ull >> 58];
  }
  mutable std::array<shard, nr_shards> shards_;
  // Shards holding an entry: written only when a shard empties or stops
  // being empty, so pins of objects in busy shards share no cache line.
  alignas(64) std::atomic<std::uint64_t> busy_shards_{0};
};

}  // namespace daxalloc::detail
