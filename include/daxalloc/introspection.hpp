// What a heap holds, as its iteration and introspection calls report it:
// heap::for_each_object (every allocated object, as PMDK's POBJ_FOREACH),
// heap::for_each_section and heap::for_each_pageblock (the sparse memory
// model, in the kernel's words), and heap::layout() (the superblock and the
// geometry). They read the media as they are and write nothing, so they work
// on a read-only handle (heap::open_read_only).
//
// Threads: they may run alongside other calls on the heap, but what they
// report of objects allocated or freed meanwhile is unspecified (as
// heap::check(), they want a quiet heap for an exact answer).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <type_traits>

#include "daxalloc/export.h"
#include "daxalloc/region.hpp"
#include "daxalloc/version.hpp"

namespace daxalloc {

// What an allocated object is to its heap.
enum class object_kind : std::uint8_t {
  small,       // allocated by allocate, a batch or a publish: a slot in a slab (up to 64 KiB)
  extent,      // the same, larger: a run of whole pages
  root,        // the root object (heap::root)
  named,       // the objects of a name (heap::construct)
  name_index,  // the named-object index itself: its table and the names' strings
};
[[nodiscard]] DAXALLOC_API const char* to_string(object_kind kind) noexcept;

// One allocated object: durable allocations only, as a crash would leave
// them (reservations and objects in a thread's cache of free ones are not
// allocated). Objects in pageblocks that a repair quarantined are not listed.
struct object_info {
  std::uint64_t offset = 0;  // from heap::base(); heap::at(offset) is the object
  std::uint64_t size = 0;    // usable bytes: its size class, or the extent's whole pages
  object_kind kind = object_kind::small;
  bool in_slab = false;  // a slot of a slab; false: an extent of whole pages
  bool movable = false;  // a movable object (heap::allocate_movable), after its 16-byte header
};

// The migratetype of a pageblock (the kernel's word): which allocations it
// serves. The values are the ones on the media.
enum class migratetype : std::uint8_t {
  unmovable = 0,  // slabs of small objects
  movable = 1,    // the common pool: free pageblocks and page-sized extents
  large = 2,      // extents of 2 MiB and more
  metadata = 3,   // the head and memmap blocks: never allocated from
  isolate = 5,    // never allocated from: quarantined by a repair, or being removed
};
[[nodiscard]] DAXALLOC_API const char* to_string(migratetype type) noexcept;

// A section: the unit of the section map (128 MiB to 1 GiB), made of
// subsections of 2 MiB, each one pageblock, each present or not.
struct section_info {
  std::uint64_t number = 0;
  std::uint64_t offset = 0;  // of its first byte
  std::uint64_t size = 0;
  std::uint32_t present_subsections = 0;
  std::uint32_t subsections = 0;
  std::uint64_t memmap_offset = 0;  // the memmap block that describes its span
  bool online = false;              // its pages may be allocated (not being removed)
  bool partial = false;             // tainted: some of its subsections were never present
};

// A pageblock: one subsection (2 MiB, 512 pages of 4 KiB).
struct pageblock_info {
  std::uint64_t offset = 0;
  std::uint64_t section = 0;  // its section's number
  bool present = false;       // absent: the fields below are meaningless
  migratetype type = migratetype::movable;
  bool skip = false;                  // the compaction skip flag (PB_migrate_skip)
  std::uint32_t pages = 0;            // 512
  std::uint32_t allocated_pages = 0;  // pages of extents and slabs in it (all, for metadata)
};

// The superblock and the geometry.
struct heap_layout {
  std::uint32_t format_version = 0;  // of the on-media format
  std::array<std::uint8_t, 16> uuid{};
  std::uint64_t create_time = 0;  // seconds since the epoch
  std::uint64_t generation = 0;   // of the superblock: incremented by every update
  std::uint32_t section_size_bits = 0;
  std::uint64_t section_size = 0;
  std::uint64_t subsection_size = 0;  // = pageblock_size
  std::uint64_t pageblock_size = 0;
  std::uint64_t page_size = 0;
  std::uint64_t descriptor_size = 0;        // bytes of memmap per page
  std::uint64_t max_range = 0;              // the address range reserved for the heap
  std::uint64_t nr_sections = 0;            // in max_range
  std::uint64_t head_size = 0;              // superblocks, intent, directory, lanes, root pages
  std::uint64_t memmap_span_size = 0;       // memory one memmap block describes
  std::uint64_t memmap_bytes_per_span = 0;  // the size of that block
  std::uint64_t present_sections = 0;       // with at least one present subsection
  std::uint64_t present_subsections = 0;
  std::uint64_t present_bytes = 0;
  std::uint64_t head_bytes = 0;      // head, in present memory
  std::uint64_t memmap_bytes = 0;    // memmap blocks, in present memory
  std::uint64_t max_small_size = 0;  // the largest object a slab holds; larger ones are extents
};

// A region of the heap's range (heap::regions()), as the kernel's struct
// dev_pagemap records a ZONE_DEVICE range: its type (devdax is the
// kernel's MEMORY_DEVICE_GENERIC, fsdax MEMORY_DEVICE_FS_DAX; a page-cache
// file or anonymous memory has no pgmap), the granularity of its mapping
// (the pgmap's vmemmap_shift), its node, and the references held on its
// memory (the pgmap's ref: here, pins by address).
struct region_info {
  region_kind kind = region_kind::file;
  std::filesystem::path path;
  std::uint64_t offset = 0;  // heap offset of its first byte
  std::uint64_t size = 0;    // bytes mapped
  std::uint64_t align = 0;   // mapping granularity
  // The device behind it ("dax0.0", "pmem0", a disk; empty for tmpfs), and
  // that device's NUMA node (-1: none known).
  std::string device;
  int node = -1;
  std::uint64_t pins = 0;            // pins by address on objects in it
  std::uint64_t pinned_objects = 0;  // the objects they are on
};

namespace detail {
// A callable seen through a function pointer (no allocation, no copy), as
// the iteration calls take it: fn(info) returning void, or bool (false stops).
template <class Info>
struct visitor {
  bool (*call)(void* fn, const Info& info);
  void* fn;
  bool operator()(const Info& info) const { return call(fn, info); }
};
template <class Info, class F>
[[nodiscard]] visitor<Info> make_visitor(F& fn) noexcept {
  return {[](void* f, const Info& info) -> bool {
            F& callable = *static_cast<F*>(f);
            if constexpr (std::is_void_v<std::invoke_result_t<F&, const Info&>>) {
              callable(info);
              return true;
            } else {
              return static_cast<bool>(callable(info));
            }
          },
          const_cast<void*>(static_cast<const void*>(std::addressof(fn)))};
}
}  // namespace detail

}  // namespace daxalloc
