// Harness `image`: recovery of damaged heap images.
//
// The input picks one of a few small, valid heap images built in-process at
// the first call (varied geometry and content: slabs, extents, a root, a
// published object, a hot-added span, an unclean shutdown, a pending hotplug
// intent and a committed redo lane) and edits fields of it: superblock
// copies (resealed or not), the geometry, the hotplug intent, root directory
// entries, section record words, page descriptors, slab bitmaps, the root
// slot, redo lanes, raw bytes and the file size. Structure-aware edits reseal
// checksums when the input says so, so that the fuzzer gets past them and
// reaches the deep recovery code.
//
// The contract checked (docs/fuzzing.md): heap::open either throws
// daxalloc::error or succeeds with check() empty (or reporting only slabs
// found damaged at their first use: open reads no slab bitmap). A heap that opened then
// survives a short workload (free what the media says is allocated, allocate,
// reserve and cancel, the root, publish, hot-add and hot-remove) with check()
// empty and, when the input asks, closes and opens again with check() empty.
// Anything else (another exception, a crash, a sanitizer report, a hang) is a
// finding.
//
// The model (issue 18): a heap that opens with check() empty claims to be
// sound, and for damage the format is meant to detect that claim is checked
// against what each base image holds. build_base() records every allocation
// the media lists (offset and allocated size; most filled with a distinct
// byte pattern), the root and, for base 3, the store its committed redo lane
// makes. The probe then requires: every model object still allocated at its
// offset with its size, its bytes those of the edited image (raw damage to
// an object's bytes is not the heap's to see; base 3's lane store applied
// when that lane is intact), no other allocation on the media, root() of the
// model's size at the model's offset, and fresh allocations of 16 B..3 MiB
// overlapping no model object. A failure while check() is empty is a
// finding: "silently wrong".
//
// When the model is compared (compare_model): all three of
//   1. the base image was closed cleanly (its digests are recorded), or
//      compare_model_on_unclean_bases is set (see there; on since format 4);
//   2. no edit resealed anything (superblock, intent, root slot or lane
//      edits with their reseal flag, an overlay with its reseal flag);
//   3. after the edits no checksummed record that differs from the base
//      checks out (forged_record): a changed superblock copy, hotplug intent
//      or committed redo lane whose checksum matches, or a slot (root,
//      name table) of which no valid copy naming something is left as it
//      was while a changed copy checks out or is empty. Raw bytes can forge
//      such a record too (a copied range, or a checksum libFuzzer's
//      comparison tracing solved), and a valid record is a different heap,
//      not damage.
// So the model is compared after raw damage only (unsealed fields, words,
// bit flips, zeroes, copies, truncation) to a cleanly closed image. Every
// other input keeps the contract above. A page descriptor edit counts as raw
// although its structured form writes valid check bits: in a clean image the
// memmap page's digest, which no edit recomputes, covers the word. A slab
// bitmap word that was changed and checks out (format 5's 8 check bits per
// word) counts as a forged record too. Not excluded, and to be triaged if
// one turns up: a forged 8-bit descriptor check together with the 48-bit
// digest of its memmap page (the raw edits cannot compute one, so only by
// chance or by comparison tracing).
#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "daxalloc/batch.hpp"
#include "daxalloc/heap.hpp"
#include "formats.hpp"
#include "fuzz_common.hpp"
#include "heap/access.hpp"
#include "sparse/superblock.hpp"

namespace {

using namespace fuzz;
namespace sp = daxalloc::sparse;

// Whether the model is compared on a base image left by an unclean shutdown
// (base 2). On since format 4: a zeroed page descriptor fails its seeded
// check bits, and slab bitmaps are verified at every open, so the damage
// format 3 could not see in an unclean image is seen (the "(unclean image)"
// rows of tests/corruption/). One difference from a clean base: a
// structured descriptor edit writes valid check bits, which only the memmap
// page digest of a clean close would catch, so on an unclean base it counts
// as a forged record. (Format 4 also allowed an allocation the base does not
// have on an unclean base, a bitmap bit set on a free object reading as a
// torn allocate; format 5's bitmap words do not tear.)
constexpr bool compare_model_on_unclean_bases = true;

// ---- the model ----

struct model_object {
  std::uint64_t offset, size;  // as the media lists it (a slab class's size, whole pages)
  std::uint8_t fill;           // the byte written into it at build, 0 if none
};

struct image_model {
  std::vector<model_object> objects;  // every allocation of the base, sorted by offset
  std::uint64_t root_offset = 0, root_size = 0;
  // Base 3: the committed redo lane at lane_at stores lane_value to
  // lane_target. Replayed when the lane is as built, else (damaged: its
  // checksum fails) dropped as a torn commit, which the format allows.
  std::uint64_t lane_at = 0, lane_target = 0, lane_value = 0;
};

struct base_image {
  std::string name;
  sparse_image image;
  sp::geometry geo;
  std::vector<std::uint64_t> interesting;  // offsets worth editing near
  std::vector<std::uint64_t> candidates;   // values worth writing
  std::vector<std::uint64_t> pfns;         // pages whose descriptors are worth editing
  std::vector<std::uint64_t> slabs;        // first pfn of each slab
  std::vector<std::uint64_t> sections;     // present section numbers
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;  // span start -> memmap offset
  bool clean = true;  // closed cleanly: the digests of format 3 are recorded
  image_model model;
};

daxalloc::heap_open_options open_options() {
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::none;  // a tmpfs file: nothing to flush
  return o;
}

std::uint64_t lane_checksum(const sp::lane_header& h) {
  std::vector<std::uint64_t> words{h.sequence, h.count};
  const auto* entries = reinterpret_cast<const sp::log_entry*>(&h + 1);
  for (std::uint64_t i = 0; i < h.count && i < sp::max_log_entries; ++i) {
    words.push_back(entries[i].target);
    words.push_back(entries[i].value);
  }
  return sp::fletcher64(words.data(), words.size() * 8);
}

std::uint64_t slot_checksum(const sp::root_slot& s) {
  return sp::fletcher64(&s, 16);
}

// What the editor needs to know about an image: where its structures are.
void catalogue(base_image& b, daxalloc::heap& h) {
  auto& impl = daxalloc::detail::internals(h);
  const auto& model = impl.model();
  b.geo = model.geo();
  const auto& geo = b.geo;
  std::set<std::uint64_t> interesting{0,
                                      4096,
                                      sp::intent_offset,
                                      sp::root_slot_offset,
                                      sp::directory_offset,
                                      geo.roots_offset(),
                                      geo.lanes_offset(),
                                      geo.lanes_offset() + sp::lane_size};
  std::set<std::uint64_t> candidates{geo.head_size(),    geo.max_range, geo.span_size(),
                                     geo.section_size(), h.size(),      sp::subsection_size};
  std::set<std::uint64_t> pfns{0, (geo.head_size() >> sp::page_shift) - 1};
  for (std::uint64_t nr = 0; nr < geo.nr_sections(); ++nr) {
    if (!model.section_present(nr)) continue;
    b.sections.push_back(nr);
    interesting.insert(static_cast<std::uint64_t>(
        reinterpret_cast<std::byte*>(model.section_record(nr)) - model.base()));
    const std::uint64_t start = nr << geo.section_size_bits;
    const std::uint64_t span = sp::align_down(start, geo.span_size());
    const std::uint64_t memmap = model.span_memmap(start);
    if (b.spans.empty() || b.spans.back().first != span) {
      b.spans.emplace_back(span, memmap);
      candidates.insert(memmap);
      candidates.insert(model.section_record(nr)[0]);
      interesting.insert(memmap);
      pfns.insert(memmap >> sp::page_shift);
      pfns.insert((memmap + geo.memmap_bytes()) >> sp::page_shift);
    }
  }
  std::vector<std::string> ignored;
  daxalloc::alloc::page_allocator scan(impl.model());
  for (const auto& e : scan.rebuild(ignored)) {
    pfns.insert(e.pfn);
    pfns.insert(e.pfn + e.pages - 1);
    pfns.insert(e.pfn + e.pages);
    interesting.insert(e.pfn << sp::page_shift);
    candidates.insert(e.pfn << sp::page_shift);
    candidates.insert(model.pfn_to_page(e.pfn)->load());
    if (e.slab) b.slabs.push_back(e.pfn);
  }
  for (auto [offset, size] : impl.allocations()) {
    interesting.insert(offset);
    candidates.insert(offset);
    candidates.insert(size);
  }
  b.interesting.assign(interesting.begin(), interesting.end());
  b.candidates.assign(candidates.begin(), candidates.end());
  b.pfns.assign(pfns.begin(), pfns.end());
}

struct root_type {
  daxalloc::pptr<std::uint64_t> published;
  std::uint64_t counter;
  std::uint64_t pad[6];
};

// What build_base wrote into an object: its byte, and the offset of the
// last byte written (checked to be in the image).
struct fill_record {
  std::uint8_t fill;
  std::uint64_t last;
};

// The model of a base: every allocation the media lists, with the byte
// written into it (fills: by offset), and the root slot.
void record_model(base_image& b, daxalloc::heap& h,
                  const std::map<std::uint64_t, fill_record>& fills) {
  for (auto [offset, size] : daxalloc::detail::internals(h).allocations()) {
    const auto it = fills.find(offset);
    b.model.objects.push_back(
        {offset, size, it == fills.end() ? std::uint8_t{0} : it->second.fill});
  }
  std::sort(b.model.objects.begin(), b.model.objects.end(),
            [](const model_object& x, const model_object& y) { return x.offset < y.offset; });
  const auto* slot = reinterpret_cast<const sp::root_slot*>(h.base() + sp::root_slot_offset);
  b.model.root_offset = slot->offset;
  b.model.root_size = slot->size;
  for (const auto& [offset, f] : fills) {
    std::uint8_t byte = 0;
    bool listed = false;
    for (const model_object& o : b.model.objects) listed = listed || o.offset == offset;
    if (listed && (!b.image.load(f.last, &byte, 1) || byte != f.fill))
      finding(b.name + ": the fill of the object at " + std::to_string(offset) +
              " is not in the image");
  }
}

base_image build_base(unsigned which) {
  const auto path = scratch_file("image-base");
  std::filesystem::remove(path);
  daxalloc::heap_options o;
  o.mode = daxalloc::persistence_mode::none;
  o.size = 16 * MiB;
  o.max_size = 2 * GiB;  // two memmap spans of 1 GiB
  if (which == 1) {
    o.section_size_bits = 30;  // 1 GiB sections: one per span
    o.max_size = 4 * GiB;
  } else if (which == 2) {
    o.section_size_bits = 28;
  }
  base_image b;
  b.name = "base " + std::to_string(which);
  b.clean = which != 2;
  auto h = daxalloc::heap::create(path, o);
  // Each object kept gets its own byte from `from` on: all of it up to
  // 64 KiB, else its first and last 4 KiB (the pages between stay zero,
  // which the probe checks as well). The first bytes of a root stay zero:
  // the workload publishes into its pptr.
  std::map<std::uint64_t, fill_record> fills;
  const auto keep = [&](void* p, std::uint64_t size, std::uint64_t from = 0) {
    const auto fill = static_cast<std::uint8_t>(0x11 + 3 * fills.size());
    auto* bytes = static_cast<std::uint8_t*>(p);
    if (size <= 64 * 1024) {
      std::memset(bytes + from, fill, size - from);
    } else {
      std::memset(bytes + from, fill, 4096 - from);
      std::memset(bytes + size - 4096, fill, 4096);
    }
    h.persist().persist(p, size);
    fills[h.offset_of(p)] = {fill, h.offset_of(p) + size - 1};
    return p;
  };
  if (which == 1) {
    (void)keep(h.allocate(48), 48);
    (void)keep(h.root(300000), 300000, sizeof(root_type));  // a root that is an extent
    (void)keep(h.allocate(3 * MiB), 3 * MiB);
  } else {
    for (std::size_t size : {24, 24, 24, 200, 5000, 70000}) (void)keep(h.allocate(size), size);
    void* gone = h.allocate(24);
    void* big = keep(h.allocate(3 * MiB), 3 * MiB);
    h.deallocate(gone);
    auto* root = h.root<root_type>();
    (void)keep(root, sizeof(root_type), offsetof(root_type, pad));
    (void)h.make_published(root->published, std::uint64_t{42});
    if (which == 2) {
      std::vector<void*> small;
      for (int i = 0; i < 64; ++i) small.push_back(keep(h.allocate(16), 16));
      for (int i = 0; i < 64; i += 3) h.deallocate(small[i]);
      h.deallocate(big);
    } else {
      h.hot_add(32 * MiB, 2 * MiB);  // partial: a hole between 16 and 32 MiB
      h.hot_add(1 * GiB, 4 * MiB);   // a second span: its memmap block from the area
    }
  }
  if (which == 2) {
    // An unclean shutdown: the image as the heap left it while open.
    b.image = sparse_image::read(path);
    catalogue(b, h);
    record_model(b, h, fills);
  } else {
    catalogue(b, h);
    h.close();
    b.image = sparse_image::read(path);
    // The model from the closed image (close may change what the media
    // lists, e.g. objects a thread cache held).
    auto again = daxalloc::heap::open(path, open_options());
    record_model(b, again, fills);
    again.close();
  }
  if (which == 3) {
    // Pending work for recovery: a committed hot-add whose records were never
    // written, and a committed redo lane that stores into the root object.
    const std::uint64_t start = 64 * MiB, length = 4 * MiB;
    sp::hotplug_intent in{};
    b.image.load(sp::intent_offset, &in, sizeof in);
    in.op = sp::hotplug_add;
    in.start = start;
    in.length = length;
    in.sequence += 1;
    in.checksum = sp::fletcher64(&in, offsetof(sp::hotplug_intent, checksum));
    b.image.store(sp::intent_offset, &in, sizeof in);
    b.image.size = std::max<std::uint64_t>(b.image.size, start + length);
    sp::root_slot slot{};
    b.image.load(sp::root_slot_offset, &slot, sizeof slot);
    std::vector<std::uint8_t> lane(sp::lane_size);
    auto* header = reinterpret_cast<sp::lane_header*>(lane.data());
    auto* entries = reinterpret_cast<sp::log_entry*>(header + 1);
    header->sequence = 7;
    header->count = 1;
    entries[0] = {slot.offset + offsetof(root_type, counter), 99};
    header->checksum = lane_checksum(*header);
    b.image.store(b.geo.lanes_offset() + sp::lane_size, lane.data(), lane.size());
    b.interesting.push_back(start);
    b.model.lane_at = b.geo.lanes_offset() + sp::lane_size;
    b.model.lane_target = entries[0].target;
    b.model.lane_value = entries[0].value;
  }
  h.close();
  std::filesystem::remove(path);
  return b;
}

const std::vector<base_image>& bases() {
  static const std::vector<base_image> all = [] {
    std::vector<base_image> v;
    for (unsigned i = 0; i < nr_image_bases; ++i) try {
        v.push_back(build_base(i));
      } catch (const std::exception& e) {
        finding("building base image " + std::to_string(i) + ": " + e.what());
      }
    return v;
  }();
  return all;
}

// ---- edits ----

struct editor {
  fuzz_input& in;
  const base_image& base;
  sparse_image& image;
  bool resealed = false;  // an edit recomputed a checksum: the model is not compared

  // A descriptor with valid check bits (a structured edit, or a copy of
  // another descriptor) is a forged record on an unclean base, where no
  // memmap page digest covers it.
  void store_descriptor(std::uint64_t at, std::uint64_t info) {
    if (!base.clean && info != load<std::uint64_t>(at) && sp::descriptor_checks_out(info))
      resealed = true;
    store(at, info);
  }

  bool reseal() {
    const bool yes = in.boolean();
    resealed = resealed || yes;
    return yes;
  }

  template <class T>
  T load(std::uint64_t offset) {
    T v{};
    image.load(offset, &v, sizeof v);
    return v;
  }
  template <class T>
  void store(std::uint64_t offset, T v) {
    image.store(offset, &v, sizeof v);
  }

  std::uint64_t value(std::uint64_t old) {
    switch (static_cast<value_mode>(in.below(static_cast<unsigned>(value_mode::count)))) {
      case value_mode::zero:
        return 0;
      case value_mode::one:
        return 1;
      case value_mode::ones:
        return ~std::uint64_t{0};
      case value_mode::small:
        return in.below(256);
      case value_mode::word:
        return in.word();
      case value_mode::candidate:
        return base.candidates[in.below(base.candidates.size())];
      case value_mode::flip_bit:
        return old ^ std::uint64_t{1} << in.below(64);
      case value_mode::delta:
      case value_mode::count:
        break;
    }
    return old + in.in(0, 16) - 8;
  }

  std::uint64_t offset() {
    switch (static_cast<offset_mode>(in.below(static_cast<unsigned>(offset_mode::count)))) {
      case offset_mode::head:
        return in.below(16 * 1024);
      case offset_mode::interesting: {
        const std::uint64_t at = base.interesting[in.below(base.interesting.size())];
        const std::uint64_t delta = in.in(0, 127);
        return at + delta >= 64 ? at + delta - 64 : 0;
      }
      case offset_mode::anywhere:
      case offset_mode::count:
        break;
    }
    return in.below(std::max<std::uint64_t>(image.size, 1));
  }

  std::uint64_t descriptor_offset(std::uint64_t pfn) const {
    const std::uint64_t at = pfn << sp::page_shift;
    const std::uint64_t span = sp::align_down(at, base.geo.span_size());
    for (auto [start, memmap] : base.spans)
      if (start == span)
        return memmap + ((at - span) >> sp::page_shift) * sizeof(sp::page_descriptor);
    return base.spans.front().second;  // a pfn of an absent span: edit span 0's first descriptor
  }

  std::uint64_t pick_pfn() {
    if (in.boolean()) return base.pfns[in.below(base.pfns.size())];
    return in.below(std::max<std::uint64_t>(image.size >> sp::page_shift, 1));
  }

  void superblock_field(bool geometry_edit) {
    const unsigned copies = static_cast<unsigned>(in.below(3));  // A, B, both
    sp::superblock sb{};
    image.load(0, &sb, sizeof sb);
    if (geometry_edit) {
      const auto bits = static_cast<unsigned>(in.in(26, 31));
      const std::uint64_t range = value(sb.max_range);
      sb.section_size_bits = bits;
      if (sp::geometry::problem(bits, range).empty())
        sp::superblock_set_geometry(sb, sp::geometry{bits, range, sb.memmap_area});
      else
        sb.max_range = range;
    } else {
      struct field {
        std::uint32_t offset, size;
      };
      static constexpr field fields[] = {
          {0, 8},   {8, 8},   {16, 4},  {20, 4},  {24, 8},  {40, 8},  {48, 4},   {52, 4},
          {56, 4},  {60, 4},  {64, 4},  {68, 4},  {72, 8},  {80, 8},  {88, 8},   {96, 8},
          {104, 8}, {112, 8}, {120, 8}, {128, 8}, {136, 8}, {200, 8}, {4080, 8}, {4088, 8}};
      const field f = fields[in.below(std::size(fields))];
      auto* bytes = reinterpret_cast<std::uint8_t*>(&sb);
      std::uint64_t old = 0;
      std::memcpy(&old, bytes + f.offset, f.size);
      const std::uint64_t v = value(old);
      std::memcpy(bytes + f.offset, &v, f.size);
    }
    if (reseal()) sp::superblock_seal(sb);
    if (copies != 1) image.store(sp::superblock_offset[0], &sb, sizeof sb);
    if (copies != 0) image.store(sp::superblock_offset[1], &sb, sizeof sb);
  }

  void intent() {
    sp::hotplug_intent rec = load<sp::hotplug_intent>(sp::intent_offset);
    auto* words = reinterpret_cast<std::uint64_t*>(&rec);
    const unsigned field = static_cast<unsigned>(in.below(8));
    if (field == 0)
      words[0] = in.below(4);  // none, add, remove, unknown
    else if (field == 1 || field == 2)
      words[field] = in.boolean() ? in.below(1024) * sp::subsection_size : value(words[field]);
    else
      words[field] = value(words[field]);
    if (reseal()) rec.checksum = sp::fletcher64(&rec, offsetof(sp::hotplug_intent, checksum));
    store(sp::intent_offset, rec);
  }

  void lane() {
    const std::uint64_t at = base.geo.lanes_offset() + in.below(3) * sp::lane_size;
    std::vector<std::uint8_t> bytes(sp::lane_size);
    image.load(at, bytes.data(), bytes.size());
    auto* header = reinterpret_cast<sp::lane_header*>(bytes.data());
    auto* entries = reinterpret_cast<sp::log_entry*>(header + 1);
    switch (in.below(4)) {
      case 0:
        header->count = in.boolean() ? in.below(sp::max_log_entries + 2) : value(header->count);
        break;
      case 1:
        header->sequence = value(header->sequence);
        break;
      case 2: {
        auto& e = entries[in.below(8)];
        e.target =
            (in.below(4) << sp::log_op_shift) | (value(e.target) & ((std::uint64_t{1} << 62) - 1));
        break;
      }
      default: {
        auto& e = entries[in.below(8)];
        e.value = value(e.value);
        break;
      }
    }
    if (reseal()) header->checksum = lane_checksum(*header);
    image.store(at, bytes.data(), bytes.size());
  }

  void apply_one() {
    const auto kind = static_cast<image_edit>(in.below(static_cast<unsigned>(image_edit::count)));
    switch (kind) {
      case image_edit::superblock_field:
        return superblock_field(false);
      case image_edit::superblock_geometry:
        return superblock_field(true);
      case image_edit::intent:
        return intent();
      case image_edit::directory_entry: {
        const std::uint64_t at = sp::directory_offset + 8 * in.below(base.geo.nr_roots() + 2);
        return store(at, value(load<std::uint64_t>(at)));
      }
      case image_edit::section_word: {
        const std::uint64_t nr = in.boolean()
                                     ? base.sections[in.below(base.sections.size())] + in.below(3)
                                     : in.below(base.geo.nr_sections() + 1);
        const std::uint64_t at = base.geo.roots_offset() +
                                 nr / base.geo.sections_per_root() * sp::root_page_size +
                                 nr % base.geo.sections_per_root() * base.geo.record_size() +
                                 8 * in.below(base.geo.record_words());
        return store(at, value(load<std::uint64_t>(at)));
      }
      case image_edit::descriptor_info: {
        const std::uint64_t at = descriptor_offset(pick_pfn());
        std::uint64_t info = load<std::uint64_t>(at);
        if (in.boolean()) {
          static constexpr std::uint8_t states[] = {0, 1, 2, 16, 17, 3, 18, 255};
          const std::uint8_t state = states[in.below(std::size(states))];
          const unsigned sub = static_cast<unsigned>(in.below(256));
          const std::uint64_t length =
              in.boolean() ? std::uint64_t{1} << in.below(48) : in.below(1024);
          info = sp::page_info(static_cast<sp::page_state>(state), sub, length);
        } else {
          info = value(info);
        }
        return store_descriptor(at, info);
      }
      case image_edit::descriptor_next: {
        const std::uint64_t at = descriptor_offset(pick_pfn() + 1);
        return store_descriptor(at, value(load<std::uint64_t>(at)));
      }
      case image_edit::slab_bitmap: {
        if (base.slabs.empty()) return;
        const std::uint64_t at =
            (base.slabs[in.below(base.slabs.size())] << sp::page_shift) + 8 * in.below(16);
        return store(at, value(load<std::uint64_t>(at)));
      }
      case image_edit::root_slot: {
        auto slot = load<sp::root_slot>(sp::root_slot_offset);
        auto* words = reinterpret_cast<std::uint64_t*>(&slot);
        const unsigned field = static_cast<unsigned>(in.below(4));
        words[field] = value(words[field]);
        if (reseal()) slot.checksum = slot_checksum(slot);
        return store(sp::root_slot_offset, slot);
      }
      case image_edit::raw_xor: {
        const std::uint64_t at = offset();
        return store<std::uint8_t>(at,
                                   load<std::uint8_t>(at) ^ std::max<std::uint8_t>(in.byte(), 1));
      }
      case image_edit::raw_bytes: {
        const std::uint64_t at = offset();
        const auto bytes = in.bytes(in.below(65));
        image.store(at, bytes.data(), bytes.size());
        return;
      }
      case image_edit::file_size: {
        switch (in.below(4)) {
          case 0:  // truncated at a page
            image.size = in.below(image.size / 4096 + 1) * 4096;
            break;
          case 1:  // truncated at a subsection
            image.size = in.below(image.size / sp::subsection_size + 1) * sp::subsection_size;
            break;
          case 2:  // grown by up to 64 MiB
            image.size += in.in(1, 32) * sp::subsection_size;
            break;
          default:  // not a page multiple
            image.size = image.size > 4096 ? image.size - in.in(1, 4095) : image.size;
            break;
        }
        return;
      }
      case image_edit::copy_range: {
        const std::uint64_t from = offset(), to = offset();
        std::vector<std::uint8_t> bytes(in.below(4097));
        if (image.load(from, bytes.data(), bytes.size()))
          image.store(to, bytes.data(), bytes.size());
        return;
      }
      case image_edit::lane:
        return lane();
      case image_edit::count:
        return;
    }
  }
};

// ---- the model check ----

// Whether [at, at + n) holds the same bytes in both images (a range beyond
// the size of both counts as the same: the heap reads it in neither).
bool same_bytes(const sparse_image& a, const sparse_image& b, std::uint64_t at, std::uint64_t n) {
  const bool in_a = at <= a.size && n <= a.size - at, in_b = at <= b.size && n <= b.size - at;
  if (in_a != in_b) return false;
  if (!in_a) return true;
  static const std::vector<std::uint8_t> zero(sparse_image::page);
  const auto bytes = [](const sparse_image& i, std::uint64_t page) {
    const auto it = i.pages.find(page);
    return it == i.pages.end() ? zero.data() : it->second.data();
  };
  while (n) {
    const std::uint64_t page = at / sparse_image::page * sparse_image::page;
    const std::uint64_t in_page = std::min<std::uint64_t>(n, page + sparse_image::page - at);
    if (std::memcmp(bytes(a, page) + (at - page), bytes(b, page) + (at - page), in_page) != 0)
      return false;
    at += in_page;
    n -= in_page;
  }
  return true;
}

// A checksummed record that the edits changed and that checks out (the
// rule at the top of the file, point 3), named; empty if there is none.
std::string forged_record(const base_image& base, const sparse_image& image) {
  const auto changed = [&](std::uint64_t at, std::uint64_t n) {
    return !same_bytes(base.image, image, at, n);
  };
  for (unsigned copy = 0; copy < 2; ++copy) {
    const std::uint64_t at = sp::superblock_offset[copy];
    sp::superblock sb{};
    if (!changed(at, sizeof sb) || !image.load(at, &sb, sizeof sb)) continue;
    bool other_version = false;
    if (sp::superblock_problem(sb, other_version).empty() || other_version)
      return copy == 0 ? "superblock copy A" : "superblock copy B";
  }
  sp::hotplug_intent intent{};
  if (changed(sp::intent_offset, sizeof intent) &&
      image.load(sp::intent_offset, &intent, sizeof intent) &&
      intent.checksum == sp::fletcher64(&intent, offsetof(sp::hotplug_intent, checksum)))
    return "the hotplug intent";
  // A slot's copies: of a changed copy that checks out (or is empty) and an
  // unchanged non-empty one, open refuses or takes the unchanged one; with
  // no such copy left, the changed one may win.
  const auto slot_forged = [&](const std::uint64_t(&at)[2], std::uint64_t n, auto valid,
                               auto empty) {
    bool forged = false, kept = false;
    for (std::uint64_t a : at) {
      std::vector<std::uint8_t> bytes(n);
      if (!image.load(a, bytes.data(), n)) continue;
      if (!changed(a, n))
        kept = kept || valid(bytes.data());
      else
        forged = forged || valid(bytes.data()) || empty(bytes.data());
    }
    return forged && !kept;
  };
  const std::uint64_t slots = base.geo.slots_offset();
  if (slot_forged(
          {sp::root_slot_offset, slots + sp::root_slot_b_in_page}, sizeof(sp::root_slot),
          [](const std::uint8_t* p) {
            sp::root_slot s{};
            std::memcpy(&s, p, sizeof s);
            return sp::root_slot_valid(s);
          },
          [](const std::uint8_t* p) {
            sp::root_slot s{};
            std::memcpy(&s, p, sizeof s);
            return sp::root_slot_empty(s);
          }))
    return "the root slot";
  if (slot_forged(
          {sp::names_slot_offset, slots + sp::names_slot_b_in_page}, sizeof(sp::names_slot),
          [](const std::uint8_t* p) {
            sp::names_slot s{};
            std::memcpy(&s, p, sizeof s);
            return sp::names_slot_valid(s);
          },
          [](const std::uint8_t* p) {
            sp::names_slot s{};
            std::memcpy(&s, p, sizeof s);
            return sp::names_slot_empty(s);
          }))
    return "the name-table slot";
  // A slab bitmap word (format 5: 8 check bits in the word) that the edits
  // changed and that checks out: forged by chance (1 in 256 for a random
  // word) or by comparison tracing, and then a different bitmap, not damage.
  // (Words of the largest header's length from a slab's start.)
  static constexpr std::uint64_t max_header = [] {
    std::uint64_t m = 0;
    for (const auto& c : daxalloc::alloc::size_classes) m = std::max<std::uint64_t>(m, c.header);
    return m;
  }();
  for (std::uint64_t pfn : base.slabs)
    for (std::uint64_t at = pfn << sp::page_shift; at < (pfn << sp::page_shift) + max_header;
         at += 8) {
      std::uint64_t word = 0;
      if (changed(at, 8) && image.load(at, &word, 8) && sp::slab_word_checks_out(word))
        return "a slab bitmap word";
    }
  // Redo lanes: a changed lane that open would take as committed. Its
  // checksum is computed as heap_impl::lane_checksum does for format 0
  // (entries, then log_content bytes in place); an inline-format lane
  // (inline bytes, continuation lanes) counts as forged without computing.
  std::vector<std::uint8_t> lane(sp::lane_size);
  for (unsigned i = 0; i < sp::nr_lanes; ++i) {
    const std::uint64_t at = base.geo.lanes_offset() + i * sp::lane_size;
    if (!changed(at, sp::lane_size) || !image.load(at, lane.data(), lane.size())) continue;
    const auto* h = reinterpret_cast<const sp::lane_header*>(lane.data());
    if (h->count == 0 || h->checksum == 0 || h->count > sp::max_log_entries) continue;
    if (h->format == sp::lane_format_inline) return "redo lane " + std::to_string(i);
    const auto* entries = reinterpret_cast<const sp::log_entry*>(h + 1);
    sp::fletcher64_sum sum;
    sum.add(&h->sequence, 8);
    sum.add(&h->count, 8);
    sum.add(entries, h->count * sizeof(sp::log_entry));
    bool in_bounds = true;
    for (std::uint64_t e = 0; e < h->count && in_bounds; ++e) {
      if (entries[e].target >> sp::log_op_shift != sp::log_content) continue;
      const std::uint64_t from = entries[e].target & ((std::uint64_t{1} << sp::log_op_shift) - 1);
      std::vector<std::uint8_t> content;
      if (entries[e].value <= 64 * MiB) content.resize(entries[e].value);
      in_bounds = entries[e].value <= 64 * MiB && image.load(from, content.data(), content.size());
      if (in_bounds) sum.add(content.data(), content.size());
    }
    if (!in_bounds || sum.value() == h->checksum) return "redo lane " + std::to_string(i);
  }
  return {};
}

std::string hex(std::uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(v));
  return text;
}

// What a heap that opened with check() empty got wrong against the model of
// its base (the rule at the top of the file); empty if nothing.
std::string probe(daxalloc::heap& h, const base_image& base, const sparse_image& image) {
  const image_model& m = base.model;
  std::map<std::uint64_t, std::uint64_t> listed;
  for (auto [offset, size] : daxalloc::detail::internals(h).allocations())
    listed.emplace(offset, size);
  const bool lane_intact =
      m.lane_at != 0 && same_bytes(base.image, image, m.lane_at, sp::lane_size);
  std::vector<std::uint8_t> want(sparse_image::page);
  for (const model_object& o : m.objects) {
    const std::string what = "the object at " + hex(o.offset) + " (" + std::to_string(o.size) +
                             " B, fill " + hex(o.fill) + ")";
    const auto it = listed.find(o.offset);
    if (it == listed.end()) return what + " is no longer allocated";
    if (it->second != o.size) return what + " is listed with " + std::to_string(it->second) + " B";
    const auto* p = static_cast<const std::uint8_t*>(h.at(o.offset));
    for (std::uint64_t done = 0; done < o.size;) {
      const std::uint64_t at = o.offset + done;
      const std::uint64_t n =
          std::min<std::uint64_t>(o.size - done, sparse_image::page - at % sparse_image::page);
      if (!image.load(at, want.data(), n)) return what + " lies beyond the end of the image";
      if (lane_intact && m.lane_target >= at && m.lane_target + 8 <= at + n)
        std::memcpy(want.data() + (m.lane_target - at), &m.lane_value, 8);
      if (std::memcmp(p + done, want.data(), n) != 0) {
        std::uint64_t i = 0;
        while (p[done + i] == want[i]) ++i;
        return what + " changed: byte " + std::to_string(done + i) + " is " + hex(p[done + i]) +
               ", the image held " + hex(want[i]) +
               (lane_intact ? " (with the committed lane's store)" : "");
      }
      done += n;
    }
  }
  std::set<std::uint64_t> in_model;
  for (const model_object& o : m.objects) in_model.insert(o.offset);
  for (auto [offset, size] : listed)
    if (!in_model.count(offset))  // (format 5: no bitmap word is torn, clean or not)
      return "the media lists an allocation at " + hex(offset) + " (" + std::to_string(size) +
             " B) that the base does not have";
  try {
    const void* root = h.root(m.root_size);
    if (h.offset_of(root) != m.root_offset)
      return "root(" + std::to_string(m.root_size) + ") is at " + hex(h.offset_of(root)) +
             ", the base's root at " + hex(m.root_offset);
  } catch (const daxalloc::error& e) {
    return "root(" + std::to_string(m.root_size) + ") failed: " + e.what();
  }
  // Fresh allocations overlap no object of the model.
  std::vector<void*> fresh;
  std::string wrong;
  for (std::uint64_t size : {16, 24, 48, 200, 5000, 70000, 300000, 3 * 1024 * 1024}) {
    for (int i = 0; i < (size <= 5000 ? 8 : 2) && wrong.empty(); ++i) {
      void* p = h.allocate(size, std::nothrow);
      if (p == nullptr) break;
      fresh.push_back(p);
      const std::uint64_t at = h.offset_of(p);
      for (const model_object& o : m.objects)
        if (at < o.offset + o.size && o.offset < at + size)
          wrong = "a new allocation of " + std::to_string(size) + " B at " + hex(at) +
                  " overlaps the object at " + hex(o.offset) + " (" + std::to_string(o.size) +
                  " B)";
    }
  }
  if (!wrong.empty()) return wrong;
  for (void* p : fresh) h.deallocate(p);
  return {};
}

// Returns false when check() reports only known issues (see fuzz_common.hpp):
// the heap is then not sound, and nothing more can be asked of it.
bool require_sound(const daxalloc::heap& h, const char* when) {
  const auto all = h.check();
  const auto problems = without_known_issues(all);
  if (problems.empty()) return all.empty();
  std::string text;
  for (const auto& p : problems) text += "\n  " + p;
  finding(std::string("check() after ") + when + " reports " + std::to_string(problems.size()) +
          " problem(s):" + text);
}

// Everything a sound heap must survive. API errors are allowed (a damaged but
// consistent heap may be full, or have a root of another size); they must be
// daxalloc::error.
// DAXALLOC_FUZZ_VERBOSE=1: name each step and check() after it (for triage).
void step(const daxalloc::heap& h, const char* what) {
  static const bool verbose = std::getenv("DAXALLOC_FUZZ_VERBOSE") != nullptr;
  if (!verbose) return;
  std::fprintf(stderr, "step: %s\n", what);
  (void)require_sound(h, what);
}

void workload(daxalloc::heap& h) {
  auto& impl = daxalloc::detail::internals(h);
  const auto* slot = reinterpret_cast<const sp::root_slot*>(h.base() + sp::root_slot_offset);
  const std::uint64_t root_offset = slot->offset;
  const auto stats = h.stats();
  const auto listed = impl.allocations();
  if (stats.allocated_objects != listed.size())
    finding("stats().allocated_objects " + std::to_string(stats.allocated_objects) +
            " but allocations() lists " + std::to_string(listed.size()));
  // What the media says is allocated can be freed, except the root.
  std::size_t freed = 0;
  for (auto [offset, size] : listed) {
    if (offset == root_offset || freed++ >= 24) continue;
    try {
      h.deallocate(h.at(offset));
    } catch (const daxalloc::error& e) {
      finding("deallocate of an allocation the media lists (offset " + std::to_string(offset) +
              ", " + std::to_string(size) + " B) failed: " + e.what());
    }
  }
  (void)require_sound(h, "freeing what was allocated");
  std::vector<void*> kept;
  for (std::size_t size : {24, 24, 100, 5000, 70000, 300000, 3 * 1024 * 1024})
    if (void* p = h.allocate(size, std::nothrow)) {
      if (h.usable_size(p) < size) finding("usable_size below the requested size");
      std::memset(p, 0xa5, std::min<std::size_t>(size, 256));
      kept.push_back(p);
      step(h, "an allocation");
    }
  auto r = h.reserve(1000, std::nothrow);
  h.cancel(r);
  auto big = h.reserve(200000, std::nothrow);
  h.cancel(big);
  step(h, "reserve and cancel");
  try {
    auto* root = static_cast<root_type*>(h.root(slot->offset ? slot->size : sizeof(root_type)));
    step(h, "the root");
    if (slot->size >= sizeof(root_type) && !kept.empty())
      (void)h.make_published(root->published, std::uint64_t{7});
  } catch (const daxalloc::error&) {
  }
  step(h, "the root and a publication");
  for (std::size_t i = 0; i < kept.size(); i += 2) h.deallocate(kept[i]);
  step(h, "frees");
  // Growing and shrinking by one subsection past the end (a new span would
  // need 4 MiB of fallocate: too slow here).
  const std::uint64_t end = sp::align_up(h.size(), sp::subsection_size);
  try {
    h.hot_add(end, 2 * MiB);
    if (void* p = h.allocate(1 * MiB, std::nothrow)) h.deallocate(p);
    h.hot_remove(end, 2 * MiB);
  } catch (const daxalloc::error&) {
  }
  (void)require_sound(h, "the workload");
}

void run(const std::uint8_t* data, std::size_t size) {
  static const auto path = scratch_file("image");
  static const bool verbose = std::getenv("DAXALLOC_FUZZ_VERBOSE") != nullptr;
  const auto& all = bases();
  fuzz_input in(data, size);
  const std::uint8_t mode = in.byte();
  const base_image& base = all[mode == image_overlay_mode ? 0 : mode % all.size()];
  sparse_image image = base.image;
  bool resealed = false;
  if (mode == image_overlay_mode) {
    resealed = in.boolean();
    const auto bytes = in.bytes(3 * 4096);
    image.store(0, bytes.data(), bytes.size());
    if (resealed)
      for (auto at : sp::superblock_offset) {
        sp::superblock sb{};
        image.load(at, &sb, sizeof sb);
        sp::superblock_seal(sb);
        image.store(at, &sb, sizeof sb);
      }
  } else {
    editor ed{in, base, image};
    for (unsigned i = 0; i < max_image_edits && !in.empty(); ++i) ed.apply_one();
    resealed = ed.resealed;
  }
  // The rule at the top of the file.
  std::string why_not;
  if (!base.clean && !compare_model_on_unclean_bases)
    why_not = base.name + " was not closed cleanly";
  else if (resealed)
    why_not = "an edit resealed a checksum";
  else if (auto forged = forged_record(base, image); !forged.empty())
    why_not = forged + " was changed and checks out";
  const bool compare_model = why_not.empty();
  if (verbose)
    std::fprintf(stderr, "model: %s\n",
                 compare_model ? ("compared (raw damage to " + base.name +
                                  (base.clean ? ", closed cleanly)" : ", left by a crash)"))
                                     .c_str()
                               : ("not compared: " + why_not).c_str());
  image.write(path);

  std::optional<daxalloc::heap> h;
  try {
    h.emplace(daxalloc::heap::open(path, open_options()));
  } catch (const daxalloc::error& e) {
    if (std::strlen(e.what()) < 10) finding(std::string("an error without a message: ") + e.what());
    return;  // refused with a clear error: the contract
  } catch (const std::exception& e) {
    finding(std::string("open threw something other than daxalloc::error: ") + e.what());
  }
  // A slab's bitmap is verified at the slab's first use, not at open: a
  // damaged one is reported by check() (loading every slab), which counts
  // as a refusal here.
  if (const auto problems = h->check();
      !problems.empty() && std::all_of(problems.begin(), problems.end(), [](const std::string& p) {
        return p.ends_with("(found when the slab was first used)");
      }))
    return;
  if (!require_sound(*h, "open")) return;
  const bool reopen = mode != image_overlay_mode && (mode & image_reopen_bit);
  try {
    if (compare_model) {
      if (const std::string wrong = probe(*h, base, image); !wrong.empty())
        finding("silently wrong: " + base.name +
                " opened with check() empty after raw damage, but " + wrong);
      if (verbose) std::fprintf(stderr, "model: the probe passed\n");
    }
    workload(*h);
    if (!reopen) return;
    h->close();
    h.emplace(daxalloc::heap::open(path, open_options()));
  } catch (const daxalloc::error& e) {
    finding(std::string("a sound heap failed: ") + e.what());
  } catch (const std::exception& e) {
    finding(std::string("the workload threw something other than daxalloc::error: ") + e.what());
  }
  (void)require_sound(*h, "close and reopen");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  run(data, size);
  return 0;
}
