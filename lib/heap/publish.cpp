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
                                            std::memory_order_acquire))
        return i;
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
  sum.add(&h + 1, h.count * sizeof(log_entry));  // the entries follow the header
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

void heap_impl::apply(const log_entry& e) const noexcept {
  auto* word = reinterpret_cast<std::uint64_t*>(model_->base() + (e.target & offset_mask));
  std::atomic_ref<std::uint64_t> ref(*word);
  switch (e.target >> sparse::log_op_shift) {
    case sparse::log_store:
      ref.store(e.value, std::memory_order_release);
      break;
    case sparse::log_set_bits:
      ref.fetch_or(e.value, std::memory_order_release);
      break;
    case sparse::log_clear_bits:
      ref.fetch_and(~e.value, std::memory_order_release);
      break;
  }
  model_->media().persist().flush(word, 8);
}

void heap_impl::publish(const std::vector<reservation>& reserved,
                        const std::vector<std::pair<std::uint64_t*, std::uint64_t>>& stores,
                        const std::vector<void*>& frees) {
  std::vector<log_entry> entries;
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
  }
  for (const auto& [where, value] : stores) {
    if (!heap_word(where))
      throw error(errc::invalid_argument,
                  "publish: a store target is not an aligned 8-byte word inside the heap's memory");
    entries.push_back({offset_of(where), value});
  }
  std::vector<std::pair<unsigned, void*>> small_frees;                // class, object
  std::vector<std::pair<std::uint64_t, std::uint64_t>> extent_frees;  // pfn, pages
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
    const std::uint64_t offset = offset_of(p), pfn = offset / sparse::page_size;
    const sparse::page_descriptor* head =
        model_->media().contains(p) && offset % sparse::page_size == 0 && model_->pfn_valid(pfn)
            ? model_->pfn_to_page(pfn)
            : nullptr;
    if (head == nullptr || head->state() != sparse::page_state::extent)
      throw error(errc::invalid_argument,
                  "publish: defer_free of a pointer this heap did not allocate");
    entries.push_back({offset_of(&head->info), 0});
    extent_frees.emplace_back(pfn, head->length());
  }
  if (entries.size() > sparse::max_log_entries)
    throw error(errc::too_large, "publish: " + std::to_string(entries.size()) +
                                     " actions, more than a batch holds (" +
                                     std::to_string(sparse::max_log_entries) + ")");
  if (entries.empty()) return;

  const persistence& p = model_->media().persist();
  for (const reservation& r : reserved) p.flush(r.ptr, r.size);  // what the constructors wrote
  const unsigned i = acquire_lane();
  sparse::lane_header* h = lane(i);
  auto* slots = reinterpret_cast<log_entry*>(h + 1);
  std::memcpy(slots, entries.data(), entries.size() * sizeof(log_entry));
  h->sequence += 1;
  h->count = entries.size();
  h->checksum = lane_checksum(*h);
  p.flush(h, sizeof *h + entries.size() * sizeof(log_entry));
  p.drain();  // fence 1: the batch is committed
  for (const log_entry& e : entries) apply(e);
  p.drain();  // fence 2: applied
  std::atomic_ref<std::uint64_t>(h->count).store(0, std::memory_order_relaxed);
  std::atomic_ref<std::uint64_t>(h->checksum).store(0, std::memory_order_relaxed);
  p.persist(h, sizeof *h);  // fence 3: the lane is free
  release_lane(i);
  for (auto [cls, object] : small_frees) put_small(cls, object);
  for (auto [pfn, pages] : extent_frees) pages_.free(pfn, pages);
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
                           h->checksum != 0 && h->checksum == lane_checksum(*h);
    if (committed) {
      const auto* entries = reinterpret_cast<const log_entry*>(h + 1);
      for (std::uint64_t e = 0; e < h->count; ++e) {
        const std::uint64_t op = entries[e].target >> sparse::log_op_shift;
        if (op > sparse::log_clear_bits ||
            !log_target(model_->base() + (entries[e].target & offset_mask)))
          throw error(errc::corrupt, where + std::to_string(i) + " holds an impossible action");
      }
      for (std::uint64_t e = 0; e < h->count; ++e) apply(entries[e]);
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
  heap_->impl_->publish(reserved_, stores_, frees_);
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
