#include "sparse/upgrade.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <set>

#include "daxalloc/error.hpp"
#include "sparse/superblock.hpp"

namespace daxalloc::sparse {
namespace {

// Why a copy is not a usable superblock of an upgradable format (2 to 7);
// empty if it is. Format 2 is format 3 without the slot page (the same
// fields, head_size without it); format 3 is format 4 with other check bits
// and slab digests; format 4 is format 5 with every slab in the legacy
// encoding under the class index below it; format 5 is format 6 without
// the memmap area (superblock::memmap_area 0: each span's block in the span);
// format 6 is format 7 without movable slabs (and with page-sized extents
// in movable pageblocks, which format 7 leaves where they are); format 7 is
// format 8 without members (nr_members and the member records zero).
std::string old_problem(const superblock& sb) {
  if (std::memcmp(sb.magic, superblock_magic, sizeof sb.magic) != 0) return "no daxalloc magic";
  superblock copy = sb;
  superblock_seal(copy);
  if (copy.checksum != sb.checksum) return "checksum mismatch";
  if (sb.version < oldest_upgradable_version || sb.version >= format_version)
    return "format version " + std::to_string(sb.version);
  if (sb.flags != 0) return "unknown flags";
  if (auto why = geometry::problem(sb.section_size_bits, sb.max_range); !why.empty()) return why;
  const geometry geo{sb.section_size_bits, sb.max_range};
  superblock expected = sb;
  superblock_set_geometry(expected, geo);
  expected.head_size = sb.version == 2 ? geo.head_size_v2() : geo.head_size();
  if (std::memcmp(&expected, &sb, offsetof(superblock, create_time)) != 0)
    return "layout fields disagree with the geometry";
  for (auto byte : sb.reserved)
    if (byte != 0 || (sb.version < 6 && sb.memmap_area != 0)) return "reserved bytes are not zero";
  // (Older formats had reserved bytes where format 8 keeps its members.)
  const auto* members = reinterpret_cast<const std::byte*>(&sb.nr_members);
  if (std::any_of(members, reinterpret_cast<const std::byte*>(sb.reserved),
                  [](std::byte b) { return b != std::byte{0}; }))
    return "reserved bytes are not zero";
  return {};
}

// A descriptor as format 2 or 3 sealed it (format 2: no check bits).
bool old_descriptor(std::uint64_t w, std::uint32_t version) {
  const std::uint64_t check = w >> descriptor_check_shift;
  return version == 2 ? check == 0 : check == descriptor_fold(w);
}

// The digest format 3 recorded at a clean close for a slab's bitmap (0: none).
std::uint64_t v3_bitmap_digest(const std::uint64_t* bits, std::uint32_t objects,
                               std::uint64_t pfn) {
  return words_digest(bits, (objects + 63) / 64, pfn, 24);
}

// Format 2 to 3: copy B of the root slot from copy A (cleared when copy A
// is torn: open then drops copy A, as format 2 did), the name-table slot's
// check word and its copy B.
void upgrade_slots(region& r, const geometry& geo, std::vector<std::string>& done) {
  std::byte* const base = r.base();
  const persistence& p = r.persist();
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
  p.flush(slots, root_page_size / 32);  // (drained with the descriptors, before the commit)
  done.push_back(root.offset ? "root slot copy B written (root at " + hex(root.offset) + ")"
                             : std::string("no root: root slot copy B empty"));
  done.push_back(names.offset
                     ? "name-table slot copies written (table at " + hex(names.offset) + ")"
                     : std::string("no name table: name-table slot copies empty"));
}

}  // namespace

std::vector<std::string> upgrade(region& r, std::span<const std::uint32_t> slab_objects) {
  const std::string where = r.path().string() + ": upgrade: ";
  if (r.read_only()) throw error(errc::read_only, where + "needs a read-write open");
  if (r.size() < 2 * sizeof(superblock))
    throw error(errc::corrupt, where + "too small to be a daxalloc heap");
  std::byte* const base = r.base();
  const persistence& p = r.persist();
  const auto* copies = reinterpret_cast<const superblock*>(base);
  std::vector<std::string> done;

  // A copy of this format next to an older one: a crash interrupted an
  // upgrade after its commit (copy A written); only copy B is left to do.
  bool other = false;
  for (int c = 0; c < 2; ++c)
    if (superblock_problem(copies[c], other).empty()) {
      if (std::memcmp(&copies[0], &copies[1], sizeof(superblock)) == 0) return done;
      if (!old_problem(copies[1 - c]).empty() && !superblock_problem(copies[1 - c], other).empty())
        return done;  // the other copy is damaged: open repairs it as usual
      std::memcpy(base + superblock_offset[1 - c], &copies[c], sizeof(superblock));
      p.persist(base + superblock_offset[1 - c], sizeof(superblock));
      done.push_back(std::string("finished an interrupted upgrade: superblock copy ") +
                     "AB"[1 - c] + " rewritten from copy " + "AB"[c]);
      return done;
    }

  const std::string problem[2] = {old_problem(copies[0]), old_problem(copies[1])};
  const int good = superblock_winner(copies, problem);
  if (good < 0) {
    for (int c = 0; c < 2; ++c)
      if (std::memcmp(copies[c].magic, superblock_magic, sizeof copies[c].magic) == 0 &&
          (copies[c].version > format_version || copies[c].version < oldest_upgradable_version))
        throw error(copies[c].version > format_version ? errc::newer_format : errc::older_format,
                    where + "format version " + std::to_string(copies[c].version) +
                        " cannot be upgraded: only formats " +
                        std::to_string(oldest_upgradable_version) + " to " +
                        std::to_string(format_version - 1) + " can");
    throw error(errc::corrupt, where + "no usable superblock of an older format: A: " + problem[0] +
                                   "; B: " + problem[1]);
  }
  superblock sb = copies[good];
  const std::uint32_t from = sb.version;
  const geometry geo{sb.section_size_bits, sb.max_range};
  if (from == 2 && geo.head_size() != geo.head_size_v2())
    throw error(errc::older_format,
                where + "the head of this geometry has no room for the slot page of format " +
                    std::to_string(format_version) + " (its lanes end at " +
                    hex(geo.slots_offset()) + ", a 2 MiB boundary)");
  if (r.size() < geo.head_size())
    throw error(errc::corrupt, where + "truncated: smaller than its own head");
  // (The intent and lanes of formats 4 and 5 are format 6's: recovery at
  // the next open finishes them.)
  const auto* in = reinterpret_cast<const hotplug_intent*>(base + intent_offset);
  if (from < 4 && in->op != hotplug_none && in->checksum != 0)
    throw error(errc::older_format, where + "a hot-add or hot-remove did not finish (a format " +
                                        std::to_string(from) +
                                        " intent is pending): the heap was not closed cleanly");
  for (std::uint64_t i = 0; i < nr_lanes; ++i) {
    const auto* h = reinterpret_cast<const lane_header*>(base + geo.lanes_offset() + i * lane_size);
    if (from < 4 && h->count != 0 && h->checksum != 0 && h->checksum != lane_continuation)
      throw error(errc::older_format,
                  where + "redo lane " + std::to_string(i) +
                      " holds a batch: the heap was not closed cleanly, and format " +
                      std::to_string(from) + " batches are not converted");
  }

  // The memmap blocks of the present sections.
  std::set<std::uint64_t> blocks;
  const auto* directory = reinterpret_cast<const std::uint64_t*>(base + directory_offset);
  for (std::uint64_t root = 0; from < 6 && root < geo.nr_roots(); ++root) {  // (6: the area's)
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
  // 1. Format 3 recorded slab digests at a clean close: damage made since
  // is refused now, before the conversion makes the bitmaps their own truth.
  const bool clean = sb.shutdown_state == shutdown_clean;
  for (std::uint64_t block : blocks) {
    const auto* d = reinterpret_cast<const std::uint64_t*>(base + block);
    const std::uint64_t span = block & ~(geo.span_size() - 1);
    for (std::uint64_t i = 0; from == 3 && clean && i < geo.memmap_bytes() / 8; ++i) {
      const page_descriptor desc{d[i]};
      if (desc.state() != page_state::slab || !old_descriptor(d[i], from) ||
          desc.sub() >= slab_objects.size() || slab_digest(d[i]) == 0)
        continue;
      const std::uint64_t pfn = (span >> page_shift) + i;
      if ((pfn << page_shift) + page_size > r.size()) continue;
      const auto* bits = reinterpret_cast<const std::uint64_t*>(base + (pfn << page_shift));
      if (slab_digest(d[i]) != v3_bitmap_digest(bits, slab_objects[desc.sub()], pfn))
        throw error(errc::corrupt,
                    where + "the bitmap of the slab at " + hex(pfn << page_shift) +
                        " changed while the heap was closed (its format 3 digest does not "
                        "match): repair it with the daxalloc that made it first");
    }
  }

  // 2. Every descriptor gets this format's check bits (format 2 had none,
  // format 3 unseeded ones), every slab head of format 2 or 3 its bitmap's
  // digest, every memmap page descriptor an empty digest (recorded again at
  // close: the old ones covered the old class numbers), and every slab head
  // the legacy twin of its class (class c < n becomes n + c: its bitmap
  // keeps 64 objects per word and its digest, which open reconciles as
  // format 4 did). One 8-byte store each,
  // idempotent: a descriptor that already checks out is sealed, a slab
  // already relabelled is done, and one that checks out under neither
  // format stays damaged for open to report.
  const std::uint64_t n = slab_objects.size();
  std::uint64_t converted = 0, relabelled = 0;
  for (std::uint64_t block : from < 5 ? blocks : std::set<std::uint64_t>{}) {
    auto* d = reinterpret_cast<std::uint64_t*>(base + block);
    const std::uint64_t span = block & ~(geo.span_size() - 1);
    for (std::uint64_t i = 0; i < geo.memmap_bytes() / sizeof(std::uint64_t); ++i) {
      std::uint64_t word = d[i];
      if (!descriptor_checks_out(word)) {
        if (!old_descriptor(word, from)) continue;
        word = with_descriptor_check(word);
        ++converted;
      }
      const page_descriptor desc{word};
      // The digests recorded at the last close covered the old class numbers.
      if (desc.state() == page_state::memmap) word = memmap_info(0);
      const std::uint64_t pfn = (span >> page_shift) + i;
      if (desc.state() == page_state::slab && desc.sub() < n &&
          (pfn << page_shift) + page_size <= r.size()) {
        if (from < 4)
          word = with_slab_digest(
              word,
              slab_bitmap_digest(reinterpret_cast<const std::uint64_t*>(base + (pfn << page_shift)),
                                 slab_objects[desc.sub()]));
        word = with_descriptor_check((word & ~(std::uint64_t{0xff} << 8)) | (desc.sub() + n) << 8);
        ++relabelled;
      }
      if (word == d[i]) continue;
      std::atomic_ref<std::uint64_t>(d[i]).store(word, std::memory_order_relaxed);
      p.flush(&d[i], 8);
    }
  }
  // Every head page: reserved, in the memmap of span 0 (the head is in it).
  if (from < 4)
    done.push_back("sealed " + std::to_string(converted) + " page descriptors in " +
                   std::to_string(blocks.size()) + " memmap blocks with format " +
                   std::to_string(format_version) + " check bits and slab digests");
  if (from < 5)
    done.push_back("kept " + std::to_string(relabelled) +
                   " slabs in the format 4 encoding (legacy classes; new slabs are format " +
                   std::to_string(format_version) + "'s)");
  // The memory cannot move: the heap keeps each span's block where it is,
  // and so do spans added later (no memmap area).
  if (from < 6)
    done.push_back("kept each span's memmap block inside the span (" +
                   std::to_string(blocks.size()) + (blocks.size() == 1 ? " span" : " spans") +
                   "; no memmap area: only a heap created by format 6 or later has one)");
  if (from == 2) upgrade_slots(r, geo, done);

  p.drain();
  // 3. The commit: superblock copy A of the new version, then copy B.
  sb.version = format_version;
  sb.head_size = geo.head_size();
  ++sb.generation;
  superblock_seal(sb);
  for (auto offset : superblock_offset) p.memcpy_persist(base + offset, &sb, sizeof sb);
  done.push_back("superblocks rewritten: format version " + std::to_string(from) + " -> " +
                 std::to_string(format_version));
  return done;
}

}  // namespace daxalloc::sparse
