#include "sparse/superblock.hpp"

#include <cstring>

namespace daxalloc::sparse {

void superblock_seal(superblock& sb) {
  sb.checksum = 0;
  sb.checksum = fletcher64(&sb, sizeof sb);
}

void superblock_set_geometry(superblock& sb, const geometry& geo) {
  sb.page_shift = page_shift;
  sb.subsection_shift = subsection_shift;
  sb.section_size_bits = geo.section_size_bits;
  sb.descriptor_size = sizeof(page_descriptor);
  sb.section_record_size = static_cast<std::uint32_t>(geo.record_size());
  sb.sections_per_root = geo.sections_per_root();
  sb.max_range = geo.max_range;
  sb.head_size = geo.head_size();
  sb.nr_roots = geo.nr_roots();
  sb.roots_offset = geo.roots_offset();
  sb.lanes_offset = geo.lanes_offset();
  sb.nr_lanes = nr_lanes;
  sb.memmap_area = geo.memmap_area;
}

std::string superblock_problem(const superblock& sb, bool& other_version) {
  other_version = false;
  if (std::memcmp(sb.magic, superblock_magic, sizeof sb.magic) != 0) return "no daxalloc magic";
  superblock copy = sb;
  superblock_seal(copy);
  if (copy.checksum != sb.checksum) return "checksum mismatch";
  if (sb.version == 0) return "format version 0";
  if (sb.version != format_version) {
    // Checked before the layout fields: an older heap has other descriptor
    // sizes, and must be reported as what it is rather than as damage.
    other_version = true;
    return "format version " + std::to_string(sb.version) + " is " +
           (sb.version > format_version ? "newer" : "older") + " than this library's " +
           std::to_string(format_version);
  }
  if (sb.flags != 0) return "unknown flags " + std::to_string(sb.flags);
  if (auto why = geometry::problem(sb.section_size_bits, sb.max_range); !why.empty()) return why;
  superblock expected = sb;
  const geometry geo{sb.section_size_bits, sb.max_range, sb.memmap_area};
  superblock_set_geometry(expected, geo);
  if (std::memcmp(&expected, &sb, offsetof(superblock, create_time)) != 0)
    return "layout fields disagree with the geometry (page, subsection, descriptor or record size)";
  if (sb.memmap_area != 0 &&
      (sb.memmap_area != geo.head_size() || geo.data_start() + subsection_size > sb.max_range))
    return "memmap area at " + hex(sb.memmap_area) + " is not where the geometry puts it";
  for (auto byte : sb.reserved)
    if (byte != 0) return "reserved bytes are not zero";
  return member_records_problem(sb, geo);
}

std::string member_records_problem(const superblock& sb, const geometry& geo) {
  if (sb.reserved32 != 0) return "reserved bytes are not zero";
  if (sb.nr_members > max_members)
    return std::to_string(sb.nr_members) + " members (at most " + std::to_string(max_members) + ")";
  static constexpr member_record zero{};
  for (std::size_t i = 0; i < max_members; ++i) {
    const member_record& m = sb.members[i];
    const std::string which = "the record of region " + std::to_string(i + 1);
    if (i >= sb.nr_members) {
      if (std::memcmp(&m, &zero, sizeof m) != 0)
        return which + " is beyond the " + std::to_string(sb.nr_members) + " recorded, not zero";
      continue;
    }
    const std::uint64_t end = m.offset + m.size;
    if (m.offset % member_alignment || m.size % subsection_size || m.size <= member_label_size ||
        end < m.offset || end > geo.max_range || m.offset < geo.data_start())
      return which + " names an impossible span [" + hex(m.offset) + ", " + hex(end) + ")";
    if (m.state != member_adding && m.state != member_online)
      return which + " has an unknown state " + std::to_string(m.state);
    if (m.reserved != 0 || m.kind > 3) return which + " has unknown fields";
    if (std::memchr(m.path, 0, sizeof m.path) == nullptr || m.path[0] == 0)
      return which + " has no path";
    for (std::size_t j = 0; j < i; ++j)
      if (m.offset < sb.members[j].offset + sb.members[j].size && sb.members[j].offset < end)
        return which + " overlaps that of region " + std::to_string(j + 1);
  }
  return {};
}

void member_label_seal(member_label& l) {
  l.checksum = 0;
  l.checksum = fletcher64(&l, sizeof l);
}

int superblock_winner(const superblock* copies, const std::string* problem) {
  if (problem[0].empty() && problem[1].empty())
    return copies[1].generation > copies[0].generation ? 1 : 0;
  if (problem[0].empty()) return 0;
  if (problem[1].empty()) return 1;
  return -1;
}

}  // namespace daxalloc::sparse
