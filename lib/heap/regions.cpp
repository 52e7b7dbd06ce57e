// Several devices in one heap (format 8): the heap layer's side of the
// sparse model's members. The model maps, labels, records and adds a
// member's memory; here the allocators learn of that memory, and a
// removal first empties it as hot_remove does.
#include <string>

#include "daxalloc/error.hpp"
#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"
#include "platform/sysfs.hpp"

namespace daxalloc::detail {

const sparse::member_record& heap_impl::add_region(const std::filesystem::path& path,
                                                   std::uint64_t size) {
  refuse_if_read_only("add_region");
  const sparse::member_record& m = model_->add_member(path, {size, true});
  const std::uint64_t memory = m.offset + sparse::member_label_size,
                      length = m.size - sparse::member_label_size;
  small_.add_span(memory, length);
  pages_.add_span(memory, length);
  return m;
}

void heap_impl::remove_region(const std::filesystem::path& path) {
  refuse_if_read_only("remove_region");
  const auto members = model_->members();
  std::size_t index = members.size();
  for (std::size_t i = 0; i < members.size(); ++i)
    if (std::filesystem::path(members[i].path) == path) index = i;
  if (index == members.size())
    throw error(errc::not_found, model_->media().path().string() + ": remove_region: " +
                                     path.string() + " is not a region added to this heap");
  const sparse::member_record m = members[index];
  // Its memory goes as hot_remove takes it, one present run at a time.
  for (const auto& [at, length] :
       model_->subsection_runs(m.offset + sparse::member_label_size, m.offset + m.size))
    hot_remove(at, length);
  model_->remove_member(index);
}

}  // namespace daxalloc::detail

namespace daxalloc {
namespace {

region_info info_of(const detail::heap_impl& h, region_kind kind, const std::filesystem::path& path,
                    std::uint64_t offset, std::uint64_t size, std::uint64_t align, int node) {
  region_info info;
  info.kind = kind;
  info.path = path;
  info.offset = offset;
  info.size = size;
  info.align = align;
  info.node = node;
  if (kind != region_kind::anonymous) {
    const sysfs::backing_device dev = sysfs::backing_device_of(path);
    info.device = dev.name;
    if (dev.node >= 0) info.node = dev.node;
  }
  const detail::pin_totals pinned = h.pins_in(offset, size);
  info.pins = pinned.pins;
  info.pinned_objects = pinned.objects;
  return info;
}

}  // namespace

// The heap's own region first, then its members (the kernel's
// dev_pagemap of each).
std::vector<region_info> heap::regions() const {
  const detail::heap_impl& h = live();
  const region& r = h.model().media();
  std::vector<region_info> out{info_of(h, r.kind(), r.path(), 0, r.size(), r.align(), -1)};
  for (const sparse::member_record& m : h.model().members()) {
    const region_member* mapped = r.member_at(m.offset);
    out.push_back(info_of(h, mapped ? mapped->kind : static_cast<region_kind>(m.kind),
                          mapped ? mapped->path : std::filesystem::path(m.path), m.offset, m.size,
                          mapped ? mapped->align : 0, m.node));
  }
  return out;
}

region_info heap::add_region(const std::filesystem::path& path, std::uint64_t size) {
  const sparse::member_record& m = live().add_region(path, size);
  for (const region_info& info : regions())
    if (info.offset == m.offset) return info;
  return {};
}

void heap::remove_region(const std::filesystem::path& path) {
  live().remove_region(path);
}

}  // namespace daxalloc
