// Bad blocks at open (issue 22): the media's list, given here by a test
// provider (platform/media.hpp) since no machine of the suite has real
// poison (the VM suite injects real ones: tests/vm). A bad block in memory
// quarantines its pageblock, which nothing is allocated from again; the
// objects it held are reported by offset; a repair clears it; a read-only
// open reports it and writes nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "daxalloc/daxalloc.h"
#include "daxalloc/heap.hpp"
#include "daxalloc/region.hpp"
#include "platform/media.hpp"
#include "sparse/geometry.hpp"
#include "test_util.hpp"

using daxalloc::heap;
namespace media = daxalloc::media;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t pageblock = 2 * MiB;

// Media that list `bad` and clear a range by zeroing it (what a cleared
// block reads as), noting each clear.
class test_media final : public media::provider {
 public:
  explicit test_media(std::vector<media::bad_range> bad) { state_.bad_blocks = std::move(bad); }
  media::device_state read(const daxalloc::region&) override {
    media::device_state s = state_;
    s.bad_blocks_supported = true;
    return s;
  }
  void clear(const daxalloc::region& r, const media::bad_range& range) override {
    std::memset(r.base() + range.offset, 0, range.length);
    cleared.push_back(range);
    state_.bad_blocks.erase(std::remove(state_.bad_blocks.begin(), state_.bad_blocks.end(), range),
                            state_.bad_blocks.end());
  }
  std::vector<media::bad_range> cleared;

 private:
  media::device_state state_;
};

// Installs a provider for one scope.
struct installed {
  explicit installed(media::provider& p) { media::set_provider_for_testing(&p); }
  ~installed() { media::set_provider_for_testing(nullptr); }
  installed(const installed&) = delete;
  installed& operator=(const installed&) = delete;
};

struct filled {
  std::vector<std::uint64_t> small;  // 1000-byte objects
  std::vector<std::uint64_t> large;  // 1 MiB extents
};

// A 64 MiB heap holding small objects and extents, closed cleanly.
filled fill(const std::filesystem::path& path) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.max_size = 1024 * MiB;
  auto h = heap::create(path, o);
  filled f;
  for (int i = 0; i < 3000; ++i) f.small.push_back(h.offset_of(h.allocate(1000)));
  for (int i = 0; i < 8; ++i) f.large.push_back(h.offset_of(h.allocate(MiB)));
  return f;
}

bool in(std::uint64_t offset, std::uint64_t start, std::uint64_t length) {
  return offset >= start && offset < start + length;
}
}  // namespace

TEST_CASE(
    "a bad block in memory: its pageblock is quarantined, its objects reported, "
    "nothing allocated there again") {
  test::temp_file f("badblock-memory");
  const filled objects = fill(f.path());
  const std::uint64_t victim = objects.small[1500];
  const media::bad_range bad{victim & ~std::uint64_t{4095}, 4096};
  test_media m({bad});
  installed use(m);
  auto h = heap::open(f.path());
  REQUIRE(h.bad_blocks().size() == 1);
  const daxalloc::bad_block& b = h.bad_blocks().front();
  CHECK(b.offset == bad.offset);
  CHECK(b.length == bad.length);
  CHECK(b.location == daxalloc::bad_block_location::memory);
  CHECK(b.quarantined);
  CHECK_FALSE(b.cleared);
  CHECK(std::find(b.objects.begin(), b.objects.end(), victim) != b.objects.end());
  for (std::uint64_t o : b.objects) CHECK(o < bad.offset + bad.length);
  CHECK(h.outcome() == daxalloc::open_outcome::repaired);
  REQUIRE(h.repairs().size() == 1);
  CHECK(h.repairs().front().find("quarantined the pageblock at") == 0);
  CHECK(h.repairs().front().find("bad block at") != std::string::npos);
  const std::uint64_t quarantined = bad.offset & ~(pageblock - 1);
  // Everything allocated from now on lies outside the quarantined pageblock.
  for (int i = 0; i < 4000; ++i)
    CHECK_FALSE(in(h.offset_of(h.allocate(1000)), quarantined, pageblock));
  for (int i = 0; i < 8; ++i) CHECK_FALSE(in(h.offset_of(h.allocate(MiB)), quarantined, pageblock));
  // The other objects are the heap's as before.
  for (std::uint64_t o : objects.small)
    if (!in(o, quarantined, pageblock)) h.deallocate(h.base() + o);
  test::require_sound(h);
  h.close();
  // Quarantined for good: the next open reports the block, quarantines nothing new.
  auto again = heap::open(f.path());
  REQUIRE(again.bad_blocks().size() == 1);
  CHECK(again.bad_blocks().front().quarantined);
  CHECK(again.repairs().empty());
  test::require_sound(again);
}

TEST_CASE("a bad block in free memory: quarantined, no object lost") {
  test::temp_file f("badblock-free");
  fill(f.path());
  // The last pageblock of the 64 MiB heap is free (objects fill from the bottom).
  auto probe = heap::open(f.path());
  const std::uint64_t last = (probe.size() - pageblock) & ~(pageblock - 1);
  probe.close();
  test_media m({{last + 8192, 512}});
  installed use(m);
  auto h = heap::open(f.path());
  REQUIRE(h.bad_blocks().size() == 1);
  CHECK(h.bad_blocks().front().location == daxalloc::bad_block_location::memory);
  CHECK(h.bad_blocks().front().objects.empty());
  CHECK(h.repairs().front().find("no object recorded in it") != std::string::npos);
  test::require_sound(h);
}

TEST_CASE("repair clears a bad block: it reads as zeros, its objects are reported lost") {
  test::temp_file f("badblock-repair");
  const filled objects = fill(f.path());
  const std::uint64_t victim = objects.large[3];
  const media::bad_range bad{victim + 4096, 4096};
  test_media m({bad});
  installed use(m);
  daxalloc::heap_open_options o;
  o.repair = true;
  auto h = heap::open(f.path(), o);
  REQUIRE(h.bad_blocks().size() == 1);
  const daxalloc::bad_block& b = h.bad_blocks().front();
  CHECK(b.cleared);
  CHECK(b.objects == std::vector<std::uint64_t>{victim});
  REQUIRE(m.cleared.size() == 1);
  CHECK(m.cleared.front() == bad);
  const auto cleared_line = std::find_if(h.repairs().begin(), h.repairs().end(), [](auto& line) {
    return line.find("cleared the bad block at") == 0;
  });
  REQUIRE(cleared_line != h.repairs().end());
  CHECK(cleared_line->find(daxalloc::sparse::hex(victim)) != std::string::npos);
  test::require_sound(h);
  h.close();
  // Cleared: the next open finds no bad block; the pageblock stays quarantined.
  auto again = heap::open(f.path());
  CHECK(again.bad_blocks().empty());
  CHECK(again.repairs().empty());
}

TEST_CASE("a read-only open reports a bad block and writes nothing") {
  test::temp_file f("badblock-readonly");
  const filled objects = fill(f.path());
  const media::bad_range bad{objects.small[10] & ~std::uint64_t{4095}, 4096};
  test_media m({bad});
  installed use(m);
  {
    auto h = heap::open_read_only(f.path());
    REQUIRE(h.bad_blocks().size() == 1);
    CHECK_FALSE(h.bad_blocks().front().quarantined);
    CHECK(h.repairs().empty());
    const auto& steps = h.pending_recovery().steps;
    CHECK(std::any_of(steps.begin(), steps.end(),
                      [](auto& s) { return s.find("quarantine the pageblock at") == 0; }));
  }
  auto h = heap::open(f.path());  // the read-only open quarantined nothing
  REQUIRE(h.repairs().size() == 1);
  CHECK(h.bad_blocks().front().quarantined);
}

TEST_CASE("a bad block in memory that is not present: reported, nothing quarantined") {
  test::temp_file f("badblock-where");
  fill(f.path());
  auto probe = heap::open(f.path());
  const std::uint64_t end = probe.size();
  probe.close();
  // Not present: beyond the 64 MiB present, inside the 1 GiB range.
  test_media m({{end + 16 * MiB, 4096}});
  installed use(m);
  auto h = heap::open(f.path());
  REQUIRE(h.bad_blocks().size() == 1);
  CHECK(h.bad_blocks().front().location == daxalloc::bad_block_location::not_present);
  CHECK_FALSE(h.bad_blocks().front().quarantined);
  CHECK(h.repairs().empty());
}

TEST_CASE("a file on tmpfs has no bad-block list: nothing reported") {
  test::temp_file f("badblock-tmpfs");
  fill(f.path());
  auto h = heap::open(f.path());
  CHECK(h.bad_blocks().empty());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
}

TEST_CASE("the C API lists the bad blocks") {
  test::temp_file f("badblock-c");
  const filled objects = fill(f.path());
  const std::uint64_t victim = objects.large[1];
  test_media m({{victim, 4096}, {victim + 8 * MiB + 4096, 4096}});
  installed use(m);
  daxalloc_heap_t* h = nullptr;
  REQUIRE(daxalloc_open(f.path().c_str(), nullptr, &h) == DAXALLOC_OK);
  std::size_t count = 0;
  CHECK(daxalloc_bad_blocks(h, nullptr, 0, &count) == DAXALLOC_OK);
  CHECK(count == 2);
  daxalloc_bad_block_t first{};
  CHECK(daxalloc_bad_blocks(h, &first, 1, &count) == DAXALLOC_OK);
  CHECK(count == 2);
  CHECK(first.offset == victim);
  CHECK(first.length == 4096);
  CHECK(first.location == DAXALLOC_BAD_BLOCK_IN_MEMORY);
  CHECK(first.quarantined == 1);
  CHECK(first.lost_objects == 1);
  CHECK(first.first_lost == victim);
  daxalloc_close(h);
}
