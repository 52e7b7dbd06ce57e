// The sparse memory model: geometry against the kernel's definitions, the
// superblock copies, the section map, memmap placement, pageblock flags and
// the hot-add / hot-remove rules.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "sparse/memory_model.hpp"
#include "sparse/superblock.hpp"
#include "sparse_files.hpp"
#include "test_util.hpp"

using namespace daxalloc::sparse;
using daxalloc::errc;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20, GiB = std::uint64_t{1} << 30,
                        TiB = std::uint64_t{1} << 40;

create_options make_options(std::uint64_t size, std::uint64_t max_range = 0, unsigned bits = 27) {
  create_options o;
  o.size = size;
  o.max_range = max_range;
  o.section_size_bits = bits;
  return o;
}

using test::require_sound;

// New heaps with each span's memmap block carved from the span's first
// present memory, as format 5 made them (memory_model::make_legacy_memmap),
// for the scope of the guard.
struct legacy_memmap {
  legacy_memmap() { memory_model::make_legacy_memmap = true; }
  ~legacy_memmap() { memory_model::make_legacy_memmap = false; }
  legacy_memmap(const legacy_memmap&) = delete;
  legacy_memmap& operator=(const legacy_memmap&) = delete;
};

std::uint64_t allocated_bytes(const std::filesystem::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("geometry matches the kernel's constants and formulas") {
  CHECK(page_shift == 12);
  CHECK(subsection_shift == 21);
  CHECK(pages_per_subsection == 512);
  CHECK(pageblock_order == 9);
  CHECK(nr_pageblock_bits == 4);
  const geometry g = geometry::make(27, TiB);
  CHECK(g.pfn_section_shift() == 15);        // PFN_SECTION_SHIFT
  CHECK(g.pages_per_section() == 32768);     // PAGES_PER_SECTION
  CHECK(g.subsections_per_section() == 64);  // SUBSECTIONS_PER_SECTION
  CHECK(g.subsection_map_words() == 1);      // one 64-bit subsection_map word
  CHECK(g.record_size() == 64);
  CHECK(g.sections_per_root() == 64);
  CHECK(g.nr_sections() == 8192);
  CHECK(sizeof(page_descriptor) == 8);
  CHECK(g.span_size() == 1 * GiB);  // 2 MiB of 8-byte descriptors
  CHECK(g.memmap_bytes() == 2 * MiB);
  CHECK(g.head_size() == 2 * MiB);
  for (std::uint64_t pfn : {0ull, 1ull, 32767ull, 32768ull, 123456789ull}) {
    CHECK(g.pfn_to_section_nr(pfn) == pfn >> 15);
    CHECK(g.section_nr_to_pfn(g.pfn_to_section_nr(pfn)) == (pfn & ~32767ull));
    // the kernel's subsection index: (pfn & (PAGES_PER_SECTION-1)) / PAGES_PER_SUBSECTION
    CHECK(g.subsection_index(pfn) == (pfn & 32767) / 512);
  }
  for (unsigned bits = 27; bits <= 30; ++bits) {
    const geometry h = geometry::make(bits, std::uint64_t{1} << 36);
    CHECK(h.subsections_per_section() == 1u << (bits - 21));
    CHECK(h.sections_per_root() * h.section_size() == std::uint64_t{1} << 33);
    CHECK(h.memmap_bytes() % (2 * MiB) == 0);
    CHECK(h.memmap_bytes() == 2 * MiB);  // every span is 1 GiB: 8 to 1 sections
    CHECK(h.memmap_bytes() * 4096 / 8 == h.span_size());
  }
  CHECK_ERRC(geometry::make(26, TiB), errc::invalid_argument);
  CHECK_ERRC(geometry::make(31, TiB), errc::invalid_argument);
  CHECK_ERRC(geometry::make(27, 100 * MiB), errc::invalid_argument);
  CHECK_ERRC(geometry::make(27, std::uint64_t{1} << 47), errc::too_large);
}

// The vectorised sum must equal the definition (the word loop) on every
// length, alignment and split into pieces: lanes and records on the media
// were summed by it.
TEST_CASE("Fletcher-64 equals the word-by-word definition") {
  std::mt19937_64 rng(7);
  std::vector<unsigned char> bytes(20000);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  const auto definition = [&](std::size_t at, std::size_t len, std::uint32_t& lo,
                              std::uint64_t& hi) {
    for (std::size_t i = 0; i + 4 <= len; i += 4) {
      std::uint32_t word = 0;
      for (unsigned b = 0; b < 4; ++b) word |= std::uint32_t{bytes[at + i + b]} << (8 * b);
      lo += word;
      hi += lo;
    }
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::size_t at = rng() % 64;
    const std::size_t len = trial < 300 ? static_cast<std::size_t>(trial) : rng() % 9000;
    const unsigned pieces = 1 + static_cast<unsigned>(rng() % 3);
    std::uint32_t lo = 0;
    std::uint64_t hi = 0;
    daxalloc::sparse::fletcher64_sum sum;
    for (unsigned k = 0; k < pieces; ++k) {
      const std::size_t n = len / pieces / 4 * 4;
      sum.add(&bytes[at], n);
      definition(at, n, lo, hi);
      at += n;
    }
    REQUIRE(sum.value() == (hi << 32 | lo));
  }
}

TEST_CASE("create, check, reopen") {
  test::temp_file f;
  std::array<std::uint8_t, 16> uuid{};
  {
    auto m = memory_model::create(f.path(), make_options(64 * MiB));
    require_sound(*m);
    std::memcpy(uuid.data(), m->super().uuid, 16);
    // The memmap area of a 1 TiB range (1024 blocks of 2 MiB) follows the
    // head; memory starts after it, in span 2. Present: the head, the
    // blocks of span 2 (at 6 MiB) and span 0 (which holds that block), and
    // 58 MiB of memory.
    CHECK(m->geo().memmap_area == m->geo().head_size());
    CHECK(m->geo().area_bytes() == 2 * GiB);
    CHECK(m->geo().data_start() == 2 * GiB + 2 * MiB);
    CHECK(std::filesystem::file_size(f.path()) == 2 * GiB + 2 * MiB + 58 * MiB);
    const auto s = m->stats();
    CHECK(s.present_bytes == 64 * MiB);
    CHECK(s.present_sections == 2);
    CHECK(s.present_subsections == 32);
    CHECK(s.area_bytes == 4 * MiB);
    CHECK(s.memmap_bytes == 32 * 4096);  // backed: the descriptor page of each present pageblock
    CHECK(s.usable_bytes == 58 * MiB);
    CHECK((m->section_record(0)[0] & section_taint_partial) != 0);
    CHECK((m->section_record(16)[0] & section_taint_partial) != 0);
  }
  auto m = memory_model::open(f.path());
  require_sound(*m);
  CHECK(std::memcmp(uuid.data(), m->super().uuid, 16) == 0);
  CHECK(m->geo().section_size_bits == 27);
  CHECK(m->geo().max_range == TiB);
  CHECK(m->super().generation == 1);
  const std::uint64_t data = 2 * GiB + 2 * MiB, end = data + 58 * MiB;
  CHECK(m->pfn_valid(0));
  CHECK(m->pfn_valid(2 * MiB >> 12));           // span 0's block
  CHECK_FALSE(m->pfn_valid(4 * MiB >> 12));     // span 1's block: span 1 holds nothing
  CHECK(m->pfn_valid(6 * MiB >> 12));           // span 2's block
  CHECK_FALSE(m->pfn_valid(8 * MiB >> 12));     // span 3's
  CHECK_FALSE(m->pfn_valid(200 * MiB >> 12));   // the area, an absent section
  CHECK_FALSE(m->pfn_valid((data >> 12) - 1));  // the area's last page
  CHECK(m->pfn_valid(data >> 12));
  CHECK(m->pfn_valid((end >> 12) - 1));
  CHECK_FALSE(m->pfn_valid(end >> 12));                    // same section, absent subsection
  CHECK_FALSE(m->pfn_valid((2 * GiB + 200 * MiB) >> 12));  // absent section
  CHECK_FALSE(m->pfn_valid(std::uint64_t{1} << 40));       // beyond the range
  CHECK(m->get_pageblock_migratetype(0) == migratetype::metadata);              // head
  CHECK(m->get_pageblock_migratetype(2 * MiB >> 12) == migratetype::metadata);  // memmap blocks
  CHECK(m->get_pageblock_migratetype(6 * MiB >> 12) == migratetype::metadata);
  CHECK(m->get_pageblock_migratetype(data >> 12) == migratetype::movable);
  CHECK(m->pfn_to_page(0)->state() == page_state::reserved);
  CHECK(m->pfn_to_page(2 * MiB >> 12)->state() == page_state::memmap);
  CHECK(m->pfn_to_page(6 * MiB >> 12)->state() == page_state::memmap);
  CHECK(m->pfn_to_page(data >> 12)->state() == page_state::free);
  CHECK(m->span_memmap(data) == m->geo().area_block(data));
  CHECK(m->geo().area_block(data) == 6 * MiB);
}

TEST_CASE("create, check, reopen: the in-span memmap of format 5 (legacy placement)") {
  test::temp_file f;
  {
    legacy_memmap legacy;
    auto m = memory_model::create(f.path(), make_options(64 * MiB));
    require_sound(*m);
    CHECK(m->geo().memmap_area == 0);
    CHECK(m->geo().data_start() == m->geo().head_size());
    const auto s = m->stats();
    CHECK(s.present_bytes == 64 * MiB);
    CHECK(s.present_sections == 1);
    CHECK(s.present_subsections == 32);
    CHECK(s.memmap_bytes == 2 * MiB);
    CHECK(s.usable_bytes == 60 * MiB);
    CHECK(std::filesystem::file_size(f.path()) == 64 * MiB);
  }
  auto m = memory_model::open(f.path());
  require_sound(*m);
  CHECK(m->geo().memmap_area == 0);
  CHECK(m->pfn_valid((64 * MiB >> 12) - 1));
  CHECK_FALSE(m->pfn_valid(64 * MiB >> 12));
  CHECK(m->get_pageblock_migratetype(2 * MiB >> 12) == migratetype::metadata);  // memmap block
  CHECK(m->get_pageblock_migratetype(4 * MiB >> 12) == migratetype::movable);
  CHECK(m->pfn_to_page(2 * MiB >> 12)->state() == page_state::memmap);
  CHECK(m->pfn_to_page(4 * MiB >> 12)->state() == page_state::free);
}

TEST_CASE("create refuses what it cannot use, and loses nothing") {
  test::temp_file f;
  CHECK_ERRC(memory_model::create(f.path(), make_options(4 * MiB)), errc::too_small);
  CHECK_FALSE(std::filesystem::exists(f.path()));
  CHECK_ERRC(memory_model::create(f.path(), make_options(64 * MiB, 0, 31)), errc::invalid_argument);
  CHECK_ERRC(memory_model::create(f.path(), make_options(64 * MiB, std::uint64_t{1} << 47)),
             errc::too_large);
  {
    // In-span memmap (format 5): a size whose last span cannot hold its
    // memmap is refused before any file exists.
    legacy_memmap legacy;
    CHECK_ERRC(memory_model::create(f.path(), make_options(1026 * MiB)), errc::too_small);
    CHECK_FALSE(std::filesystem::exists(f.path()));
  }
  // With the memmap area any size from the minimum up works: 1026 MiB
  // present in a 4 GiB range is the head, the blocks of spans 0 and 1 and
  // 1020 MiB of memory from 10 MiB (into span 1).
  // A 1 TiB range needs 8 MiB: the head, the blocks of spans 0 and 2, one pageblock.
  CHECK_ERRC(memory_model::create(f.path(), make_options(6 * MiB)), errc::too_small);
  CHECK_FALSE(std::filesystem::exists(f.path()));
  {
    auto m = memory_model::create(f.path(), make_options(1026 * MiB, 4 * GiB));
    require_sound(*m);
    CHECK(m->stats().present_bytes == 1026 * MiB);
    CHECK(m->stats().area_bytes == 4 * MiB);
    CHECK(std::filesystem::file_size(f.path()) == 10 * MiB + 1020 * MiB);
  }
  std::filesystem::remove(f.path());
  // The smallest heap: the head, span 0's block, one pageblock.
  { auto m = memory_model::create(f.path(), make_options(6 * MiB, 1 * GiB)); }
  std::filesystem::remove(f.path());
  { std::ofstream(f.path()) << "precious"; }
  CHECK_ERRC(memory_model::create(f.path(), make_options(64 * MiB)), errc::already_exists);
  std::string content;
  std::ifstream(f.path()) >> content;
  CHECK(content == "precious");
}

TEST_CASE("pfn_to_page and page_to_pfn are inverse and O(1)") {
  test::temp_file f;
  auto m = memory_model::create(f.path(), make_options(64 * MiB, 4 * TiB));
  m->hot_add(3 * TiB, 1 * GiB);
  m->hot_add(16 * GiB, 128 * MiB);  // (memory starts after the head and the 8 GiB memmap area)
  require_sound(*m);
  const std::uint64_t data = m->geo().data_start();
  CHECK(data == m->geo().head_size() + 8 * GiB);
  std::vector<std::uint64_t> pfns;
  // The head and span 0's memmap block, the memory of create, and two adds.
  for (auto [start, length] : {std::pair{std::uint64_t{0}, m->geo().head_size() + 2 * MiB},
                               {data, 56 * MiB},
                               {16 * GiB, 64 * MiB},
                               {3 * TiB, 64 * MiB}})
    for (std::uint64_t pfn = start >> 12; pfn < (start + length) >> 12; pfn += 7)
      pfns.push_back(pfn);
  for (auto pfn : pfns) {
    REQUIRE(m->pfn_valid(pfn));
    const page_descriptor* d = m->pfn_to_page(pfn);
    REQUIRE(m->media().contains(d, sizeof *d));
    REQUIRE(m->page_to_pfn(d) == pfn);
  }
  std::mt19937_64 rng(42);
  std::shuffle(pfns.begin(), pfns.end(), rng);
  std::uint64_t sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int rounds = 20;
  for (int r = 0; r < rounds; ++r)
    for (auto pfn : pfns) sink += m->page_to_pfn(m->pfn_to_page(pfn + (sink & 0)));
  const auto ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("pfn_to_page + page_to_pfn: "
          << ns / (rounds * static_cast<double>(pfns.size()))
          << " ns per round trip over random pfns of a 4 TiB range (sink " << (sink & 1) << ")");
}

TEST_CASE("hot-add follows the kernel's rules (in-span memmap of format 5)") {
  legacy_memmap legacy;
  test::temp_file f;
  auto m = memory_model::create(f.path(), make_options(64 * MiB, 4 * GiB));
  CHECK_ERRC(m->hot_add(65 * MiB, 2 * MiB), errc::misaligned);
  CHECK_ERRC(m->hot_add(64 * MiB, 3 * MiB), errc::misaligned);
  CHECK_ERRC(m->hot_add(64 * MiB, 0), errc::invalid_argument);
  CHECK_ERRC(m->hot_add(62 * MiB, 4 * MiB),
             errc::already_exists);                          // overlaps the last present subsection
  CHECK_ERRC(m->hot_add(0, 2 * MiB), errc::already_exists);  // the head
  CHECK_ERRC(m->hot_add(4 * GiB, 2 * MiB), errc::too_large);
  const auto file_size = std::filesystem::file_size(f.path());
  CHECK_ERRC(m->hot_add(1 * GiB, 2 * MiB),
             errc::too_small);                               // a new span needs room for its memmap
  CHECK(std::filesystem::file_size(f.path()) == file_size);  // and a refused add changes nothing
  require_sound(*m);

  m->hot_add(64 * MiB, 2 * MiB);  // same section and span: no new memmap
  CHECK(m->pfn_valid(64 * MiB >> 12));
  CHECK(m->stats().memmap_bytes == 2 * MiB);
  m->hot_add(128 * MiB, 128 * MiB);  // a whole new section of span 0
  CHECK((m->section_record(1)[0] & section_taint_partial) == 0);
  CHECK((m->section_record(1)[0] & section_marked_present) != 0);
  m->hot_add(1 * GiB + 6 * MiB, 6 * MiB);  // a new span: memmap carved from its first subsection
  CHECK(m->span_memmap(1 * GiB) == 1 * GiB + 6 * MiB);
  CHECK(m->get_pageblock_migratetype((1 * GiB + 6 * MiB) >> 12) == migratetype::metadata);
  CHECK(m->get_pageblock_migratetype((1 * GiB + 8 * MiB) >> 12) == migratetype::movable);
  CHECK_FALSE(m->pfn_valid((1 * GiB + 4 * MiB) >> 12));
  require_sound(*m);
  const auto s = m->stats();
  CHECK(s.present_bytes == (64 + 2 + 128 + 6) * MiB);
  CHECK(s.memmap_bytes == 4 * MiB);

  // Hot-added memory is writable at once and survives reopen.
  std::memcpy(m->pfn_to_virt((1 * GiB + 10 * MiB) >> 12), "added", 6);
  m->media().persist().persist(m->pfn_to_virt((1 * GiB + 10 * MiB) >> 12), 6);
  m.reset();
  m = memory_model::open(f.path());
  require_sound(*m);
  CHECK(std::string(reinterpret_cast<char*>(m->pfn_to_virt((1 * GiB + 10 * MiB) >> 12))) ==
        "added");
  CHECK(m->stats().present_bytes == s.present_bytes);
}

TEST_CASE("hot-add follows the kernel's rules") {
  // A 4 GiB range: the head, a memmap area of 4 blocks [2 MiB, 10 MiB), and
  // memory from 10 MiB: 64 MiB present is [0, 4 MiB) and [10 MiB, 70 MiB).
  test::temp_file f;
  auto m = memory_model::create(f.path(), make_options(64 * MiB, 4 * GiB));
  REQUIRE(m->geo().data_start() == 10 * MiB);
  CHECK(std::filesystem::file_size(f.path()) == 70 * MiB);
  CHECK_ERRC(m->hot_add(71 * MiB, 2 * MiB), errc::misaligned);
  CHECK_ERRC(m->hot_add(70 * MiB, 3 * MiB), errc::misaligned);
  CHECK_ERRC(m->hot_add(70 * MiB, 0), errc::invalid_argument);
  CHECK_ERRC(m->hot_add(68 * MiB, 4 * MiB),
             errc::already_exists);                          // overlaps the last present subsection
  CHECK_ERRC(m->hot_add(0, 2 * MiB), errc::already_exists);  // the head
  CHECK_ERRC(m->hot_add(4 * MiB, 2 * MiB), errc::already_exists);  // the memmap area, absent block
  CHECK_ERRC(m->hot_add(8 * MiB, 4 * MiB), errc::already_exists);  // partly the area
  CHECK_ERRC(m->hot_add(4 * GiB, 2 * MiB), errc::too_large);
  require_sound(*m);

  m->hot_add(70 * MiB, 2 * MiB);  // same section and span: no new memmap
  CHECK(m->pfn_valid(70 * MiB >> 12));
  CHECK(m->stats().area_bytes == 2 * MiB);
  m->hot_add(128 * MiB, 128 * MiB);  // a whole new section of span 0
  CHECK((m->section_record(1)[0] & section_taint_partial) == 0);
  CHECK((m->section_record(1)[0] & section_marked_present) != 0);
  // A new span takes 2 MiB: its memmap block is its place in the area, which
  // becomes present (format 5 needed 4 MiB, the block carved from the add).
  CHECK_FALSE(m->subsection_present(4 * MiB));
  m->hot_add(1 * GiB + 6 * MiB, 2 * MiB);
  CHECK(m->span_memmap(1 * GiB) == m->geo().area_block(1 * GiB));
  CHECK(m->geo().area_block(1 * GiB) == 4 * MiB);
  CHECK(m->subsection_present(4 * MiB));
  CHECK(m->get_pageblock_migratetype(4 * MiB >> 12) == migratetype::metadata);
  CHECK(m->pfn_to_page(4 * MiB >> 12)->state() == page_state::memmap);
  CHECK(m->get_pageblock_migratetype((1 * GiB + 6 * MiB) >> 12) == migratetype::movable);
  CHECK(m->pfn_to_page((1 * GiB + 6 * MiB) >> 12)->state() == page_state::free);
  CHECK_FALSE(m->pfn_valid((1 * GiB + 4 * MiB) >> 12));
  CHECK_FALSE(m->pfn_valid((1 * GiB + 8 * MiB) >> 12));
  require_sound(*m);
  const auto s = m->stats();
  CHECK(s.present_bytes == (64 + 2 + 128 + 2 + 2) * MiB);  // the add and its block
  CHECK(s.area_bytes == 4 * MiB);
  CHECK(s.usable_bytes == (60 + 2 + 128 + 2) * MiB);

  // Hot-added memory is writable at once and survives reopen.
  std::memcpy(m->pfn_to_virt((1 * GiB + 6 * MiB) >> 12), "added", 6);
  m->media().persist().persist(m->pfn_to_virt((1 * GiB + 6 * MiB) >> 12), 6);
  m.reset();
  m = memory_model::open(f.path());
  require_sound(*m);
  CHECK(std::string(reinterpret_cast<char*>(m->pfn_to_virt((1 * GiB + 6 * MiB) >> 12))) == "added");
  CHECK(m->stats().present_bytes == s.present_bytes);
}

TEST_CASE("a block of the memmap area that lies in an empty span brings that span's block") {
  // A 1 TiB range: the area is [2 MiB, 2 GiB + 2 MiB), so the block of the
  // span at 1000 GiB lies in span 1, whose own block lies in span 0.
  test::temp_file f;
  auto m = memory_model::create(f.path(), make_options(64 * MiB));
  const auto& geo = m->geo();
  const std::uint64_t far = 1000 * GiB, block = geo.area_block(far);
  REQUIRE((block >> geo.span_bits()) == 1);
  const std::uint64_t block_of_block = geo.area_block(block);
  REQUIRE_FALSE(m->subsection_present(block));
  REQUIRE_FALSE(m->subsection_present(block_of_block));
  const std::vector<std::uint64_t> chain{geo.memmap_area, block_of_block, block};
  CHECK(blocks_for(geo, far, far + 2 * MiB) == chain);
  const auto before = m->stats();
  m->hot_add(far, 2 * MiB);
  require_sound(*m);
  CHECK(m->subsection_present(block));
  CHECK(m->subsection_present(block_of_block));
  CHECK(m->get_pageblock_migratetype(block >> page_shift) == migratetype::metadata);
  CHECK(m->pfn_to_page(block >> page_shift)->state() == page_state::memmap);
  CHECK(m->stats().area_bytes == before.area_bytes + 4 * MiB);
  m.reset();
  m = memory_model::open(f.path());
  require_sound(*m);
  m->hot_remove(far, 2 * MiB);  // both blocks go with the memory
  require_sound(*m);
  CHECK_FALSE(m->subsection_present(block));
  CHECK_FALSE(m->subsection_present(block_of_block));
  CHECK(m->stats().area_bytes == before.area_bytes);
  CHECK(m->stats().present_bytes == before.present_bytes);
}

TEST_CASE("hot-remove follows the kernel's rules") {
  bool legacy = false;
  std::optional<legacy_memmap> guard;
  SUBCASE("memmap area (format 6)") {}
  SUBCASE("in-span memmap (format 5)") {
    legacy = true;
    guard.emplace();
  }
  test::temp_file f;
  auto m = memory_model::create(f.path(), make_options(64 * MiB, 4 * GiB));
  m->hot_add(1 * GiB, 64 * MiB);
  // Span 1's memmap block: in the area, or the first 2 MiB of the add.
  const std::uint64_t memmap = legacy ? 1 * GiB : 4 * MiB;
  REQUIRE(m->span_memmap(1 * GiB) == memmap);
  CHECK_ERRC(m->hot_remove(1 * GiB + 1 * MiB, 2 * MiB), errc::misaligned);
  CHECK_ERRC(m->hot_remove(1 * GiB, 0), errc::invalid_argument);
  CHECK_ERRC(m->hot_remove(2 * GiB, 2 * MiB), errc::not_present);
  CHECK_ERRC(m->hot_remove(1 * GiB + 62 * MiB, 4 * MiB), errc::not_present);  // partly present
  CHECK_ERRC(m->hot_remove(0, 2 * MiB), errc::in_use);                        // the head
  CHECK_ERRC(m->hot_remove(memmap, 2 * MiB), errc::in_use);  // the memmap of a span still present

  // A page that an allocator owns blocks the removal of its subsection.
  auto* page = m->pfn_to_page((1 * GiB + 20 * MiB) >> 12);
  page->info = page_info(page_state::extent, 0, 1);
  CHECK_ERRC(m->hot_remove(1 * GiB + 20 * MiB, 2 * MiB), errc::in_use);
  page->info = 0;

  const auto before = allocated_bytes(f.path());
  m->hot_remove(1 * GiB + 20 * MiB, 2 * MiB);
  CHECK_FALSE(m->pfn_valid((1 * GiB + 20 * MiB) >> 12));
  CHECK(m->get_pageblock_migratetype((1 * GiB + 20 * MiB) >> 12) ==
        migratetype::unmovable);  // zeroed
  // The hole is punched (a file system may keep a block of extent metadata).
  CHECK(allocated_bytes(f.path()) <= before - 2 * MiB + 64 * 1024);
  require_sound(*m);
  CHECK_ERRC(m->hot_remove(1 * GiB + 20 * MiB, 2 * MiB), errc::not_present);
  m->hot_add(1 * GiB + 20 * MiB, 2 * MiB);  // and back
  CHECK(m->pfn_to_page((1 * GiB + 20 * MiB) >> 12)->info == daxalloc::sparse::free_descriptor);

  // Removing everything a span holds, memmap included, makes its section absent.
  m->hot_remove(1 * GiB, 64 * MiB);
  CHECK_FALSE(m->section_present(8));
  CHECK(m->span_memmap(1 * GiB) == 0);
  CHECK((legacy ? m->stats().memmap_bytes : m->stats().area_bytes) == 2 * MiB);
  CHECK(m->stats().present_bytes == 64 * MiB);
  CHECK_FALSE(m->subsection_present(memmap));
  require_sound(*m);
  m.reset();
  m = memory_model::open(f.path());
  require_sound(*m);
  CHECK_FALSE(m->section_present(8));
  CHECK_FALSE(m->subsection_present(memmap));
}

TEST_CASE("pageblock flags are atomic per pageblock and durable") {
  test::temp_file f;
  {
    // (a 1 GiB range: memory from 4 MiB)
    auto m = memory_model::create(f.path(), make_options(128 * MiB, 1 * GiB));
    const std::uint64_t a = 8 * MiB >> 12, b = 10 * MiB >> 12;  // share one flags word
    daxalloc::reset_this_thread_persist_counters();
    m->set_pageblock_migratetype(a, migratetype::unmovable);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    m->set_pageblock_skip(a, true);
    CHECK(m->get_pageblock_migratetype(a) == migratetype::unmovable);
    CHECK(m->get_pageblock_skip(a));
    CHECK(m->get_pageblock_migratetype(b) == migratetype::movable);
    // Two threads rewriting neighbouring pageblocks of one word lose nothing.
    std::thread t1([&] {
      for (int i = 0; i < 20000; ++i)
        m->set_pageblock_migratetype(a, i % 2 ? migratetype::large : migratetype::unmovable);
    });
    std::thread t2([&] {
      for (int i = 0; i < 20000; ++i) m->set_pageblock_skip(b, i % 2 == 0);
    });
    t1.join();
    t2.join();
    CHECK(m->get_pageblock_migratetype(a) == migratetype::large);
    CHECK(m->get_pageblock_skip(a));
    CHECK(m->get_pageblock_migratetype(b) == migratetype::movable);
    CHECK_FALSE(m->get_pageblock_skip(b));
    m->set_pageblock_migratetype(b, migratetype::isolate);
  }
  auto m = memory_model::open(f.path());
  require_sound(*m);
  CHECK(m->get_pageblock_migratetype(8 * MiB >> 12) == migratetype::large);
  CHECK(m->get_pageblock_migratetype(10 * MiB >> 12) == migratetype::isolate);
}

TEST_CASE("superblock copies: a damaged one is repaired from the other") {
  test::temp_file f;
  { auto m = memory_model::create(f.path(), make_options(64 * MiB)); }
  const auto corrupt_byte = [&](std::uint64_t offset) {
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    io.read(&c, 1);
    io.seekp(static_cast<std::streamoff>(offset));
    c ^= 0x5a;
    io.write(&c, 1);
  };
  SUBCASE("copy A") {
    corrupt_byte(100);
  }
  SUBCASE("copy B") {
    corrupt_byte(4096 + 200);
  }
  SUBCASE("copy B torn in its checksum") {
    corrupt_byte(4096 + 4090);
  }
  {
    auto m = memory_model::open(f.path());
    require_sound(*m);  // both copies are valid again
  }
  corrupt_byte(40);
  corrupt_byte(4096 + 40);
  CHECK_ERRC(memory_model::open(f.path()), errc::corrupt);
}

TEST_CASE("open refuses another format version, another geometry, and what is not a heap") {
  test::temp_file f;
  { auto m = memory_model::create(f.path(), make_options(64 * MiB, 0, 28)); }
  SUBCASE("geometry") {
    open_options o;
    o.section_size_bits = 27;
    CHECK_ERRC(memory_model::open(f.path(), o), errc::geometry_mismatch);
    o.section_size_bits = 28;
    CHECK(memory_model::open(f.path(), o)->geo().section_size_bits == 28);
  }
  SUBCASE("newer format") {
    {
      auto r = daxalloc::region::open(f.path());
      for (auto offset : superblock_offset) {
        auto* sb = reinterpret_cast<superblock*>(r.base() + offset);
        sb->version = format_version + 1;
        superblock_seal(*sb);
      }
    }
    CHECK_ERRC(memory_model::open(f.path()), errc::newer_format);
  }
  SUBCASE("older format") {
    // Version 1 had 16-byte page descriptors: its memmap must not be read as
    // this version's, and create must not take it for free media either.
    {
      auto r = daxalloc::region::open(f.path());
      for (auto offset : superblock_offset) {
        auto* sb = reinterpret_cast<superblock*>(r.base() + offset);
        sb->version = format_version - 1;
        sb->descriptor_size = 16;
        superblock_seal(*sb);
      }
    }
    CHECK_ERRC(memory_model::open(f.path()), errc::older_format);
    CHECK_ERRC(memory_model::create(f.path(), make_options(64 * MiB)), errc::already_exists);
  }
  SUBCASE("zeros") {
    std::filesystem::resize_file(f.path(), 0);
    std::filesystem::resize_file(f.path(), 64 * MiB);
    CHECK_ERRC(memory_model::open(f.path()), errc::corrupt);
  }
  SUBCASE("truncated") {
    std::filesystem::resize_file(f.path(), 1 * MiB);
    CHECK_ERRC(memory_model::open(f.path()), errc::corrupt);
  }
  SUBCASE("a damaged section record") {
    {
      auto m = memory_model::open(f.path());
      m->section_record(0)[0] |= 1u << 7;  // an unknown state bit
    }
    CHECK_ERRC(memory_model::open(f.path()), errc::corrupt);
  }
  SUBCASE("a second opener") {
    auto m = memory_model::open(f.path());
    CHECK_ERRC(memory_model::open(f.path()), errc::busy);
  }
}

TEST_CASE("every section size from 27 to 30 bits works end to end") {
  for (unsigned bits = 27; bits <= 30; ++bits) {
    CAPTURE(bits);
    test::temp_file f;
    const std::uint64_t section = std::uint64_t{1} << bits;
    auto m = memory_model::create(f.path(), make_options(section, 16 * section, bits));
    require_sound(*m);
    const std::uint64_t far = 8 * section;
    const std::uint64_t memmap = m->geo().memmap_bytes();
    m->hot_add(far, memmap + 4 * MiB);
    CHECK(m->span_memmap(far) == m->geo().area_block(far));
    CHECK(m->subsection_present(m->geo().area_block(far)));
    CHECK(m->pfn_valid(far >> 12));  // memory from the span's first byte
    CHECK(m->pfn_valid((far + memmap) >> 12));
    CHECK(m->page_to_pfn(m->pfn_to_page((far + memmap + 4096) >> 12)) ==
          (far + memmap + 4096) >> 12);
    m->hot_remove(far + memmap + 2 * MiB, 2 * MiB);
    require_sound(*m);
    m.reset();
    m = memory_model::open(f.path());
    require_sound(*m);
    CHECK(m->geo().section_size_bits == bits);
    CHECK(m->pfn_valid((far + memmap) >> 12));
    CHECK_FALSE(m->pfn_valid((far + memmap + 2 * MiB) >> 12));
  }
}

TEST_CASE("a 1 TiB address range costs what is present, not what is reserved") {
  // Few GiB present in a sparse file whose range is 1 TiB (and, to compare, 8 TiB).
  struct result {
    double create_ms, open_ms;
    std::uint64_t metadata_written, file_bytes, present_bytes;
  };
  const auto run = [](std::uint64_t range) {
    test::temp_file f;
    result r{};
    daxalloc::reset_this_thread_persist_counters();
    auto t0 = std::chrono::steady_clock::now();
    {
      auto m = memory_model::create(f.path(), make_options(512 * MiB, range));
      m->hot_add(range / 2, 512 * MiB);
      m->hot_add(range - 1 * GiB, 1 * GiB);
    }
    r.create_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    r.metadata_written = daxalloc::this_thread_persist_counters().flushes * 64;
    t0 = std::chrono::steady_clock::now();
    auto m = memory_model::open(f.path());
    r.open_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    require_sound(*m);
    // 2 GiB of memory, with the blocks the adds brought: those of spans
    // range/2 and range-1 GiB, and of the span holding range/2's block (the
    // create's 512 MiB counts its own blocks). 1 TiB: spans 512 and 1023,
    // and span 1 (B(512) is at 1 GiB + 2 MiB; B(1023) lies in span 2, whose
    // block create made); 8 TiB: spans 4096, 8191 and 8.
    r.present_bytes = m->stats().present_bytes;
    CHECK(r.present_bytes == 2 * GiB + 3 * m->geo().memmap_bytes());
    r.file_bytes = allocated_bytes(f.path());
    MESSAGE("sparse: range " << (range >> 40) << " TiB, 2 GiB present: create " << r.create_ms
                             << " ms, open " << r.open_ms << " ms, metadata written "
                             << r.metadata_written / 1024 << " KiB, file holds "
                             << (r.file_bytes >> 20) << " MiB");
    return r;
  };
  const result small = run(1 * TiB);
  const result large = run(8 * TiB);  // ext4's file size limit is 16 TiB
  CHECK(small.file_bytes <= small.present_bytes + 4 * MiB);
  CHECK(large.file_bytes <= large.present_bytes + 8 * MiB);
  // 16x the range writes at most the extra directory and root-page reservations' touched part.
  CHECK(large.metadata_written < small.metadata_written + 64 * 1024);
}

TEST_CASE("metadata overhead per present page, measured from the layout") {
  test::temp_file f;
  // 2 GiB present: spans 0 and 1 full (a 2 GiB range: the head, the two
  // blocks of the memmap area, the memory).
  auto m = memory_model::create(f.path(), make_options(512 * MiB, 2 * GiB));
  const auto end = std::filesystem::file_size(f.path());
  m->hot_add(end, 2 * GiB - end);
  require_sound(*m);
  const auto s = m->stats();
  CHECK(s.present_bytes == 2 * GiB);
  const double pages = static_cast<double>(s.present_bytes / 4096);
  const double memmap = static_cast<double>(s.memmap_bytes) / pages;
  const double records =
      static_cast<double>(s.present_sections * m->geo().record_size() + s.populated_roots * 8) /
      pages;
  MESSAGE("metadata: " << memmap + records << " bytes per 4 KiB page (memmap " << memmap
                       << ", section map " << records << "; plus a fixed " << (s.head_bytes >> 20)
                       << " MiB head: " << s.metadata_per_page() << " bytes per page at "
                       << (s.present_bytes >> 30) << " GiB present)");
  CHECK(memmap + records <= 8.01);
}

// Issue 20: at most 16 B of metadata (head and memmap blocks) per present
// 4 KiB page from 1 GiB present up, on the default 1 TiB range. The files
// are sparse (test::sparse_files): only the metadata takes memory.
TEST_CASE("metadata is at most 16 B per present 4 KiB page from 1 GiB present up") {
  test::sparse_files sparse;
  for (const std::uint64_t present : {1 * GiB, 4 * GiB, 16 * GiB}) {
    CAPTURE(present >> 30);
    test::temp_file f;
    auto m = memory_model::create(f.path(), make_options(present));
    const auto s = m->stats();
    CHECK(s.present_bytes == present);
    MESSAGE(s.metadata_per_page() << " B of metadata per page at " << (present >> 30)
                                  << " GiB present (head " << (s.head_bytes >> 20)
                                  << " MiB, memmap " << (s.memmap_bytes >> 20) << " MiB)");
    CHECK(s.metadata_per_page() <= 16.0);
  }
}
