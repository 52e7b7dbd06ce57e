// Several devices in one heap (format 8): the heap layer's side of the
// sparse model's members. The model maps, labels, records and adds a
// member's memory; here the allocators learn of that memory, and a
// removal first empties it as hot_remove does.
#include <algorithm>
#include <string>

#include "daxalloc/error.hpp"
#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"
#include "platform/sysfs.hpp"

namespace daxalloc::detail {

const sparse::member_record& heap_impl::add_region(const std::filesystem::path& path,
                                                   std::uint64_t size, int node) {
  refuse_if_read_only("add_region");
  const sparse::member_record& m = model_->add_member(path, {size, true, node});
  const std::uint64_t memory = m.offset + sparse::member_label_size,
                      length = m.size - sparse::member_label_size;
  small_.add_span(memory, length);
  pages_.add_span(memory, length);
  place_by_node();
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
  place_by_node();
}

// As the last placement saw them (other threads read these while a region
// comes or goes).
std::vector<heap_impl::node_range> heap_impl::placed_node_ranges() const {
  std::lock_guard lock(caches_mutex_);
  return node_ranges_;
}

// The node of each region's memory, as pageblock ranges; -1: unknown.
std::vector<heap_impl::node_range> heap_impl::node_ranges() const {
  std::vector<node_range> out;
  std::uint64_t own_end = model_->geo().max_range;
  for (const sparse::member_record& m : model_->members()) {
    own_end = std::min(own_end, m.offset);
    out.push_back({m.node, m.offset / sparse::subsection_size,
                   (m.offset + m.size) / sparse::subsection_size});
  }
  const region& r = model_->media();
  const int own = r.kind() == region_kind::anonymous ? -1 : sysfs::backing_device_of(r.path()).node;
  out.insert(out.begin(), {own, 0, own_end / sparse::subsection_size});
  return out;
}

// Arenas (and the page allocator's zones) spread over the nodes that have
// memory here, each preferring its node's regions, then the nearer nodes'.
// Memory of no known node counts as a node of its own (-1). With memory of
// one node only, arenas take any memory (arena_node_ empty).
void heap_impl::place_by_node() {
  const std::vector<node_range> ranges = node_ranges();
  std::vector<int> nodes;
  for (const node_range& r : ranges)
    if (std::find(nodes.begin(), nodes.end(), r.node) == nodes.end()) nodes.push_back(r.node);
  std::sort(nodes.begin(), nodes.end());
  sysfs::numa_topology topology = sysfs::read_numa_topology();
  auto placement = std::make_shared<alloc::node_placement>();
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> preferred(pages_.zones());
  if (nodes.size() > 1) {
    for (const node_range& r : ranges) placement->spans.push_back({r.first, r.end, r.node});
    for (unsigned a = 0; a < pages_.zones(); ++a) {
      placement->arena_node.push_back(nodes[a % nodes.size()]);
      for (const int n : memory_fallback(topology, nodes, placement->arena_node.back()))
        for (const node_range& r : ranges)
          if (r.node == n) preferred[a].emplace_back(r.first, r.end);
    }
  }
  std::lock_guard lock(caches_mutex_);
  node_ranges_ = ranges;
  arena_node_ = placement->arena_node;
  topology_ = std::move(topology);
  placement_generation_.fetch_add(1, std::memory_order_relaxed);  // threads pick again
  pages_.place(placement, preferred);
  small_.place(std::move(placement));
}

// The nodes with memory by distance from `node` (itself first); nodes the
// topology does not know (-1 among them) come last, in number order.
std::vector<int> heap_impl::memory_fallback(const sysfs::numa_topology& topology,
                                            const std::vector<int>& nodes, int node) {
  std::vector<int> order;
  for (const int n : topology.fallback_order(node))
    if (std::find(nodes.begin(), nodes.end(), n) != nodes.end()) order.push_back(n);
  if (std::find(order.begin(), order.end(), node) == order.end() &&
      std::find(nodes.begin(), nodes.end(), node) != nodes.end())
    order.insert(order.begin(), node);
  for (const int n : nodes)
    if (std::find(order.begin(), order.end(), n) == order.end()) order.push_back(n);
  return order;
}

// An arena of the node (round robin among its arenas), or of the nearest
// node with memory; under caches_mutex_.
unsigned heap_impl::arena_for(int node) {
  std::vector<int> nodes;
  for (const int n : arena_node_)
    if (std::find(nodes.begin(), nodes.end(), n) == nodes.end()) nodes.push_back(n);
  if (!nodes.empty()) {
    const int target = memory_fallback(topology_, nodes, node).front();
    for (unsigned k = 0; k < arena_node_.size(); ++k) {
      const unsigned a = (next_arena_ + k) % static_cast<unsigned>(arena_node_.size());
      if (arena_node_[a] == target) {
        next_arena_ = a + 1;
        return a;
      }
    }
  }
  return next_arena_++ % small_.arenas();
}

void heap_impl::prefer_node(int node) {
  bool known = false;
  for (const node_range& r : placed_node_ranges()) known = known || r.node == node;
  if (!known)
    throw error(errc::not_found, model_->media().path().string() + ": prefer_node(" +
                                     std::to_string(node) + "): no region of the heap is of it");
  thread_cache& c = give_back_for_node_change();
  std::lock_guard lock(caches_mutex_);
  c.node = node;
  c.arena = arena_for(node);
  c.placement = placement_generation_.load(std::memory_order_relaxed);
}

// The placement changed (a region came or went): an arena of the thread's
// node again, at its next refill or extent; the objects it cached go back
// first (some may be of another node now).
void heap_impl::follow_placement(thread_cache& c) {
  drain_cache(c);
  std::lock_guard lock(caches_mutex_);
  c.arena = arena_for(c.node);
  c.placement = placement_generation_.load(std::memory_order_relaxed);
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

region_info heap::add_region(const std::filesystem::path& path, std::uint64_t size, int node) {
  const sparse::member_record& m = live().add_region(path, size, node);
  for (const region_info& info : regions())
    if (info.offset == m.offset) return info;
  return {};
}

void heap::remove_region(const std::filesystem::path& path) {
  live().remove_region(path);
}

void heap::prefer_node(int node) {
  live().prefer_node(node);
}

}  // namespace daxalloc
