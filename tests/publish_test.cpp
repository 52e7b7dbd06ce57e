// The persistence API: allocate-and-publish, free-and-clear, batches, pptr.
#include <doctest/doctest.h>

#include <algorithm>

#include <cstring>
#include <limits>
#include <stdexcept>

#include "daxalloc/allocator.hpp"
#include "daxalloc/batch.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "test_util.hpp"

using daxalloc::batch;
using daxalloc::errc;
using daxalloc::heap;
using daxalloc::pptr;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

struct node {
  std::uint64_t key;
  pptr<node> next;
};

struct list_root {
  pptr<node> head;
  std::uint64_t count;
  pptr<node> spare;
};

heap make_heap(const test::temp_file& f) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::create(f.path(), o);
}
}  // namespace

TEST_CASE("pptr is position independent, atomic and interoperates with offset_ptr") {
  struct pair {
    pptr<int> p;
    int value;
  };
  alignas(16) unsigned char a[sizeof(pair)], b[sizeof(pair)];
  auto* x = new (a) pair{nullptr, 7};
  CHECK_FALSE(x->p);
  x->p = &x->value;
  std::memcpy(b, a, sizeof a);  // the structure moved: the copy points into the copy
  auto* y = reinterpret_cast<pair*>(b);
  CHECK(y->p.get() == &y->value);
  CHECK(*y->p == 7);
  int other = 3;
  int* expected = &other;
  CHECK_FALSE(x->p.compare_exchange(expected, nullptr));
  CHECK(expected == &x->value);
  CHECK(x->p.compare_exchange(expected, &other));
  CHECK(x->p.get() == &other);
  boost::interprocess::offset_ptr<int> op = x->p;
  CHECK(op.get() == &other);
  pptr<int> back = op;
  CHECK(back.get() == &other);
  static_assert(sizeof(pptr<node>) == 8);
}

TEST_CASE("allocate-and-publish and free-and-clear: 1 fence each, durable across reopen") {
  test::temp_file f;
  {
    auto h = make_heap(f);
    auto* root = h.root<list_root>();
    h.deallocate(h.allocate(sizeof(node)));  // the slab exists: count only the publication
    daxalloc::reset_this_thread_persist_counters();
    node* n = h.make_published(root->head, node{41, nullptr});
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    CHECK(root->head.get() == n);
    CHECK(n->key == 41);
    bool ran = false;
    h.allocate_publish(n->next, sizeof(node), [&](node* m) {
      ran = true;
      ::new (m) node{42, nullptr};
    });
    CHECK(ran);
    daxalloc::reset_this_thread_persist_counters();
    auto r = h.reserve(sizeof(node));
    h.cancel(r);
    CHECK(daxalloc::this_thread_persist_counters().fences == 0);
  }
  {
    auto h = heap::open(f.path());
    auto* root = h.root<list_root>();
    REQUIRE(root->head);
    CHECK(root->head->key == 41);
    REQUIRE(root->head->next);
    CHECK(root->head->next->key == 42);
    CHECK(h.stats().allocated_objects == 3);  // root and two nodes
    daxalloc::reset_this_thread_persist_counters();
    h.free_clear(root->head->next);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    CHECK_FALSE(root->head->next);
    CHECK(h.check().empty());
  }
  auto h = heap::open(f.path());
  CHECK(h.stats().allocated_objects == 2);
  CHECK_FALSE(h.root<list_root>()->head->next);
}

TEST_CASE("fences per batch: 1 up to 4 KiB of reserved bytes, 2 above") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  for (const auto& expected :
       {std::pair<std::size_t, std::uint64_t>{64, 1}, {4096, 1}, {4097, 2}, {1 << 20, 2}}) {
    // Plain variables, not a structured binding: CAPTURE's lambda takes
    // `size` by reference, which clang 14 refuses for a binding.
    const std::size_t size = expected.first;
    const std::uint64_t fences = expected.second;
    CAPTURE(size);
    h.deallocate(h.allocate(size));  // its slab or pageblock exists: count only the batch
    daxalloc::reset_this_thread_persist_counters();
    daxalloc::batch b(h);
    void* p = b.reserve(size);
    std::memset(p, 1, size);
    b.set(root->head, static_cast<node*>(p));
    b.publish();
    CHECK(daxalloc::this_thread_persist_counters().fences == fences);
    daxalloc::reset_this_thread_persist_counters();
    h.free_clear(root->head);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
  }
  CHECK(h.check().empty());
}

TEST_CASE(
    "steady state: 1.00 fence per publication over 10,000 calls; a later full fence retires") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  for (std::size_t size : {64, 256, 4096}) {
    CAPTURE(size);
    h.deallocate(h.allocate(size));
    daxalloc::reset_this_thread_persist_counters();
    for (int i = 0; i < 5000; ++i) {
      h.allocate_publish(root->head, size, [](node* n) { ::new (n) node{7, nullptr}; });
      h.free_clear(root->head);
    }
    CHECK(daxalloc::this_thread_persist_counters().fences == 10000);
    // A batch of 16 publications is 1 fence as well.
    daxalloc::batch b(h);
    std::vector<node*> made;
    for (std::uint64_t i = 0; i < 16; ++i) made.push_back(b.make<node>(node{i, nullptr}));
    b.set(root->head, made.back());
    daxalloc::reset_this_thread_persist_counters();
    b.publish();
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    // A fence of the caller's own (persist) retires the lane first: 2, then 1.
    daxalloc::reset_this_thread_persist_counters();
    h.persist().drain();
    CHECK(daxalloc::this_thread_persist_counters().fences == 2);
    daxalloc::reset_this_thread_persist_counters();
    h.persist().drain();
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    daxalloc::batch undo(h);
    for (node* n : made) undo.defer_free(n);
    undo.set(root->head, static_cast<node*>(nullptr));
    undo.publish();
  }
  CHECK(h.check().empty());
}

TEST_CASE("a constructor that throws publishes nothing") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  const auto before = h.stats().allocated_objects;
  CHECK_THROWS_AS(
      h.allocate_publish(root->head, sizeof(node), [](node*) { throw std::runtime_error("no"); }),
      std::runtime_error);
  CHECK_FALSE(root->head);
  CHECK(h.stats().allocated_objects == before);
  CHECK(h.check().empty());
}

TEST_CASE("a batch links a node, bumps a counter and frees the old one atomically") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  node* old = h.make_published(root->spare, node{1, nullptr});
  {
    batch b(h);
    node* fresh = b.make<node>(node{2, nullptr});
    node* big = static_cast<node*>(b.reserve(300000));  // an extent
    big->key = 3;
    fresh->next = big;
    b.set(root->head, fresh);
    b.set(&root->count, root->count + 1);
    b.set(root->spare, static_cast<node*>(nullptr));
    b.defer_free(old);
    CHECK(b.size() == 6);
    CHECK(root->count == 0);  // nothing applied before publish
    b.publish();
    CHECK(b.size() == 0);
  }
  CHECK(root->count == 1);
  CHECK(root->head->key == 2);
  CHECK(root->head->next->key == 3);
  CHECK_FALSE(root->spare);
  CHECK(h.usable_size(old) > 0);  // the slot exists, but is free again:
  CHECK_ERRC(h.deallocate(old), errc::invalid_argument);
  CHECK(h.stats().allocated_objects == 3);  // root, node, extent
  CHECK(h.check().empty());
}

TEST_CASE("cancel and destruction drop reservations") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  {
    batch b(h);
    (void)b.reserve(64);
    b.set(&root->count, 9);
    b.cancel();
    b.publish();  // nothing left to publish
  }
  {
    batch b(h);
    (void)b.reserve(100000);
  }  // destroyed unpublished: cancelled
  CHECK(root->count == 0);
  CHECK(h.stats().allocated_objects == 1);
  CHECK(h.check().empty());
}

TEST_CASE(
    "batch errors: outside the heap, too large, not allocated, twice, a cancelled reservation") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  std::uint64_t on_stack = 0;
  {
    batch b(h);
    b.set(&on_stack, 1);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
  }
  {
    batch b(h);
    b.set(reinterpret_cast<std::uint64_t*>(reinterpret_cast<char*>(&root->count) + 1),
          1);  // misaligned
    CHECK_ERRC(b.publish(), errc::invalid_argument);
  }
  {
    batch b(h);
    for (std::size_t i = 0; i < batch::max_actions; ++i) b.set(&root->count, i);
    CHECK_ERRC(b.set(&root->count, 0), errc::too_large);
    b.publish();
    CHECK(root->count == batch::max_actions - 1);
  }
  {
    void* p = h.allocate(64);
    h.deallocate(p);
    batch b(h);
    b.defer_free(p);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
  }
  {
    void* p = h.allocate(64);
    batch b(h);
    b.defer_free(p);
    b.defer_free(p);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
    h.deallocate(p);
  }
  {
    auto r = h.reserve(64);
    h.cancel(r);
    batch b(h);
    CHECK_ERRC(b.adopt(std::move(r)), errc::invalid_argument);
    auto s = h.reserve(64);
    b.adopt(std::move(s));
    CHECK_FALSE(s);  // NOLINT(bugprone-use-after-move): adopt empties it
    b.publish();
  }
  CHECK(h.check().empty());
}

TEST_CASE("named objects: construct, find, find_or_construct, destroy, iterate, reopen") {
  struct point {
    int x, y;
    point(int a, int b) : x(a), y(b) {}
  };
  test::temp_file f;
  {
    auto h = make_heap(f);
    point* p = h.construct<point>("origin")(1, 2);
    CHECK(p->x == 1);
    CHECK_ERRC(h.construct<point>("origin")(3, 4), errc::already_exists);
    CHECK(h.find_or_construct<point>("origin")(5, 6) == p);
    auto* many = h.construct<std::uint64_t>("counters", 10)(7u);
    CHECK(many[9] == 7);
    auto [q, n] = h.find<std::uint64_t>("counters");
    CHECK(q == many);
    CHECK(n == 10);
    CHECK(h.find<point>("nobody").first == nullptr);
    CHECK_ERRC(h.find<int>("origin"), errc::invalid_argument);  // a type mismatch
    CHECK_ERRC(h.construct<point>("")(0, 0), errc::invalid_argument);
    for (int i = 0; i < 40; ++i)
      (void)h.construct<int>("n" + std::to_string(i))(i);  // grows the index
    CHECK(h.named_objects().size() == 42);
    CHECK(h.check().empty());
  }
  auto h = heap::open(f.path());
  CHECK(h.find<point>("origin").first->y == 2);
  CHECK(*h.find<int>("n39").first == 39);
  const auto allocated = h.stats().allocated_objects;
  CHECK_ERRC(h.destroy<int>("origin"), errc::invalid_argument);
  CHECK(h.destroy<point>("origin"));
  CHECK_FALSE(h.destroy<point>("origin"));
  CHECK(h.find<point>("origin").first == nullptr);
  CHECK(h.stats().allocated_objects == allocated - 2);  // the object and its name
  (void)h.construct<point>("origin")(8, 9);             // the freed entry is reused
  CHECK(h.named_objects().size() == 42);
  CHECK(h.check().empty());
}

TEST_CASE("daxalloc::allocator: rebinding, equality, a heap that is not open") {
  test::temp_file f;
  auto h = make_heap(f);
  daxalloc::allocator<int> a(h);
  daxalloc::allocator<double> b(a);
  CHECK(a == b);
  auto p = a.allocate(100);
  CHECK(h.usable_size(p.get()) >= 400);
  a.deallocate(p, 100);
  CHECK_ERRC(a.allocate(std::numeric_limits<std::size_t>::max() / 2), errc::too_large);
  h.close();
  CHECK_ERRC(a.allocate(1), errc::invalid_argument);
}

TEST_CASE(
    "the root cannot be freed, metadata cannot be a batch target, a closed handle is refused") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* root = h.root<list_root>();
  CHECK_ERRC(h.deallocate(root), errc::invalid_argument);
  {
    batch b(h);
    b.defer_free(root);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
  }
  {
    batch b(h);  // a word of the memmap block (the second 2 MiB of the heap)
    b.set(reinterpret_cast<std::uint64_t*>(h.base() + (2 << 20) + 4096), 1);
    CHECK_ERRC(b.publish(), errc::invalid_argument);
  }
  h.close();
  CHECK_ERRC(h.allocate(8), errc::invalid_argument);
  CHECK(h.allocate(8, std::nothrow) == nullptr);
}

TEST_CASE(
    "copy-in publication: the object is filled from a buffer, 1 fence, nothing flushed twice") {
  test::temp_file f;
  struct bytes_root {
    pptr<std::byte> value, small;
  };
  std::vector<std::byte> value(4096);
  for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<std::byte>(i * 7);
  {
    auto h = make_heap(f);
    auto* root = h.root<bytes_root>();
    for (std::size_t size : {64, 1000, 4096}) {  // (1000: less than its size class)
      CAPTURE(size);
      h.deallocate(h.allocate(size));  // the size class's slab exists (steady state)
      daxalloc::reset_this_thread_persist_counters();
      auto* object = h.allocate_publish(root->value, value.data(), size);
      const auto c = daxalloc::this_thread_persist_counters();
      CHECK(c.fences == 1);
      CHECK(std::memcmp(object, value.data(), size) == 0);
      CHECK(root->value.get() == object);
      // From 256 bytes up the object is streamed and never flushed (below,
      // copied with ordinary stores and flushed: 1 line); the lane is streamed.
      CHECK(c.streamed >= (size >= 256 ? size / 64 : 1));
      CHECK(c.flushes <= (size >= 256 ? 2u : 3u));  // + earlier batches' targets
      if (size != 4096) h.free_clear(root->value);
    }
    daxalloc::batch b(h);
    auto* copy = static_cast<std::byte*>(b.reserve_copy(value.data() + 64, 100));
    b.set(root->small, copy);
    b.publish();
    CHECK(std::memcmp(copy, value.data() + 64, 100) == 0);
  }
  auto h = heap::open(f.path());
  auto* root = h.root<bytes_root>();
  CHECK(std::memcmp(root->value.get(), value.data(), 4096) == 0);
  CHECK(std::memcmp(root->small.get(), value.data() + 64, 100) == 0);
  CHECK(h.check().empty());
}

TEST_CASE("group commit: deferred publications take effect at sync(), with one fence") {
  test::temp_file f;
  struct slots {
    pptr<node> at[300];
  };
  {
    auto h = make_heap(f);
    auto* root = h.root<slots>();
    h.deallocate(h.allocate(sizeof(node)));  // the size class's slab exists (steady state)
    daxalloc::reset_this_thread_persist_counters();
    std::vector<node*> made;
    for (std::uint64_t i = 0; i < 16; ++i)
      made.push_back(h.allocate_publish(
          root->at[i], sizeof(node),
          [&](node* n) {
            ::new (n) node{i, nullptr};
          },
          daxalloc::durability::deferred));
    CHECK(daxalloc::this_thread_persist_counters().fences == 0);
    CHECK_FALSE(root->at[0]);  // not applied before sync
    h.sync();
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    for (std::uint64_t i = 0; i < 16; ++i) CHECK(root->at[i].get() == made[i]);
    daxalloc::reset_this_thread_persist_counters();
    h.sync();  // nothing queued: no fence
    CHECK(daxalloc::this_thread_persist_counters().fences == 0);

    // A deferred free, then a deferred publication into the same slot: in order.
    h.free_clear(root->at[0], daxalloc::durability::deferred);
    CHECK_THROWS_AS(h.free_clear(root->at[0], daxalloc::durability::deferred), daxalloc::error);
    auto* again = h.allocate_publish(
        root->at[0], sizeof(node),
        [](node* n) {
          ::new (n) node{99, nullptr};
        },
        daxalloc::durability::deferred);
    CHECK(root->at[0].get() == made[0]);
    h.sync();
    CHECK(root->at[0].get() == again);

    // A queue beyond one lane (3 actions each, 252 per lane): the overflowing
    // publication publishes the queue first, so survivors stay a prefix.
    daxalloc::reset_this_thread_persist_counters();
    for (std::uint64_t i = 16; i < 116; ++i)
      (void)h.allocate_publish(
          root->at[i], sizeof(node),
          [&](node* n) {
            ::new (n) node{i, nullptr};
          },
          daxalloc::durability::deferred);
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    CHECK(root->at[16]);
    CHECK_FALSE(root->at[115]);

    // A deferred batch too large to log with its contents (100 objects and
    // stores: 300 lane entries) is published at once, after the queue; its
    // reservations are owned once (a double cancel would hand an object out
    // twice below).
    {
      daxalloc::batch b(h);
      for (std::size_t i = 150; i < 250; ++i) b.set(root->at[i], static_cast<node*>(b.reserve(24)));
      b.publish(daxalloc::durability::deferred);
    }
    CHECK(root->at[115]);
    CHECK(root->at[150]);
    CHECK(root->at[249]);
    std::vector<void*> fresh;
    for (int i = 0; i < 300; ++i) fresh.push_back(h.allocate(24));
    std::sort(fresh.begin(), fresh.end());
    CHECK(std::adjacent_find(fresh.begin(), fresh.end()) == fresh.end());
    for (void* p : fresh) h.deallocate(p);
    (void)h.allocate_publish(
        root->at[116], sizeof(node),
        [](node* n) {
          ::new (n) node{116, nullptr};
        },
        daxalloc::durability::deferred);
    // Left queued: close publishes it.
  }
  auto h = heap::open(f.path());
  auto* root = h.root<slots>();
  CHECK(root->at[0]->key == 99);
  for (std::uint64_t i = 1; i < 117; ++i) CHECK(root->at[i]->key == i);
  CHECK(h.check().empty());
  CHECK(h.stats().allocated_objects == 117 + 100 + 1);  // and the root
}
