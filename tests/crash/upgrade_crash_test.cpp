// Crash-state exploration of `daxalloc upgrade` (sparse::upgrade): at every
// fence, every image must be a heap of the old format (2, 3 or 4) that
// upgrade converts again, or a format 5 heap that opens; either way, after
// upgrade and open, the heap is sound and holds what it held before (the
// same allocations, root and named objects).
#include <doctest/doctest.h>

#include <cstring>
#include <optional>
#include <random>
#include <sstream>

#include "crash/crash_sim.hpp"
#include "daxalloc/heap.hpp"
#include "heap/access.hpp"
#include "heap/heap_impl.hpp"
#include "old_images.hpp"
#include "sparse/upgrade.hpp"
#include "test_util.hpp"

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t heap_size = 16 * MiB;

daxalloc::region open_region(const std::filesystem::path& p) {
  daxalloc::region_options o;
  o.mode = daxalloc::persistence_mode::none;  // the simulator decides what is durable
  return daxalloc::region::open(p, o);
}

// What the heap holds, after upgrading and opening the image.
std::string state_after_upgrade(const std::filesystem::path& p) {
  try {
    {
      auto r = open_region(p);
      (void)daxalloc::detail::upgrade_region(r);
    }
    daxalloc::heap_open_options o;
    o.mode = daxalloc::persistence_mode::none;
    auto h = daxalloc::heap::open(p, o);
    if (auto problems = h.check(); !problems.empty()) return "check failed: " + problems.front();
    std::ostringstream out;
    for (auto [offset, size] : daxalloc::detail::internals(h).allocations())
      out << offset << "+" << size << " ";
    out << "root " << h.offset_of(h.root<std::uint64_t>());
    for (const auto& n : h.named_objects()) out << " " << n.name << "@" << h.offset_of(n.object);
    return out.str();
  } catch (const daxalloc::error& e) {
    return std::string("failed: ") + e.what();
  }
}
}  // namespace

void explore_upgrade(std::uint32_t from) {
  test::temp_file work("upgrade-crash-work"), image("upgrade-crash-image"),
      reference("upgrade-crash-reference");
  {
    daxalloc::heap_options o;
    o.size = heap_size;
    o.max_size = 1024 * MiB;
    o.mode = daxalloc::persistence_mode::none;
    std::optional<test::legacy_slabs> legacy_encoding;  // format 5 made the slabs of today
    test::legacy_memmap legacy_layout;
    if (from < 5) legacy_encoding.emplace();
    auto h = daxalloc::heap::create(work.path(), o);
    *h.root<std::uint64_t>() = 42;
    for (std::size_t size : {24, 200, 5000, 300000}) (void)h.allocate(size);
    for (int i = 0; i < 17; ++i) (void)h.construct<int>("n" + std::to_string(i))(i);
  }
  test::downgrade(work.path(), from);
  std::filesystem::copy_file(work.path(), reference.path());
  const std::string expected = state_after_upgrade(reference.path());
  REQUIRE(expected.rfind("failed", 0) != 0);
  std::vector<crash::crash_point> points;
  const std::vector<crash::range> watched{{0, heap_size}};
  {
    auto r = open_region(work.path());
    crash::simulator sim(r, watched);
    (void)daxalloc::detail::upgrade_region(r);
    const auto problems = sim.finish();
    for (const auto& p : problems) MESSAGE(p);
    CHECK(problems.empty());
    points = sim.points();
  }
  std::mt19937_64 rng(20261207);
  std::size_t states = 0, failures = 0;
  for (const auto& point : points)
    states += crash::explore(point, watched, image.path(), rng, [&](const auto& p) {
      const std::string got = state_after_upgrade(p);
      if (got != expected && ++failures <= 5)
        MESSAGE("fence " << point.fence << ": " << got << "\n  expected " << expected);
    });
  MESSAGE("upgrade from format " << from << ": " << points.size() << " crash points, " << states
                                 << " crash states, " << failures << " failures");
  CHECK(failures == 0);
}

TEST_CASE("crash states of an upgrade from format 2") {
  explore_upgrade(2);
}
TEST_CASE("crash states of an upgrade from format 3") {
  explore_upgrade(3);
}
TEST_CASE("crash states of an upgrade from format 4") {
  explore_upgrade(4);
}
TEST_CASE("crash states of an upgrade from format 5") {
  explore_upgrade(5);
}
