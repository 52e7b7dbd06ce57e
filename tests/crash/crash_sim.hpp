// A simulated persistence domain for crash tests (test builds only).
//
// The heap runs on its region as usual, but every flush and drain goes
// through the simulator, which keeps a durable image of the watched byte
// ranges: a cache line reaches it only when it was flushed and a later drain
// (fence) ran. At every fence the simulator records a crash point: the durable
// image as it stood, and every line that differs from it in the working
// memory (flushed or not: a dirty line may be evicted at any time). A fence
// completes the flushes of its own thread only, as SFENCE does, and makes
// durable what each line held when it was flushed (CLWB writes the line back
// as it is then; a store after the flush is not covered by the fence).
// Non-temporal copies (persistence::copy_nodrain) are stores that are
// pending like flushed lines until the thread's next fence: until then a
// crash may keep any of them, torn or whole, or none. A crash
// image is the durable image plus any subset of those lines, each written
// whole, or torn at 8-byte granularity (the x86 failure-atomicity unit).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daxalloc/region.hpp"

namespace crash {

inline constexpr std::size_t line_size = 64;

struct range {
  std::uint64_t offset, length;  // bytes of the region, line aligned
};

struct dirty_line {
  std::uint64_t offset;                      // in the region
  std::array<std::byte, line_size> content;  // working content at the fence
};

struct crash_point {
  std::size_t fence = 0;        // 1-based index of the fence it precedes; 0 after the last
  std::uint64_t file_size = 0;  // region size at that moment
  std::vector<std::vector<std::byte>> durable;  // one buffer per watched range
  std::vector<dirty_line> dirty;
};

class simulator {
 public:
  // Starts simulating: the durable image is what the watched ranges hold now.
  // The region may be moved into a heap afterwards (create does that), but
  // its mapping must not move: reserve its whole range before.
  simulator(daxalloc::region& r, std::vector<range> watched);
  simulator(const simulator&) = delete;
  simulator& operator=(const simulator&) = delete;

  // Flushes in `r` are not simulated: lines of another file (an added
  // region, whose label is made durable before anything names it) that the
  // images leave as they are at the end of the run.
  void ignore(range r) { ignored_.push_back(r); }

  // Ends the run: records the final crash point (after the last fence).
  // Returns problems found: lines flushed outside the watched ranges, stores
  // never flushed and fenced. The region keeps routing flushes here until it
  // is given another persistence.
  std::vector<std::string> finish();

  [[nodiscard]] const std::vector<crash_point>& points() const { return points_; }
  [[nodiscard]] std::size_t fences() const { return fences_; }
  [[nodiscard]] std::size_t copies() const { return copies_; }  // non-temporal copies seen
  [[nodiscard]] const std::vector<range>& watched() const { return watched_; }

 private:
  static void flush_hook(void* self, const void* addr, std::size_t len);
  static void drain_hook(void* self);
  static void discard_hook(void* self, const void* addr, std::size_t len);
  static void copy_hook(void* self, void* dest, const void* src, std::size_t len);
  void note_flush(const void* addr, std::size_t len);
  void record(std::size_t fence);
  [[nodiscard]] std::byte* working(const range& w) const { return base_ + w.offset; }
  [[nodiscard]] std::uint64_t file_size() const;

  std::byte* base_;
  std::filesystem::path path_;
  std::vector<range> watched_;
  std::vector<range> ignored_;
  std::vector<std::vector<std::byte>> durable_;
  std::mutex mutex_;
  struct pending_line {
    std::uint64_t line;      // offset in the region
    std::uint64_t snapshot;  // order of the snapshots of all threads
    std::array<std::byte, line_size> content;
  };
  // Per thread: lines flushed (or copied) since that thread's last fence.
  std::map<std::thread::id, std::vector<pending_line>> flushed_;
  std::map<std::uint64_t, std::uint64_t> durable_snapshot_;  // line -> snapshot it holds
  std::uint64_t snapshots_ = 0;
  std::size_t copies_ = 0;
  std::vector<crash_point> points_;
  std::vector<std::string> problems_;
  std::size_t fences_ = 0;
};

// How much more to explore than by default: DAXALLOC_CRASH_SCALE (1 when
// unset; CI's release run sets more). Random samples and recovery budgets
// grow by this factor.
unsigned scale();

// Every crash image of a crash point: for up to `exhaustive_limit` dirty
// lines every subset; beyond that none, all, and `samples` × scale() random
// subsets in which some lines are torn. Calls visit(image_path) for each, after writing
// the image as a sparse file at `image_path`. Returns the number of images.
std::size_t explore(const crash_point& point, const std::vector<range>& watched,
                    const std::filesystem::path& image_path, std::mt19937_64& rng,
                    const std::function<void(const std::filesystem::path&)>& visit,
                    unsigned exhaustive_limit = 10, unsigned samples = 48);

}  // namespace crash
