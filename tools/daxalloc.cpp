// daxalloc: the command-line tool for operators, in the spirit of pmempool
// and daxctl. One subcommand per task; each prints text for humans, or JSON
// with --json, and exits 0 (done), 1 (failed, or check found problems) or
// 2 (bad command line). docs/cli.md is the reference.
//
// It is a user of the public API alone (include/daxalloc/, the shared
// library): what it shows of a heap's layout, sections, pageblocks and
// objects comes from heap::layout and the for_each_ iteration calls.
//
// The inspecting commands (info, stats, map, check) open the heap read-only
// (heap::open_read_only): O_RDONLY, a shared lock (a heap open read-write
// elsewhere is refused with errc::busy), no recovery and no write at all, so
// the file is byte for byte what it was, and a read-only file will do. What
// they report about the shutdown, and the recovery a read-write open would
// run, is what the open found (heap_stats, heap::pending_recovery). The
// commands that change the heap (create, repair, grow, shrink) open it
// read-write like any user of the library.
//
// Each command computes its whole result before printing it, so that a
// failure half-way never leaves half a JSON document on stdout.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "daxalloc/devices.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/version.hpp"

namespace daxalloc::cli {
namespace {

// The unit of hot_add and hot_remove (heap.hpp): a subsection, which is
// one pageblock. What a heap reports (heap_layout) is read from the heap.
constexpr std::uint64_t pageblock_size = std::uint64_t{2} << 20;

// ---- names ----

// The migratetypes a heap uses, in the order the tool lists them.
constexpr migratetype listed_types[] = {migratetype::metadata, migratetype::unmovable,
                                        migratetype::movable, migratetype::large,
                                        migratetype::isolate};

std::string uuid_text(const std::array<std::uint8_t, 16>& uuid) {
  std::string out;
  for (int i = 0; i < 16; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", uuid[i]);
    out += buf;
    if (i == 3 || i == 5 || i == 7 || i == 9) out += '-';
  }
  return out;
}

std::string utc_time(std::uint64_t seconds) {
  const auto t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(seconds);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// "label               value\n": the layout of the key-value blocks of `info`.
std::string row(std::string_view label, const std::string& value) {
  std::string out = "  " + std::string(label);
  out.append(label.size() < 20 ? 20 - label.size() : 1, ' ');
  return out + value + "\n";
}

// ---- what a heap looks like, through its introspection calls ----

struct section_view {
  section_info info;
  std::vector<pageblock_info> pageblocks;
};

// Every present section in address order, with its pageblocks.
std::vector<section_view> present_sections(const heap& h) {
  std::vector<section_view> out;
  h.for_each_section([&](const section_info& s) { out.push_back({s, {}}); });
  std::size_t i = 0;
  h.for_each_pageblock([&](const pageblock_info& pb) {
    while (out[i].info.number != pb.section) ++i;
    out[i].pageblocks.push_back(pb);
  });
  return out;
}

struct span {
  std::uint64_t start, end;
};

// Present memory as maximal runs of present subsections.
std::vector<span> present_ranges(const std::vector<section_view>& sections) {
  std::vector<span> out;
  for (const auto& s : sections)
    for (const auto& pb : s.pageblocks) {
      if (!pb.present) continue;
      if (!out.empty() && out.back().end == pb.offset)
        out.back().end += pageblock_size;
      else
        out.push_back({pb.offset, pb.offset + pageblock_size});
    }
  return out;
}

// One character per pageblock: what `map` draws.
char pageblock_char(const pageblock_info& pb) {
  if (!pb.present) return '.';
  if (pb.type == migratetype::metadata) return '#';
  if (pb.type == migratetype::isolate) return 'I';
  if (pb.allocated_pages == 0) return '-';
  switch (pb.type) {
    case migratetype::unmovable:
      return 'U';
    case migratetype::movable:
      return 'M';
    case migratetype::large:
      return 'L';
    default:
      return '?';
  }
}

constexpr std::pair<char, const char*> map_legend[] = {
    {'#', "metadata (head, memmap)"},
    {'U', "unmovable: slabs of small objects"},
    {'M', "movable: page-sized extents"},
    {'L', "large extents (2 MiB and more)"},
    {'I', "isolated"},
    {'-', "free pageblock"},
    {'.', "absent subsection"},
    {'?', "unknown migratetype"},
};

// ---- the commands ----

const option_spec json_option{"json", "", "print JSON instead of text"};
const option_spec accept_option{"accept-unsafe-shutdown", "",
                                "open the heap after an unsafe shutdown, with a full check"};
const option_spec region_paths_option{
    "region-paths", "PATH,...",
    "where the heap's added regions are now, in order; an empty one keeps its path"};

// "A,B,C" as its parts; empty ones dropped, or kept (`keep_empty`: a place).
std::vector<std::string> comma_list(const std::string& list, bool keep_empty = false) {
  std::vector<std::string> out;
  for (std::size_t from = 0; from <= list.size();) {
    const std::size_t comma = std::min(list.find(',', from), list.size());
    if (comma > from || keep_empty) out.push_back(list.substr(from, comma - from));
    from = comma + 1;
  }
  return out;
}

// The open options of a command that takes --accept-unsafe-shutdown.
heap_open_options open_options(const parsed_args& a) {
  heap_open_options o;
  o.accept_unsafe_shutdown = a.flag("accept-unsafe-shutdown");
  if (const auto list = a.value("region-paths"))
    for (const std::string& path : comma_list(*list, true)) o.region_paths.emplace_back(path);
  return o;
}

struct command {
  command_spec spec;
  std::function<int(const parsed_args&, bool json)> run;
};

void print(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

std::uint64_t size_option(const parsed_args& a, std::string_view name, bool required) {
  const auto text = a.value(name);
  if (!text) {
    if (required) throw usage_error("--" + std::string(name) + " SIZE is required");
    return 0;
  }
  const auto bytes = parse_size(*text);
  if (!bytes)
    throw usage_error("invalid size '" + *text + "' for --" + std::string(name) +
                      " (a positive number of bytes with an optional K, M, G or T suffix)");
  return *bytes;
}

// -- devices --

int run_devices(const parsed_args&, bool json) {
  const auto devices = list_devices();
  if (json) {
    json_writer w;
    w.begin_object().key("devices").begin_array();
    for (const auto& d : devices) {
      w.begin_object()
          .field("name", d.name)
          .field("path", d.path.string())
          .field("mode", d.mode)
          .field("size", d.size)
          .field("align", d.align)
          .field("numa_node", d.numa_node)
          .field("region", d.region_id)
          .end_object();
    }
    w.end_array().end_object();
    print(w.str());
    return exit_ok;
  }
  if (devices.empty()) {
    print("no DAX devices found (devdax through libdaxctl, fsdax and raw pmem through libndctl)\n");
    return exit_ok;
  }
  table t({"NAME", "PATH", "MODE", "SIZE", "ALIGN", "NUMA", "REGION"},
          {false, false, false, true, true, true, true});
  for (const auto& d : devices)
    t.add({d.name, d.path.string(), d.mode, human_bytes(d.size),
           d.align ? human_bytes(d.align) : "-",
           d.numa_node >= 0 ? std::to_string(d.numa_node) : "-",
           d.region_id >= 0 ? std::to_string(d.region_id) : "-"});
  print(t.render(""));
  return exit_ok;
}

// -- create --

int run_create(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  heap_options o;
  o.size = size_option(a, "size", true);
  o.max_size = size_option(a, "max-size", false);
  if (o.max_size && o.max_size < o.size)
    throw usage_error("--max-size (" + human_bytes(o.max_size) + ") is smaller than --size (" +
                      human_bytes(o.size) + ")");
  if (const auto bits = a.value("section-bits")) {
    const auto v = parse_uint(*bits);
    if (!v || *v < 27 || *v > 30)
      throw usage_error("invalid --section-bits '" + *bits +
                        "' (27..30: 128 MiB .. 1 GiB sections)");
    o.section_size_bits = static_cast<unsigned>(*v);
  }
  if (const auto mode = a.value("mode")) {
    if (*mode == "auto")
      o.mode = persistence_mode::automatic;
    else if (*mode == "cache-flush")
      o.mode = persistence_mode::cache_flush;
    else if (*mode == "msync")
      o.mode = persistence_mode::msync;
    else
      throw usage_error("invalid --mode '" + *mode + "' (auto, cache-flush or msync)");
  }
  o.overwrite = a.flag("force");
  std::vector<std::string> members;
  if (const auto list = a.value("regions")) members = comma_list(*list);
  const std::uint64_t member_size = size_option(a, "region-size", false);

  std::optional<heap> h;
  {
    progress p("creating " + path + " (" + human_bytes(o.size) + ")");
    h.emplace(heap::create(path, o));
  }
  std::vector<std::string> made;  // region files this command creates
  try {
    for (const auto& m : members) {
      progress p("adding " + m);
      const bool existed = std::filesystem::exists(m);
      (void)h->add_region(m, member_size);
      if (!existed) made.push_back(m);
    }
  } catch (...) {
    h->close();
    heap::remove(path);  // all or nothing: the heap goes again, and the files made for it
    for (const auto& m : made) std::filesystem::remove(m);
    throw;
  }
  const heap_layout geo = h->layout();
  const heap_stats s = h->stats();
  const std::string kind = to_string(h->media().kind());
  const std::string persistence = h->persist().name();
  const std::string uuid = uuid_text(geo.uuid);
  h->close();

  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field("uuid", uuid)
        .field("region", kind)
        .field("persistence", persistence)
        .field("present_bytes", s.present_bytes)
        .field("usable_bytes", s.usable_bytes)
        .field("max_range", geo.max_range)
        .field("section_size_bits", geo.section_size_bits)
        .field("section_size", geo.section_size)
        .end_object();
    print(w.str());
    return exit_ok;
  }
  print("created " + path + ": " + human_bytes(s.present_bytes) + " present (" +
        human_bytes(s.usable_bytes) + " usable) of a " + human_bytes(geo.max_range) +
        " address range, " + human_bytes(geo.section_size) + " sections\n" +
        row("region", kind + ", persistence by " + persistence) + row("uuid", uuid));
  return exit_ok;
}

// "recovery": what a read-write open would do (the commands open read-only).
void write_recovery(json_writer& w, const recovery_plan& recovery) {
  w.key("recovery")
      .begin_object()
      .field("lanes_to_replay", recovery.lanes_to_replay)
      .field("lanes_to_clear", recovery.lanes_to_clear)
      .key("steps")
      .begin_array();
  for (const auto& step : recovery.steps) w.value(step);
  w.end_array().end_object();
}

// The media's bad blocks in the heap (docs/media-errors.md), for check and repair.
void write_bad_blocks(json_writer& w, const std::vector<bad_block>& blocks) {
  w.key("bad_blocks").begin_array();
  for (const bad_block& b : blocks) {
    w.begin_object()
        .field("offset", b.offset)
        .field("length", b.length)
        .field("location", to_string(b.location))
        .field("quarantined", b.quarantined)
        .field("cleared", b.cleared)
        .field("objects_unknown", b.objects_unknown)
        .key("objects")
        .begin_array();
    for (std::uint64_t o : b.objects) w.value(o);
    w.end_array().end_object();
  }
  w.end_array();
}

std::string bad_block_text(const bad_block& b) {
  std::string out = "bad block at " + hex(b.offset) + " (" + std::to_string(b.length) +
                    " bytes) in " +
                    (b.location == bad_block_location::memory   ? "memory"
                     : b.location == bad_block_location::head   ? "the head"
                     : b.location == bad_block_location::memmap ? "the memmap"
                                                                : "memory that is not present");
  if (b.cleared)
    out += ", cleared (reads as zeros)";
  else if (b.quarantined)
    out += ", its pageblock quarantined";
  if (b.location == bad_block_location::memory) {
    out += b.objects.empty() ? "; no object in it" : "; objects lost:";
    for (std::size_t i = 0; i < b.objects.size() && i < 16; ++i) out += " " + hex(b.objects[i]);
    if (b.objects.size() > 16) out += " ...";
    if (b.objects_unknown) out += " (a slab bitmap is in it: its objects are unknown)";
  }
  return out;
}

// "regions": the heap's regions (heap::regions()), as info and add-region print them.
void write_regions(json_writer& w, const std::vector<region_info>& regions) {
  w.key("regions").begin_array();
  for (const region_info& r : regions)
    w.begin_object(true)
        .field("path", r.path.string())
        .field("kind", to_string(r.kind))
        .field("offset", r.offset)
        .field("size", r.size)
        .field("align", r.align)
        .field("device", r.device)
        .field("node", r.node)
        .end_object();
  w.end_array();
}

// -- info --

int run_info(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  heap h = heap::open_read_only(path, open_options(a));
  const heap_stats s = h.stats();
  const recovery_plan recovery = h.pending_recovery();
  const heap_layout geo = h.layout();
  const auto sections = present_sections(h);
  const auto ranges = present_ranges(sections);
  std::uint64_t partial = 0;
  for (const auto& sec : sections) partial += sec.info.present_subsections != sec.info.subsections;
  // Memmap placement: one block per span that has present memory.
  struct placement {
    std::uint64_t span_start, memmap;
  };
  std::vector<placement> placements;
  for (const auto& sec : sections) {
    const std::uint64_t span_start = sec.info.offset / geo.memmap_span_size * geo.memmap_span_size;
    if (placements.empty() || placements.back().span_start != span_start)
      placements.push_back({span_start, sec.info.memmap_offset});
  }
  const double metadata_per_page = s.present_bytes
                                       ? static_cast<double>(s.metadata_bytes) /
                                             static_cast<double>(s.present_bytes / geo.page_size)
                                       : 0;
  const std::string kind = to_string(h.media().kind());
  const std::string persistence = h.persist().name();
  const std::uint64_t mapped = h.size();
  const std::vector<region_info> regions = h.regions();
  const region_info& record = regions.front();
  const unsafe_shutdown_detection detection = h.shutdown_detection();
  const bool unsafe = h.unsafe_shutdown();
  h.close();

  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field("format_version", geo.format_version)
        .field("uuid", uuid_text(geo.uuid))
        .field("create_time", geo.create_time)
        .field("generation", geo.generation)
        .field("shutdown", s.unclean_shutdown ? "unclean" : "clean")
        .field("unclean_shutdown", s.unclean_shutdown)
        .field("unsafe_shutdown", unsafe);
    w.key("unsafe_shutdown_detection").begin_object().field("available", detection.available);
    if (detection.available)
      w.field("device_id", detection.device_id)
          .field("unsafe_shutdowns", detection.unsafe_shutdowns);
    else
      w.field("note", detection.note);
    w.end_object();
    write_recovery(w, recovery);
    w.key("region")
        .begin_object()
        .field("kind", kind)
        .field("persistence", persistence)
        .field("mapped_bytes", mapped)
        .field("align", record.align)
        .field("device", record.device)
        .field("node", record.node)
        .end_object();
    write_regions(w, regions);
    w.key("geometry")
        .begin_object()
        .field("section_size_bits", geo.section_size_bits)
        .field("section_size", geo.section_size)
        .field("subsection_size", geo.subsection_size)
        .field("pageblock_size", geo.pageblock_size)
        .field("page_size", geo.page_size)
        .field("descriptor_size", geo.descriptor_size)
        .field("max_range", geo.max_range)
        .field("nr_sections", geo.nr_sections)
        .field("head_size", geo.head_size)
        .field("memmap_span_size", geo.memmap_span_size)
        .field("memmap_bytes_per_span", geo.memmap_bytes_per_span)
        .end_object();
    w.key("present")
        .begin_object()
        .field("bytes", geo.present_bytes)
        .field("sections", geo.present_sections)
        .field("partial_sections", partial)
        .field("subsections", geo.present_subsections)
        .key("ranges")
        .begin_array();
    for (const auto& r : ranges)
      w.begin_object(true).field("start", r.start).field("length", r.end - r.start).end_object();
    w.end_array().end_object();
    w.key("memmap").begin_array();
    for (const auto& p : placements)
      w.begin_object(true)
          .field("span_start", p.span_start)
          .field("span_size", geo.memmap_span_size)
          .field("memmap_offset", p.memmap)
          .field("memmap_bytes", geo.memmap_bytes_per_span)
          .end_object();
    w.end_array();
    w.key("pageblocks").begin_object();
    for (migratetype t : listed_types)
      w.field(to_string(t), s.pageblocks_by_migratetype[static_cast<unsigned>(t)]);
    w.end_object();
    w.key("usage")
        .begin_object()
        .field("present_bytes", s.present_bytes)
        .field("usable_bytes", s.usable_bytes)
        .field("metadata_bytes", s.metadata_bytes)
        .field("metadata_bytes_per_page", metadata_per_page)
        .field("allocated_bytes", s.allocated_bytes)
        .field("allocated_objects", s.allocated_objects)
        .field("free_bytes", s.free_bytes)
        .field("largest_free_bytes", s.largest_free_bytes)
        .field("fragmentation", s.fragmentation)
        .end_object();
    w.key("nodes").begin_array();
    for (const auto& n : s.nodes)
      w.begin_object(true)
          .field("node", n.node)
          .field("regions", n.regions)
          .field("arenas", n.arenas)
          .field("present_bytes", n.present_bytes)
          .field("free_bytes", n.free_bytes)
          .field("slab_bytes", n.slab_bytes)
          .field("extent_bytes", n.extent_bytes)
          .end_object();
    w.end_array();
    w.key("sections").begin_array();
    for (const auto& sec : sections)
      w.begin_object(true)
          .field("nr", sec.info.number)
          .field("start", sec.info.offset)
          .field("present_subsections", sec.info.present_subsections)
          .field("subsections", sec.info.subsections)
          .field("memmap_offset", sec.info.memmap_offset)
          .field("online", sec.info.online)
          .field("partial", sec.info.partial)
          .end_object();
    w.end_array().end_object();
    print(w.str());
    return exit_ok;
  }

  std::string out =
      path + ": daxalloc heap, format version " + std::to_string(geo.format_version) + "\n";
  out += row("uuid", uuid_text(geo.uuid));
  out += row("created", utc_time(geo.create_time));
  out += row("shutdown", s.unclean_shutdown
                             ? "unclean: the last user did not close it (the next read-write "
                               "open recovers it)"
                             : "clean");
  if (unsafe) out += row("", "after an unsafe shutdown (accepted; the full check found nothing)");
  out += row("unsafe shutdown", detection.available
                                    ? "detection on (DIMMs " + detection.device_id + ", count " +
                                          std::to_string(detection.unsafe_shutdowns) + ")"
                                    : "detection not available (" + detection.note + ")");
  for (std::size_t i = 0; i < recovery.steps.size(); ++i)
    out += row(i ? "" : "recovery would", recovery.steps[i]);
  out += row("region",
             kind + ", persistence by " + persistence + ", " + human_bytes(mapped) + " mapped");
  out += row("", "device " + (record.device.empty() ? "none" : record.device) + ", node " +
                     (record.node < 0 ? "unknown" : std::to_string(record.node)) +
                     ", mapping align " + human_bytes(record.align));
  for (std::size_t i = 1; i < regions.size(); ++i) {
    const region_info& r = regions[i];
    out += row(i == 1 ? "added regions" : "",
               r.path.string() + ": " + to_string(r.kind) + ", " +
                   span_text(r.offset, r.offset + r.size) + ", device " +
                   (r.device.empty() ? "none" : r.device) + ", node " +
                   (r.node < 0 ? "unknown" : std::to_string(r.node)));
  }
  out += "geometry\n";
  out += row("section size", human_bytes(geo.section_size) + " (section_size_bits " +
                                 std::to_string(geo.section_size_bits) + ")");
  out += row("subsection size", human_bytes(geo.subsection_size) + " (one pageblock)");
  out += row("page size", human_bytes(geo.page_size) + ", " + std::to_string(geo.descriptor_size) +
                              " B descriptor per page");
  out += row("max range",
             human_bytes(geo.max_range) + " (" + std::to_string(geo.nr_sections) + " sections)");
  out += row("head size", human_bytes(geo.head_size));
  out += row("memmap span", human_bytes(geo.memmap_span_size) + ", described by " +
                                human_bytes(geo.memmap_bytes_per_span) + " of memmap");
  out += "present\n";
  out += row("sections", std::to_string(geo.present_sections) + " of " +
                             std::to_string(geo.nr_sections) +
                             (partial ? " (" + std::to_string(partial) + " partial)" : ""));
  out += row("subsections",
             std::to_string(geo.present_subsections) + " (" + human_bytes(geo.present_bytes) + ")");
  for (std::size_t i = 0; i < ranges.size(); ++i)
    out += row(i ? "" : "ranges", span_text(ranges[i].start, ranges[i].end) + "  " +
                                      human_bytes(ranges[i].end - ranges[i].start));
  out += "memmap placement (one " + human_bytes(geo.memmap_bytes_per_span) + " block per " +
         human_bytes(geo.memmap_span_size) + " span)\n";
  {
    table t({"span", "memmap block"});
    // Consecutive spans with their block at the same place collapse into one row.
    for (std::size_t i = 0; i < placements.size();) {
      std::size_t j = i + 1;
      const std::uint64_t relative = placements[i].memmap - placements[i].span_start;
      while (j < placements.size() &&
             placements[j].span_start == placements[j - 1].span_start + geo.memmap_span_size &&
             placements[j].memmap - placements[j].span_start == relative)
        ++j;
      const std::uint64_t end = placements[j - 1].span_start + geo.memmap_span_size;
      if (j - i == 1)
        t.add({span_text(placements[i].span_start, end),
               span_text(placements[i].memmap, placements[i].memmap + geo.memmap_bytes_per_span)});
      else
        t.add({span_text(placements[i].span_start, end) + " (" + std::to_string(j - i) + " spans)",
               "span start + " + hex(relative) + " in each"});
      i = j;
    }
    out += t.render();
  }
  out += "pageblocks by migratetype\n";
  {
    table t({"type", "pageblocks", "bytes"}, {false, true, true});
    for (migratetype type : listed_types) {
      const std::uint64_t n = s.pageblocks_by_migratetype[static_cast<unsigned>(type)];
      t.add({to_string(type), std::to_string(n), human_bytes(n * pageblock_size)});
    }
    out += t.render();
  }
  out += "usage\n";
  char per_page[64];
  std::snprintf(per_page, sizeof per_page, "%.1f B per 4 KiB page", metadata_per_page);
  out += row("present", human_bytes(s.present_bytes));
  out += row("usable", human_bytes(s.usable_bytes));
  out += row("metadata", human_bytes(s.metadata_bytes) + " (" + per_page + ": head " +
                             human_bytes(geo.head_bytes) + ", memmap " +
                             human_bytes(geo.memmap_bytes) + ")");
  out += row("allocated", human_bytes(s.allocated_bytes) + " in " +
                              std::to_string(s.allocated_objects) + " objects");
  out += row("free", human_bytes(s.free_bytes));
  out += row("largest free", human_bytes(s.largest_free_bytes));
  out += row("fragmentation", percent(s.fragmentation) + " (1 - largest free / free)");
  out += "nodes (the heap's memory by the NUMA node of its regions)\n";
  {
    table t({"node", "regions", "arenas", "present", "free", "in slabs", "in extents"},
            {true, true, true, true, true, true, true});
    for (const auto& n : s.nodes)
      t.add({n.node < 0 ? "unknown" : std::to_string(n.node), std::to_string(n.regions),
             std::to_string(n.arenas), human_bytes(n.present_bytes), human_bytes(n.free_bytes),
             human_bytes(n.slab_bytes), human_bytes(n.extent_bytes)});
    out += t.render();
  }
  out += "sections\n";
  {
    table t({"nr", "range", "subsections", "state"}, {true, false, true, false});
    // Runs of sections alike (consecutive, same presence and state) share a row.
    for (std::size_t i = 0; i < sections.size();) {
      std::size_t j = i + 1;
      const section_info& first = sections[i].info;
      while (j < sections.size() && sections[j].info.number == sections[j - 1].info.number + 1 &&
             sections[j].info.present_subsections == first.present_subsections &&
             sections[j].info.online == first.online && sections[j].info.partial == first.partial)
        ++j;
      const section_info& last = sections[j - 1].info;
      std::string state = first.online ? "online" : "offline";
      if (first.partial) state += ", partial";
      t.add({std::to_string(first.number) + (j - i > 1 ? "-" + std::to_string(last.number) : ""),
             span_text(first.offset, last.offset + last.size),
             std::to_string(first.present_subsections) + "/" + std::to_string(first.subsections),
             state});
      i = j;
    }
    out += t.render();
  }
  print(out);
  return exit_ok;
}

// -- stats --

int run_stats(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  heap h = heap::open_read_only(path, open_options(a));
  const heap_stats s = h.stats();
  const auto sections = present_sections(h);
  const std::uint64_t max_small_size = h.layout().max_small_size;
  std::uint64_t extents = 0, largest_extent = 0;
  h.for_each_object([&](const object_info& o) {
    if (o.in_slab) return;
    ++extents;
    largest_extent = std::max(largest_extent, o.size);
  });
  h.close();

  // Pageblocks by migratetype and by use: free, partly or wholly allocated.
  struct use {
    std::uint64_t free = 0, partial = 0, full = 0;
  };
  std::vector<std::pair<migratetype, use>> uses;
  for (migratetype t : listed_types) uses.push_back({t, {}});
  const auto use_of = [&](migratetype t) -> use& {
    for (auto& [type, u] : uses)
      if (type == t) return u;
    return uses.emplace_back(t, use{}).second;
  };
  for (const auto& sec : sections)
    for (const auto& pb : sec.pageblocks) {
      if (!pb.present) continue;
      use& u = use_of(pb.type);
      if (pb.type == migratetype::metadata || pb.allocated_pages == pb.pages)
        ++u.full;
      else if (pb.allocated_pages == 0)
        ++u.free;
      else
        ++u.partial;
    }

  if (json) {
    json_writer w;
    w.begin_object().field("path", path).key("size_classes").begin_array();
    for (const auto& c : s.size_classes)
      w.begin_object(true)
          .field("size", c.size)
          .field("slabs", c.slabs)
          .field("slab_bytes", c.slab_bytes)
          .field("allocated", c.allocated)
          .field("capacity", c.capacity)
          .field("allocated_bytes", c.allocated * c.size)
          .end_object();
    w.end_array();
    w.key("extents")
        .begin_object()
        .field("count", extents)
        .field("bytes", s.extent_bytes)
        .field("largest_bytes", largest_extent)
        .end_object();
    w.key("pageblocks").begin_object();
    for (const auto& [type, u] : uses)
      w.key(to_string(type))
          .begin_object(true)
          .field("free", u.free)
          .field("partial", u.partial)
          .field("full", u.full)
          .end_object();
    w.end_object();
    w.key("totals")
        .begin_object()
        .field("allocated_bytes", s.allocated_bytes)
        .field("allocated_objects", s.allocated_objects)
        .field("slab_bytes", s.slab_bytes)
        .field("extent_bytes", s.extent_bytes)
        .field("usable_bytes", s.usable_bytes)
        .field("free_bytes", s.free_bytes)
        .field("largest_free_bytes", s.largest_free_bytes)
        .field("fragmentation", s.fragmentation)
        .field("alignment_waste_bytes", s.alignment_waste_bytes)
        .field("movable_objects", s.movable_objects)
        .field("movable_bytes", s.movable_bytes)
        .field("movable_slab_bytes", s.movable_slab_bytes)
        .end_object();
    w.key("allocated_bytes_by_migratetype").begin_object();
    for (unsigned t = 0; t < s.allocated_bytes_by_migratetype.size(); ++t)
      if (s.allocated_bytes_by_migratetype[t] != 0)
        w.field(to_string(static_cast<daxalloc::migratetype>(t)),
                s.allocated_bytes_by_migratetype[t]);
    w.end_object();
    w.end_object();
    print(w.str());
    return exit_ok;
  }

  std::string out = path + ": allocator statistics\n";
  out += "size classes (slabs of small objects, up to " + human_bytes(max_small_size) + ")\n";
  if (s.size_classes.empty()) {
    out += "  none in use\n";
  } else {
    table t({"size", "slabs", "slab bytes", "allocated", "capacity", "used"},
            {true, true, true, true, true, true});
    for (const auto& c : s.size_classes)
      t.add({human_bytes(c.size), std::to_string(c.slabs), human_bytes(c.slab_bytes),
             std::to_string(c.allocated), std::to_string(c.capacity),
             percent(c.capacity ? static_cast<double>(c.allocated) / static_cast<double>(c.capacity)
                                : 0)});
    out += t.render();
  }
  out += "extents (objects above " + human_bytes(max_small_size) +
         " and those aligned beyond 64 bytes, whole pages)\n";
  out += row("count", std::to_string(extents));
  out += row("bytes", human_bytes(s.extent_bytes));
  out += row("largest", human_bytes(largest_extent));
  out += "pageblocks by migratetype and use\n";
  {
    table t({"type", "free", "partial", "full"}, {false, true, true, true});
    for (const auto& [type, u] : uses)
      t.add({to_string(type), std::to_string(u.free), std::to_string(u.partial),
             std::to_string(u.full)});
    out += t.render();
  }
  out += "totals\n";
  out += row("allocated", human_bytes(s.allocated_bytes) + " in " +
                              std::to_string(s.allocated_objects) + " objects");
  out += row("in slabs", human_bytes(s.slab_bytes));
  out += row("in extents", human_bytes(s.extent_bytes));
  out += row("movable", std::to_string(s.movable_objects) + " objects, " +
                            human_bytes(s.movable_bytes) + " in " +
                            human_bytes(s.movable_slab_bytes) + " of slabs");
  for (unsigned t = 0; t < s.allocated_bytes_by_migratetype.size(); ++t)
    if (s.allocated_bytes_by_migratetype[t] != 0)
      out += row(std::string("in ") + to_string(static_cast<daxalloc::migratetype>(t)),
                 human_bytes(s.allocated_bytes_by_migratetype[t]) + " (allocated, in " +
                     to_string(static_cast<daxalloc::migratetype>(t)) + " pageblocks)");
  out += row("usable", human_bytes(s.usable_bytes));
  out += row("free", human_bytes(s.free_bytes));
  out += row("largest free", human_bytes(s.largest_free_bytes));
  out += row("fragmentation", percent(s.fragmentation));
  // (A volatile count since open: this read-only open aligned nothing.)
  out += row("alignment waste", human_bytes(s.alignment_waste_bytes) + " since open");
  print(out);
  return exit_ok;
}

// -- map --

int run_map(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  std::optional<std::uint64_t> only;
  if (const auto text = a.value("section")) {
    only = parse_uint(*text);
    if (!only) throw usage_error("invalid --section '" + *text + "' (a section number)");
  }
  heap h = heap::open_read_only(path, open_options(a));
  const heap_layout geo = h.layout();
  auto sections = present_sections(h);
  const std::vector<region_info> regions = h.regions();
  h.close();
  // The node of the region a section lies in (the heap's own below the
  // added ones): "?" when none is known.
  const auto node_of = [&](std::uint64_t offset) {
    int node = regions.front().node;
    for (const region_info& r : regions)
      if (r.offset != 0 && offset >= r.offset && offset < r.offset + r.size) node = r.node;
    return node;
  };
  if (only) {
    if (*only >= geo.nr_sections)
      throw error(errc::invalid_argument, path + ": section " + std::to_string(*only) +
                                              " is beyond the heap's " +
                                              std::to_string(geo.nr_sections) + " sections");
    std::erase_if(sections, [&](const section_view& s) { return s.info.number != *only; });
    if (sections.empty())
      throw error(errc::not_present,
                  path + ": section " + std::to_string(*only) + " has no present subsection");
  }
  const auto line_of = [](const section_view& s) {
    std::string chars;
    for (const auto& pb : s.pageblocks) chars += pageblock_char(pb);
    return chars;
  };

  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field("section_size", geo.section_size)
        .field("pageblock_size", pageblock_size)
        .key("legend")
        .begin_object();
    for (const auto& [c, meaning] : map_legend) w.field(std::string(1, c), meaning);
    w.end_object().key("sections").begin_array();
    for (const auto& s : sections) {
      w.begin_object()
          .field("nr", s.info.number)
          .field("start", s.info.offset)
          .field("node", node_of(s.info.offset))
          .field("map", line_of(s));
      w.key("types").begin_array(true);
      for (const auto& pb : s.pageblocks) w.value(pb.present ? to_string(pb.type) : "absent");
      w.end_array().key("allocated_pages").begin_array(true);
      for (const auto& pb : s.pageblocks) w.value(pb.allocated_pages);
      w.end_array().end_object();
    }
    w.end_array().end_object();
    print(w.str());
    return exit_ok;
  }

  constexpr std::size_t per_line = 64;  // 128 MiB per line
  std::string out =
      path + ": one character per " + human_bytes(pageblock_size) + " pageblock, one line per " +
      human_bytes(std::min<std::uint64_t>(geo.section_size, per_line * pageblock_size)) + "\n";
  table t({"section", "node", "start", "pageblocks"}, {true, true, true, false});
  std::map<char, std::uint64_t> counts;
  for (const auto& s : sections) {
    const std::string chars = line_of(s);
    const int node = node_of(s.info.offset);
    for (char c : chars) ++counts[c];
    for (std::size_t at = 0; at < chars.size(); at += per_line)
      t.add({at ? "" : std::to_string(s.info.number),
             at ? "" : (node < 0 ? "?" : std::to_string(node)),
             hex(s.info.offset + at * pageblock_size), chars.substr(at, per_line)});
  }
  out += t.render();
  out += "legend\n";
  for (const auto& [c, meaning] : map_legend)
    if (counts.count(c) || std::strchr("#UML-.", c))
      out += "  " + std::string(1, c) + "  " + meaning +
             (counts.count(c) ? " (" + std::to_string(counts[c]) + ")" : "") + "\n";
  print(out);
  return exit_ok;
}

// -- check --

int run_check(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  std::vector<std::string> problems;
  bool opened = false, unclean = false, unsafe = false;
  recovery_plan recovery;
  std::vector<bad_block> bad;
  {
    progress p("checking " + path);
    try {
      heap h = heap::open_read_only(path, open_options(a));
      opened = true;
      unclean = h.stats().unclean_shutdown;
      unsafe = h.unsafe_shutdown();
      recovery = h.pending_recovery();
      problems = h.check();
      bad = h.bad_blocks();
    } catch (const error& e) {
      // A heap that open refuses as corrupt (or meets a media error in) is
      // a finding of the check; any other failure (no such file, busy,
      // newer format) is an error.
      if (e.code_value() != errc::corrupt && e.code_value() != errc::media_error) throw;
      problems.push_back(e.what());
    }
  }
  // A bad block is a finding until a repair clears it.
  for (const bad_block& b : bad) problems.push_back(bad_block_text(b));
  const bool sound = problems.empty();
  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field("consistent", sound)
        .field("opened", opened)
        .field("unclean_shutdown", unclean)
        .field("unsafe_shutdown", unsafe);
    write_recovery(w, recovery);
    write_bad_blocks(w, bad);
    w.key("problems").begin_array();
    for (const auto& p : problems) w.value(p);
    w.end_array().end_object();
    print(w.str());
    return sound ? exit_ok : exit_failed;
  }
  std::string out;
  if (unclean)
    out += path + ": was not closed cleanly; the next read-write open recovers it" +
           (recovery.empty() ? "" : ":") + "\n";
  if (unsafe)
    out += path +
           ": the DIMMs lost power while it was open (unsafe shutdown, accepted): data "
           "made durable before it may be lost\n";
  for (const auto& step : recovery.steps) out += "  would " + step + "\n";
  if (sound) {
    out += path + ": consistent\n";
  } else {
    out += path + ": " + std::to_string(problems.size()) +
           (problems.size() == 1 ? " problem" : " problems") +
           (opened ? "" : " (the heap cannot be opened)") + "\n";
    for (const auto& p : problems) out += "  " + p + "\n";
  }
  print(out);
  return sound ? exit_ok : exit_failed;
}

// -- repair --

int run_repair(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  heap_open_options o = open_options(a);
  o.repair = true;
  std::optional<heap> h;
  std::vector<std::string> problems;
  {
    progress p("repairing " + path);
    h.emplace(heap::open(path, o));
    problems = h->check();
  }
  const auto outcome = h->outcome();
  const auto& repairs = h->repairs();
  const bool sound = problems.empty();
  if (json) {
    json_writer w;
    w.begin_object().field("path", path).field("outcome", to_string(outcome)).key("repairs");
    w.begin_array();
    for (const auto& r : repairs) w.value(r);
    w.end_array();
    write_bad_blocks(w, h->bad_blocks());
    w.field("consistent", sound).key("problems").begin_array();
    for (const auto& p : problems) w.value(p);
    w.end_array().end_object();
    print(w.str());
    return sound ? exit_ok : exit_failed;
  }
  std::string out = path + ": " + to_string(outcome);
  if (outcome == open_outcome::recovered) out += " (not closed cleanly; recovery ran)";
  out += "\n";
  for (const auto& r : repairs) out += "  " + r + "\n";
  out += sound ? path + ": consistent\n" : path + ": still inconsistent:\n";
  for (const auto& p : problems) out += "  " + p + "\n";
  print(out);
  return sound ? exit_ok : exit_failed;
}

// -- grow and shrink --

// The end of the heap's own present memory: below the regions added to it
// (which sit at the top of its range).
std::uint64_t present_end(const heap& h, const std::vector<section_view>& sections) {
  std::uint64_t limit = UINT64_MAX;
  for (const region_info& r : h.regions())
    if (r.offset != 0) limit = std::min(limit, r.offset);
  std::uint64_t end = 0;
  for (const auto& r : present_ranges(sections))
    if (r.end <= limit) end = r.end;
  return end;
}

int run_compact(const parsed_args& a, bool json, bool trim);

int run_region(const parsed_args& a, bool json, bool add) {
  const std::string path = a.positionals[0], member = a.positionals[1];
  heap h = heap::open(path, open_options(a));
  int node = -1;
  if (const auto text = a.value("node")) {
    const auto v = parse_uint(*text);
    if (!v || *v > 1023)
      throw usage_error("invalid --node '" + *text + "' (a NUMA node number, 0..1023)");
    node = static_cast<int>(*v);
  }
  if (add)
    (void)h.add_region(member, size_option(a, "size", false), node);
  else
    h.remove_region(member);
  const std::vector<region_info> regions = h.regions();
  h.close();
  if (json) {
    json_writer w;
    w.begin_object().field("path", path).field(add ? "added" : "removed", member);
    write_regions(w, regions);
    w.end_object();
    print(w.str());
    return exit_ok;
  }
  std::string out =
      (add ? "added " : "removed ") + member + (add ? " to " : " from ") + path + "\n";
  for (const region_info& r : regions)
    out += row(r.offset == 0 ? "regions" : "",
               r.path.string() + "  " + span_text(r.offset, r.offset + r.size) + ", node " +
                   (r.node < 0 ? "unknown" : std::to_string(r.node)));
  print(out);
  return exit_ok;
}

int run_hotplug(const parsed_args& a, bool json, bool grow) {
  const std::string path = a.positionals[0];
  if (!grow && !a.value("by")) return run_compact(a, json, true);  // shrink to what is live
  const std::uint64_t by = size_option(a, "by", true);
  if (by % pageblock_size)
    throw usage_error("--by " + human_bytes(by) +
                      " is not a multiple of 2 MiB (the subsection size)");
  heap h = heap::open(path, open_options(a));
  const std::uint64_t end = present_end(h, present_sections(h));
  std::uint64_t start = end;
  if (grow) {
    h.hot_add(end, by);
  } else {
    if (by >= end)
      throw error(errc::in_use, path + ": cannot remove " + human_bytes(by) + ": only " +
                                    human_bytes(end) + " present, head included");
    start = end - by;
    h.hot_remove(start, by);
  }
  const heap_stats s = h.stats();
  const auto ranges = present_ranges(present_sections(h));
  h.close();

  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field(grow ? "added" : "removed", true)
        .field("start", start)
        .field("length", by)
        .field("present_bytes", s.present_bytes)
        .field("usable_bytes", s.usable_bytes)
        .field("free_bytes", s.free_bytes)
        .key("ranges")
        .begin_array();
    for (const auto& r : ranges)
      w.begin_object(true).field("start", r.start).field("length", r.end - r.start).end_object();
    w.end_array().end_object();
    print(w.str());
    return exit_ok;
  }
  std::string out = (grow ? "grew " : "shrank ") + path + " by " + human_bytes(by) + ": " +
                    (grow ? "hot-added " : "hot-removed ") + span_text(start, start + by) + "\n";
  out += row("present", human_bytes(s.present_bytes) + " (" + human_bytes(s.usable_bytes) +
                            " usable, " + human_bytes(s.free_bytes) + " free)");
  for (std::size_t i = 0; i < ranges.size(); ++i)
    out += row(i ? "" : "ranges", span_text(ranges[i].start, ranges[i].end));
  print(out);
  return exit_ok;
}

// -- compact --

// compact, and with trim (shrink without --by) the free top of the heap
// hot-removed after it.
int run_compact(const parsed_args& a, bool json, bool trim) {
  const std::string path = a.positionals[0];
  heap h = heap::open(path, open_options(a));
  const heap_stats before = h.stats();
  const compact_result r = h.compact();
  const std::uint64_t trimmed = trim ? h.trim() : 0;
  const heap_stats after = h.stats();
  h.close();
  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path)
        .field("objects_moved", r.objects_moved)
        .field("bytes_moved", r.bytes_moved)
        .field("objects_pinned", r.objects_pinned)
        .field("objects_kept", r.objects_kept)
        .field("slabs_released", r.slabs_released)
        .field("bytes_released", r.bytes_released)
        .field("seconds", r.seconds)
        .field("largest_free_before", before.largest_free_bytes)
        .field("largest_free_after", after.largest_free_bytes)
        .field("free_bytes", after.free_bytes)
        .field("movable_objects", after.movable_objects)
        .field("trimmed_bytes", trimmed)
        .field("present_bytes", after.present_bytes)
        .end_object();
    print(w.str());
    return exit_ok;
  }
  std::string out = "compacted " + path + "\n";
  out += row("moved",
             std::to_string(r.objects_moved) + " movable objects, " + human_bytes(r.bytes_moved));
  if (r.objects_kept != 0)
    out += row("kept", std::to_string(r.objects_kept) +
                           " whose owner does not refer to them (daxalloc check lists them)");
  out += row("released",
             std::to_string(r.slabs_released) + " slabs, " + human_bytes(r.bytes_released));
  out += row("largest free", human_bytes(before.largest_free_bytes) + " -> " +
                                 human_bytes(after.largest_free_bytes) + " (of " +
                                 human_bytes(after.free_bytes) + " free)");
  if (trim)
    out += row("trimmed", human_bytes(trimmed) + " hot-removed from the top; present " +
                              human_bytes(before.present_bytes) + " -> " +
                              human_bytes(after.present_bytes));
  print(out);
  return exit_ok;
}

// -- rm --

// -- upgrade --

// Converts a format 2, 3 or 4 heap in place (heap::upgrade: crash-safe, new
// superblocks last), under the heap's exclusive lock; then opens it, as
// check does, to show the result is sound.
int run_upgrade(const parsed_args& a, bool json) {
  const std::string path = a.positionals[0];
  const std::vector<std::string> steps = heap::upgrade(path);
  std::vector<std::string> problems;
  {
    auto h = heap::open(path);
    problems = h.check();
  }
  const bool sound = problems.empty();
  if (json) {
    json_writer w;
    w.begin_object().field("path", path).field("upgraded", !steps.empty()).key("steps");
    w.begin_array();
    for (const auto& s : steps) w.value(s);
    w.end_array().field("consistent", sound).key("problems").begin_array();
    for (const auto& p : problems) w.value(p);
    w.end_array().end_object();
    print(w.str());
    return sound ? exit_ok : exit_failed;
  }
  std::string out = path + (steps.empty() ? ": already format version " +
                                                std::to_string(heap::format_version()) + "\n"
                                          : ": upgraded\n");
  for (const auto& s : steps) out += "  " + s + "\n";
  out += sound ? path + ": consistent\n" : path + ": inconsistent:\n";
  for (const auto& p : problems) out += "  " + p + "\n";
  print(out);
  return sound ? exit_ok : exit_failed;
}

int run_rm(const parsed_args& a, bool json) {
  const std::filesystem::path path = a.positionals[0];
  const bool force = a.flag("force");
  const bool devdax = !heap::remove(path, force);
  if (json) {
    json_writer w;
    w.begin_object()
        .field("path", path.string())
        .field("removed", !devdax)
        .field("invalidated", devdax)
        .end_object();
    print(w.str());
    return exit_ok;
  }
  print(devdax ? "invalidated the heap on " + path.string() +
                     " (devdax: both superblocks cleared; the device and its data remain)\n"
               : "removed " + path.string() + "\n");
  return exit_ok;
}

// ---- the command table ----

const std::vector<command>& commands() {
  static const std::vector<command> table = {
      {{"devices",
        {},
        "[--json]",
        "list DAX devices (devdax, fsdax, raw pmem)",
        "List the DAX devices of this machine: devdax devices through libdaxctl, fsdax\n"
        "and raw pmem namespaces through libndctl, with their size, mapping alignment,\n"
        "NUMA node and region. A machine without any prints an empty list (exit 0).\n",
        {json_option}},
       run_devices},
      {{"create",
        {"PATH"},
        "PATH --size SIZE [--max-size SIZE] [--regions PATH,...] [--region-size SIZE]\n"
        "     [--section-bits N] [--mode MODE] [--force] [--json]",
        "create a heap on a file or a devdax device",
        "Create a heap on PATH: a new file (on a DAX file system, or any file for\n"
        "emulated pmem) or a devdax device (/dev/daxX.Y). SIZE bytes are present\n"
        "at once (rounded up to 2 MiB); the address range reserved for online growth\n"
        "is --max-size (default 1 TiB; a devdax device: the device). Sizes take K, M,\n"
        "G or T suffixes (powers of 1024). An existing file is never overwritten.\n"
        "--regions adds more files or devdax devices to the heap (heap::add_region),\n"
        "each at the top of the range, with its own NUMA node; --max-size must leave\n"
        "room for them (whole 1 GiB spans each).\n",
        {{"size", "SIZE", "bytes present after create (required)"},
         {"regions", "PATH,...", "more files or devdax devices in the heap"},
         {"region-size", "SIZE", "size of each new file of --regions (default: its size)"},
         {"max-size", "SIZE", "address range reserved for growth (default 1 TiB)"},
         {"section-bits", "N", "27..30: 128 MiB .. 1 GiB sections (default 27)"},
         {"mode", "MODE", "auto, cache-flush or msync: how stores become durable"},
         {"force", "", "devdax: replace a heap that is already on the device"},
         json_option}},
       run_create},
      {{"info",
        {"PATH"},
        "PATH [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "geometry, present memory, memmap placement, usage, shutdown state",
        "Show what a heap is made of: format version, UUID, whether the last user\n"
        "closed it cleanly (as found before this open), the geometry (section,\n"
        "subsection and memmap span sizes, address range, head), present sections\n"
        "and subsections, where each span's memmap block lies, pageblocks per\n"
        "migratetype, and usage (present, usable, metadata, allocated, free,\n"
        "largest free, fragmentation).\n"
        "\n"
        "The heap is opened read-only (a shared lock): nothing is written, and a heap\n"
        "left by a crash shows the recovery a read-write open would run. A heap open\n"
        "read-write in another process is refused (busy).\n",
        {accept_option, region_paths_option, json_option}},
       run_info},
      {{"stats",
        {"PATH"},
        "PATH [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "allocator statistics: size classes, extents, pageblocks, totals",
        "Show the allocators' view of a heap: per size class the slabs, allocated\n"
        "objects and capacity; the large objects (extents); pageblocks per\n"
        "migratetype that are free, partly or wholly used; and the totals.\n",
        {accept_option, region_paths_option, json_option}},
       run_stats},
      {{"map",
        {"PATH"},
        "PATH [--section N] [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "one character per pageblock, one line per section",
        "Draw the heap as /proc/pagetypeinfo would: one character per 2 MiB\n"
        "pageblock by migratetype and use, one line per present section (128 MiB of\n"
        "address space per line), with a legend. With --json: the present sections,\n"
        "each with its pageblock types and allocated pages.\n",
        {{"section", "N", "only section N"}, accept_option, region_paths_option, json_option}},
       run_map},
      {{"check",
        {"PATH"},
        "PATH [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "verify every invariant of a heap; exit 1 if any fails",
        "Open the heap read-only (nothing is written; after a crash, the state\n"
        "before recovery, and the recovery it would run) and check every\n"
        "invariant of its persistent and rebuilt state: superblocks, section map,\n"
        "memmap placement, pageblock flags, extents and slabs, the root object.\n"
        "Prints each problem; exits 0 when there is none, 1 otherwise. A heap that\n"
        "cannot be opened because it is corrupt is reported as a problem.\n",
        {accept_option, region_paths_option, json_option}},
       run_check},
      {{"repair",
        {"PATH"},
        "PATH [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "quarantine damaged pageblocks so that a heap opens again",
        "Open the heap in repair mode. Recovery runs as on every open (redo lanes,\n"
        "hotplug intent, root, free lists: all rebuilt from the media). Each\n"
        "pageblock whose page descriptors or slab bitmap are inconsistent is then\n"
        "quarantined: its migratetype becomes isolate, durably, and it is never\n"
        "allocated from again; its bytes stay as they are, so nothing published is\n"
        "deleted (objects in it can be read but no longer freed). Prints the outcome\n"
        "(clean, recovered or repaired), each repair, and the check that follows.\n"
        "Damage elsewhere (superblocks, section map, root slot, redo lanes) is\n"
        "reported as an error, as check does, and nothing is quarantined. Exit 0\n"
        "when the heap is consistent afterwards, 1 otherwise.\n",
        {accept_option, region_paths_option, json_option}},
       run_repair},
      {{"add-region",
        {"PATH", "REGION"},
        "PATH REGION [--size SIZE] [--node N] [--accept-unsafe-shutdown] [--region-paths PATH,...] "
        "[--json]",
        "add a file or devdax device to the heap (heap::add_region)",
        "Add REGION, a file (created with SIZE when missing) or a devdax device, to\n"
        "the heap at PATH: it is labelled, recorded in the superblock with its node,\n"
        "and its memory is hot-added. All or nothing across a crash. The node is the\n"
        "one sysfs gives for the device behind REGION; --node sets it where sysfs\n"
        "knows none (a file on tmpfs or a disk, emulated NUMA).\n",
        {{"size", "SIZE", "size of a new file (default: the file's or device's size)"},
         {"node", "N", "the region's NUMA node when sysfs knows none"},
         accept_option,
         region_paths_option,
         json_option}},
       [](const parsed_args& a, bool json) { return run_region(a, json, true); }},
      {{"remove-region",
        {"PATH", "REGION"},
        "PATH REGION [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "remove an added region from the heap (heap::remove_region)",
        "Remove the added region REGION: its memory is hot-removed (movable objects\n"
        "migrate out; allocations refuse it: in_use), then its record goes.\n",
        {accept_option, region_paths_option, json_option}},
       [](const parsed_args& a, bool json) { return run_region(a, json, false); }},
      {{"grow",
        {"PATH"},
        "PATH --by SIZE [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "hot-add SIZE bytes after the highest present memory",
        "Hot-add the SIZE bytes that follow the highest present subsection of the\n"
        "heap's own file or device, below any added region (SIZE a multiple of 2 MiB). The first "
        "add into a new 1 GiB memmap span needs room\n"
        "for that span's memmap block as well. Nothing moves; a heap open in another\n"
        "process is refused (busy): grow it there with heap::hot_add().\n",
        {{"by", "SIZE", "bytes to add, a multiple of 2 MiB (required)"},
         accept_option,
         region_paths_option,
         json_option}},
       [](const parsed_args& a, bool json) { return run_hotplug(a, json, true); }},
      {{"shrink",
        {"PATH"},
        "PATH [--by SIZE] [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "hot-remove the last SIZE bytes of present memory, or what is free at the top",
        "Hot-remove the last SIZE bytes of present memory (SIZE a multiple of 2 MiB).\n"
        "Refused when any of it holds an allocation, when it holds the memmap of\n"
        "memory that stays, or when the heap is open in another process (busy).\n"
        "Without --by: compact the movable objects (as compact does), then hot-remove\n"
        "the free memory at the top of the heap (heap::trim). The storage is given\n"
        "back to the file system where it allows.\n",
        {{"by", "SIZE", "bytes to remove, a multiple of 2 MiB"},
         accept_option,
         region_paths_option,
         json_option}},
       [](const parsed_args& a, bool json) { return run_hotplug(a, json, false); }},
      {{"compact",
        {"PATH"},
        "PATH [--accept-unsafe-shutdown] [--region-paths PATH,...] [--json]",
        "move movable objects down and release the slabs they leave",
        "Compact the heap's movable objects (heap::compact): per size class, move the\n"
        "objects of the highest slabs into free slots of the lowest, one committed\n"
        "batch per object, and release the slabs that empty, so that free memory\n"
        "coalesces into whole pageblocks. Ordinary objects never move. The heap must\n"
        "not be open in another process (busy): run heap::compact() there.\n",
        {accept_option, region_paths_option, json_option}},
       [](const parsed_args& a, bool json) { return run_compact(a, json, false); }},
      {{"upgrade",
        {"PATH"},
        "PATH [--json]",
        "convert a heap of format version 2 to 6 to this version",
        "Convert a heap made by a daxalloc of format version 2 to 6 in place (a\n"
        "format 6 heap only gets new superblocks). From 2, 3 and 4:\n"
        "page descriptors get this format's check bits, slabs keep their bitmap\n"
        "encoding under their legacy class (format 2 and 3 slabs get the digest of\n"
        "their bitmap; new slabs are format 5's, with check bits in every bitmap\n"
        "word), a format 2 heap's root and name-table slots their second copies,\n"
        "and the superblocks the new version, written last. A crash during the\n"
        "upgrade leaves the old format (run upgrade again) or the new one.\n"
        "Refused for a format 2 or 3 heap that was not closed cleanly (a pending\n"
        "hotplug intent or a published batch in a redo lane: a format 4 heap's are\n"
        "recovered by the next open), when a format 3 slab bitmap changed since\n"
        "its clean close, and for other versions. Then opens the heap and checks\n"
        "it, as check does.\n",
        {json_option}},
       run_upgrade},
      {{"rm",
        {"PATH"},
        "PATH [--force] [--json]",
        "remove a heap (devdax: invalidate it)",
        "Remove the heap file PATH after checking that it is a daxalloc heap (any\n"
        "other file is refused) and that nobody has it open. On a devdax device the\n"
        "heap's superblocks are cleared instead, which needs --force.\n",
        {{"force", "", "devdax: clear the superblocks"}, json_option}},
       run_rm},
  };
  return table;
}

std::string general_help() {
  std::string out =
      "usage: daxalloc COMMAND [ARGS] [--json]\n"
      "       daxalloc COMMAND --help\n"
      "\n"
      "Create, inspect and change daxalloc persistent-memory heaps.\n"
      "\n"
      "commands:\n";
  table t({"", ""});
  for (const auto& c : commands()) t.add({std::string(c.spec.name), std::string(c.spec.summary)});
  const std::string rows = t.render();
  out += rows.substr(rows.find('\n') + 1);  // without the empty header row
  out +=
      "\n"
      "Sizes take K, M, G or T suffixes (powers of 1024). Exit status: 0 success,\n"
      "1 the operation failed or check found problems, 2 bad command line.\n"
      "See docs/cli.md.\n";
  return out;
}

std::string hint_for(std::string_view command, errc code) {
  if (code == errc::busy)
    return command == "grow" || command == "shrink"
               ? "the heap is open in another process: grow or shrink it there "
                 "(heap::hot_add / heap::hot_remove), or close it first"
               : "the heap is open in another process: close it there first";
  if (code == errc::already_exists && command == "create")
    return "remove the old heap first (daxalloc rm PATH), or open it";
  if (code == errc::unsafe_shutdown)
    return "see what the heap holds with `daxalloc check --accept-unsafe-shutdown PATH`; "
           "then open it with --accept-unsafe-shutdown (heap_open_options::"
           "accept_unsafe_shutdown), which checks the whole heap after recovery";
  if (code == errc::in_use && command == "shrink")
    return "free the allocations at the end of the heap first, or shrink by less";
  return {};
}

int report_error(std::string_view command, const error& e, bool json) {
  const std::string hint = hint_for(command, e.code_value());
  std::fprintf(stderr, "daxalloc %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               e.what());
  if (!hint.empty()) std::fprintf(stderr, "hint: %s\n", hint.c_str());
  if (json) {
    json_writer w;
    w.begin_object()
        .key("error")
        .begin_object()
        .field("command", command)
        .field("code", to_string(e.code_value()));
    w.field("message", e.what());
    if (!hint.empty()) w.field("hint", hint);
    w.end_object().end_object();
    print(w.str());
  }
  return exit_failed;
}

int usage_failure(std::string_view command, const std::string& message) {
  if (command.empty()) {
    std::fprintf(stderr, "daxalloc: %s\nTry 'daxalloc --help'.\n", message.c_str());
  } else {
    std::fprintf(stderr, "daxalloc %.*s: %s\nTry 'daxalloc %.*s --help'.\n",
                 static_cast<int>(command.size()), command.data(), message.c_str(),
                 static_cast<int>(command.size()), command.data());
  }
  return exit_usage;
}

int main_impl(std::vector<std::string> args) {
  if (args.empty()) {
    std::fputs(general_help().c_str(), stderr);
    return exit_usage;
  }
  const std::string name = args[0];
  if (name == "-h" || name == "--help" || (name == "help" && args.size() == 1)) {
    print(general_help());
    return exit_ok;
  }
  if (name == "--version" || name == "version") {
    print("daxalloc " DAXALLOC_VERSION_STRING " (heap format version " +
          std::to_string(heap::format_version()) + ")\n");
    return exit_ok;
  }
  const auto find = [](std::string_view n) -> const command* {
    for (const auto& c : commands())
      if (c.spec.name == n) return &c;
    return nullptr;
  };
  if (name == "help") {  // daxalloc help COMMAND
    if (args.size() > 2) return usage_failure("", "help takes one command name");
    const command* c = find(args[1]);
    if (c == nullptr) return usage_failure("", "unknown command '" + args[1] + "'");
    print(command_help(c->spec));
    return exit_ok;
  }
  const command* c = find(name);
  if (c == nullptr) {
    return usage_failure("", name.starts_with('-') ? "unknown option '" + name + "'"
                                                   : "unknown command '" + name + "'");
  }
  bool json = false;
  try {
    const parsed_args parsed = parse_args(c->spec, std::span<const std::string>(args).subspan(1));
    if (parsed.help) {
      print(command_help(c->spec));
      return exit_ok;
    }
    json = parsed.flag("json");
    return c->run(parsed, json);
  } catch (const usage_error& e) {
    return usage_failure(name, e.what());
  } catch (const error& e) {
    return report_error(name, e, json);
  } catch (const std::filesystem::filesystem_error& e) {
    // std::filesystem failures (rm) carry errno; report them like the library's.
    return report_error(name, error(errc::io_error, e.what()), json);
  }
}

}  // namespace
}  // namespace daxalloc::cli

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const int status = daxalloc::cli::main_impl(std::move(args));
  if (std::fflush(stdout) != 0) {  // a full disk or a closed pipe must not look like success
    std::perror("daxalloc: writing the output");
    return daxalloc::cli::exit_failed;
  }
  return status;
}
