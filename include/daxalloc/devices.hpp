// DAX devices on this machine, as libdaxctl and libndctl see them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "daxalloc/export.h"
#include "daxalloc/version.hpp"

namespace daxalloc {

struct dax_device {
  std::string name;            // "dax0.0", or "pmem0" for an fsdax/raw namespace
  std::filesystem::path path;  // /dev/dax0.0, /dev/pmem0
  std::string mode;            // "devdax", "fsdax" or "raw"
  std::uint64_t size = 0;      // bytes usable
  std::uint64_t align = 0;     // mapping granularity in bytes (devdax), 0 if not applicable
  int numa_node = -1;          // -1 when unknown
  int region_id = -1;
};

// Every devdax device (libdaxctl) and every fsdax or raw pmem namespace
// (libndctl). A machine without DAX hardware gives an empty list, not an error.
// Threads: any number of calls at once (each makes its own library contexts).
[[nodiscard]] DAXALLOC_API std::vector<dax_device> list_devices();

}  // namespace daxalloc
