// Geometry: the numbers that follow from a section size and an address range.
// Everything here is derived; only section_size_bits and max_range are stored.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "sparse/layout.hpp"

namespace daxalloc::sparse {

// 0x-prefixed hexadecimal, for error messages.
[[nodiscard]] inline std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  return (v + a - 1) / a * a;
}
constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t a) {
  return v / a * a;
}

struct geometry {
  unsigned section_size_bits = default_section_size_bits;
  std::uint64_t max_range = 0;  // bytes, a multiple of section_size()
  // Offset of the memmap area (format 6: head_size()), or 0: each span's
  // memmap block is carved from the span's first present memory (format 5
  // and older, kept by heaps upgraded from them).
  std::uint64_t memmap_area = 0;

  // Throws errc::invalid_argument / too_large for a geometry open or create cannot use.
  static geometry make(unsigned section_size_bits, std::uint64_t max_range);
  // Why the pair is unusable, or empty.
  [[nodiscard]] static std::string problem(unsigned section_size_bits, std::uint64_t max_range);

  [[nodiscard]] unsigned pfn_section_shift() const { return section_size_bits - page_shift; }
  [[nodiscard]] std::uint64_t section_size() const { return std::uint64_t{1} << section_size_bits; }
  [[nodiscard]] std::uint64_t pages_per_section() const { return section_size() >> page_shift; }
  [[nodiscard]] unsigned subsections_per_section() const {
    return 1u << (section_size_bits - subsection_shift);
  }
  [[nodiscard]] unsigned subsection_map_words() const {
    return (subsections_per_section() + 63) / 64;
  }
  [[nodiscard]] unsigned record_words() const { return section_record_words(section_size_bits); }
  [[nodiscard]] std::uint64_t record_size() const { return record_words() * 8u; }
  [[nodiscard]] unsigned sections_per_root() const {
    return static_cast<unsigned>(root_page_size / record_size());
  }
  [[nodiscard]] std::uint64_t nr_sections() const { return max_range >> section_size_bits; }
  [[nodiscard]] std::uint64_t nr_roots() const {
    return (nr_sections() + sections_per_root() - 1) / sections_per_root();
  }
  [[nodiscard]] std::uint64_t roots_offset() const {
    return align_up(directory_offset + nr_roots() * 8, root_page_size);
  }
  [[nodiscard]] std::uint64_t lanes_offset() const {
    return roots_offset() + nr_roots() * root_page_size;
  }
  // The slot page (format 3): copy B of the root and name-table slots.
  [[nodiscard]] std::uint64_t slots_offset() const { return lanes_offset() + nr_lanes * lane_size; }
  [[nodiscard]] std::uint64_t head_size() const {
    return align_up(slots_offset() + root_page_size, subsection_size);
  }
  // Format 2 had no slot page (daxalloc::upgrade needs it to fit in the same head).
  [[nodiscard]] std::uint64_t head_size_v2() const {
    return align_up(slots_offset(), subsection_size);
  }
  [[nodiscard]] unsigned span_bits() const { return memmap_span_bits(section_size_bits); }
  [[nodiscard]] std::uint64_t span_size() const { return std::uint64_t{1} << span_bits(); }
  // Bytes of memmap for one span: a multiple of 2 MiB.
  [[nodiscard]] std::uint64_t memmap_bytes() const {
    return (span_size() >> page_shift) * sizeof(page_descriptor);
  }
  [[nodiscard]] std::uint64_t nr_spans() const {
    return (max_range + span_size() - 1) >> span_bits();
  }
  // The memmap area: the block of span i at memmap_area + i * memmap_bytes().
  [[nodiscard]] std::uint64_t area_bytes() const {
    return memmap_area ? nr_spans() * memmap_bytes() : 0;
  }
  [[nodiscard]] bool in_area(std::uint64_t offset) const {
    return offset >= memmap_area && offset - memmap_area < area_bytes();
  }
  // The area block of the span holding `offset` (memmap_area must be set).
  [[nodiscard]] std::uint64_t area_block(std::uint64_t offset) const {
    return memmap_area + (offset >> span_bits()) * memmap_bytes();
  }
  // The page of the memmap area holding the descriptors of the pageblock at
  // `offset` (memmap_area must be set): 512 descriptors, 4 KiB.
  [[nodiscard]] std::uint64_t descriptor_page(std::uint64_t offset) const {
    return area_block(offset) + ((offset & (span_size() - 1)) >> page_shift) * 8;
  }
  // The span a block of the area describes.
  [[nodiscard]] std::uint64_t area_block_span(std::uint64_t block) const {
    return (block - memmap_area) / memmap_bytes() << span_bits();
  }
  // The first offset that may hold memory (not metadata).
  [[nodiscard]] std::uint64_t data_start() const {
    return memmap_area ? memmap_area + area_bytes() : head_size();
  }

  // The kernel's conversions.
  [[nodiscard]] std::uint64_t pfn_to_section_nr(std::uint64_t pfn) const {
    return pfn >> pfn_section_shift();
  }
  [[nodiscard]] std::uint64_t section_nr_to_pfn(std::uint64_t nr) const {
    return nr << pfn_section_shift();
  }
  // Index of the pfn's subsection within its section.
  [[nodiscard]] unsigned subsection_index(std::uint64_t pfn) const {
    return static_cast<unsigned>((pfn & (pages_per_section() - 1)) / pages_per_subsection);
  }
};

}  // namespace daxalloc::sparse
