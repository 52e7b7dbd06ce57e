// Format 2 heaps: refused by open with errc::older_format naming
// `daxalloc upgrade`, converted in place by sparse::upgrade with every
// object, the root and the named objects intact; refused by upgrade when
// they were not closed cleanly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>

#include "daxalloc/heap.hpp"
#include "heap/access.hpp"
#include "heap/heap_impl.hpp"
#include "old_images.hpp"
#include "sparse/superblock.hpp"
#include "sparse/upgrade.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;
namespace sp = daxalloc::sparse;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
const std::string current = std::to_string(daxalloc::sparse::format_version);

struct root_type {
  std::uint64_t small, big;  // offsets
};

// An image of an older format with a root, a slab object, an extent and
// named objects.
void make_old(const std::filesystem::path& path, std::uint32_t version = 2) {
  {
    std::optional<test::legacy_slabs> legacy_encoding;
    test::legacy_memmap legacy_layout;
    if (version < 5) legacy_encoding.emplace();
    daxalloc::heap_options o;
    o.size = 8 * MiB;
    o.max_size = 1024 * MiB;
    auto h = heap::create(path, o);
    auto* r = h.root<root_type>();
    void* small = h.allocate(100);
    void* big = h.allocate(70000);
    std::memset(small, 0x11, 100);
    std::memset(big, 0x22, 70000);
    h.persist().persist(small, 100);
    h.persist().persist(big, 70000);
    r->small = h.offset_of(small);
    r->big = h.offset_of(big);
    h.persist().persist(r, sizeof *r);
    for (int i = 0; i < 20; ++i)
      (void)h.construct<std::uint64_t>("v" + std::to_string(i))(std::uint64_t(i));
  }
  test::downgrade(path, version);
}

void require_contents(heap& h) {
  test::require_sound(h);
  const auto* r = h.root<root_type>();
  const auto* small = static_cast<const unsigned char*>(h.at(r->small));
  const auto* big = static_cast<const unsigned char*>(h.at(r->big));
  for (int i = 0; i < 100; ++i) REQUIRE(small[i] == 0x11);
  for (int i = 0; i < 70000; ++i) REQUIRE(big[i] == 0x22);
  for (int i = 0; i < 20; ++i) {
    auto [p, n] = h.find<std::uint64_t>("v" + std::to_string(i));
    REQUIRE(p);
    CHECK(*p == std::uint64_t(i));
  }
  CHECK(h.stats().allocated_objects ==
        3 + 1 + 40);  // root, two objects, table, 20 names and objects
}
}  // namespace

TEST_CASE("a format 2 heap is refused by open and converted by upgrade, everything intact") {
  test::temp_file f;
  make_old(f.path());
  try {
    (void)heap::open(f.path());
    FAIL("open accepted a format 2 heap");
  } catch (const daxalloc::error& e) {
    CHECK(e.code_value() == errc::older_format);
    CHECK(std::string(e.what()).find("daxalloc upgrade") != std::string::npos);
  }
  {
    auto r = daxalloc::region::open(f.path());
    const auto steps = daxalloc::detail::upgrade_region(r);
    for (const auto& s : steps) MESSAGE(s);
    CHECK(steps.size() == 6);
  }
  {
    auto h = heap::open(f.path());
    CHECK(h.outcome() == daxalloc::open_outcome::clean);
    require_contents(h);
    // And it goes on: a new named object, a new root-reachable allocation.
    (void)h.construct<int>("after")(5);
  }
  auto r = daxalloc::region::open(f.path());
  CHECK(daxalloc::detail::upgrade_region(r).empty());  // already this format
}

TEST_CASE("a format 3 heap is refused by open and converted by upgrade, everything intact") {
  test::temp_file f;
  make_old(f.path(), 3);
  CHECK_ERRC((void)heap::open(f.path()), errc::older_format);
  {
    auto r = daxalloc::region::open(f.path());
    const auto steps = daxalloc::detail::upgrade_region(r);
    for (const auto& s : steps) MESSAGE(s);
    REQUIRE(steps.size() == 4);
    CHECK(steps[3] == "superblocks rewritten: format version 3 -> " + current);
  }
  auto h = heap::open(f.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  require_contents(h);
}

TEST_CASE("a format 5 heap is converted by upgrade: its memmap stays in its spans and it grows") {
  test::temp_file f;
  make_old(f.path(), 5);
  CHECK_ERRC((void)heap::open(f.path()), errc::older_format);
  {
    auto r = daxalloc::region::open(f.path());
    const auto steps = daxalloc::detail::upgrade_region(r);
    for (const auto& s : steps) MESSAGE(s);
    REQUIRE(steps.size() == 2);
    CHECK(steps[0] ==
          "kept each span's memmap block inside the span (1 span; no memmap area: only a heap "
          "created by format 6 or later has one)");
    CHECK(steps[1] == "superblocks rewritten: format version 5 -> " + current);
  }
  auto h = heap::open(f.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  require_contents(h);
  const auto& model = daxalloc::detail::internals(h).model();
  CHECK(model.geo().memmap_area == 0);
  CHECK(model.span_memmap(0) == model.geo().head_size());  // where format 5 put it
  h.hot_add(8 * MiB, 4 * MiB);  // it grows (a new span would carve its block, as format 5 did)
  test::require_sound(h);
  void* p = h.allocate(3 * MiB);
  std::memset(p, 0x5a, 3 * MiB);
  h.deallocate(p);
  test::require_sound(h);
}

TEST_CASE("a format 4 heap is converted by upgrade: its slabs keep their encoding and go on") {
  test::temp_file f;
  make_old(f.path(), 4);
  CHECK_ERRC((void)heap::open(f.path()), errc::older_format);
  {
    auto r = daxalloc::region::open(f.path());
    const auto steps = daxalloc::detail::upgrade_region(r);
    for (const auto& s : steps) MESSAGE(s);
    REQUIRE(steps.size() == 3);
    CHECK(steps[0].find("kept ") == 0);
    CHECK(steps[2] == "superblocks rewritten: format version 4 -> " + current);
  }
  auto h = heap::open(f.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  require_contents(h);
  // The legacy slabs serve their classes with the new ones: free the small
  // object, allocate 2,000 more of its class (its legacy slab first, then a
  // format 5 one), free every other one, and reopen.
  auto* r = h.root<root_type>();
  const std::uint64_t legacy_object = r->small;
  h.deallocate(h.at(r->small));
  std::vector<std::uint64_t> objects;
  for (int i = 0; i < 2000; ++i) {
    void* p = h.allocate(100);
    std::memset(p, i & 0xff, 100);
    h.persist().persist(p, 100);
    objects.push_back(h.offset_of(p));
  }
  // The legacy slab is allocated from again (the lowest slab first).
  const std::uint64_t slab_bytes =
      std::uint64_t{4096}
      << daxalloc::alloc::size_classes[daxalloc::alloc::size_class_of(100)].slab_order;
  CHECK(objects[0] / slab_bytes == legacy_object / slab_bytes);
  r->small = objects[0];
  h.persist().persist(r, sizeof *r);
  for (std::size_t i = 1; i < objects.size(); i += 2) h.deallocate(h.at(objects[i]));
  test::require_sound(h);
  const auto allocated = h.stats().allocated_objects;
  h.close();
  auto again = heap::open(f.path());
  CHECK(again.outcome() == daxalloc::open_outcome::clean);
  test::require_sound(again);
  CHECK(again.stats().allocated_objects == allocated);
  for (std::size_t i = 0; i < objects.size(); i += 2) {
    const auto* p = static_cast<const unsigned char*>(again.at(objects[i]));
    CHECK(again.usable_size(p) >= 100);
    CHECK(p[99] == (i & 0xff));
  }
}

TEST_CASE("upgrade refuses a format 3 slab bitmap changed while the heap was closed") {
  test::temp_file f;
  make_old(f.path(), 3);
  std::uint64_t small = 0;
  {
    // The root's object offsets, read through a copy upgraded elsewhere.
    test::temp_file copy;
    std::filesystem::copy_file(f.path(), copy.path(),
                               std::filesystem::copy_options::overwrite_existing);
    {
      auto r = daxalloc::region::open(copy.path());
      (void)daxalloc::detail::upgrade_region(r);
    }
    auto h = heap::open(copy.path());
    small = h.root<root_type>()->small;
  }
  // Clear the small object's bit: the bitmap is the first page of its slab.
  std::uint64_t word_at = 0, mask = 0;
  {
    const auto& c = daxalloc::alloc::size_classes[daxalloc::alloc::legacy_class(
        daxalloc::alloc::size_class_of(100))];
    const std::uint64_t slab = (std::uint64_t{4096} << c.slab_order);
    const std::uint64_t head = small / slab * slab;
    const std::uint64_t i = (small - head - c.header) / c.size;
    word_at = head + i / 64 * 8;
    mask = std::uint64_t{1} << (i % 64);
  }
  {
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::uint64_t w = 0;
    io.seekg(static_cast<std::streamoff>(word_at));
    io.read(reinterpret_cast<char*>(&w), 8);
    REQUIRE((w & mask) != 0);
    w &= ~mask;
    io.seekp(static_cast<std::streamoff>(word_at));
    io.write(reinterpret_cast<const char*>(&w), 8);
  }
  auto r = daxalloc::region::open(f.path());
  const std::string before(reinterpret_cast<const char*>(r.base()), r.size());
  CHECK_ERRC(daxalloc::detail::upgrade_region(r), errc::corrupt);
  CHECK(std::string(reinterpret_cast<const char*>(r.base()), r.size()) == before);
}

TEST_CASE("upgrade refuses a format 2 heap that was not closed cleanly, and other versions") {
  test::temp_file f;
  make_old(f.path());
  const auto lanes = [&] {
    sp::superblock sb;
    std::ifstream in(f.path(), std::ios::binary);
    in.read(reinterpret_cast<char*>(&sb), sizeof sb);
    return sb.lanes_offset;
  }();
  const auto write = [&](std::uint64_t at, std::uint64_t value) {
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(at));
    io.write(reinterpret_cast<const char*>(&value), 8);
  };
  SUBCASE("a lane that holds a batch") {
    write(lanes + 3 * sp::lane_size + 8, 1);   // count
    write(lanes + 3 * sp::lane_size + 16, 7);  // checksum
  }
  SUBCASE("a pending hotplug intent") {
    write(sp::intent_offset, sp::hotplug_add);
    write(sp::intent_offset + 56, 99);
  }
  auto r = daxalloc::region::open(f.path());
  const std::string before(reinterpret_cast<const char*>(r.base()), r.size());
  CHECK_ERRC(daxalloc::detail::upgrade_region(r), errc::older_format);
  CHECK(std::string(reinterpret_cast<const char*>(r.base()), r.size()) == before);
}

TEST_CASE("legacy slabs: a thread cache full of their freed objects gives them back whole") {
  test::temp_file f;
  daxalloc::heap_options o;
  o.size = 8 * MiB;
  o.max_size = 1024 * MiB;
  std::vector<std::uint64_t> objects;
  {
    test::legacy_slabs legacy;  // as an upgraded heap keeps them
    auto h = heap::create(f.path(), o);
    for (int i = 0; i < 6000; ++i) objects.push_back(h.offset_of(h.allocate(100)));
  }
  {
    auto h = heap::open(f.path());
    // More than a thread cache's bin holds: its legacy bin overflows into the slabs.
    for (std::uint64_t at : objects) h.deallocate(h.at(at));
    test::require_sound(h);
    CHECK(h.stats().allocated_objects == 0);
    for (int i = 0; i < 6000; ++i) (void)h.allocate(100);  // the legacy slabs serve again
    test::require_sound(h);
  }
  auto h = heap::open(f.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  test::require_sound(h);
  CHECK(h.stats().allocated_objects == 6000);
}

TEST_CASE("format 6 and 7 heaps are refused by open and upgraded by rewriting their superblocks") {
  // Format 6 is format 7 without movable slabs; format 7 is format 8 without members.
  for (const std::uint32_t version : {6u, 7u}) {
    INFO("format " << version);
    test::temp_file f;
    std::uint64_t kept = 0;
    {
      daxalloc::heap_options o;
      o.size = 32 * MiB;
      auto h = heap::create(f.path(), o);
      void* p = h.allocate(3000);
      std::memset(p, 0x6a, 3000);
      h.persist().persist(p, 3000);
      kept = h.offset_of(p);
    }
    {  // what format 6 or 7 wrote: the same, but for the version
      auto r = daxalloc::region::open(f.path());
      for (const std::uint64_t at : daxalloc::sparse::superblock_offset) {
        daxalloc::sparse::superblock sb;
        std::memcpy(&sb, r.base() + at, sizeof sb);
        sb.version = version;
        daxalloc::sparse::superblock_seal(sb);
        r.persist().memcpy_persist(r.base() + at, &sb, sizeof sb);
      }
    }
    try {
      (void)heap::open(f.path());
      FAIL("a heap of an older format opened");
    } catch (const daxalloc::error& e) {
      CHECK(e.code_value() == errc::older_format);
      CHECK(std::string(e.what()).find("daxalloc upgrade") != std::string::npos);
    }
    {
      auto r = daxalloc::region::open(f.path());
      const auto steps = daxalloc::detail::upgrade_region(r);
      REQUIRE(steps.size() == 1);
      CHECK(steps[0] ==
            "superblocks rewritten: format version " + std::to_string(version) + " -> " + current);
    }
    auto h = heap::open(f.path());
    CHECK(h.outcome() == daxalloc::open_outcome::clean);
    const auto* bytes = static_cast<const unsigned char*>(h.at(kept));
    CHECK(std::all_of(bytes, bytes + 3000, [](unsigned char c) { return c == 0x6a; }));
    // Movable objects go on in it.
    auto* owner = static_cast<daxalloc::pptr<int>*>(h.root(sizeof(daxalloc::pptr<int>)));
    (void)h.make_movable(*owner, 42);
    CHECK(**owner == 42);
    test::require_sound(h);
  }
}
