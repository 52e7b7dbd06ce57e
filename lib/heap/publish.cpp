// Batches: reserve / publish / cancel through redo-log lanes, and their
// replay at open. See daxalloc/batch.hpp for the contract and
// sparse/layout.hpp for the lane format.
#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>

#include "daxalloc/batch.hpp"
#include "heap/heap_impl.hpp"

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
enum breakage : int { intact, no_commit_fence, no_logged_content, no_lane_settle };
constexpr breakage broken = static_cast<breakage>(DAXALLOC_BREAK);

}  // namespace

sparse::lane_header* heap_impl::lane(unsigned i) const noexcept {
  return reinterpret_cast<sparse::lane_header*>(model_->base() + model_->geo().lanes_offset() +
                                                std::uint64_t{i} * sparse::lane_size);
}

unsigned heap_impl::acquire_lane() noexcept {
  for (;;) {
    std::uint64_t busy = busy_lanes_.load(std::memory_order_relaxed);
    while (busy != ~std::uint64_t{0}) {
      const unsigned i = static_cast<unsigned>(std::countr_one(busy));
      if (busy_lanes_.compare_exchange_weak(busy, busy | std::uint64_t{1} << i,
                                            std::memory_order_acquire)) {
        unsigned used = lanes_used_.load(std::memory_order_relaxed);
        while (used <= i && !lanes_used_.compare_exchange_weak(used, i + 1)) {
        }
        return i;
      }
    }
    std::this_thread::yield();  // all 64 lanes in use
  }
}

void heap_impl::release_lane(unsigned i) noexcept {
  busy_lanes_.fetch_and(~(std::uint64_t{1} << i), std::memory_order_release);
}

std::uint64_t heap_impl::lane_checksum(const sparse::lane_header& h) const noexcept {
  sparse::fletcher64_sum sum;
  sum.add(&h.sequence, 8);
  sum.add(&h.count, 8);
  const auto* entries = reinterpret_cast<const log_entry*>(&h + 1);  // they follow the header
  sum.add(entries, h.count * sizeof(log_entry));
  for (std::uint64_t e = 0; e < h.count; ++e)
    if (entries[e].target >> sparse::log_op_shift == sparse::log_content)
      sum.add(model_->base() + (entries[e].target & offset_mask), entries[e].value);
  return sum.value();
}

// What a lane may write at replay: memory past the head (user words, slab
// bitmaps, memmap descriptors) and the name-table slot.
bool heap_impl::log_target(const void* p) const noexcept {
  const auto* at = static_cast<const std::byte*>(p);
  if (at == model_->base() + sparse::names_slot_offset) return true;
  return model_->media().contains(at, 8) && reinterpret_cast<std::uintptr_t>(at) % 8 == 0 &&
         static_cast<std::uint64_t>(at - model_->base()) >= model_->geo().head_size();
}

bool heap_impl::heap_word(const void* p) const noexcept {
  const auto* at = static_cast<const std::byte*>(p);
  if (at == model_->base() + sparse::names_slot_offset) return true;
  // Not the head, and not a memmap block: metadata is written by the allocators only.
  return model_->media().contains(at, 8) && reinterpret_cast<std::uintptr_t>(at) % 8 == 0 &&
         static_cast<std::uint64_t>(at - model_->base()) >= model_->geo().head_size() &&
         model_->pfn_valid(static_cast<std::uint64_t>(at - model_->base()) >> sparse::page_shift) &&
         model_->get_pageblock_migratetype(static_cast<std::uint64_t>(at - model_->base()) >>
                                           sparse::page_shift) != sparse::migratetype::metadata;
}

// Applies entries, then flushes their targets: a locked read-modify-write
// issued after a CLWB waits for it as a fence would, so none follows one.
void heap_impl::apply(const log_entry* entries, std::size_t n) const noexcept {
  const auto word = [&](const log_entry& e) {
    return reinterpret_cast<std::uint64_t*>(model_->base() + (e.target & offset_mask));
  };
  for (std::size_t k = 0; k < n; ++k) {
    std::atomic_ref<std::uint64_t> ref(*word(entries[k]));
    switch (entries[k].target >> sparse::log_op_shift) {
      case sparse::log_store:
        ref.store(entries[k].value, std::memory_order_release);
        break;
      case sparse::log_set_bits:
        ref.fetch_or(entries[k].value, std::memory_order_release);
        break;
      case sparse::log_clear_bits:
        ref.fetch_and(~entries[k].value, std::memory_order_release);
        break;
      default:  // log_content: checked, not applied
        break;
    }
  }
  for (std::size_t k = 0; k < n; ++k)
    if (entries[k].target >> sparse::log_op_shift != sparse::log_content)
      model_->media().persist().flush(word(entries[k]), 8);
}

void heap_impl::publish(std::span<const reservation> reserved,
                        std::span<const std::pair<std::uint64_t*, std::uint64_t>> stores,
                        std::span<void* const> frees) {
  boost::container::small_vector<log_entry, 8> entries;
  std::uint64_t content = 0;
  for (const reservation& r : reserved) content += r.size;
  // Small contents are covered by the lane's checksum; larger ones are made
  // durable by a fence of their own before the lane is written.
  const bool logged_content =
      broken != no_logged_content && content <= sparse::max_logged_content &&
      2 * reserved.size() + stores.size() + frees.size() <= sparse::max_log_entries;
  const auto offset_of = [&](const void* p) {
    return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_->base());
  };
  for (const reservation& r : reserved) {
    if (r.size <= alloc::max_small_size) {
      const auto at = small_.bit_of(r.ptr, alloc::size_class_of(r.size));
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
  for (const auto& [where, value] : stores) {
    if (!heap_word(where))
      throw error(errc::invalid_argument,
                  "publish: a store target is not an aligned 8-byte word inside the heap's memory");
    entries.push_back({offset_of(where), value});
  }
  boost::container::small_vector<std::pair<unsigned, void*>, 2> small_frees;  // class, object
  boost::container::small_vector<std::pair<std::uint64_t, std::uint64_t>, 2>
      extent_frees;  // pfn, pages
  for (void* p : frees) {
    if (std::count(frees.begin(), frees.end(), p) > 1)
      throw error(errc::invalid_argument, "publish: the batch frees the same object twice");
    if (is_root(p)) throw error(errc::invalid_argument, "publish: the root object cannot be freed");
    if (const auto at = small_.locate(p)) {
      if ((std::atomic_ref<std::uint64_t>(*at->word).load() & at->mask) == 0)
        throw error(errc::invalid_argument,
                    "publish: defer_free of an object that is not allocated");
      entries.push_back(
          {offset_of(at->word) | std::uint64_t{sparse::log_clear_bits} << sparse::log_op_shift,
           at->mask});
      small_frees.emplace_back(at->cls, p);
      continue;
    }
    const sparse::page_descriptor* head = extent_head(p);
    if (head == nullptr)
      throw error(errc::invalid_argument,
                  "publish: defer_free of a pointer this heap did not allocate");
    entries.push_back({offset_of(&head->info), 0});
    extent_frees.emplace_back(offset_of(p) / sparse::page_size, head->length());
  }
  if (entries.size() > sparse::max_log_entries)
    throw error(errc::too_large, "publish: " + std::to_string(entries.size()) +
                                     " actions, more than a batch holds (" +
                                     std::to_string(sparse::max_log_entries) + ")");
  if (entries.empty()) return;

  const persistence& p = model_->media().persist();
  const unsigned i = acquire_lane();  // (its compare-and-swap before any flush)
  for (const reservation& r : reserved) p.flush(r.ptr, r.size);  // what the constructors wrote
  if (!logged_content && !reserved.empty() && broken != no_logged_content)
    p.drain();  // fence 0, for large contents only
  sparse::lane_header* h = lane(i);
  auto* slots = reinterpret_cast<log_entry*>(h + 1);
  std::memcpy(slots, entries.data(), entries.size() * sizeof(log_entry));
  h->sequence += 1;
  h->count = entries.size();
  h->checksum = lane_checksum(*h);
  p.flush(h, sizeof *h + entries.size() * sizeof(log_entry));
  if (broken != no_commit_fence) p.drain();  // fence 1: the batch is committed
  apply(entries.data(), entries.size());
  p.drain();  // fence 2: applied, the batch is durable
  // Invalidated lazily: made durable by this heap's next fence (fence_drain),
  // which flushes the header itself; the flush below, issued last so that no
  // locked instruction waits for it, covers fences of this thread.
  std::atomic_ref<std::uint64_t>(h->count).store(0, std::memory_order_relaxed);
  std::atomic_ref<std::uint64_t>(h->checksum).store(0, std::memory_order_relaxed);
  if (beneath_.mode() != persistence_mode::msync && beneath_.mode() != persistence_mode::none)
    lane_invalidated_[i].fetch_add(1, std::memory_order_release);  // msync flushes synchronously
  release_lane(i);
  for (auto [cls, object] : small_frees) put_small(cls, object);
  for (auto [pfn, pages] : extent_frees) pages_.free(pfn, pages);
  p.flush(h, sizeof *h);
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
        offset > model_->media().size() || length > model_->media().size() - offset)
      return false;
  }
  return true;
}

// ---- the heap's fences ----

// The region's persistence is this wrapper from open on: flushes and discards
// pass through; a fence first flushes the header of every lane invalidated
// since the last fence that covered it (publish leaves that to the next
// fence, on whichever thread), so the invalidation reaches the media no later
// than anything the fence makes durable. A thread that acts on a batch after
// publish returned sees the lane's count, so its fences cover the lane.
void heap_impl::fence_flush(void* self, const void* addr, std::size_t len) {
  const auto& below = static_cast<heap_impl*>(self)->beneath_.table();
  below.flush(below.context, addr, len);
}

void heap_impl::fence_discard(void* self, const void* addr, std::size_t len) {
  static_cast<heap_impl*>(self)->beneath_.discarded(addr, len);
}

void heap_impl::fence_drain(void* self) {
  auto* h = static_cast<heap_impl*>(self);
  std::array<std::uint64_t, sparse::nr_lanes> seen;
  std::uint64_t pending = 0;
  const unsigned used = h->lanes_used_.load(std::memory_order_acquire);
  for (unsigned i = 0; i < used; ++i) {
    seen[i] = h->lane_invalidated_[i].load(std::memory_order_acquire);
    if (seen[i] == h->lane_settled_[i].load(std::memory_order_relaxed) || broken == no_lane_settle)
      continue;
    h->beneath_.flush(h->lane(i), sizeof(sparse::lane_header));
    pending |= std::uint64_t{1} << i;
  }
  const auto& below = h->beneath_.table();
  below.drain(below.context);
  for (; pending; pending &= pending - 1) {
    const auto i = static_cast<unsigned>(std::countr_zero(pending));
    std::uint64_t settled = h->lane_settled_[i].load(std::memory_order_relaxed);
    while (settled < seen[i] && !h->lane_settled_[i].compare_exchange_weak(settled, seen[i])) {
    }
  }
}

void heap_impl::use_persistence(const persistence& beneath) noexcept {
  beneath_ = beneath;
  const auto& below = beneath.table();
  model_->media().use_persistence(
      persistence({&fence_flush, &fence_drain, this, below.discard ? &fence_discard : nullptr,
                   below.mode, below.name}));
}

// Open: every committed lane is replayed (its actions are idempotent), every
// torn one is just cleared.
void heap_impl::replay_lanes() {
  const persistence& p = model_->media().persist();
  const std::string where = model_->media().path().string() + ": redo lane ";
  for (unsigned i = 0; i < sparse::nr_lanes; ++i) {
    sparse::lane_header* h = lane(i);
    if (h->count == 0 && h->checksum == 0) continue;
    const bool committed = h->count >= 1 && h->count <= sparse::max_log_entries &&
                           h->checksum != 0 && content_in_bounds(*h) &&
                           h->checksum == lane_checksum(*h);
    if (committed) {
      const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
      for (std::uint64_t e = 0; e < h->count; ++e) {
        const std::uint64_t op = entries[e].target >> sparse::log_op_shift;
        if (op != sparse::log_content &&  // those are checked by content_in_bounds
            !log_target(model_->base() + (entries[e].target & offset_mask)))
          throw error(errc::corrupt, where + std::to_string(i) + " holds an impossible action");
      }
      apply(entries, h->count);
      p.drain();
    }
    h->count = 0;
    h->checksum = 0;
    p.persist(h, sizeof *h);
  }
}

}  // namespace detail

// ---- batch ----

batch::batch(batch&& other) noexcept
    : heap_(other.heap_),
      reserved_(std::move(other.reserved_)),
      stores_(std::move(other.stores_)),
      frees_(std::move(other.frees_)) {
  other.reserved_.clear();
}

batch::~batch() {
  cancel();
}

void batch::count_one() {
  if (size() >= max_actions)
    throw error(errc::too_large, "batch: more than " + std::to_string(max_actions) + " actions");
}

void* batch::reserve(std::size_t size) {
  count_one();
  reservation r = heap_->reserve(size);
  reserved_.push_back(r);
  return r.ptr;
}

void batch::adopt(reservation& r) {
  if (!r)
    throw error(errc::invalid_argument,
                "batch: adopting an empty reservation (cancelled or never made)");
  count_one();
  reserved_.push_back(r);
  r = {};
}

void batch::set(std::uint64_t* where, std::uint64_t value) {
  count_one();
  stores_.emplace_back(where, value);
}

void batch::defer_free(void* p) {
  count_one();
  frees_.push_back(p);
}

void batch::publish() {
  heap_->impl_->publish({reserved_.data(), reserved_.size()}, {stores_.data(), stores_.size()},
                        {frees_.data(), frees_.size()});
  reserved_.clear();
  stores_.clear();
  frees_.clear();
}

void batch::cancel() noexcept {
  for (auto& r : reserved_) heap_->cancel(r);
  reserved_.clear();
  stores_.clear();
  frees_.clear();
}

}  // namespace daxalloc
