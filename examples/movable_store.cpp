// A value store whose values are movable objects, compacted while it
// serves requests (heap::allocate_movable, heap::pin, heap::compact).
//
//   movable_store [PATH] [SECONDS]     default /dev/shm/daxalloc-movable-store, 2 s
//
// The root holds one pptr per key: the value's owner. Requests come from
// the main thread: put (allocate_movable into the key's empty slot: the
// value, its header and the slot in one batch), delete (free_clear: freed
// and nulled in one batch), get (pin the slot's value, read it, unpin).
// A replace is a delete then a put (two batches: after a crash the key holds
// the old value, no value, or the new one; an engine that needs more keeps
// two slots per key). A background thread runs compact() in 1 ms steps the
// whole time: the values move under the requests, which only ever reach
// them through their slots, and read them pinned.
//
// At the end it prints what compaction did, closes the heap, reopens it and
// checks every value against what it last put (exit 1 if one is wrong).
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"

namespace {

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::size_t nr_keys = 100'000;

struct value {
  std::uint64_t key, version;
  std::uint32_t length;
  char bytes[1];  // `length` bytes: what make() derives from key and version
};

struct store_root {
  daxalloc::pptr<value> slot[nr_keys];
};

char byte_of(std::uint64_t key, std::uint64_t version, std::size_t i) {
  return static_cast<char>('a' + (key * 31 + version * 7 + i) % 26);
}

bool intact(const value* v, std::uint64_t key, std::uint64_t version) {
  if (v == nullptr || v->key != key || v->version != version) return false;
  for (std::uint32_t i = 0; i < v->length; ++i)
    if (v->bytes[i] != byte_of(key, version, i)) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "/dev/shm/daxalloc-movable-store";
  const double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  std::vector<std::uint64_t> version(nr_keys, 0);  // 0: no value
  daxalloc::compact_result total;
  std::uint64_t requests = 0, steps = 0;
  {
    daxalloc::heap_options o;
    o.size = 256 * MiB;
    auto h = daxalloc::heap::open_or_create(path, o);
    auto* root = h.root<store_root>();
    for (std::size_t k = 0; k < nr_keys; ++k) h.free_clear(root->slot[k]);  // a fresh start
    const auto put = [&](std::uint64_t k, std::uint64_t ver, std::uint32_t length) {
      (void)h.allocate_movable(root->slot[k], sizeof(value) + length, [&](value* v) {
        v->key = k;
        v->version = ver;
        v->length = length;
        for (std::uint32_t i = 0; i < length; ++i) v->bytes[i] = byte_of(k, ver, i);
      });
      version[k] = ver;
    };
    std::mt19937_64 rng(1);
    for (std::uint64_t k = 0; k < nr_keys; ++k) put(k, 1, 40 + rng() % 400);
    for (std::uint64_t k = 0; k < nr_keys; k += 2) {  // half of them go: holes everywhere
      h.free_clear(root->slot[k]);
      version[k] = 0;
    }
    const auto before = h.stats();

    std::atomic<bool> stop{false};
    std::thread compactor([&] {
      daxalloc::compact_options step;
      step.time_budget = std::chrono::milliseconds(1);
      while (!stop.load()) {
        const auto r = h.compact(step);
        total.objects_moved += r.objects_moved;
        total.bytes_moved += r.bytes_moved;
        total.slabs_released += r.slabs_released;
        total.bytes_released += r.bytes_released;
        ++steps;
        if (r.finished) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    bool wrong = false;
    while (std::chrono::steady_clock::now() < end) {
      const std::uint64_t k = rng() % nr_keys;
      switch (rng() % 4) {
        case 0:  // put (a replace: delete, then put)
          if (version[k] != 0) h.free_clear(root->slot[k]);
          put(k, version[k] + 1, 40 + rng() % 400);
          break;
        case 1:  // delete
          h.free_clear(root->slot[k]);
          version[k] = 0;
          break;
        default: {  // get: pinned while read
          const auto v = h.pin(root->slot[k]);
          if (version[k] == 0 ? v.get() != nullptr : !intact(v.get(), k, version[k])) wrong = true;
        }
      }
      ++requests;
    }
    stop = true;
    compactor.join();
    const auto after = h.stats();
    std::printf("%" PRIu64 " requests while compact() ran %" PRIu64 " steps of 1 ms: %" PRIu64
                " values moved (%.1f MiB), %" PRIu64 " slabs released\n",
                requests, steps, total.objects_moved, static_cast<double>(total.bytes_moved) / MiB,
                total.slabs_released);
    std::printf("largest free run: %.1f MiB before, %.1f MiB after (of %.1f MiB free)\n",
                static_cast<double>(before.largest_free_bytes) / MiB,
                static_cast<double>(after.largest_free_bytes) / MiB,
                static_cast<double>(after.free_bytes) / MiB);
    if (wrong) {
      std::fprintf(stderr, "movable_store: a get read a wrong value\n");
      return 1;
    }
  }
  // Reopen: every value is where its slot says, as it was last put.
  auto h = daxalloc::heap::open(path);
  auto* root = h.root<store_root>();
  std::size_t values = 0;
  for (std::uint64_t k = 0; k < nr_keys; ++k) {
    const value* v = root->slot[k].get();
    if (version[k] == 0 ? v != nullptr : !intact(v, k, version[k])) {
      std::fprintf(stderr, "movable_store: key %" PRIu64 " is wrong after reopen\n", k);
      return 1;
    }
    values += v != nullptr;
  }
  if (const auto problems = h.check(); !problems.empty()) {
    for (const auto& p : problems) std::fprintf(stderr, "movable_store: check(): %s\n", p.c_str());
    return 1;
  }
  std::printf("reopened: %zu values intact, check() sound\n", values);
  return 0;
}
