// Multi-threaded stress: threads allocate mixed sizes, write self-verifying
// payloads, free their own objects and objects other threads allocated
// (remote frees), reserve and cancel; the heap must stay sound and every
// payload intact. Seeded; the seed is printed (DAXALLOC_SEED to replay).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "daxalloc/heap.hpp"
#include "test_util.hpp"

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

struct mailbox {
  std::mutex mutex;
  std::deque<std::pair<void*, std::size_t>> objects;
};

std::uint64_t pattern(const void* p, std::size_t size) {
  return reinterpret_cast<std::uintptr_t>(p) * 0x9e3779b97f4a7c15ull ^ size;
}

void fill(void* p, std::size_t size) {
  const std::uint64_t v = pattern(p, size);
  std::memcpy(p, &v, std::min<std::size_t>(size, 8));
  if (size >= 16) std::memcpy(static_cast<char*>(p) + size - 8, &v, 8);
}

bool intact(const void* p, std::size_t size) {
  const std::uint64_t v = pattern(p, size);
  if (std::memcmp(p, &v, std::min<std::size_t>(size, 8)) != 0) return false;
  return size < 16 || std::memcmp(static_cast<const char*>(p) + size - 8, &v, 8) == 0;
}
}  // namespace

TEST_CASE("threads allocating and freeing each other's objects") {
  const char* env = std::getenv("DAXALLOC_SEED");
  const std::uint64_t seed = env ? std::strtoull(env, nullptr, 0) : std::random_device{}();
  MESSAGE("seed " << seed);
  for (unsigned threads : {2u, 4u, 8u}) {
    CAPTURE(threads);
    test::temp_file f;
    daxalloc::heap_options o;
    o.size = 256 * MiB;
    o.max_size = 1024 * MiB;  // TSan cannot shadow a 1 TiB reservation
    o.mode = daxalloc::persistence_mode::cache_flush;
    auto h = daxalloc::heap::create(f.path(), o);
    std::vector<mailbox> boxes(threads);
    std::atomic<std::uint64_t> corrupted{0}, operations{0};
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t)
      workers.emplace_back([&, t] {
        std::mt19937_64 rng(seed + t);
        std::vector<std::pair<void*, std::size_t>> mine;
        for (int step = 0; step < 20000; ++step) {
          const auto op = rng() % 10;
          if (op < 5) {
            const std::size_t size = rng() % 16 == 0 ? 1 + rng() % 300000 : 1 + rng() % 1024;
            void* p = h.allocate(size, std::nothrow);
            if (!p) continue;
            fill(p, size);
            if (rng() % 3 == 0) {
              mailbox& box = boxes[rng() % threads];
              std::lock_guard lock(box.mutex);
              box.objects.emplace_back(p, size);
            } else {
              mine.emplace_back(p, size);
            }
          } else if (op < 7 && !mine.empty()) {
            auto [p, size] = mine.back();
            mine.pop_back();
            if (!intact(p, size)) ++corrupted;
            h.deallocate(p);
          } else if (op < 9) {
            std::pair<void*, std::size_t> remote{nullptr, 0};
            {
              std::lock_guard lock(boxes[t].mutex);
              if (!boxes[t].objects.empty()) {
                remote = boxes[t].objects.front();
                boxes[t].objects.pop_front();
              }
            }
            if (remote.first) {
              if (!intact(remote.first, remote.second)) ++corrupted;
              h.deallocate(remote.first);
            }
          } else {
            auto r = h.reserve(1 + rng() % 512, std::nothrow);
            h.cancel(r);
          }
          ++operations;
        }
        for (auto [p, size] : mine) {
          if (!intact(p, size)) ++corrupted;
          h.deallocate(p);
        }
      });
    for (auto& w : workers) w.join();
    std::uint64_t left = 0;
    for (auto& box : boxes)
      for (auto [p, size] : box.objects) {
        if (!intact(p, size)) ++corrupted;
        h.deallocate(p);
        ++left;
      }
    CHECK(corrupted == 0);
    const auto problems = h.check();
    for (const auto& p : problems) MESSAGE(p);
    CHECK(problems.empty());
    CHECK(h.stats().allocated_objects == 0);
    MESSAGE(threads << " threads: " << operations.load() << " operations, " << left
                    << " freed at the end");
  }
}

TEST_CASE("reservations cancelled by pointer alone, by the thread that made them or another") {
  const char* env = std::getenv("DAXALLOC_SEED");
  const std::uint64_t seed = env ? std::strtoull(env, nullptr, 0) : std::random_device{}();
  MESSAGE("seed " << seed);
  constexpr unsigned threads = 4;
  test::temp_file f;
  daxalloc::heap_options o;
  o.size = 256 * MiB;
  o.max_size = 1024 * MiB;
  auto h = daxalloc::heap::create(f.path(), o);
  std::vector<mailbox> boxes(threads);
  std::atomic<std::uint64_t> corrupted{0};
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      std::vector<std::pair<void*, std::size_t>> mine;
      const auto cancel = [&](std::pair<void*, std::size_t> object) {
        if (!intact(object.first, object.second)) ++corrupted;
        h.cancel(object.first);
      };
      for (int round = 0; round < 20; ++round) {
        // A threadtest-like round: many objects of a few sizes, then frees.
        const std::size_t size = std::size_t{8} << (rng() % 8), count = 1 + rng() % 5000;
        for (std::size_t i = 0; i < count; ++i) {
          void* p = h.reserve(size).ptr;
          fill(p, size);
          if (rng() % 4 == 0) {
            mailbox& box = boxes[rng() % threads];
            std::lock_guard lock(box.mutex);
            box.objects.emplace_back(p, size);
          } else {
            mine.emplace_back(p, size);
          }
        }
        for (auto object : mine) cancel(object);
        mine.clear();
        std::deque<std::pair<void*, std::size_t>> remote;
        {
          std::lock_guard lock(boxes[t].mutex);
          remote.swap(boxes[t].objects);
        }
        for (auto object : remote) cancel(object);
      }
    });
  for (auto& w : workers) w.join();
  for (auto& box : boxes)
    for (auto [p, size] : box.objects) {
      if (!intact(p, size)) ++corrupted;
      h.cancel(p);
    }
  CHECK(corrupted == 0);
  const auto problems = h.check();
  for (const auto& p : problems) MESSAGE(p);
  CHECK(problems.empty());
  CHECK(h.stats().allocated_objects == 0);
}
