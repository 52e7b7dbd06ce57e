// Direct I/O without a page cache: a log of fixed-size records written with
// plain stores into one block of the heap, made durable with memcpy_persist,
// and read back with plain loads after a reopen. No read(), write() or
// buffer copies through the kernel: on a devdax device or an fsdax file
// (MAP_SYNC) the stores go to the media through the CPU caches. The default
// path lies on tmpfs (/dev/shm), which emulates pmem with page-cache pages, so
// there it shows the code path, not the speed of real pmem.
//
//   direct_io write [PATH] [N]   append N records (default 20000) to the log
//   direct_io read [PATH]        reopen, check every record's checksum and sequence
//
// PATH defaults to /dev/shm/daxalloc-direct-io; a devdax device or a file on
// an fsdax mount works too.
//
// The root holds a pptr to the block (allocated and published once, 8 MiB)
// and the durable record count. Appending a record is two steps: copy it into
// slot `count` and persist it (1 fence), then store count + 1 (an aligned
// 8-byte store, failure-atomic) and persist that (1 fence). A crash between
// the two leaves the record past the count, where the next append overwrites
// it: a reader never sees a record that was not completely written.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "daxalloc/batch.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"

namespace {

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t block_size = 8 * MiB;

struct record {
  std::uint64_t sequence;  // its slot number
  std::uint64_t checksum;  // of sequence and payload
  unsigned char payload[240];
};
static_assert(sizeof(record) == 256);
constexpr std::uint64_t capacity = block_size / sizeof(record);

struct log_root {
  daxalloc::pptr<record> block;  // published once, with block_size
  std::uint64_t block_size;
  std::uint64_t count;  // records written completely; an 8-byte store publishes each one
};

std::uint64_t checksum_of(const record& r) noexcept {  // FNV-1a over sequence and payload
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](const unsigned char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  mix(reinterpret_cast<const unsigned char*>(&r.sequence), sizeof r.sequence);
  mix(r.payload, sizeof r.payload);
  return h;
}

void fill(record& r, std::uint64_t sequence) noexcept {
  r.sequence = sequence;
  std::uint64_t x = sequence * 0x9e3779b97f4a7c15ull + 1;  // xorshift: varied bytes
  for (auto& b : r.payload) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<unsigned char>(x);
  }
  r.checksum = checksum_of(r);
}

daxalloc::heap open_or_create(const std::string& path) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.max_size = 1024 * MiB;  // the default (1 TiB of address space) is too much under TSan
  return daxalloc::heap::open_or_create(path, o);
}

log_root* log_of(daxalloc::heap& h) {
  auto* root = h.root<log_root>();
  if (!root->block) {  // first use: the block and its size, or neither
    daxalloc::batch b(h);
    auto* block = static_cast<record*>(b.reserve(block_size));
    b.set(root->block, block);
    b.set(&root->block_size, block_size);
    b.publish();
  }
  return root;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int write(const std::string& path, std::uint64_t n) {
  auto h = open_or_create(path);
  log_root* root = log_of(h);
  record* block = root->block.get();
  const auto& pmem = h.persist();
  const std::uint64_t first = root->count;
  if (first + n > capacity) {
    std::fprintf(stderr,
                 "direct_io: %" PRIu64 " records do not fit: %" PRIu64 " of %" PRIu64
                 " slots used\n",
                 n, first, capacity);
    return 1;
  }
  daxalloc::reset_this_thread_persist_counters();
  const auto start = std::chrono::steady_clock::now();
  record r;
  for (std::uint64_t i = first; i < first + n; ++i) {
    fill(r, i);
    pmem.memcpy_persist(&block[i], &r, sizeof r);  // the record: durable, not yet counted
    root->count = i + 1;                           // failure-atomic 8-byte store
    pmem.persist(&root->count, sizeof root->count);
  }
  const double s = seconds_since(start);
  const auto c = daxalloc::this_thread_persist_counters();
  std::printf("wrote records %" PRIu64 "..%" PRIu64 " (%" PRIu64
              " B each) to %s in %.3f s: "
              "%.1f MiB/s, %.0f records/s, %" PRIu64 " fences, persistence by %s\n",
              first, first + n - 1, sizeof(record), path.c_str(), s,
              s > 0 ? static_cast<double>(n * sizeof(record)) / MiB / s : 0.0,
              s > 0 ? static_cast<double>(n) / s : 0.0, c.fences, pmem.name());
  return 0;
}

int read(const std::string& path) {
  auto h = daxalloc::heap::open(path);
  const auto* root = h.root<log_root>();
  if (!root->block || root->block_size != block_size || root->count > capacity) {
    std::fprintf(stderr, "direct_io: %s holds no record log\n", path.c_str());
    return 1;
  }
  const record* block = root->block.get();
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t bad = 0;
  for (std::uint64_t i = 0; i < root->count; ++i) {
    const record& r = block[i];  // read in place: no copy, no system call
    if (r.sequence != i || r.checksum != checksum_of(r)) {
      if (++bad <= 10) std::fprintf(stderr, "direct_io: record %" PRIu64 " is damaged\n", i);
    }
  }
  const double s = seconds_since(start);
  const auto problems = h.check();
  for (const auto& p : problems) std::fprintf(stderr, "direct_io: heap check: %s\n", p.c_str());
  std::printf("read %" PRIu64 " records back from %s after reopen in %.3f s (%.1f MiB/s): %s\n",
              root->count, path.c_str(), s,
              s > 0 ? static_cast<double>(root->count * sizeof(record)) / MiB / s : 0.0,
              bad == 0 && problems.empty() ? "every checksum right" : "DAMAGED");
  return bad == 0 && problems.empty() && root->count > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  const std::string path = argc > 2 ? argv[2] : "/dev/shm/daxalloc-direct-io";
  if (mode == "write" && argc <= 4)
    return write(path, argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 20000);
  if (mode == "read" && argc <= 3) return read(path);
  std::fprintf(stderr, "usage: direct_io write [PATH] [N] | read [PATH]\n");
  return 2;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "direct_io: %s\n", e.what());
  return 1;
}
