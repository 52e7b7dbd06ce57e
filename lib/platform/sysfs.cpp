#include "platform/sysfs.hpp"

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

}  // namespace daxalloc::sysfs
