// One heap over several files or devices (format 8): heap::add_region and
// remove_region, open reassembling the regions, and its refusals.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "daxalloc/heap.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20, GiB = std::uint64_t{1} << 30;

heap make_heap(const test::temp_file& f, std::uint64_t max = 8 * GiB) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.max_size = max;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::create(f.path(), o);
}

daxalloc::heap_open_options flushed() {
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return o;
}

// Allocates 1 MiB extents, patterned, until one lands in [from, to).
std::vector<std::uint64_t> fill_into(heap& h, std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 400; ++i) {
    void* p = h.allocate(MiB);
    std::memset(p, static_cast<int>(got.size() & 0xff), MiB);
    h.persist().persist(p, MiB);
    got.push_back(h.offset_of(p));
    if (got.back() >= from && got.back() < to) break;
  }
  return got;
}

bool intact(const heap& h, const std::vector<std::uint64_t>& objects) {
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const auto* b = static_cast<const unsigned char*>(h.at(objects[i]));
    if (!std::all_of(b, b + MiB, [&](unsigned char c) { return c == (i & 0xff); })) return false;
  }
  return true;
}
}  // namespace

TEST_CASE("a region added online holds memory, and open reassembles the heap") {
  test::temp_file f("regions"), g("regions-member");
  std::vector<std::uint64_t> objects;
  daxalloc::region_info added;
  {
    heap h = make_heap(f);
    added = h.add_region(g.path(), 256 * MiB);
    CHECK(added.path == g.path());
    CHECK(added.offset == 7 * GiB);  // the top of the 8 GiB range, a whole span
    CHECK(added.size == 256 * MiB);
    CHECK(added.kind == h.media().kind());
    const auto regions = h.regions();
    REQUIRE(regions.size() == 2);
    CHECK(regions[0].path == f.path());
    CHECK(regions[1].offset == added.offset);
    CHECK(h.stats().present_bytes >= 64 * MiB + 254 * MiB);
    objects = fill_into(h, added.offset, added.offset + added.size);
    REQUIRE(h.offset_of(h.at(objects.back())) >= added.offset);
    CHECK(intact(h, objects));
    // Its label is never memory.
    CHECK_ERRC(h.hot_add(added.offset, 2 * MiB), errc::already_exists);
    test::require_sound(h);
  }
  heap h = heap::open(f.path(), flushed());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  REQUIRE(h.regions().size() == 2);
  CHECK(intact(h, objects));
  test::require_sound(h);
  // A second one goes below the first.
  test::temp_file k("regions-second");
  CHECK(h.add_region(k.path(), 64 * MiB).offset == 6 * GiB);
  CHECK(h.regions().size() == 3);
  test::require_sound(h);
}

TEST_CASE("open refuses a missing or swapped region, and takes its new path") {
  test::temp_file f("regions-refuse"), a("regions-a"), b("regions-b"), other("regions-other");
  {
    heap h = make_heap(f);
    (void)h.add_region(a.path(), 64 * MiB);
    (void)h.add_region(b.path(), 64 * MiB);
  }
  const auto moved = a.path().string() + ".moved";
  std::filesystem::rename(a.path(), moved);
  try {
    (void)heap::open(f.path(), flushed());
    FAIL("a heap without its region opened");
  } catch (const daxalloc::error& e) {
    CHECK(e.code() == errc::not_found);
    CHECK(std::string(e.what()).find("region_paths") != std::string::npos);
  }
  {
    daxalloc::heap_open_options o = flushed();
    o.region_paths = {moved};
    heap h = heap::open(f.path(), o);
    CHECK(h.regions()[1].path == moved);
  }
  {  // the new path was recorded
    heap h = heap::open(f.path(), flushed());
    CHECK(h.regions()[1].path == moved);
  }
  // Swapped: each file where the other one was.
  std::filesystem::rename(moved, other.path());
  std::filesystem::rename(b.path(), moved);
  std::filesystem::rename(other.path(), b.path());
  CHECK_ERRC((void)heap::open(f.path(), flushed()), errc::geometry_mismatch);
  // A region of another heap.
  test::temp_file f2("regions-refuse-2"), c("regions-c");
  {
    heap h2 = make_heap(f2);
    (void)h2.add_region(c.path(), 64 * MiB);
  }
  daxalloc::heap_open_options o = flushed();
  o.region_paths = {c.path(), moved};
  CHECK_ERRC((void)heap::open(f.path(), o), errc::geometry_mismatch);
  o.region_paths = {b.path(), moved};
  heap h = heap::open(f.path(), o);  // swapped back by path
  test::require_sound(h);
  h.close();
  std::filesystem::remove(moved);  // (no temp_file owns it)
}

TEST_CASE("remove_region empties a region as hot_remove does, then forgets it") {
  test::temp_file f("regions-remove"), g("regions-remove-member");
  heap h = make_heap(f);
  const daxalloc::region_info r = h.add_region(g.path(), 128 * MiB);
  auto objects = fill_into(h, r.offset, r.offset + r.size);
  REQUIRE(objects.back() >= r.offset);
  CHECK_ERRC(h.remove_region(g.path()), errc::in_use);
  auto pinned = h.pin(static_cast<char*>(h.at(objects.back())));
  h.deallocate(h.at(objects.back()));
  CHECK_ERRC(h.remove_region(g.path()), errc::busy);  // its memory is pinned
  pinned.reset();
  objects.pop_back();
  CHECK(h.regions().size() == 2);
  h.remove_region(g.path());
  CHECK(h.regions().size() == 1);
  CHECK(intact(h, objects));
  CHECK_ERRC(h.remove_region(g.path()), errc::not_found);
  test::require_sound(h);
  h.close();
  h = heap::open(f.path(), flushed());
  CHECK(h.regions().size() == 1);
  CHECK(intact(h, objects));
  // The file can be added again (its old label is overwritten).
  CHECK(h.add_region(g.path()).size == 128 * MiB);
  test::require_sound(h);
}

TEST_CASE("add_region refuses what cannot be a region of the heap") {
  test::temp_file f("regions-bad"), g("regions-bad-member"), small("regions-small");
  heap h = make_heap(f, 1 * GiB);  // no room above its own memory
  CHECK_ERRC((void)h.add_region(g.path(), 64 * MiB), errc::out_of_space);
  CHECK_FALSE(std::filesystem::exists(g.path()));  // made by the call, and removed again
  heap h2 = make_heap(small, 8 * GiB);
  CHECK_ERRC((void)h2.add_region(g.path(), 2 * MiB), errc::too_small);  // its label only
  CHECK_ERRC((void)h2.add_region(f.path()), errc::busy);                // the other heap's file
  test::require_sound(h2);
}

TEST_CASE("a read-only open maps the regions too") {
  test::temp_file f("regions-ro"), g("regions-ro-member");
  std::vector<std::uint64_t> objects;
  {
    heap h = make_heap(f);
    const auto r = h.add_region(g.path(), 64 * MiB);
    objects = fill_into(h, r.offset, r.offset + r.size);
  }
  heap h = heap::open_read_only(f.path(), flushed());
  CHECK(h.regions().size() == 2);
  CHECK(intact(h, objects));
  CHECK_ERRC((void)h.add_region(g.path()), errc::read_only);
}

TEST_CASE("the fences of add_region and remove_region (docs/api.md)") {
  test::temp_file f("regions-fences"), g("regions-fences-member");
  heap h = make_heap(f);
  daxalloc::reset_this_thread_persist_counters();
  (void)h.add_region(g.path(), 64 * MiB);
  const std::uint64_t add = daxalloc::this_thread_persist_counters().fences;
  daxalloc::reset_this_thread_persist_counters();
  h.remove_region(g.path());
  const std::uint64_t remove = daxalloc::this_thread_persist_counters().fences;
  MESSAGE("add_region: " << add << " fences, remove_region: " << remove);
  CHECK(add == 9);     // the label, 2 superblock updates of 2 copies each, hot-add's 4
  CHECK(remove == 5);  // hot_remove's 3, one superblock update of 2 copies
}

TEST_CASE("placement by node: a thread allocates from its node's regions first") {
  test::temp_file f("regions-numa"), a("regions-numa-1"), b("regions-numa-2");
  heap h = make_heap(f);
  const auto one = h.add_region(a.path(), 64 * MiB, 1);
  const auto two = h.add_region(b.path(), 64 * MiB, 2);
  CHECK(one.node == 1);
  CHECK(two.node == 2);
  const auto in = [&](void* p, const daxalloc::region_info& r) {
    return h.offset_of(p) >= r.offset && h.offset_of(p) < r.offset + r.size;
  };
  h.prefer_node(1);
  for (int i = 0; i < 8; ++i) CHECK(in(h.allocate(MiB), one));
  void* small = h.allocate(100);
  CHECK(in(small, one));  // its slab too
  h.prefer_node(2);
  for (int i = 0; i < 8; ++i) CHECK(in(h.allocate(MiB), two));
  CHECK(in(h.allocate(4 * MiB), two));  // a run of pageblocks
  // Node 1's memory used up: the nearest other node's next.
  h.prefer_node(1);
  int elsewhere = 0;
  for (int i = 0; i < 80; ++i) elsewhere += in(h.allocate(MiB), one) ? 0 : 1;
  CHECK(elsewhere > 0);
  CHECK_ERRC(h.prefer_node(5), errc::not_found);
  // Stats per node: the heap's own file (on tmpfs: no node), nodes 1 and 2.
  const auto s = h.stats();
  REQUIRE(s.nodes.size() == 3);
  CHECK(s.nodes[0].node == -1);
  CHECK(s.nodes[1].node == 1);
  CHECK(s.nodes[2].node == 2);
  std::uint64_t present = 0, free = 0, slabs = 0, extents = 0;
  for (const auto& n : s.nodes) {
    CHECK(n.regions == 1);
    present += n.present_bytes;
    free += n.free_bytes;
    slabs += n.slab_bytes;
    extents += n.extent_bytes;
  }
  CHECK(present == s.present_bytes);
  CHECK(free == s.free_bytes);
  CHECK(slabs == s.slab_bytes);
  CHECK(extents == s.extent_bytes);
  CHECK(s.nodes[0].arenas >= 1);  // (memory of no known node is a node of its own)
  CHECK(s.nodes[1].arenas >= 1);
  CHECK(s.nodes[2].arenas >= 1);
  CHECK(s.nodes[1].slab_bytes > 0);
  CHECK(s.nodes[1].extent_bytes >= 8 * MiB);
  CHECK(s.nodes[2].extent_bytes >= 12 * MiB);
  CHECK(s.nodes[1].free_bytes < 8 * MiB);  // used up, as above
  test::require_sound(h);
  h.close();
  h = heap::open(f.path(), flushed());  // the nodes are recorded
  CHECK(h.regions()[1].node == 1);
  CHECK(h.regions()[2].node == 2);
  h.prefer_node(2);
  CHECK(in(h.allocate(MiB), two));
}

// (In the stress suite too, so the TSan build runs these threads.)
TEST_CASE("threads allocate by node while a region is added, counted and removed") {
  test::temp_file f("regions-threads"), a("regions-threads-1"), b("regions-threads-2");
  heap h = make_heap(f);
  const auto one = h.add_region(a.path(), 64 * MiB, 1);
  std::atomic<bool> stop{false};
  std::atomic<int> outside{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      h.prefer_node(1);
      std::vector<void*> live;
      // Rounds while the regions change (placement may lag a change by a
      // round), then one after the last change, whose objects must all be
      // node 1's: the thread followed each change to an arena of node 1.
      bool last = false;
      for (int round = 0; !last; ++round) {
        last = stop.load() && round >= 20;
        for (int i = 0; i < 64; ++i) live.push_back(h.allocate(i % 16 == t ? 256 * 1024 : 64));
        for (void* p : live) {
          const std::uint64_t at = h.offset_of(p);
          if (last) outside += at < one.offset || at >= one.offset + one.size;
          h.deallocate(p);
        }
        live.clear();
      }
    });
  for (int i = 0; i < 3; ++i) {
    (void)h.add_region(b.path(), 64 * MiB, 2);  // placement changes under the threads
    CHECK(h.stats().nodes.size() == 3);
    h.remove_region(b.path());
    CHECK(h.stats().nodes.size() == 2);
  }
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(outside.load() == 0);  // node 1 had room for all of it
  test::require_sound(h);
}

TEST_CASE("small objects follow the node too: empty slabs, partial slabs after a reopen") {
  test::temp_file f("regions-slabs"), a("regions-slabs-1"), b("regions-slabs-2");
  std::uint64_t offsets[3] = {};
  const auto region_of = [&](heap& h, void* p) {
    int at = 0;
    for (int r = 1; r < 3; ++r) at = h.offset_of(p) >= offsets[r] ? r : at;
    return at;
  };
  // A thread preferring `node` takes n objects of `size`: how many landed in
  // region `want`; it frees them again if asked.
  const auto take = [&](heap& h, int node, std::size_t size, int n, bool give_back, int want) {
    int in = 0;
    std::thread([&] {
      h.prefer_node(node);
      std::vector<void*> got;
      for (int i = 0; i < n; ++i) got.push_back(h.allocate(size));
      for (void* p : got) in += region_of(h, p) == want;
      if (give_back)
        for (void* p : got) h.deallocate(p);
    }).join();
    return in;
  };
  {
    heap h = make_heap(f);
    offsets[1] = h.add_region(a.path(), 256 * MiB, 1).offset;
    offsets[2] = h.add_region(b.path(), 256 * MiB, 2).offset;
    CHECK(offsets[2] < offsets[1]);  // (regions go top down)
    std::swap(offsets[1], offsets[2]);
    // region_of counts by ascending offset: [1] is node 2's, [2] node 1's.
    CHECK(take(h, 1, 64, 2000, true, 2) == 2000);   // its slabs empty again
    CHECK(take(h, 2, 64, 2000, false, 1) == 2000);  // not node 1's empty slabs
    CHECK(take(h, 1, 4096, 300, false, 2) == 300);  // kept: partial slabs
  }
  heap h = heap::open(f.path(), flushed());       // every slab unloaded
  CHECK(take(h, 2, 4096, 300, false, 1) == 300);  // not node 1's partial slab
  CHECK(take(h, 1, 4096, 300, false, 2) == 300);
  CHECK(take(h, 1, 64, 100, false, 2) == 100);
  test::require_sound(h);
}
