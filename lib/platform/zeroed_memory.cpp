#include "platform/zeroed_memory.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "daxalloc/error.hpp"

namespace daxalloc::detail {
namespace {
constexpr std::size_t page = 4096;
}

zeroed_memory::zeroed_memory(std::size_t bytes) : size_((bytes + page - 1) / page * page) {
  if (size_ == 0) return;
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw error(errc::out_of_space, "cannot map " + std::to_string(size_) +
                                        " bytes for volatile tables: " + std::strerror(errno));
  // Sparse by design: a transparent huge page would turn one written entry
  // into 2 MiB of memory (seen with THP "always": the DRAM test failed).
  (void)madvise(p, size_, MADV_NOHUGEPAGE);
  data_ = p;
}

zeroed_memory::zeroed_memory(zeroed_memory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

zeroed_memory& zeroed_memory::operator=(zeroed_memory&& other) noexcept {
  if (this != &other) {
    if (data_) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

zeroed_memory::~zeroed_memory() {
  if (data_) munmap(data_, size_);
}

void zeroed_memory::zero(std::size_t offset, std::size_t len) noexcept {
  auto* p = static_cast<std::byte*>(data_);
  const std::size_t end = offset + len;
  const std::size_t first = (offset + page - 1) / page * page, last = end / page * page;
  if (first >= last) {  // no whole page inside
    std::memset(p + offset, 0, len);
    return;
  }
  std::memset(p + offset, 0, first - offset);
  // A private anonymous page given back reads as zeros again.
  if (madvise(p + first, last - first, MADV_DONTNEED) != 0) std::memset(p + first, 0, last - first);
  std::memset(p + last, 0, end - last);
}

}  // namespace daxalloc::detail
