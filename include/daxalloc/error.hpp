// One error type for the whole library: an error code in daxalloc's own
// category, carried by an exception whose message says which object, what was
// expected and what was found.
#pragma once

#include <string>
#include <system_error>

#include "daxalloc/export.h"
#include "daxalloc/version.hpp"

namespace daxalloc {

enum class errc {
  ok = 0,
  invalid_argument = 1,  // a caller passed something that can never work
  not_found,             // no such file or device
  permission_denied,     // the OS refused access
  is_directory,          // a directory where a file or device was expected
  not_dax,               // DAX (MAP_SYNC or devdax) required but absent
  map_sync_unsupported,  // the file system refused MAP_SYNC (EOPNOTSUPP)
  misaligned,            // offset, size or address not a multiple of the required alignment
  too_small,             // region too small for what was asked
  too_large,             // beyond the device size or the reserved address range
  already_exists,        // creating over an existing heap, or overlapping a present span (EEXIST)
  busy,                  // the heap is open elsewhere (lock held), or memory is pinned
  not_present,           // removing or using a span that is not present
  in_use,                // removing a span that still holds allocations or metadata
  out_of_space,          // no free memory for the request
  corrupt,               // media content fails a check (checksum, bounds, invariant)
  newer_format,          // made by a newer daxalloc
  geometry_mismatch,     // open asked for a geometry the heap was not created with
  io_error,              // a system call failed for another reason
  unsupported,           // not possible on this kind of region
  older_format,          // made by an older daxalloc whose format this one cannot read
  read_only,             // a call that writes, on a heap opened read-only
  media_error,           // a load from the media faulted (poison, a bad block): SIGBUS caught
  unsafe_shutdown,       // the device lost power with the heap open and its caches dirty
};

// The category of daxalloc's codes. Its default_error_condition maps each code
// to the std::errc with the same meaning where one exists (already_exists ->
// file_exists, busy -> device_or_resource_busy, out_of_space ->
// not_enough_memory, ...; docs/api.md has the table), so portable code can test
// `ec == std::errc::file_exists`; codes without one (corrupt, newer_format,
// older_format) stay in this category.
[[nodiscard]] DAXALLOC_API const std::error_category& error_category() noexcept;

// The enumerator's name: "already_exists"; "unknown" for a value outside the enum.
[[nodiscard]] DAXALLOC_API const char* to_string(errc code) noexcept;

// The full message (what() of the exception the throwing form would have
// thrown) of the last error this thread's non-throwing calls reported through
// a std::error_code; empty before the first.
[[nodiscard]] DAXALLOC_API const std::string& last_error_message() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// Thrown by every daxalloc function that can fail outside the allocation fast
// path. code() is in daxalloc's category; what() is the full message.
// Threads: immutable once thrown; any number of threads may read one.
class DAXALLOC_API error : public std::system_error {
 public:
  error(errc code, const std::string& message)
      : std::system_error(make_error_code(code), message) {}
  [[nodiscard]] errc code_value() const noexcept { return static_cast<errc>(code().value()); }
};

}  // namespace daxalloc

template <>
struct std::is_error_code_enum<daxalloc::errc> : std::true_type {};
