// Members (format 8): other files or devdax devices in one heap's range,
// as the kernel's sparse model holds the memory of several devices and
// nodes in one physical address space. Each member is a run of 1 GiB spans
// (memmap spans: a span's memory is of one device, so of one node) at the
// top of the range, stacked downwards in the order they are added; the
// heap's own file grows upwards from the bottom. A member's first 2 MiB
// hold its label; the rest is memory, added and removed as any span.
#include <algorithm>
#include <cstring>
#include <random>

#include "daxalloc/error.hpp"
#include "platform/sysfs.hpp"
#include "sparse/memory_model.hpp"
#include "sparse/superblock.hpp"

namespace daxalloc::sparse {
namespace {

std::string path_of(const member_record& m) {
  return std::string(m.path, strnlen(m.path, sizeof m.path));
}

// The label's problem as a member of `sb` described by `m`; empty if none.
std::string label_problem(const member_label& l, const superblock& sb, const member_record& m) {
  if (std::memcmp(l.magic, member_magic, sizeof l.magic) != 0) return "it has no region label";
  member_label sealed = l;
  member_label_seal(sealed);
  if (sealed.checksum != l.checksum) return "its region label fails its checksum";
  if (std::memcmp(l.heap_uuid, sb.uuid, sizeof sb.uuid) != 0)
    return "its label names another heap (a region of another heap, or of an older copy)";
  if (std::memcmp(l.uuid, m.uuid, sizeof m.uuid) != 0 || l.offset != m.offset || l.size != m.size)
    return "its label names another region of this heap (at " + hex(l.offset) +
           "): swapped with it?";
  return {};
}

}  // namespace

void memory_model::attach_members(const open_options& options) {
  const std::string where = region_.path().string() + ": ";
  for (std::uint32_t i = 0; i < super_.nr_members; ++i) {
    const member_record& m = super_.members[i];
    const std::filesystem::path path =
        i < options.member_paths.size() && !options.member_paths[i].empty()
            ? options.member_paths[i]
            : std::filesystem::path(path_of(m));
    // (Region 0 is the heap's own file: its members are regions 1 and on.)
    const std::string which =
        "region " + std::to_string(i + 1) + " (" + path.string() + ", at " + hex(m.offset) + ")";
    region_options ro;
    ro.read_only = region_.read_only();
    ro.exclusive = options.region.exclusive;
    ro.wait_for_lock = options.region.wait_for_lock;
    ro.mode = persist().mode();
    try {
      (void)region_.attach(path, m.offset, ro);
    } catch (const error& e) {
      if (e.code() == errc::not_found)
        throw error(errc::not_found,
                    where + which + " is missing (" + e.what() +
                        "); if it has another path now, give it (heap_open_options::region_paths)");
      throw error(static_cast<errc>(e.code().value()),
                  where + which + " cannot be mapped: " + e.what());
    }
    if (!mapped(m.offset, m.size))
      throw error(errc::corrupt, where + which + " is smaller than the " +
                                     std::to_string(m.size >> 20) + " MiB it had when added");
    bool unreadable = false;
    if (auto why = label_problem_of(i, unreadable); !why.empty())
      throw error(
          unreadable ? errc::media_error : errc::geometry_mismatch,
          where + which + " is not this heap's region " + std::to_string(i + 1) + ": " + why);
  }
}

std::string memory_model::label_problem_of(std::uint32_t i, bool& unreadable) const {
  const member_record& m = super_.members[i];
  member_label label{};
  unreadable = false;
  if (auto failure = reader_.copy(&label, base(), m.offset, sizeof label)) {
    unreadable = true;
    return "its label does not read: " + media::describe(*failure);
  }
  return label_problem(label, super_, m);
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> memory_model::subsection_runs(
    std::uint64_t from, std::uint64_t to, bool present) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  for (std::uint64_t at = from; at < to;) {
    if (subsection_present(at) != present) {
      at += subsection_size;
      continue;
    }
    std::uint64_t end = at;
    while (end < to && subsection_present(end) == present) end += subsection_size;
    runs.emplace_back(at, end - at);
    at = end;
  }
  return runs;
}

void memory_model::drop_member(std::uint32_t i) {
  const std::uint64_t offset = super_.members[i].offset;
  std::copy(super_.members + i + 1, super_.members + super_.nr_members, super_.members + i);
  super_.members[--super_.nr_members] = member_record{};
  region_.detach(offset);
}

void memory_model::member_problems(std::vector<std::string>& out) const {
  for (std::uint32_t i = 0; i < super_.nr_members; ++i) {
    const member_record& m = super_.members[i];
    const std::string which = "region " + std::to_string(i + 1) + " (" + path_of(m) + "): ";
    if (!mapped(m.offset, m.size)) {
      out.push_back(which + "not mapped whole");
      continue;
    }
    bool unreadable = false;
    if (auto why = label_problem_of(i, unreadable); !why.empty()) out.push_back(which + why);
    if (subsection_present(m.offset)) out.push_back(which + "its label's 2 MiB are present memory");
  }
}

// Adds and removals that a crash cut short, rolled forward: a member
// recorded as adding gets the memory not added yet (a committed intent was
// redone already) and goes online; one online with none of its memory
// present goes. A member found at another path than its record's gets the
// new one.
void memory_model::settle_members() {
  bool changed = false;
  for (std::uint32_t i = 0; i < super_.nr_members; ++i) {
    member_record& m = super_.members[i];
    const region_member* now = region_.member_at(m.offset);
    if (!region_.read_only() && now != nullptr && now->path.string() != path_of(m) &&
        now->path.string().size() < sizeof m.path) {
      std::memset(m.path, 0, sizeof m.path);
      std::memcpy(m.path, now->path.c_str(), now->path.string().size());
      changed = true;
    }
    if (m.state == member_online) {
      // A region with none of its memory present (a remove_region that a
      // crash cut short after its hot-remove) holds nothing: its removal
      // is finished here, as the add of one recorded as adding is below.
      if (!subsection_runs(m.offset + member_label_size, m.offset + m.size).empty()) continue;
      if (region_.read_only()) {
        pending_.push_back("finish removing region " + std::to_string(i + 1) + " (" + path_of(m) +
                           "): none of its memory is present");
        continue;
      }
      drop_member(i);
      changed = true;
      --i;
      continue;
    }
    if (region_.read_only()) {
      pending_.push_back("finish adding region " + std::to_string(i + 1) + " (" + path_of(m) + ")");
      continue;
    }
    std::lock_guard lock(hotplug_mutex_);
    for (const auto& [at, length] :
         subsection_runs(m.offset + member_label_size, m.offset + m.size, false))
      add_locked(at, length, std::nullopt);
    m.state = member_online;
    changed = true;
  }
  if (changed) {
    std::lock_guard lock(hotplug_mutex_);
    write_superblocks();
  }
}

const member_record& memory_model::add_member(const std::filesystem::path& path,
                                              const member_options& options) {
  refuse_if_read_only("add a region");
  std::lock_guard lock(hotplug_mutex_);
  const std::string what = region_.path().string() + ": add region " + path.string() + ": ";
  if (!geo_.memmap_area)
    throw error(errc::unsupported,
                what +
                    "the heap has no memmap area (upgraded from format 5 or older), and a "
                    "region's memmap lives in it");
  if (super_.nr_members == max_members)
    throw error(errc::too_large,
                what + "the heap has " + std::to_string(max_members) + " added regions already");
  if (path.string().size() >= sizeof(member_record::path))
    throw error(errc::invalid_argument, what + "the path is longer than " +
                                            std::to_string(sizeof(member_record::path) - 1) +
                                            " bytes");
  // What it is and how large, under its lock (released again: attach takes it anew).
  region_options ro;
  ro.create = options.create;
  ro.size = options.size;
  ro.size_only_if_created = true;
  ro.mode = persist().mode();
  std::uint64_t size = 0;
  bool created = false;
  {
    region probe = region::open(path, ro);
    size = align_down(probe.size(), subsection_size);
    created = probe.created();
  }
  try {
    if (size <= member_label_size)
      throw error(errc::too_small, what + "it holds " + std::to_string(size >> 20) +
                                       " MiB; a region needs its 2 MiB label and memory after it");
    // Where: below the lowest member (or the top of the range), whole spans.
    std::uint64_t top = geo_.max_range;
    for (const member_record& m : members()) top = std::min(top, m.offset);
    top = align_down(top, member_alignment);
    const std::uint64_t span = align_up(size, member_alignment);
    const std::uint64_t floor =
        align_up(std::max<std::uint64_t>(region_.size(), geo_.data_start()), member_alignment);
    if (span > top || top - span < floor)
      throw error(errc::out_of_space, what + "no room for " + std::to_string(span >> 30) +
                                          " GiB of spans in the heap's range of " +
                                          std::to_string(geo_.max_range >> 30) +
                                          " GiB above its own memory (" + hex(floor) +
                                          "); create the heap with a larger max_size");
    const std::uint64_t offset = top - span;
    if (const auto present = subsection_runs(offset, offset + size); !present.empty())
      throw error(errc::in_use,
                  what + "memory at " + hex(present.front().first) + " is present there");
    region_options attach = ro;
    attach.create = false;
    attach.size = 0;
    const region_member& mapped_member = region_.attach(path, offset, attach);
    bool recorded = false;
    try {
      // The label, durable before the record names it.
      member_record m{};
      m.offset = offset;
      m.size = size;
      std::random_device rd;
      for (auto& byte : m.uuid) byte = static_cast<std::uint8_t>(rd());
      m.node = options.node >= 0 ? options.node : sysfs::backing_device_of(path).node;
      m.kind = static_cast<std::uint32_t>(mapped_member.kind);
      m.state = member_adding;
      std::memcpy(m.path, path.c_str(), path.string().size());
      member_label label{};
      std::memcpy(label.magic, member_magic, sizeof label.magic);
      std::memcpy(label.heap_uuid, super_.uuid, sizeof label.heap_uuid);
      std::memcpy(label.uuid, m.uuid, sizeof m.uuid);
      label.offset = offset;
      label.size = size;
      member_label_seal(label);
      persist().memcpy_persist(base() + offset, &label, sizeof label);
      // The record (adding): from here the add happens, now or at the next
      // open (which finishes it).
      super_.members[super_.nr_members++] = m;
      write_superblocks();
      recorded = true;
      add_locked(offset + member_label_size, size - member_label_size,
                 created ? std::optional<bool>(true) : std::nullopt);
      super_.members[super_.nr_members - 1].state = member_online;
      write_superblocks();
    } catch (...) {
      if (!recorded) region_.detach(offset);
      throw;
    }
    return super_.members[super_.nr_members - 1];
  } catch (...) {
    // A file made by this call and never recorded goes again.
    if (created &&
        std::none_of(super_.members, super_.members + super_.nr_members,
                     [&](const member_record& m) { return path_of(m) == path.string(); }))
      std::filesystem::remove(path);
    throw;
  }
}

void memory_model::remove_member(std::size_t index) {
  refuse_if_read_only("remove a region");
  std::lock_guard lock(hotplug_mutex_);
  if (index >= super_.nr_members)
    throw error(errc::not_found,
                region_.path().string() + ": no region " + std::to_string(index + 1));
  const member_record& m = super_.members[index];
  if (const auto present = subsection_runs(m.offset, m.offset + m.size); !present.empty())
    throw error(errc::in_use, region_.path().string() + ": remove region " + path_of(m) +
                                  ": memory at " + hex(present.front().first) +
                                  " is still present (hot-remove it first)");
  drop_member(static_cast<std::uint32_t>(index));
  write_superblocks();
}

}  // namespace daxalloc::sparse
