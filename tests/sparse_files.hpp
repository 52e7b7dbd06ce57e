// Sparse heap files on tmpfs, for tests of heaps larger than the machine's
// RAM could hold present (the benchmark's trick, bench/daxalloc_bench.cpp):
// region::populate() gives a heap its blocks with fallocate(), which on tmpfs
// makes every present byte RAM. While a sparse_files guard lives, fallocate
// with mode 0 fails with EOPNOTSUPP, which populate() accepts: the file is
// only extended, and only the pages daxalloc touches take memory. Hole
// punching is not affected. Include in one translation unit per executable.
#pragma once

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace test {
inline std::atomic<bool> sparse_files_on{false};

struct sparse_files {
  sparse_files() { sparse_files_on = true; }
  ~sparse_files() { sparse_files_on = false; }
  sparse_files(const sparse_files&) = delete;
  sparse_files& operator=(const sparse_files&) = delete;
};
}  // namespace test

extern "C" int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
  if (mode == 0 && test::sparse_files_on.load(std::memory_order_relaxed)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  return static_cast<int>(syscall(SYS_fallocate, fd, mode, offset, len));
}
