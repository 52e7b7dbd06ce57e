// Batches: reserve / publish / cancel through redo-log lanes, and their
// replay at open. See daxalloc/batch.hpp for the contract and
// sparse/layout.hpp for the lane format.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <thread>

#include "daxalloc/batch.hpp"
#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"

namespace daxalloc {
namespace detail {
namespace {

using sparse::log_entry;
constexpr std::uint64_t offset_mask = (std::uint64_t{1} << sparse::log_op_shift) - 1;
static_assert(batch::max_actions == sparse::max_log_entries);

// The crash suite's self-test: -Dbreak_persistence=... builds leave out one
// step, and the suite must fail on them (docs/crash-consistency.md).
#ifndef DAXALLOC_BREAK
#define DAXALLOC_BREAK 0
#endif
enum breakage : int {
  intact,
  no_commit_fence,      // the commit fence is left out
  no_logged_content,    // contents are neither fenced nor logged
  no_lane_settle,       // fences do not flush retired headers before freeing their lanes
  replay_out_of_order,  // open replays committed lanes in reverse commit order
  early_retire,         // lanes are retired before a fence made their targets durable
};
constexpr breakage broken = static_cast<breakage>(DAXALLOC_BREAK);

constexpr std::uint64_t lane_data = sparse::lane_size - sizeof(sparse::lane_header);

// Lanes a batch of `count` entries and `inline_total` inline bytes spans.
unsigned lanes_spanned(std::uint64_t count, std::uint64_t inline_total) {
  const std::uint64_t first = lane_data - count * sizeof(log_entry);
  if (inline_total <= first) return 1;
  return 1 + static_cast<unsigned>((inline_total - first + lane_data - 1) / lane_data);
}

}  // namespace

sparse::lane_header* heap_impl::lane(unsigned i) const noexcept {
  return reinterpret_cast<sparse::lane_header*>(lane_zero_ + std::uint64_t{i} * sparse::lane_size);
}

constexpr std::uint64_t phase_of(std::uint64_t state) {
  return state & 0xff;
}
constexpr std::uint64_t with_phase(std::uint64_t state, std::uint64_t phase) {
  return (state & ~std::uint64_t{0xff}) | phase;
}

// `span` consecutive free lanes, marked busy; when none are free, a full
// fence retires what it can first.
unsigned heap_impl::acquire_lanes(unsigned span) noexcept {
  const std::uint64_t run = span >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << span) - 1;
  for (;;) {
    std::uint64_t busy = busy_lanes_.load(std::memory_order_relaxed);
    for (unsigned i = 0; i + span <= sparse::nr_lanes;) {
      if ((busy >> i) & run) {
        ++i;
        continue;
      }
      if (!busy_lanes_.compare_exchange_weak(busy, busy | run << i, std::memory_order_acquire))
        break;  // someone else took or freed lanes: look again
      unsigned used = lanes_used_.load(std::memory_order_relaxed);
      while (used < i + span && !lanes_used_.compare_exchange_weak(used, i + span)) {
      }
      lane_state& ls = lanes_[i];
      ls.span = span;
      const std::uint64_t next = (ls.state.load(std::memory_order_relaxed) >> 8) + 1;
      ls.state.store(next << 8 | lane_writing, std::memory_order_release);
      return i;
    }
    detail::thread_counters.fences += fence(true);  // retires applied lanes, frees retired ones
    std::this_thread::yield();
  }
}

void heap_impl::free_lanes(unsigned i) noexcept {
  const unsigned span = lanes_[i].span;
  const std::uint64_t run = span >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << span) - 1;
  lanes_[i].state.store(with_phase(lanes_[i].state.load(std::memory_order_relaxed), lane_free),
                        std::memory_order_release);
  busy_lanes_.fetch_and(~(run << i), std::memory_order_release);
}

// Total inline bytes of a format-2 lane (the lengths of its content
// entries), or UINT64_MAX when they exceed max_inline_bytes or the lanes
// that follow.
std::uint64_t heap_impl::inline_bytes(unsigned i) const noexcept {
  const sparse::lane_header& h = *lane(i);
  const auto* entries = reinterpret_cast<const log_entry*>(&h + 1);
  std::uint64_t total = 0;
  for (std::uint64_t e = 0; e < h.count; ++e) {
    if (entries[e].target >> sparse::log_op_shift != sparse::log_content) continue;
    total += std::min(entries[e].value, sparse::max_inline_bytes + 1);
    if (total > sparse::max_inline_bytes) return UINT64_MAX;
  }
  if (i + lanes_spanned(h.count, total) > sparse::nr_lanes) return UINT64_MAX;
  return total;
}

template <class B, class F>
void heap_impl::for_each_inline_piece(B* first, std::uint64_t count, std::uint64_t total, F&& f) {
  B* lane_start = first;
  B* at = first + sizeof(sparse::lane_header) + count * sizeof(log_entry);
  std::uint64_t room = lane_data - count * sizeof(log_entry);
  while (total > 0) {
    const std::uint64_t n = std::min(room, total);
    if (n > 0) f(at, n);
    total -= n;
    lane_start += sparse::lane_size;
    at = lane_start + sizeof(sparse::lane_header);
    room = lane_data;
  }
}

// Format 2: over sequence, count, the entries and the inline bytes of the
// lane image whose header is `h`.
std::uint64_t heap_impl::image_checksum(const sparse::lane_header& h,
                                        std::uint64_t inline_total) noexcept {
  static_assert(offsetof(sparse::lane_header, count) == 8);
  sparse::fletcher64_sum sum;
  sum.add(&h.sequence, 16);  // sequence and count
  // The entries follow the header, and the first inline piece the entries:
  // summed as one (the sum of pieces is the sum of their concatenation).
  const auto* entries = reinterpret_cast<const std::byte*>(&h + 1);
  const std::uint64_t entry_bytes = h.count * sizeof(log_entry);
  bool summed_entries = false;
  for_each_inline_piece(reinterpret_cast<const std::byte*>(&h), h.count, inline_total,
                        [&](const std::byte* p, std::uint64_t n) {
                          if (!summed_entries) {
                            summed_entries = true;
                            if (p == entries + entry_bytes)
                              return sum.add(entries, entry_bytes + n);
                            sum.add(entries, entry_bytes);
                          }
                          sum.add(p, n);
                        });
  if (!summed_entries) sum.add(entries, entry_bytes);
  return sum.value();
}

// Format 2: image_checksum. Format 0 (lanes of an older daxalloc): over
// sequence, count, the entries and the bytes the content entries name in
// place. The caller has checked count and the content's bounds.
std::uint64_t heap_impl::lane_checksum(unsigned i) const noexcept {
  const sparse::lane_header& h = *lane(i);
  if (h.format == sparse::lane_format_inline) return image_checksum(h, inline_bytes(i));
  sparse::fletcher64_sum sum;
  sum.add(&h.sequence, 8);
  sum.add(&h.count, 8);
  const auto* entries = reinterpret_cast<const log_entry*>(&h + 1);
  sum.add(entries, h.count * sizeof(log_entry));
  for (std::uint64_t e = 0; e < h.count; ++e)
    if (entries[e].target >> sparse::log_op_shift == sparse::log_content)
      sum.add(model_->base() + (entries[e].target & offset_mask), entries[e].value);
  return sum.value();
}

// The last pageblock this thread found to hold heap words, with the heap's
// id and hot-remove epoch then: a pageblock stays present and keeps its
// (non-metadata) type until a hot-remove, so a store target in it needs no
// section lookup until the epoch moves (a publication's targets are mostly
// in a few objects: the root, a node).
struct checked_pageblock {
  std::uint64_t heap_id = 0, epoch = 0, pageblock = ~std::uint64_t{0};
};
[[gnu::tls_model("initial-exec")]] thread_local checked_pageblock tls_checked;

bool heap_impl::heap_word(const void* p) const noexcept {
  const auto* at = static_cast<const std::byte*>(p);
  const auto offset = static_cast<std::uint64_t>(at - model_->base());
  if (names_slot_word(offset)) return true;
  if (!model_->media().contains(at, 8) || reinterpret_cast<std::uintptr_t>(at) % 8 != 0)
    return false;
  // Not a slab's bitmap: its words change with their check bits, by the
  // allocator; not a movable object's header: the heap's batches write it.
  if (small_.touches_slab_header(offset, 8) || small_.touches_movable_header(offset, 8))
    return false;
  const std::uint64_t epoch = hot_remove_epoch_.load(std::memory_order_acquire);
  if (tls_checked.pageblock == offset >> sparse::subsection_shift && tls_checked.heap_id == id_ &&
      tls_checked.epoch == epoch)
    return true;
  // Not the head, and not a memmap block: metadata is written by the allocators only.
  const std::uint64_t pfn = offset >> sparse::page_shift;
  if (offset < model_->geo().head_size() || !model_->pfn_valid(pfn) ||
      model_->get_pageblock_migratetype(pfn) == sparse::migratetype::metadata)
    return false;
  tls_checked = {id_, epoch, offset >> sparse::subsection_shift};
  return true;
}

// Applies entries (the caller flushes their targets; a publication leaves
// that to the next fence window).
void heap_impl::apply(const log_entry* entries, std::size_t n, bool bits) const noexcept {
  const auto word = [&](const log_entry& e) {
    return reinterpret_cast<std::uint64_t*>(model_->base() + (e.target & offset_mask));
  };
  for (std::size_t k = 0; k < n; ++k) {
    std::uint64_t* w = word(entries[k]);
    switch (const std::uint64_t op = entries[k].target >> sparse::log_op_shift) {
      case sparse::log_store:
        if (!bits)
          std::atomic_ref<std::uint64_t>(*w).store(entries[k].value, std::memory_order_release);
        break;
      case sparse::log_set_bits:
      case sparse::log_clear_bits:  // (a legacy slab's digest is flushed with the target)
        if (bits)
          (void)small_.change_bits(w, entries[k].value, op == sparse::log_set_bits,
                                   small_.word_class(w));
        break;
      default:  // log_content: checked, not applied
        break;
    }
  }
}

// Bytes a batch may write, or errc::invalid_argument: present memory
// outside the head, the memmap blocks and the slabs' bitmaps, as for heap_word.
void heap_impl::check_write_target(const void* dst, std::size_t n) const {
  const auto* at = static_cast<const std::byte*>(dst);
  const auto offset = static_cast<std::uint64_t>(at - model_->base());
  bool ok = n > 0 && model_->media().contains(at, n) && offset >= model_->geo().head_size() &&
            !small_.touches_slab_header(offset, n) && !small_.touches_movable_header(offset, n);
  for (std::uint64_t pfn = offset >> sparse::page_shift;
       ok && pfn <= (offset + n - 1) >> sparse::page_shift; ++pfn)
    ok = model_->pfn_valid(pfn) &&
         model_->get_pageblock_migratetype(pfn) != sparse::migratetype::metadata;
  if (!ok)
    throw error(errc::invalid_argument,
                "batch: write of " + std::to_string(n) +
                    " bytes outside the heap's memory, into its metadata (the head, the "
                    "memmap, a slab's bitmap), or of none");
}

// A word a batch may store to, or errc::invalid_argument.
void heap_impl::check_store_target(const void* where) const {
  if (!heap_word(where))
    throw error(errc::invalid_argument,
                "publish: a store target is not an aligned 8-byte word of the heap's memory "
                "outside its metadata (the head, the memmap, a slab's bitmap)");
}

// What freeing p at publish takes: its slab bit, or its extent's head;
// errc::invalid_argument for the root or anything not allocated here.
heap_impl::object_to_free heap_impl::check_free(void* p) const {
  if (is_root(p)) throw error(errc::invalid_argument, "publish: the root object cannot be freed");
  if (const auto at = small_.locate(p)) {
    load_slab_of(p, "publish");  // (before the batch clears its bit)
    if ((std::atomic_ref<std::uint64_t>(*at->word).load() & at->mask) == 0)
      throw error(errc::invalid_argument, "publish: defer_free of an object that is not allocated");
    return {at, nullptr};
  }
  const sparse::page_descriptor* head = extent_head(p);
  if (head == nullptr)
    throw error(errc::invalid_argument,
                "publish: defer_free of a pointer this heap did not allocate");
  return {std::nullopt, head};
}

void heap_impl::publish(std::span<const reservation> reserved,
                        std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
                        std::span<void* const> frees, std::span<const std::uint64_t> streamed,
                        bool stores_checked, std::span<const copy_source> sources,
                        std::span<const range_write> writes, const std::byte* write_bytes) {
  boost::container::small_vector<log_entry, 64> entries;  // (a group commit of 16: 40)
  std::uint64_t content = 0, written = 0;
  for (const reservation& r : reserved) content += r.size;
  for (const range_write& w : writes) written += w.n;
  // Small contents are covered by the lane's checksum; larger ones are made
  // durable by a fence of their own before the lane is written. Range
  // writes are always logged: their bytes reach their place after the commit.
  const bool logged_content =
      broken != no_logged_content && content <= sparse::max_logged_content &&
      2 * reserved.size() + stores.size() + frees.size() + writes.size() <= sparse::max_log_entries;
  const auto offset_of = [&](const void* p) {
    return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_->base());
  };
  for (const reservation& r : reserved) {
    if (in_slab(r)) {
      const auto at = small_.bit_of(r.ptr);
      entries.push_back(
          {offset_of(at.word) | std::uint64_t{sparse::log_set_bits} << sparse::log_op_shift,
           at.mask});
    } else {
      const std::uint64_t pfn = offset_of(r.ptr) / sparse::page_size;
      entries.push_back(
          {offset_of(&model_->pfn_to_page(pfn)->info),
           sparse::page_info(sparse::page_state::extent, 0, r.size / sparse::page_size)});
    }
    if (logged_content)
      entries.push_back(
          {offset_of(r.ptr) | std::uint64_t{sparse::log_content} << sparse::log_op_shift, r.size});
  }
  bool names_slot = false;  // a store into the name-table slot
  for (const auto& [where, value] : stores) {
    if (!stores_checked) check_store_target(where);
    entries.push_back({offset_of(where), value});
    names_slot = names_slot || names_slot_word(entries.back().target);
  }
  boost::container::small_vector<std::pair<unsigned, void*>, 16> small_frees;  // class, object
  boost::container::small_vector<std::pair<std::uint64_t, std::uint64_t>, 2>
      extent_frees;  // pfn, pages
  for (void* p : frees) {
    if (std::count(frees.begin(), frees.end(), p) > 1)
      throw error(errc::invalid_argument, "publish: the batch frees the same object twice");
    const auto [at, head] = check_free(p);
    if (at) {
      entries.push_back(
          {offset_of(at->word) | std::uint64_t{sparse::log_clear_bits} << sparse::log_op_shift,
           at->mask});
      small_frees.emplace_back(at->cls, p);
      continue;
    }
    entries.push_back({offset_of(&head->info), sparse::free_descriptor});
    extent_frees.emplace_back(offset_of(p) / sparse::page_size, head->length());
  }
  for (const range_write& w : writes)
    entries.push_back(
        {offset_of(w.dst) | std::uint64_t{sparse::log_content} << sparse::log_op_shift, w.n});
  if (written > sparse::max_inline_bytes - sparse::max_logged_content)
    throw error(errc::too_large, "publish: " + std::to_string(written) +
                                     " bytes of range writes, more than a batch holds");
  if (entries.size() > sparse::max_log_entries)
    throw error(errc::too_large, "publish: " + std::to_string(entries.size()) +
                                     " actions, more than a batch holds (" +
                                     std::to_string(sparse::max_log_entries) + ")");
  if (entries.empty()) return;
  if (names_slot) {
    // Only whole copies of the slot that check out, both of them, as the
    // named-object calls write it: a replay would refuse anything else.
    std::vector<std::byte> image(sizeof(sparse::lane_header) + entries.size() * sizeof(log_entry));
    auto* header = reinterpret_cast<sparse::lane_header*>(image.data());
    header->count = entries.size();
    std::memcpy(header + 1, entries.data(), entries.size() * sizeof(log_entry));
    if (auto why = lane_problem(*header); !why.empty())
      throw error(errc::invalid_argument, "publish: the name-table slot: " + why);
  }

  const persistence& p = beneath_;
  const std::uint64_t inline_total = (logged_content ? content : 0) + written;
  const auto was_streamed = [&](std::size_t k) {
    return k / 64 < streamed.size() && (streamed[k / 64] >> (k % 64)) & 1;
  };
  const unsigned i = acquire_lanes(lanes_spanned(entries.size(), inline_total));
  lane_state& ls = lanes_[i];
  // What the constructors wrote: durable at the commit (a replay copies the
  // inline bytes back over it, so a crash before then is covered as well).
  // Objects copied in with non-temporal stores are pending already.
  const auto flush_objects = [&] {
    for (std::size_t k = 0; k < reserved.size(); ++k)
      if (!was_streamed(k)) p.flush(reserved[k].ptr, reserved[k].size);
  };
  const bool fence_zero = !logged_content && !reserved.empty() && broken != no_logged_content;
  if (fence_zero) {  // for large contents only
    const fence_window w = open_window();
    flush_objects();
    close_window(w);
    ++detail::thread_counters.fences;
  }
  std::uint64_t order = next_order_.fetch_add(1, std::memory_order_relaxed);
  unsigned noted = 0;  // the words it writes (not its content entries)
  for (const log_entry& e : entries) {
    if (e.target >> sparse::log_op_shift == sparse::log_content) continue;
    if (noted < max_noted_targets) ls.targets[noted].store(e.target, std::memory_order_relaxed);
    if (++noted > max_noted_targets) break;
  }
  ls.targets_noted.store(noted, std::memory_order_relaxed);
  for (std::size_t k = 0; k < writes.size() && k < max_noted_ranges; ++k) {
    ls.ranges[2 * k].store(offset_of(writes[k].dst), std::memory_order_relaxed);
    ls.ranges[2 * k + 1].store(writes[k].n, std::memory_order_relaxed);
  }
  ls.ranges_noted.store(static_cast<unsigned>(writes.size()), std::memory_order_relaxed);
  ls.sequence = order;
  // The lane's image is staged in ordinary memory and streamed to the lane
  // in whole lines: no line of the lane is read for ownership or flushed.
  thread_local std::array<std::byte, 3 * sparse::lane_size> small_staging alignas(64);
  thread_local std::vector<std::byte> large_staging;  // range writes beyond 3 lanes
  std::byte* staging = small_staging.data();
  if (ls.span > 3) {
    large_staging.resize(ls.span * sparse::lane_size);
    staging = large_staging.data();
  }
  auto* h = reinterpret_cast<sparse::lane_header*>(staging);
  *h = {order, entries.size(), 0, sparse::lane_format_inline, 0, {}};
  std::memcpy(h + 1, entries.data(), entries.size() * sizeof(log_entry));
  std::uint64_t used = sizeof *h + entries.size() * sizeof(log_entry);
  for (unsigned k = 1; k < ls.span; ++k)
    *reinterpret_cast<sparse::lane_header*>(staging + k * sparse::lane_size) = {
        order, 0, sparse::lane_continuation, 0, 0, {}};
  // The inline bytes: the logged objects' contents, then the range writes'.
  std::size_t object = logged_content ? 0 : reserved.size(), done = 0, range = 0;
  for_each_inline_piece(staging, entries.size(), inline_total, [&](std::byte* at, std::uint64_t n) {
    used = static_cast<std::uint64_t>(at + n - staging);
    while (n > 0 && object < reserved.size()) {
      const std::size_t take = std::min<std::uint64_t>(n, reserved[object].size - done);
      // The first bytes from the source the object was copied from (if
      // any), the rest (the size class's tail) from the object itself.
      const auto* object_bytes = static_cast<const std::byte*>(reserved[object].ptr);
      const copy_source src = object < sources.size() ? sources[object] : copy_source{};
      const std::size_t from_src =
          src.bytes > done ? std::min<std::size_t>(take, src.bytes - done) : 0;
      if (from_src > 0) std::memcpy(at, static_cast<const std::byte*>(src.from) + done, from_src);
      std::memcpy(at + from_src, object_bytes + done + from_src, take - from_src);
      at += take;
      n -= take;
      done += take;
      if (done == reserved[object].size) ++object, done = 0;
    }
    while (n > 0) {  // the range writes, after the last object
      const std::size_t take = std::min<std::uint64_t>(n, writes[range].n - done);
      std::memcpy(at, write_bytes + writes[range].at + done, take);
      at += take;
      n -= take;
      done += take;
      if (done == writes[range].n) ++range, done = 0;
    }
  });
  h->checksum = image_checksum(*h, inline_total);
  // The commit: the pending write-backs of the heap (earlier batches'
  // targets, retired headers), this lane and the objects, then one fence.
  const std::uint64_t lines = (used + 63) / 64 * 64;
  std::memset(staging + used, 0, lines - used);
  const fence_window w = open_window();
  if (!fence_zero) flush_objects();
  p.copy_nodrain(lane(i), staging, lines);
  if (broken != no_commit_fence) {
    close_window(w);  // the only fence a publication waits for
    ++detail::thread_counters.fences;
  }
  {
    // Applies happen in commit order: one that comes after a later-ordered
    // lane wrote the same word moves its own lane after that one first (a
    // reorder word, one 8-byte store and a fence), so that a replay of both
    // ends with what memory holds.
    std::lock_guard lock(apply_mutex_);
    if (order < last_applied_ && meets_later_lane(i, order)) {
      order = next_order_.fetch_add(1, std::memory_order_relaxed);
      sparse::lane_header* at = lane(i);
      std::atomic_ref<std::uint64_t>(at->reorder)
          .store(sparse::reorder_word(order, h->checksum), std::memory_order_relaxed);
      p.flush(&at->reorder, 8);
      commit_fence();
    }
    ls.order.store(order, std::memory_order_relaxed);
    last_applied_ = std::max(last_applied_, order);
    // The range writes, the stores, the writes a store overlapped again (the
    // write wins), then the bits: a thread that reaches an object through a
    // word stored here (an owner), or sees its bit set (compaction), finds
    // what the batch wrote into it (a movable object's header) in place.
    for (const range_write& r : writes) std::memcpy(r.dst, write_bytes + r.at, r.n);
    apply(entries.data(), entries.size(), false);
    for (const range_write& r : writes)
      if (std::any_of(entries.begin(), entries.end(), [&](const log_entry& e) {
            const std::uint64_t at = e.target & offset_mask, from = offset_of(r.dst);
            return e.target >> sparse::log_op_shift == sparse::log_store && at < from + r.n &&
                   at + 8 > from;
          }))
        std::memcpy(r.dst, write_bytes + r.at, r.n);
    apply(entries.data(), entries.size(), true);
  }
  // Its targets are flushed by the next fence window of any thread.
  ls.state.store(with_phase(ls.state.load(std::memory_order_relaxed), lane_applied),
                 std::memory_order_release);
  for (auto [cls, object] : small_frees) release_freed({object, static_cast<int>(cls)});
  for (auto [pfn, pages] : extent_frees) release_freed({model_->pfn_to_virt(pfn), -1, pfn, pages});
}

// The objects a lane's content entries name lie in the heap's memory and
// add up to at most max_logged_content bytes; otherwise the lane cannot
// check out (its checksum is not even computed).
bool heap_impl::content_in_bounds(const sparse::lane_header& h) const noexcept {
  const auto* entries = reinterpret_cast<const log_entry*>(&h + 1);
  std::uint64_t total = 0;
  for (std::uint64_t e = 0; e < h.count; ++e) {
    if (entries[e].target >> sparse::log_op_shift != sparse::log_content) continue;
    const std::uint64_t offset = entries[e].target & offset_mask, length = entries[e].value;
    total += std::min(length, sparse::max_logged_content + 1);
    if (total > sparse::max_logged_content || offset < model_->geo().head_size() ||
        !model_->mapped(offset, length))
      return false;
  }
  return true;
}

// ---- the heap's fences ----

// The region's persistence is a wrapper from open on: flushes and discards
// pass through, and every fence is heap_impl::fence(true).
void heap_impl::fence_flush(void* self, const void* addr, std::size_t len) {
  const auto& below = static_cast<heap_impl*>(self)->beneath_.table();
  below.flush(below.context, addr, len);
}

void heap_impl::fence_discard(void* self, const void* addr, std::size_t len) {
  static_cast<heap_impl*>(self)->beneath_.discarded(addr, len);
}

// (persistence::drain counted one fence already.)
void heap_impl::fence_drain(void* self) {
  detail::thread_counters.fences += static_cast<heap_impl*>(self)->fence(true) - 1;
}

void heap_impl::commit_fence() noexcept {
  close_window(open_window());
  ++detail::thread_counters.fences;
}

// Noted, or beyond max_noted_ranges every content entry of the lane (the
// objects' contents among them: flushed twice, or ordered, to no harm).
template <class F>
void heap_impl::for_each_range(unsigned i, F&& f) const noexcept {
  const lane_state& ls = lanes_[i];
  const unsigned n = ls.ranges_noted.load(std::memory_order_relaxed);
  if (n <= max_noted_ranges) {
    for (unsigned k = 0; k < n; ++k)
      f(ls.ranges[2 * k].load(std::memory_order_relaxed),
        ls.ranges[2 * k + 1].load(std::memory_order_relaxed));
    return;
  }
  const sparse::lane_header* h = lane(i);
  const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
  const std::uint64_t count = std::min<std::uint64_t>(
      std::atomic_ref<const std::uint64_t>(h->count).load(), sparse::max_log_entries);
  for (std::uint64_t e = 0; e < count; ++e)
    if (entries[e].target >> sparse::log_op_shift == sparse::log_content)
      f(entries[e].target & offset_mask, entries[e].value);
}

// The targets of lane i's batch, from what publish noted (or the lane).
void heap_impl::flush_targets(unsigned i) const noexcept {
  const lane_state& ls = lanes_[i];
  const unsigned noted = ls.targets_noted.load(std::memory_order_relaxed);
  std::uint64_t last_line = ~std::uint64_t{0};           // (consecutive targets often share a line)
  const sparse::page_descriptor* last_digest = nullptr;  // (and a slab)
  const auto flush = [&](std::uint64_t target) {
    const std::uint64_t at = target & offset_mask;
    const std::uint64_t op = target >> sparse::log_op_shift;
    if (op != sparse::log_content && model_->mapped(at, 8) && at / 64 != last_line)
      beneath_.flush(model_->base() + at, 8);
    last_line = at / 64;
    if ((op == sparse::log_set_bits || op == sparse::log_clear_bits) &&
        model_->mapped(at, 8)) {  // and the slab's digest, which changed with it
      const auto* digest = small_.digest_of(reinterpret_cast<std::uint64_t*>(model_->base() + at));
      if (digest != nullptr && digest != last_digest) beneath_.flush(digest, 8);
      last_digest = digest;
    }
  };
  for_each_range(i, [&](std::uint64_t at, std::uint64_t n) {
    if (model_->mapped(at, n)) beneath_.flush(model_->base() + at, n);
  });
  if (noted <= max_noted_targets) {
    for (unsigned k = 0; k < noted; ++k) flush(ls.targets[k].load(std::memory_order_relaxed));
    return;
  }
  const sparse::lane_header* h = lane(i);
  const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
  const std::uint64_t count = std::atomic_ref<const std::uint64_t>(h->count).load();
  for (std::uint64_t e = 0; e < std::min<std::uint64_t>(count, sparse::max_log_entries); ++e)
    flush(entries[e].target);
}

// Every fence of the heap, on any thread, is a window:
//   open_window: 1. claims the lanes whose targets an earlier fence made
//      durable (covered -> retiring, a compare-and-swap) and writes their
//      zeroed headers (whole lines, non-temporal); 2. notes the applied
//      lanes and flushes their targets (a fence orders only its own
//      thread's flushes, so every thread's fence flushes every applied lane).
//   [the caller's own write-backs: a lane, objects]
//   close_window: drains once; then the lanes noted applied are covered
//      (their targets are durable) and the lanes it retired are free (their
//      retirement is durable).
// A lane is thus retired only after its targets are durable, and reused
// only after its retirement is. Claims are compare-and-swaps, made before
// the window's first write-back: a locked instruction after a CLWB or a
// non-temporal store waits for it as a fence would.
heap_impl::fence_window heap_impl::open_window() noexcept {
  fence_window w;
  const unsigned used = lanes_used_.load(std::memory_order_acquire);
  for (unsigned i = 0; i < used; ++i) {
    lane_state& ls = lanes_[i];
    std::uint64_t s = ls.state.load(std::memory_order_acquire);
    const bool claimable =
        phase_of(s) == lane_covered || (broken == early_retire && phase_of(s) == lane_applied);
    if (claimable && ls.state.compare_exchange_strong(s, with_phase(s, lane_retiring),
                                                      std::memory_order_acq_rel)) {
      w.retiring |= std::uint64_t{1} << i;
      w.state[i] = with_phase(s, lane_retiring);
    }
  }
  for (std::uint64_t m = w.retiring; m; m &= m - 1) {
    const auto i = static_cast<unsigned>(std::countr_zero(m));
    const sparse::lane_header retired{lanes_[i].sequence, 0, 0, sparse::lane_format_inline, 0, {}};
    if (broken == no_lane_settle)
      std::memcpy(lane(i), &retired, sizeof retired);  // stored, never written back
    else
      beneath_.copy_nodrain(lane(i), &retired, sizeof retired);
    if (broken == early_retire) flush_targets(i);
  }
  for (unsigned i = 0; i < used; ++i) {
    const std::uint64_t s = lanes_[i].state.load(std::memory_order_acquire);
    if (phase_of(s) != lane_applied || (w.retiring >> i & 1)) continue;
    w.applied |= std::uint64_t{1} << i;
    w.state[i] = s;
    flush_targets(i);
  }
  return w;
}

void heap_impl::close_window(const fence_window& w) noexcept {
  const auto& below = beneath_.table();
  below.drain(below.context);
  for (std::uint64_t m = w.applied; m; m &= m - 1) {
    const auto i = static_cast<unsigned>(std::countr_zero(m));
    std::uint64_t s = w.state[i];  // fails if someone else moved it on
    lanes_[i].state.compare_exchange_strong(s, with_phase(s, lane_covered),
                                            std::memory_order_acq_rel);
  }
  for (std::uint64_t m = w.retiring; m; m &= m - 1)
    free_lanes(static_cast<unsigned>(std::countr_zero(m)));
}

// A commit's fence is one window. Every other fence returns only when each
// lane applied before it is retired durably: 1 fence when none was
// applied, else 2 (3 when another thread holds a claim meanwhile).
unsigned heap_impl::fence(bool full) noexcept {
  const fence_window first = open_window();
  close_window(first);
  if (!full || first.applied == 0) return 1;
  unsigned fences = 1;
  for (;;) {
    bool pending = false;  // a lane noted applied that is not yet retired durably
    bool covered = false;
    for (std::uint64_t m = first.applied; m; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      const std::uint64_t s = lanes_[i].state.load(std::memory_order_acquire);
      if (s >> 8 != first.state[i] >> 8) continue;  // freed since (and perhaps reused)
      if (phase_of(s) == lane_covered) covered = true;
      if (phase_of(s) == lane_covered || phase_of(s) == lane_retiring ||
          phase_of(s) == lane_applied)
        pending = true;
    }
    if (!pending) return fences;
    if (covered || fences == 1) {
      close_window(open_window());
      ++fences;
    } else {
      std::this_thread::yield();  // another thread's claim: its drain frees the lane
    }
  }
}

// Whether an applied lane ordered after `order` stores to bytes lane i
// stores to (bit entries commute, and a free is ordered after the
// allocation it undoes): 8-byte stores and range writes. From the targets
// publish noted, or the lanes.
bool heap_impl::meets_later_lane(unsigned i, std::uint64_t order) const noexcept {
  const auto stores_of = [&](unsigned k) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;  // [from, to)
    const lane_state& ls = lanes_[k];
    const auto add = [&](std::uint64_t target) {
      if (target >> sparse::log_op_shift == sparse::log_store)
        spans.emplace_back(target & offset_mask, (target & offset_mask) + 8);
    };
    for_each_range(k, [&](std::uint64_t at, std::uint64_t n) { spans.emplace_back(at, at + n); });
    const unsigned noted = ls.targets_noted.load(std::memory_order_relaxed);
    if (noted <= max_noted_targets) {
      for (unsigned e = 0; e < noted; ++e) add(ls.targets[e].load(std::memory_order_relaxed));
      return spans;
    }
    const sparse::lane_header* h = lane(k);
    const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
    const std::uint64_t count = std::min<std::uint64_t>(
        std::atomic_ref<const std::uint64_t>(h->count).load(), sparse::max_log_entries);
    for (std::uint64_t e = 0; e < count; ++e) add(entries[e].target);
    return spans;
  };
  const auto mine = stores_of(i);
  if (mine.empty()) return false;
  const unsigned used = lanes_used_.load(std::memory_order_acquire);
  for (unsigned k = 0; k < used; ++k) {
    const std::uint64_t phase = phase_of(lanes_[k].state.load(std::memory_order_acquire));
    if (k == i || phase == lane_free || phase == lane_writing ||
        lanes_[k].order.load(std::memory_order_relaxed) < order)
      continue;
    for (const auto& [from, to] : stores_of(k))
      for (const auto& [my_from, my_to] : mine)
        if (from < my_to && my_from < to) return true;
  }
  return false;
}

void heap_impl::use_persistence(const persistence& beneath) noexcept {
  beneath_ = beneath;
  const auto& below = beneath.table();
  model_->media().use_persistence(
      persistence({&fence_flush, &fence_drain, this, below.discard ? &fence_discard : nullptr,
                   below.mode, below.name}));
}

// Open: every committed lane is replayed, in commit order, then every lane
// is cleared (a torn one just so). A lane is committed when its count,
// content and checksum check out; a committed lane whose actions a batch
// could not have made is damage (errc::corrupt, nothing written). An action
// of a lane is skipped when it writes into an object that a lane later in
// the order allocates: that memory was freed and allocated again after it,
// and what the later lane published there is what counts.
void heap_impl::replay_lanes() {
  const persistence& p = model_->media().persist();
  const std::string where = model_->media().path().string() + ": redo lane ";
  struct committed {
    unsigned lane;
    std::uint64_t order;
    std::uint64_t inline_total;
  };
  std::vector<committed> lanes;
  std::uint64_t highest = 0;
  for (unsigned i = 0; i < sparse::nr_lanes; ++i) {
    sparse::lane_header* h = lane(i);
    highest = std::max(highest, h->sequence);
    if (h->count == 0 || h->checksum == 0 || h->count > sparse::max_log_entries) continue;
    const bool inline_format = h->format == sparse::lane_format_inline;
    const std::uint64_t total = inline_format ? inline_bytes(i) : 0;
    if (inline_format ? total == UINT64_MAX : !content_in_bounds(*h)) continue;
    if (h->checksum != lane_checksum(i)) continue;  // torn: never committed
    if (auto why = lane_problem(*h); !why.empty())
      throw error(errc::corrupt,
                  where + std::to_string(i) + " holds an impossible action (" + why + ")");
    std::uint64_t order = h->sequence;
    if (h->reorder != 0 && sparse::reorder_word(h->reorder >> 16, h->checksum) == h->reorder)
      order = h->reorder >> 16;
    lanes.push_back({i, order, total});
    note_lane_bits(*h);
    i += inline_format ? lanes_spanned(h->count, total) - 1 : 0;  // its continuation lanes
  }
  std::sort(lanes.begin(), lanes.end(), [](const committed& a, const committed& b) {
    return broken == replay_out_of_order ? a.order > b.order : a.order < b.order;
  });
  // What each lane allocates, by its entries and the memmap as it is: the
  // objects of the bits it sets, the extents whose heads it stores.
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> allocates(lanes.size());
  for (std::size_t k = 0; k < lanes.size(); ++k) {
    const sparse::lane_header* h = lane(lanes[k].lane);
    const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
    for (std::uint64_t e = 0; e < h->count; ++e) {
      const std::uint64_t op = entries[e].target >> sparse::log_op_shift;
      const std::uint64_t at = entries[e].target & offset_mask;
      if (op == sparse::log_content) {
        allocates[k].emplace_back(at, at + entries[e].value);
      } else if (op == sparse::log_store && !heap_word(model_->base() + at) &&
                 !names_slot_word(at)) {  // a descriptor: an extent's head
        const std::uint64_t pfn = model_->page_to_pfn(
            reinterpret_cast<const sparse::page_descriptor*>(model_->base() + at));
        const sparse::page_descriptor d{entries[e].value};
        if (d.state() == sparse::page_state::extent)
          allocates[k].emplace_back(pfn * sparse::page_size,
                                    (pfn + d.length()) * sparse::page_size);
      }
    }
  }
  const auto reallocated_later = [&](std::size_t k, std::uint64_t from, std::uint64_t to) {
    for (std::size_t later = k + 1; later < lanes.size(); ++later)
      for (auto [start, end] : allocates[later])
        if (from < end && start < to) return true;
    return false;
  };
  for (std::size_t k = 0; k < lanes.size(); ++k) {
    const unsigned i = lanes[k].lane;
    const sparse::lane_header* h = lane(i);
    const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
    std::vector<log_entry> actions;
    for (std::uint64_t e = 0; e < h->count; ++e) {
      const std::uint64_t at = entries[e].target & offset_mask;
      const bool content = entries[e].target >> sparse::log_op_shift == sparse::log_content;
      if (!content && !reallocated_later(k, at, at + 8)) actions.push_back(entries[e]);
    }
    apply(actions.data(), actions.size());
    for (const log_entry& e : actions) {
      auto* word = reinterpret_cast<std::uint64_t*>(model_->base() + (e.target & offset_mask));
      p.flush(word, 8);
      const std::uint64_t op = e.target >> sparse::log_op_shift;
      if (op == sparse::log_set_bits || op == sparse::log_clear_bits)
        if (const auto* digest = small_.digest_of(word)) p.flush(digest, 8);
    }
    if (h->format != sparse::lane_format_inline) continue;
    // The objects' contents, from the inline bytes, in entry order.
    std::uint64_t e = 0, done = 0;
    for_each_inline_piece(
        reinterpret_cast<const std::byte*>(h), h->count, lanes[k].inline_total,
        [&](const std::byte* from, std::uint64_t n) {
          while (n > 0) {
            while (entries[e].target >> sparse::log_op_shift != sparse::log_content) ++e;
            const std::uint64_t at = entries[e].target & offset_mask;
            const std::uint64_t take = std::min(n, entries[e].value - done);
            if (!reallocated_later(k, at, at + entries[e].value)) {
              std::memcpy(model_->base() + at + done, from, take);
              p.flush(model_->base() + at + done, take);
            }
            from += take;
            n -= take;
            done += take;
            if (done == entries[e].value) ++e, done = 0;
          }
        });
  }
  if (!lanes.empty()) p.drain();
  bool cleared = false;
  for (unsigned i = 0; i < sparse::nr_lanes; ++i) {
    sparse::lane_header* h = lane(i);
    if (h->count == 0 && h->checksum == 0) continue;
    h->count = 0;
    h->checksum = 0;
    p.flush(h, sizeof *h);
    cleared = true;
  }
  if (cleared) p.drain();  // a clean open has nothing to clear and costs no fence
  next_order_.store(highest + 1, std::memory_order_relaxed);
}

// The bitmap bits a committed lane sets or clears (reconcile_slabs).
void heap_impl::note_lane_bits(const sparse::lane_header& h) {
  const auto* entries = reinterpret_cast<const log_entry*>(&h + 1);
  for (std::uint64_t e = 0; e < h.count; ++e) {
    const std::uint64_t op = entries[e].target >> sparse::log_op_shift;
    if (op == sparse::log_set_bits || op == sparse::log_clear_bits)
      lane_bits_.emplace_back(entries[e].target & offset_mask, entries[e].value);
  }
}

// A deferred batch is checked now and queued; sync() publishes the queue as
// one batch (so after a crash the survivors are a prefix of the queue, and
// all of it once sync returned). A batch that does not fit with the queue
// in one lane publishes the queue first.
void heap_impl::publish_deferred(std::span<const reservation> reserved,
                                 std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
                                 std::span<void* const> frees,
                                 std::span<const std::uint64_t> streamed,
                                 std::span<const range_write> writes,
                                 const std::byte* write_bytes) {
  for (const auto& [where, value] : stores) check_store_target(where);
  std::lock_guard lock(group_mutex_);
  deferred_group& g = group_;
  if (!writes.empty()) {  // never deferred: the queue, then this batch
    sync_locked();
    publish(reserved, stores, frees, streamed, true, {}, writes, write_bytes);
    return;
  }
  for (void* p : frees) {
    if (std::count(frees.begin(), frees.end(), p) > 1 ||
        std::find(g.frees.begin(), g.frees.end(), p) != g.frees.end())
      throw error(errc::invalid_argument, "publish: the object is freed twice before sync()");
    (void)check_free(p);
  }
  std::uint64_t content = 0;
  for (const reservation& r : reserved) content += r.size;
  const auto actions = [](const deferred_group& d) {
    return 2 * d.reserved.size() + d.stores.size() + d.frees.size();
  };
  const std::size_t mine = 2 * reserved.size() + stores.size() + frees.size();
  if (actions(g) + mine > sparse::max_log_entries ||
      (g.content + content > sparse::max_logged_content && !g.reserved.empty()))
    sync_locked();
  if (mine > sparse::max_log_entries) {
    // Alone beyond a lane with its contents logged: published now, after
    // the queue (so a failure leaves the caller's reservations to it).
    publish(reserved, stores, frees, streamed, true);
    return;
  }
  const std::size_t base = g.reserved.size();
  for (const reservation& r : reserved) g.reserved.emplace_back(r.ptr, r.size);  // the queue's now
  g.stores.insert(g.stores.end(), stores.begin(), stores.end());
  g.frees.insert(g.frees.end(), frees.begin(), frees.end());
  g.streamed.resize((g.reserved.size() + 63) / 64);
  for (std::size_t k = 0; k < reserved.size(); ++k)
    if (k / 64 < streamed.size() && (streamed[k / 64] >> (k % 64)) & 1)
      g.streamed[(base + k) / 64] |= std::uint64_t{1} << ((base + k) % 64);
  g.content += content;
}

void heap_impl::sync() {
  std::lock_guard lock(group_mutex_);
  sync_locked();
}

void heap_impl::sync_locked() {
  deferred_group& g = group_;
  if (g.reserved.empty() && g.stores.empty() && g.frees.empty()) return;
  try {
    publish(g.reserved, g.stores, g.frees, g.streamed, true);
  } catch (...) {
    for (reservation& r : g.reserved) cancel(r);  // the queue is dropped whole
    g.clear();
    throw;
  }
  g.clear();  // (keeping the vectors' room for the next queue)
}

}  // namespace detail

// ---- batch ----

batch::batch(heap& h)
    : heap_(&h.live()), heap_id_(heap_->id()), heap_slot_(heap_->registry_slot()) {
  heap_->refuse_if_read_only("batch");
}

batch::batch(batch&& other) noexcept
    : heap_(other.heap_),
      heap_id_(other.heap_id_),
      heap_slot_(other.heap_slot_),
      reserved_(std::move(other.reserved_)),
      stores_(std::move(other.stores_)),
      frees_(std::move(other.frees_)),
      streamed_(std::move(other.streamed_)),
      sources_(std::move(other.sources_)),
      writes_(std::move(other.writes_)),
      write_bytes_(std::move(other.write_bytes_)) {
  other.reserved_.clear();
}

batch::~batch() {
  cancel();
}

detail::heap_impl& batch::live() const {
  if (!detail::heap_impl::is_open(heap_id_, heap_slot_))
    throw error(errc::invalid_argument, "batch: its heap is closed");
  return *heap_;
}

void batch::count_one() {
  (void)live();
  if (size() >= max_actions)
    throw error(errc::too_large, "batch: more than " + std::to_string(max_actions) + " actions");
}

void* batch::reserve(std::size_t size) {
  count_one();
  reservation r = heap_->reserve(size);
  if (!r)
    throw error(errc::out_of_space, "reserve: no room for " + std::to_string(size) + " bytes");
  reserved_.push_back(std::move(r));
  return reserved_.back().ptr;
}

void batch::adopt(reservation&& r) {
  if (!r)
    throw error(errc::invalid_argument,
                "batch: adopting an empty reservation (cancelled or never made)");
  count_one();
  if (!heap_->owns(r))
    throw error(errc::invalid_argument,
                "batch: adopting a reservation that is not one of this batch's heap");
  reserved_.push_back(std::move(r));
}

void batch::set(std::uint64_t* where, std::uint64_t value) {
  count_one();
  stores_.emplace_back(where, value);
}
void batch::write(void* dst, const void* src, std::size_t n) {
  count_one();
  if (src == nullptr) throw error(errc::invalid_argument, "batch: write from a null source");
  if (n > max_write_bytes - write_bytes_.size())
    throw error(errc::too_large,
                "batch: more than " + std::to_string(max_write_bytes) + " bytes of writes");
  heap_->check_write_target(dst, n);
  const auto* from = static_cast<const std::byte*>(src);
  writes_.push_back({dst, write_bytes_.size(), n});
  write_bytes_.insert(write_bytes_.end(), from, from + n);
}

void batch::defer_free(void* p) {
  (void)live();
  if (p == nullptr) return;
  count_one();
  frees_.push_back(p);
}

// Below this size an object is copied with ordinary stores and flushed at
// publish (libpmem's own threshold for non-temporal copies): a partial line
// streamed costs more than it saves. Whether it was streamed.
namespace {
constexpr std::size_t stream_threshold = 256;
bool copy_in(const detail::heap_impl& h, void* at, const void* src, std::size_t size) {
  if (size < stream_threshold) {
    std::memcpy(at, src, size);  // flushed at publish, as a constructed object
    return false;
  }
  h.stream(at, src, size);
  return true;
}
}  // namespace

void* batch::reserve_copy(const void* src, std::size_t size) {
  void* at = reserve(size);
  if (!copy_in(*heap_, at, src, size)) return at;
  const std::size_t k = reserved_.size() - 1;
  if (streamed_.size() <= k / 64) streamed_.resize(k / 64 + 1);
  streamed_[k / 64] |= std::uint64_t{1} << (k % 64);
  return at;
}

// reserve_copy, and publish() stages the lane's copy from src rather than
// from the object the non-temporal stores just wrote to memory (a read back
// from DRAM): src must not change until publish, which allocate_publish
// guarantees by publishing at once.
void* batch::reserve_copy_staged(const void* src, std::size_t size) {
  void* at = reserve_copy(src, size);
  const std::size_t k = reserved_.size() - 1;
  if (sources_.size() <= k) sources_.resize(k + 1);
  sources_[k] = {src, size};
  return at;
}

void batch::publish(durability d) {
  if (d == durability::deferred)  // (the sources may change before sync: staged from the objects)
    live().publish_deferred({reserved_.data(), reserved_.size()}, {stores_.data(), stores_.size()},
                            {frees_.data(), frees_.size()}, {streamed_.data(), streamed_.size()},
                            {writes_.data(), writes_.size()}, write_bytes_.data());
  else
    live().publish({reserved_.data(), reserved_.size()}, {stores_.data(), stores_.size()},
                   {frees_.data(), frees_.size()}, {streamed_.data(), streamed_.size()}, false,
                   {sources_.data(), sources_.size()}, {writes_.data(), writes_.size()},
                   write_bytes_.data());
  reserved_.clear();
  stores_.clear();
  frees_.clear();
  streamed_.clear();
  sources_.clear();
  writes_.clear();
  write_bytes_.clear();
}

// ---- heap::allocate_publish, heap::free_clear ----
// The same publications as a batch of one reservation (or one free) and one
// store, without building a batch. A copy-in published at once stages its
// lane from src (which cannot change in between); a deferred one from the
// object, at sync.

void heap::publish_reserved(reservation&& r, std::uint64_t* dest, std::uint64_t value, durability d,
                            const void* src) {
  detail::heap_impl& h = live();
  reservation mine = std::move(r);
  const std::pair<std::uint64_t*, std::uint64_t> store{dest, value};
  const std::uint64_t streamed = src != nullptr && copy_in(h, mine.ptr, src, mine.size) ? 1 : 0;
  const copy_source source{src, src != nullptr ? mine.size : 0};
  try {
    if (d == durability::deferred)
      h.publish_deferred({&mine, 1}, {&store, 1}, {}, {&streamed, 1});
    else
      h.publish({&mine, 1}, {&store, 1}, {}, {&streamed, 1}, false, {&source, 1});
  } catch (...) {
    h.cancel(mine);
    throw;
  }
}

// A movable object is pinned through its owner first, so that a compaction
// moving it meanwhile finishes, and what is freed is where the owner points
// now (else the move could publish after the free, or the free free the
// old place); it is freed at once, not deferred (a deferred free would
// find it moved by then).
void heap::publish_free(std::uint64_t* dest, void* object, durability d) {
  detail::heap_impl& h = live();  // first: an empty handle throws even for a null dest
  h.refuse_if_read_only("free_clear");
  if (object == nullptr) return;
  if (h.is_movable(object)) {
    object = h.pin(dest);
    if (object == nullptr) return;
    const std::pair<std::uint64_t*, std::uint64_t> store{dest, 0};
    try {
      h.publish({}, {&store, 1}, {&object, 1}, {}, false, {});
    } catch (...) {
      h.unpin(object);
      throw;
    }
    h.unpin(object);
    return;
  }
  const std::pair<std::uint64_t*, std::uint64_t> store{dest, 0};
  if (d == durability::deferred)
    h.publish_deferred({}, {&store, 1}, {&object, 1}, {});
  else
    h.publish({}, {&store, 1}, {&object, 1}, {}, false, {});
}

void heap::free_clear_word(std::uint64_t* dest, std::error_code& ec) noexcept {
  ec.clear();
  void* object = nullptr;
  if (const std::uint64_t v = std::atomic_ref<std::uint64_t>(*dest).load(); v != 0)
    object = reinterpret_cast<std::byte*>(dest) + static_cast<std::int64_t>(v);
  if (object == nullptr || !writable("free_clear", ec)) return;
  detail::into_error_code(ec, [&] { publish_free(dest, object, durability::immediate); });
}

// A closed heap took the reservations with it: nothing to give back.
void batch::cancel() noexcept {
  if (!reserved_.empty() && detail::heap_impl::is_open(heap_id_, heap_slot_))
    for (auto& r : reserved_) heap_->cancel(r);
  reserved_.clear();
  stores_.clear();
  frees_.clear();
  streamed_.clear();
  sources_.clear();
  writes_.clear();
  write_bytes_.clear();
}

}  // namespace daxalloc
