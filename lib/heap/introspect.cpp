// Iteration and introspection (include/daxalloc/introspection.hpp): every
// allocated object, every present section and its pageblocks, the layout;
// and heap::remove. Everything here reads the media as they are (a
// read-only handle's included) and writes nothing, but remove.
#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "alloc/size_classes.hpp"
#include "heap/access.hpp"
#include "heap/named.hpp"
#include "sparse/layout.hpp"

namespace daxalloc {
namespace {

using sparse::page_size;
using sparse::pages_per_subsection;

// The public migratetype is the media's, value for value.
static_assert(static_cast<unsigned>(migratetype::unmovable) ==
              static_cast<unsigned>(sparse::migratetype::unmovable));
static_assert(static_cast<unsigned>(migratetype::movable) ==
              static_cast<unsigned>(sparse::migratetype::movable));
static_assert(static_cast<unsigned>(migratetype::large) ==
              static_cast<unsigned>(sparse::migratetype::large));
static_assert(static_cast<unsigned>(migratetype::metadata) ==
              static_cast<unsigned>(sparse::migratetype::metadata));
static_assert(static_cast<unsigned>(migratetype::isolate) ==
              static_cast<unsigned>(sparse::migratetype::isolate));

// Every extent and slab as the memmap records them, in address order: the
// scan open ran (an open heap passed it), on a scanner of its own that
// writes nothing.
std::vector<alloc::allocated_extent> media_extents(const sparse::memory_model& m) {
  alloc::page_allocator scan(const_cast<sparse::memory_model&>(m));
  std::vector<std::string> problems;
  return scan.rebuild(problems);
}

// f(section number) for every present section in address order, found
// through the root directory so that absent address space costs nothing;
// false from f stops. Returns whether it went through.
template <class F>
bool each_present_section(const sparse::memory_model& m, F&& f) {
  const sparse::geometry& geo = m.geo();
  for (std::uint64_t root = 0; root < geo.nr_roots(); ++root) {
    if (m.directory_entry(root) != 1) continue;
    const std::uint64_t end =
        std::min<std::uint64_t>((root + 1) * geo.sections_per_root(), geo.nr_sections());
    for (std::uint64_t nr = root * geo.sections_per_root(); nr < end; ++nr)
      if (m.section_present(nr) && !f(nr)) return false;
  }
  return true;
}

section_info section_of(const sparse::memory_model& m, std::uint64_t nr) {
  const sparse::geometry& geo = m.geo();
  section_info s;
  s.number = nr;
  s.offset = nr << geo.section_size_bits;
  s.size = geo.section_size();
  s.subsections = geo.subsections_per_section();
  const std::uint64_t head = m.section_record(nr)[0];
  s.memmap_offset = head & sparse::section_memmap_mask;
  s.online = (head & sparse::section_is_online) != 0;
  s.partial = (head & sparse::section_taint_partial) != 0;
  for (unsigned sub = 0; sub < s.subsections; ++sub)
    s.present_subsections += m.subsection_present(s.offset + sub * sparse::subsection_size);
  return s;
}

}  // namespace

const char* to_string(object_kind kind) noexcept {
  static constexpr const char* names[] = {"small", "extent", "root", "named", "name_index"};
  const auto i = static_cast<std::size_t>(kind);
  return i < std::size(names) ? names[i] : "unknown";
}

const char* to_string(migratetype type) noexcept {
  static constexpr const char* names[] = {"unmovable", "movable", "large",
                                          "metadata",  "unknown", "isolate"};
  const auto i = static_cast<std::size_t>(type);
  return i < std::size(names) ? names[i] : "unknown";
}

void heap::visit_objects(detail::visitor<object_info> fn) const {
  const detail::heap_impl& impl = live();
  auto special = detail::named_allocations(*this);
  std::ranges::sort(special);
  const auto kind_of = [&](std::uint64_t offset, object_kind plain) {
    if (impl.is_root(base() + offset)) return object_kind::root;
    const auto it =
        std::ranges::lower_bound(special, offset, {}, [](const auto& s) { return s.first; });
    return it != special.end() && it->first == offset ? it->second : plain;
  };
  for (const auto& e : media_extents(impl.model())) {
    const std::uint64_t offset = e.pfn * page_size;
    if (!e.slab) {
      if (!fn({offset, e.pages * page_size, kind_of(offset, object_kind::extent), false, false}))
        return;
      continue;
    }
    const alloc::size_class& c = alloc::size_classes[e.sub];
    const auto* bits = reinterpret_cast<const std::uint64_t*>(base() + offset);
    const std::uint32_t skew = e.movable ? alloc::movable_skew : 0;
    for (std::uint32_t i = 0; i < c.objects; ++i) {
      if (!c.allocated(bits, i)) continue;
      const std::uint64_t at = offset + c.header + skew + std::uint64_t{i} * c.size;
      if (!fn({at, c.size - skew, kind_of(at, object_kind::small), true, e.movable})) return;
    }
  }
}

void heap::visit_sections(detail::visitor<section_info> fn) const {
  const sparse::memory_model& m = live().model();
  each_present_section(m, [&](std::uint64_t nr) { return fn(section_of(m, nr)); });
}

void heap::visit_pageblocks(detail::visitor<pageblock_info> fn) const {
  const sparse::memory_model& m = live().model();
  // Pages of extents and slabs per pageblock (by pageblock number).
  std::unordered_map<std::uint64_t, std::uint32_t> allocated;
  for (const auto& e : media_extents(m))
    for (std::uint64_t pfn = e.pfn; pfn < e.pfn + e.pages;) {
      const std::uint64_t next =
          std::min(e.pfn + e.pages, (pfn / pages_per_subsection + 1) * pages_per_subsection);
      allocated[pfn / pages_per_subsection] += static_cast<std::uint32_t>(next - pfn);
      pfn = next;
    }
  const unsigned subsections = m.geo().subsections_per_section();
  each_present_section(m, [&](std::uint64_t nr) {
    const std::uint64_t start = nr << m.geo().section_size_bits;
    for (unsigned sub = 0; sub < subsections; ++sub) {
      pageblock_info pb;
      pb.offset = start + sub * sparse::subsection_size;
      pb.section = nr;
      pb.present = m.subsection_present(pb.offset);
      const std::uint64_t pfn = pb.offset >> sparse::page_shift;
      pb.type = static_cast<migratetype>(m.get_pageblock_migratetype(pfn));
      pb.skip = m.get_pageblock_skip(pfn);
      pb.pages = static_cast<std::uint32_t>(pages_per_subsection);
      if (const auto it = allocated.find(pfn / pages_per_subsection); it != allocated.end())
        pb.allocated_pages = it->second;
      if (!fn(pb)) return false;
    }
    return true;
  });
}

heap_layout heap::layout() const {
  const sparse::memory_model& m = live().model();
  const sparse::superblock& sb = m.super();
  const sparse::geometry& geo = m.geo();
  const sparse::model_stats ms = m.stats();
  heap_layout l;
  l.format_version = sb.version;
  std::copy(std::begin(sb.uuid), std::end(sb.uuid), l.uuid.begin());
  l.create_time = sb.create_time;
  l.generation = sb.generation;
  l.section_size_bits = geo.section_size_bits;
  l.section_size = geo.section_size();
  l.subsection_size = sparse::subsection_size;
  l.pageblock_size = sparse::subsection_size;
  l.page_size = page_size;
  l.descriptor_size = sizeof(sparse::page_descriptor);
  l.max_range = geo.max_range;
  l.nr_sections = geo.nr_sections();
  l.head_size = geo.head_size();
  l.memmap_span_size = geo.span_size();
  l.memmap_bytes_per_span = geo.memmap_bytes();
  l.present_sections = ms.present_sections;
  l.present_subsections = ms.present_subsections;
  l.present_bytes = ms.present_bytes;
  l.head_bytes = ms.head_bytes;
  l.memmap_bytes = ms.memmap_bytes;
  l.max_small_size = alloc::max_small_size;
  return l;
}

std::uint32_t heap::format_version() noexcept {
  return sparse::format_version;
}

bool heap::remove(const std::filesystem::path& path, bool invalidate_device) {
  const auto refuse = [&](const std::string& why) {
    throw error(errc::corrupt,
                path.string() + ": not a daxalloc heap (" + why + "); refusing to remove it");
  };
  const auto has_magic = [](const std::byte* head) {
    for (std::uint64_t offset : sparse::superblock_offset)
      if (std::memcmp(head + offset, sparse::superblock_magic, sizeof sparse::superblock_magic) ==
          0)
        return true;
    return false;
  };
  // A file is read before it is mapped: mapping wants what a heap always is
  // (a multiple of 4 KiB), and anything else must be refused as "not a heap".
  if (std::error_code ec; std::filesystem::is_regular_file(path, ec)) {
    std::array<std::byte, 2 * sizeof(sparse::superblock)> head{};
    std::ifstream file(path, std::ios::binary);
    if (!file.read(reinterpret_cast<char*>(head.data()), head.size()))
      refuse("smaller than its two superblocks");
    if (!has_magic(head.data())) refuse("no superblock in either copy");
  }
  // The exclusive lock: a heap that someone has open is never removed.
  region r = region::open(path);
  if (r.size() < 2 * sizeof(sparse::superblock) || !has_magic(r.base()))
    refuse("no superblock in either copy");
  if (r.kind() != region_kind::devdax) {
    std::filesystem::remove(path);  // still holding the lock
    return true;
  }
  if (!invalidate_device)
    throw error(errc::invalid_argument,
                path.string() +
                    ": is a devdax device: removing its heap would invalidate the superblocks (the "
                    "device and its data stay); ask for that explicitly (daxalloc rm --force, "
                    "heap::remove with invalidate_device)");
  // The magic of copy A, then of copy B, each persisted before the next
  // store: after a failure at any point either copy B is intact (open
  // restores A from it: the heap is still there) or neither copy has its
  // magic (open and create both see "not a heap"). The rest of both pages
  // is cleared afterwards only so that nothing of the old heap remains.
  for (std::uint64_t offset : sparse::superblock_offset)
    r.persist().memset_persist(r.base() + offset, 0, sizeof sparse::superblock_magic);
  r.persist().memset_persist(r.base(), 0, 2 * sizeof(sparse::superblock));
  return false;
}

}  // namespace daxalloc
