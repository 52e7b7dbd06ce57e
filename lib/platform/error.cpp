#include "daxalloc/error.hpp"

#include <array>
#include <new>

#include "platform/error_report.hpp"

namespace daxalloc {
namespace {

// One row per errc, in enum order: its name, its message, and the std::errc
// it means (none: no POSIX error has its meaning).
struct errc_row {
  errc code;
  const char* name;
  const char* message;
  int condition;  // a std::errc value; 0: none
};

constexpr int none = 0;
constexpr int posix(std::errc e) {
  return static_cast<int>(e);
}

constexpr std::array errc_table{
    errc_row{errc::ok, "ok", "success", none},
    errc_row{errc::invalid_argument, "invalid_argument", "invalid argument",
             posix(std::errc::invalid_argument)},
    errc_row{errc::not_found, "not_found", "not found",
             posix(std::errc::no_such_file_or_directory)},
    errc_row{errc::permission_denied, "permission_denied", "permission denied",
             posix(std::errc::permission_denied)},
    errc_row{errc::is_directory, "is_directory", "is a directory",
             posix(std::errc::is_a_directory)},
    errc_row{errc::not_dax, "not_dax", "not a DAX device or file",
             posix(std::errc::no_such_device)},
    errc_row{errc::map_sync_unsupported, "map_sync_unsupported", "MAP_SYNC not supported",
             posix(std::errc::operation_not_supported)},
    errc_row{errc::misaligned, "misaligned", "misaligned", posix(std::errc::invalid_argument)},
    errc_row{errc::too_small, "too_small", "too small", posix(std::errc::invalid_argument)},
    errc_row{errc::too_large, "too_large", "too large", posix(std::errc::file_too_large)},
    errc_row{errc::already_exists, "already_exists", "already exists",
             posix(std::errc::file_exists)},
    errc_row{errc::busy, "busy", "busy: held elsewhere (a lock, or pins)",
             posix(std::errc::device_or_resource_busy)},
    errc_row{errc::not_present, "not_present", "not present",
             posix(std::errc::no_such_device_or_address)},
    errc_row{errc::in_use, "in_use", "in use", posix(std::errc::device_or_resource_busy)},
    errc_row{errc::out_of_space, "out_of_space", "out of space",
             posix(std::errc::not_enough_memory)},
    errc_row{errc::corrupt, "corrupt", "corrupt", none},
    errc_row{errc::newer_format, "newer_format", "made by a newer format version", none},
    errc_row{errc::geometry_mismatch, "geometry_mismatch", "geometry mismatch",
             posix(std::errc::invalid_argument)},
    errc_row{errc::io_error, "io_error", "I/O error", posix(std::errc::io_error)},
    errc_row{errc::unsupported, "unsupported", "unsupported", posix(std::errc::not_supported)},
    errc_row{errc::older_format, "older_format", "made by an older format version", none},
    errc_row{errc::read_only, "read_only", "the heap is open read-only",
             posix(std::errc::read_only_file_system)},
    errc_row{errc::media_error, "media_error", "media error: the load faulted",
             posix(std::errc::io_error)},
    errc_row{errc::unsafe_shutdown, "unsafe_shutdown",
             "unsafe shutdown: the device lost power with the heap open", none},
};
static_assert(
    [] {
      for (std::size_t i = 0; i < errc_table.size(); ++i)
        if (errc_table[i].code != static_cast<errc>(i)) return false;
      return true;
    }(),
    "errc_table is in enum order, one row per errc");

const errc_row* row_of(int value) noexcept {
  return value >= 0 && static_cast<std::size_t>(value) < errc_table.size() ? &errc_table[value]
                                                                           : nullptr;
}

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "daxalloc"; }
  std::string message(int value) const override {
    const errc_row* row = row_of(value);
    return row ? row->message : "unknown daxalloc error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    const errc_row* row = row_of(value);
    if (row == nullptr || row->code == errc::ok) return {value, *this};
    if (row->condition == none) return {value, *this};
    return {row->condition, std::generic_category()};
  }
  // Beyond the default condition: running out of space is also ENOSPC (a
  // file that cannot grow), as it is ENOMEM (no free memory in the heap).
  bool equivalent(int value, const std::error_condition& condition) const noexcept override {
    if (value == static_cast<int>(errc::out_of_space) && condition == std::errc::no_space_on_device)
      return true;
    return default_error_condition(value) == condition;
  }
};

thread_local std::string last_message;

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

const char* to_string(errc code) noexcept {
  const errc_row* row = row_of(static_cast<int>(code));
  return row ? row->name : "unknown";
}

const std::string& last_error_message() noexcept {
  return last_message;
}

namespace detail {

void report_error(std::error_code& ec, const std::error_code& code, const char* message) noexcept {
  ec = code;
  try {
    last_message = message;
  } catch (const std::bad_alloc&) {
    last_message.clear();  // the code is still reported; only the text is lost
  }
}

}  // namespace detail
}  // namespace daxalloc
