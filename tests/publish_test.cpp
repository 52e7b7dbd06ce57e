// The persistence API: allocate-and-publish, free-and-clear, batches, pptr.
#include <doctest/doctest.h>

#include <cstring>
#include <stdexcept>

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

TEST_CASE("allocate-and-publish and free-and-clear: 3 fences each, durable across reopen") {
  test::temp_file f;
  {
    auto h = make_heap(f);
    auto* root = h.root<list_root>();
    h.deallocate(h.allocate(sizeof(node)));  // the slab exists: count only the publication
    daxalloc::reset_this_thread_persist_counters();
    node* n = h.make_published(root->head, node{41, nullptr});
    CHECK(daxalloc::this_thread_persist_counters().fences == 3);
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
    CHECK(daxalloc::this_thread_persist_counters().fences == 3);
    CHECK_FALSE(root->head->next);
    CHECK(h.check().empty());
  }
  auto h = heap::open(f.path());
  CHECK(h.stats().allocated_objects == 2);
  CHECK_FALSE(h.root<list_root>()->head->next);
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
    CHECK_ERRC(b.adopt(r), errc::invalid_argument);
    auto s = h.reserve(64);
    b.adopt(s);
    CHECK_FALSE(s);
    b.publish();
  }
  CHECK(h.check().empty());
}
