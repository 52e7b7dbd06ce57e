// Movable objects: allocation with an owner, hand-over, pins, relocation
// and compaction (heap::allocate_movable, move_owner, pin, compact).
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;
using daxalloc::pptr;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

struct value {
  std::uint64_t id;
  std::uint32_t bytes;
  unsigned char data[1];  // `bytes` bytes follow
};

heap make_heap(const test::temp_file& f, std::uint64_t size = 64 * MiB) {
  return test::make_small_heap(f, size);
}

unsigned char pattern(std::uint64_t id, std::size_t i) {
  return static_cast<unsigned char>(id * 131 + i * 7);
}

value* make_value(heap& h, pptr<value>& owner, std::uint64_t id, std::uint32_t bytes) {
  return h.allocate_movable(owner, sizeof(value) + bytes, [&](value* v) {
    v->id = id;
    v->bytes = bytes;
    for (std::uint32_t i = 0; i < bytes; ++i) v->data[i] = pattern(id, i);
  });
}

bool intact(const value* v, std::uint64_t id) {
  if (v == nullptr || v->id != id) return false;
  for (std::uint32_t i = 0; i < v->bytes; ++i)
    if (v->data[i] != pattern(id, i)) return false;
  return true;
}

// The owners: a root object of n pptrs.
struct slots {
  pptr<value> at[1];
};
slots* owners(heap& h, std::size_t n) {
  return static_cast<slots*>(h.root(n * sizeof(pptr<value>)));
}

// Values of 64..512 B bytes in slots 0.. until n or the heap is full;
// returns how many.
std::size_t fill_values(heap& h, slots* s, std::size_t n, std::mt19937_64& rng) {
  std::size_t made = 0;
  for (; made < n; ++made) {
    const auto bytes = static_cast<std::uint32_t>(64 + rng() % 449) - sizeof(value) + 1;
    try {
      (void)make_value(h, s->at[made], made, bytes);
    } catch (const daxalloc::error&) {
      break;
    }
  }
  return made;
}

// 1 MiB blocks allocated until none fits, as bytes (freed again).
std::uint64_t large_blocks(heap& h) {
  std::vector<void*> got;
  while (void* p = h.allocate(MiB, std::nothrow)) got.push_back(p);
  for (void* p : got) h.deallocate(p);
  return got.size() * MiB;
}
}  // namespace

TEST_CASE("a movable object is published into its owner and survives a reopen") {
  test::temp_file f("movable-basic");
  {
    heap h = make_heap(f);
    slots* s = owners(h, 4);
    value* v = make_value(h, s->at[0], 1, 100);
    CHECK(s->at[0].get() == v);
    CHECK(h.is_movable(v));
    CHECK(h.owner_of(v) == &s->at[0]);
    CHECK(reinterpret_cast<std::uintptr_t>(v) % 16 == 0);
    CHECK(h.usable_size(v) >= sizeof(value) + 100);
    CHECK_FALSE(h.is_movable(s));
    CHECK(h.owner_of(s) == nullptr);
    (void)h.allocate(3000);  // an ordinary object beside it
    const auto st = h.stats();
    CHECK(st.movable_objects == 1);
    CHECK(st.movable_slab_bytes > 0);
    const auto& by_type = st.allocated_bytes_by_migratetype;
    CHECK(by_type[static_cast<unsigned>(daxalloc::migratetype::movable)] ==
          h.usable_size(v));  // the movable object alone
    CHECK(by_type[static_cast<unsigned>(daxalloc::migratetype::unmovable)] >= 3000);
    std::uint64_t sum = 0;
    for (const auto b : by_type) sum += b;
    CHECK(sum == st.allocated_bytes);
    CHECK(h.check().empty());
    bool seen = false;
    h.for_each_object([&](const daxalloc::object_info& o) {
      if (o.movable) seen = h.at(o.offset) == v;
    });
    CHECK(seen);
  }
  heap h = heap::open(f.path());
  slots* s = owners(h, 4);
  CHECK(intact(s->at[0].get(), 1));
  CHECK(h.is_movable(s->at[0].get()));
  CHECK(h.check().empty());
  h.free_clear(s->at[0]);
  CHECK_FALSE(s->at[0]);
  CHECK(h.stats().movable_objects == 0);
  CHECK(h.check().empty());
}

TEST_CASE("allocate_movable refuses bad owners and sizes, and move_owner hands an object over") {
  test::temp_file f("movable-args");
  heap h = make_heap(f);
  slots* s = owners(h, 4);
  CHECK_THROWS_AS((void)make_value(h, s->at[0], 1, heap::max_movable_size), daxalloc::error);
  try {
    (void)h.allocate_movable(s->at[0], heap::max_movable_size + 1, [](value*) {});
  } catch (const daxalloc::error& e) {
    CHECK(e.code() == errc::too_large);
  }
  value* v = make_value(h, s->at[0], 7, 10);
  try {
    (void)make_value(h, s->at[0], 8, 10);
    FAIL("a second object into a non-null owner");
  } catch (const daxalloc::error& e) {
    CHECK(e.code() == errc::invalid_argument);
  }
  pptr<value> outside;  // not in the heap
  CHECK_THROWS_AS((void)make_value(h, outside, 9, 10), daxalloc::error);
  CHECK_THROWS_AS(
      (void)h.allocate_movable(s->at[1], 64, [](value*) { throw std::runtime_error("x"); }),
      std::runtime_error);
  CHECK_FALSE(s->at[1]);
  h.move_owner(s->at[0], s->at[2]);
  CHECK_FALSE(s->at[0]);
  CHECK(s->at[2].get() == v);
  CHECK(h.owner_of(v) == &s->at[2]);
  CHECK_THROWS_AS(h.move_owner(s->at[0], s->at[3]), daxalloc::error);  // null
  CHECK(h.check().empty());
  // An owner changed behind the heap's back is reported.
  s->at[3] = s->at[2].get();
  s->at[2] = nullptr;
  const auto problems = h.check();
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("does not refer to it") != std::string::npos);
  s->at[2] = s->at[3].get();
  s->at[3] = nullptr;
  CHECK(h.check().empty());
  // A batch may not store into a movable object's header.
  auto* header = reinterpret_cast<std::uint64_t*>(reinterpret_cast<std::byte*>(v) - 16);
  {
    daxalloc::batch b(h);
    b.set(header, 0);
    CHECK_THROWS_AS(b.publish(), daxalloc::error);
  }
  {
    daxalloc::batch b(h);
    CHECK_THROWS_AS(b.write(reinterpret_cast<std::byte*>(v) - 8, "12345678", 8), daxalloc::error);
    b.write(v, "12345678", 8);  // its bytes are the application's
    b.publish();
  }
  CHECK(h.check().empty());
  // deallocate frees a movable object by pointer too.
  h.deallocate(v);
  s->at[2] = nullptr;
  CHECK(h.check().empty());
}

TEST_CASE(
    "compaction after freeing a random half gives 90 % of the free space back as 1 MiB blocks") {
  test::temp_file f("movable-compact");
  heap h = make_heap(f, 128 * MiB);
  constexpr std::size_t n = 200'000;
  slots* s = owners(h, n);
  std::mt19937_64 rng(3);
  const std::size_t made = fill_values(h, s, n, rng);
  REQUIRE(made > 1000);
  std::vector<std::size_t> order(made);
  for (std::size_t i = 0; i < made; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; i < made / 2; ++i) h.free_clear(s->at[order[i]]);
  const auto before = h.stats();
  const std::uint64_t large_before = large_blocks(h);
  const auto r = h.compact();
  CHECK(r.finished);
  CHECK(r.objects_moved > 0);
  CHECK(r.slabs_released > 0);
  const auto after = h.stats();
  CHECK(after.movable_objects == before.movable_objects);
  const std::uint64_t large_after = large_blocks(h);
  MESSAGE("1 MiB blocks: " << large_before / MiB << " MiB before, " << large_after / MiB
                           << " MiB after compaction; free " << after.free_bytes / MiB
                           << " MiB; moved " << r.objects_moved << " objects, "
                           << r.bytes_moved / MiB << " MiB in " << r.seconds << " s");
  CHECK(large_after > large_before);
  CHECK(static_cast<double>(large_after) >= 0.9 * static_cast<double>(after.free_bytes));
  for (std::size_t i = made / 2; i < made; ++i) REQUIRE(intact(s->at[order[i]].get(), order[i]));
  CHECK(h.check().empty());
  h.close();
  heap again = heap::open(f.path());
  slots* t = owners(again, n);
  for (std::size_t i = made / 2; i < made; ++i) REQUIRE(intact(t->at[order[i]].get(), order[i]));
  CHECK(again.check().empty());
}

TEST_CASE("a pinned object is not moved, its pageblock is skipped until the pass ends") {
  test::temp_file f("movable-pin");
  heap h = make_heap(f);
  constexpr std::size_t n = 4000;
  slots* s = owners(h, n);
  for (std::size_t i = 0; i < n; ++i) (void)make_value(h, s->at[i], i, 100);
  for (std::size_t i = 1; i < n - 1; ++i) h.free_clear(s->at[i]);  // the first and last stay
  {
    auto pinned = h.pin(s->at[n - 1]);
    REQUIRE(pinned);
    value* where = pinned.get();
    const auto r = h.compact();
    CHECK(r.objects_pinned == 1);
    CHECK(r.objects_moved == 0);
    CHECK(s->at[n - 1].get() == where);
    CHECK(intact(pinned.get(), n - 1));
  }
  const auto r = h.compact();
  CHECK(r.objects_moved == 1);
  CHECK(intact(s->at[n - 1].get(), n - 1));
  CHECK(intact(s->at[0].get(), 0));
  CHECK(h.stats().movable_slab_bytes == 64 * 1024);  // both in the lowest slab
  CHECK(h.check().empty());
  CHECK_THROWS_AS(h.unpin(s->at[n - 1].get()), daxalloc::error);  // not pinned
}

TEST_CASE("a budget cuts a compaction into steps that resume") {
  test::temp_file f("movable-budget");
  heap h = make_heap(f);
  constexpr std::size_t n = 20000;
  slots* s = owners(h, n);
  for (std::size_t i = 0; i < n; ++i) (void)make_value(h, s->at[i], i, 200);
  for (std::size_t i = 0; i < n; i += 2) h.free_clear(s->at[i]);
  daxalloc::compact_options o;
  o.max_bytes = 64 * 1024;
  std::uint64_t moved = 0;
  unsigned steps = 0;
  for (;; ++steps) {
    const auto r = h.compact(o);
    moved += r.objects_moved;
    CHECK(r.bytes_moved <= o.max_bytes + 4096);
    if (r.finished) break;
    REQUIRE(steps < 10000);
  }
  CHECK(steps > 1);
  CHECK(moved > 0);
  CHECK(h.stats().compaction_passes == 1);
  for (std::size_t i = 1; i < n; i += 2) REQUIRE(intact(s->at[i].get(), i));
  CHECK(h.check().empty());
}

TEST_CASE("moving a parent rewrites the owners of its movable children") {
  test::temp_file f("movable-children");
  struct parent {
    std::uint64_t id;
    pptr<value> child;
  };
  heap h = make_heap(f);
  constexpr std::size_t n = 3000;
  auto* roots = static_cast<pptr<parent>*>(h.root(n * sizeof(pptr<parent>)));
  for (std::size_t i = 0; i < n; ++i) {
    parent* p = h.allocate_movable(roots[i], sizeof(parent), [&](parent* at) {
      at->id = i;
      at->child = nullptr;
    });
    (void)make_value(h, p->child, i, 40);
  }
  for (std::size_t i = 0; i < n; i += 3) {
    h.free_clear(roots[i]->child);
    h.free_clear(roots[i]);
  }
  const auto r = h.compact();
  CHECK(r.objects_moved > 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 3 == 0) continue;
    REQUIRE(roots[i]->id == i);
    REQUIRE(intact(roots[i]->child.get(), i));
    REQUIRE(h.owner_of(roots[i]->child.get()) == &roots[i]->child);
  }
  CHECK(h.check().empty());
  h.close();
  heap again = heap::open(f.path());
  CHECK(again.check().empty());
}

TEST_CASE("pins from another thread while compaction runs see whole objects") {
  test::temp_file f("movable-threads");
  heap h = make_heap(f);
  constexpr std::size_t n = 20000;
  slots* s = owners(h, n);
  for (std::size_t i = 0; i < n; ++i) (void)make_value(h, s->at[i], i, 64);
  for (std::size_t i = 0; i < n; i += 2) h.free_clear(s->at[i]);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, reads{0};
  std::thread reader([&] {
    std::mt19937_64 rng(5);
    while (!stop.load()) {
      const std::size_t i = 1 + 2 * (rng() % (n / 2));
      auto p = h.pin(s->at[i]);
      if (!intact(p.get(), i)) bad.fetch_add(1);
      reads.fetch_add(1);
    }
  });
  daxalloc::compact_options o;
  o.time_budget = std::chrono::microseconds(500);
  while (!h.compact(o).finished) {
  }
  stop = true;
  reader.join();
  CHECK(bad.load() == 0);
  CHECK(reads.load() > 0);
  CHECK(h.check().empty());
}

TEST_CASE("free_clear, allocate_movable and move_owner beside compaction leave every owner right") {
  test::temp_file f("movable-mutators");
  heap h = make_heap(f);
  constexpr std::size_t n = 20000;
  slots* s = owners(h, n);
  std::vector<std::uint64_t> id(n, 0);  // what slot i holds (0: null)
  for (std::size_t i = 0; i < n; ++i) {
    (void)make_value(h, s->at[i], i + 1, 80);
    id[i] = i + 1;
  }
  for (std::size_t i = 0; i < n; i += 2) {
    h.free_clear(s->at[i]);
    id[i] = 0;
  }
  std::atomic<bool> stop{false};
  std::thread compactor([&] {
    daxalloc::compact_options o;
    o.time_budget = std::chrono::microseconds(300);
    while (!stop.load()) (void)h.compact(o);
  });
  std::mt19937_64 rng(8);
  std::uint64_t next = n + 1;
  for (int k = 0; k < 300000; ++k) {
    const std::size_t i = rng() % n;
    switch (rng() % 3) {
      case 0:
        h.free_clear(s->at[i]);
        id[i] = 0;
        break;
      case 1:
        if (id[i] == 0) {
          (void)make_value(h, s->at[i], next, 80);
          id[i] = next++;
        }
        break;
      default: {
        const std::size_t j = rng() % n;
        if (id[i] != 0 && id[j] == 0) {
          h.move_owner(s->at[i], s->at[j]);
          std::swap(id[i], id[j]);
        }
      }
    }
  }
  stop = true;
  compactor.join();
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE((id[i] == 0 ? s->at[i].get() == nullptr : intact(s->at[i].get(), id[i])));
  CHECK(h.check().empty());
}

TEST_CASE("compact and trim shrink the heap's file online to what its live objects need") {
  test::temp_file f("movable-trim");
  constexpr std::uint64_t size = 256 * MiB;
  heap h = make_heap(f, size);
  constexpr std::size_t n = 1'200'000;  // more than fit: the heap is full
  slots* s = owners(h, n);
  std::mt19937_64 rng(12);
  const std::size_t made = fill_values(h, s, n, rng);
  const auto blocks = [&] {
    struct stat st {};
    REQUIRE(::stat(f.path().c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
  };
  REQUIRE(made < n);
  const std::uint64_t full = blocks();
  std::vector<std::size_t> order(made);
  for (std::size_t i = 0; i < made; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  const std::size_t kept = made / 4;
  for (std::size_t i = kept; i < made; ++i) h.free_clear(s->at[order[i]]);  // 75 % freed
  CHECK(h.trim() == 0);  // the top still holds objects
  const auto r = h.compact();
  CHECK(r.finished);
  const std::uint64_t trimmed = h.trim();
  const std::uint64_t after = blocks();
  MESSAGE("file blocks: " << full / MiB << " MiB full, " << after / MiB
                          << " MiB after compact + trim (" << trimmed / MiB << " MiB hot-removed)");
  CHECK(trimmed > 0);
  CHECK(static_cast<double>(after) <= 0.35 * static_cast<double>(full));
  for (std::size_t i = 0; i < kept; ++i) REQUIRE(intact(s->at[order[i]].get(), order[i]));
  CHECK(h.check().empty());
  h.close();
  heap again = heap::open(f.path());
  slots* t = owners(again, n);
  for (std::size_t i = 0; i < kept; ++i) REQUIRE(intact(t->at[order[i]].get(), order[i]));
  CHECK(again.check().empty());
}

TEST_CASE("hot_remove of a span holding movable objects migrates them out") {
  test::temp_file f("movable-hot-remove");
  heap h = make_heap(f, 64 * MiB);
  constexpr std::size_t n = 300'000;
  slots* s = owners(h, n);
  std::mt19937_64 rng(4);
  const std::size_t made = fill_values(h, s, n, rng);  // until the heap is full
  REQUIRE(made < n);
  for (std::size_t i = 0; i < made; i += 2) h.free_clear(s->at[i]);
  // The last 8 MiB of memory: movable slabs only (the owners are at the bottom).
  std::uint64_t end = 0;
  h.for_each_pageblock([&](const daxalloc::pageblock_info& pb) {
    if (pb.present) end = std::max(end, pb.offset + 2 * MiB);
  });
  const std::uint64_t span = end - 8 * MiB;
  REQUIRE(span % (2 * MiB) == 0);
  const auto before = h.stats();
  h.hot_remove(span, 8 * MiB);
  const auto after = h.stats();
  CHECK(after.present_bytes == before.present_bytes - 8 * MiB);
  CHECK(after.movable_objects == before.movable_objects);
  for (std::size_t i = 1; i < made; i += 2) {
    REQUIRE(intact(s->at[i].get(), i));
    REQUIRE(h.offset_of(s->at[i].get()) < span);
  }
  CHECK(h.check().empty());
  // A pinned object keeps its span (in_use, saying why).
  std::uint64_t top = 0;
  std::size_t top_slot = 0;
  for (std::size_t i = 1; i < made; i += 2)
    if (h.offset_of(s->at[i].get()) > top) top = h.offset_of(s->at[i].get()), top_slot = i;
  const std::uint64_t top_span = top / (2 * MiB) * (2 * MiB);
  {
    auto pinned = h.pin(s->at[top_slot]);
    try {
      h.hot_remove(top_span, 2 * MiB);
      FAIL("a span with a pinned object was removed");
    } catch (const daxalloc::error& e) {
      CHECK(e.code() == errc::in_use);
      CHECK(std::string(e.what()).find("could not move") != std::string::npos);
    }
  }
  CHECK(intact(s->at[top_slot].get(), top_slot));
  CHECK(h.check().empty());
  h.close();
  heap again = heap::open(f.path());
  slots* t = owners(again, n);
  for (std::size_t i = 1; i < made; i += 2) REQUIRE(intact(t->at[i].get(), i));
  CHECK(again.check().empty());
}
