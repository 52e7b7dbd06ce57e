// Converting a heap of an older format version in place (`daxalloc upgrade`).
#pragma once

#include <string>
#include <vector>

#include "daxalloc/region.hpp"

namespace daxalloc::sparse {

// Converts the format 2 heap in `r` (opened read-write, not reserved by
// anyone else) to this library's format, in place and crash-safely: every
// step is idempotent and the new superblocks are written last, so a crash
// leaves a format 2 heap that upgrade converts again, or the new format.
// Returns what it did (empty: the heap already had this format). Refuses
// (errc::older_format, nothing written) a heap of another version, one that
// was not closed cleanly (a pending hotplug intent or a non-empty redo lane:
// their records are format 2's), or one whose head has no room for the slot
// page; errc::corrupt for damaged superblocks.
std::vector<std::string> upgrade(region& r);

}  // namespace daxalloc::sparse
