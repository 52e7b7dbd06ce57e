// The fence counts the documentation states, measured: each row of the
// fence tables in README.md and docs/api.md names, in order, the counts this
// test measures for its call (a row "1 (2 above 4 KiB)" holds 1, then 2), so
// a change of a count fails here until the tables say it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "test_util.hpp"

using daxalloc::heap;
using daxalloc::pptr;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

std::string read(const std::string& relative) {
  std::ifstream in(std::string(DAXALLOC_SOURCE_ROOT) + "/" + relative);
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The numbers of the `column`th cell of the first table row whose first cell
// contains `key`, in order ("1 (2 above 4 KiB)": 1, 2, 4).
std::vector<std::uint64_t> counts_in(const std::string& doc, const std::string& key,
                                     std::size_t column) {
  std::istringstream lines(doc);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| ", 0) != 0) continue;
    std::vector<std::string> cells;
    std::size_t at = 1;
    for (std::size_t bar; (bar = line.find('|', at)) != std::string::npos; at = bar + 1)
      cells.push_back(line.substr(at, bar - at));
    if (cells.size() <= column || cells[0].find(key) == std::string::npos) continue;
    std::vector<std::uint64_t> numbers;
    const std::string& cell = cells[column];
    for (std::size_t i = 0; i < cell.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(cell[i]))) continue;
      std::size_t end = i;
      while (end < cell.size() && std::isdigit(static_cast<unsigned char>(cell[end]))) ++end;
      numbers.push_back(std::stoull(cell.substr(i, end - i)));
      i = end;
    }
    return numbers;
  }
  FAIL("no table row for " << key);
  return {};
}

struct row {
  std::string key;                      // a substring of the row's first cell
  std::vector<std::uint64_t> measured;  // the counts the row must begin with
};

void check_rows(const std::string& file, std::size_t fences_column, const std::vector<row>& rows) {
  const std::string doc = read(file);
  for (const row& r : rows) {
    const std::vector<std::uint64_t> stated = counts_in(doc, r.key, fences_column);
    INFO(file << ": the row " << r.key);
    const auto text = [](const std::vector<std::uint64_t>& v, std::size_t n) {
      std::string t;
      for (std::size_t i = 0; i < std::min(n, v.size()); ++i) t += std::to_string(v[i]) + " ";
      return t;
    };
    CHECK(text(stated, r.measured.size()) == text(r.measured, r.measured.size()));
  }
}

std::uint64_t fences() {
  return daxalloc::this_thread_persist_counters().fences;
}

// The fences `f` takes on this thread.
template <class F>
std::uint64_t fences_of(F&& f) {
  daxalloc::reset_this_thread_persist_counters();
  f();
  return fences();
}

struct list {
  pptr<std::byte> at[8];
};

struct point {
  point(std::uint64_t a, std::uint64_t b) : x(a), y(b) {}  // (clang 14: no aggregate (...))
  std::uint64_t x, y;
};

}  // namespace

TEST_CASE("the fence tables of README.md and docs/api.md state the measured counts") {
  test::temp_file f;
  daxalloc::heap_options o;
  o.size = 64 * MiB;
  o.mode = daxalloc::persistence_mode::cache_flush;
  std::uint64_t create = 0, root_first = 0, root_again = 0;
  heap h;
  create = fences_of([&] { h = heap::create(f.path(), o); });
  // Hotplug on the new heap: no empty slab to release first.
  // (at the end of the memory, which starts after the memmap area)
  const std::uint64_t end = h.size();
  const std::uint64_t hot_add = fences_of([&] { h.hot_add(end, 2 * MiB); });
  const std::uint64_t hot_remove = fences_of([&] { h.hot_remove(end, 2 * MiB); });
  // Steady state, as the tables count: the size classes' slabs, the extents'
  // pageblock and the name table exist (their one-off costs are listed in
  // docs/api.md, "Fence costs").
  h.deallocate(h.allocate(64));
  h.deallocate(h.allocate(8192));
  (void)h.construct<std::uint64_t>("warm", 1024)(0u);
  (void)h.destroy<std::uint64_t>("warm");
  (void)h.construct<point>("warm")(0u, 0u);
  (void)h.destroy<point>("warm");
  h.persist().drain();
  list* root = nullptr;
  root_first = fences_of([&] { root = h.root<list>(); });
  root_again = fences_of([&] { (void)h.root<list>(); });
  h.persist().drain();  // (retires the root's publication)

  void* p = nullptr;
  const std::uint64_t allocate = fences_of([&] { p = h.allocate(64); });
  const std::uint64_t deallocate = fences_of([&] { h.deallocate(p); });
  const std::uint64_t reserve_cancel = fences_of([&] { h.cancel(h.reserve(64).ptr); });
  const auto noop = [](std::byte*) {};
  const std::uint64_t publish_small =
      fences_of([&] { (void)h.allocate_publish(root->at[0], 64, noop); });
  const std::uint64_t allocate_after_publication = fences_of([&] { p = h.allocate(64); });
  h.deallocate(p);
  const std::uint64_t publish_large =
      fences_of([&] { (void)h.allocate_publish(root->at[1], 8192, noop); });
  static const std::byte buffer[8192]{};
  const std::uint64_t copy_small =
      fences_of([&] { (void)h.allocate_publish(root->at[2], buffer, 64); });
  const std::uint64_t copy_large =
      fences_of([&] { (void)h.allocate_publish(root->at[3], buffer, 8192); });
  const std::uint64_t free_clear = fences_of([&] { h.free_clear(root->at[2]); });
  const std::uint64_t free_clear_null = fences_of([&] { h.free_clear(root->at[2]); });
  const auto batch_of = [&](std::size_t size) {
    return fences_of([&] {
      daxalloc::batch b(h);
      b.set(root->at[4], static_cast<std::byte*>(b.reserve(size)));
      b.publish();
    });
  };
  const std::uint64_t batch_small = batch_of(64);
  h.free_clear(root->at[4]);
  const std::uint64_t batch_large = batch_of(8192);
  const std::uint64_t batch_empty = fences_of([&] { daxalloc::batch(h).publish(); });
  const std::uint64_t deferred = fences_of([&] {
    (void)h.allocate_publish(root->at[5], 64, noop, daxalloc::durability::deferred);
    h.free_clear(root->at[4], daxalloc::durability::deferred);
  });
  const std::uint64_t sync = fences_of([&] { h.sync(); });
  const std::uint64_t sync_empty = fences_of([&] { h.sync(); });
  const std::uint64_t construct_small = fences_of([&] { (void)h.construct<point>("p")(1u, 2u); });
  const std::uint64_t construct_large =
      fences_of([&] { (void)h.construct<std::uint64_t>("many", 1024)(0u); });
  const std::uint64_t destroy = fences_of([&] { (void)h.destroy<point>("p"); });
  const std::uint64_t read_guarded = fences_of([&] {
    std::byte copy[64];
    h.read_guarded(copy, root, sizeof copy);
  });
  const auto fill = [](std::byte*) {};
  auto* owners = static_cast<list*>(h.allocate(sizeof(list)));  // (zeroed by hand: null owners)
  for (auto& o : owners->at) o = nullptr;
  const std::uint64_t movable_first =
      fences_of([&] { (void)h.allocate_movable(owners->at[0], 64, fill); });
  const std::uint64_t movable_small =
      fences_of([&] { (void)h.allocate_movable(owners->at[1], 64, fill); });
  (void)h.allocate_movable(owners->at[2], 8192, fill);  // (its class's slab)
  h.free_clear(owners->at[2]);
  const std::uint64_t movable_large =
      fences_of([&] { (void)h.allocate_movable(owners->at[2], 8192, fill); });
  const std::uint64_t move_owner = fences_of([&] { h.move_owner(owners->at[1], owners->at[3]); });
  h.persist().drain();
  const std::uint64_t close = fences_of([&] { h.close(); });
  const std::uint64_t open = fences_of([&] { h = heap::open(f.path()); });
  root = h.root<list>();  // (mapped anew)
  (void)h.allocate_publish(root->at[6], 64, noop);
  const std::uint64_t close_after_publication = fences_of([&] { h.close(); });

  check_rows("README.md", 2,
             {
                 {"`allocate(n)`", {allocate, allocate_after_publication}},
                 {"`deallocate(p)`", {deallocate}},
                 {"`reserve(n)` / `cancel(p)`", {reserve_cancel}},
                 {"`allocate_publish(dest, n, ctor)`", {publish_small, publish_large}},
                 {"`allocate_publish(dest, src, n)`", {copy_small, copy_large}},
                 {"`free_clear(dest)`", {free_clear}},
                 {"`batch`: ", {batch_small, batch_large}},
                 {"`publish(durability::deferred)`", {deferred, sync}},
                 {"`construct<T>(name)", {construct_small, construct_large}},
                 {"`root<T>()`", {root_first}},
                 {"`hot_add(off, len)`", {hot_add}},
                 {"`hot_remove(off, len)`", {hot_remove}},
             });
  check_rows("docs/api.md", 2,
             {
                 {"[`heap::create`]", {create}},
                 {"[`heap::open`]", {open}},
                 {"[`close`, `~heap`]", {close, close_after_publication}},
                 {"[`allocate(n)`]", {allocate}},
                 {"[`deallocate(p)`]", {deallocate}},
                 {"[`reserve(n)`", {reserve_cancel}},
                 {"[`cancel(p)`", {reserve_cancel}},
                 {"[`root<T>()`", {root_first, root_again}},
                 {"[`allocate_publish`, `make_published`]", {publish_small, publish_large}},
                 {"[`allocate_publish(dest, src, n)`]", {copy_small, copy_large}},
                 {"[`free_clear`]", {free_clear, free_clear_null}},
                 {"[`publish(durability::deferred)`", {deferred}},
                 {"[`sync()`]", {sync, sync_empty}},
                 // "1; 2 when its reservations exceed 4 KiB; 0 if empty" (4: of 4 KiB)
                 {"[`batch::publish`]", {batch_small, batch_large, 4, batch_empty}},
                 {"[`construct<T>`", {construct_small, construct_large}},
                 {"[`destroy<T>`]", {destroy}},
                 // "1 (2 above 4 KiB; 2 more for a new slab)"
                 {"[`allocate_movable`", {movable_small, movable_large, 4, movable_first - 1}},
                 {"[`move_owner(from, to)`]", {move_owner}},
                 {"[`hot_add`]", {hot_add}},
                 {"[`hot_remove`]", {hot_remove}},
                 {"[`read_guarded`]", {read_guarded}},
             });
}
