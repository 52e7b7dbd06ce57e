// Crash-state exploration of the sparse memory model: create, hot-add,
// hot-remove and pageblock-flag changes, and recovery (open) itself. For every
// fence of an operation, every crash image the simulator derives must open
// into a sound heap whose state is the one before or the one after the
// operation, with earlier data intact, and must stay usable.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <random>
#include <sstream>

#include "crash/crash_sim.hpp"
#include "sparse/memory_model.hpp"
#include "test_util.hpp"

using namespace daxalloc::sparse;
using crash::range;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20, GiB = std::uint64_t{1} << 30;
// A 16 GiB range: the head (2 MiB), then the memmap area (16 blocks of
// 2 MiB, one per 1 GiB span), then the memory.
constexpr std::uint64_t data_start = 34 * MiB;
constexpr std::uint64_t canary_offset = data_start + 2 * MiB;
constexpr char canary[] = "published before the operation";
const char* const no_heap = "<no heap>";

create_options base_options() {
  create_options o;
  o.size = 16 * MiB;
  o.max_range = 16 * GiB;
  return o;
}

daxalloc::region open_region(const std::filesystem::path& p) {
  daxalloc::region_options o;
  o.mode = daxalloc::persistence_mode::none;  // the simulator decides what is durable
  auto r = daxalloc::region::open(p, o);
  r.reserve(base_options().max_range);  // so that open does not move the mapping
  return r;
}

// The logical state: which subsections are present, with their pageblock flags.
std::string signature(const memory_model& m) {
  std::ostringstream out;
  for (std::uint64_t at = 0; at < m.geo().max_range; at += subsection_size) {
    if (!m.section_present(at >> m.geo().section_size_bits)) {
      at += m.geo().section_size() - subsection_size;
      continue;
    }
    if (!m.subsection_present(at)) continue;
    out << (at >> 20) << ":" << static_cast<int>(m.get_pageblock_migratetype(at >> page_shift))
        << (m.get_pageblock_skip(at >> page_shift) ? "s" : "") << " ";
  }
  return out.str();
}

std::string state_of_image(const std::filesystem::path& p, bool check_canary) {
  std::unique_ptr<memory_model> m;
  try {
    m = memory_model::open(open_region(p));
  } catch (const daxalloc::error& e) {
    if (e.code_value() == daxalloc::errc::corrupt &&
        std::string(e.what()).find("not a daxalloc heap") != std::string::npos)
      return no_heap;
    return std::string("open failed: ") + e.what();
  }
  if (auto problems = m->check(); !problems.empty()) return "check failed: " + problems.front();
  if (check_canary && std::memcmp(m->base() + canary_offset, canary, sizeof canary) != 0)
    return "canary lost";
  return signature(*m);
}

// After recovery the heap must do real work: add, flag, remove, reopen.
std::string follow_up(const std::filesystem::path& p) {
  try {
    {
      auto m = memory_model::open(open_region(p));
      m->hot_add(300 * MiB, 4 * MiB);
      m->set_pageblock_migratetype((300 * MiB) >> page_shift, migratetype::large);
      m->hot_remove(302 * MiB, 2 * MiB);
    }
    auto m = memory_model::open(open_region(p));
    if (auto problems = m->check(); !problems.empty())
      return "after follow-up: " + problems.front();
    if (!m->subsection_present(300 * MiB) || m->subsection_present(302 * MiB))
      return "follow-up state lost";
  } catch (const daxalloc::error& e) {
    return std::string("follow-up failed: ") + e.what();
  }
  return {};
}

struct scenario {
  const char* name;
  std::vector<range> extra_watched;
  std::function<void(memory_model&)> setup;  // runs before, not simulated
  std::function<void(memory_model&)> op;     // simulated; empty for create
};

struct tally {
  std::size_t states = 0, failures = 0, nested = 0;
  void fail(const std::string& what) {
    if (++failures <= 5) MESSAGE(what);
  }
};

// Recovery is an operation too: open redoes a committed hotplug intent and
// rewrites a stale superblock copy. Runs the open of `image` under the
// simulator; when it wrote anything (and the budget allows), every crash
// image of that recovery must recover to the state before or after.
void explore_recovery(const std::filesystem::path& image, const std::vector<range>& watched,
                      const std::string& before, const std::string& after, std::mt19937_64& rng,
                      tally& t, int& budget) {
  if (budget <= 0) return;
  std::vector<crash::crash_point> points;
  {
    auto r = open_region(image);
    crash::simulator sim(r, watched);
    try {
      auto m = memory_model::open(std::move(r));
      (void)sim.finish();
    } catch (const daxalloc::error&) {
      return;  // not a heap: nothing to recover
    }
    points = sim.points();
  }
  if (points.size() <= 1) return;  // recovery wrote nothing
  --budget;
  const auto nested = image.string() + ".nested";
  for (const auto& point : points)
    t.nested += crash::explore(
        point, watched, nested, rng,
        [&](const std::filesystem::path& p) {
          const auto state = state_of_image(p, before != no_heap);
          if (state != before && state != after) t.fail("crash during recovery: " + state);
        },
        8, 16);
  std::filesystem::remove(nested);
}

void run(const scenario& s, std::mt19937_64& rng) {
  test::temp_file work("crash-work"), image("crash-image");
  std::vector<range> watched{{0, 4 * MiB}, {canary_offset, 4096}};
  watched.insert(watched.end(), s.extra_watched.begin(), s.extra_watched.end());
  std::string before = no_heap;
  std::vector<crash::crash_point> points;
  std::vector<std::string> problems;
  if (s.op) {
    {
      auto m = memory_model::create(work.path(), base_options());
      std::memcpy(m->base() + canary_offset, canary, sizeof canary);
      m->media().persist().persist(m->base() + canary_offset, sizeof canary);
      if (s.setup) s.setup(*m);
      before = signature(*m);
    }
    auto m = memory_model::open(open_region(work.path()));
    crash::simulator sim(m->media(), watched);
    s.op(*m);
    problems = sim.finish();
    points = sim.points();
  } else {
    auto o = base_options();
    daxalloc::region_options ro;
    ro.create = true;
    ro.size = o.size;
    ro.max_size = o.max_range;
    ro.mode = daxalloc::persistence_mode::none;
    auto r = daxalloc::region::open(work.path(), ro);
    crash::simulator sim(r, watched);
    auto m = memory_model::create(std::move(r), o);
    problems = sim.finish();
    points = sim.points();
  }
  for (const auto& p : problems) MESSAGE(std::string(s.name) << ": " << p);
  CHECK(problems.empty());
  const std::string after = state_of_image(work.path(), s.op != nullptr);
  REQUIRE(after != before);

  tally t;
  int recovery_budget = 24 * static_cast<int>(crash::scale());
  for (const auto& point : points) {
    t.states +=
        crash::explore(point, watched, image.path(), rng, [&](const std::filesystem::path& p) {
          // The first open of the image is the recovery: explore crashes during it
          // (while the budget lasts), then check what it recovered to.
          explore_recovery(p, watched, before, after, rng, t, recovery_budget);
          const auto state = state_of_image(p, s.op != nullptr);
          if (state != before && state != after) {
            t.fail(std::string(s.name) + ": fence " + std::to_string(point.fence) + ": " + state);
            return;
          }
          if (state == no_heap) return;
          if (auto why = follow_up(p); !why.empty()) t.fail(std::string(s.name) + ": " + why);
        });
  }
  MESSAGE(std::string(s.name) << ": explored " << t.states + t.nested << " crash states ("
                              << t.nested << " during recovery), " << t.failures << " failures");
  CHECK(t.failures == 0);
}
}  // namespace

TEST_CASE("crash states of the sparse memory model's operations") {
  std::mt19937_64 rng(20261123);
  const scenario scenarios[] = {
      {"create", {}, nullptr, nullptr},
      {"hot-add in a present section",
       {},
       nullptr,
       [](memory_model& m) { m.hot_add(data_start + 12 * MiB, 4 * MiB); }},
      {"hot-add of a new section",
       {},
       nullptr,
       [](memory_model& m) { m.hot_add(128 * MiB, 6 * MiB); }},
      {"hot-add across two sections",
       {},
       nullptr,
       [](memory_model& m) { m.hot_add(124 * MiB, 8 * MiB); }},
      {"hot-add of a new span: its block comes from the memmap area",
       {{1 * GiB, 8 * MiB}, {4 * MiB, 2 * MiB}},
       nullptr,
       [](memory_model& m) { m.hot_add(1 * GiB, 8 * MiB); }},
      {"hot-add of 2 MiB into a new span",
       {{3 * GiB, 2 * MiB}, {8 * MiB, 2 * MiB}},
       nullptr,
       [](memory_model& m) { m.hot_add(3 * GiB, 2 * MiB); }},
      {"hot-add of a new root page",
       {{8 * GiB, 8 * MiB}, {18 * MiB, 2 * MiB}},
       nullptr,
       [](memory_model& m) { m.hot_add(8 * GiB, 8 * MiB); }},
      {"hot-remove of part of a section",
       {},
       [](memory_model& m) { m.hot_add(data_start + 12 * MiB, 8 * MiB); },
       [](memory_model& m) { m.hot_remove(data_start + 14 * MiB, 4 * MiB); }},
      {"hot-remove of a span and its memmap block",
       {{1 * GiB, 8 * MiB}, {4 * MiB, 2 * MiB}},
       [](memory_model& m) { m.hot_add(1 * GiB, 8 * MiB); },
       [](memory_model& m) { m.hot_remove(1 * GiB, 8 * MiB); }},
      {"pageblock flag change",
       {},
       nullptr,
       [](memory_model& m) {
         m.set_pageblock_migratetype((data_start + 4 * MiB) >> page_shift, migratetype::unmovable);
       }},
      {"pageblock skip bit",
       {},
       nullptr,
       [](memory_model& m) { m.set_pageblock_skip((data_start + 6 * MiB) >> page_shift, true); }},
  };
  for (const auto& s : scenarios) {
    INFO(std::string(s.name));
    run(s, rng);
  }
}
