// Open reads no slab bitmap (issue 20): each slab is loaded at its first use
// (an allocation from its class, a free of one of its objects, check()).
// A heap holding objects in many slabs, reopened after a crash or a clean
// close: every old object freed, as many allocated again, with the live
// objects never handed out twice and stats() and check() exact throughout;
// the same with threads freeing old objects while another allocates (the
// races of a free loading a slab with an allocation loading it).
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "daxalloc/heap.hpp"
#include "test_util.hpp"

using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::size_t sizes[] = {24, 64, 1000, 3000};

// A heap with objects of every size of `sizes` in many slabs (some partly
// freed), at `path`: closed cleanly, or a copy of it taken while open (the
// image a crash leaves). Returns the offsets of the objects left allocated.
std::vector<std::pair<std::uint64_t, std::size_t>> make_heap(const std::filesystem::path& path,
                                                             bool clean) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.max_size = 1024 * MiB;  // no hole before the memory: the copy below stays cheap
  std::vector<std::pair<std::uint64_t, std::size_t>> live;
  const std::filesystem::path open_path =
      clean ? path : std::filesystem::path(path.string() + ".open");
  {
    auto h = heap::create(open_path, o);
    std::mt19937 rng(7);
    std::vector<std::pair<void*, std::size_t>> objects;
    for (int i = 0; i < 12000; ++i) {
      const std::size_t size = sizes[rng() % 4];
      objects.emplace_back(h.allocate(size), size);
    }
    for (auto& [p, size] : objects) {
      if (rng() % 3 == 0)
        h.deallocate(p);  // slabs partly used, some empty
      else
        live.emplace_back(h.offset_of(p), size);
    }
    if (!clean) std::filesystem::copy_file(open_path, path);
  }
  if (!clean) std::filesystem::remove(open_path);
  return live;
}

// The allocated objects by the heap's own count.
std::uint64_t allocated(const heap& h) {
  return h.stats().allocated_objects;
}
}  // namespace

TEST_CASE("reopened: every old object freed, as many allocated again, exact throughout") {
  test::temp_file f;
  bool clean = false;
  SUBCASE("after a crash") {}
  SUBCASE("after a clean close") {
    clean = true;
  }
  // check() loads every slab: once at each step in turn, so the steps
  // before it run on slabs not loaded yet.
  for (int check_at = 0; check_at < 4; ++check_at) {
    CAPTURE(check_at);
    std::filesystem::remove(f.path());
    const auto old = make_heap(f.path(), clean);
    auto h = heap::open(f.path());
    CHECK(h.stats().unclean_shutdown == !clean);
    std::set<std::uint64_t> live;
    for (const auto& [offset, size] : old) live.insert(offset);
    std::vector<void*> fresh;
    const auto step = [&](int at) {
      REQUIRE(allocated(h) == live.size());
      if (at == check_at) test::require_sound(h);
    };
    const auto free_old = [&](std::size_t from, std::size_t to) {
      for (std::size_t i = from; i < to; ++i) {
        h.deallocate(h.at(old[i].first));
        live.erase(old[i].first);
      }
    };
    const auto allocate = [&](std::size_t from, std::size_t to) {
      for (std::size_t i = from; i < to; ++i) {
        void* p = h.allocate(old[i].second);
        REQUIRE(p != nullptr);
        REQUIRE(live.insert(h.offset_of(p)).second);  // never an object handed out already
        fresh.push_back(p);
      }
    };
    step(0);
    free_old(0, old.size() / 2);
    step(1);
    allocate(0, old.size() / 2);
    step(2);
    free_old(old.size() / 2, old.size());
    allocate(old.size() / 2, old.size());
    step(3);
    test::require_sound(h);
    for (void* p : fresh) h.deallocate(p);
    CHECK(allocated(h) == 0);
    test::require_sound(h);
  }
}

TEST_CASE("reopened: two threads free old objects while a third allocates") {
  test::temp_file f;
  bool clean = false;
  SUBCASE("after a crash") {}
  SUBCASE("after a clean close") {
    clean = true;
  }
  const auto old = make_heap(f.path(), clean);
  auto h = heap::open(f.path());
  std::vector<std::uint64_t> fresh;
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back([&, t] {
        for (std::size_t i = static_cast<std::size_t>(t); i < old.size(); i += 2)
          h.deallocate(h.at(old[i].first));
      });
    threads.emplace_back([&] {
      for (std::size_t i = 0; i < old.size(); ++i)
        if (void* p = h.allocate(old[i].second)) fresh.push_back(h.offset_of(p));
    });
    for (auto& t : threads) t.join();
  }
  std::sort(fresh.begin(), fresh.end());
  CHECK(std::adjacent_find(fresh.begin(), fresh.end()) == fresh.end());
  CHECK(fresh.size() == old.size());
  CHECK(allocated(h) == fresh.size());
  test::require_sound(h);
  for (std::uint64_t offset : fresh) h.deallocate(h.at(offset));
  CHECK(allocated(h) == 0);
  test::require_sound(h);
}

// A hot-remove (and an allocation out of pages) sees the empty slabs not
// loaded yet: release_empty_slabs loads them first.
TEST_CASE("reopened: empty slabs not loaded yet are released") {
  test::temp_file f;
  const auto old = make_heap(f.path(), true);
  {
    auto h = heap::open(f.path());
    for (const auto& [offset, size] : old) h.deallocate(h.at(offset));
  }
  auto h = heap::open(f.path());  // every slab empty, none loaded
  CHECK(allocated(h) == 0);
  const auto before = h.stats();
  std::uint64_t slabs = 0;
  for (const auto& c : before.size_classes) slabs += c.slabs;
  REQUIRE(slabs > 0);
  // Extents of the whole heap's size: only with the empty slabs' pages back.
  std::vector<void*> extents;
  while (void* p = h.allocate(4 * MiB, std::nothrow)) extents.push_back(p);
  const auto after = h.stats();
  std::uint64_t left = 0;
  for (const auto& c : after.size_classes) left += c.slabs;
  CHECK(left == 0);
  test::require_sound(h);
}
