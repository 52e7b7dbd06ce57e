// Unsafe-shutdown detection (lib/heap/shutdown.cpp) with an injected device
// state: the emulated pmem of the VM suite has no DIMMs that count, so these
// cases are the proof of the path real DIMMs take. A heap left by a crash is
// a copy of its file taken while it is open.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "daxalloc/daxalloc.h"
#include "daxalloc/heap.hpp"
#include "heap/access.hpp"  // (and alloc/size_classes.hpp)
#include "platform/media.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;
namespace sp = daxalloc::sparse;
namespace media = daxalloc::media;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

// DIMMs whose identity and count the test sets.
class fake_dimms final : public media::provider {
 public:
  media::device_state state;
  void dimms(std::string id, std::uint64_t count) {
    state = {};
    state.shutdown_count_supported = true;
    state.device_id = std::move(id);
    state.unsafe_shutdowns = count;
  }
  void no_dimms() {
    state = {};
    state.note = "a test device without DIMMs";
  }
  media::device_state read(const daxalloc::region&) override { return state; }
  void clear(const daxalloc::region&, const media::bad_range&) override {
    throw daxalloc::error(errc::unsupported, "no bad blocks here");
  }
};

// Installs a provider for one test case; libpmem2's again at its end.
class installed {
 public:
  explicit installed(media::provider& p) { media::set_provider_for_testing(&p); }
  ~installed() { media::set_provider_for_testing(nullptr); }
  installed(const installed&) = delete;
  installed& operator=(const installed&) = delete;
};

daxalloc::heap_options sized() {
  daxalloc::heap_options o;
  o.size = 16 * MiB;
  o.max_size = 1024 * MiB;  // no hole before the memory: the file copies cheaply
  return o;
}

struct root_type {
  std::uint64_t object;  // offset of a 1000-byte object filled with 0xab
  std::uint64_t small;   // offset of a 48-byte object
};

struct crashed_heap {
  std::uint64_t record_at = 0;  // the shutdown record's offset in the file
  std::uint64_t small = 0;
};

// A heap made with the DIMMs `dimms` reports now, its root naming two
// objects, and `path` a copy of its file taken while it was open.
crashed_heap make_crashed(const std::filesystem::path& path) {
  const std::string live = path.string() + ".live";
  crashed_heap c;
  {
    auto h = heap::create(live, sized());
    auto* r = h.root<root_type>();
    void* object = h.allocate(1000);
    void* small = h.allocate(48);
    REQUIRE((object != nullptr && small != nullptr));
    std::memset(object, 0xab, 1000);
    h.persist().persist(object, 1000);
    r->object = h.offset_of(object);
    r->small = c.small = h.offset_of(small);
    h.persist().persist(r, sizeof *r);
    c.record_at =
        daxalloc::detail::internals(h).model().geo().slots_offset() + sp::shutdown_record_in_page;
    std::filesystem::copy_file(live, path);
  }
  std::filesystem::remove(live);
  return c;
}

std::string contents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

sp::shutdown_record read_record(const std::filesystem::path& path, std::uint64_t at) {
  sp::shutdown_record r{};
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(at));
  in.read(reinterpret_cast<char*>(&r), sizeof r);
  REQUIRE(in.good());
  return r;
}

void write_record(const std::filesystem::path& path, std::uint64_t at,
                  const sp::shutdown_record& r) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(at));
  io.write(reinterpret_cast<const char*>(&r), sizeof r);
  REQUIRE(io.good());
}

bool same(const sp::shutdown_record& a, const sp::shutdown_record& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The message of the errc::unsafe_shutdown an open throws ("" if none).
template <class Open>
std::string refusal(Open&& open) {
  try {
    (void)open();
  } catch (const daxalloc::error& e) {
    CHECK(e.code_value() == errc::unsafe_shutdown);
    return e.what();
  }
  FAIL("the open was not refused");
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void require_objects_intact(heap& h) {
  const auto* r = h.root<root_type>();
  const auto* object = static_cast<const unsigned char*>(h.at(r->object));
  for (int i = 0; i < 1000; ++i) REQUIRE(object[i] == 0xab);
  CHECK(h.usable_size(h.at(r->small)) >= 48);
  test::require_sound(h);
}

// The provider installed, and a heap a crash left on DIMMs `then_id` that
// counted `then`; the DIMMs report `now_id` and `now` afterwards.
struct crashed_on_dimms {
  fake_dimms dimms;
  installed guard{dimms};
  test::temp_file f;
  crashed_heap c;
  crashed_on_dimms(const std::string& then_id, std::uint64_t then, const std::string& now_id,
                   std::uint64_t now) {
    dimms.dimms(then_id, then);
    c = make_crashed(f.path());
    dimms.dimms(now_id, now);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return f.path(); }
  // The record on the media is the DIMMs' state now.
  [[nodiscard]] bool recorded_now() const {
    return same(read_record(f.path(), c.record_at),
                daxalloc::detail::shutdown_record_of(dimms.state));
  }
};

daxalloc::heap_open_options accepting() {
  daxalloc::heap_open_options o;
  o.accept_unsafe_shutdown = true;
  return o;
}
}  // namespace

TEST_CASE("closed cleanly, count changed since: opens clean, and records the new count") {
  fake_dimms dimms;
  const installed guard(dimms);
  test::temp_file f;
  dimms.dimms("dimm-0x1234", 3);
  std::uint64_t record_at = 0;
  {
    auto h = heap::create(f.path(), sized());
    record_at =
        daxalloc::detail::internals(h).model().geo().slots_offset() + sp::shutdown_record_in_page;
  }
  CHECK(same(read_record(f.path(), record_at), daxalloc::detail::shutdown_record_of(dimms.state)));
  dimms.dimms("dimm-0x1234", 4);
  {
    auto h = heap::open(f.path());
    CHECK(h.outcome() == daxalloc::open_outcome::clean);
    CHECK_FALSE(h.unsafe_shutdown());
    const auto d = h.shutdown_detection();
    CHECK(d.available);
    CHECK(d.device_id == "dimm-0x1234");
    CHECK(d.unsafe_shutdowns == 4);
  }
  CHECK(same(read_record(f.path(), record_at), daxalloc::detail::shutdown_record_of(dimms.state)));
}

TEST_CASE("not closed cleanly, count unchanged: recovered, no refusal") {
  crashed_on_dimms x("dimm-a", 7, "dimm-a", 7);
  auto h = heap::open(x.path());
  CHECK(h.outcome() == daxalloc::open_outcome::recovered);
  CHECK_FALSE(h.unsafe_shutdown());
  require_objects_intact(h);
}

TEST_CASE("not closed cleanly, count changed: refused untouched; accepted, checked and reported") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 5);
  const std::string before = contents(x.path());

  const std::string message = refusal([&] { return heap::open(x.path()); });
  CHECK(contains(message, x.path().string() + ": unsafe shutdown"));
  CHECK(contains(message, "count was 3 at its last open, it is 5 now"));
  CHECK(contains(message, "may be lost"));
  CHECK(contains(message, "heap_open_options::accept_unsafe_shutdown"));
  CHECK(contains(message, "--accept-unsafe-shutdown"));
  CHECK(contents(x.path()) == before);  // nothing written, not even a superblock copy
  (void)refusal([&] { return heap::open_read_only(x.path()); });
  CHECK(contents(x.path()) == before);

  {  // read-only, accepted: the check runs on the heap as it is; nothing written
    auto h = heap::open_read_only(x.path(), accepting());
    CHECK(h.unsafe_shutdown());
    CHECK(h.pending_recovery().unclean_shutdown);
  }
  CHECK(contents(x.path()) == before);

  {
    auto h = heap::open(x.path(), accepting());
    CHECK(h.unsafe_shutdown());
    CHECK(h.outcome() == daxalloc::open_outcome::recovered);
    CHECK(h.repairs().empty());
    require_objects_intact(h);
  }
  // The record holds the new count: the next open is an ordinary one.
  CHECK(x.recorded_now());
  auto h = heap::open(x.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  CHECK_FALSE(h.unsafe_shutdown());
}

TEST_CASE("accepted, the check runs after recovery: damage it finds refuses the heap") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 4);
  // A store the write-pending queue lost, as open cannot see it (slab
  // bitmaps are read at their first use): the 48-byte object's bitmap word.
  const auto& cls = daxalloc::alloc::size_classes[daxalloc::alloc::size_class_of(48)];
  const std::uint64_t slab_bytes = std::uint64_t{4096} << cls.slab_order;
  const std::uint64_t slab = x.c.small / slab_bytes * slab_bytes;
  const auto i = static_cast<std::uint32_t>((x.c.small - slab - cls.header) / cls.size);
  const std::uint64_t word_at = slab + cls.word_of(i) * 8;
  {
    std::fstream io(x.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::uint64_t w = 0;
    io.seekg(static_cast<std::streamoff>(word_at));
    io.read(reinterpret_cast<char*>(&w), 8);
    w ^= cls.mask_of(i);  // fails its check bits
    io.seekp(static_cast<std::streamoff>(word_at));
    io.write(reinterpret_cast<const char*>(&w), 8);
    REQUIRE(io.good());
  }
  {  // without an unsafe shutdown the same damage opens (check() finds it)
    x.dimms.dimms("dimm-a", 3);
    test::temp_file copy;
    std::filesystem::copy_file(x.path(), copy.path());
    auto h = heap::open(copy.path());
    CHECK_FALSE(h.check().empty());
    x.dimms.dimms("dimm-a", 4);
  }
  try {
    (void)heap::open(x.path(), accepting());
    FAIL("the damaged heap was opened");
  } catch (const daxalloc::error& e) {
    CHECK(e.code_value() == errc::corrupt);
    CHECK(contains(e.what(), "after the unsafe shutdown, the check found"));
    CHECK(contains(e.what(), "open with repair"));
  }
  // Still refused as an unsafe shutdown: the check never passed.
  (void)refusal([&] { return heap::open(x.path()); });
  auto o = accepting();
  o.repair = true;
  auto h = heap::open(x.path(), o);
  CHECK(h.unsafe_shutdown());
  CHECK(h.outcome() == daxalloc::open_outcome::repaired);
  CHECK_FALSE(h.repairs().empty());
  test::require_sound(h);
}

TEST_CASE("not closed cleanly on other DIMMs: refused") {
  crashed_on_dimms x("dimm-a", 3, "dimm-b", 3);
  const std::string message = refusal([&] { return heap::open(x.path()); });
  CHECK(contains(message, "were replaced, or the heap was moved; now: dimm-b"));
  auto h = heap::open(x.path(), accepting());
  CHECK(h.unsafe_shutdown());
}

TEST_CASE("a device without DIMM counts: never refused, the record cleared, info says why") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 3);
  x.dimms.no_dimms();
  {
    auto h = heap::open(x.path());
    CHECK(h.outcome() == daxalloc::open_outcome::recovered);
    CHECK_FALSE(h.unsafe_shutdown());
    const auto d = h.shutdown_detection();
    CHECK_FALSE(d.available);
    CHECK(d.note == "a test device without DIMMs");
  }
  CHECK(same(read_record(x.path(), x.c.record_at), sp::shutdown_record{}));
}

TEST_CASE("a heap made before the record (all zero), unclean, on DIMMs: opens, then records") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 3);
  write_record(x.path(), x.c.record_at, sp::shutdown_record{});
  x.dimms.dimms("dimm-a", 9);
  {
    auto h = heap::open(x.path());
    CHECK(h.outcome() == daxalloc::open_outcome::recovered);
    CHECK_FALSE(h.unsafe_shutdown());
    CHECK(h.repairs().empty());
  }
  CHECK(x.recorded_now());
}

// A crash between writing the record and marking the heap open leaves the
// heap unclean with this open's record: the next open recovers it.
TEST_CASE("unclean with the record of the devices now (a crash after the record): recovered") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 4);
  write_record(x.path(), x.c.record_at, daxalloc::detail::shutdown_record_of(x.dimms.state));
  auto h = heap::open(x.path());
  CHECK(h.outcome() == daxalloc::open_outcome::recovered);
  CHECK_FALSE(h.unsafe_shutdown());
}

// A damaged record (a torn write, a flipped bit) cannot tell anything: it is
// ignored, not a refusal, and rewritten, which repairs() reports.
TEST_CASE("a damaged record is ignored and rewritten, with a line in repairs()") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 3);
  sp::shutdown_record torn = read_record(x.path(), x.c.record_at);
  CHECK(torn.flags == sp::shutdown_recorded);
  torn.unsafe_shutdowns = 4;  // the first word of a new record, the rest old
  write_record(x.path(), x.c.record_at, torn);
  x.dimms.dimms("dimm-a", 4);
  {
    auto h = heap::open_read_only(x.path());
    const auto& steps = h.pending_recovery().steps;
    CHECK(std::any_of(steps.begin(), steps.end(), [](const std::string& s) {
      return contains(s, "rewrite the damaged unsafe-shutdown record");
    }));
  }
  {
    auto h = heap::open(x.path());
    CHECK_FALSE(h.unsafe_shutdown());
    CHECK(h.outcome() == daxalloc::open_outcome::repaired);
    REQUIRE(h.repairs().size() == 1);
    CHECK(contains(h.repairs().front(), "rewrote the damaged unsafe-shutdown record"));
  }
  CHECK(x.recorded_now());
  auto h = heap::open(x.path());
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
}

TEST_CASE("the C API: the refusal, the option and the report") {
  crashed_on_dimms x("dimm-a", 3, "dimm-a", 4);
  daxalloc_open_options_t o{};
  daxalloc_heap_t* h = nullptr;
  CHECK(daxalloc_open(x.path().c_str(), &o, &h) == DAXALLOC_E_UNSAFE_SHUTDOWN);
  CHECK(h == nullptr);
  CHECK(contains(daxalloc_errormsg(), "accept_unsafe_shutdown"));
  o.accept_unsafe_shutdown = 1;
  REQUIRE(daxalloc_open(x.path().c_str(), &o, &h) == DAXALLOC_OK);
  int unsafe = 0;
  CHECK(daxalloc_unsafe_shutdown(h, &unsafe) == DAXALLOC_OK);
  CHECK(unsafe == 1);
  CHECK(daxalloc_close(h) == DAXALLOC_OK);
  REQUIRE(daxalloc_open(x.path().c_str(), nullptr, &h) == DAXALLOC_OK);
  CHECK(daxalloc_unsafe_shutdown(h, &unsafe) == DAXALLOC_OK);
  CHECK(unsafe == 0);
  CHECK(daxalloc_close(h) == DAXALLOC_OK);
}

TEST_CASE("the default provider on a file in /dev/shm: no DIMMs, detection not available") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized());
  const auto d = h.shutdown_detection();
  CHECK_FALSE(d.available);
  CHECK_FALSE(d.note.empty());
}
