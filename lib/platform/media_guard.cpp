#include "platform/media_guard.hpp"

#include <setjmp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace daxalloc::media {
namespace {

constexpr std::uintptr_t cache_line = 64;
constexpr std::uintptr_t page_size = 4096;

// One thread's guard. Trivial, so its thread_local needs no constructor
// call (the handler reads it; the thread has touched it before arming).
struct guard_state {
  volatile std::sig_atomic_t armed;
  std::uintptr_t begin;           // the page holding the range's first byte
  std::uintptr_t end;             // one past the range
  volatile std::size_t progress;  // offset of the line being loaded
  sigjmp_buf env;
};
thread_local guard_state guard;

struct sigaction previous_action;  // the disposition before ours (written once)
std::once_flag installed;

// The SIGBUS is not a guard's: what would have happened without daxalloc.
void chain(int sig, siginfo_t* info, void* context) {
  if (previous_action.sa_flags & SA_SIGINFO) {
    previous_action.sa_sigaction(sig, info, context);
    return;
  }
  if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
    previous_action.sa_handler(sig);
    return;
  }
  // Default (a synchronous SIGBUS cannot be ignored): restored, and the
  // faulting load runs again and ends the process; a SIGBUS someone sent
  // (si_code <= 0) is raised again (SA_NODEFER: delivered at once).
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGBUS, &fallback, nullptr);
  if (info->si_code <= 0) raise(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  guard_state& g = guard;
  const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
  if (g.armed && info->si_code > 0 && at >= g.begin && at < g.end) {
    g.armed = 0;
    siglongjmp(g.env, 1);  // (SA_NODEFER: no mask to restore)
  }
  chain(sig, info, context);
}

void install_handler() {
  std::call_once(installed, [] {
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_action);
  });
}

// The length of the piece of [at, at+left) up to the next line boundary.
std::size_t line_piece(const std::byte* at, std::size_t left) noexcept {
  return std::min<std::size_t>(left,
                               cache_line - reinterpret_cast<std::uintptr_t>(at) % cache_line);
}

void arm_range(guard_state& g, const std::byte* p, std::size_t n) noexcept {
  g.begin = reinterpret_cast<std::uintptr_t>(p) & ~(page_size - 1);
  g.end = reinterpret_cast<std::uintptr_t>(p) + n;
  g.progress = 0;
}

// The guarded loops: leaves (nothing to destroy when siglongjmp leaves
// them), one line at a time in address order, the line's offset stored
// before its loads (the compiler fences keep the order). Each returns the
// offset of the first unreadable byte, or n.
[[gnu::noinline]] std::size_t copy_lines(std::byte* dst, const std::byte* src,
                                         std::size_t n) noexcept {
  guard_state& g = guard;
  arm_range(g, src, n);
  if (sigsetjmp(g.env, 0) != 0) return g.progress;
  g.armed = 1;
  for (std::size_t at = 0; at < n;) {
    const std::size_t piece = line_piece(src + at, n - at);
    g.progress = at;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (piece == cache_line)
      std::memcpy(dst + at, src + at, cache_line);  // (inlined: a few wide loads)
    else
      std::memcpy(dst + at, src + at, piece);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    at += piece;
  }
  g.armed = 0;
  return n;
}

[[gnu::noinline]] std::size_t probe_lines(const std::byte* p, std::size_t n) noexcept {
  guard_state& g = guard;
  arm_range(g, p, n);
  if (sigsetjmp(g.env, 0) != 0) return g.progress;
  g.armed = 1;
  for (std::size_t at = 0; at < n; at += line_piece(p + at, n - at)) {
    g.progress = at;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    (void)*reinterpret_cast<const volatile std::uint8_t*>(p + at);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  g.armed = 0;
  return n;
}

}  // namespace

std::size_t copy_mc(void* dst, const void* src, std::size_t n) noexcept {
  if (n == 0) return 0;
  install_handler();
  return n - copy_lines(static_cast<std::byte*>(dst), static_cast<const std::byte*>(src), n);
}

std::size_t probe(const void* p, std::size_t n) noexcept {
  if (n == 0) return 0;
  install_handler();
  return probe_lines(static_cast<const std::byte*>(p), n);
}

std::string describe(const read_failure& f) {
  char text[64];
  std::snprintf(text, sizeof text, "%s at offset %#llx", f.listed ? "bad block" : "media error",
                static_cast<unsigned long long>(f.offset));
  return text;
}

std::uint64_t guarded_reader::first_listed(std::uint64_t offset,
                                           std::uint64_t length) const noexcept {
  // Sorted and merged: the ends are sorted too.
  const auto it = std::upper_bound(
      known_bad_.begin(), known_bad_.end(), offset,
      [](std::uint64_t at, const bad_range& r) { return at < r.offset + r.length; });
  if (it == known_bad_.end() || it->offset >= offset + length) return offset + length;
  return std::max(it->offset, offset);
}

std::optional<read_failure> guarded_reader::probe(const std::byte* base, std::uint64_t offset,
                                                  std::uint64_t length) const noexcept {
  const std::uint64_t stop = first_listed(offset, length);
  if (const std::size_t read = media::probe(base + offset, stop - offset); read < stop - offset)
    return read_failure{offset + read, false};
  if (stop < offset + length) return read_failure{stop, true};
  return std::nullopt;
}

std::optional<read_failure> guarded_reader::copy(void* dst, const std::byte* base,
                                                 std::uint64_t offset,
                                                 std::uint64_t length) const noexcept {
  const std::uint64_t stop = first_listed(offset, length);
  if (const std::size_t left = copy_mc(dst, base + offset, stop - offset); left != 0)
    return read_failure{stop - left, false};
  if (stop < offset + length) return read_failure{stop, true};
  return std::nullopt;
}

}  // namespace daxalloc::media
