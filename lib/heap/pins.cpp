#include "heap/pins.hpp"

#include <string>

#include "daxalloc/error.hpp"
#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"
#include "platform/sysfs.hpp"

namespace daxalloc::detail {

std::optional<std::uint32_t> object_pins::pin(const void* p, std::uint64_t bytes) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  shard& s = shard_of(at);
  std::lock_guard lock(s.mutex);
  auto [it, inserted] = s.entries.try_emplace(at);
  if (inserted) {
    it->second.bytes = bytes;
    if (s.entries.size() == 1) busy_shards_.fetch_add(1, std::memory_order_acq_rel);
  } else if (it->second.freed) {
    return std::nullopt;
  }
  return ++it->second.count;
}

std::optional<freed_memory> object_pins::unpin(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  shard& s = shard_of(at);
  std::lock_guard lock(s.mutex);
  const auto it = s.entries.find(at);
  if (it == s.entries.end()) return std::nullopt;
  if (--it->second.count > 0) return freed_memory{};
  const freed_memory m = it->second.freed ? it->second.memory : freed_memory{};
  s.entries.erase(it);
  if (s.entries.empty()) busy_shards_.fetch_sub(1, std::memory_order_acq_rel);
  return m;
}

bool object_pins::defer(const void* p, const freed_memory& m) noexcept {
  if (!any()) return false;
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  shard& s = shard_of(at);
  std::lock_guard lock(s.mutex);
  const auto it = s.entries.find(at);
  if (it == s.entries.end()) return false;
  it->second.freed = true;
  it->second.memory = m;
  return true;
}

std::uint32_t object_pins::count(const void* p) const {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  shard& s = shard_of(at);
  std::lock_guard lock(s.mutex);
  const auto it = s.entries.find(at);
  return it == s.entries.end() ? 0 : it->second.count;
}

pin_totals object_pins::in(std::uintptr_t from, std::uintptr_t to) const {
  pin_totals t;
  if (!any()) return t;
  for (shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (const auto& [at, e] : s.entries) {
      if (at >= to || at + e.bytes <= from) continue;
      ++t.objects;
      t.pins += e.count;
      t.bytes += e.bytes;
      if (e.freed) ++t.freed_objects, t.freed_bytes += e.bytes;
    }
  }
  return t;
}

// ---- the heap's side: which objects may be pinned, and frees that wait ----

std::uint32_t heap_impl::pin_object(const void* p) {
  // (The message is made only when the pin fails: a pin costs tens of ns.)
  const auto refuse = [&](const char* why) {
    throw error(errc::invalid_argument,
                model_->media().contains(p)
                    ? "pin: offset " +
                          std::to_string(static_cast<const std::byte*>(p) - model_->base()) + why
                    : std::string("pin: the pointer does not lie in the heap"));
  };
  std::uint64_t bytes = 0;
  if (const int cls = small_.any_class_of(p); cls >= 0) {
    if (small_.movable(p))
      refuse(
          " is a movable object, which compaction may move: pin it through its owner "
          "(heap::pin(owner))");
    load_slab_of(p, "pin");
    const alloc::object_location bit = small_.bit_of(p);
    if ((std::atomic_ref<std::uint64_t>(*bit.word).load(std::memory_order_acquire) & bit.mask) == 0)
      refuse(" is not an allocated object (free or reserved)");
    bytes = small_.object_size(p, static_cast<unsigned>(cls));
  } else if (const sparse::page_descriptor* head = extent_head(p)) {
    bytes = head->length() * sparse::page_size;
  } else {
    refuse(" is not the start of an allocated object");
  }
  const auto n = object_pins_.pin(p, bytes);
  if (!n) refuse(" was freed while pinned; its memory waits for its last unpin");
  return *n;
}

void heap_impl::unpin(const void* p) {
  if (const auto freed = object_pins_.unpin(p)) {
    if (freed->object != nullptr) hand_back(*freed);  // the last pin of a freed object
    return;
  }
  unpin_movable(p);
}

std::uint32_t heap_impl::pins_of(const void* p) const {
  return object_pins_.count(p);
}

pin_totals heap_impl::pins_in(std::uint64_t offset, std::uint64_t length) const {
  const auto from = reinterpret_cast<std::uintptr_t>(model_->base()) + offset;
  return object_pins_.in(from, from + length);
}

void heap_impl::release_freed(const freed_memory& m) noexcept {
  if (!object_pins_.defer(m.object, m)) hand_back(m);
}

void heap_impl::hand_back(const freed_memory& m) noexcept {
  if (m.cls >= 0)
    put_small(static_cast<unsigned>(m.cls), m.object);
  else
    pages_.free(m.pfn, m.pages);
}

}  // namespace daxalloc::detail

namespace daxalloc {

std::uint32_t heap::pin_object(const void* p) {
  return live().pin_object(p);
}
void heap::unpin(const void* p, std::error_code& ec) noexcept {
  detail::into_error_code(ec, [&] { unpin(p); });
}
std::uint32_t heap::pin_count(const void* p) const {
  return live().pins_of(p);
}

}  // namespace daxalloc
