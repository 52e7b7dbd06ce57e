// Converting a heap of an older format version in place (`daxalloc upgrade`).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daxalloc/region.hpp"

namespace daxalloc::sparse {

// Converts the format 2 to 6 heap in `r` (opened read-write, not
// reserved by anyone else) to this library's format, in place and
// crash-safely: every step is idempotent and the new superblocks are
// written last, so a crash leaves an old-format heap that upgrade converts
// again, or the new format. `slab_objects` is the object count of each of
// the n size classes in the old encoding (the allocator's legacy table: the
// slab bitmaps' lengths); a slab of class c becomes class n + c, the legacy
// twin. Returns what it did (empty: the heap already had this format).
// Refuses (errc::older_format, nothing written) a heap of another version,
// a format 2 or 3 one that was not closed cleanly (a pending hotplug intent
// or a non-empty redo lane: their records are the old format's; format 4's
// are this one's, and the next open recovers them), or a format 2 one whose
// head has no room for the slot page; errc::corrupt for damaged
// superblocks, and for a format 3 slab bitmap changed since a clean close.
std::vector<std::string> upgrade(region& r, std::span<const std::uint32_t> slab_objects);

}  // namespace daxalloc::sparse
