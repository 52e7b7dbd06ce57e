// The page allocator on its own: buddy splits and merges through the page
// shadow, lowest addresses first, best fit of pageblock runs, exact stats,
// allocated_length, isolate / add_span, rebuild, and random operations
// against a model (seeded; DAXALLOC_SEED replays).
#include <doctest/doctest.h>

#include <atomic>
#include <bit>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "alloc/pageblock_bitmap.hpp"
#include "test_util.hpp"

using namespace daxalloc::alloc;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t pb = pageblock_pages;
// 64 MiB present in a 1 GiB range: the head (pageblock 0) and the memmap
// area's one block (1), then 30 usable.
constexpr std::uint64_t first_usable = 2 * pb, usable_pages = 30 * pb;

struct fixture {
  test::temp_file file;
  std::unique_ptr<daxalloc::sparse::memory_model> model;
  explicit fixture(std::uint64_t size = 64 * MiB) {
    daxalloc::sparse::create_options o;
    o.size = size;
    o.max_range = std::uint64_t{1} << 30;  // memory right after the memmap area, at 4 MiB
    model = daxalloc::sparse::memory_model::create(file.path(), o);
  }
};

void rebuild_clean(page_allocator& pages) {
  std::vector<std::string> problems;
  CHECK(pages.rebuild(problems).empty());
  CHECK(problems.empty());
}
}  // namespace

TEST_CASE("buddy blocks: split keeping the lower half, merge on free, lowest first") {
  fixture f;
  page_allocator pages(*f.model);
  rebuild_clean(pages);
  CHECK(pages.stats().free_pages == usable_pages);

  const auto a = pages.allocate(1, migratetype::unmovable);
  const auto b = pages.allocate(1, migratetype::unmovable);
  const auto c = pages.allocate(3, migratetype::unmovable);  // order 2, its last page freed again
  const auto d = pages.allocate(8, migratetype::unmovable);
  REQUIRE((a && b && c && d));
  CHECK(*a == first_usable);
  CHECK(*b == first_usable + 1);
  CHECK(*c == first_usable + 4);
  CHECK(*d == first_usable + 8);
  CHECK(pages.allocated_length(*a) == 1);
  CHECK(pages.allocated_length(*c) == 3);
  CHECK(pages.allocated_length(*c + 1) == 0);
  CHECK(pages.allocated_length(*c + 3) == 0);
  CHECK(pages.allocated_length(0) == 0);
  CHECK(pages.allocated_length(std::uint64_t{1} << 40) == 0);  // beyond the range
  CHECK(pages.is_free(*c + 3));
  CHECK_FALSE(pages.is_free(*c + 2));
  CHECK(pages.is_free(first_usable + 2));
  // The smallest sufficient order first: c's freed last page, not the
  // order-1 block below it.
  CHECK(pages.allocate(1, migratetype::unmovable) == *c + 3);
  CHECK(pages.stats().free_pages == usable_pages - 14);
  CHECK(pages.stats().owned_pageblocks[0] == 1);

  for (auto [pfn, n] : {std::pair{*a, 1}, {*c, 3}, {*c + 3, 1}, {*b, 1}, {*d, 8}}) {
    pages.free(pfn, static_cast<std::uint64_t>(n));
    CHECK(pages.allocated_length(pfn) == 0);
  }
  const page_stats s = pages.stats();
  CHECK(s.free_pages == usable_pages);
  CHECK(s.owned_pageblocks[0] == 0);  // merged back into one order-9 block the zone keeps
  CHECK(s.pool_pageblocks == 30);
  CHECK(s.largest_free_pages == usable_pages);
  CHECK(pages.release_free_pageblocks() == 1);
  CHECK(pages.release_free_pageblocks() == 0);
  CHECK(pages.allocate(512, migratetype::large) == first_usable);  // the pool has it back
}

TEST_CASE("runs of pageblocks: best fit, allocated_length across pageblocks, tails in the zone") {
  fixture f;
  page_allocator pages(*f.model, 2);
  rebuild_clean(pages);
  const auto a = pages.allocate(2 * pb, migratetype::large);
  const auto b = pages.allocate(pb, migratetype::large);
  const auto c = pages.allocate(3 * pb, migratetype::large);
  const auto d = pages.allocate(pb, migratetype::large);
  REQUIRE((a && b && c && d));
  CHECK(*b == *a + 2 * pb);
  CHECK(pages.allocated_length(*c) == 3 * pb);
  pages.free(*a, 2 * pb);
  pages.free(*c, 3 * pb);
  CHECK(pages.allocated_length(*c) == 0);
  // Holes of 2 and 3 pageblocks and a run of 23 at the end: each request
  // takes the smallest that fits.
  CHECK(pages.allocate(3 * pb, migratetype::large) == *c);
  CHECK(pages.allocate(2 * pb, migratetype::large) == *a);
  CHECK(pages.stats().largest_free_pages == 23 * pb);

  // 1000 pages: two pageblocks, the second one's last 24 pages go to zone 1.
  const auto e = pages.allocate(1000, migratetype::large, 1);
  REQUIRE(e);
  CHECK(pages.allocated_length(*e) == 1000);
  CHECK(pages.is_free(*e + 1000));
  CHECK_FALSE(pages.is_free(*e + 999));
  page_stats s = pages.stats();
  CHECK(s.free_pages == 21 * pb + 24);
  CHECK(s.owned_pageblocks[static_cast<unsigned>(migratetype::large)] == 1);
  CHECK(s.largest_free_pages == 21 * pb);
  const auto tail = pages.allocate(16, migratetype::large, 1);  // from that tail
  CHECK(tail == *e + 1008);
  pages.free(*tail, 16);
  pages.free(*e, 1000);
  s = pages.stats();
  CHECK(s.free_pages == 23 * pb);
  CHECK(s.largest_free_pages == 23 * pb);  // the zone's wholly free pageblock merged into the run
  CHECK(s.pool_pageblocks == 23);
  CHECK_FALSE(pages.allocate(23 * pb, migratetype::large));  // until zone 1 lets go of one
  CHECK(pages.release_free_pageblocks() == 1);
  CHECK(pages.allocate(23 * pb, migratetype::large) == *e);
  CHECK_FALSE(pages.allocate(1, migratetype::movable));
}

TEST_CASE("aligned runs: only the pages asked for stay allocated, head and tail go back") {
  fixture f;
  page_allocator pages(*f.model);
  rebuild_clean(pages);
  REQUIRE(pages.allocate(1, migratetype::movable) == first_usable);  // nothing is aligned by luck
  struct ask {
    std::uint64_t pages, align, phase;
  };
  std::vector<std::pair<std::uint64_t, std::uint64_t>> held;  // pfn, pages
  std::uint64_t used = 1;
  for (const ask a : {ask{1, 1, 0}, ask{1, 16, 0}, ask{3, 64, 0}, ask{100, 512, 0}, ask{1, 512, 0},
                      ask{600, 512, 0}, ask{5, 1024, 0}, ask{700, 2048, 512}, ask{3, 4096, 1536}}) {
    CAPTURE(a.pages);
    CAPTURE(a.align);
    const auto pfn = pages.allocate_aligned(a.pages, a.align, a.phase, migratetype::movable);
    REQUIRE(pfn);
    CHECK((*pfn + a.phase) % a.align == 0);
    CHECK(pages.allocated_length(*pfn) == a.pages);
    used += a.pages;
    CHECK(pages.stats().free_pages == usable_pages - used);  // head and tail went back
    for (const auto& [other, n] : held) CHECK((*pfn + a.pages <= other || other + n <= *pfn));
    held.emplace_back(*pfn, a.pages);
  }
  // A phase that no run of a 2 MiB-aligned mapping can meet.
  CHECK_FALSE(pages.allocate_aligned(1, 1024, 3, migratetype::movable));
  // Larger than the free pageblocks can hold.
  CHECK_FALSE(pages.allocate_aligned(1, 32 * pb, 0, migratetype::large));
  for (const auto& [pfn, n] : held) pages.free(pfn, n);
  pages.free(first_usable, 1);
  CHECK(pages.stats().free_pages == usable_pages);
  pages.release_free_pageblocks();
  CHECK(pages.stats().pool_pageblocks == 30);
}

TEST_CASE("isolate takes only wholly free pool pageblocks; add_span gives them back") {
  fixture f;
  page_allocator pages(*f.model, 2);
  rebuild_clean(pages);
  const auto x = pages.allocate(4, migratetype::movable);  // pageblock 2, owned by zone 0
  REQUIRE(x);
  CHECK_FALSE(pages.isolate(4 * MiB, 4 * MiB));
  pages.free(*x, 4);
  CHECK_FALSE(pages.isolate(4 * MiB, 4 * MiB));  // zone 0 keeps the pageblock
  CHECK(pages.release_free_pageblocks() == 1);
  CHECK(pages.isolate(0, 8 * MiB));  // metadata pageblocks are skipped
  CHECK_FALSE(pages.is_free(first_usable));
  CHECK(pages.stats().free_pages == 28 * pb);
  CHECK(pages.allocate(pb, migratetype::large) == first_usable + 2 * pb);
  pages.add_span(4 * MiB, 4 * MiB);
  CHECK(pages.is_free(first_usable));
  CHECK(pages.allocate(2 * pb, migratetype::large) == first_usable);
}

TEST_CASE("rebuild forgets the volatile state and starts again from the media") {
  fixture f;
  page_allocator pages(*f.model, 2);
  rebuild_clean(pages);
  const auto x = pages.allocate(5, migratetype::unmovable, 1);
  const auto y = pages.allocate(700, migratetype::large, 1);
  REQUIRE((x && y));
  // Nothing was written to the memmap, so after a rebuild all is free again.
  rebuild_clean(pages);
  CHECK(pages.allocated_length(*x) == 0);
  CHECK(pages.allocated_length(*y) == 0);
  const page_stats s = pages.stats();
  CHECK(s.free_pages == usable_pages);
  CHECK(s.largest_free_pages == usable_pages);
  CHECK(pages.allocate(usable_pages, migratetype::large) == first_usable);
}

TEST_CASE("random allocations and frees against a model, in several zones and threads") {
  const char* env = std::getenv("DAXALLOC_SEED");
  const std::uint64_t seed = env ? std::strtoull(env, nullptr, 0) : std::random_device{}();
  MESSAGE("seed " << seed);
  fixture f(256 * MiB);
  const std::uint64_t usable = 126 * pb;  // 128 pageblocks minus head and memmap
  page_allocator pages(*f.model, 4);
  rebuild_clean(pages);

  // Each thread its own zone and its own runs; frees cross zones when a
  // thread frees a run another zone's pageblock holds (runs from the pool).
  std::atomic<int> wrong{0};  // checked after the threads: doctest asserts on the main thread
  const auto run = [&](unsigned zone, std::uint64_t thread_seed,
                       std::map<std::uint64_t, std::uint64_t>& live) {
    std::mt19937_64 rng(thread_seed);
    for (int step = 0; step < 4000; ++step) {
      if (live.empty() || rng() % 3 != 0) {
        const std::uint64_t n = rng() % 8 == 0 ? 1 + rng() % 1500 : 1 + rng() % 40;
        const auto type = static_cast<migratetype>(rng() % 3);
        const auto pfn = pages.allocate(n, type, zone);
        if (!pfn) continue;
        if (pages.allocated_length(*pfn) != n) ++wrong;
        if (n < pb && *pfn % (std::uint64_t{1} << std::bit_width(n - 1)) != 0) ++wrong;
        live.emplace(*pfn, n);
      } else {
        auto it = live.begin();
        std::advance(it, static_cast<long>(rng() % live.size()));
        pages.free(it->first, it->second);
        live.erase(it);
      }
    }
  };
  std::map<std::uint64_t, std::uint64_t> live[2];
  std::thread other([&] { run(1, seed + 1, live[1]); });
  run(0, seed, live[0]);
  other.join();
  CHECK(wrong == 0);

  std::map<std::uint64_t, std::uint64_t> all(live[0].begin(), live[0].end());
  all.insert(live[1].begin(), live[1].end());
  std::uint64_t in_use = 0, end = 0;
  for (auto [pfn, n] : all) {
    CHECK(pfn >= end);  // no overlap
    end = pfn + n;
    in_use += n;
    CHECK(pages.allocated_length(pfn) == n);
    CHECK_FALSE(pages.is_free(pfn));
    CHECK_FALSE(pages.is_free(pfn + n - 1));
  }
  CHECK(pages.stats().free_pages == usable - in_use);
  for (auto [pfn, n] : all) pages.free(pfn, n);
  const page_stats s = pages.stats();
  CHECK(s.free_pages == usable);
  CHECK(s.largest_free_pages == usable);
  CHECK(s.pool_pageblocks == 126);
  for (unsigned t = 0; t < 8; ++t) CHECK(s.owned_pageblocks[t] == 0);
  pages.release_free_pageblocks();
  CHECK(pages.allocate(usable, migratetype::large) == first_usable);
}

TEST_CASE("pageblock_bitmap: runs across words and summary words, best fit, unite") {
  const std::uint64_t size = std::uint64_t{1} << 19;  // the pageblocks of 1 TiB
  pageblock_bitmap set(size);
  CHECK(set.next_set(0) == size);
  CHECK(set.next_clear(0) == 0);
  CHECK_FALSE(set.best_fit(1));
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> runs = {
      {0, 1}, {63, 2}, {4095, 3}, {9000, 200}, {300000, 64}, {size - 5, 5}};
  for (auto [first, count] : runs)
    for (std::uint64_t i = first; i < first + count; ++i) set.insert(i);
  CHECK(set.count() == 275);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;
  set.for_each_run(
      [&](std::uint64_t first, std::uint64_t count) { seen.emplace_back(first, count); });
  CHECK(seen == runs);
  CHECK(set.next_set(1) == 63);
  CHECK(set.next_set(4098) == 9000);
  CHECK(set.next_set(9200) == 300000);
  CHECK(set.next_set(300064) == size - 5);
  CHECK(set.next_clear(size - 5) == size);
  CHECK(set.best_fit(2) == 63);
  CHECK(set.best_fit(4) == size - 5);
  CHECK(set.best_fit(6) == 300000);
  CHECK_FALSE(set.best_fit(201));
  for (std::uint64_t i = 300000; i < 300064; ++i) set.erase(i);
  CHECK(set.next_set(9200) == size - 5);

  pageblock_bitmap other(size);
  other.insert(300000);
  other.insert(63);
  set.unite(other);
  CHECK(set.count() == 212);
  CHECK(set.contains(300000));
  CHECK(set.next_set(9200) == 300000);
  set.clear();
  CHECK(set.count() == 0);
  CHECK(set.next_set(0) == size);
}

TEST_CASE("a zone takes pool pageblocks from its preferred ranges first (its node's memory)") {
  fixture f;
  page_allocator pages(*f.model, 2);
  rebuild_clean(pages);
  // Zone 1 prefers pageblocks 20..21, then 10..11; zone 0 takes the lowest.
  pages.place(nullptr, {{}, {{20, 22}, {10, 11}}});
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 4; ++i) {  // half a pageblock each: a pool pageblock for every second
    const auto p = pages.allocate(pb / 2, migratetype::unmovable, 1);
    REQUIRE(p);
    got.push_back(*p / pb);
  }
  CHECK(got == std::vector<std::uint64_t>{20, 20, 21, 21});
  const auto p = pages.allocate(pb / 2, migratetype::unmovable, 1);
  REQUIRE(p);
  CHECK(*p / pb == 10);
  const auto next = pages.allocate(pb / 2, migratetype::unmovable, 1);
  const auto beyond = pages.allocate(pb / 2, migratetype::unmovable, 1);  // ranges used up
  REQUIRE((next && beyond));
  CHECK(*next / pb == 10);
  CHECK(*beyond / pb == first_usable / pb);
  const auto other = pages.allocate(1, migratetype::unmovable, 0);
  REQUIRE(other);
  CHECK(*other / pb == first_usable / pb + 1);
  // Runs of pageblocks (large extents) too: in a preferred range where one fits.
  pages.place(nullptr, {{{24, 28}}, {{20, 22}, {10, 11}}});
  const auto run = pages.allocate(3 * pb, migratetype::large, 0);
  REQUIRE(run);
  CHECK(*run / pb == 24);
  const auto too_big = pages.allocate(3 * pb, migratetype::large, 0);  // 1 left there: elsewhere
  REQUIRE(too_big);
  CHECK((*too_big / pb < 24 || *too_big / pb + 3 > 28));  // not inside it: no room there
}
