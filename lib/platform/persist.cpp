#include "daxalloc/persist.hpp"

#include <libpmem.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace daxalloc {
namespace detail {
[[gnu::tls_model("initial-exec")]] thread_local persist_counters thread_counters;
}

persist_counters this_thread_persist_counters() noexcept {
  return detail::thread_counters;
}
void reset_this_thread_persist_counters() noexcept {
  detail::thread_counters = {};
}

const char* to_string(persistence_mode mode) noexcept {
  switch (mode) {
    case persistence_mode::automatic:
      return "automatic";
    case persistence_mode::cache_flush:
      return "cache-flush";
    case persistence_mode::msync:
      return "msync";
    case persistence_mode::none:
      return "none";
  }
  return "?";
}

namespace {

void cache_flush(void*, const void* addr, std::size_t len) {
  pmem_flush(addr, len);
}
void cache_drain(void*) {
  pmem_drain();
}
void cache_copy(void*, void* dest, const void* src, std::size_t len) {
  pmem_memcpy(dest, src, len, PMEM_F_MEM_NONTEMPORAL | PMEM_F_MEM_NODRAIN);
}

void msync_flush(void*, const void* addr, std::size_t len) {
  static const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(page - 1);
  const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
  ++detail::thread_counters.msyncs;
  // msync can only fail here for a range that is not mapped, which is a bug
  // in the caller; durability cannot be promised after that, so stop.
  if (msync(reinterpret_cast<void*>(start), end - start, MS_SYNC) != 0) {
    std::perror("daxalloc: msync of a mapped heap range failed");
    std::abort();
  }
}
void no_drain(void*) {}
void no_flush(void*, const void*, std::size_t) {}

constexpr persistence::ops cache_flush_ops{
    cache_flush,   cache_drain, nullptr, nullptr, persistence_mode::cache_flush,
    "cache-flush", cache_copy};
constexpr persistence::ops msync_ops{
    msync_flush, no_drain, nullptr, nullptr, persistence_mode::msync, "msync"};
constexpr persistence::ops none_ops{no_flush, no_drain, nullptr, nullptr, persistence_mode::none,
                                    "none"};

}  // namespace

persistence::persistence() noexcept : ops_(none_ops) {}

persistence persistence::for_mode(persistence_mode mode) {
  switch (mode) {
    case persistence_mode::cache_flush:
      return persistence(cache_flush_ops);
    case persistence_mode::msync:
      return persistence(msync_ops);
    case persistence_mode::none:
    case persistence_mode::automatic:
      break;
  }
  return persistence(none_ops);
}

}  // namespace daxalloc
