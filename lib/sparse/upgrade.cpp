#include "sparse/upgrade.hpp"

#include <atomic>
#include <cstring>
#include <set>

#include "daxalloc/error.hpp"
#include "sparse/superblock.hpp"

namespace daxalloc::sparse {
namespace {

// Why a copy is not a usable format 2 superblock; empty if it is. Format 2
// is format 3 without the slot page: the same fields, head_size without it.
std::string v2_problem(const superblock& sb) {
  if (std::memcmp(sb.magic, superblock_magic, sizeof sb.magic) != 0) return "no daxalloc magic";
  superblock copy = sb;
  superblock_seal(copy);
  if (copy.checksum != sb.checksum) return "checksum mismatch";
  if (sb.version != oldest_upgradable_version)
    return "format version " + std::to_string(sb.version);
  if (sb.flags != 0) return "unknown flags";
  if (auto why = geometry::problem(sb.section_size_bits, sb.max_range); !why.empty()) return why;
  const geometry geo{sb.section_size_bits, sb.max_range};
  superblock expected = sb;
  superblock_set_geometry(expected, geo);
  expected.head_size = geo.head_size_v2();
  if (std::memcmp(&expected, &sb, offsetof(superblock, create_time)) != 0)
    return "layout fields disagree with the geometry";
  for (auto byte : sb.reserved)
    if (byte != 0) return "reserved bytes are not zero";
  return {};
}

}  // namespace

std::vector<std::string> upgrade(region& r) {
  const std::string where = r.path().string() + ": upgrade: ";
  if (r.read_only()) throw error(errc::read_only, where + "needs a read-write open");
  if (r.size() < 2 * sizeof(superblock))
    throw error(errc::corrupt, where + "too small to be a daxalloc heap");
  std::byte* const base = r.base();
  const persistence& p = r.persist();
  const auto* copies = reinterpret_cast<const superblock*>(base);
  std::vector<std::string> done;

  // A copy of this format next to a format 2 one: a crash interrupted an
  // upgrade after its commit (copy A written); only copy B is left to do.
  bool other = false;
  for (int c = 0; c < 2; ++c)
    if (superblock_problem(copies[c], other).empty()) {
      if (std::memcmp(&copies[0], &copies[1], sizeof(superblock)) == 0) return done;
      if (!v2_problem(copies[1 - c]).empty() && !superblock_problem(copies[1 - c], other).empty())
        return done;  // the other copy is damaged: open repairs it as usual
      std::memcpy(base + superblock_offset[1 - c], &copies[c], sizeof(superblock));
      p.persist(base + superblock_offset[1 - c], sizeof(superblock));
      done.push_back(std::string("finished an interrupted upgrade: superblock copy ") +
                     "AB"[1 - c] + " rewritten from copy " + "AB"[c]);
      return done;
    }

  const std::string problem[2] = {v2_problem(copies[0]), v2_problem(copies[1])};
  const int good = superblock_winner(copies, problem);
  if (good < 0) {
    for (int c = 0; c < 2; ++c)
      if (std::memcmp(copies[c].magic, superblock_magic, sizeof copies[c].magic) == 0 &&
          (copies[c].version > format_version || copies[c].version < oldest_upgradable_version))
        throw error(errc::older_format, where + "format version " +
                                            std::to_string(copies[c].version) +
                                            " cannot be upgraded: only format " +
                                            std::to_string(oldest_upgradable_version) + " can");
    throw error(errc::corrupt, where + "no usable format " +
                                   std::to_string(oldest_upgradable_version) +
                                   " superblock: A: " + problem[0] + "; B: " + problem[1]);
  }
  superblock sb = copies[good];
  const geometry geo{sb.section_size_bits, sb.max_range};
  if (geo.head_size() != geo.head_size_v2())
    throw error(errc::older_format,
                where + "the head of this geometry has no room for the slot page of format " +
                    std::to_string(format_version) + " (its lanes end at " +
                    hex(geo.slots_offset()) + ", a 2 MiB boundary)");
  if (r.size() < geo.head_size())
    throw error(errc::corrupt, where + "truncated: smaller than its own head");
  const auto* in = reinterpret_cast<const hotplug_intent*>(base + intent_offset);
  if (in->op != hotplug_none && in->checksum != 0)
    throw error(errc::older_format, where + "a hot-add or hot-remove did not finish (a format " +
                                        std::to_string(oldest_upgradable_version) +
                                        " intent is pending): the heap was not closed cleanly");
  for (std::uint64_t i = 0; i < nr_lanes; ++i) {
    const auto* h = reinterpret_cast<const lane_header*>(base + geo.lanes_offset() + i * lane_size);
    if (h->count != 0 && h->checksum != 0 && h->checksum != lane_continuation)
      throw error(errc::older_format,
                  where + "redo lane " + std::to_string(i) +
                      " holds a batch: the heap was not closed cleanly, and format " +
                      std::to_string(oldest_upgradable_version) + " batches are not converted");
  }

  // 1. Every descriptor gets its check bits (bits 56..63 were zero: no
  // length reaches 2^40 pages). One 8-byte store each, idempotent.
  std::set<std::uint64_t> blocks;
  const auto* directory = reinterpret_cast<const std::uint64_t*>(base + directory_offset);
  for (std::uint64_t root = 0; root < geo.nr_roots(); ++root) {
    if (directory[root] != 1) continue;
    for (std::uint64_t nr = root * geo.sections_per_root();
         nr < std::min<std::uint64_t>((root + 1) * geo.sections_per_root(), geo.nr_sections());
         ++nr) {
      const auto* record = reinterpret_cast<const std::uint64_t*>(
          base + geo.roots_offset() + root * root_page_size +
          (nr % geo.sections_per_root()) * geo.record_size());
      if (!(record[0] & section_has_mem_map)) continue;
      const std::uint64_t memmap = record[0] & section_memmap_mask;
      const std::uint64_t span = (nr << geo.section_size_bits) & ~(geo.span_size() - 1);
      if (memmap < geo.head_size() || memmap < span || memmap >= span + geo.span_size() ||
          memmap + geo.memmap_bytes() > r.size())
        throw error(errc::corrupt, where + "section " + std::to_string(nr) +
                                       " names a memmap block outside its span: " + hex(memmap));
      blocks.insert(memmap);
    }
  }
  std::uint64_t converted = 0;
  for (std::uint64_t block : blocks) {
    auto* d = reinterpret_cast<std::uint64_t*>(base + block);
    for (std::uint64_t i = 0; i < geo.memmap_bytes() / sizeof(std::uint64_t); ++i) {
      const std::uint64_t sealed = with_descriptor_check(d[i]);
      if (sealed == d[i]) continue;
      std::atomic_ref<std::uint64_t>(d[i]).store(sealed, std::memory_order_relaxed);
      p.flush(&d[i], 8);
      ++converted;
    }
  }
  // Every head page: reserved, in the memmap of span 0 (the head is in it).
  done.push_back("added check bits to " + std::to_string(converted) + " page descriptors in " +
                 std::to_string(blocks.size()) + " memmap blocks");

  // 2. The slots: copy B of the root slot from copy A (cleared when copy A
  // is torn: format 3 open then drops copy A, as format 2 did), the
  // name-table slot's check word and its copy B.
  auto* root_a = reinterpret_cast<root_slot*>(base + root_slot_offset);
  root_slot root = *root_a;
  root.reserved = 0;
  if (root.checksum != fletcher64(&root, 16) || root.checksum == 0) root = {};
  if (root.checksum != 0 && root_a->reserved != 0) {
    root_a->reserved = 0;
    p.flush(root_a, sizeof *root_a);
  }
  std::byte* slots = base + geo.slots_offset();
  std::memcpy(slots + root_slot_b_in_page, &root, sizeof root);
  auto* names_a = reinterpret_cast<names_slot*>(base + names_slot_offset);
  const names_slot names{names_a->offset, names_slot_check(names_a->offset)};
  names_a->check = names.check;
  std::memcpy(slots + names_slot_b_in_page, &names, sizeof names);
  p.flush(names_a, sizeof *names_a);
  p.flush(slots, root_page_size / 32);
  p.drain();
  done.push_back(root.offset ? "root slot copy B written (root at " + hex(root.offset) + ")"
                             : std::string("no root: root slot copy B empty"));
  done.push_back(names.offset
                     ? "name-table slot copies written (table at " + hex(names.offset) + ")"
                     : std::string("no name table: name-table slot copies empty"));

  // 3. The commit: superblock copy A of the new version, then copy B.
  sb.version = format_version;
  sb.head_size = geo.head_size();
  ++sb.generation;
  superblock_seal(sb);
  for (auto offset : superblock_offset) p.memcpy_persist(base + offset, &sb, sizeof sb);
  done.push_back("superblocks rewritten: format version " +
                 std::to_string(oldest_upgradable_version) + " -> " +
                 std::to_string(format_version));
  return done;
}

}  // namespace daxalloc::sparse
