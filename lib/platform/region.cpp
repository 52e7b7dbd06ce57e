// The region layer: recognises what a path is, maps it, and picks how stores
// become durable. Everything that touches a file descriptor, mmap or sysfs is
// here (and in devices.cpp); the layers above see only base() and persist().
#include "daxalloc/region.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <utility>

#include "daxalloc/error.hpp"
#include "platform/sysfs.hpp"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace daxalloc {
namespace {

constexpr std::size_t page_size = 4096;
constexpr std::size_t huge_page_size = std::size_t{2} << 20;

constexpr std::size_t align_up(std::size_t v, std::size_t a) {
  return (v + a - 1) / a * a;
}

errc errc_from_errno(int err, errc fallback) {
  switch (err) {
    case ENOENT:
      return errc::not_found;
    case EACCES:
    case EPERM:
    case EROFS:
      return errc::permission_denied;
    case EISDIR:
      return errc::is_directory;
    case ENOSPC:
    case ENOMEM:
      return errc::out_of_space;
    case EWOULDBLOCK:
      return errc::busy;
    default:
      return fallback;
  }
}

[[noreturn]] void throw_errno(const std::filesystem::path& path, const std::string& what, int err,
                              errc fallback = errc::io_error) {
  throw error(errc_from_errno(err, fallback),
              path.string() + ": " + what + ": " + std::strerror(err));
}

std::string human(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) bytes /= 1024, ++u;
  return std::to_string(bytes) + " " + units[u];
}

// Reserves [result, result+len) as inaccessible address space aligned to `align`.
std::byte* reserve_address_space(std::size_t len, std::size_t align) {
  void* raw =
      mmap(nullptr, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED)
    throw error(errc::out_of_space,
                "cannot reserve " + human(len) + " of address space: " + std::strerror(errno));
  auto start = reinterpret_cast<std::uintptr_t>(raw);
  auto aligned = align_up(start, align);
  if (aligned > start) munmap(raw, aligned - start);
  auto tail = start + len + align - (aligned + len);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + len), tail);
  return reinterpret_cast<std::byte*>(aligned);
}

void unreserve_to_none(std::byte* at, std::size_t len) {
  // Put the reservation back where a mapping was removed or failed, so that
  // nothing else can be mapped into the heap's address range.
  mmap(at, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

persistence_mode resolve_mode(persistence_mode asked, region_kind kind) {
  if (asked != persistence_mode::automatic) return asked;
  switch (kind) {
    case region_kind::devdax:
    case region_kind::fsdax:
      return persistence_mode::cache_flush;
    case region_kind::file: {
      const char* force = std::getenv("PMEM_IS_PMEM_FORCE");
      return force && std::strcmp(force, "1") == 0 ? persistence_mode::cache_flush
                                                   : persistence_mode::msync;
    }
    case region_kind::anonymous:
      return persistence_mode::none;
  }
  return persistence_mode::none;
}

}  // namespace

// A member's file or device, mapped at base_ + info.offset.
struct region::member_state {
  region_member info;
  int fd = -1;
  int map_flags = 0;
};

const char* to_string(region_kind kind) noexcept {
  switch (kind) {
    case region_kind::devdax:
      return "devdax";
    case region_kind::fsdax:
      return "fsdax";
    case region_kind::file:
      return "file";
    case region_kind::anonymous:
      return "anonymous";
  }
  return "?";
}

region::region(region&& other) noexcept {
  *this = std::move(other);
}

region& region::operator=(region&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    max_size_ = std::exchange(other.max_size_, 0);
    reserved_ = std::exchange(other.reserved_, 0);
    align_ = other.align_;
    kind_ = other.kind_;
    created_ = other.created_;
    read_only_ = other.read_only_;
    map_flags_ = other.map_flags_;
    persistence_ = other.persistence_;
    members_ = std::move(other.members_);
    publish_member_spans();
    other.publish_member_spans();
  }
  return *this;
}

region::~region() {
  close();
}

void region::close() noexcept {
  if (members_)
    for (const member_state& m : *members_) ::close(m.fd);
  members_.reset();
  publish_member_spans();
  if (base_) munmap(base_, reserved_);
  if (fd_ >= 0) ::close(fd_);  // also drops the flock
  base_ = nullptr;
  fd_ = -1;
}

region region::anonymous(std::size_t size, std::size_t max_size, persistence_mode mode) {
  if (size == 0 || size % page_size)
    throw error(errc::misaligned, "anonymous region: size " + std::to_string(size) +
                                      " is not a positive multiple of 4 KiB");
  if (mode == persistence_mode::msync)
    throw error(errc::invalid_argument, "anonymous region: msync needs a file");
  region r;
  r.path_ = "[anonymous]";
  r.kind_ = region_kind::anonymous;
  r.created_ = true;
  r.max_size_ = align_up(std::max(size, max_size), page_size);
  r.reserved_ = r.max_size_;
  r.base_ = reserve_address_space(r.reserved_, huge_page_size);
  r.map_flags_ = MAP_PRIVATE | MAP_ANONYMOUS;
  r.map_range(0, size);
  r.size_ = size;
  r.persistence_ = persistence::for_mode(resolve_mode(mode, r.kind_));
  return r;
}

region region::open(const std::filesystem::path& path, const region_options& options) {
  region r;
  r.path_ = path;
  const auto fail = [&](errc code, const std::string& what) -> void {
    throw error(code, path.string() + ": " + what);
  };

  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && (errno != ENOENT || !options.create)) throw_errno(path, "cannot stat", errno);
  if (!exists && options.size == 0) fail(errc::too_small, "cannot create a file of size 0");
  std::optional<sysfs::dax_attributes> dax;
  if (exists) {
    if (S_ISDIR(st.st_mode)) fail(errc::is_directory, "is a directory, not a file or DAX device");
    if (S_ISBLK(st.st_mode))
      fail(errc::not_dax,
           "is a block device; use its DAX file system (mount -o dax) or a devdax namespace");
    if (S_ISCHR(st.st_mode)) {
      dax = sysfs::probe_char_device(major(st.st_rdev), minor(st.st_rdev));
      if (!dax->is_dax)
        fail(errc::not_dax, "is a character device of subsystem '" + dax->subsystem +
                                "', not a device-DAX device (/dev/daxX.Y)");
    } else if (!S_ISREG(st.st_mode)) {
      fail(errc::not_dax, "is neither a regular file nor a device-DAX device");
    }
  }

  if (options.read_only && options.create)
    fail(errc::invalid_argument, "a read-only open cannot create the file");
  const bool must_be_new = options.create && options.must_be_new && !dax;
  if (exists && must_be_new)
    fail(errc::already_exists, "already exists; remove it first or open it");
  r.read_only_ = options.read_only;
  int flags = (r.read_only_ ? O_RDONLY : O_RDWR) | O_CLOEXEC |
              (options.create && !dax ? O_CREAT : 0) | (must_be_new ? O_EXCL : 0);
  r.fd_ = ::open(path.c_str(), flags, 0644);
  if (r.fd_ < 0 && errno == EEXIST && must_be_new)  // created by someone else since the stat
    fail(errc::already_exists, "already exists; remove it first or open it");
  if (r.fd_ < 0)
    throw_errno(path, r.read_only_ ? "cannot open read-only" : "cannot open read-write", errno);
  // flock(2) locks conflict across every open file description of the file,
  // in this process or another: one LOCK_EX, or any number of LOCK_SH.
  const int lock = (r.read_only_ ? LOCK_SH : LOCK_EX) | (options.wait_for_lock ? 0 : LOCK_NB);
  if ((options.exclusive || r.read_only_) && flock(r.fd_, lock) != 0) {
    if (errno == EWOULDBLOCK)
      fail(errc::busy, r.read_only_ ? "is open read-write in another process or handle (locked)"
                                    : "is open in another process or handle (locked)");
    throw_errno(path, "cannot lock", errno);
  }
  // Under the lock: a file that is empty now was made by this open, or by
  // one that failed before it wrote anything (a create holds the lock until
  // its heap is complete).
  if (!dax) {
    if (fstat(r.fd_, &st) != 0) throw_errno(path, "cannot stat", errno);
    r.created_ = options.create && st.st_size == 0;
  }

  std::size_t size = options.size;
  if (options.size_only_if_created && !r.created_) size = 0;
  if (dax) {
    r.kind_ = region_kind::devdax;
    r.align_ = dax->align;
    const std::size_t usable = dax->size / dax->align * dax->align;
    if (size == 0) size = usable;
    if (size % dax->align)
      fail(errc::misaligned, "size " + std::to_string(size) +
                                 " is not a multiple of the device align " + human(dax->align) +
                                 " (the kernel refuses it with EINVAL)");
    if (size > usable)
      fail(errc::too_large, "size " + human(size) + " exceeds the device size " + human(usable) +
                                "; a devdax device cannot grow");
    r.max_size_ = usable;
    r.reserved_ = usable;
    r.map_flags_ = MAP_SHARED_VALIDATE | MAP_SYNC;
  } else {
    if (fstat(r.fd_, &st) != 0) throw_errno(path, "cannot stat", errno);
    const auto file_size = static_cast<std::size_t>(st.st_size);
    if (size == 0) size = file_size;
    if (size == 0) fail(errc::too_small, "is empty; give a size to create a region");
    if (size % page_size)
      fail(errc::misaligned, "size " + std::to_string(size) + " is not a multiple of 4 KiB");
    if (size > file_size && r.read_only_)
      fail(errc::read_only, "cannot extend a file opened read-only to " + human(size));
    if (size > file_size && ftruncate(r.fd_, static_cast<off_t>(size)) != 0)
      throw_errno(path, "cannot extend to " + human(size), errno);
    r.max_size_ = align_up(std::max(size, options.max_size), page_size);
    r.reserved_ = align_up(r.max_size_, huge_page_size);
    r.align_ = page_size;
    r.kind_ = region_kind::fsdax;
    r.map_flags_ = MAP_SHARED_VALIDATE | MAP_SYNC;
  }

  r.base_ = reserve_address_space(r.reserved_, std::max(r.align_, huge_page_size));
  void* at = mmap(r.base_, size, r.protection(), r.map_flags_ | MAP_FIXED, r.fd_, 0);
  if (at == MAP_FAILED && errno == EOPNOTSUPP && !dax) {
    // A page-cache file: MAP_SYNC is refused, durability needs msync.
    if (options.require_dax)
      fail(errc::map_sync_unsupported,
           "MAP_SYNC refused (EOPNOTSUPP): not on a DAX file system (mount -o dax)");
    r.kind_ = region_kind::file;
    r.map_flags_ = MAP_SHARED;
    at = mmap(r.base_, size, r.protection(), r.map_flags_ | MAP_FIXED, r.fd_, 0);
  }
  if (at == MAP_FAILED) {
    int err = errno;
    unreserve_to_none(r.base_, size);
    if (err == EINVAL && dax)
      fail(errc::misaligned, "mmap of " + human(size) +
                                 " refused (EINVAL): address, size and "
                                 "offset must be multiples of the device align " +
                                 human(r.align_));
    throw_errno(path, "mmap of " + human(size) + " failed", err);
  }
  r.size_ = size;
  r.persistence_ = persistence::for_mode(resolve_mode(options.mode, r.kind_));
  return r;
}

int region::protection() const noexcept {
  return read_only_ ? PROT_READ : PROT_READ | PROT_WRITE;
}

void region::map_range(std::size_t offset, std::size_t len) {
  void* at = mmap(base_ + offset, len, protection(), map_flags_ | MAP_FIXED, fd_,
                  fd_ >= 0 ? static_cast<off_t>(offset) : 0);
  if (at == MAP_FAILED) {
    int err = errno;
    unreserve_to_none(base_ + offset, len);
    throw_errno(path_, "mmap of [" + std::to_string(offset) + ", +" + human(len) + ") failed", err,
                kind_ == region_kind::devdax && err == EINVAL ? errc::misaligned : errc::io_error);
  }
}

bool region::populate(std::size_t offset, std::size_t len) {
  if (read_only_)
    throw error(errc::read_only, path_.string() + ": opened read-only: cannot populate storage");
  const std::size_t end = offset + len;
  if (member_state* m = member_of(offset, len)) return populate_member(*m, offset, len);
  if (end < offset || end > max_size_)
    throw error(errc::too_large, path_.string() + ": range [" + std::to_string(offset) + ", " +
                                     std::to_string(end) + ") is beyond the reserved " +
                                     human(max_size_));
  if (offset % page_size || len % page_size)
    throw error(errc::misaligned, path_.string() + ": populate range is not 4 KiB aligned");
  if (members_)
    for (const member_state& m : *members_)
      // (the mapping grows from size_: it may not cover a member either)
      if (std::min(offset, size_) < m.info.offset + m.info.max_size &&
          m.info.offset < align_up(end, align_))
        throw error(errc::invalid_argument,
                    path_.string() + ": populate range [" + std::to_string(offset) + ", " +
                        std::to_string(end) + ") reaches into or beyond the member " +
                        m.info.path.string() + " without lying inside it");
  bool zero = false;
  if (kind_ == region_kind::anonymous) {
    zero = offset >= size_;
  } else if (kind_ != region_kind::devdax) {
    struct stat st {};
    if (fstat(fd_, &st) != 0) throw_errno(path_, "cannot stat", errno);
    zero = offset >= static_cast<std::size_t>(st.st_size);
    if (end > static_cast<std::size_t>(st.st_size) && ftruncate(fd_, static_cast<off_t>(end)) != 0)
      throw_errno(path_, "cannot extend to " + human(end), errno);
    // Allocate the blocks now, so that running out of space is an error here
    // rather than a SIGBUS on a later store.
    if (len && fallocate(fd_, 0, static_cast<off_t>(offset), static_cast<off_t>(len)) != 0 &&
        errno != EOPNOTSUPP)
      throw_errno(path_, "cannot allocate " + human(len) + " at offset " + std::to_string(offset),
                  errno);
  }
  if (end > size_) {
    const std::size_t new_size = align_up(end, align_);
    if (new_size > max_size_)
      throw error(errc::too_large, path_.string() + ": " + human(new_size) +
                                       " exceeds the device size " + human(max_size_));
    map_range(size_, new_size - size_);
    size_ = new_size;
  }
  return zero;
}

void region::reserve(std::size_t max_size) {
  max_size = align_up(std::max(max_size, size_), page_size);
  // A devdax region keeps its device's size; beyond it is room for members.
  const std::size_t own = kind_ == region_kind::devdax ? max_size_ : max_size;
  if (max_size <= reserved_) {
    max_size_ = std::max(max_size_, own);
    return;
  }
  if (members_)
    throw error(errc::busy,
                path_.string() + ": cannot move the reservation of a region with members");
  const std::size_t reserved = align_up(max_size, huge_page_size);
  std::byte* base = reserve_address_space(reserved, std::max(align_, huge_page_size));
  if (kind_ == region_kind::anonymous) {
    // Private anonymous memory cannot be remapped by offset: move it.
    void* moved = mremap(base_, size_, size_, MREMAP_MAYMOVE | MREMAP_FIXED, base);
    if (moved == MAP_FAILED) {
      munmap(base, reserved);
      throw error(errc::out_of_space,
                  "cannot move an anonymous region: " + std::string(std::strerror(errno)));
    }
  } else {
    void* at = mmap(base, size_, protection(), map_flags_ | MAP_FIXED, fd_, 0);
    if (at == MAP_FAILED) {
      int err = errno;
      munmap(base, reserved);
      throw_errno(path_, "cannot remap for a larger reservation", err);
    }
  }
  munmap(base_, reserved_);
  base_ = base;
  reserved_ = reserved;
  max_size_ = own;
}

bool region::release(std::size_t offset, std::size_t len) noexcept {
  if (member_state* m = member_of(offset, len); m != nullptr && len != 0 && !read_only_) {
    const bool released =
        m->info.kind != region_kind::devdax && offset + len <= m->info.offset + m->info.size &&
        fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset - m->info.offset), static_cast<off_t>(len)) == 0;
    if (released) persistence_.discarded(base_ + offset, len);
    return released;
  }
  if (len == 0 || offset + len > size_ || read_only_) return false;
  bool released = false;
  switch (kind_) {
    case region_kind::anonymous:
      released = madvise(base_ + offset, len, MADV_DONTNEED) == 0;
      break;
    case region_kind::devdax:
      break;
    case region_kind::fsdax:
    case region_kind::file:
      released = fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           static_cast<off_t>(offset), static_cast<off_t>(len)) == 0;
      break;
  }
  if (released) persistence_.discarded(base_ + offset, len);
  return released;
}

void region::truncate(std::size_t new_size) {
  if (read_only_)
    throw error(errc::read_only, path_.string() + ": opened read-only: cannot truncate");
  if (kind_ == region_kind::devdax || kind_ == region_kind::anonymous)
    throw error(errc::unsupported,
                path_.string() + ": a " + to_string(kind_) + " region cannot be truncated");
  if (new_size > size_ || new_size % page_size)
    throw error(errc::invalid_argument, path_.string() + ": truncate to " +
                                            std::to_string(new_size) +
                                            " is not a 4 KiB multiple "
                                            "no larger than the current size");
  // Unmap first: a store into a truncated page would be a SIGBUS.
  unreserve_to_none(base_ + new_size, size_ - new_size);
  size_ = new_size;
  if (ftruncate(fd_, static_cast<off_t>(new_size)) != 0)
    throw_errno(path_, "cannot truncate to " + human(new_size), errno);
}

// ---- members ----

region::member_state* region::member_of(std::size_t offset, std::size_t len) const noexcept {
  if (!members_) return nullptr;
  for (member_state& m : *members_)
    if (offset >= m.info.offset && offset - m.info.offset < m.info.max_size &&
        len <= m.info.max_size - (offset - m.info.offset))
      return &m;
  return nullptr;
}

const region_member* region::member_at(std::size_t offset, std::size_t len) const noexcept {
  const member_state* m = member_of(offset, len);
  return m ? &m->info : nullptr;
}

bool region::member_contains(std::size_t offset, std::size_t len) const noexcept {
  for (const member_span& m : member_spans_) {
    const std::size_t size = m.size.load(std::memory_order_acquire);
    if (size == 0) break;
    const std::size_t at = m.offset.load(std::memory_order_relaxed);
    if (offset >= at && offset - at <= size && len <= size - (offset - at)) return true;
  }
  return false;
}

// The members' spans as contains() reads them. A span that goes is emptied
// first (its size, then its offset), one that comes gets its offset before
// its size: a reader sees a member whole or not at all. (A member that
// detach removes from the middle moves the later ones down a slot: a
// reader may miss one of those for a moment, which only a pointer into
// memory being removed could notice.)
void region::publish_member_spans() noexcept {
  std::size_t i = 0;
  if (members_)
    for (const member_state& m : *members_) {
      if (i == max_members) break;
      member_span& span = member_spans_[i++];
      span.size.store(0, std::memory_order_release);
      span.offset.store(m.info.offset, std::memory_order_relaxed);
      span.size.store(m.info.size, std::memory_order_release);
    }
  for (; i < max_members; ++i) member_spans_[i].size.store(0, std::memory_order_release);
}

std::vector<region_member> region::members() const {
  std::vector<region_member> out;
  if (members_)
    for (const member_state& m : *members_) out.push_back(m.info);
  return out;
}

const region_member& region::attach(const std::filesystem::path& path, std::size_t offset,
                                    const region_options& options) {
  if (kind_ == region_kind::anonymous)
    throw error(errc::invalid_argument, path.string() + ": an anonymous region has no members");
  region opened = open(path, options);
  const auto fail = [&](errc code, const std::string& what) -> void {
    throw error(code, path.string() + ": cannot be a member of " + path_.string() + " at offset " +
                          std::to_string(offset) + ": " + what);
  };
  if (opened.read_only_ != read_only_)
    fail(errc::invalid_argument, "a member is opened read-only exactly when its region is");
  // (A custom table, a test's, flushes by address whatever the member is.)
  if (persistence_.mode() != persistence_mode::automatic &&
      opened.persistence_.mode() != persistence_.mode())
    fail(errc::invalid_argument, std::string("it is made durable by ") +
                                     opened.persistence_.name() + ", the region by " +
                                     persistence_.name() + ": one heap flushes one way");
  const std::size_t max = opened.max_size_;
  const std::size_t granule = std::max({opened.align_, align_, huge_page_size});
  if (offset % granule != 0)
    fail(errc::misaligned, "the offset is not a multiple of " + human(granule));
  if (offset < size_ || offset > reserved_ || max > reserved_ - offset)
    fail(errc::invalid_argument, "[offset, +" + human(max) +
                                     ") is not beyond the region's mapping of " + human(size_) +
                                     ", or not inside its reservation of " + human(reserved_));
  if (members_)
    for (const member_state& m : *members_)
      if (offset < m.info.offset + m.info.max_size && m.info.offset < offset + max)
        fail(errc::already_exists, "it overlaps the member " + m.info.path.string());
  if (members_ && members_->size() == max_members)
    fail(errc::too_large, "a region has at most " + std::to_string(max_members) + " members");
  // Map the member's file where the reservation is (the temporary mapping
  // open() made goes with `opened`).
  void* at = mmap(base_ + offset, opened.size_, protection(), opened.map_flags_ | MAP_FIXED,
                  opened.fd_, 0);
  if (at == MAP_FAILED) {
    const int err = errno;
    unreserve_to_none(base_ + offset, opened.size_);
    throw_errno(path, "mmap of " + human(opened.size_) + " as a member failed", err);
  }
  if (!members_) members_ = std::make_unique<std::vector<member_state>>();
  member_state m;
  m.info = {path, offset, opened.size_, max, opened.align_, opened.kind_, opened.created_};
  m.fd = std::exchange(opened.fd_, -1);
  m.map_flags = opened.map_flags_;
  members_->push_back(std::move(m));
  publish_member_spans();
  return members_->back().info;
}

void region::detach(std::size_t offset) {
  if (members_)
    for (auto it = members_->begin(); it != members_->end(); ++it)
      if (it->info.offset == offset) {
        unreserve_to_none(base_ + offset, it->info.max_size);
        ::close(it->fd);
        members_->erase(it);
        if (members_->empty()) members_.reset();
        publish_member_spans();
        return;
      }
  throw error(errc::not_found,
              path_.string() + ": no member at offset " + std::to_string(offset) + " to detach");
}

bool region::populate_member(member_state& m, std::size_t offset, std::size_t len) {
  if (offset % page_size || len % page_size)
    throw error(errc::misaligned, m.info.path.string() + ": populate range is not 4 KiB aligned");
  const std::size_t from = offset - m.info.offset, end = from + len;
  bool zero = false;
  if (m.info.kind != region_kind::devdax) {
    struct stat st {};
    if (fstat(m.fd, &st) != 0) throw_errno(m.info.path, "cannot stat", errno);
    zero = from >= static_cast<std::size_t>(st.st_size);
    if (end > static_cast<std::size_t>(st.st_size) && ftruncate(m.fd, static_cast<off_t>(end)) != 0)
      throw_errno(m.info.path, "cannot extend to " + human(end), errno);
    if (len && fallocate(m.fd, 0, static_cast<off_t>(from), static_cast<off_t>(len)) != 0 &&
        errno != EOPNOTSUPP)
      throw_errno(m.info.path,
                  "cannot allocate " + human(len) + " at offset " + std::to_string(from), errno);
  }
  if (end > m.info.size) {
    const std::size_t new_size = align_up(end, m.info.align);
    void* at = mmap(base_ + m.info.offset + m.info.size, new_size - m.info.size, protection(),
                    m.map_flags | MAP_FIXED, m.fd, static_cast<off_t>(m.info.size));
    if (at == MAP_FAILED) {
      const int err = errno;
      unreserve_to_none(base_ + m.info.offset + m.info.size, new_size - m.info.size);
      throw_errno(m.info.path, "mmap of the member's growth failed", err);
    }
    m.info.size = new_size;
    publish_member_spans();
  }
  return zero;
}

}  // namespace daxalloc
