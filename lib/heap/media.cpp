// The heap and the media's bad blocks (docs/media-errors.md). Open places
// each bad block the media lists (platform/media.hpp): in the head or the
// memmap, where the guarded reads of the model and of check() meet it, or in
// memory, whose pageblocks holding one are quarantined like the damage
// repair finds: migratetype isolate, kept, never allocated from. What was
// allocated there is reported by offset; a repair clears the block (the
// provider: PMDK's pmem2_badblock_clear), after which it reads as zeros.
#include <algorithm>
#include <string>

#include "heap/heap_impl.hpp"

namespace daxalloc::detail {

using sparse::hex;
using sparse::migratetype;
using sparse::page_shift;
using sparse::page_state;

namespace {

std::string describe(const bad_block& b) {
  return "bad block at " + hex(b.offset) + " (" + std::to_string(b.length) + " bytes)";
}

std::string objects_text(const bad_block& b) {
  if (b.objects.empty()) return "no object recorded in it";
  std::string out = std::to_string(b.objects.size()) + " object(s) recorded in it, lost:";
  for (std::size_t i = 0; i < b.objects.size() && i < 32; ++i) out += " " + hex(b.objects[i]);
  if (b.objects.size() > 32) out += " ...";
  if (b.objects_unknown)
    out += " (and a slab bitmap in it: which of its objects were allocated is unknown)";
  return out;
}

}  // namespace

bad_block heap_impl::place_bad_block(const media::bad_range& range) const {
  const sparse::geometry& geo = model_->geo();
  bad_block b;
  b.offset = range.offset;
  b.length = range.length;
  const std::uint64_t end = range.offset + range.length;
  if (range.offset < geo.head_size()) {
    b.location = bad_block_location::head;
    return b;
  }
  if (geo.memmap_area != 0 && geo.in_area(range.offset)) {
    b.location = bad_block_location::memmap;
    return b;
  }
  const std::uint64_t first = range.offset >> page_shift;
  if (!model_->pfn_valid(first)) {
    b.location = bad_block_location::not_present;
    return b;
  }
  if (model_->get_pageblock_migratetype(first) == migratetype::metadata) {
    b.location = bad_block_location::memmap;  // a span's block inside the span (heaps upgraded from
                                              // format 5)
    return b;
  }
  b.location = bad_block_location::memory;
  // The allocated objects overlapping it: every head from the start of the
  // memory on (a bad block is rare; an extent may begin sections before it).
  for (std::uint64_t pfn = geo.data_start() >> page_shift; pfn << page_shift < end;) {
    if (!model_->pfn_valid(pfn)) {
      pfn = (pfn | (alloc::pageblock_pages - 1)) + 1;
      continue;
    }
    const sparse::page_descriptor d{model_->pfn_to_page(pfn)->load()};
    const std::uint64_t at = pfn << page_shift;
    if (!sparse::descriptor_checks_out(d.load()) ||
        (d.state() != page_state::extent && !sparse::is_slab(d.state()))) {
      ++pfn;
      continue;
    }
    const std::uint64_t pages = std::max<std::uint64_t>(d.length(), 1);
    const std::uint64_t stop = at + (pages << page_shift);
    if (stop > range.offset && d.state() == page_state::extent) b.objects.push_back(at);
    if (stop > range.offset && sparse::is_slab(d.state()) && d.sub() < alloc::nr_slab_classes) {
      const auto& c = alloc::size_classes[d.sub()];
      const std::uint64_t skew = d.state() == page_state::movable_slab ? alloc::movable_skew : 0;
      if ((at < end && range.offset < at + c.header) ||
          model_->reader().probe(model_->base(), at, c.header)) {
        b.objects_unknown = true;  // its bitmap is in the bad block, or does not read: not read
        b.objects.push_back(at + c.header + skew);
      } else {
        const auto* bits = reinterpret_cast<const std::uint64_t*>(model_->base() + at);
        for (std::uint32_t i = 0; i < c.objects; ++i) {
          const std::uint64_t slot = at + c.header + std::uint64_t{i} * c.size;
          if (slot < end && range.offset < slot + c.size && c.allocated(bits, i))
            b.objects.push_back(slot + skew);
        }
      }
    }
    pfn += pages;
  }
  return b;
}

void heap_impl::handle_bad_blocks(bool repair) {
  bad_blocks_.clear();
  for (const media::bad_range& range : media_.bad_blocks) {
    if (range.offset >= model_->media().max_size()) continue;  // beyond the heap's range
    bad_block b = place_bad_block(range);
    if (b.location == bad_block_location::memory) {
      b.quarantined = true;  // each of its pageblocks is isolate, or is made so now
      const std::uint64_t first = b.offset >> page_shift;
      const std::uint64_t last = (b.offset + b.length - 1) >> page_shift;
      for (std::uint64_t pb = first / alloc::pageblock_pages; pb <= last / alloc::pageblock_pages;
           ++pb) {
        const std::uint64_t pfn = pb * alloc::pageblock_pages;
        if (!model_->pfn_valid(pfn) ||
            model_->get_pageblock_migratetype(pfn) == migratetype::isolate)
          continue;
        const std::string line = "the pageblock at " + hex(pfn << page_shift) +
                                 " (kept, never allocated from): " + describe(b) + "; " +
                                 objects_text(b);
        if (read_only()) {
          plan_.steps.push_back("quarantine " + line);
          b.quarantined = false;
          continue;
        }
        model_->set_pageblock_migratetype(pfn, migratetype::isolate);
        repairs_.push_back("quarantined " + line);
      }
    }
    if (repair && !read_only() && b.location == bad_block_location::memory) {
      try {
        media::current().clear(model_->media(), range);
        b.cleared = true;
        repairs_.push_back("cleared the " + describe(b) +
                           ": it reads as zeros; its pageblock stays quarantined; " +
                           objects_text(b));
      } catch (const error& e) {
        repairs_.push_back("could not clear the " + describe(b) + ": " + e.what());
      }
    }
    bad_blocks_.push_back(std::move(b));
  }
}

}  // namespace daxalloc::detail
