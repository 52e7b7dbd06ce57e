// The page allocator's parts on their own: the pageblock bitmap of the pool.
#include <doctest/doctest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "alloc/pageblock_bitmap.hpp"

using namespace daxalloc::alloc;

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
