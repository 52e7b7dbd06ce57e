// heap::open_read_only and heap::open_or_create (issue 19, item 1): a
// read-only open writes nothing (the file is byte-identical afterwards, even
// for a heap that needs recovery, whose recovery it reports instead), shares
// the heap with other readers and never with a writer, and refuses every
// call that writes; open_or_create lets exactly one of racing processes
// create the heap.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "daxalloc/allocator.hpp"
#include "daxalloc/heap.hpp"
#include "sparse/layout.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;
using daxalloc::open_outcome;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

daxalloc::heap_options sized(std::uint64_t size) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = 1024 * MiB;
  return o;
}

std::string bytes_of(const std::filesystem::path& path) {
  std::string bytes(std::filesystem::file_size(path), '\0');
  std::ifstream(path, std::ios::binary)
      .read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

struct root_type {
  std::uint64_t magic;
  std::uint64_t children;
  daxalloc::pptr<std::uint64_t> published;
};

// A heap with small objects, an extent, a root and a named object, closed.
void populate(const std::filesystem::path& path) {
  auto h = heap::create(path, sized(32 * MiB));
  h.root<root_type>()->magic = 0x600d;
  h.persist().persist(h.root<root_type>(), sizeof(root_type));
  for (std::size_t size : {16, 200, 4096, 100 * 1024}) (void)h.allocate(size);
  (void)h.construct<std::uint64_t>("counter")(7);
}

// Runs f in a child process; returns its wait status.
template <class F>
int in_child(F&& f) {
  const pid_t pid = fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    std::_Exit(code);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

void flip_byte(const std::filesystem::path& path, std::uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0xff);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("a read-only open writes nothing and sees what a read-write open sees") {
  test::temp_file f;
  populate(f.path());
  daxalloc::heap_stats written;
  {
    auto h = heap::open(f.path());
    written = h.stats();
  }
  const std::string before = bytes_of(f.path());
  {
    auto h = heap::open_read_only(f.path());
    CHECK(h.read_only());
    CHECK(h.outcome() == open_outcome::clean);
    CHECK(h.pending_recovery().empty());
    CHECK_FALSE(h.pending_recovery().unclean_shutdown);
    const auto s = h.stats();
    CHECK(s.allocated_objects == written.allocated_objects);
    CHECK(s.allocated_bytes == written.allocated_bytes);
    CHECK(s.free_bytes == written.free_bytes);
    CHECK_FALSE(s.unclean_shutdown);
    test::require_sound(h);
    CHECK(h.root<root_type>()->magic == 0x600d);  // an existing root is read
    auto [counter, n] = h.find<std::uint64_t>("counter");
    REQUIRE(counter != nullptr);
    CHECK(*counter == 7);
    CHECK(n == 1);
    CHECK(h.named_objects().size() == 1);
    CHECK(h.media().read_only());
  }
  CHECK(bytes_of(f.path()) == before);  // no generation, no shutdown marker, nothing
}

TEST_CASE("readers share a heap; a writer excludes them, and they exclude it") {
  test::temp_file f;
  populate(f.path());
  {
    auto writer = heap::open(f.path());
    CHECK_ERRC(heap::open_read_only(f.path()), errc::busy);
    std::error_code ec;
    CHECK_FALSE(heap::open_read_only(f.path(), ec).is_open());
    CHECK(ec == errc::busy);
    CHECK(ec == std::errc::device_or_resource_busy);
  }
  {
    auto reader1 = heap::open_read_only(f.path());
    auto reader2 = heap::open_read_only(f.path());  // many readers at once
    CHECK_ERRC(heap::open(f.path()), errc::busy);
    // Another process: the lock is the file's, not this process's.
    const int status = in_child([&] {
      auto reader3 = heap::open_read_only(f.path());
      try {
        (void)heap::open(f.path());
      } catch (const daxalloc::error& e) {
        return e.code_value() == errc::busy ? 0 : 2;
      }
      return 3;
    });
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto writer = heap::open(f.path());  // the readers are gone
  CHECK_FALSE(writer.read_only());
}

TEST_CASE("wait_for_lock waits for the writer instead of failing busy") {
  test::temp_file f;
  populate(f.path());
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    auto writer = heap::open(f.path());
    (void)!write(ready[1], "r", 1);
    usleep(300 * 1000);
    std::_Exit(0);  // an abandoned heap: the lock goes with the process
  }
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  daxalloc::heap_open_options o;
  o.wait_for_lock = true;
  auto h = heap::open_read_only(f.path(), o);  // blocks until the child exits
  CHECK(h.pending_recovery().unclean_shutdown);
  int status = 0;
  waitpid(pid, &status, 0);
  close(ready[0]);
  close(ready[1]);
}

TEST_CASE("every call that writes is errc::read_only on a read-only heap") {
  test::temp_file f;
  void* object = nullptr;
  std::uint64_t object_offset = 0;
  {
    auto h = heap::create(f.path(), sized(32 * MiB));
    object = h.allocate(64);
    object_offset = h.offset_of(object);
    (void)h.construct<std::uint64_t>("counter")(7);
  }
  const std::string before = bytes_of(f.path());
  {
    auto h = heap::open_read_only(f.path());
    void* p = h.at(object_offset);
    std::error_code ec;
    CHECK_ERRC(h.allocate(64), errc::read_only);
    CHECK_ERRC(h.allocate(std::size_t{1} << 20), errc::read_only);
    CHECK(h.allocate(64, std::nothrow) == nullptr);
    CHECK(h.allocate(64, ec) == nullptr);
    CHECK(ec == errc::read_only);
    CHECK(ec == std::errc::read_only_file_system);
    CHECK(daxalloc::last_error_message().find("read-only") != std::string::npos);
    CHECK_ERRC(h.reserve(64), errc::read_only);
    CHECK_FALSE(h.reserve(64, std::nothrow));
    CHECK_FALSE(h.reserve(64, ec));
    CHECK(ec == errc::read_only);
    CHECK_ERRC(h.deallocate(p), errc::read_only);
    CHECK_ERRC(h.cancel(p), errc::read_only);
    daxalloc::reservation foreign{p, 64};
    h.cancel(foreign);  // noexcept: a read-only heap has no reservation to cancel
    CHECK_ERRC(h.root(64), errc::read_only);  // no root yet: creating one writes
    CHECK(h.root(64, ec) == nullptr);
    CHECK(ec == errc::read_only);
    CHECK_ERRC(h.hot_add(64 * MiB, 2 * MiB), errc::read_only);
    CHECK_ERRC(h.hot_remove(30 * MiB, 2 * MiB), errc::read_only);
    h.hot_add(64 * MiB, 2 * MiB, ec);
    CHECK(ec == errc::read_only);
    CHECK_ERRC(daxalloc::batch(h), errc::read_only);
    daxalloc::pptr<std::uint64_t> dest;
    CHECK_ERRC(h.make_published(dest, 1), errc::read_only);
    CHECK(h.allocate_publish(
              dest, 8, [](std::uint64_t*) {}, ec) == nullptr);
    CHECK(ec == errc::read_only);
    CHECK_ERRC(h.construct<std::uint64_t>("other")(1), errc::read_only);
    CHECK(*h.find_or_construct<std::uint64_t>("counter")(0) == 7);  // found: nothing to write
    CHECK_ERRC(h.destroy<std::uint64_t>("counter"), errc::read_only);
    daxalloc::allocator<int> a(h);
    CHECK_ERRC(a.allocate(4), errc::read_only);
    test::require_sound(h);
  }
  CHECK(bytes_of(f.path()) == before);
  daxalloc::heap_open_options repair;
  repair.repair = true;
  CHECK_ERRC(heap::open_read_only(f.path(), repair), errc::read_only);
}

TEST_CASE("a read-only heap is mapped PROT_READ: a store is a SIGSEGV") {
  test::temp_file f;
  populate(f.path());
  const std::string before = bytes_of(f.path());
  const int status = in_child([&] {
    auto h = heap::open_read_only(f.path());
    std::signal(SIGSEGV, SIG_DFL);  // not the sanitizer's handler: die of the signal
    *static_cast<volatile std::uint64_t*>(h.root(sizeof(root_type))) = 1;
    return 0;
  });
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);
  CHECK(bytes_of(f.path()) == before);
}

TEST_CASE("an unclean heap opened read-only reports the recovery it does not run") {
  test::temp_file f;
  {
    auto h = heap::create(f.path(), sized(32 * MiB));
    h.root<root_type>()->magic = 0x600d;
    h.persist().persist(h.root<root_type>(), sizeof(root_type));
  }
  // A writer that publishes a batch and dies: its redo lane is committed
  // and not yet retired, the heap is marked open.
  const int status = in_child([&] {
    auto h = heap::open(f.path());
    (void)h.make_published(h.root<root_type>()->published, 42);
    std::_Exit(0);
    return 0;
  });
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  // A torn root slot is not part of this; a stale superblock copy B is.
  flip_byte(f.path(), daxalloc::sparse::superblock_offset[1] + 200);
  const std::string before = bytes_of(f.path());
  {
    auto h = heap::open_read_only(f.path());
    const auto& plan = h.pending_recovery();
    std::string steps;
    for (const auto& step : plan.steps) steps += step + "\n";
    INFO(steps);
    CHECK(plan.unclean_shutdown);
    CHECK(h.stats().unclean_shutdown);
    CHECK(h.outcome() == open_outcome::recovered);
    CHECK(plan.lanes_to_replay == 1);
    CHECK(plan.lanes_to_clear >= 1);
    CHECK(plan.steps.size() == 3);
    CHECK(plan.steps[0].find("rewrite superblock copy B from copy A") == 0);
    CHECK(plan.steps[1].find("replay 1 committed redo lane") == 0);
    CHECK(plan.steps[2].find("clear ") == 0);
    test::require_sound(h);  // what recovery would fix is not a problem
  }
  CHECK(bytes_of(f.path()) == before);
  {
    auto h = heap::open(f.path());  // read-write: recovers
    CHECK(h.outcome() == open_outcome::recovered);
    REQUIRE(h.root<root_type>()->published.get() != nullptr);
    CHECK(*h.root<root_type>()->published.get() == 42);
    CHECK(h.pending_recovery().empty());  // a read-write handle ran it
  }
  auto h = heap::open_read_only(f.path());
  CHECK(h.pending_recovery().empty());
  CHECK_FALSE(h.pending_recovery().unclean_shutdown);
}

TEST_CASE("a torn root slot is reported by a read-only open and cleared by a read-write one") {
  test::temp_file f;
  (void)heap::create(f.path(), sized(32 * MiB));
  // A slot whose checksum does not match: a root() that a crash interrupted.
  {
    std::fstream file(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    const std::uint64_t slot[4] = {4 * MiB, 64, 0x1234, 0};
    file.seekp(static_cast<std::streamoff>(daxalloc::sparse::root_slot_offset));
    file.write(reinterpret_cast<const char*>(slot), sizeof slot);
  }
  const std::string before = bytes_of(f.path());
  {
    auto h = heap::open_read_only(f.path());
    REQUIRE(h.pending_recovery().steps.size() == 1);
    CHECK(h.pending_recovery().steps[0].find("clear the root slot copy A (torn") == 0);
    CHECK_FALSE(h.pending_recovery().unclean_shutdown);
    test::require_sound(h);
  }
  CHECK(bytes_of(f.path()) == before);
  { auto h = heap::open(f.path()); }
  auto h = heap::open_read_only(f.path());
  CHECK(h.pending_recovery().empty());
}

TEST_CASE("open_or_create creates once, then opens") {
  test::temp_file f;
  {
    auto h = heap::open_or_create(f.path(), sized(16 * MiB));
    CHECK(h.outcome() == open_outcome::created);
    h.root<root_type>()->magic = 0x600d;
  }
  {
    auto h = heap::open_or_create(f.path(), sized(64 * MiB));  // the size of the existing one wins
    CHECK(h.outcome() == open_outcome::clean);
    CHECK(h.root<root_type>()->magic == 0x600d);
    CHECK(h.stats().present_bytes == 16 * MiB);
  }
  // An empty file (touched, or left by a create that failed before it wrote).
  test::temp_file empty;
  { std::ofstream touch(empty.path()); }
  CHECK(heap::open_or_create(empty.path(), sized(16 * MiB)).outcome() == open_outcome::created);
  // A file that is not a heap is not overwritten.
  test::temp_file junk;
  {
    std::ofstream out(junk.path(), std::ios::binary);
    out << std::string(1 << 20, 'x');
  }
  CHECK_ERRC(heap::open_or_create(junk.path(), sized(16 * MiB)), errc::corrupt);
  CHECK(bytes_of(junk.path()) == std::string(1 << 20, 'x'));
  std::error_code ec;
  CHECK_FALSE(heap::open_or_create(junk.path(), sized(16 * MiB), ec).is_open());
  CHECK(ec == errc::corrupt);
  // Bad create options on a new path leave no file behind.
  test::temp_file bad;
  CHECK_ERRC(heap::open_or_create(bad.path(), sized(1 * MiB)), errc::too_small);
  CHECK_FALSE(std::filesystem::exists(bad.path()));
  CHECK_ERRC(heap::open_or_create(bad.path(), sized(0)), errc::too_small);
}

TEST_CASE("processes racing open_or_create make exactly one heap, and all of them open it") {
  constexpr int rounds = 10, racers = 4;
  for (int round = 0; round < rounds; ++round) {
    test::temp_file f;
    int go[2], report[2];
    REQUIRE(pipe(go) == 0);
    REQUIRE(pipe(report) == 0);
    std::vector<pid_t> pids;
    for (int i = 0; i < racers; ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        close(go[1]);
        char c;
        (void)!read(go[0], &c, 1);  // all start together
        try {
          daxalloc::heap_open_options o;
          o.wait_for_lock = true;
          auto h = heap::open_or_create(f.path(), sized(16 * MiB), o);
          const char outcome = h.outcome() == open_outcome::created ? 'C' : 'O';
          auto* r = h.root<root_type>();
          ++r->children;  // under the heap's exclusive lock
          h.persist().persist(r, sizeof *r);
          (void)!write(report[1], &outcome, 1);
          std::_Exit(0);
        } catch (const daxalloc::error& e) {
          std::fprintf(stderr, "racer: %s\n", e.what());
          std::_Exit(1);
        }
      }
      pids.push_back(pid);
    }
    close(go[0]);
    close(go[1]);  // end of file: go
    close(report[1]);
    std::string outcomes;
    char c;
    while (read(report[0], &c, 1) == 1) outcomes += c;
    close(report[0]);
    for (pid_t pid : pids) {
      int status = 0;
      waitpid(pid, &status, 0);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
    CHECK(outcomes.size() == std::size_t{racers});
    CHECK(std::count(outcomes.begin(), outcomes.end(), 'C') == 1);
    // Each racer left the heap marked open (_Exit): one heap, every increment in it.
    auto h = heap::open(f.path());
    CHECK(h.root<root_type>()->children == racers);
    test::require_sound(h);
  }
}

TEST_CASE("open_or_create without waiting: the others open, or find the heap busy") {
  constexpr int racers = 4;
  test::temp_file f;
  std::vector<pid_t> pids;
  for (int i = 0; i < racers; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      try {
        auto h = heap::open_or_create(f.path(), sized(16 * MiB));
        std::_Exit(h.outcome() == open_outcome::created ? 10 : 11);
      } catch (const daxalloc::error& e) {
        std::_Exit(e.code_value() == errc::busy ? 12 : 1);
      }
    }
    pids.push_back(pid);
  }
  int created = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    CHECK(code >= 10);  // never corrupt, already_exists or a second create
    created += code == 10;
  }
  CHECK(created == 1);
  test::require_sound(heap::open(f.path()));
}
