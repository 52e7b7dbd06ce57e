#include "platform/media.hpp"

#include <fcntl.h>
#include <libpmem2.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>

#include "daxalloc/error.hpp"
#include "daxalloc/region.hpp"

namespace daxalloc::media {
namespace {

struct fd_closer {
  int fd;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};
using source_ptr =
    std::unique_ptr<pmem2_source, decltype([](pmem2_source* s) { pmem2_source_delete(&s); })>;
using context_ptr =
    std::unique_ptr<pmem2_badblock_context,
                    decltype([](pmem2_badblock_context* c) { pmem2_badblock_context_delete(&c); })>;

std::string pmem2_message() {
  const char* m = pmem2_errormsg();
  return m != nullptr && *m != '\0' ? m : "libpmem2 gave no reason";
}

// Whether the block device a file lives on is a pmem namespace (pmemN, or a
// partition of one): only those have a bad-block list.
bool on_pmem_block_device(const struct stat& st) {
  std::error_code ec;
  const auto dev = std::filesystem::canonical(
      "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)),
      ec);
  if (ec) return false;
  // /sys/devices/.../ndbus0/region0/pfn0.0/block/pmem0[/pmem0p1]
  for (const auto& part : dev)
    if (part.string().starts_with("pmem")) return true;
  return false;
}

void sort_and_merge(std::vector<bad_range>& ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const bad_range& a, const bad_range& b) { return a.offset < b.offset; });
  std::vector<bad_range> merged;
  for (const bad_range& r : ranges) {
    if (r.length == 0) continue;
    if (!merged.empty() && r.offset <= merged.back().offset + merged.back().length)
      merged.back().length =
          std::max(merged.back().offset + merged.back().length, r.offset + r.length) -
          merged.back().offset;
    else
      merged.push_back(r);
  }
  ranges = std::move(merged);
}

class pmem2_provider final : public provider {
 public:
  device_state read(const region& r) override {
    device_state state;
    if (r.kind() == region_kind::anonymous || r.path().empty()) {
      state.note = "anonymous memory: no bad-block list, no DIMMs";
      return state;
    }
    const fd_closer fd{::open(r.path().c_str(), O_RDONLY | O_CLOEXEC)};
    struct stat st {};
    if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0) {
      state.note = "cannot open " + r.path().string() + " to read its media state";
      return state;
    }
    if (struct statfs fs{}; S_ISREG(st.st_mode) && ::fstatfs(fd.fd, &fs) == 0 &&
                            (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)) {
      state.note = "a file on tmpfs (RAM): no bad-block list, no DIMMs";
      return state;
    }
    pmem2_source* raw = nullptr;
    if (pmem2_source_from_fd(&raw, fd.fd) != 0) {
      state.note = "libpmem2 cannot read " + r.path().string() + ": " + pmem2_message();
      return state;
    }
    const source_ptr src(raw);
    read_bad_blocks(src.get(), S_ISCHR(st.st_mode) || on_pmem_block_device(st), state);
    read_shutdown_count(src.get(), state);
    return state;
  }

  void clear(const region& r, const bad_range& range) override {
    if (r.kind() == region_kind::anonymous || r.path().empty())
      throw error(errc::unsupported, "anonymous memory has no bad blocks to clear");
    const fd_closer fd{::open(r.path().c_str(), O_RDWR | O_CLOEXEC)};
    if (fd.fd < 0)
      throw error(errc::io_error, "cannot open " + r.path().string() + " to clear a bad block");
    pmem2_source* raw = nullptr;
    if (pmem2_source_from_fd(&raw, fd.fd) != 0)
      throw error(errc::io_error, r.path().string() + ": " + pmem2_message());
    const source_ptr src(raw);
    pmem2_badblock_context* ctx = nullptr;
    if (pmem2_badblock_context_new(&ctx, src.get()) != 0)
      throw error(errc::unsupported, r.path().string() + ": " + pmem2_message());
    const context_ptr context(ctx);
    const pmem2_badblock bb{range.offset, range.length};
    if (const int rc = pmem2_badblock_clear(context.get(), &bb); rc != 0)
      throw error(rc == PMEM2_E_NOSUPP ? errc::unsupported : errc::io_error,
                  r.path().string() + ": cannot clear the bad block at offset " +
                      std::to_string(range.offset) + " (" + std::to_string(range.length) +
                      " bytes): " + pmem2_message());
  }

 private:
  static void read_bad_blocks(pmem2_source* src, bool pmem_backed, device_state& state) {
    if (!pmem_backed) {
      state.note = "not on a pmem device: no bad-block list";
      return;
    }
    pmem2_badblock_context* ctx = nullptr;
    if (pmem2_badblock_context_new(&ctx, src) != 0) {
      state.note = "bad blocks not readable: " + pmem2_message();
      return;
    }
    const context_ptr context(ctx);
    pmem2_badblock bb{};
    int rc = 0;
    while ((rc = pmem2_badblock_next(context.get(), &bb)) == 0)
      state.bad_blocks.push_back({bb.offset, bb.length});
    if (rc != PMEM2_E_NO_BAD_BLOCK_FOUND) {
      state.bad_blocks.clear();
      state.note = "bad blocks not readable: " + pmem2_message();
      return;
    }
    state.bad_blocks_supported = true;
    sort_and_merge(state.bad_blocks);
  }

  static void read_shutdown_count(pmem2_source* src, device_state& state) {
    std::uint64_t usc = 0;
    std::size_t len = 0;
    if (pmem2_source_device_usc(src, &usc) != 0 ||
        pmem2_source_device_id(src, nullptr, &len) != 0) {
      if (!state.note.empty()) state.note += "; ";
      state.note += "no unsafe-shutdown count: " + pmem2_message();
      return;
    }
    std::string id(len, '\0');
    if (len > 0 && pmem2_source_device_id(src, id.data(), &len) != 0) return;
    while (!id.empty() && id.back() == '\0') id.pop_back();
    if (id.empty()) {  // legacy (memmap=) pmem: a region without DIMMs
      if (!state.note.empty()) state.note += "; ";
      state.note +=
          "no DIMMs behind the pmem region (legacy memmap= pmem): no unsafe-shutdown count";
      return;
    }
    state.shutdown_count_supported = true;
    state.device_id = std::move(id);
    state.unsafe_shutdowns = usc;
  }
};

pmem2_provider libpmem2_provider;
std::atomic<provider*> installed{nullptr};

}  // namespace

provider& current() noexcept {
  provider* p = installed.load(std::memory_order_acquire);
  return p != nullptr ? *p : libpmem2_provider;
}

void set_provider_for_testing(provider* p) noexcept {
  installed.store(p, std::memory_order_release);
}

std::vector<bad_range> overlapping(const device_state& state, std::uint64_t offset,
                                   std::uint64_t length) {
  std::vector<bad_range> found;
  for (const bad_range& b : state.bad_blocks)
    if (b.offset < offset + length && offset < b.offset + b.length) found.push_back(b);
  return found;
}

}  // namespace daxalloc::media
