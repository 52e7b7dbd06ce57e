// The reference model of the `ops` and `crash` harnesses: runs decoded API
// calls on a heap and checks each result against what the model predicts.
//
// The model holds every live allocation (offset, size, payload seed), every
// reservation, the root object and the objects published into the root's
// pptr slots, and which 2 MiB subsections are present. It checks, per call:
// results lie inside the heap and overlap nothing live; alignment and
// usable_size; payloads survive (first and last 64 bytes); errors are
// daxalloc::error with the code the model predicts; stats().allocated_objects
// equals the model; and, on demand, check() is empty and the media's list of
// allocations equals the model's.
#pragma once

#include <bitset>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "daxalloc/heap.hpp"
#include "formats.hpp"

namespace fuzz {

inline constexpr std::uint64_t driver_heap_size = 16 * MiB;  // max_size driver_max_range

struct driver_options {
  bool payloads = true;      // write and verify payload patterns
  bool allow_reopen = true;  // reopen calls close and open the heap (else they are checks)
  bool stats_every_call = true;
};

class api_driver {
 public:
  api_driver(std::optional<daxalloc::heap>& heap, std::filesystem::path path,
             driver_options options);

  void run(const call& c);
  // check() empty, payloads intact, the media's allocations equal the model's.
  void audit(const char* when);
  // What a crash must preserve or undo as a whole: the durable allocations,
  // the root and its pptr slots, and the present subsections.
  [[nodiscard]] static std::string signature(const daxalloc::heap& h);

  [[nodiscard]] std::size_t live_objects() const;

 private:
  struct object {
    std::uint64_t size;
    std::uint64_t seed;
  };
  daxalloc::heap& h() { return *heap_; }
  void fill(std::uint64_t offset, std::uint64_t size, std::uint64_t seed);
  void verify(std::uint64_t offset, std::uint64_t size, std::uint64_t seed, const char* what);
  // The new object [offset, offset+size) must lie in the heap and overlap nothing live.
  void claim(std::uint64_t offset, std::uint64_t size, const char* what);
  [[nodiscard]] bool overlaps_live(std::uint64_t offset, std::uint64_t size) const;
  [[nodiscard]] std::uint64_t object_at(std::uint64_t index) const;  // offset of the n-th live
  void expect_error(const char* what, std::initializer_list<daxalloc::errc> codes,
                    const std::function<void()>& f);
  void allocate(const call& c);
  void deallocate(const call& c);
  void bad_deallocate(const call& c);
  void reserve(const call& c);
  void cancel(const call& c);
  void root(const call& c);
  void publish(const call& c);
  void free_clear(const call& c);
  void hot_add(const call& c);
  void hot_remove(const call& c);
  void reopen();
  void check_stats(const char* when);

  std::optional<daxalloc::heap>& heap_;
  std::filesystem::path path_;
  driver_options options_;
  std::uint64_t next_seed_ = 1;
  std::map<std::uint64_t, object> live_;      // by offset: allocate()d objects
  std::map<std::uint64_t, object> reserved_;  // by offset: reservations (size = reserved size)
  struct published_object {
    std::uint64_t object, size, seed;
  };
  std::map<std::uint64_t, published_object> published_;  // by the offset of the root's pptr slot
  std::uint64_t root_offset_ = 0, root_size_ = 0;
  std::vector<std::uint64_t> freed_;  // offsets freed earlier, for double frees
  std::bitset<hotplug_subsections> present_;
};

// A new heap image for the drivers: driver_heap_size with a 2 GiB range,
// 128 MiB sections, nothing allocated; built once per process.
const sparse_image& pristine_heap_image();

}  // namespace fuzz
