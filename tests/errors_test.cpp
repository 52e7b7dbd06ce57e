// Errors without exceptions (issue 19, item 2): errc's category maps to
// std::errc, every errc has a name (to_string), and the std::error_code
// forms of the calls report what the throwing forms throw, without throwing.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "daxalloc/heap.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;

namespace {

constexpr std::uint64_t MiB = 1 << 20;
constexpr int nr_errc = static_cast<int>(errc::unsafe_shutdown) + 1;

daxalloc::heap_options sized(std::uint64_t size) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = 1024 * MiB;
  return o;
}

// A stale error in ec, so that every call is seen to set or clear it.
std::error_code stale() {
  return make_error_code(errc::io_error);
}

}  // namespace

TEST_CASE("every errc has a name, a message and its category") {
  std::set<std::string> names;
  for (int i = 0; i < nr_errc; ++i) {
    const auto code = static_cast<errc>(i);
    const std::string name = daxalloc::to_string(code);
    CHECK(name != "unknown");
    names.insert(name);
    const std::error_code ec = code;  // std::is_error_code_enum
    CHECK(ec.category() == daxalloc::error_category());
    CHECK(std::string(ec.category().name()) == "daxalloc");
    CHECK(ec.message() != "unknown daxalloc error");
    CHECK(ec == code);
  }
  CHECK(names.size() == nr_errc);  // no two alike
  CHECK(std::string(daxalloc::to_string(errc::already_exists)) == "already_exists");
  CHECK(std::string(daxalloc::to_string(errc::read_only)) == "read_only");
  CHECK(std::string(daxalloc::to_string(static_cast<errc>(999))) == "unknown");
  CHECK_FALSE(std::error_code(errc::ok));  // ok is success
  const daxalloc::error e(errc::busy, "x: busy");
  CHECK(e.code() == std::errc::device_or_resource_busy);
}

TEST_CASE("errc maps to the std::errc of the same meaning") {
  const std::pair<errc, std::errc> same[] = {
      {errc::invalid_argument, std::errc::invalid_argument},
      {errc::not_found, std::errc::no_such_file_or_directory},
      {errc::permission_denied, std::errc::permission_denied},
      {errc::is_directory, std::errc::is_a_directory},
      {errc::not_dax, std::errc::no_such_device},
      {errc::map_sync_unsupported, std::errc::operation_not_supported},
      {errc::misaligned, std::errc::invalid_argument},
      {errc::too_small, std::errc::invalid_argument},
      {errc::too_large, std::errc::file_too_large},
      {errc::already_exists, std::errc::file_exists},
      {errc::busy, std::errc::device_or_resource_busy},
      {errc::not_present, std::errc::no_such_device_or_address},
      {errc::in_use, std::errc::device_or_resource_busy},
      {errc::out_of_space, std::errc::not_enough_memory},
      {errc::geometry_mismatch, std::errc::invalid_argument},
      {errc::io_error, std::errc::io_error},
      {errc::unsupported, std::errc::not_supported},
      {errc::read_only, std::errc::read_only_file_system},
      {errc::media_error, std::errc::io_error},
  };
  for (const auto& entry : same) {
    const errc ours = entry.first;  // (not a structured binding: clang 14 cannot capture one)
    const std::errc posix = entry.second;
    CAPTURE(daxalloc::to_string(ours));
    const std::error_code ec = ours;
    CHECK(ec == posix);
    CHECK(ec.default_error_condition() == std::make_error_condition(posix));
    CHECK(ec != std::errc::interrupted);
  }
  // Running out of space is ENOSPC too (a file that cannot grow).
  CHECK(std::error_code(errc::out_of_space) == std::errc::no_space_on_device);
  // No POSIX error means "corrupt" or "made by another format version": those
  // stay in daxalloc's category.
  for (errc ours : {errc::corrupt, errc::newer_format, errc::older_format, errc::unsafe_shutdown}) {
    CAPTURE(daxalloc::to_string(ours));
    const std::error_code ec = ours;
    CHECK(ec.default_error_condition().category() == daxalloc::error_category());
    CHECK(ec != std::errc::invalid_argument);
    CHECK(ec != std::errc::io_error);
  }
}

TEST_CASE("open, create, open_read_only and open_or_create report through std::error_code") {
  test::temp_file f;
  std::error_code ec = stale();
  heap missing = heap::open(f.path(), ec);
  CHECK_FALSE(missing.is_open());
  CHECK(ec == errc::not_found);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK(daxalloc::last_error_message().find(f.path().string()) != std::string::npos);
  CHECK_ERRC(missing.stats(), errc::invalid_argument);  // an empty handle, as after close()
  CHECK_FALSE(heap::open_read_only(f.path(), ec).is_open());
  CHECK(ec == errc::not_found);

  ec = stale();
  heap h = heap::create(f.path(), sized(16 * MiB), ec);
  CHECK_FALSE(ec);
  CHECK(h.is_open());
  CHECK_FALSE(heap::create(f.path(), sized(16 * MiB), ec).is_open());
  CHECK(ec == errc::already_exists);
  CHECK(ec == std::errc::file_exists);
  CHECK_FALSE(heap::open(f.path(), ec).is_open());
  CHECK(ec == errc::busy);
  CHECK_FALSE(heap::open_or_create(f.path(), sized(16 * MiB), ec).is_open());
  CHECK(ec == errc::busy);
  h.close();
  ec = stale();
  CHECK(heap::open_or_create(f.path(), sized(16 * MiB), ec).is_open());
  CHECK_FALSE(ec);
  ec = stale();
  CHECK(heap::open_read_only(f.path(), ec).is_open());
  CHECK_FALSE(ec);
  daxalloc::heap_open_options o;
  o.section_size_bits = 30;
  CHECK_FALSE(heap::open(f.path(), o, ec).is_open());
  CHECK(ec == errc::geometry_mismatch);
}

TEST_CASE(
    "allocate, deallocate, reserve, cancel, root, hot_add and hot_remove without exceptions") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  std::error_code ec = stale();
  void* p = h.allocate(64, ec);
  CHECK(p != nullptr);
  CHECK_FALSE(ec);
  CHECK(h.allocate(std::size_t{1} << 40, ec) == nullptr);
  CHECK(ec == errc::out_of_space);
  CHECK(ec == std::errc::not_enough_memory);
  ec = stale();
  h.deallocate(p, ec);
  CHECK_FALSE(ec);
  h.deallocate(p, ec);  // twice
  CHECK(ec == errc::invalid_argument);
  CHECK(daxalloc::last_error_message().find("deallocate") != std::string::npos);
  int outside = 0;
  h.deallocate(&outside, ec);
  CHECK(ec == errc::invalid_argument);

  ec = stale();
  auto r = h.reserve(100, ec);
  CHECK(r);
  CHECK_FALSE(ec);
  h.cancel(r.ptr, ec);
  CHECK_FALSE(ec);
  CHECK_FALSE(h.reserve(std::size_t{1} << 40, ec));
  CHECK(ec == errc::out_of_space);
  h.cancel(&outside, ec);
  CHECK(ec == errc::invalid_argument);

  ec = stale();
  CHECK(h.root(64, ec) != nullptr);
  CHECK_FALSE(ec);
  CHECK(h.root(128, ec) == nullptr);  // the root has 64 bytes
  CHECK(ec == errc::invalid_argument);

  ec = stale();
  h.hot_add(16 * MiB, 2 * MiB, ec);
  CHECK_FALSE(ec);
  h.hot_add(16 * MiB, 2 * MiB, ec);
  CHECK(ec == errc::already_exists);
  h.hot_add(20 * MiB, 3 * MiB, ec);
  CHECK(ec == errc::misaligned);
  h.hot_add(2048 * MiB, 2 * MiB, ec);
  CHECK(ec == errc::too_large);
  ec = stale();
  h.hot_remove(16 * MiB, 2 * MiB, ec);
  CHECK_FALSE(ec);
  h.hot_remove(16 * MiB, 2 * MiB, ec);
  CHECK(ec == errc::not_present);

  h.close();
  CHECK(h.allocate(64, ec) == nullptr);
  CHECK(ec == errc::invalid_argument);
  h.deallocate(p, ec);
  CHECK(ec == errc::invalid_argument);
  h.hot_add(16 * MiB, 2 * MiB, ec);
  CHECK(ec == errc::invalid_argument);
}

TEST_CASE("a batch and the publication templates without exceptions") {
  test::temp_file f;
  auto h = heap::create(f.path(), sized(16 * MiB));
  struct root_type {
    daxalloc::pptr<std::uint64_t> slot;
    std::uint64_t count;
  };
  auto* root = h.root<root_type>();
  std::error_code ec = stale();
  {
    daxalloc::batch b(h);
    auto* n = static_cast<std::uint64_t*>(b.reserve(8, ec));
    REQUIRE(n != nullptr);
    CHECK_FALSE(ec);
    *n = 5;
    b.set(root->slot, n, ec);
    CHECK_FALSE(ec);
    b.set(&root->count, 1, ec);
    CHECK_FALSE(ec);
    ec = stale();
    b.publish(ec);
    CHECK_FALSE(ec);
  }
  CHECK(*root->slot.get() == 5);
  {
    daxalloc::batch b(h);
    std::uint64_t outside = 0;
    b.set(&outside, 1, ec);  // recorded; refused at publish
    CHECK_FALSE(ec);
    b.publish(ec);
    CHECK(ec == errc::invalid_argument);
    CHECK(daxalloc::last_error_message().find("publish") != std::string::npos);
    CHECK(b.reserve(std::size_t{1} << 40, ec) == nullptr);
    CHECK(ec == errc::out_of_space);
    daxalloc::reservation empty;
    b.adopt(std::move(empty), ec);
    CHECK(ec == errc::invalid_argument);
  }
  {
    daxalloc::batch b(h);
    b.defer_free(root->slot.get(), ec);
    b.defer_free(root->slot.get(), ec);
    CHECK_FALSE(ec);  // recorded; the double free is refused at publish
    b.publish(ec);
    CHECK(ec == errc::invalid_argument);
  }
  {
    daxalloc::batch b(h);
    for (std::size_t i = 0; i < daxalloc::batch::max_actions; ++i) b.set(&root->count, i, ec);
    CHECK_FALSE(ec);
    b.set(&root->count, 0, ec);
    CHECK(ec == errc::too_large);
  }
  ec = stale();
  h.free_clear(root->slot, ec);
  CHECK_FALSE(ec);
  CHECK(root->slot.get() == nullptr);
  ec = stale();
  auto* made = h.allocate_publish(
      root->slot, 8, [](std::uint64_t* at) { *at = 9; }, ec);
  CHECK_FALSE(ec);
  REQUIRE(made != nullptr);
  CHECK(root->slot.get() == made);
  CHECK(h.allocate_publish(
            root->slot, std::size_t{1} << 40, [](std::uint64_t*) {}, ec) == nullptr);
  CHECK(ec == errc::out_of_space);
  CHECK(root->slot.get() == made);  // nothing happened
  test::require_sound(h);
}
