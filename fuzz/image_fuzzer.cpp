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
// daxalloc::error or succeeds with check() empty. A heap that opened then
// survives a short workload (free what the media says is allocated, allocate,
// reserve and cancel, the root, publish, hot-add and hot-remove) with check()
// empty and, when the input asks, closes and opens again with check() empty. Anything else (another
// exception, a crash, a sanitizer report, a hang) is a finding.
#include <algorithm>
#include <cstring>
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
  auto h = daxalloc::heap::create(path, o);
  if (which == 1) {
    (void)h.allocate(48);
    (void)h.root(300000);  // a root that is an extent
    (void)h.allocate(3 * MiB);
  } else {
    for (std::size_t size : {24, 24, 24, 200, 5000, 70000}) (void)h.allocate(size);
    void* gone = h.allocate(24);
    void* big = h.allocate(3 * MiB);
    h.deallocate(gone);
    auto* root = h.root<root_type>();
    (void)h.make_published(root->published, std::uint64_t{42});
    if (which == 2) {
      std::vector<void*> small;
      for (int i = 0; i < 64; ++i) small.push_back(h.allocate(16));
      for (int i = 0; i < 64; i += 3) h.deallocate(small[i]);
      h.deallocate(big);
    } else {
      h.hot_add(32 * MiB, 2 * MiB);  // partial: a hole between 16 and 32 MiB
      h.hot_add(1 * GiB, 4 * MiB);   // a second span: its own memmap block
    }
  }
  if (which == 2) {
    // An unclean shutdown: the image as the heap left it while open.
    b.image = sparse_image::read(path);
    catalogue(b, h);
  } else {
    catalogue(b, h);
    h.close();
    b.image = sparse_image::read(path);
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
        sp::superblock_set_geometry(sb, sp::geometry{bits, range});
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
    if (in.boolean()) sp::superblock_seal(sb);
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
    if (in.boolean()) rec.checksum = sp::fletcher64(&rec, offsetof(sp::hotplug_intent, checksum));
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
    if (in.boolean()) header->checksum = lane_checksum(*header);
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
        return store(at, info);
      }
      case image_edit::descriptor_next: {
        const std::uint64_t at = descriptor_offset(pick_pfn() + 1);
        return store(at, value(load<std::uint64_t>(at)));
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
        if (in.boolean()) slot.checksum = slot_checksum(slot);
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
  const auto& all = bases();
  fuzz_input in(data, size);
  const std::uint8_t mode = in.byte();
  const base_image& base = all[mode == image_overlay_mode ? 0 : mode % all.size()];
  sparse_image image = base.image;
  if (mode == image_overlay_mode) {
    const bool reseal = in.boolean();
    const auto bytes = in.bytes(3 * 4096);
    image.store(0, bytes.data(), bytes.size());
    if (reseal)
      for (auto at : sp::superblock_offset) {
        sp::superblock sb{};
        image.load(at, &sb, sizeof sb);
        sp::superblock_seal(sb);
        image.store(at, &sb, sizeof sb);
      }
  } else {
    editor ed{in, base, image};
    for (unsigned i = 0; i < max_image_edits && !in.empty(); ++i) ed.apply_one();
  }
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
  if (!require_sound(*h, "open")) return;
  const bool reopen = mode != image_overlay_mode && (mode & image_reopen_bit);
  try {
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
