// Direct I/O between a block device and heap memory on a real kernel DAX
// device (issue 23): O_DIRECT reads and writes of a file on an ordinary disk
// (the VM suite's virtio disk) straight into and out of heap extents, so that
// the kernel takes references on the DAX pages themselves (get_user_pages on
// ZONE_DEVICE memory), and the pins by address (heap::pin(p)) that keep a
// freed extent's memory from being handed out while such I/O may still land
// in it. The VM suite (tests/vm/guest-steps.sh) runs it in a qemu guest.
//
//   direct_io_probe devdax /dev/daxX.Y FILE   a heap made on the device (overwriting it)
//   direct_io_probe fsdax HEAP_FILE FILE      a heap file on an ext4 mount -o dax
//   direct_io_probe file HEAP_FILE FILE       the same checks on a page-cache heap (a host run)
//
// FILE is opened with O_DIRECT and must not be on a pmem device. Two checks:
//   round trip      extents of 4 KiB, 64 KiB, 1 MiB and 2 MiB (2 MiB aligned),
//                   pinned, written to FILE and read back into other pinned
//                   extents, every byte compared;
//   freed during I/O  a thread reads FILE into a pinned 1 MiB extent in a loop
//                   while this one frees the extent and allocates every 1 MiB
//                   extent the heap still has, writing a pattern into each:
//                   none may be the pinned one, no pattern may be overwritten
//                   by the reads, hot_remove of its 2 MiB span is errc::busy;
//                   after the thread's unpin the next allocation gets its
//                   memory back and check() finds nothing.
// Every check prints "direct_io_probe: ok: ..." or "... FAIL: ..."; each
// check group ends with a PASS line, and the exit status is 1 on a failure.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/introspection.hpp"
#include "daxalloc/region.hpp"

namespace {

using daxalloc::errc;
using daxalloc::heap;

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t page = 4 * KiB;
constexpr std::size_t heap_size = 64 * MiB;
// The extent the "freed during I/O" check frees while reads go on into it.
constexpr std::size_t busy_size = 1 * MiB;
constexpr std::uint64_t busy_file_offset = 16 * MiB;

class checker {
 public:
  bool expect(bool ok, const std::string& what, const std::string& found = "") {
    ++checks_;
    if (ok) {
      std::printf("direct_io_probe: ok: %s\n", what.c_str());
    } else {
      ++failures_;
      std::printf("direct_io_probe: FAIL: %s%s%s\n", what.c_str(), found.empty() ? "" : "; found ",
                  found.c_str());
    }
    std::fflush(stdout);
    return ok;
  }
  [[nodiscard]] int checks() const { return checks_; }
  [[nodiscard]] int failures() const { return failures_; }

 private:
  int checks_ = 0;
  int failures_ = 0;
};

std::uintptr_t address(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string errno_text(int e) {
  return std::to_string(e) + " (" + std::strerror(e) + ")";
}

// The bytes a pattern gives: each 8-byte word a hash of the seed and its
// index, so that a misplaced, shifted or stale block shows.
std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fill(void* p, std::size_t bytes, std::uint64_t seed) {
  auto* w = static_cast<std::uint64_t*>(p);
  for (std::size_t i = 0; i < bytes / 8; ++i) w[i] = pattern_word(seed, i);
}

// The offset of the first byte that differs from the pattern, or `bytes`.
std::size_t first_mismatch(const void* p, std::size_t bytes, std::uint64_t seed) {
  const auto* w = static_cast<const std::uint64_t*>(p);
  for (std::size_t i = 0; i < bytes / 8; ++i)
    if (w[i] != pattern_word(seed, i)) {
      const std::uint64_t want = pattern_word(seed, i);
      std::size_t b = 0;
      while (std::memcmp(reinterpret_cast<const char*>(&w[i]) + b,
                         reinterpret_cast<const char*>(&want) + b, 1) == 0)
        ++b;
      return i * 8 + b;
    }
  return bytes;
}

// Whole-buffer pwrite/pread: O_DIRECT transfers of these sizes are not
// expected to be short, but a short one is finished, not taken for an error.
bool write_all(int fd, const void* p, std::size_t bytes, std::uint64_t offset, int& error) {
  const auto* c = static_cast<const char*>(p);
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t n = ::pwrite(fd, c + done, bytes - done, static_cast<off_t>(offset + done));
    if (n <= 0) {
      error = n < 0 ? errno : EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* p, std::size_t bytes, std::uint64_t offset, int& error) {
  auto* c = static_cast<char*>(p);
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t n = ::pread(fd, c + done, bytes - done, static_cast<off_t>(offset + done));
    if (n <= 0) {
      error = n < 0 ? errno : EIO;  // 0: the file ends early
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The block device a file's file system is on ("vda"), from sysfs.
std::string block_device_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "";
  const auto sys =
      "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  std::error_code ec;
  const auto target = std::filesystem::read_symlink(sys, ec);
  return ec ? "" : target.filename().string();
}

// Pages of the file's first `bytes` in the page cache (mincore of a mapping
// of it), or -1 when that cannot be told. O_DIRECT bypasses the page cache:
// a read leaves nothing there, a write drops what was.
long cached_pages(int fd, std::size_t bytes) {
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return -1;
  std::vector<unsigned char> resident(bytes / page);
  long n = -1;
  if (::mincore(m, bytes, resident.data()) == 0) {
    n = 0;
    for (unsigned char r : resident) n += r & 1;
  }
  ::munmap(m, bytes);
  return n;
}

bool listed(const heap& h, const void* p) {
  bool found = false;
  h.for_each_object([&](const daxalloc::object_info& o) {
    found = found || o.offset == h.offset_of(p);
    return !found;
  });
  return found;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += (s.empty() ? "" : "; ") + l;
  return s;
}

// The heap's region records (heap::regions()), printed; the one region's
// kind and pins checked.
void check_regions(checker& c, const heap& h, const std::string& kind, std::uint64_t pins) {
  const auto regions = h.regions();
  for (const auto& r : regions)
    std::printf(
        "direct_io_probe: region: kind %s, device %s, node %d, align %llu, size %llu MiB, "
        "pins %llu on %llu objects\n",
        daxalloc::to_string(r.kind), r.device.empty() ? "(none)" : r.device.c_str(), r.node,
        static_cast<unsigned long long>(r.align), static_cast<unsigned long long>(r.size / MiB),
        static_cast<unsigned long long>(r.pins), static_cast<unsigned long long>(r.pinned_objects));
  if (!c.expect(regions.size() == 1, "heap::regions() has one record",
                std::to_string(regions.size())))
    return;
  c.expect(daxalloc::to_string(regions[0].kind) == kind, "the region's kind is " + kind,
           daxalloc::to_string(regions[0].kind));
  c.expect(regions[0].pins == pins, "the region counts " + std::to_string(pins) + " pins",
           std::to_string(regions[0].pins));
}

// Extents written to the file and read back, each pair pinned for the I/O.
void round_trip(checker& c, heap& h, int fd, std::uint64_t run_seed) {
  struct io_size {
    std::size_t bytes;
    std::size_t alignment;
  };
  const io_size sizes[] = {{4 * KiB, page}, {64 * KiB, page}, {1 * MiB, page}, {2 * MiB, 2 * MiB}};
  const int failures_before = c.failures();
  std::uint64_t file_offset = 0;
  std::size_t total = 0;
  for (const io_size& s : sizes) {
    const std::string what = s.bytes < MiB ? std::to_string(s.bytes / KiB) + " KiB extent"
                                           : std::to_string(s.bytes / MiB) + " MiB extent";
    auto* source = static_cast<char*>(h.allocate(s.bytes, s.alignment));
    auto* target = static_cast<char*>(h.allocate(s.bytes, s.alignment));
    c.expect(address(source) % s.alignment == 0 && address(target) % s.alignment == 0,
             what + "s at " + std::to_string(s.alignment) + "-byte aligned addresses",
             hex(address(source)) + ", " + hex(address(target)));
    const std::uint64_t seed = run_seed ^ s.bytes;
    fill(source, s.bytes, seed);
    std::memset(target, 0x5a, s.bytes);
    {
      auto source_pin = h.pin(source);
      auto target_pin = h.pin(target);
      const auto stats = h.stats();
      const auto regions = h.regions();
      c.expect(stats.pinned_objects == 2 && stats.pins == 2 && stats.pinned_bytes >= 2 * s.bytes &&
                   regions.size() == 1 && regions[0].pins == 2 && regions[0].pinned_objects == 2,
               what + "s: 2 objects pinned for the I/O (stats and regions() count them)",
               std::to_string(stats.pinned_objects) + " objects, " + std::to_string(stats.pins) +
                   " pins, " + std::to_string(stats.pinned_bytes) + " bytes; regions() " +
                   (regions.empty() ? "empty" : std::to_string(regions[0].pins) + " pins"));
      int error = 0;
      if (!c.expect(write_all(fd, source, s.bytes, file_offset, error),
                    what + ": O_DIRECT pwrite from the heap to the file", errno_text(error)))
        return;
      if (!c.expect(read_all(fd, target, s.bytes, file_offset, error),
                    what + ": O_DIRECT pread from the file into the heap", errno_text(error)))
        return;
    }
    const std::size_t bad = first_mismatch(target, s.bytes, seed);
    c.expect(bad == s.bytes, what + ": every byte read back into the heap is the one written",
             "first difference at byte " + std::to_string(bad));
    // The file itself, read into memory outside the heap: the bytes are on the disk.
    void* plain = nullptr;
    if (posix_memalign(&plain, page, s.bytes) != 0) throw std::bad_alloc();
    int error = 0;
    const bool read = read_all(fd, plain, s.bytes, file_offset, error);
    c.expect(
        read && first_mismatch(plain, s.bytes, seed) == s.bytes,
        what + ": the file holds the pattern (read into a non-heap buffer)",
        read ? "first difference at byte " + std::to_string(first_mismatch(plain, s.bytes, seed))
             : errno_text(error));
    std::free(plain);
    h.deallocate(source);
    h.deallocate(target);
    file_offset += s.bytes;
    total += s.bytes;
  }
  const long cached = cached_pages(fd, total);
  c.expect(cached == 0, "none of the file's pages is in the page cache (the I/O was direct)",
           std::to_string(cached) + " of " + std::to_string(total / page));
  const auto stats = h.stats();
  c.expect(stats.pins == 0 && stats.pinned_objects == 0, "no pins left",
           std::to_string(stats.pins) + " pins");
  const auto problems = h.check();
  c.expect(problems.empty(), "heap::check() finds nothing after the round trips", joined(problems));
  if (c.failures() == failures_before)
    std::printf(
        "direct_io_probe: PASS O_DIRECT round trip, heap -> file -> heap, 4 KiB, 64 KiB, 1 MiB, "
        "2 MiB extents (%zu bytes each way)\n",
        total);
}

// The reads into a pinned extent that goes on after the extent is freed.
struct reader {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> bad_reads{0};  // the extent did not hold the file's bytes after one
  std::atomic<int> error{0};                // a failed pread's errno
  std::size_t first_bad_byte = 0;
};

void read_loop(reader& r, int fd, char* extent, std::uint64_t seed, daxalloc::pin_guard<char> pin) {
  while (!r.stop.load(std::memory_order_acquire)) {
    int error = 0;
    if (!read_all(fd, extent, busy_size, busy_file_offset, error)) {
      r.error.store(error);
      break;
    }
    const std::size_t bad = first_mismatch(extent, busy_size, seed);
    if (bad != busy_size && r.bad_reads.fetch_add(1) == 0) r.first_bad_byte = bad;
    // Scribble between reads, so that a read that did not land shows.
    std::memset(extent, 0xc3, page);
    r.reads.fetch_add(1, std::memory_order_release);
  }
  pin.reset();  // the I/O is over: the last unpin gives the memory back
}

void wait_for_reads(const reader& r, std::uint64_t at_least) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (r.reads.load(std::memory_order_acquire) < at_least && r.error.load() == 0 &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void freed_during_io(checker& c, heap& h, const std::string& kind, int fd, std::uint64_t run_seed) {
  const int failures_before = c.failures();
  const std::uint64_t seed = run_seed ^ 0xd10;
  {
    // The file's bytes the reads bring in, written from outside the heap.
    void* plain = nullptr;
    if (posix_memalign(&plain, page, busy_size) != 0) throw std::bad_alloc();
    fill(plain, busy_size, seed);
    int error = 0;
    const bool written = write_all(fd, plain, busy_size, busy_file_offset, error);
    std::free(plain);
    if (!c.expect(written, "O_DIRECT pwrite of the reads' source", errno_text(error))) return;
  }
  auto* extent = static_cast<char*>(h.allocate(busy_size, page));
  const std::uint64_t extent_offset = h.offset_of(extent);
  const std::uint64_t span = extent_offset / (2 * MiB) * (2 * MiB);
  reader r;
  std::thread io(read_loop, std::ref(r), fd, extent, seed, h.pin(extent));
  wait_for_reads(r, 1);
  c.expect(r.reads.load() >= 1 && r.error.load() == 0,
           "the I/O thread reads into the pinned extent", "pread: " + errno_text(r.error.load()));

  h.deallocate(extent);
  c.expect(!listed(h, extent), "the pinned extent, freed, is free on the media at once");
  auto stats = h.stats();
  c.expect(stats.pinned_freed_objects == 1 && stats.pinned_freed_bytes == busy_size &&
               h.pin_count(extent) == 1,
           "it is counted as freed while pinned (1 object, 1 MiB, 1 pin)",
           std::to_string(stats.pinned_freed_objects) + " objects, " +
               std::to_string(stats.pinned_freed_bytes) + " bytes, " +
               std::to_string(h.pin_count(extent)) + " pins");

  // Every 1 MiB extent the heap has left, each filled with its own pattern
  // while the reads go on.
  const std::uint64_t reads_before = r.reads.load();
  std::vector<char*> taken;
  std::size_t overlapping = 0;
  while (void* p = h.allocate(busy_size, page, std::nothrow)) {
    auto* t = static_cast<char*>(p);
    taken.push_back(t);
    if (t < extent + busy_size && extent < t + busy_size) ++overlapping;
    fill(t, busy_size, seed + taken.size());
  }
  const std::uint64_t reads_during = r.reads.load() - reads_before;
  std::printf("direct_io_probe: %zu extents of 1 MiB allocated and written while %llu reads ran\n",
              taken.size(), static_cast<unsigned long long>(reads_during));
  c.expect(taken.size() >= heap_size / MiB / 2, "the heap handed out its other 1 MiB extents",
           std::to_string(taken.size()));
  check_regions(c, h, kind, 1);
  c.expect(overlapping == 0, "none of them is or overlaps the pinned freed extent",
           std::to_string(overlapping) + " do");

  try {
    h.hot_remove(span, 2 * MiB);
    c.expect(false, "hot_remove of the pinned extent's 2 MiB span is errc::busy", "it went on");
  } catch (const daxalloc::error& e) {
    std::printf("direct_io_probe: hot_remove: %s\n", e.what());
    c.expect(e.code_value() == errc::busy,
             "hot_remove of the pinned extent's 2 MiB span is errc::busy", e.what());
  }

  // More reads after all of that, then the thread stops and unpins.
  wait_for_reads(r, r.reads.load() + 8);
  r.stop.store(true, std::memory_order_release);
  io.join();
  std::printf("direct_io_probe: the I/O thread made %llu O_DIRECT reads of 1 MiB\n",
              static_cast<unsigned long long>(r.reads.load()));
  c.expect(r.error.load() == 0, "every O_DIRECT read into the freed pinned extent succeeded",
           "pread: " + errno_text(r.error.load()));
  c.expect(r.bad_reads.load() == 0,
           "every read left the file's bytes in the extent (nothing else wrote there)",
           std::to_string(r.bad_reads.load()) + " reads; first difference at byte " +
               std::to_string(r.first_bad_byte));
  std::size_t damaged = 0;
  for (std::size_t i = 0; i < taken.size(); ++i)
    if (first_mismatch(taken[i], busy_size, seed + i + 1) != busy_size) ++damaged;
  c.expect(damaged == 0, "the allocated extents' patterns are intact (no read landed in them)",
           std::to_string(damaged) + " damaged");

  stats = h.stats();
  c.expect(stats.pinned_freed_objects == 0 && stats.pins == 0 && h.pin_count(extent) == 0,
           "after the thread's unpin nothing waits and no pin is left",
           std::to_string(stats.pinned_freed_objects) + " freed objects waiting, " +
               std::to_string(stats.pins) + " pins");
  // The heap was full but for the pinned extent: the next allocation is
  // made of its memory (it may have merged with free pages beside it).
  auto* again = static_cast<char*>(h.allocate(busy_size, page, std::nothrow));
  c.expect(again != nullptr && again < extent + busy_size && extent < again + busy_size,
           "the next 1 MiB allocation reuses the unpinned extent's memory",
           again ? hex(h.offset_of(again)) + " for " + hex(extent_offset) : "out of space");
  if (again) h.deallocate(again);
  for (char* t : taken) h.deallocate(t);
  const auto problems = h.check();
  c.expect(problems.empty(), "heap::check() finds nothing afterwards", joined(problems));
  if (c.failures() == failures_before)
    std::printf(
        "direct_io_probe: PASS freed during I/O: %llu O_DIRECT reads into a freed pinned extent, "
        "%zu extents allocated meanwhile, none reused it; hot_remove busy; reused after unpin\n",
        static_cast<unsigned long long>(r.reads.load()), taken.size());
}

heap make_heap(const std::string& kind, const std::string& path) {
  daxalloc::heap_options o;
  o.size = heap_size;
  if (kind == "devdax") {
    o.overwrite = true;  // the device holds heap_tour's heap, of an earlier step
  } else {
    std::filesystem::remove(path);
    o.max_size = 1024 * MiB;
  }
  return heap::create(path, o);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: direct_io_probe devdax|fsdax|file HEAP_PATH FILE (FILE opened with O_DIRECT)";
  if (argc != 4) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string kind = argv[1], heap_path = argv[2], file = argv[3];
  if (kind != "devdax" && kind != "fsdax" && kind != "file") {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  checker c;
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
  if (!c.expect(fd >= 0, "open " + file + " with O_DIRECT", errno_text(errno))) return 1;
  const std::string device = block_device_of(fd);
  std::printf("direct_io_probe: %s is on block device %s\n", file.c_str(),
              device.empty() ? "(none)" : device.c_str());
  c.expect(!device.empty() && device.rfind("pmem", 0) != 0,
           "the file is on a block device that is not pmem", device);
  const auto seed =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count() ^
                                 (static_cast<std::uint64_t>(getpid()) << 32));
  std::printf("direct_io_probe: seed %llu\n", static_cast<unsigned long long>(seed));
  try {
    heap h = make_heap(kind, heap_path);
    check_regions(c, h, kind, 0);
    round_trip(c, h, fd, seed);
    freed_during_io(c, h, kind, fd, seed);
  } catch (const daxalloc::error& e) {
    c.expect(false, std::string("unexpected daxalloc::error: ") + e.what());
  } catch (const std::exception& e) {
    c.expect(false, std::string("unexpected exception: ") + e.what());
  }
  ::close(fd);
  if (c.failures() > 0) {
    std::printf("direct_io_probe %s %s: %d of %d checks FAILED\n", kind.c_str(), heap_path.c_str(),
                c.failures(), c.checks());
    return 1;
  }
  std::printf("direct_io_probe %s %s: all %d checks passed\n", kind.c_str(), heap_path.c_str(),
              c.checks());
  return 0;
}
