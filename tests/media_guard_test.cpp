// The machine-check-safe loads (platform/media_guard): on the host a load
// from a MAP_SHARED file mapping beyond the file's end raises SIGBUS
// (BUS_ADRERR), as a load from a listed bad sector of an fsdax file does.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "daxalloc/heap.hpp"
#include "heap/access.hpp"
#include "heap/heap_impl.hpp"
#include "platform/media_guard.hpp"
#include "test_util.hpp"

using namespace daxalloc;
using daxalloc::heap;

#if defined(__SANITIZE_ADDRESS__)
#define GUARD_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GUARD_TEST_ASAN 1
#endif
#endif

namespace {

constexpr std::size_t page = 4096;

// A file of `pages` pages mapped shared, each byte its offset's low byte;
// shrink() cuts it to `keep` pages under the mapping.
class shrinking_mapping {
 public:
  explicit shrinking_mapping(std::size_t pages) : size_(pages * page) {
    fd_ = ::open(file_.path().c_str(), O_RDWR | O_CREAT, 0600);
    REQUIRE(fd_ >= 0);
    REQUIRE(::ftruncate(fd_, static_cast<off_t>(size_)) == 0);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
    for (std::size_t i = 0; i < size_; ++i) base_[i] = static_cast<std::byte>(i);
  }
  ~shrinking_mapping() {
    ::munmap(base_, size_);
    ::close(fd_);
  }
  shrinking_mapping(const shrinking_mapping&) = delete;
  shrinking_mapping& operator=(const shrinking_mapping&) = delete;
  void shrink(std::size_t keep) { REQUIRE(::ftruncate(fd_, static_cast<off_t>(keep * page)) == 0); }
  [[nodiscard]] std::byte* base() const { return base_; }

 private:
  test::temp_file file_{"guard"};
  int fd_ = -1;
  std::size_t size_;
  std::byte* base_ = nullptr;
};

bool user_handler_ran = false;
void user_handler(int, siginfo_t*, void*) {
  user_handler_ran = true;
  _exit(42);
}

}  // namespace

// First in this file: the guard's handler is installed once per process,
// and this child must install its own before that (the parent has not
// guarded anything yet when this test runs first, as it does in file order).
TEST_CASE("a SIGBUS outside a guard reaches the handler the application installed before") {
  shrinking_mapping m(4);
  m.shrink(2);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    struct sigaction action {};
    action.sa_sigaction = user_handler;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, nullptr);
    std::byte copy[64];
    if (media::copy_mc(copy, m.base() + 3 * page, sizeof copy) != sizeof copy) _exit(1);
    (void)*reinterpret_cast<volatile const std::uint8_t*>(m.base() + 3 * page);  // unguarded
    _exit(2);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 42);
}

TEST_CASE("copy_mc and probe stop at the first unreadable byte") {
  shrinking_mapping m(8);
  m.shrink(5);  // pages 5, 6, 7 beyond the end
  std::vector<std::byte> out(4 * page, std::byte{0xee});

  // Readable: all copied.
  CHECK(media::copy_mc(out.data(), m.base() + 100, 3 * page) == 0);
  CHECK(std::memcmp(out.data(), m.base() + 100, 3 * page) == 0);
  CHECK(media::probe(m.base() + 7, 5 * page - 7) == 5 * page - 7);

  // From 3 pages and 10 bytes before the end: 3 * page + 10 copied, the rest not.
  std::fill(out.begin(), out.end(), std::byte{0xee});
  const std::byte* from = m.base() + 2 * page - 10;
  CHECK(media::copy_mc(out.data(), from, 4 * page) == page - 10);
  CHECK(std::memcmp(out.data(), from, 3 * page + 10) == 0);
  CHECK(out[3 * page + 10] == std::byte{0xee});
  CHECK(media::probe(from, 4 * page) == 3 * page + 10);

  // Starting in the unreadable part (the guarded page is the first one).
  CHECK(media::copy_mc(out.data(), m.base() + 6 * page + 1, 100) == 100);
  CHECK(media::probe(m.base() + 6 * page + 1, 100) == 0);
  CHECK(media::probe(m.base() + 5 * page, 1) == 0);
  CHECK(media::copy_mc(out.data(), m.base(), 0) == 0);

  // Known bad blocks: not loaded, reported listed; faults reported not listed.
  const media::guarded_reader reader({{page + 128, 64}, {3 * page, page}});
  auto f = reader.probe(m.base(), 0, 2 * page);
  REQUIRE(f);
  CHECK(f->offset == page + 128);
  CHECK(f->listed);
  CHECK(media::describe(*f) == "bad block at offset 0x1080");
  CHECK_FALSE(reader.probe(m.base(), page + 192, page));
  f = reader.copy(out.data(), m.base(), page + 200, 4 * page);
  REQUIRE(f);
  CHECK(f->offset == 3 * page);
  CHECK(f->listed);
  CHECK(std::memcmp(out.data(), m.base() + page + 200, 2 * page - 200) == 0);
  f = reader.copy(out.data(), m.base(), 4 * page + 8, 2 * page);
  REQUIRE(f);
  CHECK(f->offset == 5 * page);
  CHECK_FALSE(f->listed);
  CHECK(media::describe(*f) == "media error at offset 0x5000");
  CHECK_FALSE(reader.copy(out.data(), m.base(), 0, page));
}

TEST_CASE("a SIGBUS outside a guard still ends the process") {
  shrinking_mapping m(4);
  std::byte copy[16];
  CHECK(media::copy_mc(copy, m.base(), sizeof copy) == 0);  // (the handler is installed)
  m.shrink(1);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (media::probe(m.base() + 2 * page, 8) != 0) _exit(1);
    (void)*reinterpret_cast<volatile const std::uint8_t*>(m.base() + 2 * page);
    _exit(2);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
#ifdef GUARD_TEST_ASAN
  // ASan's handler was there before ours: it reports the SIGBUS and exits.
  CHECK(((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
         (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 2)));
#else
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGBUS);
#endif
}

TEST_CASE("two threads guard at once") {
  shrinking_mapping m(64);
  m.shrink(32);
  std::vector<std::size_t> results(2);
  const auto run = [&](int t) {
    std::vector<std::byte> out(8 * page);
    std::size_t worst = 0;
    for (int round = 0; round < 2000; ++round) {
      const std::size_t start = (t ? 28 : 30) * page + static_cast<std::size_t>(round % 7) * 64;
      const std::size_t left = media::copy_mc(out.data(), m.base() + start, 8 * page);
      const std::size_t readable = media::probe(m.base() + start, 8 * page);
      if (left != 8 * page - (32 * page - start) || readable != 32 * page - start) ++worst;
    }
    results[static_cast<std::size_t>(t)] = worst;
  };
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  CHECK(results[0] == 0);
  CHECK(results[1] == 0);
}

// ---- the heap ----

namespace {

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

bool mentions(const std::vector<std::string>& lines, const std::string& text) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

std::string message_of(const std::function<void()>& f, errc& code) {
  try {
    f();
  } catch (const daxalloc::error& e) {
    code = e.code_value();
    return e.what();
  }
  code = errc::ok;
  return {};
}

// A media that lists the given bad blocks (the emulated NVDIMM cannot).
class listing_provider : public media::provider {
 public:
  explicit listing_provider(std::vector<media::bad_range> bad) : bad_(std::move(bad)) {}
  media::device_state read(const region&) override {
    media::device_state s;
    s.bad_blocks_supported = true;
    s.bad_blocks = bad_;
    return s;
  }
  void clear(const region&, const media::bad_range&) override {
    throw daxalloc::error(errc::unsupported, "test provider");
  }

 private:
  std::vector<media::bad_range> bad_;
};

// Restores libpmem2's provider when the test ends.
struct provider_scope {
  explicit provider_scope(media::provider* p) { media::set_provider_for_testing(p); }
  ~provider_scope() { media::set_provider_for_testing(nullptr); }
  provider_scope(const provider_scope&) = delete;
  provider_scope& operator=(const provider_scope&) = delete;
};

heap_options small_heap() {
  heap_options o;
  o.size = 16 * MiB;
  o.max_size = 1024 * MiB;
  return o;
}

}  // namespace

TEST_CASE("the heap's memory beyond the file's end: read_guarded, free and check report it") {
  test::temp_file file("guard-heap");
  std::vector<std::uint64_t> objects;
  {
    auto h = heap::create(file.path(), small_heap());
    std::error_code ec;
    while (void* p = h.allocate(64, ec)) objects.push_back(h.offset_of(p));
    REQUIRE(ec == errc::out_of_space);
    std::sort(objects.begin(), objects.end());
    REQUIRE(objects.back() >= 15 * MiB);
    for (std::size_t i = 0; i < 100; ++i) h.deallocate(h.at(objects[i]));  // room below
    objects.erase(objects.begin(), objects.begin() + 100);
  }
  auto h = heap::open(file.path());  // every slab unloaded
  const int fd = ::open(file.path().c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(14 * MiB)) == 0);  // the last pageblock: gone
  ::close(fd);
  const std::uint64_t lost =
      *std::lower_bound(objects.begin(), objects.end(), 14 * MiB + 64 * 1024);
  const std::uint64_t kept = objects.front();

  std::byte out[256];
  errc code{};
  std::string what = message_of([&] { h.read_guarded(out, h.at(lost), 64); }, code);
  CHECK(code == errc::media_error);
  CHECK(what.find("media error at offset " + sparse::hex(lost)) != std::string::npos);
  std::error_code ec;
  CHECK(h.read_guarded(out, h.at(lost - 128), 256, ec) == 0);  // (a page beyond: all of it)
  CHECK(ec == errc::media_error);
  const std::uint64_t edge = 14 * MiB - 100;
  CHECK(h.read_guarded(out, h.at(edge), 200, ec) == 100);
  CHECK(ec == errc::media_error);
  CHECK(std::memcmp(out, h.at(edge), 100) == 0);
  CHECK(h.read_guarded(out, h.at(kept), 64, ec) == 64);
  CHECK_FALSE(ec);
  CHECK_ERRC(h.read_guarded(out, h.base() + h.size() - 8, 64), errc::invalid_argument);
  CHECK_ERRC(h.read_guarded(out, out, 8), errc::invalid_argument);

  what = message_of([&] { h.deallocate(h.at(lost)); }, code);
  CHECK(code == errc::media_error);
  CHECK(what.find("does not read") != std::string::npos);

  const auto problems = h.check();
  CHECK(mentions(problems, "its bitmap does not read: media error at offset "));
  for (int i = 0; i < 50; ++i) {
    void* p = h.allocate(64);
    CHECK(h.offset_of(p) < 14 * MiB);
  }
}

TEST_CASE("listed bad blocks in the head and the memmap") {
  test::temp_file file("guard-bad");
  std::uint64_t lanes = 0, roots = 0, descriptors = 0;
  const std::uint64_t pageblock = 8 * MiB;
  {
    auto h = heap::create(file.path(), small_heap());
    const auto& geo = detail::internals(h).model().geo();
    lanes = geo.lanes_offset();
    roots = geo.roots_offset();
    REQUIRE(geo.memmap_area != 0);
    descriptors = geo.descriptor_page(pageblock);
    (void)h.allocate(3 * MiB);  // an extent over the pageblock at 8 MiB
  }
  errc code{};
  SUBCASE("superblock copy A: the open uses copy B") {
    listing_provider bad({{0, 4096}});
    provider_scope scope(&bad);
    auto h = heap::open(file.path());
    CHECK(mentions(h.check(), "superblock copy A: bad block at offset 0"));
  }
  SUBCASE("both superblock copies") {
    listing_provider bad({{0, 8192}});
    provider_scope scope(&bad);
    CHECK_ERRC(heap::open(file.path()), errc::corrupt);
  }
  SUBCASE("a lane") {
    listing_provider bad({{lanes + 3 * 4096 + 512, 512}});
    provider_scope scope(&bad);
    const std::string what = message_of([&] { (void)heap::open(file.path()); }, code);
    CHECK(code == errc::corrupt);
    CHECK(what.find("bad block at offset " + sparse::hex(lanes + 3 * 4096 + 512) +
                    " in the redo lanes (lane 3)") != std::string::npos);
  }
  SUBCASE("the section map") {
    listing_provider bad({{roots, 4096}});
    provider_scope scope(&bad);
    const std::string what = message_of([&] { (void)heap::open(file.path()); }, code);
    CHECK(code == errc::corrupt);
    CHECK(what.find("in the section map (root page 0)") != std::string::npos);
  }
  SUBCASE("a descriptor page: refused, or with repair the pageblock quarantined") {
    listing_provider bad({{descriptors + 1024, 8}});
    provider_scope scope(&bad);
    const std::string what = message_of([&] { (void)heap::open(file.path()); }, code);
    CHECK(code == errc::corrupt);
    CHECK(what.find("bad block at offset " + sparse::hex(descriptors + 1024) +
                    " (the descriptors of the pageblock at " + sparse::hex(pageblock) + ")") !=
          std::string::npos);
    heap_open_options repair;
    repair.repair = true;
    auto h = heap::open(file.path(), repair);
    CHECK(mentions(h.repairs(), "quarantined the pageblock at " + sparse::hex(pageblock)));
    CHECK(detail::internals(h).model().get_pageblock_migratetype(pageblock >> 12) ==
          sparse::migratetype::isolate);
    (void)h.check();  // (does not load the quarantined descriptors)
    CHECK(h.allocate(64) != nullptr);
  }
}
