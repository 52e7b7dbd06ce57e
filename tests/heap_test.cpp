// The heap: life cycle, durable allocation and free, reservations, the root,
// statistics, hotplug with allocations, and a model-based random test.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "daxalloc/heap.hpp"
#include "heap/heap_impl.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20, GiB = std::uint64_t{1} << 30;

daxalloc::heap_options sized(std::uint64_t size, std::uint64_t max = 0) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = max;
  return o;
}

using test::require_sound;

struct root_type {
  std::uint64_t magic;
  std::uint64_t object;  // offset of an object
};
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

TEST_CASE("objects larger than a section, and hot-added memory is allocatable at once") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB, 4 * GiB));
  CHECK(h.allocate(200 * MiB, std::nothrow) == nullptr);
  h.hot_add(16 * MiB, 496 * MiB);     // the rest of span 0: sections 0..3
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

TEST_CASE("size classes waste at most 12.5 % (7 bytes below 64)") {
  using namespace daxalloc::alloc;
  for (std::size_t s = 1; s <= max_small_size; ++s) {
    const auto& c = size_classes[size_class_of(s)];
    REQUIRE(c.size >= s);
    REQUIRE((c.size - s <= 7 || (c.size - s) * 8 <= c.size));
  }
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
      if (r) reserved.push_back(r);
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

TEST_CASE("first throughput figures next to glibc malloc (not a benchmark)") {
  test::temp_file f;
  auto o = sized(256 * MiB);
  o.mode = daxalloc::persistence_mode::cache_flush;  // CLWB + SFENCE, as on DAX
  auto h = heap::create(f.path(), o);
  constexpr int n = 200000;
  std::vector<void*> ptrs(1000);
  const auto time = [&](auto&& body) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    return n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e6;
  };
  const double reserve = time([&] {
    for (int i = 0; i < n; ++i) {
      auto r = h.reserve(64, std::nothrow);
      h.cancel(r);
    }
  });
  const double durable = time([&] {
    for (int i = 0; i < n; ++i) h.deallocate(h.allocate(64));
  });
  const double glibc = time([&] {
    for (int i = 0; i < n; ++i) {
      void* volatile p = std::malloc(64);
      std::free(p);
    }
  });
  MESSAGE("64 B, one thread: reserve+cancel "
          << reserve << " Mops/s, allocate+deallocate (" << std::string(h.persist().name()) << ") "
          << durable << " Mops/s, glibc malloc+free " << glibc << " Mops/s");
}
