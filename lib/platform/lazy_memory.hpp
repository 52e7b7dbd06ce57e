// Anonymous memory for volatile tables that are sized by an address range but
// used only where memory is present (the slab table, page shadows): the
// mapping reserves address space only (MAP_NORESERVE), and a page of it
// takes memory when it is first written, as the kernel's vmemmap is
// populated only for present sections.
#pragma once

#include <cstddef>
#include <utility>

namespace daxalloc::detail {

class lazy_memory {
 public:
  lazy_memory() noexcept = default;
  explicit lazy_memory(std::size_t bytes);  // zero-filled; std::bad_alloc when refused
  // Takes back a mapping that release() gave away (it is unmapped with this).
  lazy_memory(void* data, std::size_t bytes) noexcept : data_(data), size_(bytes) {}
  lazy_memory(lazy_memory&& other) noexcept;
  lazy_memory& operator=(lazy_memory&& other) noexcept;
  lazy_memory(const lazy_memory&) = delete;
  lazy_memory& operator=(const lazy_memory&) = delete;
  ~lazy_memory();

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // The caller owns the mapping from now on (and hands it back to a
  // lazy_memory to unmap it).
  [[nodiscard]] void* release() noexcept {
    size_ = 0;
    return std::exchange(data_, nullptr);
  }
  // Gives the pages wholly inside [offset, offset + bytes) back to the
  // kernel; they read as zero again.
  void discard(std::size_t offset, std::size_t bytes) noexcept;

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace daxalloc::detail
