// Reading, checking and writing the two superblock copies.
#pragma once

#include <optional>
#include <string>

#include "sparse/geometry.hpp"
#include "sparse/layout.hpp"

namespace daxalloc::sparse {

// Why a superblock copy cannot be used, or empty if it can. `newer` is set
// when the copy is intact but written by a newer format version.
[[nodiscard]] std::string superblock_problem(const superblock& sb, bool& newer);

// Fills the fields that follow from the geometry.
void superblock_set_geometry(superblock& sb, const geometry& geo);

void superblock_seal(superblock& sb);  // computes the checksum

}  // namespace daxalloc::sparse
