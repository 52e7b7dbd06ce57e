// A tour of the bottom layer: map a DAX device or file, see what it is and how
// stores are made durable, write a record durably, reopen and read it back.
//
//   region_tour [PATH]    default: /dev/shm/daxalloc-region-tour (emulated pmem)
#include <cstdio>
#include <cstring>
#include <string>

#include "daxalloc/devices.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/region.hpp"

int main(int argc, char** argv) try {
  const std::string path = argc > 1 ? argv[1] : "/dev/shm/daxalloc-region-tour";
  constexpr std::size_t MiB = std::size_t{1} << 20;

  const auto devices = daxalloc::list_devices();
  std::printf("DAX devices on this machine: %zu\n", devices.size());
  for (const auto& d : devices)
    std::printf("  %s  %s  %llu bytes, align %llu\n", d.path.c_str(), d.mode.c_str(),
                static_cast<unsigned long long>(d.size), static_cast<unsigned long long>(d.align));

  const char record[] = "written with memcpy_persist";
  {
    daxalloc::region_options options;
    options.create = true;
    options.size = 4 * MiB;
    auto r = daxalloc::region::open(path, options);
    std::printf("mapped %s: %s, %zu MiB at %p, persistence by %s\n", path.c_str(),
                daxalloc::to_string(r.kind()), r.size() / MiB, static_cast<void*>(r.base()),
                r.persist().name());
    daxalloc::reset_this_thread_persist_counters();
    r.persist().memcpy_persist(r.base() + 4096, record, sizeof record);
    const auto c = daxalloc::this_thread_persist_counters();
    std::printf("durable write of %zu bytes: %llu cache lines flushed, %llu fence, %llu msync\n",
                sizeof record, static_cast<unsigned long long>(c.flushes),
                static_cast<unsigned long long>(c.fences),
                static_cast<unsigned long long>(c.msyncs));
  }
  auto again = daxalloc::region::open(path);
  const bool same = std::memcmp(again.base() + 4096, record, sizeof record) == 0;
  std::printf("reopened: record %s\n", same ? "read back intact" : "LOST");
  return same ? 0 : 1;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "region_tour: %s\n", e.what());
  return 1;
}
