// The public surface as an outside user meets it: the umbrella header and
// the version macros, empty heap handles, ownership in the types
// (move-only reservations, batches that fail cleanly once their heap is
// closed, a noexcept container deallocate), foreign reservations and
// pointers, and the thread-safety statement of each public class.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <type_traits>
#include <utility>
#include <vector>

#include "daxalloc/daxalloc.hpp"  // only the umbrella: it must bring everything below
#include "test_util.hpp"

using daxalloc::batch;
using daxalloc::errc;
using daxalloc::heap;
using daxalloc::pptr;
using daxalloc::reservation;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

heap make_heap(const test::temp_file& f) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::create(f.path(), o);
}

struct counter {
  std::uint64_t value;
};

// Every member of an empty handle throws invalid_argument; the nothrow forms
// return nothing, close() does nothing.
void check_empty_handle(heap& h) {
  int outside = 0;
  pptr<int> dest(&outside);
  reservation r;
  CHECK_ERRC(h.allocate(64), errc::invalid_argument);
  CHECK(h.allocate(64, std::nothrow) == nullptr);
  CHECK_ERRC(h.deallocate(&outside), errc::invalid_argument);
  CHECK_ERRC(h.deallocate(nullptr), errc::invalid_argument);
  CHECK_ERRC(h.reserve(64), errc::invalid_argument);
  CHECK_FALSE(h.reserve(64, std::nothrow));
  CHECK_ERRC(h.cancel(r), errc::invalid_argument);
  CHECK_ERRC(h.cancel(&outside), errc::invalid_argument);
  CHECK_ERRC(h.root(64), errc::invalid_argument);
  CHECK_ERRC(h.root<counter>(), errc::invalid_argument);
  CHECK_ERRC(h.hot_add(64 * MiB, 2 * MiB), errc::invalid_argument);
  CHECK_ERRC(h.hot_remove(32 * MiB, 2 * MiB), errc::invalid_argument);
  CHECK_ERRC(h.stats(), errc::invalid_argument);
  CHECK_ERRC(h.outcome(), errc::invalid_argument);
  CHECK_ERRC(h.repairs(), errc::invalid_argument);
  CHECK_ERRC(h.check(), errc::invalid_argument);
  CHECK_ERRC(h.base(), errc::invalid_argument);
  CHECK_ERRC(h.size(), errc::invalid_argument);
  CHECK_ERRC(h.offset_of(&outside), errc::invalid_argument);
  CHECK_ERRC(h.at(4096), errc::invalid_argument);
  CHECK_ERRC(h.usable_size(&outside), errc::invalid_argument);
  CHECK_ERRC(h.persist(), errc::invalid_argument);
  CHECK_ERRC(h.media(), errc::invalid_argument);
  CHECK_ERRC(h.layout(), errc::invalid_argument);
  CHECK_ERRC(h.for_each_object([](const daxalloc::object_info&) {}), errc::invalid_argument);
  CHECK_ERRC(h.for_each_section([](const daxalloc::section_info&) {}), errc::invalid_argument);
  CHECK_ERRC(h.for_each_pageblock([](const daxalloc::pageblock_info&) {}), errc::invalid_argument);
  CHECK_ERRC(h.construct<counter>("c")(counter{1}), errc::invalid_argument);
  CHECK_ERRC(h.find_or_construct<counter>("c")(), errc::invalid_argument);
  CHECK_ERRC(h.find<counter>("c"), errc::invalid_argument);
  CHECK_ERRC(h.destroy<counter>("c"), errc::invalid_argument);
  CHECK_ERRC(h.named_objects(), errc::invalid_argument);
  CHECK_ERRC(h.make_published(dest, 5), errc::invalid_argument);
  CHECK_ERRC(h.allocate_publish(dest, 4, [](int*) {}), errc::invalid_argument);
  CHECK_ERRC(h.free_clear(dest), errc::invalid_argument);
  pptr<int> null;
  CHECK_ERRC(h.free_clear(null), errc::invalid_argument);
  CHECK_ERRC(batch(h), errc::invalid_argument);
  CHECK_ERRC(daxalloc::allocator<int>(h), errc::invalid_argument);
  CHECK(dest.get() == &outside);  // nothing was written
  h.close();                      // a no-op, as often as you like
  h.close();
}
}  // namespace

TEST_CASE("the umbrella header brings the whole API and the version macros") {
  static_assert(DAXALLOC_VERSION_MAJOR >= 0 && DAXALLOC_VERSION_MINOR >= 0 &&
                DAXALLOC_VERSION_PATCH >= 0);
  static_assert(DAXALLOC_VERSION == DAXALLOC_VERSION_MAJOR * 10000 + DAXALLOC_VERSION_MINOR * 100 +
                                        DAXALLOC_VERSION_PATCH);
  CHECK(std::string(DAXALLOC_VERSION_STRING) == DAXALLOC_EXPECTED_VERSION);  // meson's version
  std::ostringstream parts;
  parts << DAXALLOC_VERSION_MAJOR << '.' << DAXALLOC_VERSION_MINOR << '.' << DAXALLOC_VERSION_PATCH;
  CHECK(parts.str() == DAXALLOC_EXPECTED_VERSION);
  // One name from each public header, through the umbrella alone.
  static_assert(std::is_class_v<daxalloc::allocator<int>> && std::is_class_v<daxalloc::batch> &&
                std::is_class_v<daxalloc::dax_device> && std::is_class_v<daxalloc::error> &&
                std::is_class_v<daxalloc::heap> && std::is_class_v<daxalloc::persistence> &&
                std::is_class_v<daxalloc::pptr<int>> && std::is_class_v<daxalloc::region>);
}

TEST_CASE("the umbrella header includes every public header") {
  std::ifstream in(std::string(DAXALLOC_SOURCE_ROOT) + "/include/daxalloc/daxalloc.hpp");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  for (const auto& entry : std::filesystem::directory_iterator(std::string(DAXALLOC_SOURCE_ROOT) +
                                                               "/include/daxalloc")) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".hpp" || name == "daxalloc.hpp") continue;
    CHECK_MESSAGE(text.str().find("#include \"daxalloc/" + name + "\"") != std::string::npos,
                  name << " is not in daxalloc.hpp");
  }
  CHECK(text.str().find("#include \"daxalloc/version.hpp\"") != std::string::npos);
}

TEST_CASE("every public class states its thread safety in its header") {
  // The comment block right above each declaration says "Threads:".
  const std::vector<std::pair<std::string, std::string>> classes = {
      {"heap.hpp", "class DAXALLOC_API heap {"},
      {"heap.hpp", "struct reservation {"},
      {"batch.hpp", "class DAXALLOC_API batch {"},
      {"allocator.hpp", "class allocator {"},
      {"pptr.hpp", "class pptr {"},
      {"persist.hpp", "class DAXALLOC_API persistence {"},
      {"region.hpp", "class DAXALLOC_API region {"},
      {"error.hpp", "class DAXALLOC_API error"},
      {"devices.hpp", "list_devices()"},
  };
  for (const auto& entry : classes) {
    const std::string& file = entry.first;  // not bindings: the CHECKs' lambdas take them
    const std::string& declaration = entry.second;
    std::ifstream in(std::string(DAXALLOC_SOURCE_ROOT) + "/include/daxalloc/" + file);
    REQUIRE(in);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    bool found = false, stated = false;
    for (std::size_t i = 0; i < lines.size() && !found; ++i) {
      if (lines[i].find(declaration) == std::string::npos) continue;
      found = true;
      for (std::size_t k = i; k-- > 0;) {
        const std::string& above = lines[k];
        if (above.rfind("template", 0) == 0) continue;
        if (above.rfind("//", 0) != 0) break;
        stated = stated || above.find("Threads:") != std::string::npos;
      }
    }
    CHECK_MESSAGE(found, declaration << " not in " << file);
    CHECK_MESSAGE(stated, file << ": no \"Threads:\" comment above " << declaration);
  }
}

TEST_CASE("an empty heap handle throws invalid_argument from every member") {
  SUBCASE("default-constructed") {
    heap h;
    check_empty_handle(h);
  }
  SUBCASE("closed") {
    test::temp_file f;
    heap h = make_heap(f);
    h.close();
    check_empty_handle(h);
  }
  SUBCASE("moved from, by construction and by assignment") {
    test::temp_file f;
    heap h = make_heap(f);
    heap moved(std::move(h));
    check_empty_handle(h);  // NOLINT(bugprone-use-after-move): that is the point
    heap assigned;
    assigned = std::move(moved);
    check_empty_handle(moved);  // NOLINT(bugprone-use-after-move)
    CHECK(assigned.check().empty());
  }
}

TEST_CASE("a default-constructed heap takes a heap by assignment and gives it back at close") {
  test::temp_file f;
  heap h;
  h = make_heap(f);
  void* p = h.allocate(100);
  CHECK(h.offset_of(p) < h.size());
  CHECK(h.at(h.offset_of(p)) == p);
  h.close();
  h = heap::open(f.path());  // the lock went with close: the heap opens again
  CHECK(h.outcome() == daxalloc::open_outcome::clean);
  CHECK(h.stats().allocated_objects == 1);
}

TEST_CASE("defer_free(nullptr) is a no-op, as deallocate(nullptr) is") {
  test::temp_file f;
  heap h = make_heap(f);
  h.deallocate(nullptr);
  batch b(h);
  b.defer_free(nullptr);
  CHECK(b.size() == 0);
  daxalloc::reset_this_thread_persist_counters();
  b.publish();  // empty: nothing to do
  CHECK(daxalloc::this_thread_persist_counters().fences == 0);
  pptr<int> null;
  h.free_clear(null);  // frees nothing
  CHECK(h.check().empty());
}

TEST_CASE("reservations are move-only: moving empties the source") {
  static_assert(!std::is_copy_constructible_v<reservation>);
  static_assert(!std::is_copy_assignable_v<reservation>);
  static_assert(std::is_nothrow_move_constructible_v<reservation>);
  static_assert(std::is_nothrow_move_assignable_v<reservation>);
  static_assert(sizeof(reservation) == 16);  // still two registers' worth
  test::temp_file f;
  heap h = make_heap(f);
  const auto free_before = h.stats().free_bytes;
  reservation r = h.reserve(3 * MiB);
  void* const ptr = r.ptr;
  reservation moved = std::move(r);
  CHECK_FALSE(r);  // NOLINT(bugprone-use-after-move): moving empties it
  CHECK(r.size == 0);
  CHECK(moved.ptr == ptr);
  h.cancel(r);  // empty: nothing happens
  CHECK(h.stats().free_bytes < free_before);
  reservation assigned;
  assigned = std::move(moved);
  CHECK_FALSE(moved);  // NOLINT(bugprone-use-after-move)
  reservation& same = assigned;
  assigned = std::move(same);  // self-move keeps it
  CHECK(assigned.ptr == ptr);
  h.cancel(assigned);
  CHECK_FALSE(assigned);
  CHECK(h.stats().free_bytes == free_before);
  // Containers hold them by moving.
  std::vector<reservation> held;
  for (int i = 0; i < 100; ++i) held.push_back(h.reserve(64));
  for (auto& x : held) h.cancel(x);
  CHECK(h.check().empty());
  // A batch takes one over only from an rvalue, and empties it.
  batch b(h);
  reservation s = h.reserve(64);
  b.adopt(std::move(s));
  CHECK_FALSE(s);  // NOLINT(bugprone-use-after-move)
  b.publish();
  CHECK(h.stats().allocated_objects == 1);
}

TEST_CASE("a reservation or pointer of another heap is refused, and nothing changes") {
  test::temp_file fa, fb;
  heap a = make_heap(fa), b = make_heap(fb);
  const auto b_before = b.stats();
  for (const std::size_t size : {std::size_t{64}, std::size_t{3 * MiB}}) {
    CAPTURE(size);
    reservation r = a.reserve(size);
    void* const ptr = r.ptr;
    CHECK_ERRC(b.cancel(r), errc::invalid_argument);  // an extent would have freed b's page 0
    CHECK(r.ptr == ptr);                              // r still holds a's memory
    batch in_b(b);
    CHECK_ERRC(in_b.adopt(std::move(r)), errc::invalid_argument);
    CHECK(r.ptr == ptr);  // NOLINT(bugprone-use-after-move): refused, so not moved
    CHECK(in_b.size() == 0);
    CHECK_ERRC(b.cancel(ptr), errc::invalid_argument);
    // Re-formed with the wrong size, or over an allocated object: not a reservation.
    reservation wrong(ptr, r.size + 4096);
    CHECK_ERRC(a.cancel(wrong), errc::invalid_argument);
    a.cancel(r);
  }
  void* p = a.allocate(64);
  void* big = a.allocate(3 * MiB);
  reservation over_allocated(big, 3 * MiB);
  CHECK_ERRC(a.cancel(over_allocated), errc::invalid_argument);
  CHECK_ERRC(b.deallocate(p), errc::invalid_argument);
  CHECK_ERRC(b.deallocate(big), errc::invalid_argument);
  CHECK_ERRC(b.cancel(p), errc::invalid_argument);
  {
    batch in_b(b);
    in_b.defer_free(p);
    CHECK_ERRC(in_b.publish(), errc::invalid_argument);
  }
  {
    batch in_b(b);
    in_b.set(static_cast<std::uint64_t*>(p), 1);  // a word of heap a
    CHECK_ERRC(in_b.publish(), errc::invalid_argument);
  }
  const auto b_after = b.stats();
  CHECK(b_after.free_bytes == b_before.free_bytes);
  CHECK(b_after.allocated_objects == 0);
  CHECK(b.check().empty());
  a.deallocate(p);
  a.deallocate(big);
  CHECK(a.stats().allocated_objects == 0);
  CHECK(a.check().empty());
}

TEST_CASE("a batch fails cleanly once its heap is closed") {
  test::temp_file f;
  int outside = 0;
  SUBCASE("closed by close()") {
    heap h = make_heap(f);
    auto* root = h.root<counter>();
    batch b(h);
    (void)b.reserve(64);
    b.set(&root->value, 7);
    h.close();
    CHECK_ERRC(b.reserve(64), errc::invalid_argument);
    CHECK_ERRC(b.make<counter>(counter{1}), errc::invalid_argument);
    CHECK_ERRC(b.set(&root->value, 8), errc::invalid_argument);
    CHECK_ERRC(b.defer_free(&outside), errc::invalid_argument);
    CHECK_ERRC(b.defer_free(nullptr), errc::invalid_argument);
    reservation none;
    CHECK_ERRC(b.adopt(std::move(none)), errc::invalid_argument);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
    b.cancel();  // its reservations went with the heap: nothing to do
    CHECK(b.size() == 0);
  }
  SUBCASE("the handle destroyed while the batch lives") {
    std::optional<batch> b;
    {
      heap h = make_heap(f);
      b.emplace(h);
      (void)b->reserve(3 * MiB);
    }  // the handle and its heap are gone; the batch is not
    CHECK_ERRC(b->publish(), errc::invalid_argument);
    CHECK_ERRC(b->reserve(64), errc::invalid_argument);
    b.reset();  // the destructor does nothing (no use after free: ASan)
  }
  SUBCASE("the handle assigned another heap") {
    test::temp_file other;
    heap h = make_heap(f);
    batch b(h);
    (void)b.reserve(64);
    h = make_heap(other);  // closes the first heap
    CHECK_ERRC(b.publish(), errc::invalid_argument);
    b.cancel();  // must not hand the first heap's objects to the second
    CHECK(h.stats().allocated_objects == 0);
    CHECK(h.check().empty());
  }
  SUBCASE("moving the handle does not disturb the batch") {
    heap h = make_heap(f);
    auto* root = h.root<counter>();
    batch b(h);
    auto* c = b.make<counter>(counter{5});
    b.set(&root->value, h.offset_of(c));
    heap moved = std::move(h);
    b.publish();
    CHECK(root->value == moved.offset_of(c));
    CHECK(moved.check().empty());
  }
  // Whatever happened, the heap opens again consistent and without the
  // batch's effects.
  if (std::filesystem::exists(f.path())) {
    heap again = heap::open(f.path());
    CHECK(again.check().empty());
  }
}

TEST_CASE("allocator<T>::deallocate is noexcept: what it cannot free it counts and leaves") {
  test::temp_file f;
  auto h = std::make_optional(make_heap(f));
  daxalloc::allocator<std::uint64_t> alloc(*h);
  using pointer = daxalloc::allocator<std::uint64_t>::pointer;
  static_assert(noexcept(alloc.deallocate(std::declval<pointer>(), 1)));
  const std::uint64_t before = daxalloc::allocator_failed_deallocations();
  auto p = alloc.allocate(4);
  alloc.deallocate(p, 4);
  CHECK(daxalloc::allocator_failed_deallocations() == before);
  alloc.deallocate(p, 4);  // a double free: refused by the heap, counted, no throw
  CHECK(daxalloc::allocator_failed_deallocations() == before + 1);
  std::uint64_t on_stack = 0;
  alloc.deallocate(boost::interprocess::offset_ptr<std::uint64_t>(&on_stack), 1);
  CHECK(daxalloc::allocator_failed_deallocations() == before + 2);
  alloc.deallocate(pointer(), 0);  // nothing to free: not a failure
  CHECK(daxalloc::allocator_failed_deallocations() == before + 2);
  auto kept = alloc.allocate(8);
  h.reset();  // no open heap at the allocator's base any more
  alloc.deallocate(kept, 8);
  CHECK(daxalloc::allocator_failed_deallocations() == before + 3);
  CHECK_ERRC(alloc.allocate(1), errc::invalid_argument);
  heap again = heap::open(f.path());
  CHECK(again.stats().allocated_objects == 1);  // what could not be freed stayed allocated
  CHECK(again.check().empty());
}
