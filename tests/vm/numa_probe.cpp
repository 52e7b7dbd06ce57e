// One heap over two devdax devices on two NUMA nodes (the two-node VM run,
// tests/vm/run-vm-numa.sh): the heap made on node 0's device, node 1's added
// online while the heap is in use, and where threads on each node's CPU
// allocate; then its removal; then what placement costs.
//
//   numa_probe heap DEV0 DEV1    create on DEV0, add DEV1 during a churn,
//                                placement by CPU and by prefer_node, the
//                                fallback to node 0 when node 1 is full, reopen
//   numa_probe remove DEV0 DEV1  free what is in DEV1, remove_region, reopen
//   numa_probe bench DEV0 DEV1 [RUNS OPS OBJECTS]
//                                add DEV1 again, then allocation throughput of
//                                a thread on each CPU, its arena local or remote
//
// DEV0 must be on node 0 and DEV1 on node 1, and CPU i on node i: the guest
// steps pick the devices by their numa_node, and the probe checks all three
// (list_devices(), regions(), getcpu). Every object the probe allocates is
// stamped with a pattern keyed by its heap offset, so any run can verify
// every object of the heap (for_each_object) without a list of its own.
// Every check prints "numa_probe: ok: ..." or "numa_probe: FAIL: ...", each
// mode ends with a PASS line, and the exit status is 1 on a failure.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daxalloc/devices.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/introspection.hpp"

namespace {

using daxalloc::errc;
using daxalloc::heap;
using daxalloc::region_info;

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;
// The heap's range: its own device below 1 GiB, DEV1's spans at the top.
constexpr std::size_t heap_range = 4 * GiB;
// The heap's own memory on DEV0 (1006 MiB as a devdax device of the 1 GiB
// NVDIMM): create's size is the memory after the head (10 MiB here), so not
// the whole device; the rest of it is room the fallback does not need.
constexpr std::size_t heap_size = 768 * MiB;
// A stamp covers an object's first and last stamp_bytes: enough to show a
// misplaced or overlapping object without writing a whole 1 MiB extent.
constexpr std::size_t stamp_bytes = 4 * KiB;

class checker {
 public:
  bool expect(bool ok, const std::string& what, const std::string& found = "") {
    ++checks_;
    if (ok) {
      std::printf("numa_probe: ok: %s\n", what.c_str());
    } else {
      ++failures_;
      std::printf("numa_probe: FAIL: %s%s%s\n", what.c_str(), found.empty() ? "" : "; found ",
                  found.c_str());
    }
    std::fflush(stdout);
    return ok;
  }
  [[nodiscard]] int failures() const { return failures_; }
  [[nodiscard]] int checks() const { return checks_; }

 private:
  int checks_ = 0;
  int failures_ = 0;
};

void say(const std::string& line) {
  std::printf("numa_probe: %s\n", line.c_str());
  std::fflush(stdout);
}

std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The stamped words of an object of `size` bytes: the first and the last
// stamp_bytes (one range when the object is smaller than two).
template <class F>
void for_stamped_words(std::size_t size, F&& word) {
  const std::size_t words = size / 8, edge = stamp_bytes / 8;
  for (std::size_t i = 0; i < words; ++i) {
    if (i == edge && words > 2 * edge) i = words - edge;
    word(i);
  }
}

void stamp(const heap& h, void* p) {
  auto* w = static_cast<std::uint64_t*>(p);
  const std::uint64_t seed = h.offset_of(p);
  for_stamped_words(h.usable_size(p), [&](std::size_t i) { w[i] = pattern_word(seed, i); });
}

bool stamped(const heap& h, const void* p, std::size_t size) {
  const auto* w = static_cast<const std::uint64_t*>(p);
  const std::uint64_t seed = h.offset_of(p);
  bool same = true;
  for_stamped_words(size, [&](std::size_t i) { same = same && w[i] == pattern_word(seed, i); });
  return same;
}

// The index in `regions` of the region holding p, or -1.
int region_of(const heap& h, const std::vector<region_info>& regions, const void* p) {
  const std::uint64_t at = h.offset_of(p);
  for (std::size_t i = 0; i < regions.size(); ++i)
    if (regions[i].offset <= at && at < regions[i].offset + regions[i].size)
      return static_cast<int>(i);
  return -1;
}

// Allocated objects per region, and those whose stamp is wrong.
struct census {
  std::vector<std::size_t> objects;
  std::size_t outside = 0, damaged = 0;
  std::uint64_t first_damaged = 0;
  [[nodiscard]] std::size_t total() const {
    std::size_t n = outside;
    for (std::size_t k : objects) n += k;
    return n;
  }
  [[nodiscard]] std::string text() const {
    std::string s;
    for (std::size_t i = 0; i < objects.size(); ++i)
      s += (i ? ", " : "") + std::to_string(objects[i]) + " in region " + std::to_string(i);
    return s + ", " + std::to_string(outside) + " outside, " + std::to_string(damaged) + " damaged";
  }
};

// Every allocated object of the heap, its stamp checked.
census take_census(const heap& h) {
  const auto regions = h.regions();
  census c;
  c.objects.assign(regions.size(), 0);
  h.for_each_object([&](const daxalloc::object_info& o) {
    const void* p = h.at(o.offset);
    const int r = region_of(h, regions, p);
    if (r < 0)
      ++c.outside;
    else
      ++c.objects[static_cast<std::size_t>(r)];
    if (!stamped(h, p, o.size) && c.damaged++ == 0) c.first_damaged = o.offset;
  });
  return c;
}

bool verify_all(checker& c, const heap& h, const std::string& when) {
  const census n = take_census(h);
  say("objects " + when + ": " + n.text());
  return c.expect(
      n.damaged == 0 && n.outside == 0,
      "every object's stamp is intact " + when + " (" + std::to_string(n.total()) + " objects)",
      n.text() + "; first damaged at heap offset " + std::to_string(n.first_damaged));
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += (s.empty() ? "" : "; ") + l;
  return s;
}

void expect_sound(checker& c, const heap& h, const std::string& when) {
  const auto problems = h.check();
  c.expect(problems.empty(), "heap::check() finds nothing " + when, joined(problems));
}

void print_regions(const heap& h) {
  for (const region_info& r : h.regions())
    say("region: " + r.path.string() + ", kind " + daxalloc::to_string(r.kind) + ", device " +
        (r.device.empty() ? "(none)" : r.device) + ", node " + std::to_string(r.node) +
        ", heap offset " + std::to_string(r.offset / MiB) + " MiB, " +
        std::to_string(r.size / MiB) + " MiB, align " + std::to_string(r.align / KiB) + " KiB");
}

int node_of_this_cpu() {
  unsigned cpu = 0, node = 0;
  return getcpu(&cpu, &node) == 0 ? static_cast<int>(node) : -1;
}

// Runs fn on a new thread bound to `cpu` before it does anything else, so
// that its first allocation (which picks its arena by the CPU's node)
// happens there. Rethrows what fn threw.
template <class F>
void on_cpu(int cpu, F&& fn) {
  std::exception_ptr failure;
  std::thread t([&] {
    try {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (const int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set); e != 0)
        throw std::runtime_error("pthread_setaffinity_np(CPU " + std::to_string(cpu) +
                                 "): " + std::strerror(e));
      fn();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure) std::rethrow_exception(failure);
}

// The probe's expectations of the machine: two nodes, CPU i and device i on node i.
void check_machine(checker& c, const std::string& dev0, const std::string& dev1) {
  for (const auto& d : daxalloc::list_devices()) {
    say("device: " + d.name + " " + d.path.string() + ", " + d.mode + ", " +
        std::to_string(d.size / MiB) + " MiB, align " + std::to_string(d.align / KiB) +
        " KiB, node " + std::to_string(d.numa_node) + ", region " + std::to_string(d.region_id));
    for (int node : {0, 1})
      if (d.path == (node == 0 ? dev0 : dev1))
        c.expect(d.numa_node == node,
                 "list_devices(): " + d.path.string() + " is on node " + std::to_string(node),
                 "node " + std::to_string(d.numa_node));
  }
  for (int cpu : {0, 1}) {
    int node = -1;
    on_cpu(cpu, [&] { node = node_of_this_cpu(); });
    c.expect(node == cpu,
             "a thread bound to CPU " + std::to_string(cpu) + " runs on node " +
                 std::to_string(cpu) + " (getcpu)",
             "node " + std::to_string(node));
  }
}

// Objects of several sizes: slab classes, page extents, a run of pageblocks.
struct object_mix {
  std::size_t size;
  int count;
};
constexpr object_mix mix[] = {{64, 200}, {4 * KiB, 50}, {64 * KiB, 10}, {MiB, 4}, {4 * MiB, 1}};

std::vector<void*> allocate_mix(heap& h) {
  std::vector<void*> out;
  for (const object_mix& m : mix)
    for (int i = 0; i < m.count; ++i) {
      out.push_back(h.allocate(m.size));
      stamp(h, out.back());
    }
  return out;
}

std::string size_text(std::size_t bytes) {
  return bytes >= MiB && bytes % MiB == 0   ? std::to_string(bytes / MiB) + " MiB"
         : bytes >= KiB && bytes % KiB == 0 ? std::to_string(bytes / KiB) + " KiB"
                                            : std::to_string(bytes) + " B";
}

// Whether all of `objects` lie in region `want`; if not, where they are and
// which sizes (usable sizes) the misplaced ones have.
bool all_in(checker& c, const heap& h, const std::vector<void*>& objects, int want,
            const std::string& what) {
  const auto regions = h.regions();
  std::vector<std::size_t> where(regions.size() + 1, 0);
  std::vector<std::pair<std::size_t, std::size_t>> misplaced;  // size, count
  for (void* p : objects) {
    const int r = region_of(h, regions, p);
    ++where[static_cast<std::size_t>(r + 1)];
    if (r == want) continue;
    const std::size_t size = h.usable_size(p);
    auto it = std::find_if(misplaced.begin(), misplaced.end(),
                           [&](const auto& m) { return m.first == size; });
    if (it == misplaced.end()) it = misplaced.insert(misplaced.end(), {size, 0});
    ++it->second;
  }
  std::string found;
  for (std::size_t i = 1; i < where.size(); ++i)
    found += (i > 1 ? ", " : "") + std::to_string(where[i]) + " in region " +
             std::to_string(i - 1) + " (node " + std::to_string(regions[i - 1].node) + ")";
  if (where[0]) found += ", " + std::to_string(where[0]) + " outside every region";
  if (!misplaced.empty()) {
    found += "; the others by size:";
    for (const auto& [size, count] : misplaced)
      found += " " + std::to_string(count) + " x " + size_text(size);
  }
  return c.expect(where[static_cast<std::size_t>(want + 1)] == objects.size(),
                  what + ": all " + std::to_string(objects.size()) + " objects in region " +
                      std::to_string(want),
                  found);
}

// ---- heap: create, add online, placement, fallback, reopen -----------------

// Allocates, stamps, checks and frees until told to stop: the heap is in
// use while node 1's device is added.
struct churn {
  std::atomic<bool> stop{false};
  std::atomic<bool> started{false};
  std::size_t rounds = 0, damaged = 0;
  std::vector<void*> kept;  // left allocated for the later verifies

  void run(heap& h) {
    std::vector<void*> live;
    while (!stop.load(std::memory_order_acquire) || rounds < 100) {
      const std::size_t size = std::size_t{64} << (rounds % 7);  // 64 B .. 4 KiB
      live.push_back(h.allocate(size));
      stamp(h, live.back());
      if (live.size() > 64) {
        void* p = live[rounds % live.size()];
        if (!stamped(h, p, h.usable_size(p))) ++damaged;
        live.erase(live.begin() + static_cast<long>(rounds % live.size()));
        h.deallocate(p);
      }
      ++rounds;
      started.store(true, std::memory_order_release);
    }
    kept = std::move(live);
  }
};

int heap_mode(checker& c, const std::string& dev0, const std::string& dev1) {
  const int failures_before = c.failures();
  check_machine(c, dev0, dev1);
  {  // As large as the device, in a range beyond it (whose memmap area
     // takes more of the device): refused, saying how much fits.
    daxalloc::heap_options o;
    o.max_size = heap_range;
    std::ifstream size_file("/sys/bus/dax/devices/" +
                            std::filesystem::path(dev0).filename().string() + "/size");
    std::uint64_t device = 0;
    size_file >> device;
    o.size = device ? device : GiB;
    o.overwrite = true;
    std::string what;
    try {
      (void)heap::create(dev0, o);
    } catch (const daxalloc::error& e) {
      what = e.what();
      say(what);
      c.expect(
          e.code() == daxalloc::errc::too_large && what.find("ask for at most") != what.npos,
          "a heap as large as the device, in a 4 GiB range, is too_large, with the size that fits",
          what);
    }
    if (what.empty()) c.expect(false, "a heap as large as the device is refused", "it was made");
    // The size it names fits.
    if (const auto at = what.find("ask for at most "); at != what.npos) {
      o.size = std::stoull(what.substr(at + 16)) * MiB;
      std::string made = "made";
      try {
        heap(heap::create(dev0, o)).close();
      } catch (const daxalloc::error& e) {
        made = e.what();
      }
      c.expect(made == "made", "a heap of the size the refusal named is made", made);
    }
  }
  {
    daxalloc::heap_options o;
    o.size = heap_size;
    o.max_size = heap_range;
    o.overwrite = true;
    heap h = heap::create(dev0, o);
    auto regions = h.regions();
    print_regions(h);
    c.expect(regions.size() == 1 && regions[0].node == 0,
             "the heap on " + dev0 + " is one region, of node 0 (sysfs)",
             std::to_string(regions.size()) + " regions, node " + std::to_string(regions[0].node));

    // In use before and during the add: objects written first, and a thread
    // that allocates and frees on CPU 0 while the device is added.
    std::vector<void*> before = allocate_mix(h);
    churn user;
    std::thread churner([&] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(0, &set);
      pthread_setaffinity_np(pthread_self(), sizeof set, &set);
      user.run(h);
    });
    while (!user.started.load(std::memory_order_acquire)) std::this_thread::yield();
    const auto add_start = std::chrono::steady_clock::now();
    const region_info added = h.add_region(dev1);
    const double add_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - add_start).count();
    const std::size_t rounds_at_add = user.rounds;
    user.stop.store(true, std::memory_order_release);
    churner.join();
    say("add_region(" + dev1 + ") took " + std::to_string(add_seconds) + " s; the churn thread " +
        "made " + std::to_string(rounds_at_add) + " rounds by then, " +
        std::to_string(user.rounds) + " in all");
    print_regions(h);
    regions = h.regions();
    c.expect(
        added.node == 1 && regions.size() == 2 && regions[1].node == 1 && regions[1].path == dev1,
        "add_region(" + dev1 + ") while in use: regions() has it, of node 1 (sysfs)",
        "node " + std::to_string(added.node) + ", " + std::to_string(regions.size()) + " regions");
    c.expect(user.damaged == 0, "the churn thread found its objects intact across the add",
             std::to_string(user.damaged) + " damaged");
    all_in(c, h, before, 0, "objects allocated before the add");
    verify_all(c, h, "after the add");
    // Not a check: a thread keeps the arena it had before the add, and the
    // add may give that arena to node 1 (arenas are spread over the nodes).
    const auto churn_where = take_census(h);
    say("the churn thread (CPU 0, arena picked before the add) left " +
        std::to_string(user.kept.size()) +
        " objects; the heap's objects now: " + churn_where.text());

    // Placement by the CPU's node, and by prefer_node.
    for (int cpu : {0, 1}) {
      std::vector<void*> got;
      on_cpu(cpu, [&] { got = allocate_mix(h); });
      all_in(c, h, got, cpu, "a thread bound to CPU " + std::to_string(cpu));
    }
    {
      std::vector<void*> got;
      on_cpu(0, [&] {
        h.prefer_node(1);
        got = allocate_mix(h);
      });
      all_in(c, h, got, 1, "a thread bound to CPU 0 after prefer_node(1)");
    }
    try {
      h.prefer_node(7);
      c.expect(false, "prefer_node(7) is errc::not_found (no memory of node 7)", "no error");
    } catch (const daxalloc::error& e) {
      c.expect(e.code_value() == errc::not_found,
               "prefer_node(7) is errc::not_found (no memory of node 7)", e.what());
    }

    // Node 1 full: its threads' allocations go to node 0 instead of failing.
    // "Full" for 1 MiB extents: the first one that lands elsewhere; the
    // extents after it must all be node 0's. Small objects may still find
    // room in node 1 (its slabs, the pages left between the extents):
    // where they land is printed, not checked.
    std::vector<void*> fill, spilled, small_after;
    on_cpu(1, [&] {
      const std::size_t limit = regions[1].size / MiB + 64;
      while (fill.size() < limit && spilled.empty()) {
        void* p = h.allocate(MiB, std::nothrow);
        if (!p) break;
        stamp(h, p);
        (region_of(h, regions, p) == 1 ? fill : spilled).push_back(p);
      }
      for (int i = 0; i < 15 && !spilled.empty(); ++i) {
        spilled.push_back(h.allocate(MiB));
        stamp(h, spilled.back());
      }
      for (int i = 0; i < 200 && !spilled.empty(); ++i) {
        small_after.push_back(h.allocate(4 * KiB));
        stamp(h, small_after.back());
      }
    });
    std::size_t small_in_node1 = 0;
    for (void* p : small_after) small_in_node1 += region_of(h, regions, p) == 1;
    say("node 1 filled from CPU 1: " + std::to_string(fill.size()) + " extents of 1 MiB in " +
        "region 1 of " + std::to_string(regions[1].size / MiB) + " MiB before the first " +
        "elsewhere; then 4 KiB objects: " + std::to_string(small_in_node1) + " of " +
        std::to_string(small_after.size()) + " still in region 1");
    c.expect(!spilled.empty() && fill.size() * MiB >= regions[1].size - 64 * MiB,
             "CPU 1's 1 MiB extents fill node 1's region (all but 64 MiB) before going elsewhere",
             std::to_string(fill.size()) + " MiB in it");
    all_in(c, h, spilled, 0,
           "CPU 1's 1 MiB extents once node 1 has none (fallback to node 0, no failure)");
    verify_all(c, h, "after the fill");
    expect_sound(c, h, "after the fill");
    h.close();

    // Reopened: the regions and their nodes are recorded; every object there.
    h = heap::open(dev0);
    c.expect(h.outcome() == daxalloc::open_outcome::clean, "reopened cleanly",
             daxalloc::to_string(h.outcome()));
    regions = h.regions();
    c.expect(regions.size() == 2 && regions[0].node == 0 && regions[1].node == 1 &&
                 regions[1].path == dev1,
             "after reopen regions() has both devices, nodes 0 and 1");
    verify_all(c, h, "after reopen");
    // The fill and the spill go; the rest stays for the remove step.
    for (void* p : fill) h.deallocate(p);
    for (void* p : spilled) h.deallocate(p);
    for (void* p : small_after) h.deallocate(p);
    expect_sound(c, h, "after freeing the fill");
    const census left = take_census(h);
    say("left for the remove step: " + left.text());
  }
  if (c.failures() != failures_before) return 1;
  say("PASS heap over two nodes: " + dev1 + " added in use, placement by CPU and prefer_node, " +
      "fallback to node 0, reopened");
  return 0;
}

// ---- remove ------------------------------------------------------------------

int remove_mode(checker& c, const std::string& dev0, const std::string& dev1) {
  const int failures_before = c.failures();
  {
    heap h = heap::open(dev0);
    print_regions(h);
    auto regions = h.regions();
    if (!c.expect(regions.size() == 2 && regions[1].path == dev1, "the heap has its two regions",
                  std::to_string(regions.size())))
      return 1;
    verify_all(c, h, "at open");
    try {
      h.remove_region(dev1);
      c.expect(false, "remove_region with objects in it is errc::in_use", "it went on");
    } catch (const daxalloc::error& e) {
      c.expect(e.code_value() == errc::in_use, "remove_region with objects in it is errc::in_use",
               e.what());
    }
    std::vector<std::uint64_t> in_dev1;
    h.for_each_object([&](const daxalloc::object_info& o) {
      if (region_of(h, regions, h.at(o.offset)) == 1) in_dev1.push_back(o.offset);
    });
    for (std::uint64_t at : in_dev1) h.deallocate(h.at(at));
    say("freed the " + std::to_string(in_dev1.size()) + " objects in " + dev1);
    h.remove_region(dev1);
    regions = h.regions();
    c.expect(regions.size() == 1, "remove_region(" + dev1 + "): one region left",
             std::to_string(regions.size()));
    verify_all(c, h, "after remove_region");
    expect_sound(c, h, "after remove_region");
    h.close();
    h = heap::open(dev0);
    c.expect(h.regions().size() == 1, "reopened with one region",
             std::to_string(h.regions().size()));
    verify_all(c, h, "after reopen");
    expect_sound(c, h, "after reopen");
  }
  if (c.failures() != failures_before) return 1;
  say("PASS remove_region of " + dev1 + ": refused while in use, done once empty, reopened");
  return 0;
}

// ---- bench -------------------------------------------------------------------

// Up to 64 KiB an object is a slot of a slab; above, an extent of whole
// pages from the page allocator's zone: both paths are measured. 128 KiB
// churns a twentieth of the operations (each writes 32 times 4 KiB).
struct workload {
  const char* name;
  std::size_t size;
  bool round;  // allocate `objects` of them, then free them all; else churn
  std::size_t divisor = 1;
};
constexpr workload workloads[] = {
    {"churn 64 B", 64, false},
    {"churn 4 KiB", 4 * KiB, false},
    {"churn 128 KiB", 128 * KiB, false, 20},
    {"round 64 B", 64, true},
    {"round 4 KiB", 4 * KiB, true},
};

struct bench_settings {
  int runs = 5;
  std::size_t ops = 20000;       // allocate + write + free, per churn run
  std::size_t objects = 100000;  // allocated, then freed, per round run
};

struct measurement {
  double seconds = 0;
  std::size_t ops = 0;
  std::size_t checked = 0, misplaced = 0;  // objects checked, and those not on the arena's node
};

// One run on a new thread bound to `cpu`, its arena of node `node` (the
// CPU's own unless prefer_node moves it). Timed: the allocations, the writes
// and the frees; not: the thread, its cache and the placement checks.
measurement measure(heap& h, int cpu, int node, const workload& w, const bench_settings& s) {
  measurement m;
  const auto regions = h.regions();
  on_cpu(cpu, [&] {
    if (node != cpu) h.prefer_node(node);
    h.deallocate(h.allocate(w.size));  // the thread's cache and arena
    using clock = std::chrono::steady_clock;
    if (!w.round) {
      const auto start = clock::now();
      const std::size_t ops = s.ops / w.divisor;
      for (std::size_t i = 0; i < ops; ++i) {
        void* p = h.allocate(w.size);
        std::memset(p, static_cast<int>(i), w.size);
        if (i % 64 == 0) {
          ++m.checked;
          m.misplaced += region_of(h, regions, p) != node;
        }
        h.deallocate(p);
      }
      m.seconds = std::chrono::duration<double>(clock::now() - start).count();
      m.ops = ops;
      return;
    }
    std::vector<void*> objects(s.objects);
    auto start = clock::now();
    for (std::size_t i = 0; i < s.objects; ++i) {
      objects[i] = h.allocate(w.size);
      std::memset(objects[i], static_cast<int>(i), w.size);
    }
    m.seconds = std::chrono::duration<double>(clock::now() - start).count();
    for (void* p : objects) m.misplaced += region_of(h, regions, p) != node;
    m.checked = objects.size();
    start = clock::now();
    for (void* p : objects) h.deallocate(p);
    m.seconds += std::chrono::duration<double>(clock::now() - start).count();
    m.ops = s.objects;
  });
  return m;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bench_mode(checker& c, const std::string& dev0, const std::string& dev1,
               const bench_settings& s) {
  const int failures_before = c.failures();
  heap h = heap::open(dev0);
  // Added again after the remove step took it out: its old label is overwritten.
  const region_info added = h.add_region(dev1);
  c.expect(added.node == 1 && h.regions().size() == 2,
           "add_region(" + dev1 + ") again after its removal: node 1",
           "node " + std::to_string(added.node));
  print_regions(h);
  say("bench: emulated NUMA under TCG: no real distance, the ratio shows the placement's own "
      "cost, not memory latency");
  say("bench: median of " + std::to_string(s.runs) + " runs; churn: " + std::to_string(s.ops) +
      " x (allocate, write the object, free), 128 KiB " + std::to_string(s.ops / 20) +
      " x; round: allocate and write " + std::to_string(s.objects) +
      " objects, then free them all by pointer; Mops/s");
  // Placement is numa-heap's to check; here it is counted, so that the
  // numbers can be read: "on node" is the share of the objects checked
  // (every one of a round, every 64th of a churn) that were on the node
  // their arena serves.
  std::size_t checked = 0, misplaced = 0;
  for (int cpu : {0, 1}) {
    const int local = cpu, remote = 1 - cpu;
    for (const workload& w : workloads) {
      std::vector<double> rate[2];  // local, remote
      std::size_t placed[2] = {0, 0}, seen[2] = {0, 0};
      for (int run = 0; run < s.runs; ++run)
        for (int which : {0, 1}) {  // interleaved, so that machine noise hits both alike
          const measurement m = measure(h, cpu, which == 0 ? local : remote, w, s);
          seen[which] += m.checked;
          placed[which] += m.checked - m.misplaced;
          rate[which].push_back(static_cast<double>(m.ops) / m.seconds / 1e6);
        }
      checked += seen[0] + seen[1];
      misplaced += seen[0] + seen[1] - placed[0] - placed[1];
      const double l = median(rate[0]), r = median(rate[1]);
      char line[240];
      std::snprintf(line, sizeof line,
                    "bench: cpu %d %-13s local (node %d) %7.4f Mops/s, %3.0f%% on node;  remote "
                    "(node %d) %7.4f Mops/s, %3.0f%% on node;  remote/local %.2f",
                    cpu, w.name, local, l, 100.0 * static_cast<double>(placed[0]) / seen[0], remote,
                    r, 100.0 * static_cast<double>(placed[1]) / seen[1], r / l);
      say(line);
    }
  }
  say("bench: placement: " + std::to_string(misplaced) + " of " + std::to_string(checked) +
      " objects checked were not on their arena's node" +
      (misplaced ? " (a placement problem: see numa-heap)" : ""));
  expect_sound(c, h, "after the bench");
  if (c.failures() != failures_before) return 1;
  say("PASS bench: node-local and remote allocation throughput measured from both CPUs");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: numa_probe heap|remove DEV0 DEV1 | numa_probe bench DEV0 DEV1 [RUNS OPS OBJECTS]";
  if (argc < 4 || (std::string(argv[1]) != "bench" && argc != 4) || argc > 7) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string mode = argv[1], dev0 = argv[2], dev1 = argv[3];
  bench_settings s;
  if (argc > 4) s.runs = std::atoi(argv[4]);
  if (argc > 5) s.ops = std::strtoull(argv[5], nullptr, 10);
  if (argc > 6) s.objects = std::strtoull(argv[6], nullptr, 10);
  checker c;
  int rc = 2;
  try {
    if (mode == "heap") rc = heap_mode(c, dev0, dev1);
    if (mode == "remove") rc = remove_mode(c, dev0, dev1);
    if (mode == "bench") rc = bench_mode(c, dev0, dev1, s);
  } catch (const std::exception& e) {
    c.expect(false, std::string("unexpected exception: ") + e.what());
    rc = 1;
  }
  if (rc == 2) std::fprintf(stderr, "%s\n", usage.c_str());
  std::printf("numa_probe %s: %d of %d checks failed\n", mode.c_str(), c.failures(), c.checks());
  return c.failures() ? 1 : rc;
}
