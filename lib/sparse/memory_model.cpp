#include "sparse/memory_model.hpp"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>

#include "daxalloc/error.hpp"
#include "sparse/superblock.hpp"

namespace daxalloc::sparse {
namespace {

constexpr std::uint64_t default_max_range = std::uint64_t{1} << 40;  // 1 TiB

std::string span_text(std::uint64_t start, std::uint64_t end) {
  char buf[48];  // snprintf: GCC 12 warns wrongly (-Wrestrict) on "[" + std::string at -O3
  std::snprintf(buf, sizeof buf, "[%#llx, %#llx)", static_cast<unsigned long long>(start),
                static_cast<unsigned long long>(end));
  return buf;
}

template <class T>
std::unique_ptr<T[], void (*)(void*)> zeroed_array(std::uint64_t n) {
  // calloc of a large block maps fresh zero pages: untouched entries cost nothing.
  void* p = std::calloc(n ? n : 1, sizeof(T));
  if (p == nullptr) throw error(errc::out_of_space, "cannot allocate volatile section tables");
  return {static_cast<T*>(p), &std::free};
}

std::atomic_ref<std::uint64_t> atomic_word(std::uint64_t& w) {
  return std::atomic_ref<std::uint64_t>(w);
}

}  // namespace

// The memmap area's blocks that memory in [start, end) needs, ascending:
// the blocks of its spans, and of the spans those blocks lie in, down to a
// block that lies in the span it describes (span 0's). A block of span s >= 1
// lies below s (the area is a 512th of the range), so the chain is short.
std::vector<std::uint64_t> blocks_for(const geometry& geo, std::uint64_t start, std::uint64_t end) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t span = align_down(start, geo.span_size()); span < end; span += geo.span_size())
    for (std::uint64_t at = span;;) {
      const std::uint64_t block = geo.area_block(at);
      if (std::find(out.begin(), out.end(), block) != out.end()) break;
      out.push_back(block);
      if (block >> geo.span_bits() == at >> geo.span_bits()) break;  // describes itself
      at = block;
    }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// The geometry and what a create makes present; throws before anything is
// written when they cannot work. `size` is the bytes present after create,
// metadata included (0 on a device: all of it).
struct initial_layout {
  geometry geo;
  std::uint64_t data = 0;  // memory from geo.data_start() (legacy placement: [0, data))
  [[nodiscard]] std::uint64_t end() const {
    return geo.memmap_area ? geo.data_start() + data : data;
  }
};

initial_layout plan(const create_options& options, std::uint64_t size, std::uint64_t device,
                    std::uint64_t range, const std::string& where) {
  size = align_up(size, subsection_size);
  if (options.section_size_bits >= min_section_size_bits &&
      options.section_size_bits <= max_section_size_bits)
    range = align_up(range, std::uint64_t{1} << options.section_size_bits);
  geometry geo = geometry::make(options.section_size_bits, range);
  if (!memory_model::make_legacy_memmap) geo.memmap_area = geo.head_size();
  const std::uint64_t sections = geo.section_size() >> 20;
  if (geo.memmap_area) {
    if (geo.data_start() + subsection_size > geo.max_range)
      throw error(errc::too_small, where + "an address range of " +
                                       std::to_string(geo.max_range >> 20) +
                                       " MiB leaves no memory after the head and memmap area");
    const auto present = [&](std::uint64_t data) {
      return geo.head_size() + data +
             blocks_for(geo, geo.data_start(), geo.data_start() + data).size() * geo.memmap_bytes();
    };
    const std::uint64_t minimum = present(subsection_size);
    std::uint64_t data =
        size ? size - std::min(size, geo.head_size())
             : align_down(device, subsection_size) - std::min(device, geo.data_start());
    // Less memory needs no more blocks: shrink it by the excess until it fits.
    for (std::uint64_t need; size && data && (need = present(data)) > size;)
      data -= std::min(data, align_up(need - size, subsection_size));
    if (data < subsection_size)
      throw error(errc::too_small, where + "a heap with " + std::to_string(sections) +
                                       " MiB sections and this address range needs at least " +
                                       std::to_string(minimum >> 20) +
                                       " MiB (head, memmap, one pageblock)");
    if (geo.data_start() + data > geo.max_range)
      throw error(errc::too_large,
                  where + "size exceeds the address range " + std::to_string(geo.max_range));
    return {geo, data};
  }
  if (size == 0) size = align_down(device, subsection_size);
  const std::uint64_t minimum = geo.head_size() + geo.memmap_bytes() + subsection_size;
  if (size < minimum)
    throw error(errc::too_small, where + "a heap with " + std::to_string(sections) +
                                     " MiB sections and this address range needs at least " +
                                     std::to_string(minimum >> 20) +
                                     " MiB (head, memmap, one pageblock)");
  if (size > geo.max_range)
    throw error(errc::too_large,
                where + "size exceeds the address range " + std::to_string(geo.max_range));
  // Spans fill in order, so only the last can be too short for its memmap.
  const std::uint64_t last_span = align_down(size - 1, geo.span_size());
  const std::uint64_t in_last = size - std::max(last_span, geo.head_size());
  if (last_span > 0 && in_last < geo.memmap_bytes() + subsection_size)
    throw error(errc::too_small,
                where + "the last " + std::to_string(geo.span_size() >> 20) +
                    " MiB span would hold only " + std::to_string(in_last >> 20) +
                    " MiB, less than its " + std::to_string(geo.memmap_bytes() >> 20) +
                    " MiB memmap plus one pageblock; round the size down to " +
                    std::to_string(last_span >> 20) + " MiB or up by " +
                    std::to_string((geo.memmap_bytes() + subsection_size - in_last) >> 20) +
                    " MiB");
  return {geo, size};
}

}  // namespace

double model_stats::metadata_per_page() const {
  const auto pages = present_bytes / page_size;
  return pages ? static_cast<double>(head_bytes + memmap_bytes) / static_cast<double>(pages) : 0;
}

memory_model::memory_model(region&& r) : region_(std::move(r)) {}
memory_model::~memory_model() = default;

// ---- record access ----

std::uint64_t* memory_model::section_record(std::uint64_t nr) const noexcept {
  const std::uint64_t root = nr / geo_.sections_per_root();
  const std::uint64_t index = nr % geo_.sections_per_root();
  return reinterpret_cast<std::uint64_t*>(base() + geo_.roots_offset() + root * root_page_size +
                                          index * geo_.record_size());
}

std::uint64_t memory_model::directory_entry(std::uint64_t root) const noexcept {
  return reinterpret_cast<const std::uint64_t*>(base() + directory_offset)[root];
}

hotplug_intent* memory_model::intent() const noexcept {
  return reinterpret_cast<hotplug_intent*>(base() + intent_offset);
}

bool memory_model::section_present(std::uint64_t nr) const noexcept {
  if (nr >= geo_.nr_sections() || directory_entry(nr / geo_.sections_per_root()) == 0) return false;
  return section_record(nr)[0] & section_marked_present;
}

bool memory_model::subsection_present(std::uint64_t offset) const noexcept {
  const std::uint64_t nr = offset >> geo_.section_size_bits;
  if (!section_present(nr)) return false;
  const unsigned i = geo_.subsection_index(offset >> page_shift);
  return (section_record(nr)[1 + i / 64] >> (i % 64)) & 1;
}

std::uint64_t memory_model::span_memmap(std::uint64_t offset) const noexcept {
  const std::uint64_t span_start = align_down(offset, geo_.span_size());
  for (std::uint64_t at = span_start; at < span_start + geo_.span_size() && at < geo_.max_range;
       at += geo_.section_size()) {
    const std::uint64_t nr = at >> geo_.section_size_bits;
    if (section_present(nr)) return section_record(nr)[0] & section_memmap_mask;
  }
  return 0;
}

bool memory_model::in_memmap_block(std::uint64_t offset) const noexcept {
  if (geo_.memmap_area) return geo_.in_area(offset) && subsection_present(offset);
  const std::uint64_t memmap = span_memmap(offset);
  return memmap && offset >= memmap && offset < memmap + geo_.memmap_bytes();
}

bool memory_model::span_has_memory(std::uint64_t offset) const noexcept {
  const std::uint64_t span_start = align_down(offset, geo_.span_size());
  for (std::uint64_t at = span_start; at < span_start + geo_.span_size() && at < geo_.max_range;
       at += geo_.section_size())
    if (section_present(at >> geo_.section_size_bits)) return true;
  return false;
}

// The memmap block of a span without one: its place in the memmap area, or
// (no area) the first subsections of the added range inside the span (after
// the head), next to the memory it describes. Returns 0 when the range
// leaves no room for it and one pageblock.
std::uint64_t memory_model::memmap_placement(std::uint64_t span_start, std::uint64_t start,
                                             std::uint64_t end) const {
  if (geo_.memmap_area) return geo_.area_block(span_start);
  const std::uint64_t first = std::max({start, span_start, geo_.head_size()});
  const std::uint64_t last = std::min(end, span_start + geo_.span_size());
  return first + geo_.memmap_bytes() + subsection_size <= last ? first : 0;
}

// ---- pageblock flags ----

// The 4 flag bits of pfn's pageblock, read atomically: lock-free paths read
// them while set_pageblock_bits changes other pageblocks of the same word.
std::uint8_t memory_model::pageblock_bits(std::uint64_t pfn) const noexcept {
  const unsigned pb = geo_.subsection_index(pfn), bit = pb * nr_pageblock_bits;
  std::uint64_t& word = const_cast<std::uint64_t&>(
      section_record(geo_.pfn_to_section_nr(pfn))[1 + geo_.subsection_map_words() + bit / 64]);
  return static_cast<std::uint8_t>(atomic_word(word).load(std::memory_order_relaxed) >>
                                   (bit % 64)) &
         0xf;
}

migratetype memory_model::get_pageblock_migratetype(std::uint64_t pfn) const noexcept {
  return static_cast<migratetype>(pageblock_bits(pfn) & migratetype_mask);
}

bool memory_model::get_pageblock_skip(std::uint64_t pfn) const noexcept {
  return pageblock_bits(pfn) & pageblock_skip_bit;
}

// set_pfnblock_flags_mask: a CAS loop, so concurrent updates of other
// pageblocks sharing the word are never lost. No flush here.
void memory_model::set_pageblock_bits(std::uint64_t pfn, std::uint8_t mask,
                                      std::uint8_t value) noexcept {
  const unsigned pb = geo_.subsection_index(pfn), bit = pb * nr_pageblock_bits;
  std::uint64_t& word =
      section_record(geo_.pfn_to_section_nr(pfn))[1 + geo_.subsection_map_words() + bit / 64];
  const std::uint64_t clear = ~(std::uint64_t{mask} << (bit % 64));
  const std::uint64_t set = static_cast<std::uint64_t>(value & mask) << (bit % 64);
  auto ref = atomic_word(word);
  std::uint64_t old = ref.load(std::memory_order_relaxed);
  while (!ref.compare_exchange_weak(old, (old & clear) | set, std::memory_order_release)) {
  }
}

bool memory_model::set_pageblock_migratetype(std::uint64_t pfn, migratetype type,
                                             bool fence) noexcept {
  // Metadata pageblocks are the head and memmap blocks, fixed by hotplug.
  if (region_.read_only() || type == migratetype::metadata ||
      get_pageblock_migratetype(pfn) == migratetype::metadata)
    return false;
  set_pageblock_bits(pfn, migratetype_mask, static_cast<std::uint8_t>(type));
  const unsigned bit = geo_.subsection_index(pfn) * nr_pageblock_bits;
  persist().flush(
      &section_record(geo_.pfn_to_section_nr(pfn))[1 + geo_.subsection_map_words() + bit / 64], 8);
  if (fence) persist().drain();
  return true;
}

void memory_model::set_pageblock_skip(std::uint64_t pfn, bool skip) noexcept {
  set_pageblock_bits(pfn, pageblock_skip_bit, skip ? pageblock_skip_bit : 0);
  const unsigned bit = geo_.subsection_index(pfn) * nr_pageblock_bits;
  persist().persist(
      &section_record(geo_.pfn_to_section_nr(pfn))[1 + geo_.subsection_map_words() + bit / 64], 8);
}

bool memory_model::pfn_valid(std::uint64_t pfn) const noexcept {
  const std::uint64_t nr = geo_.pfn_to_section_nr(pfn);
  if (nr >= geo_.nr_sections() || mem_map_[nr].load(std::memory_order_relaxed) == 0) return false;
  const unsigned i = geo_.subsection_index(pfn);
  return (section_record(nr)[1 + i / 64] >> (i % 64)) & 1;
}

// ---- create and open ----

std::unique_ptr<memory_model> memory_model::create(const std::filesystem::path& path,
                                                   const create_options& options) {
  region_options ro = options.region;
  ro.create = true;
  ro.must_be_new = true;
  ro.size = align_up(options.size, subsection_size);
  ro.max_size =
      std::max<std::uint64_t>(options.max_range ? options.max_range : default_max_range, ro.size);
  if (ro.size == 0) throw error(errc::too_small, path.string() + ": create needs a size");
  std::filesystem::path dev("/dev");
  if (path.parent_path() != dev) {  // a file: check everything before it is created
    const initial_layout l = plan(options, ro.size, 0, ro.max_size, path.string() + ": ");
    ro.size = l.end();  // the file's size: the memory's end
    ro.max_size = std::max<std::uint64_t>(ro.max_size, ro.size);
  }
  region r = region::open(path, ro);
  const bool created = r.created();
  try {
    return create(std::move(r), options);
  } catch (...) {
    if (created) std::filesystem::remove(path);  // ours, and not a heap: nothing is lost
    throw;
  }
}

std::unique_ptr<memory_model> memory_model::create(region&& r, const create_options& options) {
  const bool devdax = r.kind() == region_kind::devdax;
  const std::uint64_t range = options.max_range ? options.max_range
                              : devdax          ? r.max_size()
                                                : std::max(default_max_range, r.size());
  const std::string where = r.path().string() + ": ";
  const initial_layout initial = plan(options, options.size, r.size(), range, where);
  const geometry& geo = initial.geo;
  // The head and the memmap area (sized for the whole range) come before
  // the memory, so on a device the memory's end counts, not `size`.
  const auto mib = [](std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; };
  if (devdax && initial.end() > r.max_size()) {
    const std::uint64_t over = initial.end() - r.max_size(),
                        size = align_up(options.size, subsection_size);
    throw error(errc::too_large,
                where + "a size of " + mib(size) + " puts the end of the memory at " +
                    mib(initial.end()) + " of the device (after its head and the memmap area " +
                    "of a " + mib(geo.max_range) + " range), beyond its " + mib(r.max_size()) +
                    ": ask for at most " + mib(size - std::min(size, over)) +
                    ", or a smaller address range");
  }
  if (r.size() >= 2 * sizeof(superblock)) {
    const auto* copies = reinterpret_cast<const superblock*>(r.base());
    bool other_version = false;
    if ((superblock_problem(copies[0], other_version).empty() ||
         superblock_problem(copies[1], other_version).empty() || other_version) &&
        !options.overwrite)
      throw error(errc::already_exists,
                  where + "already holds a daxalloc heap; open it, or create with overwrite");
  }
  r.reserve(geo.max_range);
  std::unique_ptr<memory_model> m(new memory_model(std::move(r)));
  m->geo_ = geo;
  return create_impl(std::move(m), initial.data);
}

std::unique_ptr<memory_model> memory_model::create_impl(std::unique_ptr<memory_model> m,
                                                        std::uint64_t data) {
  const geometry& geo = m->geo_;
  m->init_volatile();
  // Anything left from an earlier heap goes first: superblocks, intent and
  // directory, in one persisted memset. Until superblock A is written again
  // the media is not a heap.
  const bool zero =
      m->region_.populate(0, geo.memmap_area ? geo.head_size() : data) || m->region_.created();
  if (!zero) {
    std::memset(m->base(), 0, directory_offset + geo.nr_roots() * 8);
    // The lanes and the slot page after them.
    std::memset(m->base() + geo.lanes_offset(), 0, nr_lanes * lane_size + root_page_size);
    m->persist().flush(m->base(), directory_offset + geo.nr_roots() * 8);
    m->persist().flush(m->base() + geo.lanes_offset(), nr_lanes * lane_size + root_page_size);
    m->persist().drain();
  }

  superblock& sb = m->super_;
  std::memcpy(sb.magic, superblock_magic, sizeof sb.magic);
  sb.version = format_version;
  std::random_device rd;
  for (auto& byte : sb.uuid) byte = static_cast<std::uint8_t>(rd());
  superblock_set_geometry(sb, geo);
  sb.create_time = static_cast<std::uint64_t>(std::time(nullptr));

  {
    std::lock_guard lock(m->hotplug_mutex_);
    if (geo.memmap_area) {
      m->add_locked(0, geo.head_size(), zero);
      m->add_locked(geo.data_start(), data, std::nullopt);
    } else {
      m->add_locked(0, data, zero);
    }
  }
  m->write_superblocks();
  return m;
}

void memory_model::set_shutdown_state(std::uint64_t state) {
  refuse_if_read_only("set the shutdown marker");
  std::lock_guard lock(hotplug_mutex_);
  super_.shutdown_state = state;
  write_superblocks();
}

void memory_model::write_superblocks() {
  ++super_.generation;
  superblock_seal(super_);
  for (auto offset : superblock_offset)
    persist().memcpy_persist(base() + offset, &super_, sizeof super_);
}

std::unique_ptr<memory_model> memory_model::open(const std::filesystem::path& path,
                                                 const open_options& options) {
  region_options ro = options.region;
  ro.create = false;
  ro.size = 0;
  return open(region::open(path, ro), options);
}

bool memory_model::holds_heap(const region& r) noexcept {
  if (r.size() < 2 * sizeof(superblock)) return false;
  for (const std::uint64_t offset : superblock_offset) {
    char magic[sizeof superblock_magic];
    if (media::copy_mc(magic, r.base() + offset, sizeof magic) == 0 &&
        std::memcmp(magic, superblock_magic, sizeof magic) == 0)
      return true;
  }
  return false;
}

std::unique_ptr<memory_model> memory_model::open(region&& r, const open_options& options) {
  if (r.size() < 2 * sizeof(superblock))
    throw error(errc::corrupt, r.path().string() + ": too small to be a daxalloc heap");
  std::unique_ptr<memory_model> m(new memory_model(std::move(r)));
  m->reader_ = media::guarded_reader(options.known_bad);
  m->load(options);
  m->loading_ = false;
  return m;
}

void memory_model::load(const open_options& options) {
  const std::string where = region_.path().string() + ": ";
  // Both copies read through the guard: one that does not read is a
  // damaged copy (the other one wins), and is left as it is.
  superblock copies[2] = {};
  bool other_version[2] = {};
  std::string problem[2];
  for (int c = 0; c < 2; ++c) {
    if (auto failure = reader_.copy(&copies[c], base(), superblock_offset[c], sizeof(superblock))) {
      problem[c] = "unreadable: " + media::describe(*failure);
      unreadable_copy_ = c;
    } else {
      problem[c] = superblock_problem(copies[c], other_version[c]);
    }
  }
  // An older-format copy next to a valid copy of this format: `daxalloc
  // upgrade` was interrupted after its commit (copy A written); the stale
  // copy is rewritten below like any losing copy.
  for (int c = 0; c < 2; ++c)
    if (other_version[c] && copies[c].version >= oldest_upgradable_version &&
        copies[c].version < format_version && problem[1 - c].empty())
      other_version[c] = false;
  if (other_version[0] || other_version[1]) {
    const int c = other_version[0] ? 0 : 1;
    if (copies[c].version > format_version)
      throw error(errc::newer_format, where + problem[c] + "; open it with a newer daxalloc");
    throw error(errc::older_format,
                where + problem[c] +
                    (copies[c].version >= oldest_upgradable_version
                         ? "; convert it with `daxalloc upgrade " + region_.path().string() + "`"
                         : std::string("; this daxalloc cannot read it (no migration exists): "
                                       "open it with the daxalloc that made it")));
  }
  const int good = superblock_winner(copies, problem);
  if (good < 0) {
    // Copy B is written only after A is complete, so a B that was never
    // written means no create ever finished here.
    if (problem[1] == "no daxalloc magic")
      throw error(errc::corrupt, where +
                                     "not a daxalloc heap (no superblock; an interrupted "
                                     "create leaves this too: remove the file and create again)");
    const bool faulted = problem[0].starts_with("unreadable: media error") ||
                         problem[1].starts_with("unreadable: media error");
    throw error(
        faulted ? errc::media_error : errc::corrupt,
        where + "both superblock copies are damaged: A: " + problem[0] + "; B: " + problem[1]);
  }
  super_ = copies[good];
  geo_ = geometry{super_.section_size_bits, super_.max_range, super_.memmap_area};
  if (options.section_size_bits && options.section_size_bits != geo_.section_size_bits)
    throw error(errc::geometry_mismatch,
                where + "the heap has " + std::to_string(geo_.section_size() >> 20) +
                    " MiB sections (section_size_bits " + std::to_string(geo_.section_size_bits) +
                    "), not the " + std::to_string(options.section_size_bits) + " asked for");
  if (region_.size() < geo_.head_size())
    throw error(errc::corrupt, where + "truncated: smaller than its own head");
  region_.reserve(geo_.max_range);
  attach_members(options);
  // The head reads before anything in it is parsed or written.
  const auto refuse = [&](const unreadable& u) {
    throw error(u.failure.listed ? errc::corrupt : errc::media_error,
                where + media::describe(u.failure) + " in " + u.structure);
  };
  if (auto u = probe_head()) refuse(*u);
  if (options.before_writes) options.before_writes(super_, geo_, base());
  // The copy that lost (torn, stale or damaged) is rewritten from the winner.
  // A read-only open writes nothing: it notes what recovery would do.
  const bool read_only = region_.read_only();
  const int other = 1 - good;
  if (other == unreadable_copy_) {
    // (Clearing the bad block is the media's business: media::provider::clear.)
  } else if (!problem[other].empty() || std::memcmp(&copies[other], &super_, sizeof super_) != 0) {
    if (read_only) {
      stale_copy_ = other;
      pending_.push_back(std::string("rewrite superblock copy ") + "AB"[other] + " from copy " +
                         "AB"[good] +
                         (problem[other].empty() ? " (stale)" : " (" + problem[other] + ")"));
    } else {
      persist().memcpy_persist(base() + superblock_offset[other], &super_, sizeof super_);
    }
  }
  init_volatile();

  const hotplug_intent pending = *intent();
  hotplug_intent sealed = pending;
  sealed.checksum = fletcher64(&sealed, offsetof(hotplug_intent, checksum));
  const bool committed = (pending.op == hotplug_add || pending.op == hotplug_remove) &&
                         pending.checksum != 0 && sealed.checksum == pending.checksum;
  if (committed) {
    const std::uint64_t end = pending.start + pending.length;
    if (pending.length == 0 || pending.start % subsection_size ||
        pending.length % subsection_size || end < pending.start ||
        pending.start < geo_.data_start() || end > geo_.max_range ||
        !mapped(pending.start, pending.length))
      throw error(errc::corrupt, where + "the hotplug intent names an impossible span " +
                                     span_text(pending.start, end));
    if (pending.op == hotplug_add && !geo_.memmap_area) {
      for (std::uint64_t s = align_down(pending.start, geo_.span_size()); s < end;
           s += geo_.span_size())
        if (span_memmap(s) == 0 && memmap_placement(s, pending.start, end) == 0)
          throw error(errc::corrupt,
                      where + "the hotplug intent adds a span without room for its memmap");
    }
    if (auto why = intent_problem(pending); !why.empty())
      throw error(errc::corrupt, where + "the hotplug intent (" +
                                     (pending.op == hotplug_add ? "hot-add " : "hot-remove ") +
                                     span_text(pending.start, end) + ") is not plausible: " + why);
    if (read_only)
      pending_.push_back(std::string("redo the committed hotplug intent: ") +
                         (pending.op == hotplug_add ? "hot-add " : "hot-remove ") +
                         span_text(pending.start, end));
    else
      apply_intent(pending);  // redo: the operation had committed
  } else if (pending.checksum != 0 && sealed.checksum == pending.checksum &&
             pending.op != hotplug_none)
    throw error(errc::corrupt, where + "the hotplug intent has an unknown operation " +
                                   std::to_string(pending.op));
  if (pending.op != hotplug_none || pending.checksum != 0) {
    if (!read_only)
      clear_intent();
    else if (!committed)
      pending_.push_back("clear an uncommitted hotplug intent (the operation did not happen)");
    intent_pending_ = read_only;
  }

  for (std::uint64_t root = 0; root < geo_.nr_roots(); ++root) {
    const std::uint64_t entry = directory_entry(root);
    if (entry > 1)
      throw error(errc::corrupt,
                  where + "root directory entry " + std::to_string(root) + " is " + hex(entry));
    if (entry == 1) {
      const std::uint64_t first = root * geo_.sections_per_root();
      refresh_volatile(first << geo_.section_size_bits,
                       std::min<std::uint64_t>(geo_.sections_per_root(), geo_.nr_sections() - first)
                           << geo_.section_size_bits);
    }
  }
  if (auto u = probe_metadata_descriptors()) refuse(*u);
  settle_members();
  if (auto problems = check(); !problems.empty())
    throw error(
        errc::corrupt,
        where + problems.front() +
            (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more)" : ""));
}

// A committed intent names a span that its operation could have named: a
// hot-remove only a span whose present pages are all free (no extent or
// slab head in it, no extent running into it from before), and a hot-add
// only a span whose descriptors it wrote free before its commit (so the
// same holds). Read before anything is replayed, with the records as they are
// (a replay may have been interrupted) and every memmap offset
// bounds-checked; the volatile memmap is not built yet. Empty: plausible.
std::string memory_model::intent_problem(const hotplug_intent& in) const {
  const std::uint64_t start = in.start, end = in.start + in.length;
  // The descriptors of the pageblock at `at`, or null when its section
  // records no usable memmap (a removal may have cleared it already).
  const auto descriptors = [&](std::uint64_t at) -> const std::uint64_t* {
    const std::uint64_t nr = at >> geo_.section_size_bits;
    if (nr >= geo_.nr_sections() || directory_entry(nr / geo_.sections_per_root()) != 1)
      return nullptr;
    const std::uint64_t word = section_record(nr)[0];
    const std::uint64_t memmap = word & section_memmap_mask;
    const std::uint64_t span_start = align_down(at, geo_.span_size());
    if (!(word & section_has_mem_map)) return nullptr;
    if (geo_.memmap_area) {
      if (memmap != geo_.area_block(at) || memmap + geo_.memmap_bytes() > region_.size())
        return nullptr;
    } else {
      const std::uint64_t limit = std::min(span_start + geo_.span_size(), region_.size());
      // (memmap may be anything: a sum with it could wrap)
      if (memmap < geo_.head_size() || memmap < span_start || memmap > limit ||
          geo_.memmap_bytes() > limit - memmap)
        return nullptr;
    }
    return reinterpret_cast<const std::uint64_t*>(base() + memmap) +
           ((at - span_start) >> page_shift);
  };
  const auto memmap_page = [&](std::uint64_t at) {
    if (geo_.memmap_area) return false;  // the memory holds none
    const std::uint64_t m = span_memmap(at);
    return m && at >= m && at < m + geo_.memmap_bytes();
  };
  for (std::uint64_t at = start; at < end; at += subsection_size) {
    if (!subsection_present(at)) continue;
    const std::uint64_t* d = descriptors(at);
    if (!d) continue;
    for (std::uint64_t page = 0; page < pages_per_subsection; ++page) {
      const std::uint64_t info = d[page];
      const bool memmap = page_descriptor{info}.state() == page_state::memmap &&
                          descriptor_checks_out(info) && memmap_page(at + page * page_size);
      if (info != free_descriptor && !memmap)
        return "the page at " + hex(at + page * page_size) + " is in use (descriptor " + hex(info) +
               ")";
    }
  }
  // An extent that starts before the span and runs into it: it lies in
  // present, non-metadata pageblocks right before the span.
  for (std::uint64_t at = start; at >= geo_.data_start() + subsection_size;) {
    at -= subsection_size;
    if (!subsection_present(at) ||
        get_pageblock_migratetype(at >> page_shift) == migratetype::metadata)
      break;
    const std::uint64_t* d = descriptors(at);
    if (!d) break;
    for (std::uint64_t page = 0; page < pages_per_subsection; ++page) {
      const page_descriptor head{d[page]};
      if (head.state() == page_state::extent &&
          ((at >> page_shift) + page + head.length()) > (start >> page_shift))
        return "the extent at " + hex(at + page * page_size) + " runs into it";
    }
  }
  return {};
}

std::optional<memory_model::unreadable> memory_model::probe_head() const {
  const auto at = [&](std::uint64_t offset, std::uint64_t length,
                      const std::string& structure) -> std::optional<unreadable> {
    if (auto failure = reader_.probe(base(), offset, length))
      return unreadable{*failure, structure};
    return std::nullopt;
  };
  if (auto u = at(intent_offset, directory_offset - intent_offset, "the hotplug intent page"))
    return u;
  if (auto u = at(directory_offset, geo_.nr_roots() * 8, "the section root directory")) return u;
  for (std::uint64_t root = 0; root < geo_.nr_roots(); ++root)
    if (directory_entry(root) == 1)
      if (auto u = at(geo_.roots_offset() + root * root_page_size, root_page_size,
                      "the section map (root page " + std::to_string(root) + ")"))
        return u;
  for (std::uint64_t lane = 0; lane < nr_lanes; ++lane)
    if (auto u = at(geo_.lanes_offset() + lane * lane_size, lane_size,
                    "the redo lanes (lane " + std::to_string(lane) + ")"))
      return u;
  return at(geo_.slots_offset(), root_page_size, "the slot page");
}

std::optional<media::read_failure> memory_model::probe_descriptors(std::uint64_t pfn) const {
  const std::uint64_t first = align_down(pfn, pages_per_subsection);
  const auto* page = reinterpret_cast<const std::byte*>(pfn_to_page(first));
  const auto offset = static_cast<std::uint64_t>(page - base());
  // (A memmap offset off the region is the section record's damage: check() says so.)
  if (page < base() || offset > region_.size() || region_.size() - offset < page_size)
    return std::nullopt;
  return reader_.probe(base(), offset, pages_per_subsection * sizeof(page_descriptor));
}

std::optional<memory_model::unreadable> memory_model::probe_metadata_descriptors() const {
  const auto metadata = [&](std::uint64_t at) -> std::optional<unreadable> {
    if (!subsection_present(at) || !pfn_valid(at >> page_shift)) return std::nullopt;
    if (auto failure = probe_descriptors(at >> page_shift))
      return unreadable{*failure,
                        "the memmap (the descriptors of the pageblock at " + hex(at) + ")"};
    return std::nullopt;
  };
  for (std::uint64_t at = 0; at < geo_.head_size(); at += subsection_size)
    if (auto u = metadata(at)) return u;
  for (std::uint64_t at = geo_.memmap_area; at < geo_.data_start() && geo_.memmap_area;
       at += subsection_size)
    if (auto u = metadata(at)) return u;
  if (!geo_.memmap_area)
    for (std::uint64_t span = 0; span < geo_.max_range; span += geo_.span_size())
      if (const std::uint64_t block = span_memmap(span))
        for (std::uint64_t at = block; at < block + geo_.memmap_bytes(); at += subsection_size)
          if (auto u = metadata(at)) return u;
  return std::nullopt;
}

void memory_model::init_volatile() {
  mem_map_ = zeroed_array<std::atomic<std::uintptr_t>>(geo_.nr_sections());
}

// ---- hotplug ----

std::string memory_model::check_pfn_span(const char* operation, std::uint64_t start,
                                         std::uint64_t length) const {
  std::string what =
      region_.path().string() + ": " + operation + " " + span_text(start, start + length) + ": ";
  if (length == 0) throw error(errc::invalid_argument, what + "empty span");
  if (start % subsection_size || length % subsection_size)
    throw error(errc::misaligned, what + "start and size must be multiples of 2 MiB (EINVAL)");
  return what;
}

void memory_model::refuse_if_read_only(const char* operation) const {
  if (region_.read_only())
    throw error(errc::read_only,
                region_.path().string() + ": " + operation + ": the heap is open read-only");
}

void memory_model::hot_add(std::uint64_t start, std::uint64_t length) {
  refuse_if_read_only("hot-add");
  std::lock_guard lock(hotplug_mutex_);
  const std::uint64_t end = start + length;
  const std::string what = check_pfn_span("hot-add", start, length);
  if (end < start || end > geo_.max_range)
    throw error(errc::too_large,
                what + "beyond the heap's address range of " + hex(geo_.max_range));
  if (start < geo_.head_size())
    throw error(errc::already_exists, what + "overlaps the head, which is always present (EEXIST)");
  if (start < geo_.data_start())
    throw error(errc::already_exists, what + "overlaps the memmap area " +
                                          span_text(geo_.memmap_area, geo_.data_start()) +
                                          ", which holds the page descriptors; memory starts at " +
                                          hex(geo_.data_start()) + " (EEXIST)");
  for (const member_record& m : members())
    if (start < m.offset + member_label_size && m.offset < end)
      throw error(errc::already_exists, what + "overlaps the label of the member at " +
                                            hex(m.offset) + ", which is never memory (EEXIST)");
  for (std::uint64_t at = start; at < end; at += subsection_size)
    if (subsection_present(at))
      throw error(errc::already_exists,
                  what + "subsection at " + hex(at) + " is already present (EEXIST)");
  add_locked(start, length, std::nullopt);
}

// Adds a span; `fresh` says its storage is populated already and reads as
// zeros (unknown: populated here). Its descriptors are written either way,
// and so are those of the memmap blocks it brings: with a memmap area the
// blocks its spans need (blocks_for) that are not present yet, which become
// present with it; else a block carved from each new span.
void memory_model::add_locked(std::uint64_t start, std::uint64_t length,
                              std::optional<bool> fresh) {
  const std::uint64_t end = start + length;
  struct new_block {
    std::uint64_t span_start, memmap;
  };
  std::vector<new_block> new_blocks;
  if (geo_.memmap_area) {
    for (std::uint64_t block : blocks_for(geo_, start, end))
      if (!subsection_present(block)) new_blocks.push_back({geo_.area_block_span(block), block});
  } else {
    for (std::uint64_t s = align_down(start, geo_.span_size()); s < end; s += geo_.span_size()) {
      if (span_memmap(s)) continue;
      const std::uint64_t at = memmap_placement(s, start, end);
      if (at == 0)
        throw error(errc::too_small, region_.path().string() + ": hot-add " +
                                         span_text(start, end) + ": the span " +
                                         span_text(s, s + geo_.span_size()) +
                                         " has no memmap yet; the first add into it needs " +
                                         std::to_string(geo_.memmap_bytes() >> 20) +
                                         " MiB for the memmap plus 2 MiB of memory");
      new_blocks.push_back({s, at});
    }
  }
  // Storage only once the span is known to be acceptable. In the memmap
  // area only the descriptor pages of present pageblocks are backed (4 KiB
  // per 2 MiB): those of the memory added and of the blocks it brings.
  if (!fresh) fresh = region_.populate(start, length);
  if (geo_.memmap_area) {
    for (std::uint64_t at = start; at < end; at += subsection_size)
      (void)region_.populate(geo_.descriptor_page(at), page_size);
    for (const auto& b : new_blocks)
      (void)region_.populate(geo_.descriptor_page(b.memmap), page_size);
  }

  // Prepare what the records will point to; none of it is reachable yet.
  const auto memmap_of = [&](std::uint64_t offset) {
    const std::uint64_t s = align_down(offset, geo_.span_size());
    for (const auto& b : new_blocks)
      if (b.span_start == s) return std::pair{b.memmap, true};
    return std::pair{span_memmap(offset), false};
  };
  const auto describe = [&](std::uint64_t at, page_state state) {
    const std::uint64_t memmap = memmap_of(at).first;
    auto* desc = reinterpret_cast<page_descriptor*>(
        base() + memmap +
        ((at - align_down(at, geo_.span_size())) >> page_shift) * sizeof(page_descriptor));
    // Written even on fresh storage: the free descriptor is not zero.
    for (std::uint64_t i = 0; i < pages_per_subsection; ++i) desc[i].store(page_info(state));
    persist().flush(desc, pages_per_subsection * sizeof(page_descriptor));
  };
  for (std::uint64_t at = start; at < end; at += subsection_size) {
    const auto [memmap, is_new] = memmap_of(at);
    page_state state = page_state::free;
    if (at < geo_.head_size()) state = page_state::reserved;
    if (!geo_.memmap_area && is_new && at >= memmap && at < memmap + geo_.memmap_bytes())
      state = page_state::memmap;
    describe(at, state);
  }
  std::vector<std::pair<std::uint64_t, std::uint64_t>> roots_of{{start, end}};
  if (geo_.memmap_area)
    for (const auto& b : new_blocks) {
      for (std::uint64_t at = b.memmap; at < b.memmap + geo_.memmap_bytes(); at += subsection_size)
        describe(at, page_state::memmap);
      roots_of.emplace_back(b.memmap, b.memmap + geo_.memmap_bytes());
    }
  for (auto [lo, hi] : roots_of) {
    const std::uint64_t first_root = (lo >> geo_.section_size_bits) / geo_.sections_per_root();
    const std::uint64_t last_root = ((hi - 1) >> geo_.section_size_bits) / geo_.sections_per_root();
    for (std::uint64_t root = first_root; root <= last_root; ++root) {
      if (directory_entry(root)) continue;
      std::byte* page = base() + geo_.roots_offset() + root * root_page_size;
      std::memset(page, 0, root_page_size);
      persist().flush(page, root_page_size);
    }
  }
  persist().drain();

  commit_intent(hotplug_add, start, length);
  apply_intent(*intent());
  clear_intent();
}

void memory_model::hot_remove(std::uint64_t start, std::uint64_t length) {
  refuse_if_read_only("hot-remove");
  std::lock_guard lock(hotplug_mutex_);
  const std::uint64_t end = start + length;
  const std::string what = check_pfn_span("hot-remove", start, length);
  if (end < start || end > geo_.max_range)
    throw error(errc::not_present, what + "beyond the heap's address range");
  if (start < geo_.data_start())
    throw error(errc::in_use, what + "the head (superblocks and section map)" +
                                  (geo_.memmap_area ? " and the memmap area" : "") +
                                  " cannot be removed");
  for (std::uint64_t at = start; at < end; at += subsection_size)
    if (!subsection_present(at))
      throw error(errc::not_present, what + "subsection at " + hex(at) + " is not present");
  for (std::uint64_t s = align_down(start, geo_.span_size()); !geo_.memmap_area && s < end;
       s += geo_.span_size()) {
    const std::uint64_t memmap = span_memmap(s);
    if (memmap + geo_.memmap_bytes() <= start || memmap >= end) continue;
    // The memmap goes only with everything it describes.
    for (std::uint64_t at = s; at < s + geo_.span_size(); at += subsection_size)
      if ((at < start || at >= end) && subsection_present(at))
        throw error(errc::in_use, what + "it holds the memmap of " +
                                      span_text(s, s + geo_.span_size()) +
                                      ", whose subsection at " + hex(at) + " stays present");
  }
  for (std::uint64_t pfn = start >> page_shift; pfn < end >> page_shift; ++pfn) {
    const auto state = pfn_to_page(pfn)->state();
    if (state != page_state::free &&
        !(state == page_state::memmap && in_memmap_block(pfn << page_shift)))
      throw error(errc::in_use, what + "page at " + hex(pfn << page_shift) + " is in use (state " +
                                    std::to_string(static_cast<int>(state)) + ")");
  }
  std::vector<std::uint64_t> blocks;  // present before, and left describing nothing
  if (geo_.memmap_area)
    for (std::uint64_t block : blocks_for(geo_, start, end))
      if (subsection_present(block)) blocks.push_back(block);
  commit_intent(hotplug_remove, start, length);
  apply_intent(*intent());
  clear_intent();
  // Storage goes back where the file system allows: the memory, its
  // descriptor pages, and the blocks left describing nothing.
  (void)region_.release(start, length);
  for (std::uint64_t at = start; geo_.memmap_area && at < end; at += subsection_size)
    (void)region_.release(geo_.descriptor_page(at), page_size);
  for (std::uint64_t block : blocks)
    if (!subsection_present(block)) {  // the block, and the page of its own descriptors
      (void)region_.release(block, geo_.memmap_bytes());
      (void)region_.release(geo_.descriptor_page(block), page_size);
    }
}

void memory_model::commit_intent(hotplug_op op, std::uint64_t start, std::uint64_t length) {
  hotplug_intent record{};
  record.op = op;
  record.start = start;
  record.length = length;
  record.sequence = intent()->sequence + 1;
  record.checksum = fletcher64(&record, offsetof(hotplug_intent, checksum));
  persist().memcpy_persist(intent(), &record, sizeof record);
}

void memory_model::clear_intent() {
  // Both words: a later torn intent must never combine a new op with an old
  // but valid checksum.
  hotplug_intent* in = intent();
  atomic_word(in->op).store(hotplug_none, std::memory_order_relaxed);
  atomic_word(in->checksum).store(0, std::memory_order_relaxed);
  persist().persist(in, sizeof *in);
}

// Applies a committed intent to the section records. Idempotent, and a
// function of the intent and the records only, so open can redo it after a
// failure at any point. With a memmap area, an add makes every block its
// spans need present too, and a removal takes away the blocks left
// describing no memory, those of higher spans first (a block lies in a
// lower span than the one it describes, so one pass in that order
// finds every block that a removal before it left idle).
void memory_model::apply_intent(const hotplug_intent& in) {
  const std::uint64_t start = in.start, end = in.start + in.length;
  const bool adding = in.op == hotplug_add;
  update_records(start, end, adding);
  if (geo_.memmap_area) {
    if (adding)
      for (std::uint64_t block : blocks_for(geo_, start, end))
        update_records(block, block + geo_.memmap_bytes(), true);
    else
      for (std::uint64_t block : idle_blocks(start, end))
        update_records(block, block + geo_.memmap_bytes(), false);
  }
  persist().drain();
}

std::vector<std::uint64_t> memory_model::idle_blocks(std::uint64_t start, std::uint64_t end) const {
  std::vector<std::uint64_t> blocks = blocks_for(geo_, start, end), idle;
  // blocks_for is ascending, and a block's place ascends with its span:
  // reversed, the blocks of higher spans come first.
  std::reverse(blocks.begin(), blocks.end());
  // A block stays while its span holds memory; a block of a higher span
  // that is idle counts as gone already.
  const auto holds_memory = [&](std::uint64_t span) {
    for (std::uint64_t at = span; at < span + geo_.span_size() && at < geo_.max_range;
         at += subsection_size)
      if (subsection_present(at) && std::find(idle.begin(), idle.end(), at) == idle.end())
        return true;
    return false;
  };
  // Whether a block is present is not asked: a replay may meet a block whose
  // present bit is clear already but not its pageblock flags (another word).
  for (std::uint64_t block : blocks)
    if (section_present(block >> geo_.section_size_bits) &&
        !holds_memory(geo_.area_block_span(block)))
      idle.push_back(block);
  return idle;
}

// Sets or clears the subsections of [start, end) in their section records
// (their pageblock flags, and the records' state and memmap words), then
// flushes the records and refreshes the volatile memmap pointers. No fence.
void memory_model::update_records(std::uint64_t start, std::uint64_t end, bool adding) {
  const unsigned map_words = geo_.subsection_map_words();
  const std::uint64_t full_map_bits = geo_.subsections_per_section();

  std::vector<std::pair<std::uint64_t, std::uint64_t>> span_memmaps;  // span start -> memmap
  if (adding && !geo_.memmap_area)
    for (std::uint64_t s = align_down(start, geo_.span_size()); s < end; s += geo_.span_size()) {
      const std::uint64_t existing = span_memmap(s);
      span_memmaps.emplace_back(s, existing ? existing : memmap_placement(s, start, end));
    }
  const auto memmap_for = [&](std::uint64_t offset) {
    if (geo_.memmap_area) return geo_.area_block(offset);
    const std::uint64_t s = align_down(offset, geo_.span_size());
    for (auto& [span, memmap] : span_memmaps)
      if (span == s) return memmap;
    return std::uint64_t{0};
  };
  const auto metadata = [&](std::uint64_t at) {
    if (at < geo_.head_size()) return true;
    if (geo_.memmap_area) return geo_.in_area(at);
    const std::uint64_t memmap = memmap_for(at);
    return at >= memmap && at < memmap + geo_.memmap_bytes();
  };

  auto* directory = reinterpret_cast<std::uint64_t*>(base() + directory_offset);
  for (std::uint64_t nr = start >> geo_.section_size_bits;
       nr <= (end - 1) >> geo_.section_size_bits; ++nr) {
    const std::uint64_t root = nr / geo_.sections_per_root();
    if (adding && directory[root] == 0) {
      atomic_word(directory[root]).store(1, std::memory_order_relaxed);
      persist().flush(&directory[root], 8);
    }
    std::uint64_t* record = section_record(nr);
    const std::uint64_t section_start = nr << geo_.section_size_bits;
    const std::uint64_t lo = std::max(start, section_start);
    const std::uint64_t hi = std::min(end, section_start + geo_.section_size());
    for (std::uint64_t at = lo; at < hi; at += subsection_size) {
      const unsigned i = geo_.subsection_index(at >> page_shift);
      const std::uint64_t bit = std::uint64_t{1} << (i % 64);
      auto word = atomic_word(record[1 + i / 64]);
      if (adding) {
        word.fetch_or(bit, std::memory_order_relaxed);
        set_pageblock_bits(
            at >> page_shift, 0xf,
            static_cast<std::uint8_t>(metadata(at) ? migratetype::metadata : migratetype::movable));
      } else {
        word.fetch_and(~bit, std::memory_order_relaxed);
        set_pageblock_bits(at >> page_shift, 0xf, 0);
      }
    }
    std::uint64_t present = 0;
    for (unsigned w = 0; w < map_words; ++w) present += std::popcount(record[1 + w]);
    std::uint64_t head = 0;
    if (present) {
      const std::uint64_t memmap = adding && (record[0] & section_has_mem_map) == 0
                                       ? memmap_for(section_start)
                                       : record[0] & section_memmap_mask;
      head = memmap | section_marked_present | section_has_mem_map | section_is_online |
             (present != full_map_bits ? std::uint64_t{section_taint_partial} : 0);
    }
    atomic_word(record[0]).store(head, std::memory_order_relaxed);
    persist().flush(record, geo_.record_size());
  }
  refresh_volatile(start, end - start);
}

// Rebuilds the volatile memmap pointers of the sections that
// [start, start+length) touches.
void memory_model::refresh_volatile(std::uint64_t start, std::uint64_t length) {
  const std::uint64_t end = start + length;
  for (std::uint64_t nr = start >> geo_.section_size_bits;
       nr <= (end - 1) >> geo_.section_size_bits; ++nr) {
    std::uintptr_t encoded = 0;
    if (section_present(nr)) {
      const std::uint64_t span_start = align_down(nr << geo_.section_size_bits, geo_.span_size());
      encoded = reinterpret_cast<std::uintptr_t>(base()) +
                (section_record(nr)[0] & section_memmap_mask) -
                (span_start >> page_shift) * sizeof(page_descriptor);
    }
    mem_map_[nr].store(encoded, std::memory_order_release);
  }
}

// ---- invariants ----

std::vector<std::string> memory_model::check() const {
  std::vector<std::string> out;
  const auto fail = [&](std::string s) { out.push_back(std::move(s)); };
  member_problems(out);
  // What does not read is reported and not looked at further (a load of it
  // would end the process).
  superblock copies[2] = {};
  for (int c = 0; c < 2; ++c) {
    bool other_version = false;
    if (auto failure = reader_.copy(&copies[c], base(), superblock_offset[c], sizeof(superblock))) {
      if (c != unreadable_copy_ || !loading_)
        fail(std::string("superblock copy ") + "AB"[c] + ": " + media::describe(*failure) +
             " (unreadable)");
    } else if (auto why = superblock_problem(copies[c], other_version);
               !why.empty() && c != stale_copy_)
      fail(std::string("superblock copy ") + "AB"[c] + ": " + why);
    else if (std::memcmp(&copies[c], &super_, sizeof super_) != 0 && c != stale_copy_)
      fail(std::string("superblock copy ") + "AB"[c] + " differs from the one in use");
  }
  auto u = probe_head();
  if (!u) u = probe_metadata_descriptors();
  if (u) {
    fail(media::describe(u->failure) + " (" + u->structure + ")");
    return out;
  }
  if (intent()->op != hotplug_none && !intent_pending_) fail("a hotplug intent is pending");

  const unsigned map_words = geo_.subsection_map_words();
  const unsigned flag_words = geo_.subsections_per_section() * nr_pageblock_bits / 64;
  std::uint64_t span_checked = ~std::uint64_t{0};
  for (std::uint64_t root = 0; root < geo_.nr_roots(); ++root) {
    const std::uint64_t entry = directory_entry(root);
    if (entry > 1) fail("root directory entry " + std::to_string(root) + " is " + hex(entry));
    if (entry != 1) continue;
    for (std::uint64_t i = 0; i < geo_.sections_per_root(); ++i) {
      const std::uint64_t nr = root * geo_.sections_per_root() + i;
      const std::uint64_t* record = section_record(nr);
      const std::string name = "section " + std::to_string(nr) + ": ";
      std::uint64_t present = 0;
      for (unsigned w = 0; w < map_words; ++w) present += std::popcount(record[1 + w]);
      for (unsigned w = 1 + map_words + flag_words; w < geo_.record_words(); ++w)
        if (record[w]) fail(name + "padding word " + std::to_string(w) + " is not zero");
      if (nr >= geo_.nr_sections()) {
        if (record[0] || present) fail(name + "beyond the address range but not empty");
        continue;
      }
      const std::uint64_t section_start = nr << geo_.section_size_bits;
      const std::uintptr_t cached = mem_map_[nr].load(std::memory_order_relaxed);
      if (present == 0) {
        if (record[0])
          fail(name + "no subsection present but section_mem_map is " + hex(record[0]));
        for (unsigned w = 0; w < flag_words; ++w)
          if (record[1 + map_words + w]) fail(name + "pageblock flags set in an absent section");
        if (cached) fail(name + "absent, but the volatile memmap pointer is set");
        continue;
      }
      const std::uint64_t flags = record[0] & ~section_memmap_mask;
      const std::uint64_t want =
          section_marked_present | section_has_mem_map | section_is_online |
          (present != geo_.subsections_per_section() ? std::uint64_t{section_taint_partial} : 0);
      if (flags != want) fail(name + "state bits " + hex(flags) + ", expected " + hex(want));
      const std::uint64_t memmap = record[0] & section_memmap_mask;
      const std::uint64_t span_start = align_down(section_start, geo_.span_size());
      // memmap comes from the media: compare without overflowing (a value
      // near 2^64 would wrap memmap + memmap_bytes to a small number).
      bool memmap_ok =
          geo_.memmap_bytes() <= region_.size() && memmap <= region_.size() - geo_.memmap_bytes() &&
          (geo_.memmap_area ? memmap == geo_.area_block(section_start)
                            : memmap >= geo_.head_size() && memmap >= span_start &&
                                  memmap <= span_start + geo_.span_size() - geo_.memmap_bytes());
      if (!memmap_ok)
        fail(name + "memmap offset " + hex(memmap) +
             (geo_.memmap_area ? " is not its span's block in the memmap area, or beyond the region"
                               : " outside its span or the region"));
      if (memmap_ok && memmap != span_memmap(section_start))
        fail(name + "memmap offset differs from another section of its span");
      if (cached != reinterpret_cast<std::uintptr_t>(base()) + memmap -
                        (span_start >> page_shift) * sizeof(page_descriptor))
        fail(name + "volatile memmap pointer disagrees with the record");
      for (unsigned s = 0; s < geo_.subsections_per_section(); ++s) {
        const std::uint64_t at = section_start + (std::uint64_t{s} << subsection_shift);
        const bool here = (record[1 + s / 64] >> (s % 64)) & 1;
        const unsigned bit = s * nr_pageblock_bits;
        const auto value =
            static_cast<unsigned>((record[1 + map_words + bit / 64] >> (bit % 64)) & 0xf);
        const std::string sub = name + "subsection at " + hex(at) + ": ";
        if (!here) {
          if (value) fail(sub + "absent but has pageblock flags " + std::to_string(value));
          if (memmap_ok && at >= memmap && at < memmap + geo_.memmap_bytes())
            fail(sub + "holds the memmap but is absent");
          continue;
        }
        if (!mapped(at, subsection_size))
          fail(sub + "present beyond the end of the region (or of its member)");
        if (!is_valid_migratetype(value & migratetype_mask))
          fail(sub + "invalid migratetype " + std::to_string(value & 7));
        const bool metadata =
            at < geo_.head_size() ||
            (geo_.memmap_area ? geo_.in_area(at)
                              : memmap_ok && at >= memmap && at < memmap + geo_.memmap_bytes());
        if (metadata !=
            ((value & migratetype_mask) == static_cast<unsigned>(migratetype::metadata)))
          fail(sub + (metadata ? "head or memmap pageblock not typed metadata"
                               : "typed metadata but holds no metadata"));
      }
      if (memmap_ok && span_start != span_checked &&
          memmap + geo_.memmap_bytes() <= region_.size()) {
        span_checked = span_start;
        // The block's own descriptors: in the block itself, or (memmap area)
        // in the block of the span it lies in, which must be present too.
        const std::uint64_t own = geo_.memmap_area ? geo_.area_block(memmap) : memmap;
        const std::uint64_t own_span = align_down(memmap, geo_.span_size());
        for (std::uint64_t at = memmap; at < memmap + geo_.memmap_bytes(); at += page_size) {
          if (!subsection_present(at) || own + geo_.memmap_bytes() > region_.size() ||
              !subsection_present(own)) {
            fail(name + "its memmap block at " + hex(memmap) + " is not present");
            break;
          }
          const auto& d = *reinterpret_cast<const page_descriptor*>(
              base() + own + ((at - own_span) >> page_shift) * sizeof(page_descriptor));
          if (d.state() != page_state::memmap || !descriptor_checks_out(d.load())) {
            fail(name + "memmap page at " + hex(at) + " has descriptor " + hex(d.load()));
            break;
          }
        }
      }
    }
  }
  for (std::uint64_t at = 0; at < geo_.head_size(); at += subsection_size)
    if (!subsection_present(at)) fail("head subsection at " + hex(at) + " is not present");
  // The memmap area: a block is present exactly when its span holds memory
  // (the head, other blocks, or memory).
  for (std::uint64_t block = geo_.memmap_area; block < geo_.data_start() && geo_.memmap_area;
       block += geo_.memmap_bytes()) {
    const std::uint64_t span = geo_.area_block_span(block);
    const bool needed = span < geo_.max_range && span_has_memory(span);
    if (subsection_present(block) != needed)
      fail("memmap block at " + hex(block) + " of the span at " + hex(span) + " is " +
           (needed ? "absent, but its span holds memory" : "present, but its span holds none"));
  }
  if (out.empty())
    for (std::uint64_t pfn = 0; pfn < geo_.head_size() >> page_shift; ++pfn)
      if (pfn_to_page(pfn)->load() != page_info(page_state::reserved)) {
        fail("head page at " + hex(pfn << page_shift) + " is not marked reserved");
        break;
      }
  return out;
}

model_stats memory_model::stats() const {
  model_stats s;
  s.head_bytes = geo_.head_size();
  std::uint64_t last_span = ~std::uint64_t{0};
  for (std::uint64_t root = 0; root < geo_.nr_roots(); ++root) {
    if (directory_entry(root) != 1) continue;
    ++s.populated_roots;
    for (std::uint64_t i = 0; i < geo_.sections_per_root(); ++i) {
      const std::uint64_t nr = root * geo_.sections_per_root() + i;
      if (!section_present(nr)) continue;
      ++s.present_sections;
      const std::uint64_t* record = section_record(nr);
      for (unsigned w = 0; w < geo_.subsection_map_words(); ++w)
        s.present_subsections += std::popcount(record[1 + w]);
      const std::uint64_t section_start = nr << geo_.section_size_bits;
      if (geo_.memmap_area) {
        // The blocks are present subsections of the area; of the area only
        // the descriptor pages of present pageblocks are backed.
        for (unsigned sub = 0; sub < geo_.subsections_per_section(); ++sub)
          if (geo_.in_area(section_start + std::uint64_t{sub} * subsection_size) &&
              (record[1 + sub / 64] >> (sub % 64) & 1))
            s.area_bytes += subsection_size;
      } else if (align_down(section_start, geo_.span_size()) != last_span) {
        last_span = align_down(section_start, geo_.span_size());
        s.memmap_bytes += geo_.memmap_bytes();  // sections are visited in order: once per span
      }
    }
  }
  s.present_bytes = s.present_subsections * subsection_size;
  if (geo_.memmap_area) s.memmap_bytes = s.present_subsections * page_size;
  s.usable_bytes =
      s.present_bytes - s.head_bytes - (geo_.memmap_area ? s.area_bytes : s.memmap_bytes);
  return s;
}

}  // namespace daxalloc::sparse
