#include "api_driver.hpp"

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "daxalloc/batch.hpp"
#include "heap/access.hpp"
#include "sparse/geometry.hpp"
#include "sparse/memory_model.hpp"

namespace fuzz {
namespace {

namespace sp = daxalloc::sparse;
using daxalloc::errc;

daxalloc::heap_open_options open_options() {
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::none;
  return o;
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

std::uint8_t pattern_byte(std::uint64_t seed, std::uint64_t i) {
  const std::uint64_t x = (seed + i) * 0x9e3779b97f4a7c15ull;
  return static_cast<std::uint8_t>(x >> 56);
}

}  // namespace

const sparse_image& pristine_heap_image() {
  static const sparse_image image = [] {
    const auto path = scratch_file("pristine");
    std::filesystem::remove(path);
    daxalloc::heap_options o;
    o.size = driver_heap_size;
    o.max_size = driver_max_range;
    o.mode = daxalloc::persistence_mode::none;
    try {
      daxalloc::heap::create(path, o).close();
    } catch (const std::exception& e) {
      finding(std::string("cannot create the pristine heap: ") + e.what());
    }
    auto read = sparse_image::read(path);
    std::filesystem::remove(path);
    return read;
  }();
  return image;
}

api_driver::api_driver(std::optional<daxalloc::heap>& heap, std::filesystem::path path,
                       driver_options options)
    : heap_(heap), path_(std::move(path)), options_(options) {
  const auto& model = daxalloc::detail::internals(h()).model();
  for (std::uint64_t i = 0; i < present_.size(); ++i)
    present_[i] = model.subsection_present(i * sp::subsection_size);
  if (const auto* slot = reinterpret_cast<const sp::root_slot*>(h().base() + sp::root_slot_offset);
      slot->offset) {
    root_offset_ = slot->offset;
    root_size_ = slot->size;
  }
  for (auto [offset, size] : daxalloc::detail::internals(h()).allocations())
    if (offset != root_offset_) live_[offset] = {size, 0};
}

std::size_t api_driver::live_objects() const {
  return live_.size() + published_.size() + (root_offset_ ? 1 : 0);
}

void api_driver::fill(std::uint64_t offset, std::uint64_t size, std::uint64_t seed) {
  if (!options_.payloads) return;
  auto* p = static_cast<std::uint8_t*>(h().at(offset));
  const std::uint64_t n = std::min<std::uint64_t>(size, 64);
  for (std::uint64_t i = 0; i < n; ++i) p[i] = pattern_byte(seed, i);
  for (std::uint64_t i = size - n; i < size; ++i) p[i] = pattern_byte(seed, i);
}

void api_driver::verify(std::uint64_t offset, std::uint64_t size, std::uint64_t seed,
                        const char* what) {
  if (!options_.payloads || seed == 0) return;
  const auto* p = static_cast<const std::uint8_t*>(h().at(offset));
  const std::uint64_t n = std::min<std::uint64_t>(size, 64);
  const auto check = [&](std::uint64_t i) {
    if (p[i] != pattern_byte(seed, i))
      finding(std::string(what) + ": the payload of the object at " + hex(offset) + " (" +
              std::to_string(size) + " B) changed at byte " + std::to_string(i));
  };
  for (std::uint64_t i = 0; i < n; ++i) check(i);
  for (std::uint64_t i = size - n; i < size; ++i) check(i);
}

bool api_driver::overlaps_live(std::uint64_t offset, std::uint64_t size) const {
  const auto hit = [&](const std::map<std::uint64_t, object>& m) {
    auto it = m.upper_bound(offset + size - 1);
    if (it == m.begin()) return false;
    --it;
    return it->first + it->second.size > offset;
  };
  if (hit(live_) || hit(reserved_)) return true;
  for (const auto& [slot, o] : published_)
    if (o.object < offset + size && offset < o.object + o.size) return true;
  return root_offset_ && root_offset_ < offset + size && offset < root_offset_ + root_size_;
}

void api_driver::claim(std::uint64_t offset, std::uint64_t size, const char* what) {
  // (memory starts after the head and, format 6, the memmap area)
  const std::uint64_t head = daxalloc::detail::internals(h()).model().geo().data_start();
  if (offset < head || offset > h().size() || size > h().size() - offset)
    finding(std::string(what) + " returned [" + hex(offset) + ", +" + std::to_string(size) +
            ") outside the heap's memory [" + hex(head) + ", " + hex(h().size()) + ")");
  if (overlaps_live(offset, size))
    finding(std::string(what) + " returned [" + hex(offset) + ", +" + std::to_string(size) +
            ") which overlaps a live object, reservation or the root");
  for (std::uint64_t at = offset; at < offset + size; at += sp::subsection_size) {
    const std::uint64_t sub = at / sp::subsection_size;
    if (sub >= present_.size() || !present_.test(sub))
      finding(std::string(what) + " returned memory in the absent subsection at " + hex(sub << 21));
  }
  if (size > 64 * 1024 ? offset % 4096 : offset % 8)
    finding(std::string(what) + " returned a misaligned object at " + hex(offset));
}

std::uint64_t api_driver::object_at(std::uint64_t index) const {
  auto it = live_.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(index % live_.size()));
  return it->first;
}

void api_driver::expect_error(const char* what, std::initializer_list<errc> codes,
                              const std::function<void()>& f) {
  try {
    f();
  } catch (const daxalloc::error& e) {
    if (std::find(codes.begin(), codes.end(), e.code_value()) != codes.end()) return;
    finding(std::string(what) + " failed with an unexpected error (code " +
            std::to_string(static_cast<int>(e.code_value())) + "): " + e.what());
  } catch (const std::exception& e) {
    finding(std::string(what) + " threw something other than daxalloc::error: " + e.what());
  }
  finding(std::string(what) + " succeeded but the model expected an error");
}

void api_driver::check_stats(const char* when) {
  if (!options_.stats_every_call) return;
  const auto s = h().stats();
  if (s.allocated_objects != live_objects())
    finding(std::string("after ") + when + ": stats().allocated_objects is " +
            std::to_string(s.allocated_objects) + ", the model has " +
            std::to_string(live_objects()));
}

void api_driver::run(const call& c) {
  try {
    switch (c.kind) {
      case call_kind::allocate:
        allocate(c);
        break;
      case call_kind::deallocate:
        deallocate(c);
        break;
      case call_kind::bad_deallocate:
        bad_deallocate(c);
        break;
      case call_kind::reserve:
        reserve(c);
        break;
      case call_kind::cancel:
        cancel(c);
        break;
      case call_kind::root:
        root(c);
        break;
      case call_kind::publish:
        publish(c);
        break;
      case call_kind::free_clear:
        free_clear(c);
        break;
      case call_kind::hot_add:
        hot_add(c);
        break;
      case call_kind::hot_remove:
        hot_remove(c);
        break;
      case call_kind::reopen:
        if (options_.allow_reopen) {
          reopen();
          break;
        }
        [[fallthrough]];
      case call_kind::check:
      case call_kind::count:
        audit("a check call");
        break;
    }
  } catch (const daxalloc::error& e) {
    finding(std::string("call ") + std::to_string(static_cast<int>(c.kind)) +
            " failed unexpectedly: " + e.what());
  } catch (const std::exception& e) {
    finding(std::string("call ") + std::to_string(static_cast<int>(c.kind)) +
            " threw something other than daxalloc::error: " + e.what());
  }
  check_stats("a call");
}

void api_driver::allocate(const call& c) {
  void* p = h().allocate(c.size, std::nothrow);
  if (p == nullptr) {
    // Out of space is fine only when no free run is large enough.
    const auto s = h().stats();
    const std::uint64_t need = c.size >= 2 * MiB ? sp::align_up(c.size, 2 * MiB) : 2 * MiB;
    if (s.largest_free_bytes >= need)
      finding("allocate(" + std::to_string(c.size) + ") ran out of space with a free run of " +
              std::to_string(s.largest_free_bytes) + " bytes");
    return;
  }
  const std::uint64_t offset = h().offset_of(p);
  claim(offset, c.size, "allocate");
  if (h().usable_size(p) < c.size)
    finding("usable_size " + std::to_string(h().usable_size(p)) + " < " + std::to_string(c.size));
  const std::uint64_t seed = next_seed_++;
  fill(offset, c.size, seed);
  live_[offset] = {c.size, seed};
}

void api_driver::deallocate(const call& c) {
  if (live_.empty()) return;
  const std::uint64_t offset = object_at(c.index);
  const object o = live_[offset];
  verify(offset, o.size, o.seed, "deallocate");
  live_.erase(offset);
  h().deallocate(h().at(offset));
  freed_.push_back(offset);
  if (freed_.size() > 16) freed_.erase(freed_.begin());
}

void api_driver::bad_deallocate(const call& c) {
  std::uint64_t offset = 0;
  switch (c.flags) {
    case 0:  // a double free: something freed before that is not live again
      if (freed_.empty()) return;
      offset = freed_[c.index % freed_.size()];
      if (live_.count(offset) || offset == root_offset_) return;
      for (const auto& [slot, o] : published_)
        if (o.object == offset) return;
      break;
    case 1: {  // inside a live object
      if (live_.empty()) return;
      const std::uint64_t start = object_at(c.index);
      const std::uint64_t size = live_[start].size;
      if (size <= 8) return;
      offset = start + (size > 4096 ? 4096 : 8);
      break;
    }
    case 2:  // beyond the mapped memory
      offset = h().size() + 4096 * (c.index + 1);
      break;
    default:  // null: a no-op
      h().deallocate(nullptr);
      return;
  }
  expect_error("deallocate of a pointer that is not allocated", {errc::invalid_argument},
               [&] { h().deallocate(static_cast<std::byte*>(h().base()) + offset); });
}

void api_driver::reserve(const call& c) {
  auto r = h().reserve(c.size, std::nothrow);
  if (!r) return;
  if (r.size < c.size) finding("reserve returned fewer bytes than asked for");
  const std::uint64_t offset = h().offset_of(r.ptr);
  claim(offset, r.size, "reserve");
  const std::uint64_t seed = next_seed_++;
  fill(offset, r.size, seed);
  reserved_[offset] = {r.size, seed};
}

void api_driver::cancel(const call& c) {
  if (reserved_.empty()) return;
  auto it = reserved_.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(c.index % reserved_.size()));
  verify(it->first, it->second.size, it->second.seed, "cancel");
  daxalloc::reservation r{h().at(it->first), it->second.size};
  reserved_.erase(it);
  h().cancel(r);
}

void api_driver::root(const call& c) {
  if (root_offset_) {
    if (c.size == root_size_) {
      if (h().offset_of(h().root(c.size)) != root_offset_) finding("root moved");
    } else {
      expect_error("root of another size", {errc::invalid_argument},
                   [&] { (void)h().root(c.size); });
    }
    return;
  }
  void* p = nullptr;
  try {
    p = h().root(c.size);
  } catch (const daxalloc::error& e) {
    if (e.code_value() != errc::out_of_space) throw;
    return;
  }
  const std::uint64_t offset = h().offset_of(p);
  claim(offset, c.size, "root");
  const auto* bytes = static_cast<const std::uint8_t*>(p);
  for (std::uint64_t i = 0; i < std::min<std::uint64_t>(c.size, 4096); ++i)
    if (bytes[i]) finding("a new root is not zero-filled");
  root_offset_ = offset;
  root_size_ = c.size;
}

void api_driver::publish(const call& c) {
  if (root_size_ < 8) return;
  const std::uint64_t slot =
      root_offset_ + 8 * (c.index % std::min<std::uint64_t>(root_size_ / 8, 64));
  auto& dest = *static_cast<daxalloc::pptr<std::byte>*>(h().at(slot));
  const std::uint64_t seed = next_seed_++;
  std::byte* object = nullptr;
  try {
    object = h().allocate_publish(dest, c.size, [&](std::byte* at) {
      if (!options_.payloads) return;
      const std::uint64_t n = std::min<std::uint64_t>(c.size, 64);
      for (std::uint64_t i = 0; i < n; ++i) at[i] = std::byte{pattern_byte(seed, i)};
      for (std::uint64_t i = c.size - n; i < c.size; ++i) at[i] = std::byte{pattern_byte(seed, i)};
    });
  } catch (const daxalloc::error& e) {
    if (e.code_value() != errc::out_of_space) throw;
    return;
  }
  if (dest.get() != object) finding("allocate_publish: the pptr does not point to the object");
  const std::uint64_t offset = h().offset_of(object);
  if (auto old = published_.find(slot); old != published_.end()) {
    // The slot is overwritten: the old object stays allocated (the application's leak).
    live_[old->second.object] = {old->second.size, old->second.seed};
    published_.erase(old);
  }
  claim(offset, c.size, "allocate_publish");
  published_[slot] = {offset, c.size, seed};
}

void api_driver::free_clear(const call& c) {
  if (published_.empty()) return;
  auto it = published_.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(c.index % published_.size()));
  auto& dest = *static_cast<daxalloc::pptr<std::byte>*>(h().at(it->first));
  if (dest.get() != h().at(it->second.object))
    finding("a published pptr at " + hex(it->first) + " no longer points to its object");
  verify(it->second.object, it->second.size, it->second.seed, "free_clear");
  const std::uint64_t object = it->second.object;
  published_.erase(it);
  h().free_clear(dest);
  if (dest) finding("free_clear left the pptr set");
  freed_.push_back(object);
}

void api_driver::hot_add(const call& c) {
  // The heap's geometry: with the memmap area of format 6 (memmap_area set)
  // unless the heap keeps the in-span memmap blocks of format 5.
  const auto& model = daxalloc::detail::internals(h()).model();
  const auto& geo = model.geo();
  const std::uint64_t start = c.first * sp::subsection_size + (c.flags & 1 ? 4096 : 0);
  const std::uint64_t length = c.count * sp::subsection_size + (c.flags & 2 ? 4096 : 0);
  const std::uint64_t end = start + length;
  const auto run = [&] { h().hot_add(start, length); };
  if (c.flags) return expect_error("misaligned hot_add", {errc::misaligned}, run);
  if (end > geo.max_range) return expect_error("hot_add beyond the range", {errc::too_large}, run);
  if (start < geo.head_size())
    return expect_error("hot_add of the head", {errc::already_exists}, run);
  if (start < geo.data_start())
    return expect_error("hot_add of the memmap area", {errc::already_exists}, run);
  for (std::uint64_t s = c.first; s < c.first + c.count; ++s)
    if (present_.test(s))
      return expect_error("hot_add of a present subsection", {errc::already_exists}, run);
  if (geo.memmap_area) {
    // Any span takes 2 MiB: the blocks it needs come from the memmap area.
    run();
    for (std::uint64_t s = c.first; s < c.first + c.count; ++s) present_.set(s);
    for (std::uint64_t block : sp::blocks_for(geo, start, end)) {
      if (!model.subsection_present(block))
        finding("hot_add left the memmap block at " + hex(block) + " absent");
      for (std::uint64_t at = block; at < block + geo.memmap_bytes(); at += sp::subsection_size)
        present_.set(at / sp::subsection_size);
    }
    return;
  }
  const std::uint64_t per_span = geo.span_size() / sp::subsection_size;
  for (std::uint64_t span = c.first / per_span; span <= (c.first + c.count - 1) / per_span;
       ++span) {
    bool has_memmap = false;
    for (std::uint64_t s = span * per_span; s < (span + 1) * per_span; ++s)
      has_memmap = has_memmap || present_.test(s);
    if (has_memmap) continue;
    const std::uint64_t first = std::max({start, span * geo.span_size(), geo.head_size()});
    const std::uint64_t last = std::min(end, (span + 1) * geo.span_size());
    if (first + geo.memmap_bytes() + sp::subsection_size > last)
      return expect_error("hot_add of a new span without room for its memmap", {errc::too_small},
                          run);
  }
  run();
  for (std::uint64_t s = c.first; s < c.first + c.count; ++s) present_.set(s);
}

void api_driver::hot_remove(const call& c) {
  const auto& model = daxalloc::detail::internals(h()).model();
  const auto& geo = model.geo();
  const std::uint64_t start = c.first * sp::subsection_size + (c.flags & 1 ? 4096 : 0);
  const std::uint64_t length = c.count * sp::subsection_size + (c.flags & 2 ? 4096 : 0);
  const auto run = [&] { h().hot_remove(start, length); };
  if (c.flags) return expect_error("misaligned hot_remove", {errc::misaligned}, run);
  if (start + length > geo.max_range)
    return expect_error("hot_remove beyond the range", {errc::not_present}, run);
  // The head and (format 6) the memmap area: refused, as in use, or as not
  // present when the heap finds an absent block of the area first.
  if (start < geo.data_start())
    return expect_error("hot_remove of the head or memmap area", {errc::in_use, errc::not_present},
                        run);
  for (std::uint64_t s = c.first; s < c.first + c.count; ++s)
    if (s >= present_.size() || !present_.test(s))
      return expect_error("hot_remove of an absent subsection", {errc::not_present}, run);
  if (overlaps_live(start, length))
    return expect_error("hot_remove of memory in use", {errc::in_use}, run);
  try {
    run();
  } catch (const daxalloc::error& e) {
    if (e.code_value() != errc::in_use) throw;
    return;  // slabs, cached objects or a memmap block still needed: allowed
  }
  for (std::uint64_t s = c.first; s < c.first + c.count; ++s) present_.reset(s);
  // Memmap blocks of the area left describing nothing went with it.
  for (std::uint64_t block :
       geo.memmap_area ? sp::blocks_for(geo, start, start + length) : std::vector<std::uint64_t>{})
    for (std::uint64_t at = block; at < block + geo.memmap_bytes(); at += sp::subsection_size)
      present_[at / sp::subsection_size] = model.subsection_present(at);
}

void api_driver::reopen() {
  heap_->close();
  reserved_.clear();  // volatile: gone with the handle
  heap_.emplace(daxalloc::heap::open(path_, open_options()));
  if (h().stats().unclean_shutdown) finding("a heap closed cleanly opens as unclean");
  audit("reopen");
}

void api_driver::audit(const char* when) {
  if (const auto problems = without_known_issues(h().check()); !problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    finding(std::string("check() after ") + when + ":" + all);
  }
  for (const auto& [offset, o] : live_) verify(offset, o.size, o.seed, when);
  for (const auto& [offset, o] : reserved_) verify(offset, o.size, o.seed, when);
  for (const auto& [slot, o] : published_) {
    const auto& dest = *static_cast<const daxalloc::pptr<std::byte>*>(h().at(slot));
    if (dest.get() != h().at(o.object))
      finding(std::string(when) + ": the pptr at " + hex(slot) + " no longer points to its object");
    verify(o.object, o.size, o.seed, when);
  }
  std::map<std::uint64_t, std::uint64_t> expected;  // offset -> requested size
  for (const auto& [offset, o] : live_) expected[offset] = o.size;
  for (const auto& [slot, o] : published_) expected[o.object] = o.size;
  if (root_offset_) expected[root_offset_] = root_size_;
  const auto listed = daxalloc::detail::internals(h()).allocations();
  std::map<std::uint64_t, std::uint64_t> media(listed.begin(), listed.end());
  for (const auto& [offset, size] : expected) {
    auto it = media.find(offset);
    if (it == media.end())
      finding(std::string(when) + ": the object at " + hex(offset) +
              " is live in the model but not allocated on the media");
    if (it->second < size)
      finding(std::string(when) + ": the media records " + std::to_string(it->second) +
              " bytes at " + hex(offset) + ", the object has " + std::to_string(size));
  }
  for (const auto& [offset, size] : media)
    if (!expected.count(offset))
      finding(std::string(when) + ": the media has an allocation at " + hex(offset) + " (" +
              std::to_string(size) + " B) the model does not know (a leak)");
}

std::string api_driver::signature(const daxalloc::heap& h) {
  std::ostringstream out;
  for (auto [offset, size] : daxalloc::detail::internals(h).allocations())
    out << hex(offset) << "+" << size << " ";
  const auto* slot = reinterpret_cast<const sp::root_slot*>(h.base() + sp::root_slot_offset);
  out << "| root " << hex(slot->offset) << "/" << slot->size;
  if (slot->offset && slot->size && slot->offset < h.size()) {
    // The root's first 64 pptr slots: what publication stores.
    const auto* words = reinterpret_cast<const std::uint64_t*>(h.base() + slot->offset);
    for (std::uint64_t i = 0; i < std::min<std::uint64_t>(slot->size / 8, 64); ++i)
      if (words[i]) out << " [" << i << "]" << hex(slot->offset + 8 * i + words[i]);
  }
  out << " | present";
  const auto& model = daxalloc::detail::internals(h).model();
  for (std::uint64_t at = 0; at < model.geo().max_range; at += sp::subsection_size)
    if (model.subsection_present(at)) out << " " << (at >> 21);
  return out.str();
}

}  // namespace fuzz
