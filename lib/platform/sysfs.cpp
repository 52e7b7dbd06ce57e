#include "platform/sysfs.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
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

}  // namespace daxalloc::sysfs
