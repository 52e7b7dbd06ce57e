// Volatile tables sized by a heap's address range (the page allocator's
// per-page shadow, its per-pageblock table and pool bitmap, the slab table): anonymous memory
// that reads as zeros and takes DRAM only in the pages that are written, so a
// table for 1 TiB of address space costs what the present memory uses of it.
// Internal to the library; the one place above region.cpp that maps memory.
#pragma once

#include <cstddef>
#include <utility>

namespace daxalloc::detail {

class zeroed_memory {
 public:
  zeroed_memory() = default;
  // MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE: no commit charge for the
  // untouched part (except under vm.overcommit_memory=2, which ignores
  // NORESERVE). errc::out_of_space when the address space is refused.
  explicit zeroed_memory(std::size_t bytes);
  // Takes back a mapping that release() gave away (it is unmapped with this).
  zeroed_memory(void* data, std::size_t bytes) noexcept : data_(data), size_(bytes) {}
  zeroed_memory(zeroed_memory&& other) noexcept;
  zeroed_memory& operator=(zeroed_memory&& other) noexcept;
  zeroed_memory(const zeroed_memory&) = delete;
  zeroed_memory& operator=(const zeroed_memory&) = delete;
  ~zeroed_memory();

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // The caller owns the mapping from now on (and hands it back to a
  // zeroed_memory to unmap it).
  [[nodiscard]] void* release() noexcept {
    size_ = 0;
    return std::exchange(data_, nullptr);
  }
  // Makes [offset, offset + len) zero again, giving the whole pages inside it
  // back to the kernel (MADV_DONTNEED) and clearing the partial ones.
  void zero(std::size_t offset, std::size_t len) noexcept;

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace daxalloc::detail
