// Reading, checking and writing the two superblock copies.
#pragma once

#include <optional>
#include <string>

#include "sparse/geometry.hpp"
#include "sparse/layout.hpp"

namespace daxalloc::sparse {

// Why a superblock copy cannot be used, or empty if it can. `other_version`
// is set when the copy is intact but written by another format version (its
// `version` says whether newer or older): such a heap is refused, never
// misread as this version's layout, nor overwritten as if it were no heap.
[[nodiscard]] std::string superblock_problem(const superblock& sb, bool& other_version);

// Fills the fields that follow from the geometry.
void superblock_set_geometry(superblock& sb, const geometry& geo);

void superblock_seal(superblock& sb);  // computes the checksum

}  // namespace daxalloc::sparse
