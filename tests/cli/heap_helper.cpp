// What the CLI test needs from a running program that uses a heap, which the
// tool itself never does: allocations to inspect, a heap held open by another
// process, and a heap left unclosed as after a crash.
//
//   heap_helper populate PATH   allocate small objects of several classes, page
//                               extents and a large extent, and a root; close
//   heap_helper fill PATH       allocate 1 MiB extents until the heap is full; close
//   heap_helper hold PATH       open the heap, print "ready", keep it open until
//                               stdin reaches end of file, then close it
//   heap_helper abandon PATH    open the heap, allocate, exit without closing
//   heap_helper movable PATH    allocate 20,000 movable objects of 100 bytes
//                               (owners in the root), free every other; close
//   heap_helper damage PATH     allocate a 300 KiB extent filled with 0x5a and
//                               write a stray page descriptor inside it, as a
//                               damaged medium would; close
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "heap/access.hpp"

namespace {

struct root_type {
  std::uint64_t objects;
};

int populate(daxalloc::heap& h) {
  h.root<root_type>()->objects = 0;
  std::uint64_t n = 0;
  for (std::size_t size : {16, 64, 200, 1000, 4096})
    for (int i = 0; i < 50; ++i, ++n) std::memset(h.allocate(size), 0xa5, size);
  for (int i = 0; i < 3; ++i, ++n) (void)h.allocate(100 * 1024);  // page extents
  (void)h.allocate(std::size_t{5} << 20);                         // a large extent
  ++n;
  h.root<root_type>()->objects = n;
  h.persist().persist(h.root<root_type>(), sizeof(root_type));
  std::printf("allocated %llu objects\n", static_cast<unsigned long long>(n));
  return 0;
}

int movable(daxalloc::heap& h) {
  constexpr std::size_t n = 20000;
  auto* owners = static_cast<daxalloc::pptr<char>*>(h.root(n * sizeof(daxalloc::pptr<char>)));
  for (std::size_t i = 0; i < n; ++i)
    (void)h.allocate_movable(owners[i], 100, [&](char* at) { std::memset(at, 0x3c, 100); });
  for (std::size_t i = 0; i < n; i += 2) h.free_clear(owners[i]);
  std::printf("%zu movable objects\n", n / 2);
  return 0;
}

int fill(daxalloc::heap& h) {
  std::uint64_t n = 0;
  while (h.allocate(std::size_t{1} << 20, std::nothrow) != nullptr) ++n;
  std::printf("allocated %llu MiB\n", static_cast<unsigned long long>(n));
  return 0;
}

int damage(daxalloc::heap& h) {
  constexpr std::size_t size = 300 * 1024;
  void* p = h.allocate(size);
  std::memset(p, 0x5a, size);
  h.persist().persist(p, size);
  auto& model = daxalloc::detail::internals(h).model();
  auto* tail = model.pfn_to_page(h.offset_of(p) / daxalloc::sparse::page_size + 3);
  tail->store(daxalloc::sparse::page_info(daxalloc::sparse::page_state::extent, 0, 1));
  h.persist().persist(tail, sizeof *tail);
  std::printf("damaged the extent at %llu\n", static_cast<unsigned long long>(h.offset_of(p)));
  return 0;
}

int hold(daxalloc::heap&) {
  std::printf("ready\n");
  std::fflush(stdout);
  char buf[64];
  while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: heap_helper populate|fill|hold|abandon|damage PATH\n");
    return 2;
  }
  const std::string what = argv[1];
  daxalloc::heap h = daxalloc::heap::open(argv[2]);
  if (what == "populate") return populate(h);
  if (what == "fill") return fill(h);
  if (what == "movable") return movable(h);
  if (what == "hold") return hold(h);
  if (what == "damage") return damage(h);
  if (what == "abandon") {
    (void)h.allocate(100);
    std::fflush(stdout);
    std::_Exit(0);  // as a crash: the heap stays marked open
  }
  std::fprintf(stderr, "heap_helper: unknown action %s\n", argv[1]);
  return 2;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "heap_helper: %s\n", e.what());
  return 1;
}
