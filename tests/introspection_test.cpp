// Iteration and introspection (issue 19, item 5): heap::for_each_object
// lists every allocated object of every kind (small, extent, root, named and
// the name index) with its offset and size, as the test's own model of what
// it allocated says and as the media record it; again after frees, and on a
// read-only handle. for_each_section and for_each_pageblock agree with the
// statistics; heap::remove refuses what is not a heap.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <vector>

#include "daxalloc/daxalloc.hpp"
#include "heap/access.hpp"
#include "test_util.hpp"

using daxalloc::errc;
using daxalloc::heap;
using daxalloc::migratetype;
using daxalloc::object_info;
using daxalloc::object_kind;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

struct named_pair {
  std::uint64_t a, b;
};
struct root_type {
  std::uint64_t words[4];
};

struct expected {
  std::uint64_t size;
  object_kind kind;
};

std::map<std::uint64_t, object_info> listed(const heap& h) {
  std::map<std::uint64_t, object_info> out;
  std::uint64_t previous = 0;
  bool ordered = true;
  h.for_each_object([&](const object_info& o) {
    ordered = ordered && (out.empty() || o.offset > previous);
    previous = o.offset;
    out[o.offset] = o;
  });
  CHECK(ordered);
  return out;
}

// The objects listed are the test's model, plus the name index's own
// allocations; and exactly what the media record (the internal scan).
void compare(const heap& h, const std::map<std::uint64_t, expected>& model) {
  const auto objects = listed(h);
  std::size_t index_allocations = 0;
  for (const auto& entry : objects) {
    const object_info& o = entry.second;
    CHECK_FALSE(o.movable);
    if (o.kind == object_kind::name_index) {
      ++index_allocations;
      continue;
    }
    const auto it = model.find(o.offset);
    REQUIRE_MESSAGE(it != model.end(), "unexpected object at " << o.offset);
    CHECK(o.size == it->second.size);
    CHECK(o.kind == it->second.kind);
    CHECK(o.in_slab == (o.size <= h.layout().max_small_size));
  }
  CHECK(objects.size() == model.size() + index_allocations);
  for (const auto& entry : model) CHECK_MESSAGE(objects.count(entry.first), entry.first);
  // The same set as the media record.
  std::map<std::uint64_t, std::uint64_t> media;
  for (const auto& [offset, bytes] : daxalloc::detail::internals(h).allocations())
    media[offset] = bytes;
  REQUIRE(media.size() == objects.size());
  for (const auto& entry : objects) CHECK(media[entry.first] == entry.second.size);
  // The statistics count the same objects.
  CHECK(h.stats().allocated_objects == objects.size());
}

heap make_heap(const test::temp_file& f, std::uint64_t size) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = 1024 * MiB;
  return heap::create(f.path(), o);
}

}  // namespace

TEST_CASE("for_each_object lists every object of every kind, after frees, read-only") {
  test::temp_file f("introspection");
  std::map<std::uint64_t, expected> model;
  std::vector<void*> plain;
  {
    heap h = make_heap(f, 64 * MiB);
    const auto add = [&](void* p, object_kind kind) {
      model[h.offset_of(p)] = {h.usable_size(p), kind};
    };
    add(h.root<root_type>(), object_kind::root);
    for (std::size_t size : {8, 16, 100, 1000, 4096, 5000, 65536})  // slabs
      for (int i = 0; i < 5; ++i) {
        void* p = h.allocate(size);
        add(p, object_kind::small);
        plain.push_back(p);
      }
    for (std::size_t size : {std::size_t{65537}, std::size_t{100} << 10, std::size_t{5} << 20}) {
      void* p = h.allocate(size);
      add(p, object_kind::extent);
      plain.push_back(p);
    }
    auto* r = h.root<root_type>();
    add(h.allocate_publish(*reinterpret_cast<daxalloc::pptr<root_type>*>(&r->words[0]),
                           sizeof(root_type), [](root_type*) {}),
        object_kind::small);
    add(h.construct<named_pair>("pair", 3)(named_pair{1, 2}), object_kind::named);
    add(h.construct<named_pair>("big", 10000)(), object_kind::named);
    compare(h, model);
    {
      std::size_t index = 0;
      h.for_each_object([&](const object_info& o) { index += o.kind == object_kind::name_index; });
      CHECK(index == 3);  // the table and two names
    }

    // Frees: every other plain object.
    for (std::size_t i = 0; i < plain.size(); i += 2) {
      model.erase(h.offset_of(plain[i]));
      h.deallocate(plain[i]);
    }
    const std::uint64_t pair_offset = h.offset_of(h.find<named_pair>("pair").first);
    CHECK(h.destroy<named_pair>("pair"));
    model.erase(pair_offset);
    compare(h, model);

    // Stopping early: false from fn.
    std::size_t seen = 0;
    h.for_each_object([&](const object_info&) { return ++seen < 3; });
    CHECK(seen == 3);
  }
  // Read-only: the same objects, nothing written.
  heap ro = heap::open_read_only(f.path());
  REQUIRE(ro.read_only());
  compare(ro, model);
}

TEST_CASE("sections and pageblocks agree with the statistics and the layout") {
  test::temp_file f("introspection-sections");
  heap h = make_heap(f, 64 * MiB);
  for (int i = 0; i < 100; ++i) (void)h.allocate(200);
  (void)h.allocate(std::size_t{5} << 20);
  (void)h.allocate(std::size_t{100} << 10);
  h.hot_add(256 * MiB, 4 * MiB);  // a second present section (128 MiB sections)

  const auto check_against_stats = [](const heap& handle) {
    const daxalloc::heap_layout l = handle.layout();
    const daxalloc::heap_stats s = handle.stats();
    CHECK(l.format_version == heap::format_version());
    CHECK(l.page_size == 4096);
    CHECK(l.pageblock_size == 2 * MiB);
    CHECK(l.section_size == std::uint64_t{1} << l.section_size_bits);
    CHECK(l.present_bytes == s.present_bytes);
    CHECK(l.head_bytes + l.memmap_bytes == s.metadata_bytes);

    std::vector<daxalloc::section_info> sections;
    handle.for_each_section([&](const daxalloc::section_info& si) { sections.push_back(si); });
    CHECK(sections.size() == l.present_sections);
    REQUIRE(sections.size() == 2);
    CHECK(sections[0].number == 0);
    CHECK(sections[1].number == 2);
    CHECK(sections[1].offset == 256 * MiB);
    CHECK(sections[1].present_subsections == 2);
    for (const auto& si : sections) {
      CHECK(si.online);
      CHECK(si.subsections == l.section_size / l.pageblock_size);
    }

    std::uint64_t present = 0, allocated_pages = 0, blocks = 0;
    std::array<std::uint64_t, 8> by_type{};
    handle.for_each_pageblock([&](const daxalloc::pageblock_info& pb) {
      ++blocks;
      CHECK(pb.pages == 512);
      if (!pb.present) return;
      ++present;
      ++by_type[static_cast<unsigned>(pb.type)];
      allocated_pages += pb.allocated_pages;
    });
    CHECK(blocks == sections.size() * sections[0].subsections);
    CHECK(present == l.present_subsections);
    CHECK(present * l.pageblock_size == s.present_bytes);
    CHECK(by_type == s.pageblocks_by_migratetype);
    CHECK(by_type[static_cast<unsigned>(migratetype::large)] >= 3);  // the 5 MiB extent
    CHECK(allocated_pages * l.page_size == s.slab_bytes + s.extent_bytes);
    std::uint64_t slab_bytes = 0;
    for (const auto& c : s.size_classes) slab_bytes += c.slab_bytes;
    CHECK(slab_bytes == s.slab_bytes);
  };
  check_against_stats(h);
  h.close();
  heap ro = heap::open_read_only(f.path());
  check_against_stats(ro);
}

TEST_CASE("the names of the introspection enums") {
  CHECK(std::string(daxalloc::to_string(object_kind::small)) == "small");
  CHECK(std::string(daxalloc::to_string(object_kind::name_index)) == "name_index");
  CHECK(std::string(daxalloc::to_string(migratetype::isolate)) == "isolate");
  CHECK(std::string(daxalloc::to_string(migratetype::metadata)) == "metadata");
  CHECK(std::string(daxalloc::to_string(static_cast<migratetype>(4))) == "unknown");
  CHECK(std::string(daxalloc::to_string(static_cast<object_kind>(9))) == "unknown");
}

TEST_CASE("heap::remove deletes a heap, and refuses what is not one or is open") {
  test::temp_file f("introspection-remove");
  {
    heap h = make_heap(f, 8 * MiB);
    CHECK_ERRC(heap::remove(f.path()), errc::busy);
  }
  CHECK(heap::remove(f.path()));
  CHECK_FALSE(std::filesystem::exists(f.path()));
  std::ofstream(f.path()) << std::string(8192, 'x');
  CHECK_ERRC(heap::remove(f.path()), errc::corrupt);
  CHECK(std::filesystem::exists(f.path()));
}
