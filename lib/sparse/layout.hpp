// The on-media format of a daxalloc heap: every constant and struct here is
// part of the layout. Changing any of them constitutes a layout change and
// needs a new format_version (open refuses every version other than its own).
//
// All fields are little endian (x86_64 and arm64 native order; asserted below)
// and fixed width. Offsets are bytes from the start of the region, never
// pointers, so a heap can be mapped anywhere.
//
//   offset 0        superblock copy A (4 KiB)
//   offset 4 KiB    superblock copy B (4 KiB)
//   offset 8 KiB    hotplug intent (one cache line), rest of the page zero
//   offset 12 KiB   section root directory: one 8-byte entry per root
//   roots_offset    root pages, 4 KiB each, in root-number order (populated on demand)
//   lanes_offset    redo-log lanes of the heap layer, 4 KiB each (nr_lanes)
//   slots_offset    the slot page: copy B of the root and name-table slots (format 3)
//   head_size       first byte after the head (a multiple of 2 MiB)
//   memmap_area     format 6: the memmap area, one 2 MiB block per 1 GiB span
//                   of the address range, present only where its span is
//   data_start      the memory: memmap_area + spans * 2 MiB (0 area: head_size,
//                   and each span's memmap block carved from its memory)
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace daxalloc::sparse {

static_assert(std::endian::native == std::endian::little, "the on-media format is little endian");

// ---- constants mirrored from the kernel (x86_64, 4 KiB pages) ----
inline constexpr unsigned page_shift = 12;
inline constexpr std::uint64_t page_size = std::uint64_t{1} << page_shift;
inline constexpr unsigned subsection_shift = 21;
inline constexpr std::uint64_t subsection_size = std::uint64_t{1} << subsection_shift;
inline constexpr std::uint64_t pages_per_subsection = subsection_size / page_size;  // 512
inline constexpr unsigned pageblock_order = subsection_shift - page_shift;          // 9
inline constexpr unsigned nr_pageblock_bits = 4;  // 3 migratetype bits + compaction skip
inline constexpr unsigned min_section_size_bits = 27;
inline constexpr unsigned max_section_size_bits = 30;
inline constexpr unsigned default_section_size_bits = 27;
inline constexpr unsigned max_physmem_bits = 46;  // largest address range a heap may reserve

// ---- daxalloc's own layout constants ----
inline constexpr char superblock_magic[16] = "DAXALLOC-HEAP\0\0";
// 2: 8-byte page descriptors. 3: the root and name-table slots kept twice
// (copy B in the slot page after the lanes), the name-table slot checked.
// 4: descriptor check bits seeded (a zeroed descriptor fails them), the slab
// digest kept up to date with every bitmap change. 5: new slabs' bitmap
// words carry their own check bits (slab_word: 56 objects per word); slabs
// of formats 2 to 4 keep their encoding under their legacy class index.
// 6: the memmap area (superblock::memmap_area): every span's memmap block
// at a fixed place in front of the memory, so present memory is contiguous.
// 7: movable objects: slabs of state movable_slab, whose objects each begin
// with a movable_header naming their owner, in movable pageblocks (which no
// longer take page-sized extents of ordinary objects: those go to
// unmovable pageblocks).
// 8: members: other files or devdax devices mapped into the heap's range,
// each a run of 1 GiB spans of its own node, recorded in the superblock
// (member_record) and labelled on the member itself (member_label).
inline constexpr std::uint32_t format_version = 8;
inline constexpr std::uint32_t oldest_upgradable_version = 2;  // daxalloc::upgrade converts it
inline constexpr std::uint64_t superblock_offset[2] = {0, 4096};
inline constexpr std::uint64_t intent_offset = 8192;
inline constexpr std::uint64_t root_slot_offset = 8192 + 64;  // heap layer: the root object
inline constexpr std::uint64_t names_slot_offset =
    8192 + 128;  // heap layer: offset of the name table (copy A)
// In the slot page (geometry::slots_offset()): copy B of each slot.
inline constexpr std::uint64_t root_slot_b_in_page = 0;
inline constexpr std::uint64_t names_slot_b_in_page = 64;
static_assert(names_slot_offset % 16 == 0 && names_slot_b_in_page % 16 == 0,
              "a name-table slot copy is 16-byte aligned (heap_impl::names_slot_word)");
inline constexpr std::uint64_t directory_offset = 12288;
inline constexpr std::uint64_t root_page_size = 4096;
inline constexpr std::uint64_t memmap_block_size = subsection_size;  // 2 MiB blocks

// Fletcher-64 over 32-bit little-endian words, as the kernel's nd_fletcher64.
// Fed piecewise (each piece a multiple of 4 bytes) it gives the same sum as
// over the concatenation, so records need not be copied together first.
struct fletcher64_sum {
  std::uint32_t lo = 0;
  std::uint64_t hi = 0;
  void add(const void* data, std::size_t len) noexcept;  // (fletcher.cpp)
  [[nodiscard]] std::uint64_t value() const noexcept { return hi << 32 | lo; }
};
[[nodiscard]] inline std::uint64_t fletcher64(const void* data, std::size_t len) {
  fletcher64_sum sum;
  sum.add(data, len);
  return sum.value();
}

// Section state bits in the low bits of section_record::section_mem_map, as in
// the kernel's mem_section (the high bits hold the memmap offset, which is
// 2 MiB aligned, so 21 low bits are free).
enum section_flags : std::uint64_t {
  section_marked_present = 1u << 0,  // at least one subsection present
  section_has_mem_map = 1u << 1,     // the memmap offset is valid
  section_is_online = 1u << 2,       // its free pages are available to the allocators
  section_taint_partial = 1u << 4,   // only some subsections present (TAINT_ZONE_DEVICE)
  section_flags_mask = (1u << 5) - 1,
};
inline constexpr std::uint64_t section_memmap_mask = ~(memmap_block_size - 1);

// Pageblock migratetypes: what a 2 MiB pageblock holds. Numbered like the
// kernel's where the meaning matches (UNMOVABLE 0, MOVABLE 1, RECLAIMABLE 2,
// ISOLATE 5); the skip bit is bit 3 of the 4-bit field.
enum class migratetype : std::uint8_t {
  unmovable = 0,  // slabs and page-sized extents of ordinary objects: never moved
  movable = 1,    // slabs of movable objects (format 6: page-sized allocations)
  large = 2,      // extents of large objects spanning pageblocks (kernel: RECLAIMABLE)
  metadata = 3,   // the head and memmap blocks: never allocatable
  isolate = 5,    // must not be allocated from: being offlined or holding bad blocks
};
inline constexpr std::uint8_t migratetype_mask = 0x7;
inline constexpr std::uint8_t pageblock_skip_bit = 0x8;  // compaction skip (PB_migrate_skip)
[[nodiscard]] constexpr bool is_valid_migratetype(unsigned v) {
  return v <= 3 || v == 5;
}

// A member of the heap (format 8): another file or devdax device mapped at
// [offset, offset + size) of the heap's range. Its first 2 MiB hold its
// label and are never memory; the rest is memory of the node it records,
// added as any span (hot_add) and removed the same way. The superblock
// holds the records; a record changes only with a superblock update.
inline constexpr std::size_t max_members = 8;
inline constexpr std::uint64_t member_alignment = std::uint64_t{1} << 30;  // a memmap span
inline constexpr std::uint64_t member_label_size = subsection_size;        // its first 2 MiB
enum member_state : std::uint32_t {
  member_adding = 1,  // recorded, its memory maybe not all added yet: open finishes the add
  member_online = 2,
};
struct member_record {
  std::uint64_t offset;    // member_alignment aligned, beyond the head and memmap area
  std::uint64_t size;      // the label's 2 MiB and the memory after it; 2 MiB multiple
  std::uint8_t uuid[16];   // its label's
  std::int32_t node;       // NUMA node of the device when added (-1 unknown)
  std::uint32_t kind;      // daxalloc::region_kind when added
  std::uint32_t state;     // member_state
  std::uint32_t reserved;  // zero
  char path[208];          // where it was when last opened, NUL-terminated
};
static_assert(sizeof(member_record) == 256);

// The label at a member's first byte: which heap it belongs to and where.
struct member_label {
  char magic[16];  // member_magic
  std::uint8_t heap_uuid[16];
  std::uint8_t uuid[16];
  std::uint64_t offset;  // as its record
  std::uint64_t size;
  std::uint8_t reserved[184];  // zero
  std::uint64_t checksum;      // Fletcher-64 of the 256 bytes with this field zero
};
static_assert(sizeof(member_label) == 256);
inline constexpr char member_magic[16] = "DAXALLOC-MEMBER";

// The superblock, 4 KiB, two copies. Written only at create and when the
// heap layer records a clean/unclean shutdown; an update writes copy A,
// persists it, then copy B, so one copy is intact after any failure. The copy
// with the valid checksum and the higher generation wins at open.
struct superblock {
  char magic[16];
  std::uint32_t version;  // format_version of the writer
  std::uint32_t flags;    // none defined yet: must be zero
  std::uint8_t uuid[16];
  std::uint64_t generation;           // incremented by every update
  std::uint32_t page_shift;           // 12
  std::uint32_t subsection_shift;     // 21
  std::uint32_t section_size_bits;    // 27..30
  std::uint32_t descriptor_size;      // sizeof(page_descriptor)
  std::uint32_t section_record_size;  // bytes per section record
  std::uint32_t sections_per_root;
  std::uint64_t max_range;  // reserved address range in bytes, multiple of the section size
  std::uint64_t head_size;  // bytes before the first memory, multiple of 2 MiB
  std::uint64_t nr_roots;
  std::uint64_t roots_offset;
  std::uint64_t lanes_offset;
  std::uint64_t nr_lanes;
  std::uint64_t create_time;     // seconds since the epoch
  std::uint64_t shutdown_state;  // owned by the heap layer (clean/unclean)
  // Format 6: offset of the memmap area (head_size), or 0: every span's
  // memmap block lies inside the span (heaps upgraded from format 5 and older).
  std::uint64_t memmap_area;
  // Format 8: the members, in the order they were added; records from
  // nr_members on are zero.
  std::uint32_t nr_members;
  std::uint32_t reserved32;  // zero
  member_record members[max_members];
  std::uint8_t reserved[1888];  // zero
  std::uint64_t checksum;       // Fletcher-64 of the 4 KiB with this field zero
};
static_assert(sizeof(superblock) == 4096);
static_assert(offsetof(superblock, checksum) == 4088);

// The hotplug intent: a redo record for hot-add and hot-remove, whose
// application writes many words in several section records. Written and
// persisted before any record changes (the commit point of the operation is
// the durable store of this line with a valid checksum); cleared (op and
// checksum zeroed, then persisted) after the records are persisted. Open
// redoes a valid intent.
struct hotplug_intent {
  std::uint64_t op;        // 0 none, 1 add, 2 remove
  std::uint64_t start;     // byte offset, 2 MiB aligned
  std::uint64_t length;    // bytes, multiple of 2 MiB
  std::uint64_t sequence;  // incremented per operation (distinguishes stale records)
  std::uint64_t reserved[3];
  std::uint64_t checksum;  // Fletcher-64 of the first 56 bytes
};
static_assert(sizeof(hotplug_intent) == 64);
enum hotplug_op : std::uint64_t { hotplug_none = 0, hotplug_add = 1, hotplug_remove = 2 };

// The root object's slot (heap layer), kept twice: copy A in the intent page
// after the intent, copy B in the slot page. A copy is empty (all four words
// zero) or valid (checksum matches, reserved zero); anything else is damage.
// Written once, when the root is created: the zeroed object, then copy A
// persisted, then copy B persisted, then the object's allocation. A slot only
// ever goes from empty to one value, so of two copies that check out a
// non-empty one wins over an empty one, and two different non-empty copies
// are damage. open re-marks the allocation of the chosen slot, so the root is
// never leaked nor dangling.
struct root_slot {
  std::uint64_t offset;    // of the root object in the region; 0: no root
  std::uint64_t size;      // bytes
  std::uint64_t checksum;  // Fletcher-64 of offset and size
  std::uint64_t reserved;  // zero
};
static_assert(sizeof(root_slot) == 32);
[[nodiscard]] inline bool root_slot_empty(const root_slot& s) noexcept {
  return s.offset == 0 && s.size == 0 && s.checksum == 0 && s.reserved == 0;
}
[[nodiscard]] inline bool root_slot_valid(const root_slot& s) noexcept {
  return s.reserved == 0 && s.checksum != 0 && s.checksum == fletcher64(&s, 16);
}

// The name-table slot (heap layer), kept twice: copy A at names_slot_offset,
// copy B in the slot page. `check` is names_slot_check(offset), so one 8-byte
// store cannot make a copy that checks out with another offset; {0, 0} is
// empty (no named object was ever created). Both copies change only in a
// published batch that stores all four words (a redo lane: replay finishes
// it), so after open's lane replay two copies that check out are equal, or
// one is empty (zeroed by damage: the table only ever goes from none to one).
struct names_slot {
  std::uint64_t offset;  // of the name table in the region; 0: none
  std::uint64_t check;   // names_slot_check(offset); 0 when offset is 0
};
static_assert(sizeof(names_slot) == 16);
[[nodiscard]] constexpr std::uint64_t names_slot_check(std::uint64_t offset) noexcept {
  if (offset == 0) return 0;
  std::uint64_t z = offset ^ 0x6e616d65736c6f74ull;  // "namesl" "ot": a mix, never 0 below
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return z | 1;
}
[[nodiscard]] constexpr bool names_slot_empty(const names_slot& s) noexcept {
  return s.offset == 0 && s.check == 0;
}
[[nodiscard]] constexpr bool names_slot_valid(const names_slot& s) noexcept {
  return s.offset != 0 && s.check == names_slot_check(s.offset);
}

enum shutdown_state : std::uint64_t { shutdown_clean = 0, shutdown_open = 1 };

// The unsafe-shutdown record (heap layer; PMDK's shutdown_state), in the slot
// page at shutdown_record_in_page: what the DIMMs behind the region said at
// the last read-write open. All zero is "no record" (a heap made before it
// existed, or on media without DIMM counts): nothing to compare. Otherwise
// valid when `checksum` matches; anything else is damage, which open ignores
// (no detection) and rewrites. Every read-write open writes the current
// state before it marks the heap open: the four words, then one persist of
// the cache line (the record is 32-byte aligned, in one line), so a crash
// leaves the old record, the new one, or a torn one (ignored). Not part of
// the format version: older daxallocs of format 6 never read these bytes.
// Unsafe shutdown = the heap was not closed cleanly (superblock
// shutdown_state) and the record is valid and id_checksum or
// unsafe_shutdowns differs from what the DIMMs report now.
inline constexpr std::uint64_t shutdown_record_in_page = 128;
struct shutdown_record {
  std::uint64_t unsafe_shutdowns;  // sum of the DIMMs' dirty-shutdown counts
  std::uint64_t id_checksum;       // shutdown_id_checksum(the DIMMs' unique ids)
  std::uint64_t flags;             // shutdown_recorded, or 0 (a zero record)
  std::uint64_t checksum;          // Fletcher-64 of the first 24 bytes; 0 in a zero record
};
static_assert(sizeof(shutdown_record) == 32);
static_assert(shutdown_record_in_page % 64 + sizeof(shutdown_record) <= 64,
              "the record lies in one cache line");
static_assert(shutdown_record_in_page >= names_slot_b_in_page + sizeof(names_slot));
inline constexpr std::uint64_t shutdown_recorded = 1;

// Redo-log lanes (heap layer). A batch is written to a lane (header,
// entries, and the bytes of its reserved objects inline after the entries)
// and flushed; the fence that follows is the commit: from then on the lane
// has a valid checksum over sequence, count, entries and inline bytes. Then
// the batch is applied and its targets flushed without a fence of their own;
// a later fence of the heap (any thread's) makes them durable, and only
// after that fence is the lane retired (count and checksum zeroed), which a
// fence after that makes durable. So a crash may leave several committed
// lanes: open replays every valid one in commit order (`sequence` is
// heap-wide and increasing, or a valid `reorder` word replaces it), which
// ends with what the last applied batch wrote, and skips what a later lane
// shows was freed and allocated again. Actions are idempotent 8-byte stores,
// bit sets or clears and inline content copies, so replaying a partly
// applied batch is safe. docs/crash-consistency.md has the whole argument.
//
// Range writes (format 4) are content entries too, after the objects':
// their bytes are copied to their place after the commit, and again by a
// replay.
//
// A batch whose inline bytes do not fit one lane spans several consecutive
// lanes: the first holds the header and entries, each following one starts
// with a continuation header (count 0, checksum lane_continuation) and holds
// more inline bytes. A batch whose objects are larger still (more than
// max_logged_content) has them fenced before its lane is written, and logs
// no content.
//
// Lanes written before format 2 lanes existed (`format` 0) name their
// objects with content entries whose bytes the checksum covers in place;
// open still replays them (in lane order: they were never left several).
inline constexpr std::uint64_t nr_lanes = 64;
inline constexpr std::uint64_t lane_size = 4096;
struct lane_header {
  std::uint64_t sequence;  // heap-wide commit order (format 0: per lane)
  std::uint64_t count;     // entries in use, 1..max_log_entries; 0: empty
  std::uint64_t checksum;  // Fletcher-64 of sequence, count, entries, inline bytes; 0: empty
  std::uint64_t format;    // lane_format_inline, or 0 (content checked in place)
  std::uint64_t reorder;   // 0, or a later commit order with its check bits (reorder_word)
  std::uint64_t reserved[3];
};
struct log_entry {
  std::uint64_t target;  // byte offset in the region | op << 62
  std::uint64_t value;   // the value to store, or the bit mask
};
static_assert(sizeof(lane_header) == 64 && sizeof(log_entry) == 16);
enum log_op : std::uint64_t {
  log_store = 0,
  log_set_bits = 1,
  log_clear_bits = 2,
  log_content = 3,  // value: length in bytes; format 2: copied from the inline bytes
};
inline constexpr unsigned log_op_shift = 62;
inline constexpr std::size_t max_log_entries =
    (lane_size - sizeof(lane_header)) / sizeof(log_entry);
inline constexpr std::uint64_t max_logged_content = 4096;  // of reserved objects
// The inline bytes of one batch at most (format 4): its objects' logged
// contents and 64 KiB of range writes (batch::write), 18 lanes.
inline constexpr std::uint64_t max_inline_bytes = max_logged_content + 64 * 1024;
inline constexpr std::uint64_t lane_format_inline = 0x326e616c78616400;  // "\0daxlan2"
inline constexpr std::uint64_t lane_continuation = 0x746e6f636e616c00;   // "\0lancont"
// A reorder word: the new commit order (48 bits) and 16 check bits, one
// 8-byte store (an out-of-order apply moves its lane after the one it met).
[[nodiscard]] constexpr std::uint64_t reorder_word(std::uint64_t order,
                                                   std::uint64_t checksum) noexcept {
  const std::uint64_t mix = (order ^ checksum) * 0x9e3779b97f4a7c15ull;
  return order << 16 | (mix >> 48);
}

// One section record (the kernel's mem_section with its usage inline), in a
// root page. Its size depends on the geometry (section_record_words()):
//   word 0                     section_mem_map: memmap block offset | section_flags
//   words 1 .. m               subsection_map, bit i = subsection i present
//   words m+1 .. m+f           pageblock flags, 4 bits per pageblock (16 per word)
// padded with zero words to a power of two. A record changes only through the
// hotplug intent (all words), or one pageblock-flags word at a time by
// compare-and-swap followed by a persist of that word.
inline constexpr unsigned section_record_words(unsigned section_size_bits) {
  const unsigned subsections = 1u << (section_size_bits - subsection_shift);
  const unsigned map_words = (subsections + 63) / 64;
  const unsigned flag_words = subsections * nr_pageblock_bits / 64;
  return std::bit_ceil(1 + map_words + flag_words);
}
static_assert(section_record_words(27) * 8 == 64);
static_assert(section_record_words(30) * 8 == 512);

// The struct page analogue: one per 4 KiB page, 8 bytes, stored in memmap
// blocks on the device. `info` is the page's whole allocation state in one
// 8-byte word, so one store commits a change of it (8-byte stores are
// failure-atomic):
//   bits 0..7    page_state
//   bits 8..15   size class (slab pages) or owner kind (extent heads)
//   bits 16..55  length in pages (of the extent or slab whose first page this is)
//   bits 56..63  check bits: the XOR of bytes 0..6 and of check_seed,
//                written in the same store, so any single flipped bit of a
//                descriptor shows, and so does a zeroed one (format 4: the
//                free descriptor is check_seed << 56, not 0, and a memmap
//                is written when its memory is hot-added)
// Two states carry a digest:
//   slab head:   bits 16..31 the length, bits 32..55 the digest of its bitmap:
//                the XOR of slab_bit_digest(i) over the objects i whose bits
//                are set. A legacy slab (format 4 and older): every bitmap
//                change XORs the same value into the head descriptor with
//                one atomic RMW before the fence that commits it; the two
//                words are not written in one store, so after a crash they
//                may disagree by the bits of the changes in flight
//                (heap_impl::reconcile_slabs). A format 5 slab: recorded at
//                a clean close and checked at the next open after one, as a
//                memmap page's digest (its words check themselves always).
//   memmap page: bits 8..55 a digest of the memmap page it is (the 512
//                descriptors of one pageblock, and that pageblock's flags),
//                recorded at a clean close, checked at the next open when
//                the heap was closed cleanly, stale while it is open; 0:
//                never recorded, nothing to check.
// The sparse layer writes only the states free, reserved and memmap; the
// allocators document what commits theirs.
enum class page_state : std::uint8_t {
  free = 0,           // available, or a tail page of an extent or slab
  reserved = 1,       // the head: superblocks, intent, directory, root pages
  memmap = 2,         // holds page descriptors
  extent = 16,        // first page of an allocated extent of `length` pages
  slab = 17,          // first page of a slab of small objects (its other pages stay free)
  movable_slab = 18,  // format 7: the same, of movable objects (each after a movable_header)
};
[[nodiscard]] constexpr bool is_slab(page_state s) noexcept {
  return s == page_state::slab || s == page_state::movable_slab;
}

struct page_descriptor {
  std::uint64_t info;

  // Other threads may read a descriptor (probing for a slab head) while its
  // owner changes it: every access to `info` is atomic.
  [[nodiscard]] std::uint64_t load() const noexcept {
    return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(info))
        .load(std::memory_order_acquire);
  }
  void store(std::uint64_t value) noexcept {
    std::atomic_ref<std::uint64_t>(info).store(value, std::memory_order_release);
  }
  [[nodiscard]] page_state state() const noexcept { return static_cast<page_state>(load() & 0xff); }
  [[nodiscard]] unsigned sub() const noexcept {
    return static_cast<unsigned>((load() >> 8) & 0xff);
  }
  [[nodiscard]] std::uint64_t length() const noexcept {
    const std::uint64_t v = load();
    const std::uint64_t length = (v >> 16) & ((std::uint64_t{1} << 40) - 1);
    return is_slab(static_cast<page_state>(v & 0xff)) ? length & 0xffff  // digest above
                                                      : length;
  }
};
static_assert(sizeof(page_descriptor) == 8);

inline constexpr std::uint64_t max_page_length = (std::uint64_t{1} << 40) - 1;
inline constexpr unsigned descriptor_check_shift = 56;
inline constexpr std::uint64_t descriptor_data_mask =
    (std::uint64_t{1} << descriptor_check_shift) - 1;
inline constexpr std::uint64_t descriptor_check_seed = 0xa5;  // format 4 (format 3: 0)
// The XOR of bytes 0..6 of a descriptor's data (bits 0..55), unseeded: XOR
// linear, so a change of data by `delta` changes it by descriptor_fold(delta).
[[nodiscard]] constexpr std::uint64_t descriptor_fold(std::uint64_t data) noexcept {
  data &= descriptor_data_mask;
  data ^= data >> 32;
  data ^= data >> 16;
  data ^= data >> 8;
  return data & 0xff;
}
[[nodiscard]] constexpr std::uint64_t descriptor_check(std::uint64_t data) noexcept {
  return descriptor_fold(data) ^ descriptor_check_seed;
}
[[nodiscard]] constexpr std::uint64_t with_descriptor_check(std::uint64_t data) noexcept {
  return (data & descriptor_data_mask) | descriptor_check(data) << descriptor_check_shift;
}
[[nodiscard]] constexpr bool descriptor_checks_out(std::uint64_t info) noexcept {
  return info >> descriptor_check_shift == descriptor_check(info);
}
[[nodiscard]] constexpr std::uint64_t page_info(page_state state, unsigned sub = 0,
                                                std::uint64_t length = 0) {
  return with_descriptor_check(static_cast<std::uint64_t>(state) | std::uint64_t{sub & 0xff} << 8 |
                               (length & max_page_length) << 16);
}
// The free descriptor: not 0, so that a zeroed descriptor fails its check.
inline constexpr std::uint64_t free_descriptor = page_info(page_state::free);
static_assert(free_descriptor == descriptor_check_seed << descriptor_check_shift);

// Digests (see page_descriptor).
inline constexpr unsigned slab_digest_shift = 32;
inline constexpr std::uint64_t slab_digest_mask = 0xffffff;
inline constexpr unsigned memmap_digest_shift = 8;
inline constexpr std::uint64_t memmap_digest_mask = (std::uint64_t{1} << 48) - 1;
[[nodiscard]] constexpr std::uint64_t slab_digest(std::uint64_t info) noexcept {
  return (info >> slab_digest_shift) & slab_digest_mask;
}
[[nodiscard]] constexpr std::uint64_t with_slab_digest(std::uint64_t info,
                                                       std::uint64_t digest) noexcept {
  return with_descriptor_check((info & ~(slab_digest_mask << slab_digest_shift)) |
                               (digest & slab_digest_mask) << slab_digest_shift);
}
// The term of object i in its slab's digest: never 0, distinct for every
// i below 2^24 (an odd multiplier and xorshifts are bijections of 24-bit
// words), so one changed bit is told by its term alone.
[[nodiscard]] constexpr std::uint64_t slab_bit_digest(std::uint64_t i) noexcept {
  std::uint64_t x = (i + 1) & slab_digest_mask;
  x = (x * 0x9e3779) & slab_digest_mask;
  x ^= x >> 13;
  x = (x * 0x5bd1e9) & slab_digest_mask;
  x ^= x >> 11;
  return x;
}
// The inverse: the object whose term is `term` (a term of 0: none).
[[nodiscard]] constexpr std::uint64_t slab_bit_of_digest(std::uint64_t term) noexcept {
  constexpr auto inverse = [](std::uint64_t odd) {  // mod 2^24, by Newton's iteration
    std::uint64_t x = odd;
    for (int i = 0; i < 5; ++i) x = (x * (2 - odd * x)) & slab_digest_mask;
    return x;
  };
  std::uint64_t x = term & slab_digest_mask;
  x ^= x >> 11;
  x ^= x >> 22;
  x = (x * inverse(0x5bd1e9)) & slab_digest_mask;
  x ^= x >> 13;
  x = (x * inverse(0x9e3779)) & slab_digest_mask;
  return (x - 1) & slab_digest_mask;
}
static_assert(slab_bit_of_digest(slab_bit_digest(0)) == 0 &&
              slab_bit_of_digest(slab_bit_digest(4095)) == 4095 &&
              slab_bit_of_digest(slab_bit_digest(12345678)) == 12345678);
// The digest of a slab's bitmap: the terms of every object bit set in the
// words that hold its objects' bits (a stray bit past the objects counts
// too), `word_bits` objects per word (56: format 5, whose check bits do not
// count; 64: legacy).
[[nodiscard]] inline std::uint64_t slab_bitmap_digest(const std::uint64_t* bits,
                                                      std::uint32_t objects,
                                                      unsigned word_bits = 64) noexcept {
  const std::uint64_t object_bits =
      word_bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << word_bits) - 1;
  std::uint64_t digest = 0;
  for (std::uint32_t w = 0; std::uint64_t{w} * word_bits < objects; ++w)
    for (std::uint64_t word = std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(bits[w]))
                                  .load(std::memory_order_relaxed) &
                              object_bits;
         word; word &= word - 1)
      digest ^= slab_bit_digest(std::uint64_t{w} * word_bits +
                                static_cast<unsigned>(std::countr_zero(word)));
  return digest;
}
// The delta to XOR into a slab head descriptor (data and check bits) when
// the bits of the objects whose terms XOR to `digest_delta` change.
[[nodiscard]] constexpr std::uint64_t slab_digest_xor(std::uint64_t digest_delta) noexcept {
  const std::uint64_t data = (digest_delta & slab_digest_mask) << slab_digest_shift;
  return data | descriptor_fold(data) << descriptor_check_shift;
}
// Format 5 slab bitmap words: bits 0..55 stand for 56 objects, bits 56..63
// are the check bits of a Hsiao (64,56) code, the seed XOR a distinct
// weight-3 column per set object bit. Any one, two or three flipped bits
// of a word show, and so does a zeroed word (the empty word carries the
// seed). An object's bit and the check bits change together in one
// compare-and-swap of the word, so no crash leaves a word torn, and the
// change is a fixed XOR (slab_word_flip) that keeps a damaged word damaged.
inline constexpr unsigned slab_word_check_shift = 56;
inline constexpr std::uint64_t slab_word_data_mask = (std::uint64_t{1} << 56) - 1;
inline constexpr std::uint64_t slab_word_seed = 0xa5;
inline constexpr std::array<std::uint8_t, 56> slab_word_columns = [] {
  std::array<std::uint8_t, 56> c{};
  unsigned n = 0;
  for (unsigned v = 0; v < 256; ++v)
    if (std::popcount(v) == 3) c[n++] = static_cast<std::uint8_t>(v);
  return c;
}();
// The XOR of the columns of the set bits of each byte, per byte position.
inline constexpr auto slab_word_byte_folds = [] {
  std::array<std::array<std::uint8_t, 256>, 7> t{};
  for (unsigned b = 0; b < 7; ++b)
    for (unsigned v = 0; v < 256; ++v)
      for (unsigned bit = 0; bit < 8; ++bit)
        if (v >> bit & 1) t[b][v] ^= slab_word_columns[b * 8 + bit];
  return t;
}();
[[nodiscard]] constexpr std::uint64_t slab_word_fold(std::uint64_t data) noexcept {
  std::uint64_t x = 0;
  for (unsigned b = 0; b < 7; ++b) x ^= slab_word_byte_folds[b][(data >> (8 * b)) & 0xff];
  return x;
}
// The word whose object bits are `data`.
[[nodiscard]] constexpr std::uint64_t slab_word(std::uint64_t data) noexcept {
  return (data & slab_word_data_mask) | (slab_word_fold(data) ^ slab_word_seed)
                                            << slab_word_check_shift;
}
[[nodiscard]] constexpr bool slab_word_checks_out(std::uint64_t word) noexcept {
  return slab_word(word) == word;
}
// What to XOR into a word to flip its object bits `bits` (and their checks).
[[nodiscard]] constexpr std::uint64_t slab_word_flip(std::uint64_t bits) noexcept {
  return (bits & slab_word_data_mask) | slab_word_fold(bits) << slab_word_check_shift;
}
inline constexpr std::uint64_t empty_slab_word = slab_word(0);
static_assert(!slab_word_checks_out(0) && !slab_word_checks_out(~std::uint64_t{0}) &&
              slab_word_checks_out(empty_slab_word ^ slab_word_flip(1ull << 55)));

[[nodiscard]] constexpr std::uint64_t memmap_digest(std::uint64_t info) noexcept {
  return (info >> memmap_digest_shift) & memmap_digest_mask;
}
[[nodiscard]] constexpr std::uint64_t memmap_info(std::uint64_t digest) noexcept {
  return with_descriptor_check(static_cast<std::uint64_t>(page_state::memmap) |
                               (digest & memmap_digest_mask) << memmap_digest_shift);
}
// A digest of words (never 0 in its low `bits` bits): a multiply-xor hash.
[[nodiscard]] inline std::uint64_t words_digest(const std::uint64_t* words, std::size_t n,
                                                std::uint64_t seed, unsigned bits) noexcept {
  std::uint64_t h = seed ^ 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(words[i]))
             .load(std::memory_order_relaxed);
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  h ^= h >> 29;
  const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
  return (h & mask) ? (h & mask) : 1;
}

// Format 7: every object of a movable slab starts with this header, and
// the address the application holds is the one after it (a slot of the
// class's size holds the header and size - 16 bytes). `owner` is the
// offset from the heap's start of the one persistent word that refers to
// the object, with its encoding in the low bits (owner_pptr: a pptr, the
// distance from the word to the object; owner_offset: the object's offset
// from the heap's start); `check` ties the header to its place:
// movable_check(owner, object offset), so a header copied to another slot,
// or a flipped bit, shows. The header is written with the object, before
// the batch that publishes it commits, and rewritten by the batch that
// hands the object to another owner.
struct movable_header {
  std::uint64_t owner;
  std::uint64_t check;
};
static_assert(sizeof(movable_header) == 16);
inline constexpr std::uint64_t owner_pptr = 0, owner_offset = 1;
inline constexpr std::uint64_t owner_kind_mask = 7;
[[nodiscard]] constexpr std::uint64_t movable_check(std::uint64_t owner,
                                                    std::uint64_t object) noexcept {
  std::uint64_t h = owner * 0x9e3779b97f4a7c15ull ^ object ^ 0x6d6f7661626c6531ull;  // "movable1"
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  return h;
}

// Memmap: a span is the address range whose descriptors fill memmap blocks
// that are placed together. 2 MiB of 8-byte descriptors describe 1 GiB.
inline constexpr unsigned memmap_span_bits(unsigned section_size_bits) {
  constexpr unsigned block_describes_bits =
      subsection_shift + page_shift - std::countr_zero(sizeof(page_descriptor));  // 30
  return section_size_bits > block_describes_bits ? section_size_bits : block_describes_bits;
}

}  // namespace daxalloc::sparse
