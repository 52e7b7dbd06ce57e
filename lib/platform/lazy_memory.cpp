#include "platform/lazy_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <new>
#include <utility>

namespace daxalloc::detail {

lazy_memory::lazy_memory(std::size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = p;
}

lazy_memory::lazy_memory(lazy_memory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

lazy_memory& lazy_memory::operator=(lazy_memory&& other) noexcept {
  if (this != &other) {
    this->~lazy_memory();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

lazy_memory::~lazy_memory() {
  if (data_) ::munmap(data_, size_);
}

void lazy_memory::discard(std::size_t offset, std::size_t bytes) noexcept {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t from = (offset + page - 1) / page * page, to = (offset + bytes) / page * page;
  if (data_ && from < to && to <= size_)
    ::madvise(static_cast<char*>(data_) + from, to - from, MADV_DONTNEED);
}

}  // namespace daxalloc::detail
