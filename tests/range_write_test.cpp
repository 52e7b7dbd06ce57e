// Range writes in batches (issue 19, item 4): batch::write redo-logs byte
// ranges of live objects with the batch's allocations, stores and frees,
// all or nothing; up to batch::max_write_bytes per batch (a split of 4 KiB
// nodes), spilling over consecutive lanes.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <numeric>
#include <vector>

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

// A B-tree-like node of 4 KiB: keys and children.
struct node {
  std::uint64_t count;
  std::uint64_t keys[255];
  pptr<node> children[256];
};
static_assert(sizeof(node) == 4096);

struct tree_root {
  pptr<node> top;
  std::uint64_t splits;
};

heap make_heap(const test::temp_file& f) {
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::create(f.path(), o);
}

std::vector<unsigned char> pattern(std::size_t n, unsigned char seed) {
  std::vector<unsigned char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(seed + i * 7);
  return v;
}
}  // namespace

TEST_CASE("a write of 300 bytes into a live node, a new node and its link: one fence, durable") {
  test::temp_file f;
  const auto bytes = pattern(300, 3);
  std::uint64_t at = 0;
  {
    auto h = make_heap(f);
    auto* root = h.root<tree_root>();
    node* top = h.allocate_publish(
        root->top, sizeof(node), [](node* n) { std::memset(static_cast<void*>(n), 0, sizeof *n); });
    at = h.offset_of(top);
    daxalloc::reset_this_thread_persist_counters();
    batch b(h);
    auto* child = b.make<node>();
    std::memset(static_cast<void*>(child), 0x5a, sizeof *child);
    b.write(reinterpret_cast<std::byte*>(top) + 13, bytes.data(), bytes.size());  // unaligned
    b.set(top->children[200], child);
    b.set(&root->splits, 1);
    CHECK(top->keys[1] == 0);  // nothing before publish
    b.publish();
    CHECK(daxalloc::this_thread_persist_counters().fences == 1);
    CHECK(std::memcmp(reinterpret_cast<std::byte*>(top) + 13, bytes.data(), bytes.size()) == 0);
    CHECK(top->children[200].get() == child);
    CHECK(h.check().empty());
  }
  auto h = heap::open(f.path());
  auto* root = h.root<tree_root>();
  CHECK(h.offset_of(root->top.get()) == at);
  CHECK(root->splits == 1);
  CHECK(std::memcmp(reinterpret_cast<std::byte*>(root->top.get()) + 13, bytes.data(),
                    bytes.size()) == 0);
  CHECK(root->top->children[200]->keys[0] == 0x5a5a5a5a5a5a5a5a);
}

TEST_CASE("a split of 4 KiB nodes: 64 KiB of writes in one batch spans lanes") {
  test::temp_file f;
  auto h = make_heap(f);
  std::vector<node*> nodes;
  for (int i = 0; i < 16; ++i) {
    auto* n = static_cast<node*>(h.allocate(sizeof(node)));
    std::memset(static_cast<void*>(n), 0, sizeof *n);
    h.persist().persist(n, sizeof *n);
    nodes.push_back(n);
  }
  batch b(h);
  std::vector<std::vector<unsigned char>> images;
  for (int i = 0; i < 16; ++i) {
    images.push_back(pattern(sizeof(node), static_cast<unsigned char>(i)));
    b.write(nodes[i], images.back().data(), sizeof(node));
  }
  CHECK(b.size() == 16);
  CHECK_ERRC(b.write(nodes[0], images[0].data(), 1), errc::too_large);  // 64 KiB + 1
  daxalloc::reset_this_thread_persist_counters();
  b.publish();
  CHECK(daxalloc::this_thread_persist_counters().fences == 1);
  for (int i = 0; i < 16; ++i) CHECK(std::memcmp(nodes[i], images[i].data(), sizeof(node)) == 0);
  CHECK(h.check().empty());
  // The batch is empty again and takes 64 KiB more.
  CHECK(b.size() == 0);
  b.write(nodes[3], images[5].data(), sizeof(node));
  b.publish();
  CHECK(std::memcmp(nodes[3], images[5].data(), sizeof(node)) == 0);
}

TEST_CASE("writes: order, overlap with set(), refused targets, the error_code form") {
  test::temp_file f;
  auto h = make_heap(f);
  auto* words = static_cast<std::uint64_t*>(h.allocate(256));
  std::memset(words, 0, 256);
  batch b(h);
  const std::uint64_t ones[4] = {1, 1, 1, 1}, twos[2] = {2, 2};
  b.write(words, ones, sizeof ones);
  b.write(words + 1, twos, sizeof twos);  // later writes win
  b.set(words + 2, 7);                    // a write wins over an overlapping set()
  b.set(words + 5, 9);
  b.publish();
  CHECK(words[0] == 1);
  CHECK(words[1] == 2);
  CHECK(words[2] == 2);
  CHECK(words[3] == 1);
  CHECK(words[5] == 9);

  const auto& geo_head = h.layout().head_size;
  CHECK_ERRC(b.write(h.base() + geo_head / 2, ones, 8), errc::invalid_argument);  // the head
  CHECK_ERRC(b.write(h.base() + h.size() - 4, ones, 8), errc::invalid_argument);  // past the end
  CHECK_ERRC(b.write(words, nullptr, 8), errc::invalid_argument);
  CHECK_ERRC(b.write(words, ones, 0), errc::invalid_argument);
  std::error_code ec;
  b.write(h.base() + geo_head / 2, ones, 8, ec);
  CHECK(ec == errc::invalid_argument);
  b.write(words + 10, ones, 8, ec);
  CHECK_FALSE(ec);
  CHECK(b.size() == 1);
  b.cancel();  // dropped, never applied
  CHECK(b.size() == 0);
  CHECK(words[10] == 0);
  CHECK(h.check().empty());
}

TEST_CASE("a deferred batch with writes publishes the queue, then itself") {
  test::temp_file f;
  auto h = make_heap(f);
  struct slots {
    pptr<std::uint64_t> at[4];
    std::uint64_t value;
  };
  auto* root = h.root<slots>();
  h.allocate_publish(
      root->at[0], 8, [](std::uint64_t* v) { *v = 1; }, daxalloc::durability::deferred);
  CHECK_FALSE(root->at[0]);
  batch b(h);
  const std::uint64_t v = 42;
  b.write(&root->value, &v, 8);
  daxalloc::reset_this_thread_persist_counters();
  b.publish(daxalloc::durability::deferred);
  CHECK(root->at[0]);  // the queue went first
  CHECK(root->value == 42);
  CHECK(daxalloc::this_thread_persist_counters().fences == 2);
}
