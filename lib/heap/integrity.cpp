// Integrity of the heap layer's own metadata (format 3): the two copies of
// the root slot and of the name-table slot, chosen and repaired at open; the
// plausibility of a committed redo lane's actions before any is replayed;
// and the checks of heap::check() that see the root, the name table and the
// lanes (docs/on-media-format.md, "What is verified where").
#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "heap/heap_impl.hpp"
#include "sparse/upgrade.hpp"

namespace daxalloc::detail {
namespace {

constexpr std::uint64_t offset_mask = (std::uint64_t{1} << sparse::log_op_shift) - 1;

enum class copy_state { empty, valid, damaged };

copy_state state_of(const sparse::root_slot& s) {
  if (sparse::root_slot_empty(s)) return copy_state::empty;
  return sparse::root_slot_valid(s) ? copy_state::valid : copy_state::damaged;
}
copy_state state_of(const sparse::names_slot& s) {
  if (sparse::names_slot_empty(s)) return copy_state::empty;
  return sparse::names_slot_valid(s) ? copy_state::valid : copy_state::damaged;
}

// Which copy of a pair holds the slot. A slot goes from empty to a value
// (the root once; the name table once, then from table to table in batches
// that write both copies), so: equal copies agree; a copy that checks out
// wins over an empty or damaged one; two different ones that check out are
// damage; an empty copy next to a damaged one means no slot, unless the
// damaged one names an allocated object (`names_allocated`), which only
// damage to a slot that was set explains. `winner` -1: no slot; `stale` the
// copy to rewrite from the winner (or to clear), -1: none.
struct pair_choice {
  int winner = -1;
  int stale = -1;
  std::string problem;  // refuse (errc::corrupt), write nothing
};
template <class Slot, class Allocated>
pair_choice choose(const Slot (&copy)[2], Allocated&& names_allocated) {
  pair_choice c;
  const copy_state st[2] = {state_of(copy[0]), state_of(copy[1])};
  if (std::memcmp(&copy[0], &copy[1], sizeof(Slot)) == 0 && st[0] != copy_state::damaged) {
    c.winner = st[0] == copy_state::empty ? -1 : 0;
    return c;
  }
  for (int i = 0; i < 2; ++i)
    if (st[i] == copy_state::valid) {
      if (st[1 - i] == copy_state::valid) {
        c.problem = "has two different copies that both check out";
        return c;
      }
      c.winner = i;
      c.stale = 1 - i;
      return c;
    }
  if (st[0] == copy_state::damaged && st[1] == copy_state::damaged) {
    c.problem = "has both copies damaged";
    return c;
  }
  const int damaged = st[0] == copy_state::damaged ? 0 : 1;
  if (names_allocated(copy[damaged])) {
    c.problem = std::string("copy ") + "AB"[damaged] +
                " is damaged and names an allocated object, while copy " + "AB"[1 - damaged] +
                " is empty";
    return c;
  }
  c.stale = damaged;  // an interrupted root() (copy A torn), or damage to an empty copy
  return c;
}

}  // namespace

// On the path of every batch's store check (heap_word): four compares
// against offsets fixed at open, no geometry arithmetic.
bool heap_impl::names_slot_word(std::uint64_t offset) const noexcept {
  return (offset & ~std::uint64_t{8}) == sparse::names_slot_offset ||
         (offset & ~std::uint64_t{8}) == names_b_offset_;
}

// The name table the slot names: 0 for none. Throws errc::corrupt when the
// copies do not agree on one (a damage since open).
std::uint64_t heap_impl::names_table_offset() const {
  const sparse::names_slot copies[2] = {*names_copy(0), *names_copy(1)};
  const pair_choice c = choose(copies, [](const sparse::names_slot&) { return false; });
  if (!c.problem.empty())
    throw error(errc::corrupt,
                model_->media().path().string() + ": the name-table slot " + c.problem);
  return c.winner < 0 ? 0 : copies[c.winner].offset;
}

// Open, after the lane replay and before recover_root: both slots' copies
// are read, a winner chosen (or the heap refused, nothing written), and
// only then the stale copies rewritten from the winners.
void heap_impl::recover_slots() {
  const std::string where = model_->media().path().string() + ": ";
  const sparse::root_slot roots[2] = {*root_copy(0), *root_copy(1)};
  const pair_choice root = choose(roots, [&](const sparse::root_slot& s) {
    if (s.checksum == 0 && s.offset == 0) return false;
    const auto r = inspect_root_slot(s);
    return r.first.empty() && r.second;
  });
  if (!root.problem.empty()) throw error(errc::corrupt, where + "the root slot " + root.problem);
  const sparse::names_slot names[2] = {*names_copy(0), *names_copy(1)};
  const pair_choice table = choose(names, [&](const sparse::names_slot& s) {
    return media_allocation_size(s.offset) >= 48;  // a table of at least one entry
  });
  if (!table.problem.empty())
    throw error(errc::corrupt, where + "the name-table slot " + table.problem);
  // A winning root slot must name an object root() could have made before
  // its stale copy is overwritten (recover_root checks it again, with the rest).
  if (root.winner >= 0) {
    const auto r = inspect_root_slot(roots[root.winner]);
    if (!r.first.empty())
      throw error(errc::corrupt,
                  where + "the root slot (offset " + sparse::hex(roots[root.winner].offset) + ", " +
                      std::to_string(roots[root.winner].size) + " bytes) " + r.first);
  }
  root_copy_ = root.winner < 0 ? 0 : root.winner;
  names_copy_ = table.winner < 0 ? 0 : table.winner;
  stale_root_ = root.stale;
  stale_names_ = table.stale;
}

// After recover_root has decided (it refuses a heap before anything is
// written): each stale copy is rewritten from its winner, or cleared. A
// repair, unless a crash inside root() explains it: root() writes copy A,
// fences, then writes copy B, so after a crash copy B may be empty or torn
// next to a valid copy A, or copy A torn next to an empty copy B (recovery,
// the outcome stays `recovered`).
void heap_impl::rewrite_stale_slots() {
  const persistence& p = model_->media().persist();
  const bool root_crash =
      unclean_ &&
      (stale_root_ == 1 || (stale_root_ == 0 && sparse::root_slot_empty(*root_copy(1))));
  const auto rewrite = [&](const char* what, void* stale, const void* from, std::size_t n, int copy,
                           bool crash) {
    const std::string copy_text = std::string(what) + " copy " + "AB"[copy];
    const std::string note =
        from ? copy_text + " from copy " + "AB"[1 - copy] + " (it was damaged or stale)"
             : copy_text + " (torn or damaged next to an empty copy " + "AB"[1 - copy] +
                   ": a root() that did not complete, or damage)";
    if (read_only()) {
      plan_.steps.push_back((from ? "rewrite " : "clear ") + note);
      return;
    }
    if (from)
      std::memmove(stale, from, n);
    else
      std::memset(stale, 0, n);
    p.flush(stale, n);
    if (!crash) repairs_.push_back((from ? "rewrote " : "cleared ") + note);
  };
  const bool wrote = stale_root_ >= 0 || stale_names_ >= 0;
  if (stale_root_ >= 0) {
    const bool from = !sparse::root_slot_empty(*root_copy(1 - stale_root_));
    rewrite("the root slot", root_copy(stale_root_), from ? root_copy(1 - stale_root_) : nullptr,
            sizeof(sparse::root_slot), stale_root_, root_crash);
  }
  if (stale_names_ >= 0) {
    const bool from = !sparse::names_slot_empty(*names_copy(1 - stale_names_));
    rewrite("the name-table slot", names_copy(stale_names_),
            from ? names_copy(1 - stale_names_) : nullptr, sizeof(sparse::names_slot), stale_names_,
            false);
  }
  stale_root_ = stale_names_ = -1;
  if (wrote && !read_only()) {
    p.drain();
    root_copy_ = names_copy_ = 0;
  }
}

namespace {
// The class of the slab whose head page holds `offset` (its bitmap lies
// there), by a head descriptor that checks out; nullptr when there is none.
const alloc::size_class* slab_headed_at(const sparse::memory_model& m, std::uint64_t offset) {
  const sparse::page_descriptor& d = *m.pfn_to_page(offset >> sparse::page_shift);
  if (!sparse::is_slab(d.state()) || !sparse::descriptor_checks_out(d.load()) ||
      d.sub() >= alloc::nr_slab_classes)
    return nullptr;
  return &alloc::size_classes[d.sub()];
}
}  // namespace

// Whether `mask` are bits of objects in the bitmap word at `offset` of a
// slab whose head descriptor checks out.
bool heap_impl::slab_bitmap_bits(std::uint64_t offset, std::uint64_t mask) const noexcept {
  const alloc::size_class* slab = slab_headed_at(*model_, offset);
  if (slab == nullptr) return false;
  const alloc::size_class& c = *slab;
  const std::uint64_t w = (offset & (sparse::page_size - 1)) / 8;
  return mask != 0 && w < c.words() && (mask & ~c.valid_bits(static_cast<std::uint32_t>(w))) == 0;
}

// What replay_lanes checks of a committed lane before it applies any lane:
// each action is one a batch can make, and a lane that writes the name-table
// slot writes whole copies that check out. Empty when it is plausible.
std::string heap_impl::lane_problem(const sparse::lane_header& h) const {
  const auto* entries = reinterpret_cast<const sparse::log_entry*>(&h + 1);
  const std::uint64_t head = model_->geo().head_size();
  const auto usable_page = [&](std::uint64_t offset) {
    const std::uint64_t pfn = offset >> sparse::page_shift;
    return model_->pfn_valid(pfn) &&
           model_->get_pageblock_migratetype(pfn) != sparse::migratetype::metadata;
  };
  sparse::names_slot written[2] = {};
  unsigned words_written[2] = {};
  for (std::uint64_t e = 0; e < h.count; ++e) {
    const std::uint64_t op = entries[e].target >> sparse::log_op_shift;
    const std::uint64_t at = entries[e].target & offset_mask;
    const std::uint64_t value = entries[e].value;
    const std::string which = "entry " + std::to_string(e) + " ";
    if (op == sparse::log_content) {
      if (at < head || !model_->mapped(at, value))
        return which + "copies an object outside the heap's memory";
      for (std::uint64_t pb = at; pb < at + value;
           pb = sparse::align_down(pb, sparse::subsection_size) + sparse::subsection_size)
        if (!usable_page(pb)) return which + "copies an object into absent or metadata memory";
      continue;
    }
    if (at % 8 || !model_->mapped(at, 8)) return which + "targets a word outside the heap";
    if (names_slot_word(at)) {
      if (op != sparse::log_store) return which + "sets or clears bits of the name-table slot";
      const int c = names_slot_word_copy(at);
      std::memcpy(reinterpret_cast<std::byte*>(&written[c]) + (at % 16 == 0 ? 0 : 8), &value, 8);
      words_written[c] |= at % 16 == 0 ? 1u : 2u;
      continue;
    }
    if (at < head) return which + "targets the head";
    if (op == sparse::log_set_bits || op == sparse::log_clear_bits) {
      // Only a slab's bitmap word, and only bits of its objects: the
      // word's check bits (or the slab's digest) change with them.
      if (!usable_page(at) || !slab_bitmap_bits(at, value))
        return which +
               "sets or clears bits of a word that is not a slab's bitmap: " + sparse::hex(at);
      continue;
    }
    if (usable_page(at)) {  // a word of an object, not of a slab's bitmap
      if (const auto* slab = slab_headed_at(*model_, at);
          slab && at % sparse::page_size < slab->header)
        return which + "stores into a slab's bitmap at " + sparse::hex(at);
      continue;
    }
    if (!model_->in_memmap_block(at) || op != sparse::log_store)
      return which + "targets metadata or absent memory at " + sparse::hex(at);
    // A descriptor: a batch stores an extent's head ({extent, 0, pages}) or
    // the free descriptor.
    const std::uint64_t pfn =
        model_->page_to_pfn(reinterpret_cast<const sparse::page_descriptor*>(model_->base() + at));
    const sparse::page_descriptor d{value};
    const bool extent = value == sparse::page_info(sparse::page_state::extent, 0, d.length()) &&
                        d.length() >= 1 &&
                        d.length() <= (model_->geo().max_range >> sparse::page_shift) - pfn;
    if (!usable_page(pfn << sparse::page_shift) || (value != sparse::free_descriptor && !extent))
      return which + "stores " + sparse::hex(value) + " into the descriptor of " +
             sparse::hex(pfn << sparse::page_shift) + ", which no batch does";
  }
  for (int c = 0; c < 2; ++c)
    if (words_written[c] && (words_written[c] != 3 || !sparse::names_slot_valid(written[c])))
      return std::string("its stores to the name-table slot's copy ") + "AB"[c] +
             " do not make a copy that checks out";
  if ((words_written[0] != 0) != (words_written[1] != 0))
    return "it writes one copy of the name-table slot only";
  return {};
}

// Bytes of the allocation that starts at `offset` as the media records it
// (a slab object whose bit is set, an extent's head outside quarantine); 0
// when none does. Reads no volatile allocator state.
std::uint64_t heap_impl::media_allocation_size(std::uint64_t offset) const noexcept {
  if (offset < model_->geo().head_size() || !model_->mapped(offset, 1)) return 0;
  const std::byte* p = model_->base() + offset;
  if (const auto bit = small_.locate_on_media(p))
    return (std::atomic_ref<std::uint64_t>(*bit->word).load() & bit->mask)
               ? alloc::size_classes[bit->cls].size
               : 0;
  const sparse::page_descriptor* head = extent_head(p);
  return head ? head->length() * sparse::page_size : 0;
}

int heap_impl::names_slot_word_copy(std::uint64_t offset) const noexcept {
  return (offset & ~std::uint64_t{8}) == sparse::names_slot_offset ? 0 : 1;
}

// heap::check(): the root slot's copies, the name table and every entry of
// it, and the committed lanes.
void heap_impl::check_heap_metadata(std::vector<std::string>& problems) const {
  const sparse::root_slot roots[2] = {*root_copy(0), *root_copy(1)};
  if (std::memcmp(&roots[0], &roots[1], sizeof roots[0]) != 0 && !root_pending_)
    problems.push_back("the root slot's two copies differ");
  const auto allocated = [&](std::uint64_t offset) { return media_allocation_size(offset); };
  const sparse::names_slot names[2] = {*names_copy(0), *names_copy(1)};
  if (std::memcmp(&names[0], &names[1], sizeof names[0]) != 0)
    problems.push_back("the name-table slot's two copies differ");
  std::uint64_t table = 0;
  try {
    table = names_table_offset();
  } catch (const error& e) {
    problems.push_back(e.what());
  }
  if (table) {
    const std::string what = "the named-object index at " + sparse::hex(table) + " ";
    const std::uint64_t room = allocated(table);
    const auto* words = reinterpret_cast<const std::uint64_t*>(model_->base() + table);
    const auto unreadable = [&](std::uint64_t offset, std::uint64_t length) {
      const auto failure = model_->reader().probe(model_->base(), offset, length);
      if (failure) problems.push_back(media::describe(*failure) + " (" + what + ")");
      return failure.has_value();
    };
    if (room != 0 && unreadable(table, room)) {
      // (reported)
    } else if (room < 48 || words[0] == 0 || words[0] > (room - 16) / 32) {
      problems.push_back(what + "is not an allocated table of its capacity");
    } else {
      // An entry is written whole (object, count, type, then name) and
      // cleared whole, in one batch: all four words zero, or a name.
      std::vector<std::uint64_t> names_seen, objects_seen;
      for (std::uint64_t i = 0; i < words[0]; ++i) {
        const std::uint64_t* entry = words + 2 + 4 * i;  // name, object, count, type
        const std::string which = what + "entry " + std::to_string(i) + " ";
        if (entry[0] == 0) {
          if (entry[1] || entry[2] || entry[3])
            problems.push_back(which + "has no name but names an object");
          continue;
        }
        names_seen.push_back(entry[0]);
        objects_seen.push_back(entry[1]);
        const std::uint64_t name_room = allocated(entry[0]);
        const auto* text = reinterpret_cast<const char*>(model_->base() + entry[0]);
        if (name_room != 0 && unreadable(entry[0], name_room)) continue;
        if (name_room == 0 || strnlen(text, name_room) == name_room)
          problems.push_back(which + "names a string that is not allocated and terminated");
        const std::uint64_t object_room = allocated(entry[1]);
        if (object_room == 0)
          problems.push_back(which + "names an object at " + sparse::hex(entry[1]) +
                             " that is not allocated");
        else if (entry[2] == 0 || entry[2] > object_room)
          problems.push_back(which + "has a count that does not fit its object");
      }
      // Each entry has a name and an object of its own.
      for (auto* seen : {&names_seen, &objects_seen}) {
        std::sort(seen->begin(), seen->end());
        if (std::adjacent_find(seen->begin(), seen->end()) != seen->end())
          problems.push_back(what + "has two entries with the same " +
                             (seen == &names_seen ? "name" : "object"));
      }
    }
  }
  for (unsigned i = 0; i < sparse::nr_lanes; ++i) {
    const sparse::lane_header* h = lane(i);
    if (h->count == 0 || h->checksum == 0 || h->count > sparse::max_log_entries ||
        h->format != sparse::lane_format_inline || inline_bytes(i) == UINT64_MAX ||
        h->checksum != lane_checksum(i))
      continue;
    if (auto why = lane_problem(*h); !why.empty())
      problems.push_back("redo lane " + std::to_string(i) + " holds an impossible action: " + why);
  }
}

}  // namespace daxalloc::detail

namespace daxalloc::detail {

// ---- digests recorded at a clean close ----

// Calls f(span_start, block) for each span that has a memmap block.
template <class F>
void heap_impl::for_each_memmap_block(F&& f) const {
  const auto& geo = model_->geo();
  for (std::uint64_t span = 0; span < geo.max_range; span += geo.span_size())
    if (const std::uint64_t block = model_->span_memmap(span)) f(span, block);
}

// The digest of memmap page `k` of the block at `block` in the span at
// `span`: its 512 descriptors (those of memmap pages, which hold the
// digests, by their state alone) and the flags of the pageblock they
// describe.
std::uint64_t heap_impl::memmap_page_digest(std::uint64_t span, std::uint64_t block,
                                            std::uint64_t k) const noexcept {
  std::array<std::uint64_t, alloc::pageblock_pages + 1> words;
  const auto* d =
      reinterpret_cast<const std::uint64_t*>(model_->base() + block) + k * alloc::pageblock_pages;
  for (std::uint64_t i = 0; i < alloc::pageblock_pages; ++i) {
    const std::uint64_t w = std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(d[i]))
                                .load(std::memory_order_relaxed);
    words[i] = (w & 0xff) == static_cast<std::uint64_t>(sparse::page_state::memmap)
                   ? sparse::page_info(sparse::page_state::memmap)
                   : w;
  }
  const std::uint64_t pfn = (span >> sparse::page_shift) + k * alloc::pageblock_pages;
  words[alloc::pageblock_pages] =
      model_->pfn_valid(pfn) ? static_cast<std::uint64_t>(model_->get_pageblock_migratetype(pfn))
                             : 0xff;
  return sparse::words_digest(words.data(), words.size(), block + k, 48);
}

template <class F>
void heap_impl::for_each_slab_head(F&& f) const {
  for_each_memmap_block([&](std::uint64_t span, std::uint64_t block) {
    auto* d = reinterpret_cast<sparse::page_descriptor*>(model_->base() + block);
    const std::uint64_t pages = model_->geo().memmap_bytes() / sizeof(sparse::page_descriptor);
    for (std::uint64_t i = 0; i < pages; ++i) {
      const std::uint64_t pfn = (span >> sparse::page_shift) + i;
      if (i % alloc::pageblock_pages == 0 &&
          (!model_->pfn_valid(pfn) ||
           model_->get_pageblock_migratetype(pfn) == sparse::migratetype::isolate)) {
        i += alloc::pageblock_pages - 1;  // absent or quarantined: not the allocator's
        continue;
      }
      if (sparse::is_slab(d[i].state()) && sparse::descriptor_checks_out(d[i].load()) &&
          d[i].sub() < alloc::nr_slab_classes)
        f(d[i], pfn);
    }
  });
}

// Close, before the heap is marked closed cleanly: every format 5 slab's
// head descriptor gets the digest of its bitmap (but a damaged slab's, kept
// for the next open to find, and those of slabs never loaded since a clean
// open: they hold it already), then every memmap page
// descriptor the digest of what it covers (only those that changed are
// written), one fence. A crash before the clean mark leaves an unclean heap,
// whose digests the next open does not check. (Legacy slab digests are kept
// up to date all along: small_allocator::bits_changed.)
void heap_impl::record_digests() noexcept {
  const persistence& p = model_->media().persist();
  bool wrote = false;
  const auto put = [&](sparse::page_descriptor& d, std::uint64_t value) {
    if (d.load() == value) return;
    d.store(value);
    p.flush(&d.info, 8);
    wrote = true;
  };
  for_each_slab_head([&](sparse::page_descriptor& d, std::uint64_t pfn) {
    if (!alloc::is_legacy_class(d.sub()) && small_.digest_stale(pfn))
      put(d, sparse::with_slab_digest(d.load(), small_.bitmap_digest(pfn, d.sub())));
  });
  // Present pageblocks only: work in proportion to the present memory, as
  // open's scan; an absent pageblock keeps what it had, and open skips it.
  for_each_memmap_block([&](std::uint64_t span, std::uint64_t block) {
    for (std::uint64_t k = 0; k < model_->geo().memmap_bytes() / sparse::page_size; ++k) {
      if (!model_->pfn_valid((span >> sparse::page_shift) + k * alloc::pageblock_pages)) continue;
      sparse::page_descriptor& own = *model_->pfn_to_page((block >> sparse::page_shift) + k);
      put(own, sparse::memmap_info(memmap_page_digest(span, block, k)));
    }
  });
  if (wrote) p.drain();
}

// Open: every legacy slab's digest against its bitmap (reconcile_slabs),
// and, for a cleanly closed heap, every memmap digest recorded at its close
// (a format 5 slab's digest is compared when the slab is first loaded:
// small_allocator::load). A mismatch
// is damage (a zeroed or changed descriptor, a changed bitmap, a pageblock's
// type), reported on the pageblock concerned.
void heap_impl::digest_problems(std::vector<std::string>& problems,
                                std::vector<std::uint64_t>& bad) {
  reconcile_slabs(problems, bad);
  if (unclean_) return;
  for_each_memmap_block([&](std::uint64_t span, std::uint64_t block) {
    const std::uint64_t pages = model_->geo().memmap_bytes() / sizeof(sparse::page_descriptor);
    for (std::uint64_t k = 0; k < pages / alloc::pageblock_pages; ++k) {
      const std::uint64_t pfn = (span >> sparse::page_shift) + k * alloc::pageblock_pages;
      if (!model_->pfn_valid(pfn)) continue;  // absent: its digest is not kept up to date
      const sparse::page_descriptor& own = *model_->pfn_to_page((block >> sparse::page_shift) + k);
      const std::uint64_t recorded = sparse::memmap_digest(own.load());
      if (recorded && recorded != memmap_page_digest(span, block, k)) {
        problems.push_back("the descriptors or the type of the pageblock at " +
                           sparse::hex(pfn << sparse::page_shift) +
                           " changed while the heap was closed (its memmap digest does not match)");
        bad.push_back(pfn / alloc::pageblock_pages);
      }
    }
  });
}

}  // namespace daxalloc::detail

namespace daxalloc::detail {

// Repair: the objects the media records in a pageblock it quarantines (its
// extent heads, and the objects of its slabs whose bits are set), which it
// can no longer vouch for, by offset (at most 32 listed, then the count).
std::string heap_impl::objects_in_pageblock(std::uint64_t pageblock) const {
  std::vector<std::uint64_t> offsets;
  const std::uint64_t first = pageblock * alloc::pageblock_pages;
  if (!model_->pfn_valid(first)) return "no object recorded in it";
  if (auto failure = model_->probe_descriptors(first))
    return "its descriptors do not read (" + media::describe(*failure) + "): objects not listed";
  for (std::uint64_t pfn = first; pfn < first + alloc::pageblock_pages; ++pfn) {
    if (!model_->pfn_valid(pfn)) break;
    const std::uint64_t info = model_->pfn_to_page(pfn)->load();
    const sparse::page_descriptor d{info};
    if (!sparse::descriptor_checks_out(info)) continue;
    if (d.state() == sparse::page_state::extent) offsets.push_back(pfn << sparse::page_shift);
    if (!sparse::is_slab(d.state()) || d.sub() >= alloc::nr_slab_classes) continue;
    const auto& c = alloc::size_classes[d.sub()];
    const std::uint64_t skew =
        d.state() == sparse::page_state::movable_slab ? alloc::movable_skew : 0;
    const auto* bits =
        reinterpret_cast<const std::uint64_t*>(model_->base() + (pfn << sparse::page_shift));
    if (model_->reader().probe(model_->base(), pfn << sparse::page_shift, c.header)) continue;
    for (std::uint32_t i = 0; i < c.objects; ++i)
      if (c.allocated(bits, i))
        offsets.push_back((pfn << sparse::page_shift) + c.header + skew +
                          std::uint64_t{i} * c.size);
  }
  if (offsets.empty()) return "no object recorded in it";
  std::string out = std::to_string(offsets.size()) + " object(s) recorded in it, not vouched for:";
  for (std::size_t i = 0; i < offsets.size() && i < 32; ++i) out += " " + sparse::hex(offsets[i]);
  if (offsets.size() > 32) out += " ...";
  return out;
}

// Every legacy slab's digest against its bitmap (format 4; a format 5
// slab's words check themselves: small_allocator::rebuild). After a clean close
// they agree exactly. After a crash they may disagree by the changes in
// flight, each a bitmap RMW and a digest XOR made before one fence, of which
// either may have reached the media: the bits of the committed lanes this
// open replayed (lane_bits_), and one plain allocate or free per slab. A
// difference made of those is resolved towards allocated (the object of a
// torn change keeps its bit: a torn allocate leaks, a torn free did not
// happen) and the digest rewritten; any other difference is damage. A slab
// whose lanes changed more than max_lane_terms bits cannot be told apart
// from damage well enough: its digest is re-derived, and the outcome says so.
void heap_impl::reconcile_slabs(std::vector<std::string>& problems,
                                std::vector<std::uint64_t>& bad) {
  constexpr unsigned max_lane_terms = 12;
  const persistence& p = model_->media().persist();
  bool wrote = false;
  // (The scan reports a bad head; a quarantined slab is not the allocator's.)
  for_each_slab_head([&](sparse::page_descriptor& head, std::uint64_t pfn) {
    if (!alloc::is_legacy_class(head.sub())) return;
    const std::uint64_t info = head.load();
    const unsigned cls = head.sub();
    const std::uint64_t stored = sparse::slab_digest(info);
    std::uint64_t actual = small_.bitmap_digest(pfn, cls);
    if (actual == stored) return;
    const std::string where = "the slab at " + sparse::hex(pfn << sparse::page_shift);
    if (!unclean_) {
      problems.push_back(where +
                         ": its bitmap does not match its digest (changed while the "
                         "heap was closed)");
      bad.push_back(pfn / alloc::pageblock_pages);
      return;
    }
    // The objects whose bits the lanes replayed at this open changed: the
    // bitmap holds what the lanes committed, the digest some of it.
    std::vector<std::uint32_t> lane_objects;
    const std::uint64_t page = pfn << sparse::page_shift;
    for (const auto& [word, mask] : lane_bits_)
      if (word >= page && word < page + sparse::page_size)
        for (std::uint64_t m = mask; m; m &= m - 1)
          lane_objects.push_back(static_cast<std::uint32_t>(
              (word - page) / 8 * 64 + static_cast<unsigned>(std::countr_zero(m))));
    std::sort(lane_objects.begin(), lane_objects.end());
    lane_objects.erase(std::unique(lane_objects.begin(), lane_objects.end()), lane_objects.end());
    const std::uint32_t objects = alloc::size_classes[cls].objects;
    std::optional<std::uint32_t> extra;  // the object of a torn plain change
    bool explained = false;
    if (lane_objects.size() > max_lane_terms) {
      explained = true;
      if (!read_only())  // (read-only: the plan's rewrite below says it)
        repairs_.push_back(where + ": " + std::to_string(lane_objects.size()) +
                           " bits changed by replayed batches; its digest was re-derived "
                           "from its bitmap, unverified");
    }
    // The lanes' changes alone first; then with one other object's.
    for (int pass = 0; pass < 2 && !explained; ++pass)
      for (std::uint64_t subset = 0; !explained && subset >> lane_objects.size() == 0; ++subset) {
        std::uint64_t rest = actual ^ stored;
        for (std::size_t t = 0; t < lane_objects.size(); ++t)
          if (subset >> t & 1) rest ^= sparse::slab_bit_digest(lane_objects[t]);
        if (pass == 0) {
          explained = rest == 0;
          continue;
        }
        const std::uint64_t o = sparse::slab_bit_of_digest(rest);
        if (rest != 0 && o < objects &&
            !std::binary_search(lane_objects.begin(), lane_objects.end(), o)) {
          explained = true;
          extra = static_cast<std::uint32_t>(o);
        }
      }
    if (!explained) {
      problems.push_back(where +
                         ": its bitmap does not match its digest (damaged: more "
                         "than the changes a crash leaves in flight)");
      bad.push_back(pfn / alloc::pageblock_pages);
      return;
    }
    auto* bits = reinterpret_cast<std::uint64_t*>(model_->base() + page);
    if (read_only()) {  // the plan: nothing written
      digests_pending_.push_back(pfn);
      plan_.steps.push_back("rewrite the digest of " + where + " (changes in flight at the crash)" +
                            (extra && (bits[*extra / 64] >> (*extra % 64) & 1) == 0
                                 ? ", and mark its object " + std::to_string(*extra) + " allocated"
                                 : ""));
      return;
    }
    if (extra) {
      std::atomic_ref<std::uint64_t> w(bits[*extra / 64]);
      if ((w.load() >> (*extra % 64) & 1) == 0) {
        w.fetch_or(std::uint64_t{1} << (*extra % 64));
        p.flush(&bits[*extra / 64], 8);
        actual = small_.bitmap_digest(pfn, cls);
      }
    }
    head.store(sparse::with_slab_digest(info, actual));
    p.flush(&head.info, 8);
    wrote = true;
  });
  if (wrote) p.drain();
}

std::vector<std::string> upgrade_region(region& r) {
  static constexpr auto objects = [] {
    std::array<std::uint32_t, alloc::nr_size_classes> n{};  // (formats 2 to 4: legacy)
    for (unsigned c = 0; c < n.size(); ++c)
      n[c] = alloc::size_classes[alloc::legacy_class(c)].objects;
    return n;
  }();
  return sparse::upgrade(r, objects);
}

}  // namespace daxalloc::detail

namespace daxalloc {

std::vector<std::string> heap::upgrade(const std::filesystem::path& path) {
  region r = region::open(path);
  return detail::upgrade_region(r);
}

}  // namespace daxalloc
