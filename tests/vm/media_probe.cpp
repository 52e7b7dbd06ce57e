// Bad blocks on a real kernel DAX device (issue 22; docs/media-errors.md),
// run in the VM suite's guest on an fsdax file (tests/vm/guest-steps.sh).
// The kernel lets a test mark sectors of a pmem block device bad through
// /sys/block/pmemN/badblocks; a DAX fault on such a sector fails (SIGBUS),
// libpmem2 lists it for the file that holds it (FIEMAP), and clearing it the
// way PMDK does (punch the range, allocate it again) gives the file good,
// zeroed blocks. Each subcommand prints "media_probe: ok: ..." per check and
// ends with "media_probe: PASS <what>" (exit 0) or a FAIL line (exit 1).
//
//   media_probe fill PATH      a 64 MiB heap with objects, each filled with a
//                              pattern; the victim's offset is kept beside it
//   media_probe inject PATH    marks the victim's page bad (FIEMAP -> sysfs)
//   media_probe open PATH      the heap opens around it: the block listed, its
//                              pageblock quarantined, the victim reported lost;
//                              new allocations avoid it; every other object intact
//   media_probe verify PATH    after `daxalloc repair`: no bad block left, the
//                              victim reads as zeros, every other object intact
//
// Poison that no scrub has listed yet (a line that went bad since): the
// kernel's list is hidden from open by a provider that lists nothing
// (platform/media.hpp), so the loads meet the bad sector themselves.
//   media_probe poison-recovery PATH   a heap left by a crash, its redo lanes'
//                              page bad: open fails with media_error (the
//                              process lives); with the list, corrupt naming
//                              the lanes
//   media_probe poison-slab PATH       a slab's bitmap page bad after a clean
//                              close: the free of one of its objects and
//                              read_guarded fail with media_error, check()
//                              reports it, allocation goes on elsewhere
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "alloc/size_classes.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "platform/media.hpp"
#include "sparse/geometry.hpp"
#include "sparse/layout.hpp"

namespace {

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t pageblock = 2 * MiB;
constexpr std::size_t small_size = 1000;
constexpr int nr_small = 3000;

int failures = 0;
void expect(bool ok, const std::string& what) {
  std::printf("media_probe: %s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

// The objects, one offset a line, beside the heap (PATH.objects); the victim first.
std::vector<std::uint64_t> read_objects(const std::string& path) {
  std::ifstream in(path + ".objects");
  std::vector<std::uint64_t> v;
  for (std::uint64_t o; in >> o;) v.push_back(o);
  return v;
}

unsigned char pattern(std::uint64_t offset) {
  return static_cast<unsigned char>(offset >> 4 | 1);
}

bool intact(const daxalloc::heap& h, std::uint64_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(h.base() + offset);
  return std::all_of(p, p + small_size, [&](unsigned char c) { return c == pattern(offset); });
}

// Every object outside the pageblock at `quarantined` still holds its pattern.
void expect_intact_outside(const daxalloc::heap& h, const std::vector<std::uint64_t>& objects,
                           std::uint64_t quarantined) {
  std::size_t whole = 0, outside = 0;
  for (std::uint64_t o : objects)
    if (o < quarantined || o >= quarantined + pageblock) {
      ++outside;
      whole += intact(h, o);
    }
  expect(whole == outside, std::to_string(whole) + " of " + std::to_string(outside) +
                               " objects outside the pageblock intact");
}

int fill(const std::string& path) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.max_size = 1024 * MiB;
  std::filesystem::remove(path);
  auto h = daxalloc::heap::create(path, o);
  std::vector<std::uint64_t> objects;
  for (int i = 0; i < nr_small; ++i) {
    void* p = h.allocate(small_size);
    std::memset(p, pattern(h.offset_of(p)), small_size);
    h.persist().persist(p, small_size);
    objects.push_back(h.offset_of(p));
  }
  std::rotate(objects.begin(), objects.begin() + nr_small / 2, objects.end());  // victim first
  std::ofstream out(path + ".objects");
  for (std::uint64_t o : objects) out << o << "\n";
  std::printf("media_probe: PASS fill: %d objects, victim at 0x%llx\n", nr_small,
              static_cast<unsigned long long>(objects.front()));
  return 0;
}

// Marks the page at `page` of the file bad: its sector of the block device
// (FIEMAP) into the device's badblocks file.
int mark_bad(const std::string& path, std::uint64_t page) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0)
    return std::printf("media_probe: FAIL: open %s\n", path.c_str()), 1;
  alignas(fiemap) char buf[sizeof(fiemap) + sizeof(fiemap_extent)]{};
  auto* fm = reinterpret_cast<fiemap*>(buf);
  fm->fm_start = page;
  fm->fm_length = 4096;
  fm->fm_extent_count = 1;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0 || fm->fm_mapped_extents != 1)
    return std::printf("media_probe: FAIL: FIEMAP of %s\n", path.c_str()), 1;
  ::close(fd);
  const fiemap_extent& e = fm->fm_extents[0];
  const std::uint64_t sector = (e.fe_physical + (page - e.fe_logical)) / 512;
  const std::string sysfs = "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" +
                            std::to_string(minor(st.st_dev)) + "/badblocks";
  std::ofstream(sysfs) << sector << " 8\n";
  std::printf("media_probe: PASS inject: the page at 0x%llx (sector %llu) marked bad in %s\n",
              static_cast<unsigned long long>(page), static_cast<unsigned long long>(sector),
              sysfs.c_str());
  return 0;
}

int inject(const std::string& path) {
  return mark_bad(path, read_objects(path).front() & ~std::uint64_t{4095});
}

// Media whose bad blocks no scrub has found yet: the real state, unlisted.
// (Made before it is installed: it wraps libpmem2's.)
class unlisted final : public daxalloc::media::provider {
 public:
  daxalloc::media::device_state read(const daxalloc::region& r) override {
    auto s = real_.read(r);
    s.bad_blocks.clear();
    return s;
  }
  void clear(const daxalloc::region& r, const daxalloc::media::bad_range& b) override {
    real_.clear(r, b);
  }

 private:
  daxalloc::media::provider& real_ = daxalloc::media::current();
};

// Runs f, expecting daxalloc::error `code` whose message holds `text`.
template <class F>
void expect_error(F&& f, daxalloc::errc code, const std::string& text, const std::string& what) {
  try {
    f();
    expect(false, what + ": no error");
  } catch (const daxalloc::error& e) {
    const bool ok = e.code_value() == code && std::string(e.what()).find(text) != std::string::npos;
    expect(ok, what + ": " + daxalloc::to_string(e.code_value()) + ": " + e.what());
  }
}

daxalloc::sparse::geometry geometry_of(const std::string& path) {
  daxalloc::sparse::superblock sb{};
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&sb), sizeof sb);
  return daxalloc::sparse::geometry{sb.section_size_bits, sb.max_range, sb.memmap_area};
}

int poison_recovery(const std::string& path) {
  std::filesystem::remove(path);
  if (const pid_t child = ::fork(); child == 0) {
    daxalloc::heap_options o;
    o.size = 64 * MiB;
    o.max_size = 1024 * MiB;
    auto h = daxalloc::heap::create(path, o);
    for (int i = 0; i < 1000; ++i) (void)h.allocate(small_size);
    std::_Exit(0);  // no close: the heap is left as a crash leaves it
  } else {
    int status = 0;
    ::waitpid(child, &status, 0);
    expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "a heap left open by a process that ended");
  }
  const std::uint64_t lanes = geometry_of(path).lanes_offset();
  if (mark_bad(path, lanes) != 0) return 1;
  unlisted hide;
  daxalloc::media::set_provider_for_testing(&hide);
  expect_error([&] { (void)daxalloc::heap::open(path); }, daxalloc::errc::media_error,
               daxalloc::sparse::hex(lanes), "open meets the bad lanes page unlisted");
  daxalloc::media::set_provider_for_testing(nullptr);
  expect_error([&] { (void)daxalloc::heap::open(path); }, daxalloc::errc::corrupt,
               "bad block at offset " + daxalloc::sparse::hex(lanes),
               "open with the kernel's list refuses it as damage");
  if (failures == 0) std::printf("media_probe: PASS poison met by recovery, process alive\n");
  return failures == 0 ? 0 : 1;
}

int poison_slab(const std::string& path) {
  fill(path);
  const std::uint64_t victim = read_objects(path).front();
  const auto& c = daxalloc::alloc::size_classes[daxalloc::alloc::size_class_of(small_size)];
  const std::uint64_t slab = victim & ~((std::uint64_t{4096} << c.slab_order) - 1);
  if (mark_bad(path, slab) != 0) return 1;
  unlisted hide;
  daxalloc::media::set_provider_for_testing(&hide);
  {
    auto h = daxalloc::heap::open(path);  // loads no slab bitmap
    expect_error([&] { h.deallocate(h.base() + victim); }, daxalloc::errc::media_error,
                 daxalloc::sparse::hex(slab), "a free of an object of the slab");
    unsigned char first[64];
    expect_error([&] { h.read_guarded(first, h.base() + slab + c.header, sizeof first); },
                 daxalloc::errc::media_error, daxalloc::sparse::hex(slab + c.header),
                 "read_guarded of the slab's first object");
    const auto problems = h.check();
    expect(std::any_of(
               problems.begin(), problems.end(),
               [](const std::string& p) { return p.find("media error") != std::string::npos; }),
           "check() reports the media error" +
               (problems.empty() ? std::string() : ": " + problems.front()));
    bool elsewhere = true;
    for (int i = 0; i < 2000; ++i) {
      const std::uint64_t o = h.offset_of(h.allocate(small_size));
      elsewhere = elsewhere && (o < slab || o >= slab + (std::uint64_t{4096} << c.slab_order));
    }
    expect(elsewhere, "2000 allocations, none from the slab");
  }
  daxalloc::media::set_provider_for_testing(nullptr);
  if (failures == 0) std::printf("media_probe: PASS poison in a slab bitmap, process alive\n");
  return failures == 0 ? 0 : 1;
}

int open_around(const std::string& path) {
  const auto objects = read_objects(path);
  const std::uint64_t victim = objects.front();
  const std::uint64_t quarantined = victim & ~(pageblock - 1);
  auto h = daxalloc::heap::open(path);
  const auto& bad = h.bad_blocks();
  expect(bad.size() == 1, "open lists one bad block (found " + std::to_string(bad.size()) + ")");
  if (bad.size() != 1) return 1;
  const daxalloc::bad_block& b = bad.front();
  expect(b.offset == (victim & ~std::uint64_t{4095}) && b.length == 4096,
         "the bad block is the victim's page");
  expect(b.location == daxalloc::bad_block_location::memory && b.quarantined,
         "in memory, its pageblock quarantined");
  expect(
      std::find(b.objects.begin(), b.objects.end(), victim) != b.objects.end() || b.objects_unknown,
      "the victim is reported lost");
  expect(!h.repairs().empty() && h.repairs().front().find("quarantined the pageblock") == 0,
         "repairs() says so: " + (h.repairs().empty() ? std::string() : h.repairs().front()));
  bool avoided = true;
  for (int i = 0; i < 4000; ++i) {
    const std::uint64_t o = h.offset_of(h.allocate(small_size));
    avoided = avoided && (o < quarantined || o >= quarantined + pageblock);
  }
  expect(avoided, "4000 new allocations avoid the quarantined pageblock");
  expect_intact_outside(h, objects, quarantined);
  const auto problems = h.check();
  expect(problems.empty(), "check() finds the heap sound" +
                               (problems.empty() ? std::string() : ": " + problems.front()));
  if (failures == 0) std::printf("media_probe: PASS open around the bad block\n");
  return failures == 0 ? 0 : 1;
}

int verify(const std::string& path) {
  const auto objects = read_objects(path);
  const std::uint64_t victim = objects.front();
  auto h = daxalloc::heap::open(path);
  expect(h.bad_blocks().empty(), "no bad block left after the repair");
  // Its bytes in the cleared page read as zeros (lost, and readable again).
  const std::uint64_t page = victim & ~std::uint64_t{4095};
  const std::uint64_t end = std::min(victim + small_size, page + 4096);
  const auto* p = reinterpret_cast<const unsigned char*>(h.base());
  expect(std::all_of(p + victim, p + end, [](unsigned char c) { return c == 0; }),
         "the victim's bytes in the cleared page read as zeros (lost, and readable again)");
  const std::uint64_t quarantined = victim & ~(pageblock - 1);
  expect_intact_outside(h, objects, quarantined);
  if (failures == 0) std::printf("media_probe: PASS verify after repair\n");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: media_probe fill|inject|open|verify|poison-recovery|poison-slab PATH\n");
    return 2;
  }
  const std::string what = argv[1], path = argv[2];
  try {
    if (what == "fill") return fill(path);
    if (what == "inject") return inject(path);
    if (what == "open") return open_around(path);
    if (what == "verify") return verify(path);
    if (what == "poison-recovery") return poison_recovery(path);
    if (what == "poison-slab") return poison_slab(path);
  } catch (const daxalloc::error& e) {
    std::printf("media_probe: FAIL: %s: %s\n", what.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "media_probe: unknown subcommand %s\n", what.c_str());
  return 2;
}
