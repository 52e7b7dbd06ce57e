#include "sparse/geometry.hpp"

#include "daxalloc/error.hpp"

namespace daxalloc::sparse {

std::string geometry::problem(unsigned section_size_bits, std::uint64_t max_range) {
  if (section_size_bits < min_section_size_bits || section_size_bits > max_section_size_bits)
    return "section size bits " + std::to_string(section_size_bits) + " outside " +
           std::to_string(min_section_size_bits) + ".." + std::to_string(max_section_size_bits);
  const std::uint64_t section = std::uint64_t{1} << section_size_bits;
  if (max_range == 0 || max_range % section)
    return "address range " + std::to_string(max_range) + " is not a positive multiple of the " +
           std::to_string(section >> 20) + " MiB section size";
  if (max_range > (std::uint64_t{1} << max_physmem_bits))
    return "address range " + std::to_string(max_range >> 30) + " GiB exceeds 2^" +
           std::to_string(max_physmem_bits) + " bytes (MAX_PHYSMEM_BITS)";
  return {};
}

geometry geometry::make(unsigned section_size_bits, std::uint64_t max_range) {
  if (auto why = problem(section_size_bits, max_range); !why.empty())
    throw error(max_range > (std::uint64_t{1} << max_physmem_bits) ? errc::too_large
                                                                   : errc::invalid_argument,
                "geometry: " + why);
  return geometry{section_size_bits, max_range};
}

}  // namespace daxalloc::sparse
