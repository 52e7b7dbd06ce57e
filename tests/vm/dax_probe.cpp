// Checks daxalloc's devdax and fsdax paths against a real kernel DAX device:
// what list_devices() reports, how region::open maps the device or file, that
// durability is by cache flush (not msync), that the kernel really gave a
// MAP_SYNC mapping, growth, the error paths, that data survives a reopen, and
// (devdax) that a heap made on the device itself flushes caches, not msync.
// The VM suite (tests/vm/run-vm.sh) runs it in a qemu guest on emulated pmem.
//
//   dax_probe devdax /dev/dax0.0       the device must have been made with --align=2M
//   dax_probe fsdax /mnt/dax/file      a file on an ext4 file system mounted -o dax
//
// Every failed check prints "dax_probe: FAIL: ..." and the exit status is 1;
// when all pass, the last line says so.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "daxalloc/devices.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/persist.hpp"
#include "daxalloc/region.hpp"

namespace {

using daxalloc::errc;
using daxalloc::persistence_mode;
using daxalloc::region;
using daxalloc::region_kind;
using daxalloc::region_options;

constexpr std::size_t MiB = std::size_t{1} << 20;

class checker {
 public:
  // Records one check; a failure prints what was expected and what was found.
  bool expect(bool ok, const std::string& what, const std::string& found = "") {
    ++checks_;
    if (ok) {
      std::printf("dax_probe: ok: %s\n", what.c_str());
    } else {
      ++failures_;
      std::printf("dax_probe: FAIL: %s%s%s\n", what.c_str(), found.empty() ? "" : "; found ",
                  found.c_str());
    }
    std::fflush(stdout);
    return ok;
  }

  // Checks that `action` throws daxalloc::error with the code `expected`.
  void expect_error(const std::function<void()>& action, errc expected, const std::string& what) {
    try {
      action();
    } catch (const daxalloc::error& e) {
      expect(e.code_value() == expected, what,
             "error code " + std::to_string(static_cast<int>(e.code_value())) + ": " + e.what());
      return;
    }
    expect(false, what, "no error");
  }

  [[nodiscard]] int checks() const { return checks_; }
  [[nodiscard]] int failures() const { return failures_; }

 private:
  int checks_ = 0;
  int failures_ = 0;
};

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::uintptr_t address(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// A record unlikely to be on the media already: pid and time, so a pass can
// only come from this run's writes.
std::string make_record(const char* tag) {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return std::string("daxalloc dax_probe ") + tag + " pid " + std::to_string(getpid()) + " t " +
         std::to_string(now);
}

// Checks that the record written at `offset` is still there; shows what is, if not.
void expect_record(checker& c, const region& r, std::size_t offset, const std::string& record,
                   const std::string& what) {
  const auto* at = reinterpret_cast<const char*>(r.base() + offset);
  const bool same = std::memcmp(at, record.c_str(), record.size() + 1) == 0;
  std::string found;
  if (!same) {
    found = "\"";
    for (std::size_t i = 0; i < record.size(); ++i)
      found += at[i] >= ' ' && at[i] <= '~' ? at[i] : '.';
    found += "\"";
  }
  c.expect(same, what, found);
}

// The kernel's own view of the mapping that holds `p`: the VmFlags line of
// /proc/self/smaps. "sf" (VM_SYNC) is set only on a MAP_SYNC mapping.
std::optional<std::vector<std::string>> vm_flags(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    char dash = 0;
    if (std::sscanf(line.c_str(), "%lx%c%lx ", &start, &dash, &end) == 3 && dash == '-') {
      in_mapping = start <= address(p) && address(p) < end;
    } else if (in_mapping && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream words(line.substr(8));
      std::vector<std::string> flags;
      for (std::string w; words >> w;) flags.push_back(w);
      return flags;
    }
  }
  return std::nullopt;
}

void expect_map_sync(checker& c, const void* p, const std::string& what) {
  const auto flags = vm_flags(p);
  std::string found = "no mapping in /proc/self/smaps holds " + hex(address(p));
  bool sync = false;
  if (flags) {
    found = "VmFlags:";
    for (const auto& f : *flags) {
      found += " " + f;
      sync = sync || f == "sf";
    }
  }
  c.expect(sync, what + " is mapped with MAP_SYNC (VmFlags has sf)", found);
}

// Writes `record` at `offset` durably and checks that it took cache flushes
// and fences, never an msync.
void write_durably(checker& c, const region& r, std::size_t offset, const std::string& record) {
  daxalloc::reset_this_thread_persist_counters();
  r.persist().memcpy_persist(r.base() + offset, record.c_str(), record.size() + 1);
  const auto counters = daxalloc::this_thread_persist_counters();
  const std::string found = std::to_string(counters.flushes) + " flushes, " +
                            std::to_string(counters.fences) + " fences, " +
                            std::to_string(counters.msyncs) + " msyncs";
  c.expect(counters.msyncs == 0 && counters.fences > 0 && counters.flushes > 0,
           "write at offset " + std::to_string(offset) + " made durable by cache flush + fence",
           found);
}

const daxalloc::dax_device* find_device(const std::vector<daxalloc::dax_device>& devices,
                                        const std::string& name) {
  for (const auto& d : devices)
    if (d.name == name) return &d;
  return nullptr;
}

std::string describe(const std::vector<daxalloc::dax_device>& devices) {
  std::string s = std::to_string(devices.size()) + " devices:";
  for (const auto& d : devices)
    s += " " + d.name + "(" + d.mode + ", size " + std::to_string(d.size) + ", align " +
         std::to_string(d.align) + ")";
  return s;
}

void probe_devdax(checker& c, const std::string& path) {
  const std::string name = std::filesystem::path(path).filename();
  const auto devices = daxalloc::list_devices();
  const daxalloc::dax_device* listed = find_device(devices, name);
  if (!c.expect(listed != nullptr, "list_devices() lists " + name, describe(devices))) return;
  c.expect(listed->mode == "devdax", name + " is listed in mode devdax", listed->mode);
  c.expect(listed->align == 2 * MiB, name + " is listed with align 2 MiB",
           std::to_string(listed->align));
  c.expect(listed->size > 0, name + " is listed with a size", std::to_string(listed->size));
  c.expect(listed->path == path, name + " is listed at " + path, listed->path.string());
  const std::size_t align = listed->align ? listed->align : 2 * MiB;
  const std::size_t usable = listed->size / align * align;

  const std::string first = make_record("devdax first");
  const std::string last = make_record("devdax last");
  {
    auto r = region::open(path);
    c.expect(r.kind() == region_kind::devdax, "region::open gives a devdax region",
             daxalloc::to_string(r.kind()));
    c.expect(r.align() == 2 * MiB, "the region's align is 2 MiB", std::to_string(r.align()));
    c.expect(r.size() == usable, "the region maps the listed size rounded down to the align",
             std::to_string(r.size()) + " for " + std::to_string(usable));
    c.expect(address(r.base()) % (2 * MiB) == 0, "the base is 2 MiB aligned",
             hex(address(r.base())));
    c.expect(r.persist().mode() == persistence_mode::cache_flush, "persistence is by cache flush",
             r.persist().name());
    expect_map_sync(c, r.base(), "the device");

    write_durably(c, r, 4096, first);
    if (r.size() >= 4 * MiB) write_durably(c, r, r.size() - 4096, last);

    c.expect_error([&] { (void)region::open(path); }, errc::busy,
                   "a second exclusive open is refused with errc::busy");
  }

  region_options o;
  o.size = 3 * MiB;
  c.expect_error([&] { (void)region::open(path, o); }, errc::misaligned,
                 "a size of 3 MiB (not a multiple of the align) is errc::misaligned");
  o.size = usable + align;
  c.expect_error([&] { (void)region::open(path, o); }, errc::too_large,
                 "a size larger than the device is errc::too_large");
  o.size = 4 * MiB;
  o.create = true;  // meaningless for a device, must not fail
  {
    auto r = region::open(path, o);
    c.expect(r.size() == 4 * MiB, "an open of a 4 MiB prefix maps 4 MiB", std::to_string(r.size()));
    c.expect(r.max_size() == usable, "its max_size is the device size",
             std::to_string(r.max_size()));
    expect_record(c, r, 4096, first, "the first record survived close and reopen");
  }
  auto r = region::open(path);
  expect_record(c, r, 4096, first, "the first record is there after a full reopen");
  if (r.size() >= 4 * MiB)
    expect_record(c, r, r.size() - 4096, last, "the record at the device's end survived");
}

std::string counted(const daxalloc::persist_counters& counters) {
  return std::to_string(counters.flushes) + " flushes, " + std::to_string(counters.fences) +
         " fences, " + std::to_string(counters.msyncs) + " msyncs";
}

// A heap made on the device itself (it replaces what probe_devdax wrote):
// durable allocate and deallocate cost one fence each and never an msync.
void probe_devdax_heap(checker& c, const std::string& path) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.overwrite = true;
  {
    auto h = daxalloc::heap::create(path, o);
    c.expect(h.media().kind() == region_kind::devdax, "the heap's media is the devdax device",
             daxalloc::to_string(h.media().kind()));
    c.expect(h.persist().mode() == persistence_mode::cache_flush,
             "the heap's persistence is by cache flush", h.persist().name());
    expect_map_sync(c, h.base(), "the heap");
    h.deallocate(h.allocate(64));  // creates the size class's slab
    daxalloc::reset_this_thread_persist_counters();
    void* p = h.allocate(64);
    auto counters = daxalloc::this_thread_persist_counters();
    c.expect(p != nullptr && counters.fences == 1 && counters.msyncs == 0,
             "a heap allocate of 64 bytes takes 1 fence, no msync", counted(counters));
    daxalloc::reset_this_thread_persist_counters();
    h.deallocate(p);
    counters = daxalloc::this_thread_persist_counters();
    c.expect(counters.fences == 1 && counters.msyncs == 0,
             "a heap deallocate takes 1 fence, no msync", counted(counters));
    const auto problems = h.check();
    c.expect(problems.empty(), "the heap checks sound", problems.empty() ? "" : problems.front());
  }
  o.overwrite = false;
  c.expect_error([&] { (void)daxalloc::heap::create(path, o); }, errc::already_exists,
                 "creating a heap again without overwrite is errc::already_exists");
  auto h = daxalloc::heap::open(path);
  c.expect(h.stats().allocated_objects == 0 && !h.stats().unclean_shutdown,
           "the heap reopens, cleanly closed and empty",
           std::to_string(h.stats().allocated_objects) + " objects, unclean shutdown " +
               std::to_string(h.stats().unclean_shutdown));
}

// The block device under the file system that holds `path`, as its kernel name (pmem0).
std::string block_device_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  const auto sys =
      "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  std::error_code ec;
  const auto target = std::filesystem::read_symlink(sys, ec);
  return ec ? "" : target.filename().string();
}

void probe_fsdax(checker& c, const std::string& path) {
  std::filesystem::remove(path);
  const std::string first = make_record("fsdax first");
  const std::string grown = make_record("fsdax grown");
  std::byte* base = nullptr;
  {
    region_options o;
    o.create = true;
    o.size = 4 * MiB;
    o.max_size = 64 * MiB;
    o.require_dax = true;
    auto r = region::open(path, o);
    base = r.base();
    c.expect(r.kind() == region_kind::fsdax, "region::open gives an fsdax region (MAP_SYNC)",
             daxalloc::to_string(r.kind()));
    c.expect(r.size() == 4 * MiB && r.max_size() == 64 * MiB, "size 4 MiB, max_size 64 MiB",
             std::to_string(r.size()) + ", " + std::to_string(r.max_size()));
    c.expect(r.persist().mode() == persistence_mode::cache_flush, "persistence is by cache flush",
             r.persist().name());
    expect_map_sync(c, r.base(), "the file");
    write_durably(c, r, 4096, first);

    const bool zeros = r.populate(8 * MiB, 2 * MiB);
    c.expect(zeros, "populate(8 MiB, 2 MiB) beyond the end reports zeros");
    c.expect(r.base() == base, "growing online did not move the base",
             hex(address(r.base())) + " was " + hex(address(base)));
    c.expect(r.size() == 10 * MiB, "the region is 10 MiB after growing", std::to_string(r.size()));
    c.expect(std::filesystem::file_size(path) == 10 * MiB, "the file is 10 MiB after growing",
             std::to_string(std::filesystem::file_size(path)));
    c.expect(std::to_integer<int>(r.base()[9 * MiB]) == 0, "the grown range reads as zeros");
    write_durably(c, r, 9 * MiB, grown);
    expect_map_sync(c, r.base() + 9 * MiB, "the grown range");

    c.expect_error([&] { (void)region::open(path); }, errc::busy,
                   "a second exclusive open is refused with errc::busy");
    c.expect_error([&] { (void)r.populate(64 * MiB, 2 * MiB); }, errc::too_large,
                   "growing beyond max_size is errc::too_large");
  }
  {
    auto r = region::open(path);
    c.expect(r.kind() == region_kind::fsdax, "the reopened region is fsdax",
             daxalloc::to_string(r.kind()));
    c.expect(r.size() == 10 * MiB, "it reopens at the grown size", std::to_string(r.size()));
    expect_record(c, r, 4096, first, "the first record survived close and reopen");
    expect_record(c, r, 9 * MiB, grown, "the record in the grown range survived");
  }

  const std::string name = block_device_of(path);
  c.expect(!name.empty(), "the file system's block device is known", path);
  const auto devices = daxalloc::list_devices();
  const daxalloc::dax_device* listed = find_device(devices, name);
  if (c.expect(listed != nullptr, "list_devices() lists " + name, describe(devices))) {
    c.expect(listed->mode == "fsdax", name + " is listed in mode fsdax", listed->mode);
    c.expect(listed->size > 0, name + " is listed with a size", std::to_string(listed->size));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = "usage: dax_probe devdax /dev/daxX.Y | dax_probe fsdax FILE";
  if (argc != 3) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string mode = argv[1], path = argv[2];
  checker c;
  try {
    if (mode == "devdax") {
      probe_devdax(c, path);
      probe_devdax_heap(c, path);
    } else if (mode == "fsdax") {
      probe_fsdax(c, path);
    } else {
      std::fprintf(stderr, "%s\n", usage.c_str());
      return 2;
    }
  } catch (const daxalloc::error& e) {
    c.expect(false, std::string("unexpected daxalloc::error: ") + e.what());
  } catch (const std::exception& e) {
    c.expect(false, std::string("unexpected exception: ") + e.what());
  }
  if (c.failures() > 0) {
    std::printf("dax_probe %s %s: %d of %d checks FAILED\n", mode.c_str(), path.c_str(),
                c.failures(), c.checks());
    return 1;
  }
  std::printf("dax_probe %s %s: all %d checks passed\n", mode.c_str(), path.c_str(), c.checks());
  return 0;
}
