// What the media behind a region says about itself: its known bad blocks and
// the unsafe-shutdown state of the DIMMs behind it (internal to the platform
// layer; the heap layer reads it at open). The default provider asks
// libpmem2, which is how PMDK does it: for a devdax device the bad blocks of
// its namespace and region (libndctl, address range scrub); for a file on an
// fsdax namespace its extents (FIEMAP) mapped onto the block device's bad
// blocks; for both the DIMMs' unique ids and dirty-shutdown counts. Tests
// install a provider of their own (set_provider_for_testing) to give the same
// code paths states the emulated NVDIMM cannot produce.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace daxalloc {
class region;
}

namespace daxalloc::media {

// A range of the region that cannot be read: offsets in bytes from the
// region's start (the file offset, or the devdax device's offset).
struct bad_range {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const bad_range&, const bad_range&) = default;
};

struct device_state {
  // The source can list bad blocks (a devdax device, a file on a block
  // device); false for anonymous memory and RAM file systems (tmpfs).
  bool bad_blocks_supported = false;
  std::vector<bad_range> bad_blocks;  // sorted by offset, merged, clipped to the region
  // The region lies on DIMMs that report an identity and an unsafe-shutdown
  // count (libndctl's dirty-shutdown count). False for files without DIMMs
  // behind them, and for emulated pmem whose NVDIMM reports no count.
  bool shutdown_count_supported = false;
  std::string device_id;               // the DIMMs' unique ids, concatenated
  std::uint64_t unsafe_shutdowns = 0;  // sum of the DIMMs' counts
  // Why what is not supported is not (for `daxalloc info` and the docs):
  // "a file on tmpfs: RAM, no bad-block list and no DIMMs".
  std::string note;
};

class provider {
 public:
  virtual ~provider() = default;
  // What the media says now. Never throws for a source that supports
  // nothing: it says so in the state.
  [[nodiscard]] virtual device_state read(const region& r) = 0;
  // Clears a bad block, as PMDK does (pmem2_badblock_clear): on an fsdax
  // file the range is punched and allocated again (new, good blocks,
  // zeroed); on a devdax device the error is cleared through the bus
  // (ND_CMD_CLEAR_ERROR) and reads as zeros. errc::unsupported or
  // errc::io_error with the reason when it cannot.
  virtual void clear(const region& r, const bad_range& range) = 0;
};

// The provider heaps use: libpmem2's unless a test installed another.
[[nodiscard]] provider& current() noexcept;
// Test hook: installs `p` (nullptr: libpmem2's again). Not thread-safe
// against concurrent opens; `p` must outlive its use.
void set_provider_for_testing(provider* p) noexcept;

// The bad ranges of `state` that overlap [offset, offset+length).
[[nodiscard]] std::vector<bad_range> overlapping(const device_state& state, std::uint64_t offset,
                                                 std::uint64_t length);

}  // namespace daxalloc::media
