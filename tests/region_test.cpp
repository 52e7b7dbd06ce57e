// The region layer: every region kind this machine has, both persistence
// modes of a page-cache file, growth, release, locking and every error path.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "daxalloc/devices.hpp"
#include "daxalloc/region.hpp"
#include "platform/sysfs.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::persistence_mode;
using daxalloc::region;
using daxalloc::region_kind;
using daxalloc::region_options;

namespace {
constexpr std::size_t MiB = std::size_t{1} << 20;

region_options create_options(std::size_t size, std::size_t max_size = 0) {
  region_options o;
  o.size = size;
  o.max_size = max_size;
  o.create = true;
  return o;
}

bool on_dax_file_system() {
  test::temp_file probe("probe");
  region_options o = create_options(2 * MiB);
  return region::open(probe.path(), o).kind() == region_kind::fsdax;
}
}  // namespace

TEST_CASE("a page-cache file is recognised and made durable with msync") {
  if (on_dax_file_system()) return;  // the VM suite runs this on fsdax, where MAP_SYNC works
  unsetenv("PMEM_IS_PMEM_FORCE");
  test::temp_file f;
  {
    auto r = region::open(f.path(), create_options(4 * MiB));
    CHECK(r.kind() == region_kind::file);
    CHECK(r.size() == 4 * MiB);
    CHECK(r.persist().mode() == persistence_mode::msync);
    CHECK(reinterpret_cast<std::uintptr_t>(r.base()) % (2 * MiB) == 0);
    daxalloc::reset_this_thread_persist_counters();
    std::memcpy(r.base() + 4096, "durable", 8);
    r.persist().persist(r.base() + 4096, 8);
    auto c = daxalloc::this_thread_persist_counters();
    CHECK(c.msyncs == 1);
    CHECK(c.flushes == 1);
    CHECK(c.fences == 1);
  }
  // The bytes are in the file, read without the mapping.
  std::ifstream in(f.path(), std::ios::binary);
  in.seekg(4096);
  char buf[8] = {};
  in.read(buf, 8);
  CHECK(std::string(buf) == "durable");
}

TEST_CASE("a page-cache file can be treated as pmem, by option or by PMEM_IS_PMEM_FORCE") {
  if (on_dax_file_system()) return;
  test::temp_file f;
  SUBCASE("option") {
    auto o = create_options(2 * MiB);
    o.mode = persistence_mode::cache_flush;
    auto r = region::open(f.path(), o);
    CHECK(r.kind() == region_kind::file);
    CHECK(r.persist().mode() == persistence_mode::cache_flush);
    daxalloc::reset_this_thread_persist_counters();
    r.persist().memset_persist(r.base() + 60, 0xab, 8);  // straddles two lines
    auto c = daxalloc::this_thread_persist_counters();
    CHECK(c.flushes == 2);
    CHECK(c.fences == 1);
    CHECK(c.msyncs == 0);
  }
  SUBCASE("environment") {
    setenv("PMEM_IS_PMEM_FORCE", "1", 1);
    auto r = region::open(f.path(), create_options(2 * MiB));
    unsetenv("PMEM_IS_PMEM_FORCE");
    CHECK(r.persist().mode() == persistence_mode::cache_flush);
  }
}

TEST_CASE("an existing file is reopened at its size with its contents") {
  test::temp_file f;
  std::byte* first_base = nullptr;
  {
    auto r = region::open(f.path(), create_options(2 * MiB));
    first_base = r.base();
    std::memcpy(r.base(), "hello", 6);
    r.persist().persist(r.base(), 6);
  }
  auto r = region::open(f.path());
  CHECK(r.size() == 2 * MiB);
  CHECK(std::string(reinterpret_cast<const char*>(r.base())) == "hello");
  (void)first_base;
}

TEST_CASE("a region grows in place up to its reserved maximum") {
  test::temp_file f;
  auto r = region::open(f.path(), create_options(2 * MiB, 64 * MiB));
  std::byte* base = r.base();
  std::memcpy(base, "keep", 5);
  CHECK(r.populate(8 * MiB, 2 * MiB));  // beyond the old end: known zeros
  CHECK(r.base() == base);
  CHECK(r.size() == 10 * MiB);
  CHECK(std::to_integer<int>(base[9 * MiB]) == 0);
  base[9 * MiB] = std::byte{7};
  CHECK(std::string(reinterpret_cast<const char*>(base)) == "keep");
  CHECK_FALSE(r.populate(0, 2 * MiB));  // already there: contents may be old
  CHECK(std::filesystem::file_size(f.path()) == 10 * MiB);
  CHECK_ERRC(r.populate(64 * MiB, 2 * MiB), errc::too_large);
  CHECK_ERRC(r.populate(4096 + 1, 4096), errc::misaligned);

  SUBCASE("release punches a hole that reads as zeros") {
    struct stat before {
    }, after{};
    ::stat(f.path().c_str(), &before);
    CHECK(r.release(8 * MiB, 2 * MiB));
    ::stat(f.path().c_str(), &after);
    CHECK(after.st_blocks < before.st_blocks);
    CHECK(std::to_integer<int>(base[9 * MiB]) == 0);
    CHECK(r.size() == 10 * MiB);
  }
  SUBCASE("truncate shrinks file and mapping") {
    r.truncate(2 * MiB);
    CHECK(r.size() == 2 * MiB);
    CHECK(std::filesystem::file_size(f.path()) == 2 * MiB);
    CHECK(r.populate(2 * MiB, 2 * MiB));
    CHECK(std::to_integer<int>(base[3 * MiB]) == 0);
  }
}

TEST_CASE("anonymous regions are volatile, grow and release") {
  auto r = region::anonymous(2 * MiB, 16 * MiB);
  CHECK(r.kind() == region_kind::anonymous);
  CHECK(r.persist().mode() == persistence_mode::none);
  r.base()[0] = std::byte{1};
  CHECK(r.populate(4 * MiB, 2 * MiB));
  CHECK(r.size() == 6 * MiB);
  r.base()[5 * MiB] = std::byte{1};
  CHECK(r.release(4 * MiB, 2 * MiB));
  CHECK(std::to_integer<int>(r.base()[5 * MiB]) == 0);
  CHECK(region::anonymous(2 * MiB, 0, persistence_mode::cache_flush).persist().mode() ==
        persistence_mode::cache_flush);
  CHECK_ERRC(region::anonymous(2 * MiB, 0, persistence_mode::msync), errc::invalid_argument);
  CHECK_ERRC(region::anonymous(100), errc::misaligned);
}

TEST_CASE("a second exclusive open is refused while the first holds the region") {
  test::temp_file f;
  auto r = region::open(f.path(), create_options(2 * MiB));
  region_options again;
  CHECK_ERRC(region::open(f.path(), again), errc::busy);
  again.exclusive = false;
  CHECK(region::open(f.path(), again).size() == 2 * MiB);
}

TEST_CASE("moving a region moves the mapping") {
  test::temp_file f;
  auto a = region::open(f.path(), create_options(2 * MiB));
  std::byte* base = a.base();
  region b = std::move(a);
  CHECK(b.base() == base);
  CHECK(a.base() == nullptr);
  CHECK(b.contains(base + 2 * MiB - 1));
  CHECK_FALSE(b.contains(base + 2 * MiB - 1, 2));
}

TEST_CASE("error paths give specific codes and name the path") {
  test::temp_file f;
  SUBCASE("missing file") {
    try {
      (void)region::open(f.path());
      FAIL("no error");
    } catch (const daxalloc::error& e) {
      CHECK(e.code_value() == errc::not_found);
      CHECK(std::string(e.what()).find(f.path().string()) != std::string::npos);
      CHECK(e.code().category().name() == std::string("daxalloc"));
    }
  }
  SUBCASE("create with no size") {
    CHECK_ERRC(region::open(f.path(), create_options(0)), errc::too_small);
  }
  SUBCASE("a directory") {
    std::filesystem::create_directory(f.path());
    CHECK_ERRC(region::open(f.path()), errc::is_directory);
  }
  SUBCASE("an empty file") {
    std::ofstream(f.path()).close();
    CHECK_ERRC(region::open(f.path()), errc::too_small);
  }
  SUBCASE("a size that is not a page multiple") {
    CHECK_ERRC(region::open(f.path(), create_options(5000)), errc::misaligned);
  }
  SUBCASE("a character device that is not device-DAX") {
    CHECK_ERRC(region::open("/dev/null"), errc::not_dax);
  }
  SUBCASE("a block device") {
    if (mknod(f.path().c_str(), S_IFBLK | 0600, makedev(7, 250)) != 0) return;  // not root
    CHECK_ERRC(region::open(f.path()), errc::not_dax);
  }
  SUBCASE("MAP_SYNC required on a page-cache file") {
    if (on_dax_file_system()) return;
    auto o = create_options(2 * MiB);
    o.require_dax = true;
    CHECK_ERRC(region::open(f.path(), o), errc::map_sync_unsupported);
  }
  SUBCASE("permission denied") {
    std::ofstream(f.path()) << std::string(4096, 'x');
    chmod(f.path().c_str(), 0600);
    // Root bypasses file modes, so try as nobody in a child process.
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      if (getuid() == 0 && setuid(65534) != 0) _exit(3);
      try {
        (void)region::open(f.path());
      } catch (const daxalloc::error& e) {
        _exit(e.code_value() == errc::permission_denied ? 0 : 1);
      }
      _exit(2);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("device-DAX recognition from sysfs") {
  test::temp_file fake;
  const auto dir = fake.path() / "dev/char/252:3";
  std::filesystem::create_directories(dir);
  std::filesystem::create_directories(fake.path() / "bus/dax");
  std::filesystem::create_directories(fake.path() / "class/tty");
  SUBCASE("a dax device with size and align") {
    std::filesystem::create_directory_symlink(fake.path() / "bus/dax", dir / "subsystem");
    std::ofstream(dir / "size") << "526385152\n";
    std::ofstream(dir / "align") << "2097152\n";
    auto a = daxalloc::sysfs::probe_char_device(252, 3, fake.path());
    CHECK(a.is_dax);
    CHECK(a.size == 526385152);
    CHECK(a.align == 2 * MiB);
  }
  SUBCASE("no align attribute means the 2 MiB default") {
    std::filesystem::create_directory_symlink(fake.path() / "bus/dax", dir / "subsystem");
    std::ofstream(dir / "size") << "1073741824\n";
    auto a = daxalloc::sysfs::probe_char_device(252, 3, fake.path());
    CHECK(a.align == 2 * MiB);
  }
  SUBCASE("another subsystem") {
    std::filesystem::create_directory_symlink(fake.path() / "class/tty", dir / "subsystem");
    auto a = daxalloc::sysfs::probe_char_device(252, 3, fake.path());
    CHECK_FALSE(a.is_dax);
    CHECK(a.subsystem == "tty");
  }
  SUBCASE("the real /dev/null") {
    struct stat st {};
    REQUIRE(::stat("/dev/null", &st) == 0);
    CHECK_FALSE(daxalloc::sysfs::probe_char_device(major(st.st_rdev), minor(st.st_rdev)).is_dax);
  }
}

TEST_CASE("the device behind a path and its NUMA node, from sysfs") {
  test::temp_file fake;
  SUBCASE("a devdax device: its own numa_node, else target_node") {
    struct stat st {};
    REQUIRE(::stat("/dev/null", &st) == 0);  // any character device stands in
    const auto dev = fake.path() / "devices/dax1.0";
    std::filesystem::create_directories(dev);
    std::filesystem::create_directories(fake.path() / "dev/char");
    std::filesystem::create_directory_symlink(
        dev, fake.path() / "dev/char" /
                 (std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev))));
    std::ofstream(dev / "target_node") << "3\n";
    auto b = daxalloc::sysfs::backing_device_of("/dev/null", fake.path());
    CHECK(b.name == "dax1.0");
    CHECK(b.node == 3);
    std::ofstream(dev / "numa_node") << "1\n";
    CHECK(daxalloc::sysfs::backing_device_of("/dev/null", fake.path()).node == 1);
  }
  SUBCASE("a file: the disk of its file system's partition") {
    const std::filesystem::path file = std::filesystem::read_symlink("/proc/self/exe");
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    if (major(st.st_dev) == 0) return;  // the build tree on an overlay or tmpfs: no device
    const auto disk = fake.path() / "devices/pmem0", part = disk / "pmem0p1";
    std::filesystem::create_directories(part);
    std::filesystem::create_directories(disk / "device");
    std::filesystem::create_directories(fake.path() / "dev/block");
    std::ofstream(part / "partition") << "1\n";
    std::ofstream(disk / "device/numa_node") << "2\n";
    std::filesystem::create_directory_symlink(
        part, fake.path() / "dev/block" /
                  (std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev))));
    auto b = daxalloc::sysfs::backing_device_of(file, fake.path());
    CHECK(b.name == "pmem0");
    CHECK(b.node == 2);
  }
  SUBCASE("tmpfs has no device, and a device without numa_node no node") {
    CHECK(daxalloc::sysfs::backing_device_of("/dev/shm").name.empty());
    CHECK(daxalloc::sysfs::backing_device_of("/dev/shm").node == -1);
    CHECK(daxalloc::sysfs::backing_device_of(fake.path() / "missing").name.empty());
  }
}

TEST_CASE("NUMA nodes, their distances and the fallback order, from sysfs") {
  test::temp_file fake;
  const auto dir = fake.path() / "devices/system/node";
  SUBCASE("no node directory: one node") {
    const auto t = daxalloc::sysfs::read_numa_topology(fake.path());
    CHECK(t.nodes == std::vector<int>{0});
    CHECK(t.fallback_order(0) == std::vector<int>{0});
  }
  SUBCASE("three online nodes of four possible, with a SLIT") {
    for (int n : {0, 1, 3}) std::filesystem::create_directories(dir / ("node" + std::to_string(n)));
    std::ofstream(dir / "online") << "0-1,3\n";
    std::ofstream(dir / "node0/distance") << "10 21 31 12\n";
    std::ofstream(dir / "node1/distance") << "21 10 21 21\n";
    std::ofstream(dir / "node3/distance") << "12 21 31 10\n";
    const auto t = daxalloc::sysfs::read_numa_topology(fake.path());
    CHECK(t.nodes == std::vector<int>{0, 1, 3});
    CHECK(t.distance[0] == std::vector<int>{10, 21, 12});
    CHECK(t.fallback_order(0) == std::vector<int>{0, 3, 1});
    CHECK(t.fallback_order(1) == std::vector<int>{1, 0, 3});
    CHECK(t.fallback_order(3) == std::vector<int>{3, 0, 1});
    CHECK(t.fallback_order(7) == std::vector<int>{0, 1, 3});
  }
  SUBCASE("this machine") {
    const auto t = daxalloc::sysfs::read_numa_topology();
    REQUIRE_FALSE(t.nodes.empty());
    const int here = daxalloc::sysfs::current_node();
    CHECK(std::find(t.nodes.begin(), t.nodes.end(), here) != t.nodes.end());
    CHECK(t.fallback_order(here).front() == here);
  }
}

TEST_CASE("list_devices finds what libdaxctl and libndctl see, and nothing is no error") {
  const auto devices = daxalloc::list_devices();
  for (const auto& d : devices) {
    CHECK(!d.name.empty());
    CHECK(d.size > 0);
    CHECK((d.mode == "devdax" || d.mode == "fsdax" || d.mode == "raw"));
    if (d.mode == "devdax") CHECK(d.align >= 4096);
  }
  MESSAGE("DAX devices found: " << devices.size());
}

TEST_CASE("members: other files mapped into a region's reservation (a heap over several devices)") {
  test::temp_file primary("primary"), a("member-a"), b("member-b");
  region r = region::open(primary.path(), create_options(64 * MiB));
  r.reserve(1024 * MiB);
  const daxalloc::region_member& m =
      r.attach(a.path(), 512 * MiB, create_options(32 * MiB, 64 * MiB));
  CHECK(m.offset == 512 * MiB);
  CHECK(m.size == 32 * MiB);
  CHECK(m.max_size == 64 * MiB);
  CHECK(m.created);
  CHECK(m.kind == r.kind());
  REQUIRE(r.members().size() == 1);
  CHECK(r.member_at(512 * MiB + 4096, 4096) != nullptr);
  CHECK(r.member_at(300 * MiB) == nullptr);
  CHECK(r.contains(r.base() + 512 * MiB + 100, 8));
  CHECK_FALSE(r.contains(r.base() + 300 * MiB));
  CHECK_FALSE(r.contains(r.base() + 512 * MiB + 32 * MiB));  // not mapped yet
  // A store through the region lands in the member's file.
  std::memcpy(r.base() + 512 * MiB + 8192, "member", 6);
  r.persist().persist(r.base() + 512 * MiB + 8192, 6);
  {
    char got[6] = {};
    const int fd = ::open(a.path().c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    CHECK(::pread(fd, got, 6, 8192) == 6);
    ::close(fd);
    CHECK(std::memcmp(got, "member", 6) == 0);
  }
  // populate inside the member grows its file and mapping; release punches it.
  CHECK(r.populate(512 * MiB + 32 * MiB, 2 * MiB));  // beyond its old end: zeros
  CHECK(r.contains(r.base() + 512 * MiB + 33 * MiB));
  CHECK(std::filesystem::file_size(a.path()) == 34 * MiB);
  CHECK_ERRC(r.populate(512 * MiB + 60 * MiB, 8 * MiB),
             errc::invalid_argument);  // straddles its end
  CHECK(r.release(512 * MiB + 32 * MiB, 2 * MiB));
  // The region's own file grows around members, never into them.
  (void)r.populate(64 * MiB, 64 * MiB);
  CHECK_ERRC(r.populate(500 * MiB, 16 * MiB), errc::invalid_argument);
  CHECK_ERRC(r.populate(600 * MiB, 2 * MiB), errc::invalid_argument);  // would map over it
  // Refusals: overlap, misalignment, outside the reservation, the same file twice.
  CHECK_ERRC((void)r.attach(b.path(), 540 * MiB, create_options(16 * MiB)), errc::already_exists);
  CHECK_ERRC((void)r.attach(b.path(), 701 * MiB, create_options(16 * MiB)), errc::misaligned);
  CHECK_ERRC((void)r.attach(b.path(), 64 * MiB, create_options(16 * MiB)), errc::invalid_argument);
  CHECK_ERRC((void)r.attach(b.path(), 1016 * MiB, create_options(16 * MiB)),
             errc::invalid_argument);
  CHECK_ERRC((void)r.attach(a.path(), 768 * MiB), errc::busy);  // locked by its attach
  region_options flushed = create_options(16 * MiB);
  flushed.mode = persistence_mode::cache_flush;
  if (r.persist().mode() != persistence_mode::cache_flush)
    CHECK_ERRC((void)r.attach(b.path(), 768 * MiB, flushed), errc::invalid_argument);
  CHECK(r.attach(b.path(), 768 * MiB, create_options(16 * MiB)).offset == 768 * MiB);
  CHECK(r.members().size() == 2);
  CHECK_ERRC(r.reserve(4096 * MiB), errc::busy);  // the mapping cannot move under members
  r.detach(512 * MiB);
  CHECK_FALSE(r.contains(r.base() + 512 * MiB + 100));
  CHECK_ERRC(r.detach(512 * MiB), errc::not_found);
  // The detached file is free to be attached again (its lock went with it).
  CHECK(r.attach(a.path(), 512 * MiB).size == 34 * MiB);
  CHECK(std::memcmp(r.base() + 512 * MiB + 8192, "member", 6) == 0);
}
