// A tour of the heap on a DAX device or an emulated pmem file: create (or
// reopen) a heap, keep a durable list hanging off the typed root object,
// grow the heap online by hot-adding a span, allocate across sections,
// shrink it again, and print what the heap looks like.
//
//   heap_tour [PATH]    default: /dev/shm/daxalloc-demo; a devdax device or fsdax file works too
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

struct record {
  std::uint64_t next;  // offset of the next record, 0 at the end
  std::uint64_t run;
  char text[48];
};

struct demo_root {
  std::uint64_t runs;
  std::uint64_t head;  // offset of the newest record
};

const char* migratetype_name(unsigned t) {
  static const char* names[] = {"unmovable", "movable", "large", "metadata",
                                "?",         "isolate", "?",     "?"};
  return names[t & 7];
}
}  // namespace

int main(int argc, char** argv) try {
  const std::string path = argc > 1 ? argv[1] : "/dev/shm/daxalloc-demo";
  // Reopen what is there; create when there is no heap yet (a devdax device
  // always exists: it gets a heap when it holds none).
  daxalloc::heap_options o;
  o.size = 256 * MiB;
  o.max_size = 4096 * MiB;
  daxalloc::heap h = daxalloc::heap::open_or_create(path, o);
  const bool fresh = h.outcome() == daxalloc::open_outcome::created;
  std::printf("%s %s: %s region, persistence by %s, %zu MiB mapped%s\n",
              fresh ? "created" : "opened", path.c_str(), daxalloc::to_string(h.media().kind()),
              h.persist().name(), h.size() / MiB,
              h.stats().unclean_shutdown ? " (the last run did not close it: recovered)" : "");

  // The root survives restarts; each run adds a record to its durable list.
  auto* root = h.root<demo_root>();
  daxalloc::reset_this_thread_persist_counters();
  auto* r = static_cast<record*>(h.allocate(sizeof(record)));
  const auto alloc_fences = daxalloc::this_thread_persist_counters().fences;
  r->next = root->head;
  r->run = root->runs + 1;
  std::snprintf(r->text, sizeof r->text, "written by run %" PRIu64, r->run);
  h.persist().persist(r, sizeof *r);
  root->head = h.offset_of(r);  // 8-byte store: the list has the record or not
  h.persist().persist(&root->head, 8);
  root->runs = r->run;
  h.persist().persist(&root->runs, 8);
  std::printf("run %" PRIu64 ": allocate took %" PRIu64 " fence(s)%s; the list holds:", root->runs,
              alloc_fences, alloc_fences > 1 ? " (it also created the size class's slab)" : "");
  int shown = 0;
  for (std::uint64_t at = root->head; at && shown < 5; ++shown) {
    const auto* rec = static_cast<const record*>(h.at(at));
    std::printf(" [%s]", rec->text);
    at = rec->next;
  }
  std::printf("%s\n", shown == 5 ? " ..." : "");

  // Grow online: a new 1 GiB span (its memmap block in the memmap area
  // becomes present with it); then an object larger than a section, freed
  // again, and the span removed.
  const std::uint64_t span = 1024 * MiB;
  if (h.media().max_size() >= 2 * span) {
    h.hot_add(span, span);
    void* big = h.allocate(300 * MiB);
    std::printf(
        "hot-added [1 GiB, 2 GiB): allocated one 300 MiB object across three 128 MiB sections\n");
    h.deallocate(big);
    h.hot_remove(span, span);
    std::printf("freed it and hot-removed the span again\n");
  } else {
    std::printf("no room to grow: the %zu MiB device is smaller than 2 GiB\n",
                h.media().max_size() / MiB);
  }

  // Small objects of many sizes, with reservations that cost no fence.
  void* objects[64];
  for (int i = 0; i < 64; ++i) objects[i] = h.allocate(8u << (i % 12));
  daxalloc::reset_this_thread_persist_counters();
  auto reserved = h.reserve(4096);
  h.cancel(reserved);
  std::printf("reserve+cancel of 4 KiB: %" PRIu64 " fences\n",
              daxalloc::this_thread_persist_counters().fences);

  const auto s = h.stats();
  std::printf("present %" PRIu64 " MiB: usable %" PRIu64 " MiB, metadata %" PRIu64
              " MiB (the head, and 8 bytes of memmap per present 4 KiB page)\n",
              s.present_bytes / MiB, s.usable_bytes / MiB, s.metadata_bytes / MiB);
  std::printf("allocated %" PRIu64 " objects, %" PRIu64 " KiB; free %" PRIu64
              " MiB, largest free %" PRIu64 " MiB, fragmentation %.3f\n",
              s.allocated_objects, s.allocated_bytes / 1024, s.free_bytes / MiB,
              s.largest_free_bytes / MiB, s.fragmentation);
  std::printf("pageblocks by migratetype:");
  for (unsigned t = 0; t < 8; ++t)
    if (s.pageblocks_by_migratetype[t])
      std::printf(" %s %" PRIu64, migratetype_name(t), s.pageblocks_by_migratetype[t]);
  std::printf("\n");
  for (void* p : objects) h.deallocate(p);

  const auto problems = h.check();
  std::printf("heap check: %s\n", problems.empty() ? "sound" : problems.front().c_str());
  h.close();
  auto again = daxalloc::heap::open(path);
  std::printf("closed and reopened: %" PRIu64 " run(s) recorded\n", again.root<demo_root>()->runs);
  return problems.empty() ? 0 : 1;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "heap_tour: %s\n", e.what());
  return 1;
}
