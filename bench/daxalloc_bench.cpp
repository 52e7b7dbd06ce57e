// daxalloc-bench: daxalloc next to its peers, in one run, on the same kind of
// region (a tmpfs file on /dev/shm, PMEM_IS_PMEM_FORCE=1 so libpmemobj uses
// CLWB + SFENCE, daxalloc in persistence_mode::cache_flush). No real pmem.
//
//   daxalloc-bench [--quick | --full] [--only=churn,threads,frag,recovery] [--dir=/dev/shm]
//
// Workloads (docs/benchmarks.md): churn, threadtest + Larson-style at 1 and 2
// threads, fragmentation, recovery (open after SIGKILL, first allocation),
// metadata overhead. Every figure is a median of several repetitions.
#include <fcntl.h>
#include <jemalloc/jemalloc.h>
#include <libpmemobj.h>
#include <memkind.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <daxalloc/batch.hpp>
#include <daxalloc/heap.hpp>
#include <daxalloc/pptr.hpp>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

// glibc's own allocator, reachable even though jemalloc (linked for mallocx)
// replaces malloc/free in this process.
extern "C" void* __libc_malloc(std::size_t size);
extern "C" void __libc_free(void* p);

namespace {

namespace fs = std::filesystem;
namespace bip = boost::interprocess;
using daxalloc::heap;

constexpr std::uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

struct config {
  bool quick = true;
  std::set<std::string> only;  // empty: everything
  fs::path dir = "/dev/shm";
  [[nodiscard]] bool wants(const std::string& w) const {
    return only.empty() || only.count(w) != 0;
  }
  [[nodiscard]] int reps() const { return quick ? 3 : 7; }
};
config cfg;
fs::path workdir;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread: on a shared machine, time slices lost to other
// processes do not count (cache and memory-bandwidth interference still does).
double thread_cpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt(double v, int prec = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}
std::string ratio(double a, double b) {
  return b > 0 ? fmt(a / b, 2) + "x" : "n/a";
}

struct table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  void print() const {
    std::vector<std::size_t> w(head.size());
    for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
    for (const auto& r : rows)
      for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
    const auto line = [&](const std::vector<std::string>& r) {
      std::printf("|");
      for (std::size_t i = 0; i < w.size(); ++i)
        std::printf(" %-*s |", static_cast<int>(w[i]), i < r.size() ? r[i].c_str() : "");
      std::printf("\n");
    };
    line(head);
    std::printf("|");
    for (std::size_t i = 0; i < w.size(); ++i)
      std::printf("%s|", std::string(w[i] + 2, '-').c_str());
    std::printf("\n");
    for (const auto& r : rows) line(r);
    std::printf("\n");
    std::fflush(stdout);
  }
};

struct xorshift {
  std::uint64_t s;
  explicit xorshift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t operator()() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

fs::path fresh(const std::string& name) {
  fs::path p = workdir / name;
  std::error_code ec;
  fs::remove_all(p, ec);
  return p;
}

heap make_heap(const fs::path& p, std::uint64_t size, std::uint64_t max_size = 0) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = max_size;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::create(p, o);
}

heap open_heap(const fs::path& p) {
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return heap::open(p, o);
}

PMEMobjpool* make_pool(const fs::path& p, std::uint64_t size) {
  PMEMobjpool* pop = pmemobj_create(p.c_str(), "daxalloc-bench", size, 0600);
  if (pop == nullptr) {
    std::fprintf(stderr, "pmemobj_create %s: %s\n", p.c_str(), pmemobj_errormsg());
    std::exit(2);
  }
  return pop;
}

// ---------------------------------------------------------------------------
// 1. churn: a window of live objects; each step frees one and allocates one.

constexpr std::size_t window = 1000;

struct churn_root {
  daxalloc::pptr<std::byte> slot[window];
};
struct pmem_root {
  PMEMoid slot[window];
};

// One allocator under test: alloc(slot, size) fills an empty slot, release(slot)
// empties it.
struct churn_subject {
  std::string name;
  bool durable;
  std::function<void(std::size_t, std::size_t)> alloc;
  std::function<void(std::size_t)> release;
  bool counts = false;  // daxalloc: read the persist counters
};

struct churn_result {
  double mops = 0;
  double alloc_fences = 0, alloc_flushes = 0, free_fences = 0, free_flushes = 0;
};

churn_result run_churn(const churn_subject& s, std::size_t size, std::size_t steps) {
  churn_result res;
  // Counters: an untimed pass, alloc and free counted apart.
  if (s.counts) {
    for (std::size_t i = 0; i < window; ++i) s.alloc(i, size);
    xorshift rng(7);
    const std::size_t n = 2000;
    daxalloc::persist_counters fa{}, ff{};
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t k = rng() % window;
      auto c0 = daxalloc::this_thread_persist_counters();
      s.release(k);
      auto c1 = daxalloc::this_thread_persist_counters();
      s.alloc(k, size);
      auto c2 = daxalloc::this_thread_persist_counters();
      ff.fences += c1.fences - c0.fences;
      ff.flushes += c1.flushes - c0.flushes;
      fa.fences += c2.fences - c1.fences;
      fa.flushes += c2.flushes - c1.flushes;
    }
    for (std::size_t i = 0; i < window; ++i) s.release(i);
    res.alloc_fences = static_cast<double>(fa.fences) / n;
    res.alloc_flushes = static_cast<double>(fa.flushes) / n;
    res.free_fences = static_cast<double>(ff.fences) / n;
    res.free_flushes = static_cast<double>(ff.flushes) / n;
  }
  std::vector<double> rates;
  for (int r = 0; r < cfg.reps(); ++r) {
    for (std::size_t i = 0; i < window; ++i) s.alloc(i, size);
    xorshift rng(static_cast<std::uint64_t>(r) + 1);
    const double t0 = thread_cpu();
    for (std::size_t i = 0; i < steps; ++i) {
      const std::size_t k = rng() % window;
      s.release(k);
      s.alloc(k, size);
    }
    const double t1 = thread_cpu();
    for (std::size_t i = 0; i < window; ++i) s.release(i);
    rates.push_back(2.0 * static_cast<double>(steps) / (t1 - t0) / 1e6);
  }
  res.mops = median(rates);
  return res;
}

void bench_churn() {
  std::printf("## 1. churn: %zu live objects, each step frees one and allocates one\n\n", window);
  std::printf(
      "Mops/s counts allocations and frees separately (one step = 2 operations), per second of "
      "the thread's CPU time (CLOCK_THREAD_CPUTIME_ID: time slices taken by other processes on "
      "this shared machine do not count). Medians of %d repetitions.\n\n",
      cfg.reps());

  auto h = make_heap(fresh("churn.heap"), 512 * MiB);
  auto* droot = h.root<churn_root>();
  PMEMobjpool* pop = make_pool(fresh("churn.pool"), 512 * MiB);
  auto* proot = static_cast<pmem_root*>(pmemobj_direct(pmemobj_root(pop, sizeof(pmem_root))));
  bip::managed_mapped_file seg(bip::create_only, fresh("churn.bip").c_str(), 512 * MiB);
  const fs::path mkdir = fresh("memkind");
  fs::create_directories(mkdir);
  memkind_t kind = nullptr;
  if (int err = memkind_create_pmem(mkdir.c_str(), 0, &kind); err != 0) {
    std::fprintf(stderr, "memkind_create_pmem failed: %d\n", err);
    std::exit(2);
  }

  std::vector<void*> ptr(window, nullptr);
  std::vector<daxalloc::reservation> res(window);

  std::vector<churn_subject> subjects;
  subjects.push_back({"daxalloc allocate_publish + free_clear (pptr in root)", true,
                      [&](std::size_t k, std::size_t n) {
                        (void)h.allocate_publish(droot->slot[k], n, [](std::byte*) {});
                      },
                      [&](std::size_t k) { h.free_clear(droot->slot[k]); }, true});
  subjects.push_back({"daxalloc allocate + deallocate", true,
                      [&](std::size_t k, std::size_t n) { ptr[k] = h.allocate(n); },
                      [&](std::size_t k) { h.deallocate(ptr[k]); }, true});
  subjects.push_back({"daxalloc reserve + cancel (volatile)", false,
                      [&](std::size_t k, std::size_t n) { res[k] = h.reserve(n); },
                      [&](std::size_t k) { h.cancel(res[k]); }, true});
  subjects.push_back({"libpmemobj pmemobj_alloc + pmemobj_free (PMEMoid in root)", true,
                      [&](std::size_t k, std::size_t n) {
                        if (pmemobj_alloc(pop, &proot->slot[k], n, 0, nullptr, nullptr) != 0)
                          throw std::bad_alloc();
                      },
                      [&](std::size_t k) { pmemobj_free(&proot->slot[k]); }});
  subjects.push_back({"libpmemobj transactional tx_alloc + tx_free", true,
                      [&](std::size_t k, std::size_t n) {
                        pmemobj_tx_begin(pop, nullptr, TX_PARAM_NONE);
                        pmemobj_tx_add_range_direct(&proot->slot[k], sizeof(PMEMoid));
                        proot->slot[k] = pmemobj_tx_alloc(n, 0);
                        pmemobj_tx_commit();
                        if (pmemobj_tx_end() != 0) throw std::bad_alloc();
                      },
                      [&](std::size_t k) {
                        pmemobj_tx_begin(pop, nullptr, TX_PARAM_NONE);
                        pmemobj_tx_add_range_direct(&proot->slot[k], sizeof(PMEMoid));
                        pmemobj_tx_free(proot->slot[k]);
                        proot->slot[k] = OID_NULL;
                        pmemobj_tx_commit();
                        (void)pmemobj_tx_end();
                      }});
  subjects.push_back({"Boost.Interprocess managed_mapped_file (no persistence)", false,
                      [&](std::size_t k, std::size_t n) { ptr[k] = seg.allocate(n); },
                      [&](std::size_t k) { seg.deallocate(ptr[k]); }});
  subjects.push_back({"memkind PMEM kind (volatile)", false,
                      [&](std::size_t k, std::size_t n) {
                        ptr[k] = memkind_malloc(kind, n);
                        if (ptr[k] == nullptr) throw std::bad_alloc();
                      },
                      [&](std::size_t k) { memkind_free(kind, ptr[k]); }});
  subjects.push_back({"jemalloc mallocx + dallocx (volatile)", false,
                      [&](std::size_t k, std::size_t n) {
                        ptr[k] = mallocx(n, 0);
                        if (ptr[k] == nullptr) throw std::bad_alloc();
                      },
                      [&](std::size_t k) { dallocx(ptr[k], 0); }});
  subjects.push_back({"glibc malloc + free (volatile)", false,
                      [&](std::size_t k, std::size_t n) {
                        ptr[k] = __libc_malloc(n);
                        if (ptr[k] == nullptr) throw std::bad_alloc();
                      },
                      [&](std::size_t k) { __libc_free(ptr[k]); }});

  const std::vector<std::size_t> sizes{64, 256, 4096};
  std::map<std::string, std::vector<churn_result>> results;
  for (const auto& s : subjects) {
    for (std::size_t size : sizes) {
      // Durable peers run ~0.5 Mops/s: fewer steps keep the run short.
      std::size_t steps = s.durable ? (cfg.quick ? 20000 : 100000) : (cfg.quick ? 200000 : 2000000);
      results[s.name].push_back(run_churn(s, size, steps));
    }
    std::fprintf(stderr, "churn: %s done\n", s.name.c_str());
  }

  const auto& pub = results[subjects[0].name];
  const auto& rsv = results[subjects[2].name];
  table t{{"allocator", "64 B Mops/s", "256 B", "4 KiB", "publish ÷ row (64 B / 256 B / 4 KiB)",
           "reserve ÷ row (64 B / 256 B / 4 KiB)"},
          {}};
  for (const auto& s : subjects) {
    const auto& r = results[s.name];
    std::vector<std::string> row{s.name};
    for (const auto& x : r) row.push_back(fmt(x.mops));
    std::string a, b;
    for (std::size_t i = 0; i < r.size(); ++i) {
      a += (i ? " / " : "") + ratio(pub[i].mops, r[i].mops);
      b += (i ? " / " : "") + ratio(rsv[i].mops, r[i].mops);
    }
    row.push_back(a);
    row.push_back(b);
    t.rows.push_back(row);
  }
  t.print();

  std::printf(
      "daxalloc persistence cost per operation (this_thread_persist_counters, untimed pass):\n\n");
  table c{{"daxalloc API", "size", "fences/alloc", "flushes/alloc", "fences/free", "flushes/free"},
          {}};
  for (std::size_t j = 0; j < 3; ++j) {
    const auto& r = results[subjects[j].name];
    for (std::size_t i = 0; i < sizes.size(); ++i)
      c.rows.push_back({subjects[j].name, std::to_string(sizes[i]) + " B", fmt(r[i].alloc_fences),
                        fmt(r[i].alloc_flushes), fmt(r[i].free_fences), fmt(r[i].free_flushes)});
  }
  c.print();

  memkind_destroy_kind(kind);
  pmemobj_close(pop);
}

// ---------------------------------------------------------------------------
// 2. threadtest and Larson-style, 1 and 2 threads.

struct handle {
  void* p;
  std::size_t n;
};

struct mt_subject {
  std::string name;
  bool durable;
  std::function<handle(std::size_t)> alloc;
  std::function<void(handle)> release;
};

struct mt_time {
  double wall, cpu;  // wall-clock seconds; CPU seconds summed over the threads
};

template <class Body>
mt_time run_threads(unsigned nthreads, Body body) {
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> cpu(nthreads, 0);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      const double c0 = thread_cpu();
      body(t);
      cpu[t] = thread_cpu() - c0;
    });
  while (ready.load() < nthreads) std::this_thread::yield();
  const double t0 = now();
  go.store(true, std::memory_order_release);
  for (auto& th : ts) th.join();
  mt_time r{now() - t0, 0};
  for (double c : cpu) r.cpu += c;
  return r;
}

// Aggregate throughput: from wall time, and the throughput n uncontended cores
// would give at the measured CPU cost per operation.
struct mt_rate {
  double wall, cpu;
};
mt_rate rate_of(const std::vector<mt_time>& times, double ops, unsigned nthreads) {
  std::vector<double> w, c;
  for (const auto& t : times) {
    w.push_back(ops / t.wall / 1e6);
    c.push_back(ops / t.cpu * nthreads / 1e6);
  }
  return {median(w), median(c)};
}

// threadtest: each thread allocates a batch of `batch` 64 B objects, frees them, repeats.
mt_rate threadtest(const mt_subject& s, unsigned nthreads, std::size_t ops_per_thread) {
  const std::size_t batch = 1000;
  const std::size_t iters = std::max<std::size_t>(1, ops_per_thread / (2 * batch));
  std::vector<mt_time> times;
  for (int r = 0; r < cfg.reps(); ++r) {
    times.push_back(run_threads(nthreads, [&](unsigned) {
      std::vector<handle> hs(batch);
      for (std::size_t it = 0; it < iters; ++it) {
        for (auto& x : hs) x = s.alloc(64);
        for (auto& x : hs) s.release(x);
      }
    }));
  }
  return rate_of(times, 2.0 * static_cast<double>(iters * batch * nthreads), nthreads);
}

// Larson-style: a shared array of slots; each step puts a new object of a
// random size (16..1024 B) in a random slot and frees what was there, which
// another thread may have allocated. The size is kept in the object.
mt_rate larson(const mt_subject& s, unsigned nthreads, std::size_t ops_per_thread) {
  const std::size_t nslots = 1000 * nthreads;
  const std::size_t steps = ops_per_thread / 2;
  std::vector<mt_time> times;
  for (int r = 0; r < cfg.reps(); ++r) {
    std::vector<std::atomic<void*>> slots(nslots);
    for (auto& sl : slots) {
      handle x = s.alloc(16);
      *static_cast<std::size_t*>(x.p) = x.n;
      sl.store(x.p);
    }
    times.push_back(run_threads(nthreads, [&](unsigned t) {
      xorshift rng(1000u * static_cast<unsigned>(r) + t + 1);
      for (std::size_t i = 0; i < steps; ++i) {
        const std::uint64_t v = rng();
        const std::size_t size = 16 + (v >> 32) % 1009;
        handle x = s.alloc(size);
        *static_cast<std::size_t*>(x.p) = x.n;
        void* old = slots[v % nslots].exchange(x.p, std::memory_order_acq_rel);
        s.release({old, *static_cast<std::size_t*>(old)});
      }
    }));
    for (auto& sl : slots) {
      void* p = sl.load();
      s.release({p, *static_cast<std::size_t*>(p)});
    }
  }
  return rate_of(times, 2.0 * static_cast<double>(steps * nthreads), nthreads);
}

void bench_threads() {
  std::printf(
      "## 2. threadtest (64 B, batches of 1000) and Larson-style (16..1024 B, remote frees)\n\n");
  std::printf(
      "Aggregate Mops/s over all threads (allocations and frees counted apart). This machine "
      "has %u cores.\n\n",
      std::thread::hardware_concurrency());
  auto h = make_heap(fresh("threads.heap"), 1 * GiB);
  std::vector<mt_subject> subjects;
  subjects.push_back({"daxalloc reserve + cancel (volatile)", false,
                      [&](std::size_t n) {
                        auto r = h.reserve(n);
                        return handle{r.ptr, r.size};
                      },
                      [&](handle x) {
                        daxalloc::reservation r{x.p, x.n};
                        h.cancel(r);
                      }});
  subjects.push_back({"daxalloc allocate + deallocate (durable)", true,
                      [&](std::size_t n) {
                        return handle{h.allocate(n), n};
                      },
                      [&](handle x) { h.deallocate(x.p); }});
  subjects.push_back({"jemalloc mallocx + dallocx", false,
                      [](std::size_t n) {
                        void* p = mallocx(n, 0);
                        if (p == nullptr) throw std::bad_alloc();
                        return handle{p, n};
                      },
                      [](handle x) { dallocx(x.p, 0); }});
  subjects.push_back({"glibc malloc + free", false,
                      [](std::size_t n) {
                        void* p = __libc_malloc(n);
                        if (p == nullptr) throw std::bad_alloc();
                        return handle{p, n};
                      },
                      [](handle x) { __libc_free(x.p); }});

  table t{{"allocator", "threadtest 1T", "2T", "2T/1T", "Larson 1T", "2T", "2T/1T",
           "reserve ÷ row (tt 1T / L 1T)"},
          {}};
  table c = t;
  double rsv_tt = 0, rsv_l = 0, rsv_ttc = 0, rsv_lc = 0;
  for (const auto& s : subjects) {
    const std::size_t ops =
        s.durable ? (cfg.quick ? 200000 : 1000000) : (cfg.quick ? 2000000 : 10000000);
    const mt_rate tt1 = threadtest(s, 1, ops), tt2 = threadtest(s, 2, ops);
    const mt_rate l1 = larson(s, 1, ops), l2 = larson(s, 2, ops);
    if (rsv_tt == 0) {
      rsv_tt = tt1.wall;
      rsv_l = l1.wall;
      rsv_ttc = tt1.cpu;
      rsv_lc = l1.cpu;
    }
    t.rows.push_back({s.name, fmt(tt1.wall), fmt(tt2.wall), ratio(tt2.wall, tt1.wall), fmt(l1.wall),
                      fmt(l2.wall), ratio(l2.wall, l1.wall),
                      ratio(rsv_tt, tt1.wall) + " / " + ratio(rsv_l, l1.wall)});
    c.rows.push_back({s.name, fmt(tt1.cpu), fmt(tt2.cpu), ratio(tt2.cpu, tt1.cpu), fmt(l1.cpu),
                      fmt(l2.cpu), ratio(l2.cpu, l1.cpu),
                      ratio(rsv_ttc, tt1.cpu) + " / " + ratio(rsv_lc, l1.cpu)});
    std::fprintf(stderr, "threads: %s done\n", s.name.c_str());
  }
  std::printf("Wall-clock Mops/s (what the threads got on this shared machine):\n\n");
  t.print();
  std::printf(
      "CPU-time Mops/s: operations per CPU-second of each thread, times the thread count (what "
      "the threads would reach on as many idle cores; contention inside the allocator still "
      "counts, time slices lost to other processes do not):\n\n");
  c.print();
}

// ---------------------------------------------------------------------------
// 3. fragmentation

void bench_frag() {
  const std::uint64_t size = cfg.quick ? 256 * MiB : 1 * GiB;
  std::printf(
      "## 3. fragmentation: fill a %llu MiB heap with 64..512 B objects, free a random half, "
      "then allocate 1 MiB objects until failure\n\n",
      static_cast<unsigned long long>(size / MiB));
  table t{{"allocator", "small objects", "freed bytes", "free space before large phase",
           "1 MiB blocks", "large ÷ freed", "large ÷ free space"},
          {}};
  {
    auto h = make_heap(fresh("frag.heap"), size);
    std::vector<void*> objs;
    xorshift rng(42);
    for (;;) {
      void* p = h.allocate(64 + rng() % 449, std::nothrow);
      if (p == nullptr) break;
      objs.push_back(p);
    }
    std::uint64_t freed = 0;
    for (void* p : objs)
      if (rng() & 1) {
        freed += h.usable_size(p);
        h.deallocate(p);
      }
    const auto st = h.stats();
    const std::uint64_t free_space = st.usable_bytes - st.allocated_bytes;
    std::uint64_t large = 0;
    while (h.allocate(1 * MiB, std::nothrow) != nullptr) ++large;
    const double lb = static_cast<double>(large * MiB);
    t.rows.push_back({"daxalloc (durable allocate/deallocate)", std::to_string(objs.size()),
                      std::to_string(freed / MiB) + " MiB",
                      std::to_string(free_space / MiB) + " MiB", std::to_string(large),
                      fmt(100 * lb / static_cast<double>(freed), 1) + " %",
                      fmt(100 * lb / static_cast<double>(free_space), 1) + " %"});
    std::fprintf(stderr, "frag: daxalloc done\n");
  }
  {
    PMEMobjpool* pop = make_pool(fresh("frag.pool"), size);
    int enabled = 1;  // POBJ_STATS_ENABLED_TRANSIENT
    const bool have_stats = pmemobj_ctl_set(pop, "stats.enabled", &enabled) == 0;
    std::vector<PMEMoid> objs;
    objs.reserve(size / 64);
    xorshift rng(42);
    for (;;) {
      PMEMoid oid;
      if (pmemobj_alloc(pop, &oid, 64 + rng() % 449, 0, nullptr, nullptr) != 0) break;
      objs.push_back(oid);
    }
    std::uint64_t freed = 0;
    for (auto& oid : objs)
      if (rng() & 1) {
        freed += pmemobj_alloc_usable_size(oid);
        pmemobj_free(&oid);
      }
    std::uint64_t allocated = 0;
    if (have_stats) (void)pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &allocated);
    const std::uint64_t free_space = size - allocated;
    std::uint64_t large = 0;
    for (PMEMoid oid; pmemobj_alloc(pop, &oid, 1 * MiB, 0, nullptr, nullptr) == 0;) ++large;
    const double lb = static_cast<double>(large * MiB);
    t.rows.push_back(
        {"libpmemobj (atomic API)", std::to_string(objs.size()),
         std::to_string(freed / MiB) + " MiB",
         have_stats ? std::to_string(free_space / MiB) + " MiB (pool - curr_allocated)" : "n/a",
         std::to_string(large), fmt(100 * lb / static_cast<double>(freed), 1) + " %",
         have_stats ? fmt(100 * lb / static_cast<double>(free_space), 1) + " %" : "n/a"});
    pmemobj_close(pop);
    std::fprintf(stderr, "frag: libpmemobj done\n");
  }
  t.print();
  std::printf(
      "daxalloc free space = stats().usable_bytes - allocated_bytes (includes free slots left in "
      "slabs); libpmemobj free space = pool size - stats.heap.curr_allocated (its own metadata "
      "counts as free, which flatters neither side much).\n\n");
}

// ---------------------------------------------------------------------------
// 4. recovery and 5. metadata overhead

struct killed_child {
  double create_s = 0, fill_s = 0;
};

// Runs body in a child. body(report) calls report({create, fill} seconds)
// while its heap is still open; the parent then kills the child with SIGKILL.
using reporter = std::function<void(const killed_child&)>;
killed_child in_child(const std::function<void(const reporter&)>& body) {
  int fds[2];
  if (pipe(fds) != 0) std::exit(2);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const reporter report = [&](const killed_child& k) {
      if (write(fds[1], &k, sizeof k) != static_cast<ssize_t>(sizeof k)) _exit(3);
      for (;;) pause();  // killed here, the heap open
    };
    try {
      body(report);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    report({-1, -1});
  }
  close(fds[1]);
  killed_child k{};
  if (read(fds[0], &k, sizeof k) != static_cast<ssize_t>(sizeof k)) k.create_s = -1;
  close(fds[0]);
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  return k;
}

struct meta_row {
  std::string name;
  daxalloc::heap_stats st;
};

void bench_recovery(std::vector<meta_row>& meta) {
  std::printf(
      "## 4. recovery: open after SIGKILL (unclean shutdown), sparse files on /dev/shm\n\n");
  table t{{"heap", "present", "reserved range", "objects", "create", "open after SIGKILL",
           "first allocation", "unclean seen"},
          {}};
  struct spec {
    std::string name;
    std::uint64_t size, max_size;
    std::size_t objects, objsize;
  };
  const std::size_t big = cfg.quick ? 200000 : 2000000;
  std::vector<spec> specs{
      {"1 GiB heap", 1 * GiB, 0, 10000, 256},
      {"4 GiB heap", 4 * GiB, 0, 10000, 256},
      {"1 TiB range, 64 MiB present", 64 * MiB, 1 * TiB, 10000, 256},
      {"4 GiB heap, " + std::to_string(big) + " x 1 KiB", 4 * GiB, 0, big, 1024},
  };
  for (const auto& sp : specs) {
    const fs::path p = fresh("recovery.heap");
    const killed_child k = in_child([&](const reporter& report) {
      const double t0 = now();
      auto h = make_heap(p, sp.size, sp.max_size);
      const double t1 = now();
      for (std::size_t i = 0; i < sp.objects; ++i) (void)h.allocate(sp.objsize);
      report({t1 - t0, now() - t1});  // the heap stays open: the parent kills us
    });
    if (k.create_s < 0) {
      std::printf("(%s: the child failed)\n", sp.name.c_str());
      continue;
    }
    // Open once after the crash (recovery), then reopen after clean closes for a median.
    std::vector<double> opens;
    double first_alloc = 0;
    bool unclean = false;
    {
      const double t0 = now();
      auto h = open_heap(p);
      const double t1 = now();
      (void)h.allocate(sp.objsize);
      first_alloc = now() - t1;
      opens.push_back(t1 - t0);
      auto st = h.stats();
      unclean = st.unclean_shutdown;
      meta.push_back({sp.name, st});
    }
    t.rows.push_back({sp.name, std::to_string(meta.back().st.present_bytes / MiB) + " MiB",
                      sp.max_size ? std::to_string(sp.max_size / GiB) + " GiB" : "default (1 TiB)",
                      std::to_string(sp.objects), fmt(k.create_s * 1e3, 1) + " ms",
                      fmt(median(opens) * 1e3, 2) + " ms", fmt(first_alloc * 1e3, 3) + " ms",
                      unclean ? "yes" : "NO"});
    std::error_code ec;
    fs::remove(p, ec);
    std::fprintf(stderr, "recovery: %s done\n", sp.name.c_str());
  }
  // libpmemobj, same size and object count as the last row.
  {
    const fs::path p = fresh("recovery.pool");
    const killed_child k = in_child([&](const reporter& report) {
      const double t0 = now();
      PMEMobjpool* pop = make_pool(p, 4 * GiB);
      const double t1 = now();
      for (std::size_t i = 0; i < big; ++i)
        if (pmemobj_alloc(pop, nullptr, 1024, 0, nullptr, nullptr) != 0) break;
      report({t1 - t0, now() - t1});
    });
    const double t0 = now();
    PMEMobjpool* pop = pmemobj_open(p.c_str(), "daxalloc-bench");
    const double t1 = now();
    if (pop == nullptr) {
      std::printf("(libpmemobj: pmemobj_open failed: %s)\n", pmemobj_errormsg());
    } else {
      (void)pmemobj_alloc(pop, nullptr, 1024, 0, nullptr, nullptr);
      const double t2 = now();
      t.rows.push_back({"libpmemobj 4 GiB pool, " + std::to_string(big) + " x 1 KiB", "4096 MiB",
                        "-", std::to_string(big), fmt(k.create_s * 1e3, 1) + " ms",
                        fmt((t1 - t0) * 1e3, 2) + " ms", fmt((t2 - t1) * 1e3, 3) + " ms", "-"});
      pmemobj_close(pop);
    }
    std::error_code ec;
    fs::remove(p, ec);
  }
  t.print();
  std::printf(
      "create = heap::create / pmemobj_create in the child; open = heap::open / pmemobj_open after "
      "SIGKILL of the child; first allocation = the first allocate / pmemobj_alloc after "
      "open.%s\n\n",
      cfg.quick ? " Quick mode: 200 000 objects, not 2 million (run --full for 2 million)." : "");
}

void print_meta(const std::vector<meta_row>& meta) {
  std::printf("## 5. metadata overhead per present 4 KiB page\n\n");
  table t{{"heap", "present", "metadata", "bytes / 4 KiB page", "vs kernel struct page (64 B)"},
          {}};
  for (const auto& m : meta) {
    const double pages = static_cast<double>(m.st.present_bytes) / 4096;
    const double per = static_cast<double>(m.st.metadata_bytes) / pages;
    t.rows.push_back({m.name, std::to_string(m.st.present_bytes / MiB) + " MiB",
                      fmt(static_cast<double>(m.st.metadata_bytes) / MiB, 2) + " MiB", fmt(per, 2),
                      fmt(100 * per / 64, 1) + " %"});
  }
  t.print();
  std::printf(
      "libpmemobj (estimated from its documented layout, not measured): 8 B chunk header per "
      "256 KiB chunk (0.125 B/page) + 64 B zone header per 16 GiB zone, plus for small objects a "
      "run header and a bitmap of 1 bit per allocation unit (~1-8 B per page for 64..512 B "
      "units) and a 16 B compact header per object (256 B per page of 64 B objects). daxalloc "
      "keeps no per-object header: its figure above is all of its metadata.\n\n");
}

void header() {
  std::string cpu = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  utsname u{};
  uname(&u);
  std::printf("# daxalloc-bench (%s mode)\n\n", cfg.quick ? "quick" : "full");
  std::printf("- machine: %ld CPUs online, %s, Linux %s\n", sysconf(_SC_NPROCESSORS_ONLN),
              cpu.c_str(), u.release);
  std::printf(
      "- region: files in %s (tmpfs, no real pmem); PMEM_IS_PMEM_FORCE=%s (libpmemobj: CLWB + "
      "SFENCE); "
      "daxalloc: persistence_mode::cache_flush\n",
      cfg.dir.c_str(), std::getenv("PMEM_IS_PMEM_FORCE"));
  std::printf(
      "- jemalloc is linked and therefore also replaces malloc in this process; the glibc rows "
      "call __libc_malloc/__libc_free\n");
  std::printf("- shared, noisy machine: compare rows of the same run, not runs\n\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  // libpmem reads PMEM_IS_PMEM_FORCE once; make sure it is set before any use.
  if (const char* v = std::getenv("PMEM_IS_PMEM_FORCE"); v == nullptr || std::strcmp(v, "1") != 0) {
    setenv("PMEM_IS_PMEM_FORCE", "1", 1);
    execv("/proc/self/exe", argv);
    std::perror("execv /proc/self/exe");  // fall through: set in our environment anyway
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      cfg.quick = true;
    } else if (a == "--full") {
      cfg.quick = false;
    } else if (a.rfind("--only=", 0) == 0) {
      std::string list = a.substr(7);
      for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t end = std::min(list.find(',', pos), list.size());
        cfg.only.insert(list.substr(pos, end - pos));
        pos = end + 1;
      }
    } else if (a.rfind("--dir=", 0) == 0) {
      cfg.dir = a.substr(6);
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--quick | --full] [--only=churn,threads,frag,recovery] [--dir=/dev/shm]\n",
          argv[0]);
      return 2;
    }
  }
  workdir = cfg.dir / ("daxalloc-bench-" + std::to_string(getpid()));
  fs::create_directories(workdir);
  int rc = 0;
  try {
    header();
    if (cfg.wants("churn")) bench_churn();
    if (cfg.wants("threads")) bench_threads();
    if (cfg.wants("frag")) bench_frag();
    std::vector<meta_row> meta;
    if (cfg.wants("recovery")) {
      bench_recovery(meta);
      print_meta(meta);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "daxalloc-bench: %s\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(workdir, ec);
  return rc;
}
