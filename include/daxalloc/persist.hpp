// Making stores durable. A region picks its persistence once, at open, and
// every layer above calls these through the region: there is no per-call test
// of what kind of memory lies underneath (libpmem2's persist/flush/drain idea).
//
//   cache_flush  CLWB/CLFLUSHOPT + SFENCE through libpmem: devdax, fsdax mapped
//                with MAP_SYNC, or a page-cache file explicitly treated as pmem
//                (the option, or PMEM_IS_PMEM_FORCE=1) for tests and benchmarks.
//   msync        page-cache files: flush() writes the touched pages back.
//   none         volatile memory (anonymous regions): nothing to do.
//
// Tests swap in their own function table (the crash simulator does), which is
// why the table carries a context pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "daxalloc/export.h"
#include "daxalloc/version.hpp"

namespace daxalloc {

enum class persistence_mode { automatic, cache_flush, msync, none };
[[nodiscard]] DAXALLOC_API const char* to_string(persistence_mode mode) noexcept;

// Per-thread counts of what this thread asked of the persistence domain.
// flushes counts cache lines (64 B) handed to flush(), fences counts drain()
// calls (one SFENCE each in cache-flush mode), msyncs counts msync calls,
// streamed counts cache lines written by copy_nodrain() (non-temporal stores
// in cache-flush mode).
struct persist_counters {
  std::uint64_t flushes = 0;
  std::uint64_t fences = 0;
  std::uint64_t msyncs = 0;
  std::uint64_t streamed = 0;
};
[[nodiscard]] DAXALLOC_API persist_counters this_thread_persist_counters() noexcept;
DAXALLOC_API void reset_this_thread_persist_counters() noexcept;

namespace detail {
// (initial-exec: counted on every fence, without a call to __tls_get_addr)
[[gnu::tls_model(
    "initial-exec")]] extern DAXALLOC_API thread_local persist_counters thread_counters;
}  // namespace detail

// Threads: flush, drain and persist may be called from any number of threads
// at once; a drain orders and completes the calling thread's flushes only.
class DAXALLOC_API persistence {
 public:
  // The swappable function table. flush makes [addr, addr+len) reach the
  // persistence domain once a later drain returns; drain orders and completes
  // every earlier flush of this thread.
  struct ops {
    void (*flush)(void* context, const void* addr, std::size_t len);
    void (*drain)(void* context);
    void* context;
    // Optional (may be null): told that [addr, addr+len) was given back to the
    // file system and now reads as zeros durably (a punched hole).
    void (*discard)(void* context, const void* addr, std::size_t len) = nullptr;
    persistence_mode mode;  // what the table implements (automatic for custom tables)
    const char* name;
    // Optional (may be null: memcpy + flush): copies len bytes to dest and
    // makes them reach the persistence domain once a later drain of this
    // thread returns, bypassing the cache where it can (non-temporal stores:
    // no read for ownership, no line left to flush).
    void (*copy)(void* context, void* dest, const void* src, std::size_t len) = nullptr;
  };

  persistence() noexcept;  // mode none
  explicit persistence(const ops& table) noexcept : ops_(table) {}
  [[nodiscard]] static persistence for_mode(persistence_mode mode);

  void flush(const void* addr, std::size_t len) const noexcept {
    if (len == 0) return;
    const auto first = reinterpret_cast<std::uintptr_t>(addr) & ~std::uintptr_t{63};
    const auto last = reinterpret_cast<std::uintptr_t>(addr) + len;
    detail::thread_counters.flushes += (last - first + 63) / 64;
    ops_.flush(ops_.context, addr, len);
  }
  // memcpy + flush, with non-temporal stores where the table has them: for
  // whole lines that are written once and not read back soon (logs, copies
  // into new objects). Pending until the next drain, like a flush.
  void copy_nodrain(void* dest, const void* src, std::size_t len) const noexcept {
    if (len == 0) return;
    const auto first = reinterpret_cast<std::uintptr_t>(dest) & ~std::uintptr_t{63};
    const auto last = reinterpret_cast<std::uintptr_t>(dest) + len;
    detail::thread_counters.streamed += (last - first + 63) / 64;
    if (ops_.copy) return ops_.copy(ops_.context, dest, src, len);
    std::memcpy(dest, src, len);
    ops_.flush(ops_.context, dest, len);
  }
  void drain() const noexcept {
    ++detail::thread_counters.fences;
    ops_.drain(ops_.context);
  }
  void persist(const void* addr, std::size_t len) const noexcept {
    flush(addr, len);
    drain();
  }
  void* memcpy_persist(void* dest, const void* src, std::size_t len) const noexcept {
    std::memcpy(dest, src, len);
    persist(dest, len);
    return dest;
  }
  void* memset_persist(void* dest, int byte, std::size_t len) const noexcept {
    std::memset(dest, byte, len);
    persist(dest, len);
    return dest;
  }

  void discarded(const void* addr, std::size_t len) const noexcept {
    if (ops_.discard) ops_.discard(ops_.context, addr, len);
  }

  [[nodiscard]] persistence_mode mode() const noexcept { return ops_.mode; }
  [[nodiscard]] const char* name() const noexcept { return ops_.name; }
  [[nodiscard]] const ops& table() const noexcept { return ops_; }

 private:
  ops ops_;
};

}  // namespace daxalloc
