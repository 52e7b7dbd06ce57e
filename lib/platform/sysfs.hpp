// Reading what the kernel says about a character device (internal to the
// platform layer). The sysfs root is a parameter so tests can point it at a
// fake tree.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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

// The device behind a mapped path and its NUMA node: a devdax device's own
// (its numa_node, else target_node), or for a file the block device its
// file system lives on (a partition's disk): for pmemN, the namespace's
// node. node -1: none known (tmpfs, or no numa_node attribute).
struct backing_device {
  std::string name;  // "dax0.0", "pmem0", "vda"; empty for tmpfs and the like
  int node = -1;
};
[[nodiscard]] backing_device backing_device_of(const std::filesystem::path& path,
                                               const std::filesystem::path& root = "/sys");

// The machine's NUMA nodes as sysfs lists them (devices/system/node): each
// online node and its distance to every other (the SLIT row of nodeN/distance,
// 10 = local). A machine without the directory has one node, 0.
struct numa_topology {
  std::vector<int> nodes;                  // online, ascending
  std::vector<std::vector<int>> distance;  // distance[i][j] between nodes[i] and nodes[j]
  // Other nodes by distance from `node`, nearest first (ties: lower number),
  // `node` itself first: the kernel's zonelist fallback order.
  [[nodiscard]] std::vector<int> fallback_order(int node) const;
};
[[nodiscard]] numa_topology read_numa_topology(const std::filesystem::path& root = "/sys");
// The node of the CPU the calling thread runs on now (getcpu), 0 when unknown.
[[nodiscard]] int current_node() noexcept;

[[nodiscard]] std::optional<std::string> read_attribute(const std::filesystem::path& file);

}  // namespace daxalloc::sysfs
