// Movable objects (format 7): allocation with an owner, hand-over, pins,
// relocation and compaction. heap.hpp states the contract; the header is
// sparse::movable_header (docs/on-media-format.md).
//
// Every change is a batch of the heap's redo log (publish.cpp), so a crash
// leaves each one whole or not at all:
//   allocate    reserve a slot of the movable arena, construct, publish {bit
//               set, owner = it, its header written}.
//   move_owner  publish {to = it, from = null, header rewritten}.
//   relocate    copy the bytes into a slot below (non-temporal), publish {new
//               bit set, owner = copy, header of the copy written, old bit
//               clear, headers of its children rewritten}.
// A header is always one of the batch's range writes: logged in its lane,
// so a replay writes it again. (Written before the commit instead, it could
// be lost while the lane's lines, which reach the media in any order before
// the commit fence, are all durable: the crash suite found that.)
#include <algorithm>
#include <array>
#include <boost/container/small_vector.hpp>
#include <chrono>
#include <cstring>
#include <thread>

#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"

namespace daxalloc::detail {
namespace {

using alloc::movable_skew;
using alloc::size_classes;
using sparse::movable_header;

constexpr std::uint32_t pin_moving = 0x80000000u;

// The crash suite's self-test (-Dbreak_persistence=movable-header): a
// header written and flushed before the commit instead of logged with it.
#ifndef DAXALLOC_BREAK
#define DAXALLOC_BREAK 0
#endif
constexpr bool unlogged_headers = DAXALLOC_BREAK == 6;

movable_header* header_of(const void* object) noexcept {
  return reinterpret_cast<movable_header*>(
      const_cast<std::byte*>(static_cast<const std::byte*>(object) - movable_skew));
}

std::uint64_t load(const std::uint64_t* word) noexcept {
  return std::atomic_ref<std::uint64_t>(*const_cast<std::uint64_t*>(word))
      .load(std::memory_order_acquire);
}

// What a pptr at `word` holds to refer to `object`.
std::uint64_t pptr_to(const void* word, const void* object) noexcept {
  return static_cast<std::uint64_t>(reinterpret_cast<std::intptr_t>(object) -
                                    reinterpret_cast<std::intptr_t>(word));
}

}  // namespace

bool heap_impl::is_movable(const void* p) const noexcept {
  return model_->media().contains(p) && small_.any_class_of(p) >= 0 && small_.movable(p);
}

std::uint64_t* heap_impl::owner_of(const void* p, bool* refers) const noexcept {
  if (refers) *refers = false;
  if (!is_movable(p)) return nullptr;
  const movable_header* h = header_of(p);
  const std::uint64_t owner = load(&h->owner), check = load(&h->check);
  const std::uint64_t offset =
      static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_->base());
  if ((owner & sparse::owner_kind_mask) != sparse::owner_pptr ||
      check != sparse::movable_check(owner, offset) || owner == 0 ||
      !model_->media().contains(model_->base() + owner, 8))
    return nullptr;
  auto* word = reinterpret_cast<std::uint64_t*>(model_->base() + owner);
  if (refers) *refers = load(word) == pptr_to(word, p);
  return word;
}

std::atomic<std::uint32_t>& heap_impl::pin_count(const void* p) const noexcept {
  auto h = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p) >> 4);
  h *= 0x9e3779b97f4a7c15ull;
  return pins_[h >> (64 - 16)];
}

void* heap_impl::allocate_movable(std::size_t size, std::uint64_t* owner,
                                  void (*construct)(void*, void*), void* context) {
  refuse_if_read_only("allocate_movable");
  if (size == 0) size = 1;
  if (size > heap::max_movable_size)
    throw error(errc::too_large, "allocate_movable: " + std::to_string(size) +
                                     " bytes; a movable object holds at most " +
                                     std::to_string(heap::max_movable_size));
  check_store_target(owner);
  if (load(owner) != 0)
    throw error(errc::invalid_argument,
                "allocate_movable: the owner is not null (free_clear what it refers to first)");
  const unsigned cls = alloc::size_class_of(size + movable_skew);
  void* object = nullptr;
  if (small_.take(small_.movable_arena(), cls, &object, 1) == 0 &&
      !(reclaim() && small_.take(small_.movable_arena(), cls, &object, 1) == 1))
    throw error(errc::out_of_space,
                "allocate_movable: no space for " + std::to_string(size) + " bytes");
  reservation r(object, size_classes[cls].size - movable_skew);
  const std::uint64_t at = static_cast<std::uint64_t>(static_cast<std::byte*>(object) -
                                                      model_->base()),
                      word = static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(owner) -
                                                        model_->base());
  if (word + 8 > at - movable_skew && word < at + r.size) {
    cancel(r);
    throw error(errc::invalid_argument, "allocate_movable: the owner lies in the object");
  }
  const movable_header h{word | sparse::owner_pptr, sparse::movable_check(word, at)};
  const range_write w{header_of(object), 0, sizeof h};
  try {
    construct(object, context);
    const std::pair<std::uint64_t*, std::uint64_t> store{owner, pptr_to(owner, object)};
    if (unlogged_headers) {
      std::memcpy(header_of(object), &h, sizeof h);
      model_->media().persist().flush(header_of(object), sizeof h);
      publish({&r, 1}, {&store, 1}, {}, {}, true);
    } else {
      publish({&r, 1}, {&store, 1}, {}, {}, true, {}, {&w, 1},
              reinterpret_cast<const std::byte*>(&h));
    }
  } catch (...) {
    cancel(r);
    throw;
  }
  return object;
}

void heap_impl::move_owner(std::uint64_t* from, std::uint64_t* to) {
  refuse_if_read_only("move_owner");
  check_store_target(from);
  check_store_target(to);
  if (load(to) != 0 || to == from)
    throw error(errc::invalid_argument, "move_owner: the new owner is not null");
  // Pinned, so that compaction does not move it meanwhile.
  void* object = pin(from);
  if (object == nullptr) throw error(errc::invalid_argument, "move_owner: the owner is null");
  struct unpin_at_exit {
    heap_impl* h;
    void* p;
    ~unpin_at_exit() { h->unpin(p); }
  } unpin_later{this, object};
  bool refers = false;
  if (owner_of(object, &refers) != from || !refers)
    throw error(errc::invalid_argument,
                "move_owner: the object the owner refers to is not a movable object it owns");
  const std::uint64_t at = static_cast<std::uint64_t>(static_cast<std::byte*>(object) -
                                                      model_->base()),
                      word = static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(to) -
                                                        model_->base());
  if (word + 8 > at - movable_skew &&
      word < at + small_.object_size(object, static_cast<unsigned>(small_.any_class_of(object))))
    throw error(errc::invalid_argument, "move_owner: the new owner lies in the object");
  const movable_header h{word | sparse::owner_pptr, sparse::movable_check(word, at)};
  const std::pair<std::uint64_t*, std::uint64_t> stores[2] = {{to, pptr_to(to, object)}, {from, 0}};
  const range_write w{header_of(object), 0, sizeof h};
  publish({}, stores, {}, {}, true, {}, {&w, 1}, reinterpret_cast<const std::byte*>(&h));
}

void* heap_impl::pin(const std::uint64_t* owner) {
  if (!model_->media().contains(owner, 8))
    throw error(errc::invalid_argument, "pin: the owner does not lie in the heap");
  for (;;) {
    const std::uint64_t v = load(owner);
    if (v == 0) return nullptr;
    auto* p = reinterpret_cast<std::byte*>(const_cast<std::uint64_t*>(owner)) +
              static_cast<std::int64_t>(v);
    std::atomic<std::uint32_t>& pins = pin_count(p);
    std::uint32_t n = pins.load(std::memory_order_acquire);
    if (n & pin_moving) {
      std::this_thread::yield();  // compaction is moving it (or one sharing the slot)
      continue;
    }
    if (!pins.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) continue;
    if (load(owner) == v) return p;
    pins.fetch_sub(1, std::memory_order_release);  // moved meanwhile: again
  }
}

void heap_impl::unpin_movable(const void* p) {
  std::atomic<std::uint32_t>& pins = pin_count(p);
  std::uint32_t n = pins.load(std::memory_order_acquire);
  do {
    if ((n & ~pin_moving) == 0)
      throw error(errc::invalid_argument, "unpin: the object is not pinned");
  } while (!pins.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel));
}

// The object's bytes go to dest with non-temporal stores (its header
// naming dest), the pptrs in it that own movable children are rewritten in
// the copy, and one batch commits: dest allocated, the owner = dest, the
// object free, each child's header naming its owner's new place.
bool heap_impl::relocate(void* object, void* dest, compact_result& result) {
  bool refers = false;
  std::uint64_t* owner = owner_of(object, &refers);
  const auto cls = static_cast<unsigned>(small_.any_class_of(object));
  const std::size_t size = small_.object_size(object, cls);
  reservation r(dest, size);
  if (owner == nullptr || !refers) {
    ++result.objects_kept;
    cancel(r);
    return false;
  }
  const auto offset_of = [&](const void* p) {
    return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - model_->base());
  };
  // Its children: pptr words whose target's header names the word.
  struct child {
    std::size_t at;  // the word's offset in the object
    void* target;
  };
  boost::container::small_vector<child, 8> children;
  const auto* words = static_cast<const std::uint64_t*>(object);
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const std::uint64_t v = load(words + i / 8);
    if (v == 0) continue;
    void* target = const_cast<std::byte*>(reinterpret_cast<const std::byte*>(words + i / 8)) +
                   static_cast<std::int64_t>(v);
    if (target == object || !is_movable(target)) continue;
    if (owner_of(target) == words + i / 8) children.push_back({i, target});
  }
  if (children.size() > 64) {  // (a batch holds 252 actions)
    ++result.objects_kept;
    cancel(r);
    return false;
  }
  stream(dest, object, size);
  boost::container::small_vector<movable_header, 8> headers{
      {offset_of(owner) | sparse::owner_pptr,
       sparse::movable_check(offset_of(owner), offset_of(dest))}};
  boost::container::small_vector<range_write, 8> writes{
      {header_of(dest), 0, sizeof(movable_header)}};
  for (const child& c : children) {
    auto* word = reinterpret_cast<std::uint64_t*>(static_cast<std::byte*>(dest) + c.at);
    const std::uint64_t fixed = pptr_to(word, c.target);
    stream(word, &fixed, 8);
    headers.push_back({offset_of(word) | sparse::owner_pptr,
                       sparse::movable_check(offset_of(word), offset_of(c.target))});
  }
  for (std::size_t k = 0; k < children.size(); ++k)
    writes.push_back(
        {header_of(children[k].target), (k + 1) * sizeof(movable_header), sizeof(movable_header)});
  if (unlogged_headers) {
    stream(header_of(dest), headers.data(), sizeof(movable_header));
    writes.erase(writes.begin());
    for (range_write& w : writes) w.at -= sizeof(movable_header);
    headers.erase(headers.begin());
  }
  const std::uint64_t streamed = 1;
  const std::pair<std::uint64_t*, std::uint64_t> store{owner, pptr_to(owner, dest)};
  void* frees[1] = {object};
  try {
    publish({&r, 1}, {&store, 1}, frees, {&streamed, 1}, true, {}, {writes.data(), writes.size()},
            reinterpret_cast<const std::byte*>(headers.data()));
  } catch (const error&) {  // freed or changed meanwhile (the application's race)
    ++result.objects_kept;
    cancel(r);
    return false;
  }
  ++result.objects_moved;
  result.bytes_moved += size;
  return true;
}

// Claims the object in the pin table (0 -> moving: a pinned one stays, and
// so does its slot `dest`, given back) and relocates it; whether it moved.
bool heap_impl::move_unpinned(void* object, void* dest, compact_result& result) {
  std::atomic<std::uint32_t>& pins = pin_count(object);
  std::uint32_t unpinned = 0;
  if (!pins.compare_exchange_strong(unpinned, pin_moving, std::memory_order_acq_rel)) {
    ++result.objects_pinned;
    const auto cls = static_cast<unsigned>(small_.any_class_of(dest));
    reservation back(dest, small_.object_size(dest, cls));
    cancel(back);
    return false;
  }
  const bool moved = relocate(object, dest, result);
  pins.store(0, std::memory_order_release);
  return moved;
}

// After moves: their lanes are retired durably first (a replay must not
// meet a released slab's bitmap: the crash suite found that), then the
// emptied movable slabs are released and the totals counted.
void heap_impl::release_after_moves(compact_result& result) {
  if (result.objects_moved != 0) (void)fence(true);
  const auto [slabs, pages] = small_.release_empty_movable_slabs();
  result.slabs_released = slabs;
  result.bytes_released = pages * sparse::page_size;
  compacted_.objects_moved.fetch_add(result.objects_moved, std::memory_order_relaxed);
  compacted_.bytes_moved.fetch_add(result.bytes_moved, std::memory_order_relaxed);
  compacted_.bytes_released.fetch_add(result.bytes_released, std::memory_order_relaxed);
}

// Per size class, the kernel's two scanners over its movable slabs in
// address order: the migration scanner takes the allocated objects of the
// highest slab, the free scanner the free slots of the lowest; they stop
// where they meet. A slab left with objects it could not move marks its
// pageblock skip.
compact_result heap_impl::compact(const compact_options& options) {
  refuse_if_read_only("compact");
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  std::lock_guard lock(compact_mutex_);
  compact_result result;
  const auto over_budget = [&] {
    return (options.max_bytes != 0 && result.bytes_moved >= options.max_bytes) ||
           (options.time_budget.count() != 0 && clock::now() - start >= options.time_budget);
  };
  bool cut = false;
  for (; compact_class_ < alloc::nr_size_classes; ++compact_class_) {
    const alloc::size_class& c = size_classes[compact_class_];
    std::vector<alloc::slab_usage> slabs = small_.movable_slabs(compact_class_);
    std::size_t lo = 0, hi = slabs.size();
    while (!cut && hi > lo + 1) {
      const alloc::slab_usage& source = slabs[hi - 1];
      if (source.in_use == 0 || model_->get_pageblock_skip(source.pfn)) {
        --hi;
        continue;
      }
      const auto* bits = reinterpret_cast<const std::uint64_t*>(model_->pfn_to_virt(source.pfn));
      std::byte* first = model_->pfn_to_virt(source.pfn) + c.header + movable_skew;
      bool stuck = false, done = false;
      for (std::uint32_t i = 0; i < c.objects && !done; ++i) {
        if (!c.allocated(bits, i)) continue;
        if (over_budget()) {
          cut = true;
          break;
        }
        void* dest = nullptr;
        while (hi > lo + 1 && (dest = small_.take_from(slabs[lo].pfn)) == nullptr) ++lo;
        if (dest == nullptr) {
          done = true;  // no free slot below: the class is as dense as it gets
          break;
        }
        stuck = !move_unpinned(first + std::size_t{i} * c.size, dest, result) || stuck;
      }
      if (stuck) model_->set_pageblock_skip(source.pfn, true);
      if (done) break;
      if (!cut) --hi;
    }
    if (cut) break;  // (resumed at this class)
  }
  if (!cut) {  // a pass finished: the next begins afresh, skip bits cleared
    result.finished = true;
    compact_class_ = 0;
    compacted_.passes.fetch_add(1, std::memory_order_relaxed);
    for (unsigned cls = 0; cls < alloc::nr_size_classes; ++cls)
      for (const alloc::slab_usage& s : small_.movable_slabs(cls))
        if (model_->get_pageblock_skip(s.pfn)) model_->set_pageblock_skip(s.pfn, false);
  }
  release_after_moves(result);
  (void)pages_.release_free_pageblocks();
  result.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return result;
}

// The span's descriptors first: an extent or an ordinary slab in it, and
// nothing moves. Then its free pages are held (nothing new lands there),
// and each movable slab's objects move into slots of slabs outside it
// (new ones where those are full), each in one batch as compaction moves
// them; the lanes are retired, the emptied slabs released, the held pages
// given back.
std::string heap_impl::migrate_out(std::uint64_t offset, std::uint64_t length) {
  std::lock_guard lock(compact_mutex_);
  std::vector<std::uint64_t> sources;  // movable slab heads in the span
  for (std::uint64_t pfn = offset >> sparse::page_shift;
       pfn < (offset + length) >> sparse::page_shift; ++pfn) {
    if (model_->get_pageblock_migratetype(pfn) == sparse::migratetype::metadata) continue;
    const sparse::page_descriptor& d = *model_->pfn_to_page(pfn);
    if (d.state() == sparse::page_state::movable_slab) {
      sources.push_back(pfn);
      pfn += d.length() - 1;
    } else if (d.state() == sparse::page_state::slab || d.state() == sparse::page_state::extent) {
      return "it holds allocations that cannot move (" +
             std::string(d.state() == sparse::page_state::slab ? "a slab of ordinary objects"
                                                               : "an extent") +
             " at " + sparse::hex(pfn << sparse::page_shift) + ", ...); free them first";
    }
  }
  if (sources.empty())
    return "it holds reservations, or objects other threads cache keep their slabs; free them "
           "first";
  const auto held = pages_.hold(offset, length);
  const auto outside = [&](std::uint64_t pfn) {
    return (pfn << sparse::page_shift) < offset || (pfn << sparse::page_shift) >= offset + length;
  };
  compact_result result;
  std::uint64_t stuck = 0;
  struct destinations {
    std::vector<alloc::slab_usage> slabs;  // outside the span, with free slots
    std::size_t next = 0;
    bool listed = false;
  };
  std::array<destinations, alloc::nr_size_classes> dest_of;
  for (const std::uint64_t source : sources) {
    const unsigned cls = model_->pfn_to_page(source)->sub();
    const alloc::size_class& c = size_classes[cls];
    destinations& d = dest_of[cls];
    if (!d.listed) {
      for (const alloc::slab_usage& u : small_.movable_slabs(cls))
        if (outside(u.pfn) && u.in_use < u.objects) d.slabs.push_back(u);
      d.listed = true;
    }
    const auto* bits = reinterpret_cast<const std::uint64_t*>(model_->pfn_to_virt(source));
    std::byte* first = model_->pfn_to_virt(source) + c.header + movable_skew;
    for (std::uint32_t i = 0; i < c.objects; ++i) {
      if (!c.allocated(bits, i)) continue;
      void* dest = nullptr;
      while (dest == nullptr && d.next < d.slabs.size())
        if ((dest = small_.take_from(d.slabs[d.next].pfn)) == nullptr) ++d.next;
      if (dest == nullptr) {
        const auto fresh = small_.new_movable_slab(cls);  // (the span's pages are held)
        if (fresh && outside(*fresh)) {
          d.slabs.push_back({*fresh, 0, c.objects});
          dest = small_.take_from(*fresh);
        }
      }
      if (dest == nullptr) {
        ++stuck;
        continue;
      }
      stuck += move_unpinned(first + std::size_t{i} * c.size, dest, result) ? 0 : 1;
    }
  }
  release_after_moves(result);
  for (const auto& [pfn, pages] : held) pages_.free(pfn, pages);
  if (stuck != 0)
    return std::to_string(stuck) +
           " movable objects in it could not move (pinned, their owner does not refer to "
           "them, or no room outside it); " +
           std::to_string(result.objects_moved) + " moved out";
  return {};
}

// From the highest present subsection down, while each is present, not
// metadata, and its pageblock wholly free in the pool (after the caches and
// empty slabs went back); then one hot_remove of that run. Again while it
// removes something (a run may end at a hole below which more is free).
std::uint64_t heap_impl::trim() {
  refuse_if_read_only("trim");
  give_back_for_hot_remove();
  const auto& geo = model_->geo();
  std::uint64_t removed = 0;
  // The heap's own memory only: added regions sit at the top of the range.
  std::uint64_t sections = geo.nr_sections();
  for (const sparse::member_record& m : model_->members())
    sections = std::min(sections, m.offset >> geo.section_size_bits);
  for (;;) {
    std::uint64_t end = 0;
    for (std::uint64_t nr = sections; nr-- > 0 && end == 0;) {
      if (!model_->section_present(nr)) continue;
      for (std::uint64_t at = (nr + 1) << geo.section_size_bits; at > nr << geo.section_size_bits;
           at -= sparse::subsection_size)
        if (model_->subsection_present(at - sparse::subsection_size)) {
          end = at;
          break;
        }
    }
    std::uint64_t start = end;
    while (start >= geo.data_start() + sparse::subsection_size &&
           model_->subsection_present(start - sparse::subsection_size)) {
      const std::uint64_t pfn = (start - sparse::subsection_size) >> sparse::page_shift;
      if (model_->get_pageblock_migratetype(pfn) == sparse::migratetype::metadata ||
          !pages_.in_pool(pfn / alloc::pageblock_pages))
        break;
      start -= sparse::subsection_size;
    }
    if (start == end) return removed;
    hot_remove(start, end - start);
    removed += end - start;
  }
}

void heap_impl::check_movable(const std::vector<alloc::allocated_extent>& found,
                              std::vector<std::string>& problems) const {
  for (const alloc::allocated_extent& e : found) {
    if (!e.movable || e.sub >= alloc::nr_slab_classes) continue;
    const alloc::size_class& c = size_classes[e.sub];
    const auto* bits = reinterpret_cast<const std::uint64_t*>(model_->pfn_to_virt(e.pfn));
    for (std::uint32_t i = 0; i < c.objects; ++i) {
      if (!c.allocated(bits, i)) continue;
      const std::byte* object =
          model_->pfn_to_virt(e.pfn) + c.header + movable_skew + std::size_t{i} * c.size;
      const std::string where =
          "movable object at " + sparse::hex(static_cast<std::uint64_t>(object - model_->base()));
      bool refers = false;
      const std::uint64_t* owner = owner_of(object, &refers);
      if (owner == nullptr)
        problems.push_back(where + ": its header does not check out");
      else if (!refers)
        problems.push_back(where + ": its owner word at " +
                           sparse::hex(static_cast<std::uint64_t>(
                               reinterpret_cast<const std::byte*>(owner) - model_->base())) +
                           " does not refer to it (changed without move_owner or free_clear?)");
    }
  }
}

}  // namespace daxalloc::detail

namespace daxalloc {

void* heap::allocate_movable_word(std::size_t size, std::uint64_t* owner,
                                  void (*construct)(void*, void*), void* context) {
  return live().allocate_movable(size, owner, construct, context);
}
void heap::move_owner_word(std::uint64_t* from, std::uint64_t* to) {
  live().move_owner(from, to);
}
void* heap::pin_word(const std::uint64_t* owner) {
  return live().pin(owner);
}
void heap::unpin(const void* p) {
  live().unpin(p);
}
bool heap::is_movable(const void* p) const {
  return live().is_movable(p);
}
const void* heap::owner_of(const void* p) const {
  return live().owner_of(p);
}
compact_result heap::compact(const compact_options& options) {
  return live().compact(options);
}
std::uint64_t heap::trim() {
  return live().trim();
}

}  // namespace daxalloc
