// Aligned allocation and reservation (heap::allocate(size, alignment),
// heap::reserve(size, alignment)): every power of two from 1 byte to 2 MiB
// with sizes below, equal to and above it; the object is aligned, writable,
// durable (reopen), freed by pointer, cancelled, adopted and freed by
// batches; live objects do not overlap; check() stays clean; the waste in
// stats adds up. Then 1 GiB on a heap large enough, invalid alignments,
// the error_code and std::nothrow forms, read-only heaps, allocator<T>.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <boost/container/vector.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "alloc/size_classes.hpp"
#include "daxalloc/allocator.hpp"
#include "daxalloc/heap.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {
constexpr std::uint64_t KiB = 1024, MiB = KiB * KiB, GiB = KiB * MiB;
constexpr std::size_t page = 4096;

daxalloc::heap_options sized(std::uint64_t size, std::uint64_t max_size = 0) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = max_size;
  return o;
}

bool aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

// What the unaligned form takes for `size` bytes: its class, or its pages.
std::uint64_t unaligned_usable(std::size_t size) {
  size = std::max<std::size_t>(size, 1);
  if (size <= daxalloc::alloc::max_small_size)
    return daxalloc::alloc::size_classes[daxalloc::alloc::size_class_of(size)].size;
  return (size + page - 1) / page * page;
}

std::vector<std::size_t> alignments_to_2mib() {
  std::vector<std::size_t> all;
  for (std::size_t a = 1; a <= 2 * MiB; a *= 2) all.push_back(a);
  return all;
}

// Below, equal to and above the alignment, and the sizes the issue names.
std::vector<std::size_t> sizes_for(std::size_t alignment) {
  std::vector<std::size_t> sizes = {1, 24, 4096, 5000, 3 * MiB, alignment, alignment + 1};
  if (alignment > 1) sizes.push_back(alignment - 1);
  return sizes;
}

struct object {
  unsigned char* p;
  std::size_t size, alignment, usable;
};

// A pattern that tells objects apart, at both ends of each.
unsigned char mark(const object& o) {
  return static_cast<unsigned char>(o.size * 7 + o.alignment * 13 + 1);
}
void fill(const object& o) {
  o.p[0] = mark(o);
  o.p[o.size - 1] = mark(o);
}
bool filled(const object& o) {
  return o.p[0] == mark(o) && o.p[o.size - 1] == mark(o);
}

void check_disjoint(std::vector<object> objects) {
  std::sort(objects.begin(), objects.end(),
            [](const object& a, const object& b) { return a.p < b.p; });
  for (std::size_t i = 1; i < objects.size(); ++i)
    CHECK_MESSAGE(objects[i - 1].p + objects[i - 1].usable <= objects[i].p,
                  "objects " << i - 1 << " and " << i << " overlap");
}
}  // namespace

TEST_CASE("every power of two to 2 MiB: aligned, writable, durable, freed by pointer") {
  test::temp_file f;
  std::vector<object> objects;
  std::uint64_t waste = 0, base_objects = 0, base_pages = 0;
  const unsigned char* old_base = nullptr;
  {
    auto h = heap::create(f.path(), sized(512 * MiB));
    old_base = reinterpret_cast<const unsigned char*>(h.base());
    base_objects = h.stats().allocated_objects;
    base_pages = h.stats().free_bytes + h.stats().slab_bytes;
    for (const std::size_t a : alignments_to_2mib())
      for (const std::size_t size : sizes_for(a)) {
        auto* p = static_cast<unsigned char*>(h.allocate(size, a));
        INFO("size " << size << " alignment " << a);
        REQUIRE(p != nullptr);
        CHECK(aligned(p, a));
        const std::size_t usable = h.usable_size(p);
        CHECK(usable >= size);
        const object o{p, size, a, usable};
        fill(o);
        objects.push_back(o);
        waste += usable > unaligned_usable(size) ? usable - unaligned_usable(size) : 0;
        // An alignment the object's class or pages have anyway costs nothing.
        if (a <= 8 || (size > daxalloc::alloc::max_small_size && a <= page))
          CHECK(usable == unaligned_usable(size));
      }
    check_disjoint(objects);
    test::require_sound(h);
    const auto s = h.stats();
    CHECK(s.alignment_waste_bytes == waste);
    CHECK(s.allocated_objects == base_objects + objects.size());
    MESSAGE(objects.size() << " aligned objects, " << waste << " bytes of alignment waste");
  }
  std::vector<std::uint64_t> offsets;
  for (object& o : objects) offsets.push_back(static_cast<std::uint64_t>(o.p - old_base));
  auto h = heap::open(f.path());
  test::require_sound(h);
  CHECK(h.stats().alignment_waste_bytes == 0);  // since open
  CHECK(h.stats().allocated_objects == base_objects + objects.size());
  for (std::size_t i = 0; i < objects.size(); ++i) {
    object& o = objects[i];
    o.p = static_cast<unsigned char*>(h.at(offsets[i]));  // (mapped elsewhere, maybe)
    INFO("size " << o.size << " alignment " << o.alignment);
    CHECK(aligned(o.p, std::min<std::size_t>(o.alignment, 2 * MiB)));
    CHECK(filled(o));
    CHECK(h.usable_size(o.p) == o.usable);
    h.deallocate(o.p);
  }
  test::require_sound(h);
  const auto s = h.stats();
  CHECK(s.allocated_objects == base_objects);
  // Every page is free again or held by a slab (emptied slabs are kept
  // until pages run short): the heads and tails of aligned runs went back.
  CHECK(s.free_bytes + s.slab_bytes == base_pages);
}

TEST_CASE("aligned reservations: cancelled by reservation or pointer, adopted, freed in batches") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(512 * MiB));
  auto* slots = static_cast<std::uint64_t*>(h.root(8 * 64));
  std::uint64_t waste = 0;
  unsigned round = 0;
  std::vector<object> adopted;
  for (const std::size_t a : alignments_to_2mib())
    for (const std::size_t size : sizes_for(a)) {
      INFO("size " << size << " alignment " << a);
      daxalloc::reservation r = h.reserve(size, a);
      REQUIRE(r);
      CHECK(aligned(r.ptr, a));
      CHECK(r.size >= size);
      CHECK(h.usable_size(r.ptr) == r.size);
      waste += r.size > unaligned_usable(size) ? r.size - unaligned_usable(size) : 0;
      std::memset(r.ptr, 0x5a, size);
      void* p = r.ptr;
      switch (round++ % 3) {
        case 0:
          h.cancel(r);
          CHECK_FALSE(r);
          break;
        case 1:
          h.cancel(p);
          break;
        default: {
          const object o{static_cast<unsigned char*>(p), size, a, r.size};
          daxalloc::batch b(h);
          b.adopt(std::move(r));
          b.set(&slots[adopted.size() % 64], h.offset_of(p));
          b.publish();
          CHECK(h.usable_size(p) == o.usable);
          fill(o);
          adopted.push_back(o);
        }
      }
    }
  CHECK(h.stats().alignment_waste_bytes == waste);
  check_disjoint(adopted);
  test::require_sound(h);
  const std::uint64_t objects = h.stats().allocated_objects;
  for (std::size_t i = 0; i < adopted.size(); i += 4) {
    daxalloc::batch b(h);
    for (std::size_t k = i; k < std::min(i + 4, adopted.size()); ++k) {
      CHECK(filled(adopted[k]));
      b.defer_free(adopted[k].p);
    }
    b.publish();
  }
  CHECK(h.stats().allocated_objects == objects - adopted.size());
  test::require_sound(h);
}

TEST_CASE("fences per aligned call: allocate 1, deallocate 1, reserve and cancel 0") {
  test::temp_file f;
  daxalloc::heap_options o = sized(64 * MiB);
  o.mode = daxalloc::persistence_mode::cache_flush;
  auto h = heap::create(f.path(), o);
  for (const auto& [size, alignment] : {std::pair{std::size_t{64}, std::size_t{64}},
                                        {std::size_t{24}, std::size_t{32}},
                                        {std::size_t{100}, std::size_t{4096}},
                                        {std::size_t{5000}, 64 * KiB},
                                        {std::size_t{200000}, 256 * KiB}}) {
    const std::size_t n = size, a = alignment;  // (clang 14: no structured bindings in CAPTURE)
    CAPTURE(n);
    CAPTURE(a);
    h.deallocate(h.allocate(n, a));  // warm the thread cache, make the slab or own the pageblock
    daxalloc::reset_this_thread_persist_counters();
    void* p = h.allocate(n, a);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    daxalloc::reset_this_thread_persist_counters();
    h.deallocate(p);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    daxalloc::reset_this_thread_persist_counters();
    auto r = h.reserve(n, a);
    h.cancel(r);
    CHECK(daxalloc::this_thread_persist_counters().fences == 0);
    CHECK(daxalloc::this_thread_persist_counters().flushes == 0);
  }
}

TEST_CASE("threads allocating and freeing aligned objects at once (seeded)") {
  test::temp_file f;
  // Room to spare (a sparse file): the point is concurrency, not filling
  // the heap. Each 2 MiB-aligned object takes a pageblock from the pool.
  auto h = heap::create(f.path(), sized(1 * GiB));
  const char* env = std::getenv("DAXALLOC_SEED");
  const std::uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  MESSAGE("seed " << seed << " (DAXALLOC_SEED replays)");
  constexpr unsigned nr_threads = 4;
  std::vector<std::vector<object>> live(nr_threads);
  std::atomic<unsigned> overwritten{0}, out_of_space{0}, misaligned{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < nr_threads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      std::vector<object>& mine = live[t];
      for (int i = 0; i < 2000; ++i) {
        if (!mine.empty() && rng() % 2) {
          const std::size_t k = rng() % mine.size();
          if (!filled(mine[k])) ++overwritten;
          h.deallocate(mine[k].p);
          mine[k] = mine.back();
          mine.pop_back();
          continue;
        }
        const std::size_t a = std::size_t{1} << (rng() % 22);  // 1 B .. 2 MiB
        const std::size_t size = 1 + rng() % (rng() % 4 ? 512 : 300000);
        auto* p = static_cast<unsigned char*>(h.allocate(size, a, std::nothrow));
        if (p == nullptr || !aligned(p, a)) {
          ++(p ? misaligned : out_of_space);
          if (!p) MESSAGE("out of space: " << size << " bytes at " << a);
          continue;
        }
        const object o{p, size, a, h.usable_size(p)};
        fill(o);
        mine.push_back(o);
      }
    });
  for (auto& t : threads) t.join();
  CHECK(overwritten == 0);
  CHECK(out_of_space == 0);
  CHECK(misaligned == 0);
  std::vector<object> all;
  for (const auto& mine : live) all.insert(all.end(), mine.begin(), mine.end());
  check_disjoint(all);
  for (const object& o : all) CHECK(filled(o));
  test::require_sound(h);
  for (const object& o : all) h.deallocate(o.p);
  test::require_sound(h);
}

TEST_CASE("a sized cancel of an aligned extent of one page names its pages, not a class") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(64 * MiB));
  daxalloc::reservation r = h.reserve(100, 4096);
  REQUIRE(r);
  CHECK(r.size == page);
  daxalloc::reservation wrong(r.ptr, 3 * page);
  CHECK_ERRC(h.cancel(wrong), errc::invalid_argument);
  daxalloc::reservation same(r.ptr, r.size);
  h.cancel(same);
  r = {};
  test::require_sound(h);
  void* p = h.allocate(100, 4096);
  CHECK_ERRC(h.cancel(p), errc::invalid_argument);  // allocated, not reserved
  h.deallocate(p);
  test::require_sound(h);
}

TEST_CASE("1 GiB alignment on a heap large enough") {
  test::temp_file f;
  std::error_code ec;
  // Present memory is a sparse file: only what is written costs.
  auto h = heap::create(f.path(), sized(3 * GiB, 4 * GiB), ec);
  if (ec) {
    MESSAGE("skipped: no 3 GiB heap in " << test::test_dir() << ": " << ec.message());
    return;
  }
  // The memory is one run after the memmap area, but the mapping is only
  // 2 MiB aligned: whether a 1 GiB boundary of the address space falls on
  // free pages depends on where the heap is mapped.
  if (void* probe = h.allocate(3 * MiB, 1 * GiB, std::nothrow)) {
    h.deallocate(probe);
  } else {
    MESSAGE("skipped: no 1 GiB boundary of this mapping (base "
            << h.base() << ") starts 3 MiB of free pages in a 3 GiB heap");
    return;
  }
  for (const std::size_t a : {4 * MiB, 64 * MiB, 1 * GiB}) {
    for (const std::size_t size : {std::size_t{1}, 3 * MiB}) {
      INFO("size " << size << " alignment " << a);
      auto* p = static_cast<unsigned char*>(h.allocate(size, a));
      REQUIRE(p != nullptr);
      CHECK(aligned(p, a));
      p[0] = 1;
      p[size - 1] = 2;
      CHECK(h.usable_size(p) == (size + page - 1) / page * page);
      daxalloc::reservation r = h.reserve(size, a);
      REQUIRE(r);
      CHECK(aligned(r.ptr, a));
      test::require_sound(h);
      h.cancel(r);
      h.deallocate(p);
    }
  }
  test::require_sound(h);
  // Only the object stays allocated: the slack went back.
  const auto before = h.stats().free_bytes;
  void* p = h.allocate(1, 1 * GiB);
  REQUIRE(p != nullptr);
  CHECK(h.stats().free_bytes == before - page);
  h.deallocate(p);
  // More than the heap can place (more than it has free): out of space, not invalid.
  REQUIRE(h.stats().free_bytes < 3 * GiB);
  CHECK_ERRC(h.allocate(3 * GiB, 1 * GiB), errc::out_of_space);
  test::require_sound(h);
}

TEST_CASE("alignments that are not a power of two, or above 1 GiB, are refused") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  for (const std::size_t a :
       {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{4097}, 2 * GiB, 3 * GiB,
        std::numeric_limits<std::size_t>::max(), std::size_t{1} << 63}) {
    INFO("alignment " << a);
    CHECK_ERRC(h.allocate(64, a), errc::invalid_argument);
    CHECK_ERRC(h.reserve(64, a), errc::invalid_argument);
    CHECK(h.allocate(64, a, std::nothrow) == nullptr);
    CHECK_FALSE(h.reserve(64, a, std::nothrow));
    std::error_code ec;
    CHECK(h.allocate(64, a, ec) == nullptr);
    CHECK(ec == errc::invalid_argument);
    ec.clear();
    CHECK_FALSE(h.reserve(64, a, ec));
    CHECK(ec == errc::invalid_argument);
  }
  CHECK(heap::max_alignment == 1 * GiB);
  CHECK(h.stats().alignment_waste_bytes == 0);
  test::require_sound(h);
}

TEST_CASE("aligned forms: error_code and std::nothrow, out of space, empty handles") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  std::error_code ec = make_error_code(errc::corrupt);
  void* p = h.allocate(100, 256, ec);
  CHECK_FALSE(ec);  // cleared on success
  REQUIRE(p != nullptr);
  CHECK(aligned(p, 256));
  ec = make_error_code(errc::corrupt);
  daxalloc::reservation r = h.reserve(100, 64, ec);
  CHECK_FALSE(ec);
  REQUIRE(r);
  CHECK(aligned(r.ptr, 64));
  h.cancel(r);
  void* q = h.allocate(100, 128, std::nothrow);
  REQUIRE(q != nullptr);
  CHECK(aligned(q, 128));
  h.deallocate(q);
  h.deallocate(p, ec);
  CHECK_FALSE(ec);

  CHECK(h.allocate(64 * MiB, 4096, ec) == nullptr);
  CHECK(ec == errc::out_of_space);
  CHECK_FALSE(h.reserve(64 * MiB, 2 * MiB, ec));
  CHECK(ec == errc::out_of_space);
  CHECK(h.allocate(64 * MiB, 64, std::nothrow) == nullptr);
  CHECK_ERRC(h.allocate(64 * MiB, 2 * MiB), errc::out_of_space);
  CHECK_ERRC(h.reserve(64 * MiB, 8), errc::out_of_space);
  test::require_sound(h);

  heap empty;
  CHECK_ERRC(empty.allocate(64, 64), errc::invalid_argument);
  CHECK_ERRC(empty.reserve(64, 64), errc::invalid_argument);
  CHECK(empty.allocate(64, 64, std::nothrow) == nullptr);
  CHECK_FALSE(empty.reserve(64, 64, std::nothrow));
  CHECK(empty.allocate(64, 64, ec) == nullptr);
  CHECK(ec == errc::invalid_argument);
}

TEST_CASE("a read-only heap refuses aligned allocations and reservations") {
  test::temp_file f;
  heap::create(f.path(), sized(16 * MiB)).close();
  auto h = heap::open_read_only(f.path());
  CHECK_ERRC(h.allocate(64, 64), errc::read_only);
  CHECK_ERRC(h.allocate(64, 2 * MiB), errc::read_only);
  CHECK_ERRC(h.reserve(64, 4096), errc::read_only);
  CHECK(h.allocate(64, 64, std::nothrow) == nullptr);
  CHECK_FALSE(h.reserve(64, 64, std::nothrow));
  std::error_code ec;
  CHECK(h.allocate(64, 64, ec) == nullptr);
  CHECK(ec == errc::read_only);
  CHECK_FALSE(h.reserve(64, 64, ec));
  CHECK(ec == errc::read_only);
  CHECK_ERRC(h.allocate(64, 3), errc::invalid_argument);  // the argument is checked first
}

namespace {
struct alignas(64) line {
  std::uint64_t words[8];
};
struct alignas(4096) page_sized {
  unsigned char bytes[4096];
};
struct alignas(32) odd {
  unsigned char bytes[40];  // sizeof 64
};
}  // namespace

TEST_CASE("allocator<T> honours alignof(T) beyond 16 bytes") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(64 * MiB));
  const std::uint64_t waste_before = h.stats().alignment_waste_bytes;
  {
    boost::container::vector<line, daxalloc::allocator<line>> lines{daxalloc::allocator<line>(h)};
    boost::container::vector<page_sized, daxalloc::allocator<page_sized>> pages{
        daxalloc::allocator<page_sized>(h)};
    boost::container::vector<odd, daxalloc::allocator<odd>> odds{daxalloc::allocator<odd>(h)};
    for (int i = 0; i < 100; ++i) {
      lines.emplace_back();
      pages.emplace_back();
      odds.emplace_back();
      CHECK(aligned(lines.data(), alignof(line)));
      CHECK(aligned(pages.data(), alignof(page_sized)));
      CHECK(aligned(odds.data(), alignof(odd)));
    }
    test::require_sound(h);
  }
  CHECK(h.stats().alignment_waste_bytes >= waste_before);
  CHECK(daxalloc::allocator_failed_deallocations() == 0);
  test::require_sound(h);
}
