// The input formats of the harnesses: how bytes become edits of a heap image
// (image), API calls (ops, crash) and a crash state (crash). The harnesses
// decode with these functions and fuzz/make_corpus.cpp encodes seeds with
// them, so the two cannot drift apart.
#pragma once

#include <cstdint>

#include "fuzz_common.hpp"

namespace fuzz {

inline constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
inline constexpr std::uint64_t GiB = std::uint64_t{1} << 30;

// ---- image ----
//
//   byte        base image (modulo nr_image_bases), or image_overlay_mode; with
//               image_reopen_bit the heap is closed and opened again after the workload
//   edits...    up to max_image_edits, each: below(image_edit_count) kind, then its fields
//
// In overlay mode the rest of the input is copied over base 0 from offset 0
// (superblocks, intent, directory): raw bytes, optionally resealed.
inline constexpr unsigned nr_image_bases = 4;
inline constexpr std::uint8_t image_overlay_mode = 0xff;
inline constexpr std::uint8_t image_reopen_bit = 0x40;
inline constexpr unsigned max_image_edits = 24;

enum class image_edit : std::uint8_t {
  superblock_field,     // copies(below 3: A, B, both) field(below nr) value reseal(bool)
  superblock_geometry,  // copies section_size_bits(in 26..31) max_range(value) reseal(bool)
  intent,               // field(below 8: op,start,length,sequence,res0..2,checksum) value reseal
  directory_entry,      // root(below nr_roots + 2) value
  section_word,         // section(pick) word(below record words) value
  descriptor_info,      // pfn(pick) info(state, sub, length or value)
  descriptor_next,      // pfn(pick) value: the info word of the page after pfn (an extent tail
                        // when pfn heads one; format version 1 had pfn's `data` word here)
  slab_bitmap,          // slab(pick) word(below header/8 + 1) value
  root_slot,            // field(below 4) value reseal(bool)
  raw_xor,              // offset(pick) byte
  raw_bytes,            // offset(pick) n(below 65) bytes
  file_size,            // how(below 4) value
  copy_range,           // from(pick) to(pick) n(below 4097)
  lane,                 // lane(below 3) field(below 4) ... reseal(bool)
  count
};

// How an edit picks a 64-bit value: mode byte, then the mode's fields.
enum class value_mode : std::uint8_t {
  zero,
  one,
  ones,
  small,      // below(256)
  word,       // 8 bytes
  candidate,  // below(nr candidates): offsets and sizes that mean something in this image
  flip_bit,   // old ^ 1 << below(64)
  delta,      // old + in(0, 16) - 8
  count
};

// How an edit picks an offset in the image: mode byte, then the mode's fields.
enum class offset_mode : std::uint8_t {
  head,         // below(16 KiB): superblocks, intent, root slot, directory
  interesting,  // below(nr interesting) + in(0, 127) - 64: allocations, slabs, records, memmap
  anywhere,     // below(image size)
  count
};

// ---- ops and crash: API calls ----

enum class call_kind : std::uint8_t {
  allocate,        // size
  deallocate,      // index of a live object (modulo the live count)
  bad_deallocate,  // how(below 4): freed object, interior pointer, outside, null
  reserve,         // size
  cancel,          // index of a reservation
  root,            // size
  hot_add,         // first subsection, subsections, misalign flags
  hot_remove,      // first subsection, subsections, misalign flags
  reopen,          // close and open again
  check,           // heap::check() and a payload audit
  publish,         // size, slot of the root: allocate_publish into that pptr
  free_clear,      // slot of the root: free_clear of that pptr
  count
};

struct call {
  call_kind kind = call_kind::check;
  std::uint64_t size = 0;   // allocate, reserve, root: 1 B .. 8 MiB
  std::uint64_t index = 0;  // deallocate, cancel, bad_deallocate, publish and free_clear (slot)
  std::uint64_t first = 0;  // hotplug: subsection number (2 MiB units) below hotplug_subsections
  std::uint64_t count = 0;  // hotplug: 1..8 subsections
  std::uint8_t flags = 0;   // hotplug: bit 0 misaligns the start, bit 1 the length
};

inline constexpr std::uint64_t max_call_size = 8 * MiB;
// The harness heaps reserve 2 GiB: two memmap spans of 1 GiB, so that calls
// can add a span with its own memmap.
inline constexpr std::uint64_t driver_max_range = 2 * GiB;
inline constexpr std::uint64_t hotplug_subsections = driver_max_range / (2 * MiB);  // 1024

// Sizes: below(4) picks small (1..256), slab (1..64 KiB), pages (64 KiB..2 MiB) or
// large (2..8 MiB), then the size inside the band.
inline std::uint64_t decode_size(fuzz_input& in) {
  switch (in.below(4)) {
    case 0:
      return in.in(1, 256);
    case 1:
      return in.in(1, 64 * 1024);
    case 2:
      return in.in(64 * 1024 + 1, 2 * MiB);
    default:
      return in.in(2 * MiB + 1, max_call_size);
  }
}
inline void encode_size(fuzz_output& out, std::uint64_t size) {
  if (size <= 256)
    out.below(4, 0).in(1, 256, size);
  else if (size <= 64 * 1024)
    out.below(4, 1).in(1, 64 * 1024, size);
  else if (size <= 2 * MiB)
    out.below(4, 2).in(64 * 1024 + 1, 2 * MiB, size);
  else
    out.below(4, 3).in(2 * MiB + 1, max_call_size, size);
}

inline call decode_call(fuzz_input& in) {
  call c;
  c.kind = static_cast<call_kind>(in.below(static_cast<unsigned>(call_kind::count)));
  switch (c.kind) {
    case call_kind::allocate:
    case call_kind::reserve:
    case call_kind::root:
      c.size = decode_size(in);
      break;
    case call_kind::deallocate:
    case call_kind::cancel:
    case call_kind::free_clear:
      c.index = in.byte();
      break;
    case call_kind::publish:
      c.size = decode_size(in);
      c.index = in.byte();
      break;
    case call_kind::bad_deallocate:
      c.index = in.byte();
      c.flags = static_cast<std::uint8_t>(in.below(4));
      break;
    case call_kind::hot_add:
    case call_kind::hot_remove:
      c.first = in.below(hotplug_subsections);
      c.count = in.in(1, 8);
      c.flags = static_cast<std::uint8_t>(in.below(4) == 3 ? in.in(1, 3) : 0);
      break;
    default:
      break;
  }
  return c;
}

inline void encode_call(fuzz_output& out, const call& c) {
  out.below(static_cast<unsigned>(call_kind::count), static_cast<unsigned>(c.kind));
  switch (c.kind) {
    case call_kind::allocate:
    case call_kind::reserve:
    case call_kind::root:
      encode_size(out, c.size);
      break;
    case call_kind::deallocate:
    case call_kind::cancel:
    case call_kind::free_clear:
      out.byte(static_cast<std::uint8_t>(c.index));
      break;
    case call_kind::publish:
      encode_size(out, c.size);
      out.byte(static_cast<std::uint8_t>(c.index));
      break;
    case call_kind::bad_deallocate:
      out.byte(static_cast<std::uint8_t>(c.index)).below(4, c.flags);
      break;
    case call_kind::hot_add:
    case call_kind::hot_remove:
      out.below(hotplug_subsections, c.first).in(1, 8, c.count);
      if (c.flags)
        out.below(4, 3).in(1, 3, c.flags);
      else
        out.below(4, 0);
      break;
    default:
      break;
  }
}

// ---- ops ----
//
//   calls...   up to max_ops_calls, decode_call each
inline constexpr unsigned max_ops_calls = 64;

// ---- crash ----
//
//   below(max_setup_calls + 1) n, then n calls     setup: run and closed cleanly, not simulated
//   in(1, max_crash_calls) n, then n calls         run under the simulated persistence domain,
//                                                  after reopening (the open's fences count too)
//   below(max_crash_fence) fence                   crash before fence `fence + 1`; past the last
//                                                  fence: after the last
//   per dirty line (up to max_chosen_lines):       below(4): 0 lost, 1 and 3 reach the media,
//                                                  2 torn: byte mask of the 8-byte words
//   boolean: crash the recovery too, then          below(max_crash_fence) fence and the lines,
//                                                  as above, for the open of the crash image
inline constexpr unsigned max_setup_calls = 6;
inline constexpr unsigned max_crash_calls = 4;
inline constexpr unsigned max_crash_fence = 48;
inline constexpr unsigned max_chosen_lines = 48;

}  // namespace fuzz
