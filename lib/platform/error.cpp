#include "daxalloc/error.hpp"

namespace daxalloc {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "daxalloc"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok:
        return "success";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::not_found:
        return "not found";
      case errc::permission_denied:
        return "permission denied";
      case errc::is_directory:
        return "is a directory";
      case errc::not_dax:
        return "not a DAX device or file";
      case errc::map_sync_unsupported:
        return "MAP_SYNC not supported";
      case errc::misaligned:
        return "misaligned";
      case errc::too_small:
        return "too small";
      case errc::too_large:
        return "too large";
      case errc::already_exists:
        return "already exists";
      case errc::busy:
        return "busy: opened by another process";
      case errc::not_present:
        return "not present";
      case errc::in_use:
        return "in use";
      case errc::out_of_space:
        return "out of space";
      case errc::corrupt:
        return "corrupt";
      case errc::newer_format:
        return "made by a newer format version";
      case errc::geometry_mismatch:
        return "geometry mismatch";
      case errc::io_error:
        return "I/O error";
      case errc::unsupported:
        return "unsupported";
      case errc::older_format:
        return "made by an older format version";
    }
    return "unknown daxalloc error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace daxalloc
