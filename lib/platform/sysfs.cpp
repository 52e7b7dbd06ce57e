#include "platform/sysfs.hpp"

#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <system_error>

namespace daxalloc::sysfs {

std::optional<std::string> read_attribute(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string value;
  if (!in || !std::getline(in, value)) return std::nullopt;
  return value;
}

dax_attributes probe_char_device(unsigned major, unsigned minor,
                                 const std::filesystem::path& root) {
  dax_attributes result;
  const auto dir = root / "dev/char" / (std::to_string(major) + ":" + std::to_string(minor));
  std::error_code ec;
  const auto subsystem = std::filesystem::read_symlink(dir / "subsystem", ec);
  result.subsystem = ec ? "unknown" : subsystem.filename().string();
  result.is_dax = result.subsystem == "dax";
  if (!result.is_dax) return result;
  const auto number = [](const std::optional<std::string>& text) -> std::size_t {
    if (!text) return 0;
    try {
      return std::stoull(*text, nullptr, 0);
    } catch (const std::exception&) {
      return 0;
    }
  };
  result.size = number(read_attribute(dir / "size"));
  result.align = number(read_attribute(dir / "align"));
  if (result.align == 0) result.align = std::size_t{2} << 20;
  return result;
}

backing_device backing_device_of(const std::filesystem::path& path,
                                 const std::filesystem::path& root) {
  backing_device result;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return result;
  const bool character = S_ISCHR(st.st_mode);
  const dev_t dev = character ? st.st_rdev : st.st_dev;
  if (major(dev) == 0) return result;  // tmpfs, overlay: no device
  std::error_code ec;
  auto dir = std::filesystem::canonical(
      root / (character ? "dev/char" : "dev/block") /
          (std::to_string(major(dev)) + ":" + std::to_string(minor(dev))),
      ec);
  if (ec) return result;
  if (!character && std::filesystem::exists(dir / "partition")) dir = dir.parent_path();
  result.name = dir.filename().string();
  const auto node = [](const std::optional<std::string>& text) -> std::optional<int> {
    if (!text) return std::nullopt;
    try {
      return std::stoi(*text);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  // A dax device has the attributes itself; a disk's are its device's.
  for (const auto& file : {dir / "numa_node", dir / "target_node", dir / "device/numa_node"})
    if (const auto n = node(read_attribute(file)); n && *n >= 0) {
      result.node = *n;
      break;
    }
  return result;
}

namespace {

// "0-2,4" -> {0, 1, 2, 4}: the kernel's cpulist/nodelist format.
std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    at = comma + 1;
    if (item.empty()) continue;
    try {
      const std::size_t dash = item.find('-');
      const int lo = std::stoi(item.substr(0, dash));
      const int hi = dash == std::string::npos ? lo : std::stoi(item.substr(dash + 1));
      for (int n = lo; n <= hi && n - lo < 4096; ++n) out.push_back(n);
    } catch (const std::exception&) {
      return {};
    }
  }
  return out;
}

}  // namespace

numa_topology read_numa_topology(const std::filesystem::path& root) {
  numa_topology t;
  const auto dir = root / "devices/system/node";
  if (const auto online = read_attribute(dir / "online")) t.nodes = parse_list(*online);
  if (t.nodes.empty()) t.nodes = {0};
  for (const int n : t.nodes) {
    std::vector<int> row;
    if (const auto text = read_attribute(dir / ("node" + std::to_string(n)) / "distance")) {
      std::istringstream in(*text);
      for (int d; in >> d;) row.push_back(d);
    }
    // The row lists every possible node; keep the online ones' columns.
    std::vector<int> kept;
    for (std::size_t j = 0; j < t.nodes.size(); ++j) {
      const auto col = static_cast<std::size_t>(t.nodes[j]);
      kept.push_back(col < row.size() ? row[col] : (t.nodes[j] == n ? 10 : 20));
    }
    t.distance.push_back(std::move(kept));
  }
  return t;
}

std::vector<int> numa_topology::fallback_order(int node) const {
  std::size_t i = 0;
  while (i < nodes.size() && nodes[i] != node) ++i;
  std::vector<int> order = nodes;
  if (i == nodes.size()) return order;  // an unknown node: every node, in number order
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const auto index = [&](int n) {
      return static_cast<std::size_t>(std::find(nodes.begin(), nodes.end(), n) - nodes.begin());
    };
    const int da = a == node ? -1 : distance[i][index(a)];
    const int db = b == node ? -1 : distance[i][index(b)];
    return da < db;
  });
  return order;
}

int current_node() noexcept {
  unsigned cpu = 0, node = 0;
  return getcpu(&cpu, &node) == 0 ? static_cast<int>(node) : 0;
}

}  // namespace daxalloc::sysfs
