// Pins by address (heap::pin(p)): a ZONE_DEVICE page's reference count and
// its dev_pagemap's page_free callback, for objects. A pinned object that is
// freed is free on the media at once, and reused only after its last unpin.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

heap make_heap(const test::temp_file& f, std::uint64_t size = 64 * MiB) {
  return test::make_small_heap(f, size);
}

bool listed(const heap& h, const void* p) {
  bool found = false;
  h.for_each_object([&](const daxalloc::object_info& o) {
    found = found || o.offset == h.offset_of(p);
    return !found;
  });
  return found;
}
}  // namespace

TEST_CASE("pins nest, guards release them, and stats and regions count them") {
  test::temp_file f("pins");
  heap h = make_heap(f);
  auto* small = static_cast<char*>(h.allocate(100));
  auto* big = static_cast<char*>(h.allocate(64 * 1024 + 1, 4096));
  CHECK(h.pin_count(small) == 0);
  {
    auto g1 = h.pin(small);
    auto g2 = h.pin(small);
    auto g3 = h.pin(big);
    CHECK(g1.get() == small);
    CHECK(h.pin_count(small) == 2);
    CHECK(h.pin_count(big) == 1);
    const daxalloc::heap_stats s = h.stats();
    CHECK(s.pinned_objects == 2);
    CHECK(s.pins == 3);
    CHECK(s.pinned_bytes == h.usable_size(small) + h.usable_size(big));
    CHECK(s.pinned_freed_objects == 0);
    const auto regions = h.regions();
    REQUIRE(regions.size() == 1);
    CHECK(regions[0].offset == 0);
    CHECK(regions[0].size == h.size());
    CHECK(regions[0].kind == h.media().kind());
    CHECK(regions[0].path == f.path());
    CHECK(regions[0].align == h.media().align());
    CHECK(regions[0].pins == 3);
    CHECK(regions[0].pinned_objects == 2);
    g2.reset();
    CHECK(h.pin_count(small) == 1);
  }
  CHECK(h.pin_count(small) == 0);
  CHECK(h.pin_count(big) == 0);
  CHECK(h.stats().pins == 0);
  CHECK(h.regions()[0].pins == 0);
  h.deallocate(small);
  h.deallocate(big);
  CHECK(h.check().empty());
}

TEST_CASE("pin refuses what is not an allocated object, and unpin what is not pinned") {
  test::temp_file f("pins-refuse");
  heap h = make_heap(f);
  auto* p = static_cast<char*>(h.allocate(100));
  CHECK_ERRC((void)h.pin(p + 8), errc::invalid_argument);  // not an object's start
  int outside = 0;
  CHECK_ERRC((void)h.pin(&outside), errc::invalid_argument);
  auto* q = static_cast<char*>(h.allocate(100));
  h.deallocate(q);
  CHECK_ERRC((void)h.pin(q), errc::invalid_argument);  // free (cached by this thread)
  daxalloc::reservation r = h.reserve(100);
  CHECK_ERRC((void)h.pin(static_cast<char*>(r.ptr)), errc::invalid_argument);  // reserved
  h.cancel(r);
  CHECK_ERRC(h.unpin(p), errc::invalid_argument);
  struct slot {
    daxalloc::pptr<char> owner;
  };
  auto* root = h.root<slot>();
  char* m = h.allocate_movable(root->owner, 64, [](char* at) { std::memset(at, 1, 64); });
  CHECK_ERRC((void)h.pin(m), errc::invalid_argument);  // pinned through its owner only
  {
    auto g = h.pin(root->owner);
    CHECK(g.get() == m);
  }
  // A pinned object freed: its memory waits, and it cannot be pinned again.
  auto g = h.pin(p);
  h.deallocate(p);
  CHECK_ERRC((void)h.pin(p), errc::invalid_argument);
  CHECK_ERRC(h.deallocate(p), errc::invalid_argument);  // a double free is still one
  g.reset();
  CHECK_ERRC(h.unpin(p), errc::invalid_argument);
  CHECK(h.check().empty());
}

TEST_CASE(
    "a pinned object freed is free on the media at once and reused only after its last unpin") {
  test::temp_file f("pins-free");
  heap h = make_heap(f);
  SUBCASE("a slab object, freed by deallocate") {
    auto* p = static_cast<char*>(h.allocate(256));
    auto g = h.pin(p);
    (void)h.pin(p).get();  // a temporary guard: pins and unpins at once
    auto extra = h.pin(p);
    h.deallocate(p);
    CHECK_FALSE(listed(h, p));  // durable: as after a crash, the object is free
    CHECK(h.stats().pinned_freed_objects == 1);
    CHECK(h.stats().pinned_freed_bytes == 256);
    std::vector<void*> taken;
    for (int i = 0; i < 20000; ++i) taken.push_back(h.allocate(256));
    CHECK(std::find(taken.begin(), taken.end(), p) == taken.end());
    CHECK(h.check().empty());
    extra.reset();
    CHECK(h.pin_count(p) == 1);
    g.reset();  // the last unpin: the memory goes back (to this thread's cache, on top)
    CHECK(h.stats().pinned_freed_objects == 0);
    CHECK(h.allocate(256) == p);
    for (void* t : taken) h.deallocate(t);
    CHECK(h.check().empty());
  }
  SUBCASE("an I/O extent, freed in a batch") {
    struct slot {
      daxalloc::pptr<char> at;
    };
    auto* root = h.root<slot>();
    daxalloc::reservation r = h.reserve(256 * 1024, 4096);
    auto* p = static_cast<char*>(r.ptr);
    REQUIRE(h.offset_of(p) % 4096 == 0);
    {
      daxalloc::batch b(h);
      b.adopt(std::move(r));
      b.set(root->at, p);
      b.publish();
    }
    REQUIRE(listed(h, p));
    auto g = h.pin(p);
    h.free_clear(root->at);
    CHECK(root->at.get() == nullptr);
    CHECK_FALSE(listed(h, p));
    std::vector<void*> taken;
    for (int i = 0; i < 100; ++i) taken.push_back(h.allocate(256 * 1024, 4096));
    for (void* t : taken) CHECK_FALSE((t <= p && p < static_cast<char*>(t) + 256 * 1024));
    for (void* t : taken) h.deallocate(t);
    CHECK(h.check().empty());
    g.reset();
    CHECK(h.stats().pinned_freed_objects == 0);
    CHECK(h.check().empty());
  }
}

TEST_CASE("hot_remove refuses a span with pins (busy, with how many), freed ones included") {
  test::temp_file f("pins-hotremove");
  heap h = make_heap(f, 128 * MiB);
  auto* p = static_cast<char*>(h.allocate(2 * MiB, 2 * MiB));
  const std::uint64_t at = h.offset_of(p);
  REQUIRE(at % (2 * MiB) == 0);
  auto g1 = h.pin(p);
  auto g2 = h.pin(p);
  h.deallocate(p);
  try {
    h.hot_remove(at, 2 * MiB);
    FAIL("hot_remove of a pinned span went on");
  } catch (const daxalloc::error& e) {
    CHECK(e.code() == errc::busy);
    CHECK(std::string(e.what()).find("2 pins on 1 object") != std::string::npos);
    CHECK(std::string(e.what()).find("1 of them freed") != std::string::npos);
  }
  g1.reset();
  CHECK_ERRC(h.hot_remove(at, 2 * MiB), errc::busy);
  g2.reset();
  h.hot_remove(at, 2 * MiB);
  CHECK(h.check().empty());
}

TEST_CASE("pins are volatile: close drops them, and a freed pinned object is free after reopen") {
  test::temp_file f("pins-reopen");
  std::uint64_t at = 0;
  {
    heap h = make_heap(f);
    auto* p = h.allocate(64 * 1024 + 1, 4096);
    at = h.offset_of(p);
    auto g = h.pin(static_cast<char*>(p));
    h.deallocate(p);
    h.close();  // with the pin held: the guard's unpin meets a closed handle, and does nothing
  }
  heap h = heap::open(f.path());
  CHECK(h.stats().pins == 0);
  CHECK(h.check().empty());
  CHECK_ERRC((void)h.pin(static_cast<char*>(h.at(at))), errc::invalid_argument);
}

TEST_CASE("pins, unpins and frees of pinned objects on several threads") {
  test::temp_file f("pins-threads");
  heap h = make_heap(f);
  constexpr int objects = 512, rounds = 20000;
  std::vector<char*> live(objects);
  for (auto& p : live) p = static_cast<char*>(h.allocate(128));
  std::atomic<std::uint64_t> pins{0}, torn{0};
  // A reader pins live objects and checks that their bytes stay while pinned.
  std::thread reader([&] {
    for (int r = 0; r < rounds; ++r) {
      const int i = r % objects;
      char* p = live[static_cast<std::size_t>(i)];
      auto g = h.pin(p);
      std::memset(p, i & 0xff, 128);
      for (int k = 0; k < 128; ++k)
        if (p[k] != static_cast<char>(i & 0xff)) torn.fetch_add(1, std::memory_order_relaxed);
      pins.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // Meanwhile this thread pins, frees while pinned, allocates, and unpins.
  for (int r = 0; r < 2000; ++r) {
    void* p = h.allocate(128);
    auto g = h.pin(static_cast<char*>(p));
    h.deallocate(p);
    void* q = h.allocate(128);
    CHECK(q != p);
    h.deallocate(q);
  }
  reader.join();
  CHECK(pins.load() == rounds);
  CHECK(torn.load() == 0);
  CHECK(h.stats().pins == 0);
  for (char* p : live) h.deallocate(p);
  CHECK(h.check().empty());
}
