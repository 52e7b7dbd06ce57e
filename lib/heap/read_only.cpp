// What the redo-lane recovery of a read-write open would do, for a heap
// opened read-only (heap::open_read_only), which writes nothing. The other
// steps are noted where they would happen: the superblock copy and the
// hotplug intent by the sparse model's load, the root slot by recover_root.
#include <string>

#include "heap/heap_impl.hpp"

namespace daxalloc::detail {
namespace {

constexpr std::uint64_t lane_data = sparse::lane_size - sizeof(sparse::lane_header);

// Lanes a batch of `count` entries and `inline_total` inline bytes spans
// (the rule of publish.cpp, where batches are written).
unsigned lanes_spanned(std::uint64_t count, std::uint64_t inline_total) {
  const std::uint64_t first = lane_data - count * sizeof(sparse::log_entry);
  if (inline_total <= first) return 1;
  return 1 + static_cast<unsigned>((inline_total - first + lane_data - 1) / lane_data);
}

}  // namespace

// The tests replay_lanes makes before it applies a lane: a committed lane
// has a count in range, its inline bytes or content in bounds, and a
// matching checksum. Every non-empty header is cleared afterwards, torn ones
// included. replay_lanes refuses a committed lane with an impossible action
// (errc::corrupt); that check needs the targets and is left to it.
void heap_impl::plan_lane_replay() {
  unsigned committed = 0, cleared = 0;
  for (unsigned i = 0; i < sparse::nr_lanes; ++i) {
    const sparse::lane_header* h = lane(i);
    if (h->count != 0 || h->checksum != 0) ++cleared;
    if (h->count == 0 || h->checksum == 0 || h->count > sparse::max_log_entries) continue;
    const bool inline_format = h->format == sparse::lane_format_inline;
    const std::uint64_t total = inline_format ? inline_bytes(i) : 0;
    if (inline_format ? total == UINT64_MAX : !content_in_bounds(*h)) continue;
    if (h->checksum != lane_checksum(i)) continue;  // torn: never committed
    ++committed;
    note_lane_bits(*h);
    i += inline_format ? lanes_spanned(h->count, total) - 1 : 0;  // its continuation lanes
  }
  plan_.lanes_to_replay = committed;
  plan_.lanes_to_clear = cleared;
  if (committed)
    plan_.steps.push_back("replay " + std::to_string(committed) + " committed redo lane" +
                          (committed == 1 ? "" : "s") + " (batches published before the crash)");
  if (cleared)
    plan_.steps.push_back("clear " + std::to_string(cleared) + " redo lane header" +
                          (cleared == 1 ? "" : "s") +
                          (cleared > committed ? " (torn ones included)" : ""));
}

}  // namespace daxalloc::detail
