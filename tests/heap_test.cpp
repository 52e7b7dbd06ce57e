// The heap: life cycle, durable allocation and free, reservations, the root,
// statistics, hotplug with allocations, and a model-based random test.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "daxalloc/heap.hpp"
#include "heap/access.hpp"
#include "sparse_files.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20, GiB = std::uint64_t{1} << 30;

// A heap of `size` bytes in a range of `max` (0: 1 GiB below 1 GiB, so that
// the file has no hole before its memory and copies cheaply; else the
// default 1 TiB, whose memmap area puts the memory at 2 GiB + 2 MiB).
daxalloc::heap_options sized(std::uint64_t size, std::uint64_t max = 0) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = max ? max : size < 1024 * MiB ? 1024 * MiB : 0;
  return o;
}

using test::require_sound;

struct root_type {
  std::uint64_t magic;
  std::uint64_t object;  // offset of an object
};

// Writes the root slot of a closed heap's file by hand, as a crash or a
// damaged medium leaves it: sealed (its checksum matches) or torn.
void write_root_slot(const std::filesystem::path& path, std::uint64_t offset, std::uint64_t size,
                     bool sealed = true) {
  daxalloc::sparse::root_slot slot{offset, size, 0, 0};
  slot.checksum = daxalloc::sparse::fletcher64(&slot, 16) + (sealed ? 0 : 1);
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(daxalloc::sparse::root_slot_offset));
  io.write(reinterpret_cast<const char*>(&slot), sizeof slot);
  REQUIRE(io.good());
}

// Marks a closed heap's file as a crash leaves it: open (unclean) in both
// superblock copies, resealed. A root() interrupted by a crash leaves an
// unmarked root only in such a heap (format 3 refuses one closed cleanly).
void mark_unclean(const std::filesystem::path& path) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  for (std::uint64_t at : daxalloc::sparse::superblock_offset) {
    daxalloc::sparse::superblock sb;
    io.seekg(static_cast<std::streamoff>(at));
    io.read(reinterpret_cast<char*>(&sb), sizeof sb);
    sb.shutdown_state = daxalloc::sparse::shutdown_open;
    sb.checksum = 0;
    sb.checksum = daxalloc::sparse::fletcher64(&sb, sizeof sb);
    io.seekp(static_cast<std::streamoff>(at));
    io.write(reinterpret_cast<const char*>(&sb), sizeof sb);
  }
  REQUIRE(io.good());
}

// The file past its superblocks (which a failed open may rewrite).
std::string contents_past_superblocks(const std::filesystem::path& path) {
  std::string bytes(std::filesystem::file_size(path) - 8192, '\0');
  std::ifstream in(path, std::ios::binary);
  in.seekg(8192);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(in.good());
  return bytes;
}

// A new heap in `path` with one reservation of `size` bytes filled with
// `fill` and persisted, closed without cancel (as after a crash, nothing
// records it); returns its offset.
std::uint64_t forgotten_reservation(const std::filesystem::path& path, std::size_t size,
                                    unsigned char fill) {
  auto h = heap::create(path, sized(16 * MiB));
  auto r = h.reserve(size);
  std::memset(r.ptr, fill, r.size);
  h.persist().persist(r.ptr, r.size);
  return h.offset_of(r.ptr);
}

bool all_bytes(const void* p, std::size_t n, unsigned char value) {
  const auto* bytes = static_cast<const unsigned char*>(p);
  return std::all_of(bytes, bytes + n, [&](unsigned char b) { return b == value; });
}
}  // namespace

TEST_CASE("allocate, free, reopen: what was allocated stays allocated") {
  test::temp_file f;
  std::vector<std::uint64_t> kept;
  {
    auto h = heap::create(f.path(), sized(64 * MiB));
    require_sound(h);
    for (std::size_t size : {1, 8, 9, 100, 4096, 65536, 65537, 1 << 20, 3 << 20}) {
      void* p = h.allocate(size);
      CHECK(h.usable_size(p) >= size);
      std::memset(p, 0x5a, size);
      h.persist().persist(p, size);
      kept.push_back(h.offset_of(p));
    }
    void* gone = h.allocate(100);
    h.deallocate(gone);
    require_sound(h);
    CHECK(h.stats().allocated_objects == kept.size());
  }
  auto h = heap::open(f.path());
  require_sound(h);
  CHECK_FALSE(h.stats().unclean_shutdown);
  CHECK(h.stats().allocated_objects == kept.size());
  for (auto offset : kept) {
    CHECK(h.usable_size(h.at(offset)) > 0);
    CHECK(std::to_integer<int>(*static_cast<std::byte*>(h.at(offset))) == 0x5a);
    h.deallocate(h.at(offset));
  }
  CHECK(h.stats().allocated_objects == 0);
  require_sound(h);
}

TEST_CASE("fences per call: allocate 1, deallocate 1, reserve and cancel 0") {
  test::temp_file f;
  daxalloc::heap_options o = sized(64 * MiB);
  o.mode = daxalloc::persistence_mode::cache_flush;
  auto h = heap::create(f.path(), o);
  for (std::size_t size : {64, 4096, 200000}) {
    CAPTURE(size);
    h.deallocate(h.allocate(size));  // warm the thread cache and create the slab
    daxalloc::reset_this_thread_persist_counters();
    void* p = h.allocate(size);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    daxalloc::reset_this_thread_persist_counters();
    h.deallocate(p);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    daxalloc::reset_this_thread_persist_counters();
    auto r = h.reserve(size);
    h.cancel(r);
    CHECK(daxalloc::this_thread_persist_counters().fences == 0);
    CHECK(daxalloc::this_thread_persist_counters().flushes == 0);
  }
}

TEST_CASE("a reservation is volatile: a crash (no close) forgets it") {
  test::temp_file f;
  std::uint64_t offset = 0;
  {
    auto h = heap::create(f.path(), sized(64 * MiB));
    auto r = h.reserve(256);
    offset = h.offset_of(r.ptr);
    CHECK(h.stats().allocated_objects == 0);
    // the handle is closed without cancel: as after a crash, nothing was recorded
  }
  auto h = heap::open(f.path());
  CHECK(h.stats().allocated_objects == 0);
  CHECK(h.usable_size(h.at(offset)) == 256);  // a slot of a slab, but free
  require_sound(h);
}

TEST_CASE("the root object is typed, zeroed and found again") {
  test::temp_file f;
  std::uint64_t object = 0;
  {
    auto h = heap::create(f.path(), sized(64 * MiB));
    auto* r = h.root<root_type>();
    CHECK(r->magic == 0);
    CHECK(h.root<root_type>() == r);
    void* p = h.allocate(1000);
    object = h.offset_of(p);
    r->magic = 42;
    r->object = object;
    h.persist().persist(r, sizeof *r);
  }
  auto h = heap::open(f.path());
  auto* r = h.root<root_type>();
  CHECK(r->magic == 42);
  CHECK(r->object == object);
  CHECK_ERRC(h.root(sizeof(root_type) + 8), errc::invalid_argument);
  require_sound(h);
  CHECK(h.stats().allocated_objects == 2);
}

TEST_CASE("a large root object") {
  test::temp_file f;
  {
    auto h = heap::create(f.path(), sized(64 * MiB));
    auto* big = static_cast<char*>(h.root(5 * MiB));
    big[5 * MiB - 1] = 7;
    h.persist().persist(big + 5 * MiB - 1, 1);
  }
  auto h = heap::open(f.path());
  CHECK(static_cast<char*>(h.root(5 * MiB))[5 * MiB - 1] == 7);
  require_sound(h);
}

TEST_CASE("a root slot that names no object root() could have made is refused; nothing is lost") {
  test::temp_file f;
  std::uint64_t small = 0, extent = 0, memmap = 0;
  {
    auto h = heap::create(f.path(), sized(16 * MiB, 1 * GiB));
    h.hot_add(32 * MiB, 2 * MiB);  // absent memory between 16 and 32 MiB
    void* s = h.allocate(24);
    void* e = h.allocate(300000);  // 74 pages
    std::memset(s, 0x5a, 24);
    std::memset(e, 0x5a, 300000);
    h.persist().persist(s, 24);
    h.persist().persist(e, 300000);
    small = h.offset_of(s);
    extent = h.offset_of(e);
    memmap = daxalloc::detail::internals(h).model().span_memmap(0);
  }
  const std::uint64_t slab = small & ~(std::uint64_t{64 * 1024} - 1);  // 24 B: 64 KiB slabs
  const struct {
    const char* what;
    std::uint64_t offset, size;
  } slots[] = {
      {"a size beyond its extent", extent, 400000},
      {"an extent named where a slab object should be", extent, 64},
      {"a slab page named as an extent", slab, 100000},
      {"a page inside a slab named as an extent", slab + 4096, 100000},
      {"a page inside an extent", extent + 8192, 70000},
      {"a slab object of another size class", small, 200},
      {"the middle of a slab object", small + 8, 16},
      {"an extent that is not page aligned", extent + 8, 70000},
      {"the memmap", memmap, 70000},
      {"absent memory", 20 * MiB, 70000},
      {"the head", 4096, 64},
      {"beyond the end", 33 * MiB, 2 * MiB},
  };
  for (const auto& slot : slots) {
    CAPTURE(slot.what);
    write_root_slot(f.path(), slot.offset, slot.size);
    const std::string before = contents_past_superblocks(f.path());
    try {
      (void)heap::open(f.path());
      FAIL_CHECK("open accepted the slot");
    } catch (const daxalloc::error& e) {
      CHECK(e.code_value() == errc::corrupt);
      CHECK(std::string(e.what()).find("the root slot (offset ") != std::string::npos);
    }
    CHECK(contents_past_superblocks(f.path()) == before);
  }
  // Clearing the slot by hand gives everything back.
  write_root_slot(f.path(), 0, 0);
  auto h = heap::open(f.path());
  require_sound(h);
  CHECK(h.stats().allocated_objects == 2);
  CHECK(all_bytes(h.at(small), 24, 0x5a));
  CHECK(all_bytes(h.at(extent), 300000, 0x5a));
}

TEST_CASE("a torn root slot is a root being created: open drops it") {
  test::temp_file f;
  write_root_slot(f.path(), forgotten_reservation(f.path(), 300000, 0xee), 300000, false);
  auto h = heap::open(f.path());
  require_sound(h);
  const auto* slot = reinterpret_cast<const daxalloc::sparse::root_slot*>(
      h.base() + daxalloc::sparse::root_slot_offset);
  CHECK(slot->offset == 0);
  CHECK(slot->checksum == 0);
  CHECK(h.stats().allocated_objects == 0);
  CHECK(h.root<root_type>()->magic == 0);
  require_sound(h);
}

// root() writes the slot, fence, then marks the allocation: a crash before
// the first fence can leave the slot durable and the zeroed object not.
TEST_CASE("a root whose allocation root() had not marked is zeroed again, then allocated") {
  test::temp_file f;
  std::size_t size = 0;
  SUBCASE("a slab object") {
    size = 200;
  }
  SUBCASE("an extent") {
    size = 300000;
  }
  CAPTURE(size);
  const std::uint64_t offset = forgotten_reservation(f.path(), size, 0xee);  // as root() reserves
  write_root_slot(f.path(), offset, size);  // copy A only: a crash before root()'s fence 2
  mark_unclean(f.path());
  for (int open = 0; open < 2; ++open) {
    auto h = heap::open(f.path());
    require_sound(h);
    CHECK(h.stats().allocated_objects == 1);
    void* root = h.root(size);
    CHECK(h.offset_of(root) == offset);
    CHECK(all_bytes(root, size, 0));
    CHECK_ERRC(h.deallocate(root), errc::invalid_argument);
  }
}

TEST_CASE("a named entry's count is checked against its allocation before use") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  (void)h.construct<std::uint64_t>("four", 4)(7u);  // 32 bytes: a 32-byte slab object
  const auto table =
      *reinterpret_cast<std::uint64_t*>(h.base() + daxalloc::sparse::names_slot_offset);
  // capacity, reserved, then entries of {name, object, count, type}
  auto& count = static_cast<std::uint64_t*>(h.at(table))[2 + 2];
  REQUIRE(count == 4);
  for (std::uint64_t bad : {std::uint64_t{0}, std::uint64_t{5}, std::uint64_t{1} << 40}) {
    CAPTURE(bad);
    count = bad;
    CHECK_ERRC(h.find<std::uint64_t>("four"), errc::corrupt);
    CHECK_ERRC(h.destroy<std::uint64_t>("four"), errc::corrupt);  // no destructor runs past it
    CHECK_ERRC(h.find_or_construct<std::uint64_t>("four", 4)(0u), errc::corrupt);
    if (bad == 5)
      CHECK(h.named_objects().size() == 1);  // 5 objects of at least a byte fit
    else
      CHECK_ERRC(h.named_objects(), errc::corrupt);
  }
  count = 8;  // 8 objects fit in 32 bytes at 4 bytes each, not at 8
  CHECK_ERRC(h.find<std::uint32_t>("four"), errc::invalid_argument);  // the type comes first
  CHECK_ERRC(h.find<std::uint64_t>("four"), errc::corrupt);
  count = 4;
  CHECK(h.find<std::uint64_t>("four").second == 4);
  CHECK(h.destroy<std::uint64_t>("four"));
  CHECK(h.check().empty());
}

TEST_CASE("out of space is a clear error and the heap stays usable") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  CHECK_ERRC(h.allocate(64 * MiB), errc::out_of_space);
  CHECK(h.allocate(64 * MiB, std::nothrow) == nullptr);
  std::vector<void*> all;
  while (void* p = h.allocate(100000, std::nothrow)) all.push_back(p);
  CHECK(all.size() > 50);
  CHECK_ERRC(h.allocate(100000), errc::out_of_space);
  require_sound(h);
  for (void* p : all) h.deallocate(p);
  void* again = h.allocate(8 * MiB);
  CHECK(again != nullptr);
  require_sound(h);
}

TEST_CASE("a full heap: one thread's arena gets what another freed; empty slabs come back") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  std::vector<void*> first, second;
  std::size_t freed = 0;
  std::thread([&] {  // arena 0: fill the heap with 64 B objects, free every other one
    while (void* p = h.allocate(64, std::nothrow)) first.push_back(p);
    for (std::size_t i = 0; i < first.size(); i += 2, ++freed) h.deallocate(first[i]);
  })
      .join();  // its cache goes back to the slabs
  REQUIRE(first.size() > 100000);
  std::thread([&] {  // arena 1: no pages for a slab of its own
    while (void* p = h.allocate(64, std::nothrow)) second.push_back(p);
  })
      .join();
  CHECK(second.size() == freed);
  require_sound(h);

  // Everything freed: the empty slabs go back, and a large extent fits.
  for (std::size_t i = 1; i < first.size(); i += 2) h.deallocate(first[i]);
  for (void* p : second) h.deallocate(p);
  CHECK(h.allocate(8 * MiB, std::nothrow) != nullptr);
  require_sound(h);
}

TEST_CASE("objects larger than a section, and hot-added memory is allocatable at once") {
  test::temp_file f;
  // (a 1 GiB range: memory from 4 MiB, right after the memmap area)
  auto h = heap::create(f.path(), sized(16 * MiB, 1 * GiB));
  CHECK(h.allocate(200 * MiB, std::nothrow) == nullptr);
  h.hot_add(16 * MiB, 496 * MiB);     // up to 512 MiB: sections 0..3 of span 0
  void* big = h.allocate(300 * MiB);  // spans three 128 MiB sections
  CHECK(h.usable_size(big) == 300 * MiB);
  std::memset(static_cast<char*>(big) + 300 * MiB - 4096, 1, 4096);
  require_sound(h);
  CHECK_ERRC(h.hot_remove(256 * MiB, 64 * MiB), errc::in_use);  // inside the big object
  h.deallocate(big);
  h.hot_remove(256 * MiB, 64 * MiB);
  require_sound(h);
  CHECK_ERRC(h.hot_remove(256 * MiB, 2 * MiB), errc::not_present);
  CHECK_ERRC(h.hot_remove(128 * MiB, 0), errc::invalid_argument);
  // Small objects freed again leave only cached objects and an empty slab:
  // neither keeps their span from going.
  std::vector<void*> small;
  while (small.size() < 20000) small.push_back(h.allocate(64));
  for (void* p : small) h.deallocate(p);
  h.hot_remove(16 * MiB, 112 * MiB);
  require_sound(h);
  CHECK_ERRC(h.hot_remove(257 * MiB, 2 * MiB), errc::misaligned);
}

TEST_CASE("bad pointers and double frees are refused") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  void* p = h.allocate(64);
  h.deallocate(p);
  CHECK_ERRC(h.deallocate(p), errc::invalid_argument);
  int local = 0;
  CHECK_ERRC(h.deallocate(&local), errc::invalid_argument);
  void* q = h.allocate(64);
  CHECK_ERRC(h.deallocate(static_cast<char*>(q) + 8), errc::invalid_argument);
  void* big = h.allocate(100000);
  CHECK_ERRC(h.deallocate(static_cast<char*>(big) + 4096), errc::invalid_argument);
  require_sound(h);
}

TEST_CASE("a second open is refused, in this process too") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  CHECK_ERRC(heap::open(f.path()), errc::busy);
  h.close();
  auto again = heap::open(f.path());
  CHECK(again.stats().present_bytes == 16 * MiB);
}

TEST_CASE("an unclosed heap reports an unclean shutdown") {
  test::temp_file f;
  {
    auto h = heap::create(f.path(), sized(16 * MiB));
    // simulate a crash: copy the file while the heap is open
    std::filesystem::copy_file(f.path(), f.path().string() + ".crash");
  }
  {
    auto h = heap::open(f.path().string() + ".crash");
    CHECK(h.stats().unclean_shutdown);
  }
  std::filesystem::remove(f.path().string() + ".crash");
}

TEST_CASE("repair quarantines damaged pageblocks, keeps their bytes, and the heap goes on") {
  using daxalloc::open_outcome;
  using daxalloc::sparse::migratetype;
  test::temp_file f;
  constexpr std::uint64_t page = 4096, pageblock = 2 * MiB;
  std::uint64_t small = 0, extent = 0, slab_object = 0;
  {
    auto h = heap::create(f.path(), sized(32 * MiB));
    CHECK(h.outcome() == open_outcome::created);
    const auto filled = [&](std::size_t size, int byte) {
      void* p = h.allocate(size);
      std::memset(p, byte, size);
      h.persist().persist(p, size);
      return h.offset_of(p);
    };
    small = filled(64, 0x11);
    h.root<root_type>()->magic = 0x600d;  // a root in the slab pageblock that gets quarantined
    h.persist().persist(h.root<root_type>(), sizeof(root_type));
    extent = filled(300 * 1024, 0x22);  // a page extent: beside the slabs (format 7)
    slab_object = filled(3000, 0x33);
    auto& m = daxalloc::detail::internals(h).model();
    // Damage 1: a stray descriptor on a tail page of the extent.
    auto* tail = m.pfn_to_page(extent / page + 3);
    tail->store(daxalloc::sparse::page_info(daxalloc::sparse::page_state::extent, 0, 1));
    h.persist().persist(tail, sizeof *tail);
    // Damage 2: a bit set beyond the objects of the 3000-byte slab.
    const auto& c = daxalloc::alloc::size_classes[daxalloc::alloc::size_class_of(3000)];
    const std::uint64_t slab_bytes = (std::uint64_t{1} << c.slab_order) * page;
    REQUIRE(c.objects % c.word_bits != 0);
    auto* bits = reinterpret_cast<std::uint64_t*>(h.base() + slab_object / slab_bytes * slab_bytes);
    bits[c.word_of(c.objects)] ^= daxalloc::sparse::slab_word_flip(c.mask_of(c.objects));
    h.persist().persist(bits, c.header);
  }
  // Two problems: the stray bit (with check bits that agree) is beyond the
  // bitmap's bounds; the extent's tail has a descriptor. Open reads no slab
  // bitmap (check() reports it): it refuses the memmap's damage alone.
  CHECK_THROWS_WITH_AS((void)heap::open(f.path()),
                       doctest::Contains("a descriptor inside another extent or slab"),
                       daxalloc::error);
  daxalloc::heap_open_options repair;
  repair.repair = true;
  {
    auto h = heap::open(f.path(), repair);
    CHECK(h.outcome() == open_outcome::repaired);
    REQUIRE(h.repairs().size() == 2);
    CHECK(std::count_if(h.repairs().begin(), h.repairs().end(), [](const std::string& r) {
            return r.find("quarantined the pageblock") == 0;
          }) == (extent / pageblock == slab_object / pageblock ? 1 : 2));
    for (const auto& r : h.repairs()) MESSAGE(r);
    require_sound(h);
    CHECK(h.stats().pageblocks_by_migratetype[static_cast<unsigned>(migratetype::isolate)] ==
          (extent / pageblock == slab_object / pageblock ? 1 : 2));
    CHECK(h.offset_of(h.root<root_type>()) / pageblock == slab_object / pageblock);
    // Nothing published was touched; the quarantined objects are no longer the
    // allocator's (a free is refused), the others still are.
    CHECK(all_bytes(h.at(small), 64, 0x11));
    CHECK(all_bytes(h.at(extent), 300 * 1024, 0x22));
    CHECK(all_bytes(h.at(slab_object), 3000, 0x33));
    // Slabs of all classes share unmovable pageblocks: the 64-byte object is
    // quarantined with the damaged slab if it lies in the same pageblock.
    CHECK(h.usable_size(h.at(small)) == (small / pageblock == slab_object / pageblock ? 0 : 64));
    CHECK(h.usable_size(h.at(extent)) == 0);
    CHECK_THROWS_AS(h.deallocate(h.at(extent)), daxalloc::error);
    CHECK_THROWS_AS(h.deallocate(h.at(slab_object)), daxalloc::error);
    // New allocations never land in a quarantined pageblock.
    for (std::size_t size : {64, 3000, 100000, 2 * 1024 * 1024}) {
      for (int i = 0; i < 40; ++i) {
        void* p = h.allocate(size, std::nothrow);
        if (!p) break;
        const auto pb = h.offset_of(p) / pageblock;
        CHECK(pb != extent / pageblock);
        CHECK(pb != slab_object / pageblock);
      }
    }
    require_sound(h);
  }
  auto h = heap::open(f.path());  // no repair needed any more
  CHECK(h.outcome() == open_outcome::clean);
  CHECK(h.root<root_type>()->magic == 0x600d);
  CHECK(h.repairs().empty());
  CHECK(all_bytes(h.at(extent), 300 * 1024, 0x22));
  require_sound(h);
}

TEST_CASE("size classes: the smallest that fits, wasting at most 12.5 % (7 bytes below 64)") {
  using namespace daxalloc::alloc;
  for (std::size_t s = 1; s <= max_small_size; ++s) {
    const unsigned cls = size_class_of(s);
    const auto& c = size_classes[cls];
    REQUIRE(c.size >= s);
    REQUIRE((cls == 0 || size_classes[cls - 1].size < s));
    REQUIRE((c.size - s <= 7 || (c.size - s) * 8 <= c.size));
  }
}

TEST_CASE("size classes: an object's index by multiplication is exact for every object") {
  using namespace daxalloc::alloc;
  for (const size_class& c : size_classes)
    for (std::uint64_t i = 0; i < c.objects; ++i) REQUIRE(c.index(i * c.size) == i);
}

TEST_CASE("model-based random test: allocate, free, reserve, cancel, reopen, hotplug") {
  const std::uint64_t seed = std::random_device{}();
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  test::temp_file f;
  std::map<std::uint64_t, std::pair<std::size_t, std::uint8_t>> live;  // offset -> size, fill byte
  auto h = heap::create(f.path(), sized(64 * MiB, 2 * GiB));
  bool added = false;
  const auto random_size = [&]() -> std::size_t {
    switch (rng() % 10) {
      case 0:
        return 1 + rng() % 8;
      case 1:
        return 65536 + rng() % 200000;
      case 2:
        return 1 + rng() % (3 * MiB);
      case 3:
        return rng() % 20 == 0 ? 130 * MiB : 4096;
      default:
        return 1 + rng() % 2048;
    }
  };
  std::vector<daxalloc::reservation> reserved;
  for (int step = 0; step < 6000; ++step) {
    const auto op = rng() % 100;
    if (op < 45) {
      const std::size_t size = random_size();
      void* p = h.allocate(size, std::nothrow);
      if (!p) continue;
      const auto fill = static_cast<std::uint8_t>(rng());
      std::memset(p, fill, std::min<std::size_t>(size, 64));
      h.persist().persist(p, std::min<std::size_t>(size, 64));
      REQUIRE(live.emplace(h.offset_of(p), std::pair{size, fill}).second);
    } else if (op < 80 && !live.empty()) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      const auto [size, fill] = it->second;
      auto* bytes = static_cast<std::uint8_t*>(h.at(it->first));
      for (std::size_t i = 0; i < std::min<std::size_t>(size, 64); ++i) REQUIRE(bytes[i] == fill);
      h.deallocate(bytes);
      live.erase(it);
    } else if (op < 88) {
      auto r = h.reserve(random_size(), std::nothrow);
      if (r) reserved.push_back(std::move(r));
    } else if (op < 95 && !reserved.empty()) {
      h.cancel(reserved.back());
      reserved.pop_back();
    } else if (op < 97) {
      for (auto& r : reserved) h.cancel(r);
      reserved.clear();
      h.close();
      h = heap::open(f.path());
    } else if (op < 98) {
      // A crash: the image as it is while open, reservations and thread
      // caches included, must reopen with exactly the durable allocations.
      const std::string image = f.path().string() + ".crash";
      REQUIRE(std::system(("cp --sparse=always " + f.path().string() + " " + image).c_str()) == 0);
      reserved.clear();
      h.close();
      std::filesystem::rename(image, f.path());
      h = heap::open(f.path());
      REQUIRE(h.stats().unclean_shutdown);
    } else if (!added) {
      h.hot_add(1 * GiB, 256 * MiB);
      added = true;
    } else if (rng() % 2) {
      try {
        h.hot_remove(1 * GiB, 256 * MiB);
        added = false;
      } catch (const daxalloc::error& e) {
        REQUIRE(e.code_value() == errc::in_use);
      }
    }
    if (step % 500 == 0) {
      require_sound(h);
      const auto s = h.stats();
      REQUIRE(s.allocated_objects == live.size());
    }
  }
  require_sound(h);
}

TEST_CASE("cancel by pointer alone: every size class; foreign and interior pointers are refused") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(64 * MiB));
  for (std::size_t size = 1; size <= 64 * 1024; size += size < 1024 ? 7 : 997) {
    CAPTURE(size);
    auto r = h.reserve(size);
    REQUIRE(h.usable_size(r.ptr) == r.size);
    CHECK_ERRC(h.cancel(static_cast<char*>(r.ptr) + 1), errc::invalid_argument);
    if (r.size >= 16) CHECK_ERRC(h.cancel(static_cast<char*>(r.ptr) + 8), errc::invalid_argument);
    h.cancel(r.ptr);
    auto again = h.reserve(size);
    CHECK(again.ptr == r.ptr);  // the object cancelled last comes back first
    h.cancel(again.ptr);
  }
  for (std::size_t size : {65537, 200000, 3 * 1024 * 1024}) {  // extents
    CAPTURE(size);
    auto r = h.reserve(size);
    CHECK(h.usable_size(r.ptr) == r.size);
    CHECK_ERRC(h.cancel(static_cast<char*>(r.ptr) + 4096), errc::invalid_argument);
    h.cancel(r.ptr);
    void* allocated = h.allocate(size);
    CHECK_ERRC(h.cancel(allocated), errc::invalid_argument);  // allocated: not a reservation
    h.deallocate(allocated);
  }
  int local = 0;
  CHECK_ERRC(h.cancel(&local), errc::invalid_argument);
  h.cancel(static_cast<void*>(nullptr));
  CHECK(h.stats().allocated_objects == 0);
  require_sound(h);
}

TEST_CASE("locality: a fresh slab hands out ascending addresses, a freed object is reused first") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(256 * MiB));
  for (std::size_t size : {64, 512}) {
    CAPTURE(size);
    std::vector<void*> objects(100000);
    for (auto& p : objects) p = h.reserve(size).ptr;
    // Ascending within each slab: the caller's walk over them is sequential.
    std::size_t descents = 0;
    for (std::size_t i = 1; i < objects.size(); ++i) descents += objects[i] < objects[i - 1];
    CHECK(descents * 100 <= objects.size() * size / (64 * 1024));  // at most one per slab
    std::vector<void*> sorted = objects;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    for (void* p : objects) h.cancel(p);
    // LIFO: what was freed last is handed out first.
    CHECK(h.reserve(size).ptr == objects.back());
    h.cancel(objects.back());
    require_sound(h);
  }
}

TEST_CASE("objects freed by another thread go back to their slabs, in bulk") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(256 * MiB));
  std::vector<void*> objects(100000);
  std::thread([&] {
    for (auto& p : objects) p = h.reserve(96).ptr;
  }).join();
  for (void* p : objects) h.cancel(p);  // remote frees, half a cache at a time
  std::thread([&] {
    std::vector<void*> again(objects.size());
    for (auto& p : again) p = h.reserve(96).ptr;
    std::sort(again.begin(), again.end());
    CHECK(std::adjacent_find(again.begin(), again.end()) == again.end());
    for (void* p : again) h.cancel(p);
  }).join();
  CHECK(h.stats().allocated_objects == 0);
  require_sound(h);
}

namespace {
std::uint64_t anonymous_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  std::uint64_t kib = 0;
  while (status >> key)
    if (key == "RssAnon:") {
      status >> kib;
      return kib * 1024;
    }
  return 0;
}
}  // namespace

TEST_CASE("DRAM: the volatile state is at most 5 % of live 8-byte objects, 1 % of 64-byte ones") {
  for (const auto& expected : {std::pair{8, 0.05}, std::pair{64, 0.01}}) {
    const int size = expected.first;  // not a binding: CAPTURE's lambda (clang 14) takes it
    const double bound = expected.second;
    CAPTURE(size);
    test::temp_file f;
    auto h = heap::create(f.path(), sized(1024 * MiB));
    (void)h.reserve(size);  // the thread cache exists
    const std::size_t n = (512 * MiB) / size;
    std::vector<void*> objects(n);  // touched before the measurement
    const std::uint64_t before = anonymous_bytes();
    for (auto& p : objects) p = h.reserve(size).ptr;
    const double state = static_cast<double>(anonymous_bytes() - before) /
                         static_cast<double>(n * static_cast<std::size_t>(size));
    MESSAGE(size << "-byte objects: volatile state " << state * 100 << " % of live bytes");
    CHECK(state <= bound);
    for (void* p : objects) h.cancel(p);
  }
}

// Issue 20: with the memmap area (format 6) the memory of a heap is one run,
// so an empty heap can hand out nearly all of its free bytes at once. 4 GiB
// present, and 64 GiB present in a sparse file (test::sparse_files: only the
// pages daxalloc writes take memory; the page descriptors are 128 MiB).
TEST_CASE("an empty heap hands out 95 % of its free bytes in one allocation") {
  for (const std::uint64_t size : {4 * GiB, 64 * GiB}) {
    CAPTURE(size >> 30);
    std::optional<test::sparse_files> sparse;
    if (size > 4 * GiB) sparse.emplace();
    test::temp_file f;
    auto h = heap::create(f.path(), sized(size));
    const auto s = h.stats();
    CHECK(s.present_bytes == size);
    CHECK(s.fragmentation == 0);
    CHECK(s.largest_free_bytes == s.free_bytes);
    const std::uint64_t ask = s.free_bytes / 100 * 95;
    MESSAGE((size >> 30) << " GiB heap: " << s.free_bytes << " B free, largest free "
                         << s.largest_free_bytes << ", allocating " << ask);
    void* p = h.allocate(ask, std::nothrow);
    REQUIRE(p != nullptr);
    CHECK(h.usable_size(p) >= ask);
    require_sound(h);
    h.deallocate(p);
    CHECK(h.stats().free_bytes == s.free_bytes);
  }
}

// Format 6: a new span's memmap block comes from the memmap area, so 2 MiB
// is enough for a hot-add into a span without memory (format 5 needed 4 MiB:
// its block carved from the add); removing it releases the block again.
TEST_CASE(
    "a 2 MiB hot-add into a span without memory is allocatable; removing it releases the span's "
    "block") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(64 * MiB, 1024 * GiB));  // the default 1 TiB range
  const auto& model = daxalloc::detail::internals(h).model();
  const std::uint64_t off = 64 * GiB;  // span 64
  REQUIRE(off >= model.geo().data_start());
  REQUIRE_FALSE(model.span_has_memory(off));
  const std::uint64_t block = model.geo().area_block(off);
  REQUIRE_FALSE(model.subsection_present(block));
  const auto before = model.stats();

  h.hot_add(off, 2 * MiB);
  require_sound(h);
  CHECK(model.subsection_present(block));
  CHECK(model.span_memmap(off) == block);
  CHECK(model.stats().area_bytes == before.area_bytes + 2 * MiB);
  CHECK(model.stats().present_bytes == before.present_bytes + 4 * MiB);  // the memory, its block
  CHECK(h.stats().free_bytes > 0);

  // Allocatable: page-sized objects until the heap is full, some of them in
  // the new memory.
  std::vector<void*> objects;
  std::uint64_t in_new = 0;
  while (void* p = h.allocate(64 * 1024, std::nothrow)) {
    objects.push_back(p);
    const std::uint64_t at = h.offset_of(p);
    if (at >= off && at < off + 2 * MiB) ++in_new;
  }
  CHECK(in_new > 0);
  require_sound(h);
  for (void* p : objects) h.deallocate(p);

  h.hot_remove(off, 2 * MiB);
  require_sound(h);
  CHECK_FALSE(model.subsection_present(block));
  CHECK(model.span_memmap(off) == 0);
  CHECK(model.stats().memmap_bytes == before.memmap_bytes);
  CHECK(model.stats().present_bytes == before.present_bytes);
  h.close();
  h = heap::open(f.path());
  require_sound(h);
  CHECK(daxalloc::detail::internals(h).model().stats().memmap_bytes == before.memmap_bytes);
}
