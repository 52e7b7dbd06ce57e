// Loads that survive a media error, modelled on the kernel's
// copy_mc_to_kernel (arch/x86/lib/copy_mc.c): a load from a poisoned cache
// line (BUS_MCEERR_AR after a machine check), from a sector the block
// device lists as bad (BUS_ADRERR on an fsdax file) or from a file page
// beyond its end raises SIGBUS; inside a guard that SIGBUS ends the guarded
// loop instead of the process, and the caller learns where the loads stopped.
//
// Contract:
// - The SIGBUS handler is installed once per process, at the first guard
//   (SA_SIGINFO | SA_NODEFER). A SIGBUS that is not a load of an armed
//   guard of the faulting thread goes to the disposition that was there
//   before: a handler of the application is called; the default (or
//   SIG_IGN) is restored and the load runs again, and kills the process as
//   it would have without daxalloc. A handler installed after the first
//   guard replaces ours: it must chain to it for guards to work.
// - Any si_code counts (BUS_MCEERR_AR on a poisoned line, BUS_ADRERR on a
//   bad sector of an fsdax file or beyond a file's end), when si_addr lies
//   in the guarded range (or in the page holding its first byte: a machine
//   check may report the page).
// - Poison is per 64-byte cache line: the loops go line by line in address
//   order, so "the first unreadable byte" is the start of the first line
//   (of the range) that faulted; all before it was read.
// - A guard is a leaf: nothing between sigsetjmp and the loads owns a
//   resource (siglongjmp skips destructors).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "platform/media.hpp"

namespace daxalloc::media {

// Copies n bytes forward; returns the bytes NOT copied (0: all of them),
// like copy_mc_to_kernel. [dst, dst+n-result) holds what was read.
[[nodiscard]] std::size_t copy_mc(void* dst, const void* src, std::size_t n) noexcept;
// Loads one byte of every cache line of [p, p+n); the offset (from p) of
// the first unreadable byte, or n when every line reads.
[[nodiscard]] std::size_t probe(const void* p, std::size_t n) noexcept;

// Why a range could not be read: the region offset of its first unreadable
// byte, and whether that is a listed bad block (never loaded: on real
// hardware a load from known poison is a machine check) or a load that
// faulted.
struct read_failure {
  std::uint64_t offset = 0;
  bool listed = false;
};
// "bad block at offset 0x..." or "media error at offset 0x...".
[[nodiscard]] std::string describe(const read_failure& f);

// Guarded loads from a region that skip its known bad blocks: a range
// overlapping one is reported unreadable at the first listed byte, after
// the bytes before it are read (or copied).
class guarded_reader {
 public:
  guarded_reader() = default;
  // `known_bad` sorted by offset and merged (media::device_state's).
  explicit guarded_reader(std::vector<bad_range> known_bad) : known_bad_(std::move(known_bad)) {}

  // [offset, offset+length) of the region mapped at base.
  [[nodiscard]] std::optional<read_failure> probe(const std::byte* base, std::uint64_t offset,
                                                  std::uint64_t length) const noexcept;
  [[nodiscard]] std::optional<read_failure> copy(void* dst, const std::byte* base,
                                                 std::uint64_t offset,
                                                 std::uint64_t length) const noexcept;
  [[nodiscard]] const std::vector<bad_range>& known_bad() const noexcept { return known_bad_; }

 private:
  // The first listed byte in [offset, offset+length), or offset+length.
  [[nodiscard]] std::uint64_t first_listed(std::uint64_t offset,
                                           std::uint64_t length) const noexcept;
  std::vector<bad_range> known_bad_;
};

}  // namespace daxalloc::media
