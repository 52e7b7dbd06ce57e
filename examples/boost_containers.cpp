// Boost containers in the heap: a boost::container::map<string, vector<u64>>
// and a boost::unordered_map<u64, string> built with daxalloc::allocator,
// found again by another process.
//
//   boost_containers write PATH    build it (a fresh heap)
//   boost_containers read PATH     reopen, verify and print it
//   boost_containers [PATH]        both, reopening in between
#include <unistd.h>
#include <boost/container/map.hpp>
#include <boost/container/string.hpp>
#include <boost/container/vector.hpp>
#include <boost/unordered_map.hpp>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <string>

#include "daxalloc/allocator.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"

namespace {

template <class T>
using alloc = daxalloc::allocator<T>;
using text = boost::container::basic_string<char, std::char_traits<char>, alloc<char>>;
using numbers = boost::container::vector<std::uint64_t, alloc<std::uint64_t>>;
using table =
    boost::container::map<text, numbers, std::less<text>, alloc<std::pair<const text, numbers>>>;

using index =
    boost::unordered_map<std::uint64_t, text, boost::hash<std::uint64_t>,
                         std::equal_to<std::uint64_t>, alloc<std::pair<const std::uint64_t, text>>>;

struct root {
  boost::interprocess::offset_ptr<table> entries;
  boost::interprocess::offset_ptr<index> names;  // i * 1000 -> "key-i"
};

constexpr int nr_keys = 200;

void write(const std::string& path) {
  std::filesystem::remove(path);
  daxalloc::heap_options o;
  o.size = 64 << 20;
  auto h = daxalloc::heap::create(path, o);
  auto* r = h.root<root>();
  auto* t = ::new (h.allocate(sizeof(table))) table(alloc<char>(h));
  for (int i = 0; i < nr_keys; ++i) {
    numbers values(alloc<std::uint64_t>{h});
    for (int j = 0; j <= i; ++j) values.push_back(static_cast<std::uint64_t>(i) * 1000 + j);
    t->emplace(text(("key-" + std::to_string(i)).c_str(), alloc<char>(h)), std::move(values));
  }
  auto* n = ::new (h.allocate(sizeof(index))) index(alloc<char>(h));
  for (const auto& [key, values] : *t) n->emplace(values.front(), key);
  // The containers' own stores are plain: make the whole heap durable, then
  // publish them with 8-byte stores.
  h.persist().persist(h.base(), h.size());
  r->entries = t;
  r->names = n;
  h.persist().persist(r, sizeof *r);
  std::printf("wrote %zu keys into %s (pid %d)\n", t->size(), path.c_str(),
              static_cast<int>(getpid()));
}

bool read(const std::string& path) {
  auto h = daxalloc::heap::open(path);
  const table& t = *h.root<root>()->entries;
  std::uint64_t values = 0;
  bool ok = t.size() == nr_keys;
  for (int i = 0; i < nr_keys && ok; ++i) {
    auto it = t.find(text(("key-" + std::to_string(i)).c_str(), alloc<char>(h)));
    ok = it != t.end() && it->second.size() == static_cast<std::size_t>(i) + 1 &&
         it->second.back() == static_cast<std::uint64_t>(i) * 1000 + i;
    if (ok) values += it->second.size();
  }
  const index& n = *h.root<root>()->names;
  ok = ok && n.size() == nr_keys;
  for (int i = 0; i < nr_keys && ok; ++i) {
    auto it = n.find(static_cast<std::uint64_t>(i) * 1000);
    ok = it != n.end() && it->second == ("key-" + std::to_string(i)).c_str();
  }
  std::printf("read back %zu keys, %" PRIu64
              " values and %zu hashed names from %s (pid %d, "
              "heap at %p): %s\n",
              t.size(), values, n.size(), path.c_str(), static_cast<int>(getpid()),
              static_cast<void*>(h.base()), ok ? "intact" : "WRONG");
  return ok && h.check().empty();
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 2 ? argv[1] : "both";
  const std::string path = argc > 2   ? argv[2]
                           : argc > 1 ? argv[1]
                                      : "/dev/shm/daxalloc-boost-containers";
  if (mode == "write") return write(path), 0;
  if (mode == "read") return read(path) ? 0 : 1;
  write(path);
  return read(path) ? 0 : 1;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "boost_containers: %s\n", e.what());
  return 1;
}
