// Reading what the kernel says about a character device (internal to the
// platform layer). The sysfs root is a parameter so tests can point it at a
// fake tree.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

namespace daxalloc::sysfs {

struct dax_attributes {
  bool is_dax = false;
  std::string subsystem;  // basename of the device's subsystem link ("dax", "tty", ...)
  std::size_t size = 0;   // bytes
  std::size_t align = 0;  // mapping granularity in bytes
};

// Recognises a device-DAX character device from /sys/dev/char/MAJ:MIN: its
// subsystem is "dax"; size and align come from the same directory (an absent
// align attribute, as on kernels before 5.10, means the 2 MiB default).
[[nodiscard]] dax_attributes probe_char_device(unsigned major, unsigned minor,
                                               const std::filesystem::path& root = "/sys");

[[nodiscard]] std::optional<std::string> read_attribute(const std::filesystem::path& file);

}  // namespace daxalloc::sysfs
