// A mapped DAX region: the bottom layer of daxalloc and the only one that
// touches a file descriptor, mmap or sysfs.
//
// A region reserves virtual address space for its maximum size when it is
// opened, so growing it never moves the mapping and pointers stay valid.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "daxalloc/export.h"
#include "daxalloc/persist.hpp"

namespace daxalloc {

enum class region_kind {
  devdax,     // /dev/daxX.Y: fixed size, mapped in units of the device's align
  fsdax,      // a file on a DAX file system: MAP_SYNC mapping succeeded
  file,       // a page-cache file (tmpfs, ext4 without dax): MAP_SYNC refused
  anonymous,  // volatile memory, for volatile heaps and tests
};
[[nodiscard]] DAXALLOC_API const char* to_string(region_kind kind) noexcept;

struct region_options {
  // Bytes to map. 0 maps what is there: the file's size, or the whole devdax
  // device. A larger size extends a file (sparsely); a devdax device cannot grow.
  std::size_t size = 0;
  // Address space reserved for growth; 0 means size. Capped at the device size
  // for devdax.
  std::size_t max_size = 0;
  bool create = false;       // create the file if it does not exist (never a device)
  bool must_be_new = false;  // with create: an existing file is errc::already_exists (O_EXCL)
  // With create: `size` applies only to a file this open creates, or finds
  // empty; an existing file is mapped at its own size. created() is decided
  // under the lock, so of two processes racing, exactly one sees it true.
  bool size_only_if_created = false;
  bool exclusive = true;  // take an exclusive lock: a second opener gets errc::busy
  // O_RDONLY and PROT_READ, with a shared lock: any number of read-only
  // openers, none while an exclusive one holds the region (errc::busy, both
  // ways). populate and truncate are errc::read_only; a store is a SIGSEGV.
  bool read_only = false;
  bool wait_for_lock = false;  // wait for the lock instead of failing with errc::busy
  bool require_dax = false;    // refuse a page-cache file (errc::map_sync_unsupported)
  // automatic: cache flushes for devdax/fsdax, msync for page-cache files unless
  // PMEM_IS_PMEM_FORCE=1; cache_flush on a page-cache file treats it as pmem.
  persistence_mode mode = persistence_mode::automatic;
};

// Another file or devdax device mapped into a region's reserved address
// space (region::attach): a member of a heap over several devices.
struct region_member {
  std::filesystem::path path;
  std::size_t offset = 0;  // where it begins, in the region's offsets
  std::size_t size = 0;    // bytes mapped (a file grows by populate, up to max_size)
  std::size_t max_size = 0;
  std::size_t align = 0;  // mapping granularity
  region_kind kind = region_kind::file;
  bool created = false;  // this attach created the file: it reads as zeros
};

// Threads: the const members may be called from any number of threads at
// once. populate, release, truncate, reserve and use_persistence change the
// mapping or its persistence: they need the region to themselves.
class DAXALLOC_API region {
 public:
  [[nodiscard]] static region open(const std::filesystem::path& path,
                                   const region_options& options = {});
  [[nodiscard]] static region anonymous(std::size_t size, std::size_t max_size = 0,
                                        persistence_mode mode = persistence_mode::none);

  region(region&& other) noexcept;
  region& operator=(region&& other) noexcept;
  region(const region&) = delete;
  region& operator=(const region&) = delete;
  ~region();

  [[nodiscard]] std::byte* base() const noexcept { return base_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t max_size() const noexcept { return max_size_; }
  [[nodiscard]] region_kind kind() const noexcept { return kind_; }
  // Mapping granularity: the devdax align, else the page size.
  [[nodiscard]] std::size_t align() const noexcept { return align_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  // This open created the file (or the region is anonymous): it reads as zeros.
  [[nodiscard]] bool created() const noexcept { return created_; }
  // Mapped PROT_READ from an O_RDONLY descriptor (region_options::read_only).
  [[nodiscard]] bool read_only() const noexcept { return read_only_; }
  // Whether [p, p+len) lies in what is mapped: the region's own file or
  // device, or one member.
  [[nodiscard]] bool contains(const void* p, std::size_t len = 1) const noexcept {
    auto b = reinterpret_cast<std::uintptr_t>(base_), q = reinterpret_cast<std::uintptr_t>(p);
    return (q >= b && len <= size_ && q - b <= size_ - len) ||
           (member_spans_[0].size.load(std::memory_order_acquire) != 0 &&
            member_contains(q - b, len));
  }

  [[nodiscard]] const persistence& persist() const noexcept { return persistence_; }
  // Test hook: route every flush and drain through another table (the crash
  // simulator). Not thread-safe against concurrent users of the region.
  void use_persistence(const persistence& p) noexcept { persistence_ = p; }

  // Makes [offset, offset+len) backed by storage, growing the file and the
  // mapping when it ends beyond size(). Returns true when the range is known
  // to read as zeros afterwards (it lay beyond the old end of a file, or the
  // region is anonymous); false means its old contents may still be there.
  // errc::too_large beyond max_size, errc::out_of_space when the file system is full.
  bool populate(std::size_t offset, std::size_t len);
  // Gives the storage of [offset, offset+len) back (punches a hole), when the
  // region kind allows; the range stays mapped and reads as zeros. Returns
  // whether storage was released.
  bool release(std::size_t offset, std::size_t len) noexcept;
  // Shrinks the file and the mapping to new_size (a file region only).
  void truncate(std::size_t new_size);
  // Reserves address space for max_size. A file region may then grow up to
  // it; a devdax region stays its device's size, and the rest is room for
  // members. Moves the mapping when the current reservation is smaller, so
  // it is meant for open time, before anyone holds pointers into the region
  // (errc::busy once a member is attached).
  void reserve(std::size_t max_size);

  // Members (a heap over several devices). attach opens `path` as open()
  // does (the options' locking, creation and size rules) and maps it at
  // [offset, offset + its max size) of this region's offsets, which must lie
  // in the reservation (reserve() it first), at or beyond size() and clear
  // of every other member, aligned to 2 MiB and to the member's align
  // (errc::invalid_argument, errc::misaligned otherwise). The region's own
  // file then grows (populate) only up to the lowest member above it.
  // Its persistence must resolve to this region's mode (a devdax or fsdax
  // member of a page-cache file region, or the reverse, is
  // errc::invalid_argument: one heap flushes one way). populate and release
  // of a range inside a member act on the member's file; a range may not
  // straddle a member's edge. detach unmaps the member at `offset` (the
  // address space stays reserved) and closes it.
  const region_member& attach(const std::filesystem::path& path, std::size_t offset,
                              const region_options& options = {});
  void detach(std::size_t offset);
  [[nodiscard]] std::vector<region_member> members() const;
  // The member holding [offset, offset + len), or nullptr.
  [[nodiscard]] const region_member* member_at(std::size_t offset,
                                               std::size_t len = 1) const noexcept;

 private:
  region() = default;
  DAXALLOC_LOCAL void map_range(std::size_t offset, std::size_t len);
  [[nodiscard]] DAXALLOC_LOCAL int protection() const noexcept;  // PROT_* of every mapping
  DAXALLOC_LOCAL void close() noexcept;
  struct member_state;  // region.cpp
  [[nodiscard]] bool member_contains(std::size_t offset, std::size_t len) const noexcept;
  [[nodiscard]] DAXALLOC_LOCAL member_state* member_of(std::size_t offset,
                                                       std::size_t len) const noexcept;
  DAXALLOC_LOCAL bool populate_member(member_state& m, std::size_t offset, std::size_t len);

  std::filesystem::path path_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t max_size_ = 0;
  std::size_t reserved_ = 0;  // bytes of address space reserved at base_
  std::size_t align_ = 4096;
  region_kind kind_ = region_kind::anonymous;
  bool created_ = false;
  bool read_only_ = false;
  int map_flags_ = 0;
  persistence persistence_;
  std::unique_ptr<std::vector<member_state>> members_;  // null while there is none
  // What contains() reads of the members, without a lock, while attach and
  // detach change them on another thread: each member's offset and mapped
  // size (0: none), the members packed at the front. attach and detach
  // themselves are serialized by the caller.
  struct member_span {
    std::atomic<std::size_t> offset{0}, size{0};
  };
  static constexpr std::size_t max_members = 8;
  std::array<member_span, max_members> member_spans_{};
  DAXALLOC_LOCAL void publish_member_spans() noexcept;
};

}  // namespace daxalloc
