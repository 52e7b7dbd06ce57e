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

// Why the member records of a format 8 superblock cannot be: out of the
// range, unaligned, overlapping, of an unknown state; empty if they can.
[[nodiscard]] std::string member_records_problem(const superblock& sb, const geometry& geo);
void member_label_seal(member_label& l);  // computes the checksum

// The copy to use, given each copy's problem (empty: usable): of two usable
// copies the higher generation (A on a tie), else the usable one; -1: none.
// `copies` and `problem` hold two each (A, B).
[[nodiscard]] int superblock_winner(const superblock* copies, const std::string* problem);

}  // namespace daxalloc::sparse
