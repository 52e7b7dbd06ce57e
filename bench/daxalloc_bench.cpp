// daxalloc-bench: daxalloc next to its peers, in one run, on the same kind of
// region (a tmpfs file on /dev/shm, PMEM_IS_PMEM_FORCE=1 so libpmemobj uses
// CLWB + SFENCE, daxalloc in persistence_mode::cache_flush). No real pmem.
//
//   daxalloc-bench [--quick | --full] [--reps=N] [--csv=FILE] [--dir=/dev/shm]
//                  [--only=churn,prodcon,threads,fences,frag,movable,shrink,recovery,locality,
//                          dram,pins]
//
// Workloads (docs/benchmarks.md): churn, prod-con, threadtest + Larson-style at
// 1 and 2 threads, persistence cost per daxalloc API, fragmentation, recovery
// (open after SIGKILL, 1 GiB to 64 GiB and a 1 TiB range), the largest single
// allocation on an empty heap (with recovery), metadata overhead,
// locality (walking objects after allocating them), DRAM per live object
// byte, pins by address (pin + unpin, the table of pins as it grows, what a
// pin adds to a free; mlock + munlock and glibc malloc + free for scale).
// Every allocator is called directly, through a template instantiated per
// allocator. Figures are medians of several repetitions unless a table says
// otherwise; --csv writes them all, with the ratio daxalloc/peer, for
// scripts/bench (which draws docs/benchmarks.png).
#include <dlfcn.h>
#include <fcntl.h>
#include <immintrin.h>
#include <jemalloc/jemalloc.h>
#include <libpmem.h>
#include <libpmemobj.h>
#include <memkind.h>
#include <mimalloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <cerrno>
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
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// glibc's own allocator, reachable even though jemalloc (linked for mallocx)
// replaces malloc/free in this process. Debian's mimalloc defines these two
// names as well; bench/meson.build links libc ahead of it, and
// check_allocator_symbols() makes sure that it worked.
extern "C" void* __libc_malloc(std::size_t size);
extern "C" void __libc_free(void* p);

namespace {

// Sparse heaps for the recovery workload. region::populate() gives a heap its
// blocks with fallocate(), so that a full file system is an error at create
// rather than a SIGBUS on a later store; on tmpfs that makes every present
// byte RAM, and this machine has 24 GiB. While sparse_heaps is set, daxalloc's
// fallocate64(mode 0) calls fail with EOPNOTSUPP, which populate() accepts:
// the file is only extended with ftruncate, and only the pages daxalloc
// touches take memory. Hole punching and libpmemobj (posix_fallocate, which
// does not come through here) are not affected.
std::atomic<bool> sparse_heaps{false};

}  // namespace

extern "C" int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
  if (mode == 0 && sparse_heaps.load(std::memory_order_relaxed)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  return static_cast<int>(syscall(SYS_fallocate, fd, mode, offset, len));
}

namespace {

namespace fs = std::filesystem;
namespace bip = boost::interprocess;
using daxalloc::heap;

constexpr std::uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

struct config {
  bool quick = true;
  int reps_override = 0;
  std::set<std::string> only;  // empty: everything
  fs::path dir = "/dev/shm";
  fs::path csv;  // empty: no CSV
  [[nodiscard]] bool wants(const std::string& w) const {
    return only.empty() || only.count(w) != 0;
  }
  [[nodiscard]] int reps() const { return reps_override > 0 ? reps_override : quick ? 3 : 7; }
};
config cfg;
fs::path workdir;

// The object sizes of issue 9.
const std::vector<std::size_t> sizes{64, 256, 4 * KiB, 1 * MiB};

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
  return a > 0 && b > 0 ? fmt(a / b, 2) + "x" : "n/a";
}
std::string size_name(std::uint64_t n) {
  if (n >= GiB && n % GiB == 0) return std::to_string(n / GiB) + " GiB";
  if (n >= MiB && n % MiB == 0) return std::to_string(n / MiB) + " MiB";
  if (n >= KiB && n % KiB == 0) return std::to_string(n / KiB) + " KiB";
  return std::to_string(n) + " B";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Characters of a UTF-8 string (÷, ×, µ take two bytes and one column).
std::size_t columns_of(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

struct table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  void print() const {
    std::vector<std::size_t> w(head.size());
    for (std::size_t i = 0; i < head.size(); ++i) w[i] = columns_of(head[i]);
    for (const auto& r : rows)
      for (std::size_t i = 0; i < r.size() && i < w.size(); ++i)
        w[i] = std::max(w[i], columns_of(r[i]));
    const auto line = [&](const std::vector<std::string>& r) {
      std::printf("|");
      for (std::size_t i = 0; i < w.size(); ++i) {
        const std::string& cell = i < r.size() ? r[i] : std::string();
        std::printf(" %s%s |", cell.c_str(), std::string(w[i] - columns_of(cell), ' ').c_str());
      }
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

// Every median also goes to the CSV (--csv): one row per figure. For
// throughput figures of peers, `ratio` = the daxalloc reference figure ÷ this
// one (above 1: daxalloc is faster) and `reference` names that daxalloc row.
struct csv_row {
  std::string workload, allocator;
  std::uint64_t size;
  unsigned threads;
  std::string metric, unit;
  double value, ratio;
  std::string reference;
  int reps = 0;  // measurements behind the figure; 0: cfg.reps() (a median)
};
std::vector<csv_row> csv_rows;

void record(const std::string& workload, const std::string& allocator, std::uint64_t size,
            unsigned threads, const std::string& metric, const std::string& unit, double value,
            double reference_value = 0, const std::string& reference = "") {
  const double r = reference_value > 0 && value > 0 ? reference_value / value : 0;
  csv_rows.push_back(
      {workload, allocator, size, threads, metric, unit, value, r, r > 0 ? reference : ""});
}

// A figure measured once, not a median of cfg.reps() repetitions.
void record_once(const std::string& workload, const std::string& allocator, std::uint64_t size,
                 const std::string& metric, const std::string& unit, double value) {
  record(workload, allocator, size, 1, metric, unit, value);
  csv_rows.back().reps = 1;
}

// header: truncate the file and write the header line; else append the rows
// recorded so far (each workload's process appends its own).
void write_csv(bool header) {
  if (cfg.csv.empty()) return;
  std::FILE* f = std::fopen(cfg.csv.c_str(), header ? "w" : "a");
  if (f == nullptr) {
    std::perror(cfg.csv.c_str());
    return;
  }
  if (header)
    std::fprintf(f,
                 "workload,allocator,size_bytes,threads,metric,unit,median,reps,daxalloc_ratio,"
                 "daxalloc_reference\n");
  for (const auto& r : csv_rows) {
    std::fprintf(f, "%s,\"%s\",%llu,%u,%s,%s,%.6g,%d,", r.workload.c_str(), r.allocator.c_str(),
                 static_cast<unsigned long long>(r.size), r.threads, r.metric.c_str(),
                 r.unit.c_str(), r.value, r.reps ? r.reps : cfg.reps());
    if (r.ratio > 0)
      std::fprintf(f, "%.4g,\"%s\"\n", r.ratio, r.reference.c_str());
    else
      std::fprintf(f, ",\n");
  }
  std::fclose(f);
}

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

// Waiting for the other thread of a pair: spin briefly, then give the core
// away (this machine has 2 cores, shared with other jobs).
void spin_wait(unsigned& spins) {
  if (++spins < 64) {
    _mm_pause();
  } else {
    spins = 0;
    std::this_thread::yield();
  }
}

fs::path fresh(const std::string& name) {
  fs::path p = workdir / name;
  std::error_code ec;
  fs::remove_all(p, ec);
  return p;
}

std::uint64_t file_blocks_bytes(const fs::path& p) {
  struct stat st {};
  if (stat(p.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
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

// One memkind PMEM kind for the whole run: a kind created after another was
// destroyed crashes inside memkind_arena_malloc (memkind 1.14) once threads
// come and go, so it is made once and never destroyed.
memkind_t pmem_kind() {
  static memkind_t kind = [] {
    const fs::path dir = fresh("memkind");
    fs::create_directories(dir);
    memkind_t k = nullptr;
    if (int err = memkind_create_pmem(dir.c_str(), 0, &k); err != 0) {
      std::fprintf(stderr, "memkind_create_pmem failed: %d\n", err);
      std::exit(2);
    }
    return k;
  }();
  return kind;
}

// Operation budgets. A subject's `speed` scales the count (durable peers run
// ~1 Mops/s, volatile ones ~100), and large objects get fewer operations.
std::size_t budget(double speed, std::size_t size) {
  const double base = cfg.quick ? 4e5 : 4e6;
  const double scale = static_cast<double>(std::max<std::size_t>(1, size / (16 * KiB)));
  return std::max<std::size_t>(2000, static_cast<std::size_t>(base * speed / scale));
}

// Live objects of one size in churn, prod-con and the fences pass: 1000, but
// at most 128 MiB of them.
std::size_t live_objects(std::size_t size) {
  return std::min<std::size_t>(1000, 128 * MiB / size);
}

// ---------------------------------------------------------------------------
// Subjects of threadtest, Larson, locality and the DRAM figures. Each is a
// small struct whose alloc(size) and free(ptr) call its allocator inline, and
// every workload is a template instantiated per subject: each allocator is
// called directly and in the same way, as a program calls malloc(size) and
// free(ptr). A free of the pointer alone makes the allocator find the
// object's size itself, as free() must. The allocators whose API also takes
// the size (cancel of a reservation, sdallocx, mi_free_size) have a
// free_sized(ptr, size) for the extra sized-free rows.

struct subject_info {
  const char* name;   // for the Markdown tables
  const char* label;  // for the CSV and the chart
  bool durable;
  double speed;  // see budget()
};

struct daxalloc_reserve_subject {
  static constexpr subject_info info{"daxalloc reserve + cancel(ptr) (volatile)",
                                     "daxalloc reserve", false, 1};
  static constexpr subject_info sized_info{"daxalloc reserve + cancel(reservation{ptr, size})",
                                           "daxalloc reserve sized", false, 1};
  heap* h;
  void* alloc(std::size_t n) const { return h->reserve(n, std::nothrow).ptr; }
  void free(void* p) const { h->cancel(p); }
  void free_sized(void* p, std::size_t n) const {
    daxalloc::reservation r{p, n};
    h->cancel(r);
  }
};

struct daxalloc_allocate_subject {
  static constexpr subject_info info{"daxalloc allocate + deallocate (durable)",
                                     "daxalloc allocate", true, 0.1};
  heap* h;
  void* alloc(std::size_t n) const { return h->allocate(n, std::nothrow); }
  void free(void* p) const { h->deallocate(p); }
};

// libpmemobj's atomic API names objects by PMEMoid; a caller that keeps
// plain pointers converts both ways, as here.
struct pmemobj_subject {
  static constexpr subject_info info{"libpmemobj pmemobj_alloc + pmemobj_free (durable)",
                                     "pmemobj atomic", true, 0.03};
  PMEMobjpool* pop;
  void* alloc(std::size_t n) const {
    PMEMoid oid;
    return pmemobj_alloc(pop, &oid, n, 0, nullptr, nullptr) == 0 ? pmemobj_direct(oid) : nullptr;
  }
  void free(void* p) const {
    PMEMoid oid = pmemobj_oid(p);
    pmemobj_free(&oid);
  }
};

struct boost_subject {
  static constexpr subject_info info{"Boost.Interprocess managed_mapped_file", "Boost.IPC mmf",
                                     false, 0.1};
  bip::managed_mapped_file* seg;
  void* alloc(std::size_t n) const { return seg->allocate(n, std::nothrow); }
  void free(void* p) const { seg->deallocate(p); }
};

struct memkind_subject {
  static constexpr subject_info info{"memkind PMEM kind", "memkind PMEM", false, 0.3};
  memkind_t kind;
  void* alloc(std::size_t n) const { return memkind_malloc(kind, n); }
  void free(void* p) const { memkind_free(kind, p); }
};

struct jemalloc_subject {
  static constexpr subject_info info{"jemalloc mallocx + dallocx", "jemalloc", false, 1};
  static constexpr subject_info sized_info{"jemalloc mallocx + sdallocx", "jemalloc sized", false,
                                           1};
  void* alloc(std::size_t n) const { return mallocx(n, 0); }
  void free(void* p) const { dallocx(p, 0); }
  void free_sized(void* p, std::size_t n) const { sdallocx(p, n, 0); }
};

struct mimalloc_subject {
  static constexpr subject_info info{"mimalloc mi_malloc + mi_free", "mimalloc", false, 1};
  static constexpr subject_info sized_info{"mimalloc mi_malloc + mi_free_size", "mimalloc sized",
                                           false, 1};
  void* alloc(std::size_t n) const { return mi_malloc(n); }
  void free(void* p) const { mi_free(p); }
  void free_sized(void* p, std::size_t n) const { mi_free_size(p, n); }
};

struct glibc_subject {
  static constexpr subject_info info{"glibc malloc + free", "glibc", false, 1};
  void* alloc(std::size_t n) const { return __libc_malloc(n); }
  void free(void* p) const { __libc_free(p); }
};

template <class S>
concept has_sized_free = requires(const S& s, void* p) {
  s.free_sized(p, std::size_t{1});
};

// Frees p, of n bytes, through the subject's sized free or its plain one.
template <bool sized, class S>
inline void release(const S& s, void* p, std::size_t n) {
  if constexpr (sized)
    s.free_sized(p, n);
  else
    s.free(p);
}

[[noreturn]] void out_of_memory(const char* who, std::size_t size) {
  std::fprintf(stderr, "daxalloc-bench: %s: no memory for %zu bytes\n", who, size);
  std::abort();
}

enum class peer {
  daxalloc_reserve,
  daxalloc_allocate,
  pmemobj,
  boost_ipc,
  memkind,
  jemalloc,
  mimalloc,
  glibc
};
constexpr peer all_peers[] = {
    peer::daxalloc_reserve, peer::daxalloc_allocate, peer::pmemobj,  peer::boost_ipc,
    peer::memkind,          peer::jemalloc,          peer::mimalloc, peer::glibc};

constexpr subject_info info_of(peer p) {
  switch (p) {
    case peer::daxalloc_reserve:
      return daxalloc_reserve_subject::info;
    case peer::daxalloc_allocate:
      return daxalloc_allocate_subject::info;
    case peer::pmemobj:
      return pmemobj_subject::info;
    case peer::boost_ipc:
      return boost_subject::info;
    case peer::memkind:
      return memkind_subject::info;
    case peer::jemalloc:
      return jemalloc_subject::info;
    case peer::mimalloc:
      return mimalloc_subject::info;
    case peer::glibc:
      return glibc_subject::info;
  }
  return {};
}

// Removes a file when it goes out of scope (heaps, pools and segments take
// RAM on tmpfs).
struct removed_at_exit {
  fs::path path;
  explicit removed_at_exit(fs::path p) : path(std::move(p)) {}
  removed_at_exit(const removed_at_exit&) = delete;
  removed_at_exit& operator=(const removed_at_exit&) = delete;
  ~removed_at_exit() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Makes the heap, pool or segment of peer p (a new file of `bytes`) and calls
// f(subject) with its subject; the file is gone when f returns.
template <class F>
void with_peer(peer p, const std::string& tag, std::uint64_t bytes, F&& f) {
  switch (p) {
    case peer::daxalloc_reserve:
    case peer::daxalloc_allocate: {
      const removed_at_exit file{fresh(tag + ".heap")};
      heap h = make_heap(file.path, bytes);
      if (p == peer::daxalloc_reserve)
        f(daxalloc_reserve_subject{&h});
      else
        f(daxalloc_allocate_subject{&h});
      return;
    }
    case peer::pmemobj: {
      const removed_at_exit file{fresh(tag + ".pool")};
      const std::unique_ptr<PMEMobjpool, void (*)(PMEMobjpool*)> pool(make_pool(file.path, bytes),
                                                                      pmemobj_close);
      f(pmemobj_subject{pool.get()});
      return;
    }
    case peer::boost_ipc: {
      const removed_at_exit file{fresh(tag + ".bip")};
      bip::managed_mapped_file seg(bip::create_only, file.path.c_str(), bytes);
      f(boost_subject{&seg});
      return;
    }
    case peer::memkind:
      f(memkind_subject{pmem_kind()});
      return;
    case peer::jemalloc:
      f(jemalloc_subject{});
      return;
    case peer::mimalloc:
      f(mimalloc_subject{});
      return;
    case peer::glibc:
      f(glibc_subject{});
      return;
  }
}

// ---------------------------------------------------------------------------
// Subjects of churn and prod-con: alloc(k, size) fills the empty slot k,
// release(k) empties it, called directly like the subjects above (the
// workloads are templates). Slots of the durable publishing APIs are
// persistent pointers in the root object of the heap or pool; the others
// keep plain pointers and free by pointer alone.

constexpr std::size_t max_slots = 1000;

struct churn_root {
  daxalloc::pptr<std::byte> slot[max_slots];
};
struct pmem_root {
  PMEMoid slot[max_slots];
};

// One instance of every allocator, each on its own file where it has one.
struct slot_store {
  heap h;
  churn_root* droot;
  PMEMobjpool* pop;
  pmem_root* proot;
  bip::managed_mapped_file seg;
  memkind_t kind = pmem_kind();
  std::vector<void*> ptr = std::vector<void*>(max_slots, nullptr);

  explicit slot_store(const std::string& tag)
      : h(make_heap(fresh(tag + ".heap"), 512 * MiB)),
        droot(h.root<churn_root>()),
        pop(make_pool(fresh(tag + ".pool"), 512 * MiB)),
        proot(static_cast<pmem_root*>(pmemobj_direct(pmemobj_root(pop, sizeof(pmem_root))))),
        seg(bip::create_only, fresh(tag + ".bip").c_str(), 512 * MiB) {}
  slot_store(const slot_store&) = delete;
  slot_store& operator=(const slot_store&) = delete;
  ~slot_store() { pmemobj_close(pop); }
};

struct publish_slots {
  static constexpr subject_info info{"daxalloc allocate_publish + free_clear (pptr in root)",
                                     "daxalloc publish", true, 0.05};
  slot_store* st;
  void alloc(std::size_t k, std::size_t n) const {
    (void)st->h.allocate_publish(st->droot->slot[k], n, [](std::byte*) {});
  }
  void release(std::size_t k) const { st->h.free_clear(st->droot->slot[k]); }
};

// The engine's case: the value sits in a buffer. daxalloc copies it in with
// non-temporal stores and publishes; libpmemobj's atomic allocation copies
// it in its constructor with pmemobj_memcpy_persist (pmem_memcpy_persist
// of the same bytes).
alignas(64) const std::array<std::byte, 1 * MiB> value_buffer{};

struct publish_copy_slots {
  static constexpr subject_info info{"daxalloc allocate_publish copy-in + free_clear",
                                     "daxalloc publish copy-in", true, 0.05};
  slot_store* st;
  void alloc(std::size_t k, std::size_t n) const {
    (void)st->h.allocate_publish(st->droot->slot[k], value_buffer.data(), n);
  }
  void release(std::size_t k) const { st->h.free_clear(st->droot->slot[k]); }
};

// Group commit: the same publications deferred, heap::sync() after every
// 16 of them, as an engine with its own commit points issues them. A slot
// freed and refilled in one group is one freeing publication and one
// allocating publication of the same group (the deferred stores take
// effect in order at sync); only freeing a slot whose allocation is still
// queued syncs first, since free_clear reads the slot, which the queued
// store changes only at sync.
struct publish_group_slots {
  static constexpr subject_info info{
      "daxalloc deferred allocate_publish + free_clear, sync() every 16", "daxalloc group commit",
      true, 0.05};
  struct queue {
    std::vector<std::size_t> allocated;  // slots filled by queued publications
    unsigned publications = 0;
  };
  slot_store* st;
  std::shared_ptr<queue> q = std::make_shared<queue>();
  void sync() const {
    st->h.sync();
    q->allocated.clear();
    q->publications = 0;
  }
  void published() const {
    if (++q->publications == 16) sync();
  }
  void finish() const { sync(); }
  void alloc(std::size_t k, std::size_t n) const {
    (void)st->h.allocate_publish(
        st->droot->slot[k], n, [](std::byte*) {}, daxalloc::durability::deferred);
    q->allocated.push_back(k);
    published();
  }
  void release(std::size_t k) const {
    if (std::find(q->allocated.begin(), q->allocated.end(), k) != q->allocated.end()) sync();
    st->h.free_clear(st->droot->slot[k], daxalloc::durability::deferred);
    published();
  }
};

struct pmemobj_slots {
  static constexpr subject_info info{"libpmemobj pmemobj_alloc + pmemobj_free (PMEMoid in root)",
                                     "pmemobj atomic", true, 0.05};
  slot_store* st;
  void alloc(std::size_t k, std::size_t n) const {
    if (pmemobj_alloc(st->pop, &st->proot->slot[k], n, 0, nullptr, nullptr) != 0)
      throw std::bad_alloc();
  }
  void release(std::size_t k) const { pmemobj_free(&st->proot->slot[k]); }
};

struct pmemobj_copy_slots {
  static constexpr subject_info info{
      "libpmemobj pmemobj_alloc + pmemobj_free, constructor copies (pmemobj_memcpy_persist)",
      "pmemobj atomic copy-in", true, 0.05};
  slot_store* st;
  static int copy_in(PMEMobjpool* pop, void* ptr, void* arg) {
    pmemobj_memcpy_persist(pop, ptr, value_buffer.data(), *static_cast<std::size_t*>(arg));
    return 0;
  }
  void alloc(std::size_t k, std::size_t n) const {
    if (pmemobj_alloc(st->pop, &st->proot->slot[k], n, 0, copy_in, &n) != 0) throw std::bad_alloc();
  }
  void release(std::size_t k) const { pmemobj_free(&st->proot->slot[k]); }
};

struct pmemobj_tx_slots {
  static constexpr subject_info info{"libpmemobj transactional tx_alloc + tx_free", "pmemobj tx",
                                     true, 0.05};
  slot_store* st;
  void alloc(std::size_t k, std::size_t n) const {
    pmemobj_tx_begin(st->pop, nullptr, TX_PARAM_NONE);
    pmemobj_tx_add_range_direct(&st->proot->slot[k], sizeof(PMEMoid));
    st->proot->slot[k] = pmemobj_tx_alloc(n, 0);
    pmemobj_tx_commit();
    if (pmemobj_tx_end() != 0) throw std::bad_alloc();
  }
  void release(std::size_t k) const {
    pmemobj_tx_begin(st->pop, nullptr, TX_PARAM_NONE);
    pmemobj_tx_add_range_direct(&st->proot->slot[k], sizeof(PMEMoid));
    pmemobj_tx_free(st->proot->slot[k]);
    st->proot->slot[k] = OID_NULL;
    pmemobj_tx_commit();
    (void)pmemobj_tx_end();
  }
};

// The malloc-shaped subjects of threadtest, with a plain pointer per slot.
template <class S>
struct pointer_slots {
  static constexpr subject_info info = S::info;
  S s;
  void** ptr;
  void alloc(std::size_t k, std::size_t n) const {
    ptr[k] = s.alloc(n);
    if (ptr[k] == nullptr) throw std::bad_alloc();
  }
  void release(std::size_t k) const { s.free(ptr[k]); }
};

// Every subject of churn and prod-con, in table order; the first is the
// durable reference, the third the volatile one (print_slot_table).
auto slot_subjects(slot_store& st) {
  void** p = st.ptr.data();
  return std::tuple{publish_slots{&st},
                    pointer_slots<daxalloc_allocate_subject>{{&st.h}, p},
                    pointer_slots<daxalloc_reserve_subject>{{&st.h}, p},
                    pmemobj_slots{&st},
                    pmemobj_tx_slots{&st},
                    pointer_slots<boost_subject>{{&st.seg}, p},
                    pointer_slots<memkind_subject>{{st.kind}, p},
                    pointer_slots<jemalloc_subject>{{}, p},
                    pointer_slots<mimalloc_subject>{{}, p},
                    pointer_slots<glibc_subject>{{}, p}};
}

// Churn's subjects: those, then copy-in on both sides and group commit
// (single-threaded: not in prod-con).
auto churn_subjects(slot_store& st) {
  return std::tuple_cat(
      slot_subjects(st),
      std::tuple{publish_copy_slots{&st}, pmemobj_copy_slots{&st}, publish_group_slots{&st}});
}

// Calls f(subject) for every subject of the tuple, in order.
template <class Tuple, class F>
void for_each_subject(const Tuple& subjects, F&& f) {
  std::apply([&](const auto&... s) { (f(s), ...); }, subjects);
}

// One alloc and release of slot 0 at `size`: what went wrong, or "" (see
// probe() of threadtest).
template <class S>
std::string probe_slots(const S& s, std::size_t size) {
  try {
    s.alloc(0, size);
    s.release(0);
    if constexpr (requires { s.finish(); }) s.finish();
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Figures per subject name and size. A cell whose probe failed is in
// `failures` (its figure is 0) and is printed as "failed".
struct slot_results {
  std::vector<subject_info> subjects;  // table order
  std::map<std::string, std::vector<double>> mops;
  std::map<std::pair<std::string, std::size_t>, std::string> failures;  // {name, size index}
};

// A table of Mops/s per subject and size, with the ratios of the two daxalloc
// reference rows (allocate_publish for durability, reserve for speed) and the
// same figures into the CSV: durable peers against allocate_publish, volatile
// ones against reserve.
void print_slot_table(const std::string& workload, const std::string& metric,
                      const slot_results& res,
                      const std::map<std::string, std::vector<double>>& mops) {
  const subject_info& pub_info = res.subjects[0];
  const subject_info& rsv_info = res.subjects[2];
  const auto& pub = mops.at(pub_info.name);
  const auto& rsv = mops.at(rsv_info.name);
  std::vector<std::string> head{"allocator"};
  for (std::size_t s : sizes) head.push_back(size_name(s) + (head.size() == 1 ? " Mops/s" : ""));
  head.push_back("publish ÷ row (per size)");
  head.push_back("reserve ÷ row (per size)");
  table t{head, {}};
  for (const auto& s : res.subjects) {
    const auto& r = mops.at(s.name);
    std::vector<std::string> row{s.name};
    std::string a, b;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const bool failed = res.failures.count({s.name, i}) != 0;
      row.push_back(failed ? "failed" : fmt(r[i]));
      a += (i ? " / " : "") + ratio(pub[i], r[i]);
      b += (i ? " / " : "") + ratio(rsv[i], r[i]);
      if (failed) continue;
      const bool self = std::string(s.label).rfind("daxalloc", 0) == 0;
      record(workload, s.label, sizes[i], workload == "prodcon" ? 2 : 1, metric, "Mops/s", r[i],
             self        ? 0
             : s.durable ? pub[i]
                         : rsv[i],
             s.durable ? pub_info.label : rsv_info.label);
    }
    row.push_back(a);
    row.push_back(b);
    t.rows.push_back(row);
  }
  t.print();
}

void print_slot_failures(const slot_results& res) {
  for (const auto& [where, why] : res.failures)
    std::printf("- failed: %s, %s: %s\n", where.first.c_str(),
                size_name(sizes[where.second]).c_str(), why.c_str());
  if (!res.failures.empty()) std::printf("\n");
}

// ---------------------------------------------------------------------------
// 1. churn: a window of live objects; each step frees one and allocates one.

template <class S>
double run_churn(const S& s, std::size_t size) {
  const std::size_t live = live_objects(size);
  const std::size_t steps = budget(S::info.speed, size) / 2;
  std::vector<double> rates;
  for (int r = 0; r < cfg.reps(); ++r) {
    for (std::size_t i = 0; i < live; ++i) s.alloc(i, size);
    xorshift rng(static_cast<std::uint64_t>(r) + 1);
    const double t0 = thread_cpu();
    for (std::size_t i = 0; i < steps; ++i) {
      const std::size_t k = rng() % live;
      s.release(k);
      s.alloc(k, size);
    }
    const double t1 = thread_cpu();
    for (std::size_t i = 0; i < live; ++i) s.release(i);
    if constexpr (requires { s.finish(); }) s.finish();  // (group commit: the last queue)
    rates.push_back(2.0 * static_cast<double>(steps) / (t1 - t0) / 1e6);
  }
  return median(rates);
}

void bench_churn() {
  std::printf(
      "## 1. churn: 1000 live objects (128 of 1 MiB), each step frees a random one and "
      "allocates one in its place\n\n");
  std::printf(
      "Mops/s counts allocations and frees separately (one step = 2 operations), per second of "
      "the thread's CPU time (CLOCK_THREAD_CPUTIME_ID: time slices taken by other processes on "
      "this shared machine do not count). Medians of %d repetitions. Objects are not written "
      "(allocate_publish's constructor is empty), but allocate_publish flushes the whole object "
      "at publish, as its contract says; the copy-in rows write every byte of the object from a "
      "buffer (daxalloc: non-temporal stores; libpmemobj: pmemobj_memcpy_persist in the "
      "allocation's constructor). The group-commit row defers each publication and calls "
      "heap::sync() after every 16 publications (one fence for 16; a step's free and "
      "allocation of the same slot are two publications of one group, and freeing a slot whose "
      "allocation is still queued syncs first).\n\n",
      cfg.reps());
  slot_store store("churn");
  slot_results res;
  for_each_subject(churn_subjects(store), [&](const auto& s) {
    using S = std::decay_t<decltype(s)>;
    res.subjects.push_back(S::info);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::string why = probe_slots(s, sizes[i]);
      if (!why.empty()) res.failures[{S::info.name, i}] = why;
      res.mops[S::info.name].push_back(why.empty() ? run_churn(s, sizes[i]) : 0);
    }
    std::fprintf(stderr, "churn: %s done\n", S::info.name);
  });
  print_slot_table("churn", "throughput_cpu", res, res.mops);
  print_slot_failures(res);
  // The durable pairs an engine compares, per size.
  const auto pair = [&](const char* what, const subject_info& a, const subject_info& b) {
    std::string line = std::string("- ") + what + ": ";
    for (std::size_t i = 0; i < sizes.size(); ++i)
      line += (i ? " / " : "") + size_name(sizes[i]) + " " +
              ratio(res.mops.at(a.name)[i], res.mops.at(b.name)[i]);
    std::printf("%s\n", line.c_str());
  };
  pair("allocate_publish + free_clear ÷ libpmemobj atomic", publish_slots::info,
       pmemobj_slots::info);
  pair("copy-in allocate_publish + free_clear ÷ libpmemobj atomic with a copying constructor",
       publish_copy_slots::info, pmemobj_copy_slots::info);
  pair("group commit (sync every 16) ÷ libpmemobj atomic", publish_group_slots::info,
       pmemobj_slots::info);
  std::printf("\n");
}

// ---------------------------------------------------------------------------
// 2. prod-con: one thread allocates, another frees, through a bounded
// single-producer single-consumer ring of slots (the same ring for every
// allocator). The producer fills slot i % live, the consumer empties it and
// only then hands it back, so frees are always remote.

// Returns {wall-clock Mops/s, CPU-time Mops/s}. The CPU-time figure counts
// only the time each thread spends inside the allocator (read once per chunk,
// not while waiting for the other thread) and takes the busier thread as the
// pipeline's bottleneck: what the pair would reach on two idle cores.
template <class S>
std::pair<double, double> run_prodcon(const S& s, std::size_t size) {
  const std::size_t live = live_objects(size);
  const std::size_t chunk = std::min<std::size_t>(64, live / 4);  // slots handed over at once
  const std::size_t items = std::max(chunk, budget(S::info.speed, size) / 2 / chunk * chunk);
  std::vector<double> wall_rates, cpu_rates;
  for (int r = 0; r < cfg.reps(); ++r) {
    std::atomic<std::size_t> head{0};  // slots filled by the producer
    std::atomic<std::size_t> tail{0};  // slots emptied by the consumer
    std::atomic<bool> ready{false}, stop{false};
    std::exception_ptr failure;  // written before stop is set
    double consumer_busy = 0, producer_busy = 0;
    std::thread consumer([&] {
      ready.store(true, std::memory_order_release);
      try {
        unsigned spins = 0;
        for (std::size_t i = 0; i < items; i += chunk) {
          while (head.load(std::memory_order_acquire) < i + chunk) {
            if (stop.load(std::memory_order_acquire)) return;
            spin_wait(spins);
          }
          const double c0 = thread_cpu();
          for (std::size_t j = i; j < i + chunk; ++j) s.release(j % live);
          consumer_busy += thread_cpu() - c0;
          tail.store(i + chunk, std::memory_order_release);
        }
      } catch (...) {
        failure = std::current_exception();
        stop.store(true, std::memory_order_release);
      }
    });
    while (!ready.load(std::memory_order_acquire)) std::this_thread::yield();
    const double t0 = now();
    try {
      unsigned spins = 0;
      for (std::size_t i = 0; i < items && !stop.load(std::memory_order_acquire); i += chunk) {
        while (i + chunk - tail.load(std::memory_order_acquire) > live) {
          if (stop.load(std::memory_order_acquire)) break;
          spin_wait(spins);
        }
        if (stop.load(std::memory_order_acquire)) break;
        const double c0 = thread_cpu();
        for (std::size_t j = i; j < i + chunk; ++j) s.alloc(j % live, size);
        producer_busy += thread_cpu() - c0;
        head.store(i + chunk, std::memory_order_release);
      }
    } catch (...) {
      stop.store(true, std::memory_order_release);
      consumer.join();
      throw;
    }
    consumer.join();
    const double t1 = now();
    if (stop.load()) {
      if (failure) std::rethrow_exception(failure);
      throw std::runtime_error(std::string("prod-con: ") + S::info.name + " stopped");
    }
    const double ops = 2.0 * static_cast<double>(items);
    wall_rates.push_back(ops / (t1 - t0) / 1e6);
    cpu_rates.push_back(ops / std::max(producer_busy, consumer_busy) / 1e6);
  }
  return {median(wall_rates), median(cpu_rates)};
}

void bench_prodcon() {
  std::printf(
      "## 2. prod-con: one thread allocates, another frees (up to 1000 objects in flight, 128 of "
      "1 MiB)\n\n");
  std::printf(
      "A bounded single-producer single-consumer ring of slots, the same for every allocator: "
      "the producer allocates into 64 slots (32 for 1 MiB) and hands them over, the consumer "
      "frees them and hands them back, so every free is remote. Mops/s = (allocations + frees) "
      "per second. The durable rows keep their pointers in persistent slots (pptr / PMEMoid in "
      "the root). Medians of %d repetitions; load average at start %s.\n\n",
      cfg.reps(), load_average().c_str());
  slot_store store("prodcon");
  slot_results res;
  std::map<std::string, std::vector<double>> wall, cpu;
  for_each_subject(slot_subjects(store), [&](const auto& s) {
    using S = std::decay_t<decltype(s)>;
    res.subjects.push_back(S::info);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::string why = probe_slots(s, sizes[i]);
      if (!why.empty()) res.failures[{S::info.name, i}] = why;
      const auto [w, c] = why.empty() ? run_prodcon(s, sizes[i]) : std::pair<double, double>{};
      wall[S::info.name].push_back(w);
      cpu[S::info.name].push_back(c);
    }
    std::fprintf(stderr, "prodcon: %s done\n", S::info.name);
  });
  std::printf(
      "CPU-time Mops/s: operations ÷ the CPU time of the busier thread inside the allocator "
      "(what the pipeline reaches on two idle cores; remote-free costs count, waiting and time "
      "slices lost to other processes do not):\n\n");
  print_slot_table("prodcon", "throughput_cpu", res, cpu);
  std::printf(
      "Wall-clock Mops/s (what the pair got on this shared machine, waiting included):\n\n");
  print_slot_table("prodcon", "throughput_wall", res, wall);
  print_slot_failures(res);
}

// ---------------------------------------------------------------------------
// 3. threadtest and Larson-style, 1 and 2 threads.

struct mt_time {
  double wall, cpu;  // wall-clock seconds; CPU seconds summed over the threads
};

// Runs body(thread index) on n threads started together.
template <class Body>
mt_time run_threads(unsigned nthreads, const Body& body) {
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
  double wall = 0, cpu = 0;
};
mt_rate rate_of(const std::vector<mt_time>& times, double ops, unsigned nthreads) {
  std::vector<double> w, c;
  for (const auto& t : times) {
    w.push_back(ops / t.wall / 1e6);
    c.push_back(ops / t.cpu * nthreads / 1e6);
  }
  return {median(w), median(c)};
}

// threadtest: each thread allocates a round of `round` objects of `size`
// bytes, then frees them all, and repeats. Objects are not written.
template <bool sized, class S>
mt_rate threadtest(const S& s, unsigned nthreads, std::size_t size, std::size_t round) {
  const std::size_t rounds = std::max<std::size_t>(1, budget(S::info.speed, size) / (2 * round));
  std::vector<mt_time> times;
  for (int r = 0; r < cfg.reps(); ++r) {
    std::vector<std::vector<void*>> objects(nthreads, std::vector<void*>(round));
    times.push_back(run_threads(nthreads, [&](unsigned t) {
      std::vector<void*>& mine = objects[t];
      for (std::size_t k = 0; k < rounds; ++k) {
        for (void*& p : mine) {
          p = s.alloc(size);
          if (p == nullptr) out_of_memory(S::info.name, size);
        }
        for (void* p : mine) release<sized>(s, p, size);
      }
    }));
  }
  return rate_of(times, 2.0 * static_cast<double>(rounds * round * nthreads), nthreads);
}

// Larson-style, as in Larson and Krishnan's server simulation (in Hoard's
// and mimalloc-bench's suites): each thread owns an array of 1000 slots and
// each step frees the object in a random slot of it and puts a new one of a
// random size in [min_size, max_size] there, writing its first word (the
// original writes its first bytes). The array keeps each object's size
// beside it, as the original does, for the sized frees. After every round of
// 4000 steps the threads pass their arrays on (thread t takes the one thread
// t+1 had), so about a quarter of a round's frees are of objects another
// thread allocated. (An earlier version shared one array and exchanged a
// slot per step; with two threads perf put 97 % of the samples on that
// exchange and on reading the other thread's object, so it measured
// cache-line transfers, not allocators.)
constexpr std::size_t larson_slots = 1000;
struct larson_array {
  std::vector<void*> object = std::vector<void*>(larson_slots);
  std::vector<std::uint32_t> size = std::vector<std::uint32_t>(larson_slots);
};

template <bool sized, class S>
mt_rate larson(const S& s, unsigned nthreads, std::size_t min_size, std::size_t max_size) {
  constexpr std::size_t nslots = larson_slots;
  constexpr std::size_t round = 4 * nslots;
  const std::size_t rounds = std::max<std::size_t>(1, budget(S::info.speed, 64) / 2 / round);
  const std::uint64_t range = max_size - min_size + 1;
  using slots = larson_array;
  const auto put = [&](slots& a, std::size_t k, std::size_t n) {
    void* p = s.alloc(n);
    if (p == nullptr) out_of_memory(S::info.name, n);
    *static_cast<volatile std::uint64_t*>(p) = n;
    a.object[k] = p;
    a.size[k] = static_cast<std::uint32_t>(n);
  };
  const auto drop = [&](slots& a, std::size_t k) { release<sized>(s, a.object[k], a.size[k]); };
  std::vector<mt_time> times;
  for (int r = 0; r < cfg.reps(); ++r) {
    std::vector<slots> arrays(nthreads);
    xorshift fill(static_cast<std::uint64_t>(r) + 77);
    for (auto& a : arrays)
      for (std::size_t k = 0; k < nslots; ++k) put(a, k, min_size + fill() % range);
    std::barrier round_end(static_cast<std::ptrdiff_t>(nthreads));
    times.push_back(run_threads(nthreads, [&](unsigned t) {
      xorshift rng(1000u * static_cast<unsigned>(r) + t + 1);
      for (std::size_t k = 0; k < rounds; ++k) {
        slots& a = arrays[(t + k) % nthreads];
        for (std::size_t i = 0; i < round; ++i) {
          const std::uint64_t v = rng();
          const std::size_t slot = v % nslots;
          drop(a, slot);
          put(a, slot, min_size + (v >> 32) % range);
        }
        round_end.arrive_and_wait();
      }
    }));
    for (auto& a : arrays)
      for (std::size_t k = 0; k < nslots; ++k) drop(a, k);
  }
  return rate_of(times, 2.0 * static_cast<double>(rounds * round * nthreads), nthreads);
}

// fork() with a pipe from the child to the parent, stdio flushed first so that
// nothing buffered is written twice. The child keeps fds[1], the parent fds[0].
pid_t fork_with_pipe(int (&fds)[2]) {
  if (pipe(fds) != 0) std::exit(2);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) std::exit(2);
  close(fds[pid == 0 ? 0 : 1]);
  return pid;
}

// Runs measure() in a child process and returns its result; reruns it when
// the child dies, counting the deaths in `crashes` (a value-initialised
// result after 5 deaths).
template <class Result, class Measure>
Result in_subprocess(const Measure& measure, int& crashes) {
  static_assert(std::is_trivially_copyable_v<Result>);
  for (int attempt = 0; attempt < 5; ++attempt) {
    int fds[2];
    const pid_t pid = fork_with_pipe(fds);
    if (pid == 0) {
      Result r{};
      try {
        r = measure();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "daxalloc-bench: %s\n", e.what());
        _exit(1);
      }
      const bool sent = write(fds[1], &r, sizeof r) == static_cast<ssize_t>(sizeof r);
      _exit(sent ? 0 : 1);
    }
    Result r{};
    const bool got = read(fds[0], &r, sizeof r) == static_cast<ssize_t>(sizeof r);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (got && WIFEXITED(status) && WEXITSTATUS(status) == 0) return r;
    ++crashes;
    std::fprintf(stderr, "a measurement process died (status %d); rerunning it\n", status);
  }
  return {};
}

// The columns of the threads tables: threadtest rounds of 1000 and 100 000
// objects at 64 B and 512 B, 1000 at 4 KiB, 64 at 1 MiB; Larson at
// 64..400 B and 16..1024 B.
struct mt_column {
  const char* title;
  const char* workload;            // in the CSV
  std::size_t size;                // threadtest: object size; Larson: 0
  std::size_t round;               // threadtest: objects per thread and round; Larson: 0
  std::size_t min_size, max_size;  // Larson
  bool sized_row;                  // measured for the sized-free rows too
};
const std::vector<mt_column> mt_columns{
    {"threadtest 64 B × 1000", "threadtest_1000", 64, 1000, 0, 0, true},
    {"threadtest 64 B × 100000", "threadtest_100000", 64, 100000, 0, 0, false},
    {"threadtest 512 B × 1000", "threadtest_1000", 512, 1000, 0, 0, false},
    {"threadtest 512 B × 100000", "threadtest_100000", 512, 100000, 0, 0, false},
    {"threadtest 4 KiB × 1000", "threadtest_1000", 4 * KiB, 1000, 0, 0, false},
    {"threadtest 1 MiB × 64", "threadtest_64", 1 * MiB, 64, 0, 0, false},
    {"Larson 64..400 B", "larson_64_400", 0, 0, 64, 400, true},
    {"Larson 16..1024 B", "larson_16_1024", 0, 0, 16, 1024, false},
};

// One allocation and free of `size` bytes on the calling thread. A subject
// that cannot free what it allocated (it throws) gets no figures for that
// column, rather than an exception in a worker thread ending the process.
// Returns what went wrong, or an empty string.
template <bool sized, class S>
std::string probe(const S& s, std::size_t size) {
  try {
    void* p = s.alloc(size);
    if (p == nullptr) return "no memory for " + std::to_string(size) + " bytes";
    release<sized>(s, p, size);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

template <bool sized, class S>
mt_rate run_column(const S& s, const mt_column& c, unsigned nthreads) {
  return c.round ? threadtest<sized>(s, nthreads, c.size, c.round)
                 : larson<sized>(s, nthreads, c.min_size, c.max_size);
}

// Figures of one row: [column][threads - 1]; columns not measured stay 0.
using mt_row = std::vector<std::array<mt_rate, 2>>;

void bench_threads() {
  std::printf("## 3. threadtest and Larson-style, 1 and 2 threads\n\n");
  std::printf(
      "threadtest: each thread allocates a round of N objects of one size (N = 1000 or "
      "100 000; 64 at 1 MiB), then frees them all, and repeats; the objects are not written. "
      "Larson-style (Larson and Krishnan's server simulation): each thread owns an array of "
      "1000 slots; each step frees the object of a random slot and puts a new one of a random "
      "size (64..400 B or 16..1024 B) there, writing its first word; after every round of 4000 "
      "steps the threads hand their arrays on, so about a quarter of a round's frees are of "
      "objects the other thread allocated. Every allocator is called directly (a template "
      "instance per allocator, no std::function or virtual call), as malloc(size) and "
      "free(ptr): the frees pass the pointer only (daxalloc heap::cancel(void*) and "
      "heap::deallocate, jemalloc dallocx, mimalloc mi_free, libpmemobj pmemobj_free of "
      "pmemobj_oid(ptr)); frees that pass the size too are the extra rows of the last table. "
      "Aggregate Mops/s over all threads (allocations and frees counted apart); cells are "
      "`1 thread / 2 threads (2T/1T)`; target of the brief: 2T/1T at least 1.80x. This "
      "machine has %u cores, shared with other jobs (load average at start %s). Medians of %d "
      "repetitions.\n\n",
      std::thread::hardware_concurrency(), load_average().c_str(), cfg.reps());
  int memkind_crashes = 0;
  std::vector<subject_info> rows;
  std::vector<std::pair<subject_info, subject_info>> sized_rows;  // {sized, pointer-only}
  std::map<std::string, mt_row> res;
  std::map<std::pair<std::string, std::size_t>, std::string> failures;  // {row, column}: why
  for (const peer p : all_peers) {
    with_peer(p, "threads", 1 * GiB, [&](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      // memkind's PMEM kind sometimes crashes inside memkind_arena_malloc
      // when two threads allocate (SIGSEGV, memkind 1.14): its figures come
      // from child processes, rerun when one dies.
      const auto measure = [&](const auto& f) {
        return std::is_same_v<S, memkind_subject> ? in_subprocess<mt_rate>(f, memkind_crashes)
                                                  : f();
      };
      const auto measure_row = [&]<bool sized>(const subject_info& info) {
        mt_row& r = res[info.name];
        r.resize(mt_columns.size());
        for (std::size_t c = 0; c < mt_columns.size(); ++c) {
          const mt_column& col = mt_columns[c];
          if (sized && !col.sized_row) continue;
          const std::string why = probe<sized>(s, col.round ? col.size : col.max_size);
          if (!why.empty()) {
            failures[{info.name, c}] = why;
            continue;
          }
          for (unsigned n = 1; n <= 2; ++n)
            r[c][n - 1] = measure([&] { return run_column<sized>(s, col, n); });
        }
      };
      measure_row.template operator()<false>(S::info);
      rows.push_back(S::info);
      if constexpr (has_sized_free<S>) {
        measure_row.template operator()<true>(S::sized_info);
        sized_rows.emplace_back(S::sized_info, S::info);
      }
      std::fprintf(stderr, "threads: %s done\n", S::info.name);
    });
  }

  const mt_row& reserve = res.at(daxalloc_reserve_subject::info.name);
  const mt_row& durable = res.at(daxalloc_allocate_subject::info.name);
  const mt_row& reserve_sized = res.at(daxalloc_reserve_subject::sized_info.name);
  const auto failed = [&](const subject_info& info, std::size_t c) {
    return failures.count({info.name, c}) != 0;
  };
  const auto cell = [](double one, double two) {
    return fmt(one) + " / " + fmt(two) + " (" + ratio(two, one) + ")";
  };
  for (int wall = 0; wall < 2; ++wall) {
    const auto pick = [&](const mt_rate& m) { return wall ? m.wall : m.cpu; };
    const std::string metric = wall ? "throughput_wall" : "throughput_cpu";
    // CSV: every figure, with the daxalloc row it is compared with.
    const auto record_row = [&](const subject_info& info, const mt_row& r, const mt_row& ref,
                                const char* ref_label, bool only_sized_columns) {
      const bool self = std::string(info.label).rfind("daxalloc", 0) == 0;
      for (std::size_t c = 0; c < mt_columns.size(); ++c) {
        const mt_column& col = mt_columns[c];
        if ((only_sized_columns && !col.sized_row) || failed(info, c)) continue;
        for (unsigned n = 0; n < 2; ++n)
          record(col.workload, info.label, col.size, n + 1, metric, "Mops/s", pick(r[c][n]),
                 self ? 0 : pick(ref[c][n]), ref_label);
        record(col.workload, info.label, col.size, 2, wall ? "scaling_wall" : "scaling_cpu", "x",
               pick(r[c][1]) / pick(r[c][0]));
      }
    };

    if (wall)
      std::printf("Wall-clock Mops/s (what the threads got on this shared machine):\n\n");
    else
      std::printf(
          "CPU-time Mops/s: operations per CPU-second of each thread, times the thread count "
          "(what the threads would reach on as many idle cores; contention inside the allocator "
          "still counts, time slices lost to other processes do not):\n\n");
    std::vector<std::string> head{"allocator"};
    for (const auto& c : mt_columns) head.push_back(c.title);
    table t{head, {}};
    for (const auto& info : rows) {
      const mt_row& r = res.at(info.name);
      std::vector<std::string> row{info.name};
      for (std::size_t c = 0; c < mt_columns.size(); ++c)
        row.push_back(failed(info, c) ? "failed" : cell(pick(r[c][0]), pick(r[c][1])));
      t.rows.push_back(row);
      record_row(info, r, info.durable ? durable : reserve,
                 info.durable ? daxalloc_allocate_subject::info.label
                              : daxalloc_reserve_subject::info.label,
                 false);
    }
    t.print();

    std::printf("%s: daxalloc ÷ peer, `1 thread / 2 threads` (above 1: daxalloc is faster):\n\n",
                wall ? "Wall clock" : "CPU time");
    const mt_row& je = res.at(jemalloc_subject::info.name);
    const mt_row& mi = res.at(mimalloc_subject::info.name);
    const mt_row& pmem = res.at(pmemobj_subject::info.name);
    table q{{"workload", "reserve + cancel(ptr) ÷ jemalloc", "reserve + cancel(ptr) ÷ mimalloc",
             "allocate + deallocate ÷ libpmemobj"},
            {}};
    for (std::size_t c = 0; c < mt_columns.size(); ++c) {
      const auto both = [&](const mt_row& a, const mt_row& b) {
        return ratio(pick(a[c][0]), pick(b[c][0])) + " / " + ratio(pick(a[c][1]), pick(b[c][1]));
      };
      q.rows.push_back(
          {mt_columns[c].title, both(reserve, je), both(reserve, mi), both(durable, pmem)});
    }
    q.print();

    std::printf(
        "%s, sized frees (the allocator is given the size back: cancel of a reservation, "
        "sdallocx, mi_free_size); `÷ ptr-only` = this row ÷ the same allocator with "
        "pointer-only frees, 1 thread / 2 threads:\n\n",
        wall ? "Wall clock" : "CPU time");
    std::vector<std::string> sized_head{"allocator"};
    for (const auto& c : mt_columns)
      if (c.sized_row) {
        sized_head.push_back(c.title);
        sized_head.push_back("÷ ptr-only");
      }
    table z{sized_head, {}};
    for (const auto& [sized, plain] : sized_rows) {
      const mt_row& r = res.at(sized.name);
      const mt_row& p = res.at(plain.name);
      std::vector<std::string> row{sized.name};
      for (std::size_t c = 0; c < mt_columns.size(); ++c) {
        if (!mt_columns[c].sized_row) continue;
        row.push_back(failed(sized, c) ? "failed" : cell(pick(r[c][0]), pick(r[c][1])));
        row.push_back(ratio(pick(r[c][0]), pick(p[c][0])) + " / " +
                      ratio(pick(r[c][1]), pick(p[c][1])));
      }
      z.rows.push_back(row);
      record_row(sized, r, reserve_sized, daxalloc_reserve_subject::sized_info.label, true);
    }
    z.print();
  }
  for (const auto& [where, why] : failures)
    std::printf("- failed: %s, %s: %s\n", where.first.c_str(), mt_columns[where.second].title,
                why.c_str());
  if (!failures.empty()) std::printf("\n");
  if (memkind_crashes > 0)
    std::printf(
        "memkind PMEM kind: %d of its measurement processes died (SIGSEGV inside "
        "memkind_arena_malloc, with 2 threads) and were rerun; its figures come from runs that "
        "completed.\n\n",
        memkind_crashes);
}

// ---------------------------------------------------------------------------
// 4. persistence cost per daxalloc API

struct api_result {
  std::uint64_t calls = 0, objects = 0;
  daxalloc::persist_counters c{};
  std::vector<double> us_per_call;
};

// Runs `calls` calls of one API through body(), adding its counters and its
// CPU time per call to `out`.
template <class Body>
void measure_api(api_result& out, std::size_t calls, std::size_t objects_per_call, Body&& body) {
  const auto c0 = daxalloc::this_thread_persist_counters();
  const double t0 = thread_cpu();
  body();
  const double t1 = thread_cpu();
  const auto c1 = daxalloc::this_thread_persist_counters();
  out.calls += calls;
  out.objects += calls * objects_per_call;
  out.c.fences += c1.fences - c0.fences;
  out.c.flushes += c1.flushes - c0.flushes;
  out.us_per_call.push_back((t1 - t0) / static_cast<double>(calls) * 1e6);
}

// What one fence waits for on this host, by how the lines were written:
// stores + CLWB (pmem_flush) or non-temporal stores (pmem_memcpy with
// PMEM_F_MEM_NONTEMPORAL), then SFENCE (pmem_drain); fresh lines each time,
// in a file on the region's file system, as daxalloc writes its lanes.
void write_back_cost() {
  constexpr std::size_t bytes = 64 * MiB, calls = 100000;
  const removed_at_exit file{fresh("writeback.bin")};
  const int fd = ::open(file.path.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0 || ftruncate(fd, bytes) != 0) throw std::runtime_error("write-back file");
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw std::runtime_error("write-back mapping");
  auto* base = static_cast<std::byte*>(map);
  std::memset(base, 1, bytes);
  alignas(64) std::array<std::byte, 16 * 64> src{};
  table t{{"lines per fence", "stores + CLWB + SFENCE (ns)", "non-temporal + SFENCE (ns)",
           "non-temporal ÷ CLWB"},
          {}};
  for (std::size_t lines : {1, 2, 4, 16}) {
    std::vector<double> clwb, nt;
    for (int r = 0; r < cfg.reps(); ++r) {
      double t0 = thread_cpu();
      for (std::size_t i = 0; i < calls; ++i) {
        std::byte* at = base + (i * 4096) % bytes;
        for (std::size_t l = 0; l < lines; ++l) at[l * 64] = static_cast<std::byte>(i);
        pmem_flush(at, lines * 64);
        pmem_drain();
      }
      double t1 = thread_cpu();
      for (std::size_t i = 0; i < calls; ++i) {
        src[0] = static_cast<std::byte>(i);
        pmem_memcpy(base + (i * 4096) % bytes, src.data(), lines * 64,
                    PMEM_F_MEM_NONTEMPORAL | PMEM_F_MEM_NODRAIN);
        pmem_drain();
      }
      double t2 = thread_cpu();
      clwb.push_back((t1 - t0) / calls * 1e9);
      nt.push_back((t2 - t1) / calls * 1e9);
    }
    t.rows.push_back({std::to_string(lines), fmt(median(clwb)), fmt(median(nt)),
                      ratio(median(nt), median(clwb))});
  }
  munmap(map, bytes);
  std::printf("Write-back cost on this host (medians of %d runs of %zu fences):\n\n", cfg.reps(),
              calls);
  t.print();
  std::printf("\n");
}

void bench_fences() {
  std::printf("## 4. flushes and fences per call, per daxalloc API\n\n");
  std::printf(
      "From daxalloc::this_thread_persist_counters() around every run: fences = drain() calls "
      "(one SFENCE each), flushes = 64-byte cache lines handed to flush() (one CLWB each). "
      "1000 calls per run (128 for 1 MiB), batches of 16 objects; time = CPU microseconds per "
      "call, median of %d runs. No other thread uses the heap.\n\n",
      cfg.reps());
  write_back_cost();
  auto h = make_heap(fresh("fences.heap"), 512 * MiB);
  auto* root = h.root<churn_root>();
  constexpr std::size_t group = 16;
  const std::vector<std::string> apis{
      "allocate",
      "deallocate",
      "reserve (heap::reserve)",
      "cancel (heap::cancel)",
      "allocate_publish (into a pptr)",
      "free_clear (a pptr)",
      "batch publish: 16 x (batch::reserve + set)",
      "batch publish: 16 x (defer_free + set null)",
      "batch publish: 16 x (adopt heap::reserve + set)",
      "allocate_publish copy-in (into a pptr)",
      "free_clear after copy-in",
      "allocate_publish deferred, sync() every 16",
      "free_clear deferred, sync() every 16",
  };
  std::map<std::string, std::vector<api_result>> res;
  for (const auto& a : apis) res[a].resize(sizes.size());
  std::vector<void*> ptr(max_slots);
  std::vector<daxalloc::reservation> rs(max_slots);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::size_t size = sizes[i];
    const std::size_t n = live_objects(size);
    const std::size_t nb = n / group;
    const auto run = [&](const std::string& api, std::size_t calls, std::size_t per, auto body) {
      measure_api(res[api][i], calls, per, body);
    };
    const auto publish_batches = [&](bool adopt) {
      for (std::size_t b0 = 0; b0 < nb * group; b0 += group) {
        daxalloc::batch b(h);
        for (std::size_t j = b0; j < b0 + group; ++j) {
          if (adopt) {
            auto r = h.reserve(size);
            b.set(root->slot[j], static_cast<std::byte*>(r.ptr));
            b.adopt(std::move(r));
          } else {
            b.set(root->slot[j], static_cast<std::byte*>(b.reserve(size)));
          }
        }
        b.publish();
      }
    };
    const auto free_batches = [&] {
      for (std::size_t b0 = 0; b0 < nb * group; b0 += group) {
        daxalloc::batch b(h);
        for (std::size_t j = b0; j < b0 + group; ++j) {
          b.defer_free(root->slot[j].get());
          b.set(root->slot[j], static_cast<std::byte*>(nullptr));
        }
        b.publish();
      }
    };
    for (int r = 0; r < cfg.reps(); ++r) {
      run(apis[0], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) ptr[k] = h.allocate(size);
      });
      run(apis[1], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) h.deallocate(ptr[k]);
      });
      run(apis[2], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) rs[k] = h.reserve(size);
      });
      run(apis[3], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) h.cancel(rs[k]);
      });
      run(apis[4], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k)
          (void)h.allocate_publish(root->slot[k], size, [](std::byte*) {});
      });
      run(apis[5], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) h.free_clear(root->slot[k]);
      });
      run(apis[6], nb, group, [&] { publish_batches(false); });
      run(apis[7], nb, group, free_batches);
      run(apis[8], nb, group, [&] { publish_batches(true); });
      free_batches();
      run(apis[9], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k)
          (void)h.allocate_publish(root->slot[k], value_buffer.data(), size);
      });
      run(apis[10], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) h.free_clear(root->slot[k]);
      });
      run(apis[11], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) {
          (void)h.allocate_publish(
              root->slot[k], size, [](std::byte*) {}, daxalloc::durability::deferred);
          if (k % group == group - 1) h.sync();
        }
        h.sync();
      });
      run(apis[12], n, 1, [&] {
        for (std::size_t k = 0; k < n; ++k) {
          h.free_clear(root->slot[k], daxalloc::durability::deferred);
          if (k % group == group - 1) h.sync();
        }
        h.sync();
      });
    }
  }
  table t{{"daxalloc API", "size", "fences / call", "flushed lines / call", "objects / call",
           "fences / object", "CPU µs / call"},
          {}};
  for (const auto& a : apis)
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const auto& r = res[a][i];
      const double calls = static_cast<double>(r.calls);
      const double fences = static_cast<double>(r.c.fences) / calls;
      const double flushes = static_cast<double>(r.c.flushes) / calls;
      const double per = static_cast<double>(r.objects) / calls;
      const double us = median(r.us_per_call);
      t.rows.push_back({a, size_name(sizes[i]), fmt(fences), fmt(flushes), fmt(per, 0),
                        fmt(fences / per), fmt(us, 3)});
      record("fences", "daxalloc " + a, sizes[i], 1, "fences_per_call", "fences", fences);
      record("fences", "daxalloc " + a, sizes[i], 1, "flushes_per_call", "lines", flushes);
      record("fences", "daxalloc " + a, sizes[i], 1, "cpu_per_call", "us", us);
    }
  t.print();
}

// ---------------------------------------------------------------------------
// 5. fragmentation

// PMDK's obj_fragmentation2 workloads (src/test/obj_fragmentation2), scaled
// to the heap: a phase allocates objects of sizes in [min, max] until it has
// allocated 5/3 of the heap in total, and whenever more than 1/3 of the heap
// is live frees 200 random objects of the phase; between phases a fraction
// of all live objects is freed. Then 1 MiB blocks and 100 B objects are
// allocated until failure. Reported: PMDK's measure (heap used by the live
// objects and the 100 B fill, over what they hold, minus 1; PMDK's own
// targets for libpmemobj are 0.9, 0.8, 0.7 and 0.8) and the share of the
// free space that 1 MiB blocks could take.
struct frag_phase {
  std::size_t min, max;
  double delete_after;  // fraction of live objects freed after the phase
};
struct frag_workload {
  const char* name;
  std::vector<frag_phase> phases;
  double pmdk_target;
};
const std::vector<frag_workload> pmdk_workloads = {
    {"w3: 100..150 B, then 200..250 B", {{100, 150, 0}, {200, 250, 0}}, 0.9},
    {"w4: 100..150 B, free 90 %, 200..250 B", {{100, 150, 0.9}, {200, 250, 0}}, 0.8},
    {"w5: 100..200 B, free 50 %, 1000..2000 B", {{100, 200, 0.5}, {1000, 2000, 0}}, 0.7},
    {"w7: 50..150 B, free 90 %, 5000..15000 B", {{50, 150, 0.9}, {5000, 15000, 0}}, 0.8},
};

// alloc(size) -> handle or nullopt, usable(handle), release(handle).
// before_fill() runs between the phases and the final fill (compaction);
// fill_alloc(size) makes the final fill's allocations.
template <class Handle, class Alloc, class Usable, class Release, class BeforeFill, class FillAlloc>
std::pair<double, double> run_pmdk_fragmentation(const frag_workload& w, std::uint64_t heap_bytes,
                                                 Alloc&& alloc, Usable&& usable, Release&& release,
                                                 BeforeFill&& before_fill, FillAlloc&& fill_alloc) {
  std::vector<Handle> live;
  std::uint64_t live_bytes = 0;
  xorshift rng(7);
  const auto free_last = [&](std::size_t n) {
    for (; n > 0 && !live.empty(); --n) {
      live_bytes -= usable(live.back());
      release(live.back());
      live.pop_back();
    }
  };
  const auto shuffle_from = [&](std::size_t start) {
    for (std::size_t i = start; i < live.size(); ++i) std::swap(live[i], live[rng() % live.size()]);
  };
  for (const frag_phase& ph : w.phases) {
    std::uint64_t total = 0;
    std::size_t start = live.size();
    while (total < heap_bytes * 5 / 3) {
      const auto h = alloc(ph.min + rng() % (ph.max - ph.min + 1));
      if (!h) break;
      live.push_back(*h);
      total += usable(*h);
      live_bytes += usable(*h);
      if (live_bytes > heap_bytes / 3) {
        shuffle_from(start);
        free_last(200);
        start = live.size();
      }
    }
    if (ph.delete_after > 0) {
      shuffle_from(0);
      free_last(static_cast<std::size_t>(static_cast<double>(live.size()) * ph.delete_after));
    }
  }
  before_fill();
  std::uint64_t large = 0, small = 0;
  std::vector<Handle> fill;
  while (const auto h = fill_alloc(1 * MiB)) {
    large += usable(*h);
    fill.push_back(*h);
  }
  while (const auto h = fill_alloc(100)) {
    small += usable(*h);
    fill.push_back(*h);
  }
  const double free_space = static_cast<double>(heap_bytes - live_bytes);
  const double pmdk_frag =
      (static_cast<double>(heap_bytes - large - small)) / static_cast<double>(live_bytes) - 1;
  for (Handle h : fill) release(h);
  for (Handle h : live) release(h);
  return {pmdk_frag, 100 * static_cast<double>(large) / free_space};
}

void bench_pmdk_fragmentation() {
  const std::uint64_t size = cfg.quick ? 192 * MiB : 768 * MiB;
  std::printf(
      "## 5b. fragmentation, PMDK's obj_fragmentation2 workloads on a %llu MiB heap\n\n"
      "Each phase allocates 5/3 of the heap in total, freeing 200 random objects of the phase "
      "whenever more than 1/3 of the heap is live; then 1 MiB blocks and 100 B objects are "
      "allocated until failure. `PMDK frag` = (heap - what the final fill got) / live bytes - 1, "
      "PMDK's own measure (lower is better; its targets for libpmemobj in brackets); `1 MiB of "
      "free` "
      "= bytes the 1 MiB blocks got / (heap - live bytes).\n\n",
      static_cast<unsigned long long>(size / MiB));
  table t{{"workload", "daxalloc PMDK frag", "libpmemobj PMDK frag", "daxalloc 1 MiB of free",
           "libpmemobj 1 MiB of free"},
          {}};
  for (const frag_workload& w : pmdk_workloads) {
    std::pair<double, double> d, p;
    {
      auto h = make_heap(fresh("frag2.heap"), size);
      const std::uint64_t capacity = h.stats().usable_bytes;
      const auto alloc = [&](std::size_t n) -> std::optional<void*> {
        void* q = h.allocate(n, std::nothrow);
        return q ? std::optional<void*>(q) : std::nullopt;
      };
      d = run_pmdk_fragmentation<void*>(
          w, capacity, alloc, [&](void* q) { return h.usable_size(q); },
          [&](void* q) { h.deallocate(q); }, [] {}, alloc);
    }
    {
      PMEMobjpool* pop = make_pool(fresh("frag2.pool"), size);
      const auto alloc = [&](std::size_t n) -> std::optional<PMEMoid> {
        PMEMoid oid;
        if (pmemobj_alloc(pop, &oid, n, 0, nullptr, nullptr) != 0) return std::nullopt;
        return oid;
      };
      p = run_pmdk_fragmentation<PMEMoid>(
          w, size, alloc, [](PMEMoid oid) { return pmemobj_alloc_usable_size(oid); },
          [](PMEMoid oid) { pmemobj_free(&oid); }, [] {}, alloc);
      pmemobj_close(pop);
    }
    t.rows.push_back({w.name, fmt(d.first), fmt(p.first) + " (" + fmt(w.pmdk_target, 1) + ")",
                      fmt(d.second, 1) + " %", fmt(p.second, 1) + " %"});
    record("frag_pmdk", "daxalloc allocate", 0, 1, std::string("pmdk_frag ") + w.name, "ratio",
           d.first);
    record("frag_pmdk", "daxalloc allocate", 0, 1, std::string("large_of_free ") + w.name, "%",
           d.second);
    record("frag_pmdk", "pmemobj atomic", 0, 1, std::string("pmdk_frag ") + w.name, "ratio",
           p.first);
    record("frag_pmdk", "pmemobj atomic", 0, 1, std::string("large_of_free ") + w.name, "%",
           p.second);
    std::fprintf(stderr, "frag: %s done\n", w.name);
  }
  t.print();
}

// libpmemobj's side of the random-half workload (sections 5 and 5c): a
// pool filled with 64..512 B objects, a random half freed.
struct pmemobj_half {
  std::vector<PMEMoid> objects;  // all that were allocated (freed ones included)
  std::uint64_t freed = 0;       // their usable bytes
  std::uint64_t allocated = 0;   // stats.heap.curr_allocated after the frees
  bool have_stats = false;
};
pmemobj_half pmemobj_random_half(PMEMobjpool* pop, std::uint64_t size) {
  pmemobj_half out;
  int enabled = 1;  // POBJ_STATS_ENABLED_TRANSIENT
  out.have_stats = pmemobj_ctl_set(pop, "stats.enabled", &enabled) == 0;
  out.objects.reserve(size / 64);
  xorshift rng(42);
  for (PMEMoid oid; pmemobj_alloc(pop, &oid, 64 + rng() % 449, 0, nullptr, nullptr) == 0;)
    out.objects.push_back(oid);
  for (auto& oid : out.objects)
    if (rng() & 1) {
      out.freed += pmemobj_alloc_usable_size(oid);
      pmemobj_free(&oid);
    }
  if (out.have_stats) (void)pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &out.allocated);
  return out;
}

void bench_frag() {
  const std::uint64_t size = cfg.quick ? 256 * MiB : 1 * GiB;
  std::printf(
      "## 5. fragmentation: fill a %llu MiB heap with 64..512 B objects, free a random half, "
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
    record("frag", "daxalloc allocate", size, 1, "large_of_free_space", "%",
           100 * lb / static_cast<double>(free_space));
    std::fprintf(stderr, "frag: daxalloc done\n");
  }
  {
    PMEMobjpool* pop = make_pool(fresh("frag.pool"), size);
    const pmemobj_half half = pmemobj_random_half(pop, size);
    const bool have_stats = half.have_stats;
    const std::uint64_t freed = half.freed, free_space = size - half.allocated;
    const std::vector<PMEMoid>& objs = half.objects;
    std::uint64_t large = 0;
    for (PMEMoid oid; pmemobj_alloc(pop, &oid, 1 * MiB, 0, nullptr, nullptr) == 0;) ++large;
    const double lb = static_cast<double>(large * MiB);
    t.rows.push_back(
        {"libpmemobj (atomic API)", std::to_string(objs.size()),
         std::to_string(freed / MiB) + " MiB",
         have_stats ? std::to_string(free_space / MiB) + " MiB (pool - curr_allocated)" : "n/a",
         std::to_string(large), fmt(100 * lb / static_cast<double>(freed), 1) + " %",
         have_stats ? fmt(100 * lb / static_cast<double>(free_space), 1) + " %" : "n/a"});
    if (have_stats)
      record("frag", "pmemobj atomic", size, 1, "large_of_free_space", "%",
             100 * lb / static_cast<double>(free_space));
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
// 5c. movable objects and compaction (issue 21)

// Owners of movable objects, as an engine's index holds them: chunks of
// 8,192 pptrs allocated from the heap as needed (ordinary objects, not
// counted as live bytes). A handle is an owner id; with its top bit set it
// is instead the offset of an ordinary object (the final 1 MiB / 100 B fill).
struct owner_table {
  explicit owner_table(heap& on) : h(on) {}
  heap& h;
  static constexpr std::uint64_t per_chunk = 8192, plain = std::uint64_t{1} << 63;
  std::vector<daxalloc::pptr<std::byte>*> chunks;
  std::vector<std::uint64_t> free_ids;
  std::uint64_t next = 0;
  daxalloc::pptr<std::byte>& at(std::uint64_t id) { return chunks[id / per_chunk][id % per_chunk]; }
  // The chunks for n owners, allocated now (an index made before the data).
  void reserve(std::uint64_t n) {
    while (chunks.size() * per_chunk < n) {
      void* c = h.allocate(per_chunk * 8);
      std::memset(c, 0, per_chunk * 8);
      h.persist().persist(c, per_chunk * 8);
      chunks.push_back(static_cast<daxalloc::pptr<std::byte>*>(c));
    }
  }
  std::optional<std::uint64_t> alloc(std::size_t n) {
    std::uint64_t id;
    if (!free_ids.empty()) {
      id = free_ids.back();
      free_ids.pop_back();
    } else {
      if (next % per_chunk == 0 && next / per_chunk == chunks.size()) {
        void* c = h.allocate(per_chunk * 8, std::nothrow);
        if (c == nullptr) return std::nullopt;
        std::memset(c, 0, per_chunk * 8);
        h.persist().persist(c, per_chunk * 8);
        chunks.push_back(static_cast<daxalloc::pptr<std::byte>*>(c));
      }
      id = next++;
    }
    try {
      (void)h.allocate_movable(at(id), n, [](std::byte*) {});
    } catch (const daxalloc::error&) {
      free_ids.push_back(id);
      return std::nullopt;
    }
    return id;
  }
  std::optional<std::uint64_t> alloc_plain(std::size_t n) {
    void* p = h.allocate(n, std::nothrow);
    return p ? std::optional<std::uint64_t>(plain | h.offset_of(p)) : std::nullopt;
  }
  std::size_t usable(std::uint64_t v) {
    return (v & plain) ? h.usable_size(h.at(v & ~plain)) : h.usable_size(at(v).get());
  }
  void release(std::uint64_t v) {
    if (v & plain) {
      h.deallocate(h.at(v & ~plain));
      return;
    }
    h.free_clear(at(v));
    free_ids.push_back(v);
  }
};

void bench_movable() {
  const std::uint64_t size = cfg.quick ? 256 * MiB : 1 * GiB;
  std::printf(
      "## 5c. movable objects and compaction (heap::allocate_movable, heap::compact)\n\n"
      "Fill a %llu MiB heap with movable 64..512 B objects, free a random half, allocate 1 MiB "
      "blocks until failure (and free them), run one `compact()`, allocate 1 MiB blocks again. "
      "libpmemobj (same workload, atomic API; it cannot move objects) in the same section. "
      "Free space = usable bytes - allocated bytes.\n\n",
      static_cast<unsigned long long>(size / MiB));
  table t{{"allocator", "objects", "freed", "free space", "1 MiB blocks ÷ free space",
           "after compact()", "moved", "compaction"},
          {}};
  double moved_mib = 0, moved_seconds = 0;
  {
    auto h = make_heap(fresh("movable.heap"), size);
    owner_table owners(h);
    std::vector<std::uint64_t> ids;
    xorshift rng(42);
    while (const auto id = owners.alloc(64 + rng() % 449)) ids.push_back(*id);
    std::uint64_t freed = 0;
    for (std::uint64_t id : ids)
      if (rng() & 1) {
        freed += owners.usable(id);
        owners.release(id);
      }
    const auto st = h.stats();
    const std::uint64_t free_space = st.usable_bytes - st.allocated_bytes;
    const auto large_blocks = [&] {
      std::vector<void*> got;
      while (void* p = h.allocate(1 * MiB, std::nothrow)) got.push_back(p);
      for (void* p : got) h.deallocate(p);
      return static_cast<double>(got.size() * MiB);
    };
    const double before = large_blocks();
    const auto r = h.compact();
    const double after = large_blocks();
    moved_mib += static_cast<double>(r.bytes_moved) / MiB;
    moved_seconds += r.seconds;
    const double fs = static_cast<double>(free_space);
    t.rows.push_back({"daxalloc (allocate_movable, free_clear)", std::to_string(ids.size()),
                      std::to_string(freed / MiB) + " MiB",
                      std::to_string(free_space / MiB) + " MiB", fmt(100 * before / fs, 1) + " %",
                      fmt(100 * after / fs, 1) + " %",
                      std::to_string(r.objects_moved) + " objects, " +
                          fmt(static_cast<double>(r.bytes_moved) / MiB, 1) + " MiB",
                      fmt(r.seconds * 1000, 1) + " ms"});
    record("movable", "daxalloc movable", size, 1, "large_of_free_space_before_compact", "%",
           100 * before / fs);
    record("movable", "daxalloc movable", size, 1, "large_of_free_space_after_compact", "%",
           100 * after / fs);
    std::fprintf(stderr, "movable: daxalloc done\n");
  }
  {
    PMEMobjpool* pop = make_pool(fresh("movable.pool"), size);
    const pmemobj_half half = pmemobj_random_half(pop, size);
    const bool have_stats = half.have_stats;
    const std::uint64_t freed = half.freed, allocated = half.allocated;
    const std::vector<PMEMoid>& objs = half.objects;
    const double fs = static_cast<double>(size - allocated);
    std::uint64_t large = 0;
    for (PMEMoid oid; pmemobj_alloc(pop, &oid, 1 * MiB, 0, nullptr, nullptr) == 0;) ++large;
    const double lb = static_cast<double>(large * MiB);
    t.rows.push_back({"libpmemobj (atomic API)", std::to_string(objs.size()),
                      std::to_string(freed / MiB) + " MiB",
                      have_stats ? std::to_string((size - allocated) / MiB) + " MiB" : "n/a",
                      have_stats ? fmt(100 * lb / fs, 1) + " %" : "n/a", "(no compaction)", "",
                      ""});
    if (have_stats)
      record("movable", "pmemobj atomic", size, 1, "large_of_free_space", "%", 100 * lb / fs);
    pmemobj_close(pop);
    std::fprintf(stderr, "movable: libpmemobj done\n");
  }
  t.print();

  // PMDK's obj_fragmentation2 workloads with movable objects and one compact().
  const std::uint64_t pmdk_size = cfg.quick ? 192 * MiB : 768 * MiB;
  std::printf(
      "PMDK's obj_fragmentation2 workloads (as in 5b, %llu MiB heap) with the workload's objects "
      "movable and one `compact()` before the final fill (1 MiB blocks, then 100 B objects, "
      "ordinary allocations). The owners' chunks are not counted as live. libpmemobj on the same "
      "workloads: section 5b of this run.\n\n",
      static_cast<unsigned long long>(pmdk_size / MiB));
  table w{{"workload", "daxalloc movable PMDK frag", "1 MiB of free, with compact()", "moved"}, {}};
  for (const frag_workload& wl : pmdk_workloads) {
    auto h = make_heap(fresh("movable2.heap"), pmdk_size);
    owner_table owners(h);
    daxalloc::compact_result r;
    const auto d = run_pmdk_fragmentation<std::uint64_t>(
        wl, h.stats().usable_bytes, [&](std::size_t n) { return owners.alloc(n); },
        [&](std::uint64_t v) { return owners.usable(v); },
        [&](std::uint64_t v) { owners.release(v); }, [&] { r = h.compact(); },
        [&](std::size_t n) { return owners.alloc_plain(n); });
    moved_mib += static_cast<double>(r.bytes_moved) / MiB;
    moved_seconds += r.seconds;
    w.rows.push_back({wl.name, fmt(d.first), fmt(d.second, 1) + " %",
                      fmt(static_cast<double>(r.bytes_moved) / MiB, 1) + " MiB in " +
                          fmt(r.seconds * 1000, 1) + " ms"});
    record("movable", "daxalloc movable", 0, 1, std::string("large_of_free ") + wl.name, "%",
           d.second);
    std::fprintf(stderr, "movable: %s done\n", wl.name);
  }
  w.print();
  std::printf(
      "Compaction throughput over the runs above: %.1f MiB of live objects moved per "
      "second (%.1f MiB in %.3f s).\n\n",
      moved_mib / moved_seconds, moved_mib, moved_seconds);
  record("movable", "daxalloc compact", 0, 1, "throughput", "MiB/s", moved_mib / moved_seconds);

  // Incremental compaction next to a workload: one thread allocates and
  // frees movable objects and times each call; another runs compact() in
  // 1 ms steps until a pass finishes. Percentiles of the workload's calls,
  // without and with the compaction running.
  const std::uint64_t lat_size = cfg.quick ? 256 * MiB : 512 * MiB;
  auto h = make_heap(fresh("movable3.heap"), lat_size);
  owner_table owners(h);
  {
    std::vector<std::uint64_t> ids;
    xorshift rng(9);
    for (std::uint64_t made = 0; made < lat_size / 2 / 300; ++made)
      if (const auto id = owners.alloc(64 + rng() % 449)) ids.push_back(*id);
    for (std::uint64_t id : ids)
      if (rng() & 1) owners.release(id);
  }
  owner_table mine(h);
  const auto run_workload = [&](std::atomic<bool>& stop, std::vector<double>& us) {
    std::vector<std::uint64_t> live;
    xorshift rng(11);
    while (!stop.load(std::memory_order_relaxed) && us.size() < 2'000'000) {
      const auto t0 = std::chrono::steady_clock::now();
      if (live.size() < 1000 || (rng() & 1)) {
        if (const auto id = mine.alloc(64 + rng() % 449)) live.push_back(*id);
      } else {
        const std::size_t k = rng() % live.size();
        mine.release(live[k]);
        live[k] = live.back();
        live.pop_back();
      }
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    for (std::uint64_t id : live) mine.release(id);
  };
  const auto pct = [](std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
  };
  std::vector<double> alone, beside;
  {
    std::atomic<bool> stop{false};
    std::thread timer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      stop = true;
    });
    run_workload(stop, alone);
    timer.join();
  }
  unsigned steps = 0;
  double longest_step = 0;
  {
    std::atomic<bool> stop{false};
    std::thread compactor([&] {
      daxalloc::compact_options o;
      o.time_budget = std::chrono::milliseconds(1);
      for (;;) {
        const auto r = h.compact(o);
        ++steps;
        longest_step = std::max(longest_step, r.seconds * 1000);
        if (r.finished) break;
      }
      stop = true;
    });
    run_workload(stop, beside);
    compactor.join();
  }
  table l{{"allocate_movable / free_clear calls", "calls", "median", "p99", "p99.9", "max"}, {}};
  for (const auto& [name, v] : {std::pair<const char*, std::vector<double>*>{"alone", &alone},
                                {"beside compact() in 1 ms steps", &beside}})
    l.rows.push_back({name, std::to_string(v->size()), fmt(pct(*v, 0.5), 1) + " us",
                      fmt(pct(*v, 0.99), 1) + " us", fmt(pct(*v, 0.999), 1) + " us",
                      fmt(pct(*v, 1.0), 1) + " us"});
  l.print();
  std::printf("%u compaction steps of a 1 ms budget; the longest took %.2f ms.\n\n", steps,
              longest_step);
  record("movable", "daxalloc movable", 0, 2, "p99_beside_compaction", "us", pct(beside, 0.99));
  record("movable", "daxalloc movable", 0, 1, "p99_alone", "us", pct(alone, 0.99));
}

// Online shrink: fill a heap with movable objects, free 75 %, compact and
// trim; the file's allocated blocks (st_blocks) before and after.
void bench_shrink() {
  const std::uint64_t size = cfg.quick ? 512 * MiB : 4 * GiB;
  const fs::path file = fresh("shrink.heap");
  auto h = make_heap(file, size);
  owner_table owners(h);
  owners.reserve(size / 256);  // the index first, at the bottom (an unmovable object at the
                               // top would keep trim() from giving anything back)
  std::vector<std::uint64_t> ids;
  xorshift rng(21);
  while (const auto id = owners.alloc(64 + rng() % 449)) ids.push_back(*id);
  const auto blocks = [&] {
    struct stat st {};
    return ::stat(file.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
  };
  const std::uint64_t full = blocks();
  for (std::size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[rng() % i]);
  const std::size_t kept = ids.size() / 4;
  for (std::size_t i = kept; i < ids.size(); ++i) owners.release(ids[i]);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = h.compact();
  const std::uint64_t trimmed = h.trim();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::uint64_t after = blocks();
  std::printf(
      "## 5d. online shrink: a %llu MiB heap filled with movable 64..512 B objects, 75 %% "
      "freed, then compact() and trim()\n\n",
      static_cast<unsigned long long>(size / MiB));
  table t{{"objects", "kept", "file blocks full", "after compact + trim", "after ÷ full", "moved",
           "trimmed", "compact + trim"},
          {}};
  t.rows.push_back({std::to_string(ids.size()), std::to_string(kept),
                    std::to_string(full / MiB) + " MiB", std::to_string(after / MiB) + " MiB",
                    fmt(100.0 * static_cast<double>(after) / static_cast<double>(full), 1) + " %",
                    fmt(static_cast<double>(r.bytes_moved) / MiB, 1) + " MiB",
                    std::to_string(trimmed / MiB) + " MiB", fmt(seconds, 2) + " s"});
  t.print();
  std::printf(
      "(The owners, chunks of 8,192 pptrs allocated before the fill, stay: %zu chunks, "
      "%.1f MiB.)\n\n",
      owners.chunks.size(),
      static_cast<double>(owners.chunks.size() * owner_table::per_chunk * 8) / MiB);
  record("shrink", "daxalloc movable", size, 1, "blocks_after_of_full", "%",
         100.0 * static_cast<double>(after) / static_cast<double>(full));
}

// ---------------------------------------------------------------------------
// 6. recovery and 7. metadata overhead

// What a child reports through its pipe; the meaning of the fields depends on
// the workload. ok = false: the child failed.
struct child_report {
  bool ok = false;
  double t[4] = {0, 0, 0, 0};
};

// Runs body in a child. body(report) calls report(...) while its heap is
// still open; the parent then kills the child with SIGKILL: an unclean
// shutdown at a quiet instant.
using reporter = std::function<void(const child_report&)>;
child_report in_child(const std::function<void(const reporter&)>& body) {
  int fds[2];
  const pid_t pid = fork_with_pipe(fds);
  if (pid == 0) {
    const reporter report = [&](const child_report& k) {
      if (write(fds[1], &k, sizeof k) != static_cast<ssize_t>(sizeof k)) _exit(3);
      for (;;) pause();  // killed here, the heap open
    };
    try {
      body(report);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    report({});
  }
  child_report k{};
  if (read(fds[0], &k, sizeof k) != static_cast<ssize_t>(sizeof k)) k.ok = false;
  close(fds[0]);
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  return k;
}

struct meta_row {
  std::string name, label;
  daxalloc::heap_stats st;
};

std::string mib(std::uint64_t bytes) {
  return fmt(static_cast<double>(bytes) / static_cast<double>(MiB), 1) + " MiB";
}

// Object counts of the `blocks allocated` rows and of their libpmemobj peers:
// 1 and 2 million objects of 1 KiB (issue 20), a tenth of that in quick mode.
std::vector<std::size_t> blocks_allocated_counts() {
  const std::size_t div = cfg.quick ? 10 : 1;
  return {1000000 / div, 2000000 / div};
}

// The libpmemobj peer of a `blocks allocated` row: a 4 GiB pool with `objects`
// objects of 1 KiB, opened after SIGKILL as the daxalloc heaps are.
void pmemobj_recovery_row(table& t, std::size_t objects) {
  const fs::path p = fresh("recovery.pool");
  const child_report made = in_child([&](const reporter& report) {
    const double t0 = now();
    PMEMobjpool* pop = make_pool(p, 4 * GiB);
    const double t1 = now();
    for (std::size_t i = 0; i < objects; ++i)
      if (pmemobj_alloc(pop, nullptr, 1024, 0, nullptr, nullptr) != 0) break;
    report({true, {t1 - t0, now() - t1, 0, 0}});
  });
  const std::uint64_t blocks_filled = file_blocks_bytes(p);
  std::vector<double> opens, firsts;
  for (int r = 0; r < cfg.reps() && made.ok; ++r) {
    const child_report o = in_child([&](const reporter& report) {
      const double t0 = now();
      PMEMobjpool* pop = pmemobj_open(p.c_str(), "daxalloc-bench");
      const double t1 = now();
      if (pop == nullptr) {
        std::fprintf(stderr, "pmemobj_open: %s\n", pmemobj_errormsg());
        report({});
      }
      (void)pmemobj_alloc(pop, nullptr, 1024, 0, nullptr, nullptr);
      report({true, {t1 - t0, now() - t1, 0, 0}});
    });
    if (!o.ok) continue;
    opens.push_back(o.t[0]);
    firsts.push_back(o.t[1]);
  }
  const std::string name = "libpmemobj 4 GiB pool, " + std::to_string(objects) + " x 1 KiB";
  if (opens.empty()) {
    std::printf("(%s: the children failed)\n\n", name.c_str());
  } else {
    t.rows.push_back({name, "4 GiB", "-", std::to_string(objects), fmt(made.t[0] * 1e3, 1) + " ms",
                      fmt(made.t[1] * 1e3, 1) + " ms", mib(blocks_filled),
                      fmt(median(opens) * 1e3, 2) + " ms", fmt(median(firsts) * 1e3, 3) + " ms",
                      mib(file_blocks_bytes(p)), "-"});
    record("recovery", "pmemobj atomic", 4 * GiB, 1, "open_after_kill", "ms", median(opens) * 1e3);
    record("recovery", "pmemobj atomic", 4 * GiB, 1, "first_allocation", "ms",
           median(firsts) * 1e3);
    record("recovery", "pmemobj atomic", 4 * GiB, 1, "create", "ms", made.t[0] * 1e3);
  }
  std::error_code ec;
  fs::remove(p, ec);
  std::fprintf(stderr, "recovery: %s done\n", name.c_str());
}

void bench_recovery(std::vector<meta_row>& meta) {
  std::printf("## 6. recovery: open after SIGKILL (unclean shutdown), files on /dev/shm\n\n");
  std::printf(
      "A child creates the heap, allocates the objects and is killed with SIGKILL while the heap "
      "is open. Then %d times: a new child opens the heap (timed: this open recovers from the "
      "previous kill), allocates once (timed), and is killed with the heap open again. Medians "
      "of those %d opens. `present` is what the heap's sparse model has present (subsections "
      "with memmap); `tmpfs pages` is what the file really occupies (st_blocks), i.e. the RAM "
      "the heap touched. **Sparse** rows: daxalloc's fallocate is turned off (see the top of "
      "bench/daxalloc_bench.cpp), so the 16 and 64 GiB heaps fit in this 24 GiB machine; "
      "untouched pages are holes that read as zeros. The `blocks allocated` rows and libpmemobj "
      "preallocate every byte, as they normally do.\n\n",
      cfg.reps(), cfg.reps());
  table t{
      {"heap", "present", "address range", "objects", "create", "fill", "tmpfs pages after fill",
       "open after SIGKILL", "first allocation", "tmpfs pages after opens", "unclean seen"},
      {}};
  struct spec {
    std::string name;
    std::uint64_t size, max_size;
    std::size_t objects, objsize;
    bool sparse;
    std::string label;  // for the CSV
  };
  std::vector<spec> specs{
      {"1 GiB heap, sparse", 1 * GiB, 0, 10000, 256, true, "daxalloc sparse"},
      {"4 GiB heap, sparse", 4 * GiB, 0, 10000, 256, true, "daxalloc sparse"},
      {"16 GiB heap, sparse", 16 * GiB, 0, 10000, 256, true, "daxalloc sparse"},
      {"64 GiB heap, sparse", 64 * GiB, 0, 10000, 256, true, "daxalloc sparse"},
      {"1 TiB range, 64 MiB present, sparse", 64 * MiB, 1 * TiB, 10000, 256, true,
       "daxalloc 1 TiB range"},
  };
  for (const std::size_t n : blocks_allocated_counts())
    specs.push_back({"4 GiB heap, blocks allocated, " + std::to_string(n) + " x 1 KiB", 4 * GiB, 0,
                     n, 1024, false, "daxalloc blocks allocated"});
  for (const auto& sp : specs) {
    const fs::path p = fresh("recovery.heap");
    sparse_heaps.store(sp.sparse);
    const child_report made = in_child([&](const reporter& report) {
      const double t0 = now();
      auto h = make_heap(p, sp.size, sp.max_size);
      const double t1 = now();
      for (std::size_t i = 0; i < sp.objects; ++i) (void)h.allocate(sp.objsize);
      report({true, {t1 - t0, now() - t1, 0, 0}});  // the heap stays open: the parent kills us
    });
    if (!made.ok) {
      std::printf("(%s: the child failed)\n\n", sp.name.c_str());
      sparse_heaps.store(false);
      continue;
    }
    const std::uint64_t blocks_filled = file_blocks_bytes(p);
    std::vector<double> opens, firsts;
    bool unclean = true;
    for (int r = 0; r < cfg.reps(); ++r) {
      const child_report o = in_child([&](const reporter& report) {
        const double t0 = now();
        auto h = open_heap(p);
        const double t1 = now();
        (void)h.allocate(sp.objsize);
        const double t2 = now();
        report({true, {t1 - t0, t2 - t1, h.stats().unclean_shutdown ? 1.0 : 0.0, 0}});
      });
      if (!o.ok) continue;
      opens.push_back(o.t[0]);
      firsts.push_back(o.t[1]);
      unclean = unclean && o.t[2] != 0;
    }
    const std::uint64_t blocks_opened = file_blocks_bytes(p);
    {
      auto h = open_heap(p);  // once more after the last kill, for the metadata figures
      meta.push_back({sp.name, sp.label, h.stats()});
    }
    sparse_heaps.store(false);
    const std::uint64_t present = meta.back().st.present_bytes;
    const std::uint64_t range = sp.max_size ? sp.max_size : 1 * TiB;
    t.rows.push_back({sp.name, size_name(present),
                      size_name(range) + (sp.max_size ? "" : " (default)"),
                      std::to_string(sp.objects), fmt(made.t[0] * 1e3, 1) + " ms",
                      fmt(made.t[1] * 1e3, 1) + " ms", mib(blocks_filled),
                      opens.empty() ? "failed" : fmt(median(opens) * 1e3, 2) + " ms",
                      firsts.empty() ? "failed" : fmt(median(firsts) * 1e3, 3) + " ms",
                      mib(blocks_opened), unclean && !opens.empty() ? "yes" : "NO"});
    record("recovery", sp.label, present, 1, "open_after_kill", "ms", median(opens) * 1e3);
    record("recovery", sp.label, present, 1, "first_allocation", "ms", median(firsts) * 1e3);
    record("recovery", sp.label, present, 1, "create", "ms", made.t[0] * 1e3);
    record("recovery", sp.label, present, 1, "tmpfs_after_opens", "MiB",
           static_cast<double>(blocks_opened) / static_cast<double>(MiB));
    std::error_code ec;
    fs::remove(p, ec);
    std::fprintf(stderr, "recovery: %s done\n", sp.name.c_str());
  }
  for (const std::size_t n : blocks_allocated_counts()) pmemobj_recovery_row(t, n);
  t.print();
  std::printf(
      "create = heap::create / pmemobj_create; fill = the allocations after it (wall clock, "
      "in the first child); open = heap::open / pmemobj_open after SIGKILL; first allocation = "
      "the first allocate / pmemobj_alloc after that open.%s\n\n",
      cfg.quick ? " Quick mode: 100 000 and 200 000 objects, not 1 and 2 million (run --full for "
                  "those)."
                : "");
}

// ---------------------------------------------------------------------------
// 6b. the largest single allocation on an empty heap (issue 20)

// The largest multiple of `step` for which fits(n) holds, by binary search
// over the multiples of `step` below `fails`: fits(0) is taken to hold,
// fits(n) not to hold from `fails` on, and fits to be monotone (what fits,
// fits smaller).
std::uint64_t largest_fitting(std::uint64_t fails, std::uint64_t step,
                              const std::function<bool(std::uint64_t)>& fits) {
  std::uint64_t lo = 0, hi = (fails + step - 1) / step;  // in steps: lo fits, hi does not
  while (hi - lo > 1) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    (fits(mid * step) ? lo : hi) = mid;
  }
  return lo * step;
}

constexpr std::uint64_t largest_step = 2 * MiB;

// t = {free bytes, fragmentation, largest allocation, largest free} of a new
// heap of `size` bytes at p: the first two and the last as stats() reports
// them, the third by allocating (each success freed again). No allocation can
// be larger than the free bytes.
child_report daxalloc_largest(const fs::path& p, std::uint64_t size) {
  return in_child([&](const reporter& report) {
    heap h = make_heap(p, size);
    const daxalloc::heap_stats st = h.stats();
    const std::uint64_t largest =
        largest_fitting(st.free_bytes + 1, largest_step, [&](std::uint64_t n) {
          std::error_code ec;
          void* q = h.allocate(n, ec);
          if (q == nullptr) {
            if (ec != daxalloc::errc::out_of_space)
              throw std::system_error(ec, daxalloc::last_error_message());
            return false;
          }
          h.deallocate(q);
          return true;
        });
    report({true,
            {static_cast<double>(st.free_bytes), st.fragmentation, static_cast<double>(largest),
             static_cast<double>(st.largest_free_bytes)}});
  });
}

// The same for a new libpmemobj pool: free bytes = pool size -
// stats.heap.curr_allocated (its metadata counts as free), no fragmentation or
// largest free figure (t[1] and t[3] are -1). No object fills the whole pool.
child_report pmemobj_largest(const fs::path& p, std::uint64_t size) {
  return in_child([&](const reporter& report) {
    PMEMobjpool* pop = make_pool(p, size);
    int enabled = 1;  // POBJ_STATS_ENABLED_TRANSIENT
    std::uint64_t allocated = 0;
    if (pmemobj_ctl_set(pop, "stats.enabled", &enabled) == 0)
      (void)pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &allocated);
    const std::uint64_t largest = largest_fitting(size, largest_step, [&](std::uint64_t n) {
      PMEMoid oid;
      if (pmemobj_alloc(pop, &oid, n, 0, nullptr, nullptr) != 0) return false;
      pmemobj_free(&oid);
      return true;
    });
    report({true, {static_cast<double>(size - allocated), -1, static_cast<double>(largest), -1}});
  });
}

void bench_largest() {
  std::printf("## 6b. largest single allocation on an empty heap\n\n");
  std::printf(
      "A child creates the heap or pool, reads stats() and finds the largest single allocate / "
      "pmemobj_alloc that succeeds by binary search in steps of %s (each success freed again). "
      "`free` and `fragmentation` are what stats() reports on the empty heap (fragmentation = 1 "
      "- largest free / free); libpmemobj: free = pool size - stats.heap.curr_allocated (its "
      "metadata counts as free). The sparse heap is sparse as in section 6.\n\n",
      size_name(largest_step).c_str());
  table t{{"heap", "free (stats)", "fragmentation (stats)", "largest free (stats)",
           "largest allocation", "largest ÷ free"},
          {}};
  struct spec {
    std::string name;
    std::uint64_t size;
    bool sparse, pmemobj;
    std::string label;  // for the CSV
  };
  const std::vector<spec> specs{
      {"daxalloc 4 GiB heap, blocks allocated", 4 * GiB, false, false, "daxalloc blocks allocated"},
      {"daxalloc 64 GiB heap, sparse", 64 * GiB, true, false, "daxalloc sparse"},
      {"libpmemobj 4 GiB pool", 4 * GiB, false, true, "pmemobj atomic"},
  };
  for (const auto& sp : specs) {
    const removed_at_exit file{fresh(sp.pmemobj ? "largest.pool" : "largest.heap")};
    sparse_heaps.store(sp.sparse);
    const child_report k =
        sp.pmemobj ? pmemobj_largest(file.path, sp.size) : daxalloc_largest(file.path, sp.size);
    sparse_heaps.store(false);
    if (!k.ok) {
      std::printf("(%s: the child failed)\n\n", sp.name.c_str());
      continue;
    }
    const double free_bytes = k.t[0], largest = k.t[2];
    const double of_free = free_bytes > 0 ? 100 * largest / free_bytes : 0;
    t.rows.push_back({sp.name, mib(static_cast<std::uint64_t>(free_bytes)),
                      k.t[1] < 0 ? "n/a" : fmt(k.t[1], 3),
                      k.t[3] < 0 ? "n/a" : mib(static_cast<std::uint64_t>(k.t[3])),
                      mib(static_cast<std::uint64_t>(largest)), fmt(of_free, 1) + " %"});
    record_once("largest", sp.label, sp.size, "free_bytes", "MiB", free_bytes / MiB);
    if (k.t[1] >= 0) record_once("largest", sp.label, sp.size, "fragmentation", "ratio", k.t[1]);
    record_once("largest", sp.label, sp.size, "largest_allocation", "MiB", largest / MiB);
    record_once("largest", sp.label, sp.size, "largest_of_free", "%", of_free);
    std::fprintf(stderr, "largest: %s done\n", sp.name.c_str());
  }
  t.print();
}

void print_meta(const std::vector<meta_row>& meta) {
  std::printf("## 7. metadata overhead per present 4 KiB page\n\n");
  table t{{"heap", "present", "metadata", "bytes / 4 KiB page", "vs kernel struct page (64 B)"},
          {}};
  for (const auto& m : meta) {
    const double pages = static_cast<double>(m.st.present_bytes) / 4096;
    const double per = static_cast<double>(m.st.metadata_bytes) / pages;
    t.rows.push_back({m.name, size_name(m.st.present_bytes),
                      fmt(static_cast<double>(m.st.metadata_bytes) / MiB, 2) + " MiB", fmt(per, 2),
                      fmt(100 * per / 64, 1) + " %"});
    record("metadata", m.label, m.st.present_bytes, 1, "bytes_per_page", "B", per);
  }
  t.print();
  std::printf(
      "libpmemobj (estimated from its documented layout, not measured): 8 B chunk header per "
      "256 KiB chunk (0.125 B/page) + 64 B zone header per 16 GiB zone, plus for small objects a "
      "run header and a bitmap of 1 bit per allocation unit (~1-8 B per page for 64..512 B "
      "units) and a 16 B compact header per object (256 B per page of 64 B objects). daxalloc "
      "keeps no per-object header: its figure above is all of its metadata.\n\n");
}

// ---------------------------------------------------------------------------
// 8. locality: the caller walks its objects after allocating them

// Makes p escape, so that the compiler keeps the stores to *p (the
// allocators' functions carry the malloc attribute; an object never read
// again could otherwise lose its stores).
inline void escape(void* p) {
  asm volatile("" : : "r"(p) : "memory");
}

struct walk_times {
  double alloc_ns = 0, first_ns = 0, second_ns = 0;  // CPU ns per object
};

// Allocates `count` objects of `size` bytes, then reads and writes the first
// word of each in allocation order, twice. The process ends without freeing.
template <class S>
walk_times allocate_and_walk(const S& s, std::size_t count, std::size_t size) {
  std::vector<void*> objects(count);  // touched before any timing
  const double t0 = thread_cpu();
  for (void*& p : objects) {
    p = s.alloc(size);
    if (p == nullptr) out_of_memory(S::info.name, size);
  }
  const double t1 = thread_cpu();
  const auto walk = [&] {
    for (std::size_t i = 0; i < count; ++i) {
      auto* word = static_cast<volatile std::uint64_t*>(objects[i]);
      *word = *word + i;
    }
  };
  walk();
  const double t2 = thread_cpu();
  walk();
  const double t3 = thread_cpu();
  const double per = 1e9 / static_cast<double>(count);
  return {(t1 - t0) * per, (t2 - t1) * per, (t3 - t2) * per};
}

std::string sysfs_choice(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const auto open = line.find('['), close = line.find(']');
  return open != std::string::npos && close > open ? line.substr(open + 1, close - open - 1)
                                                   : "unknown";
}

void bench_locality() {
  constexpr std::size_t count = 100000, size = 512;
  std::printf("## 8. locality: %zu objects of %zu B allocated, then walked in allocation order\n\n",
              count, size);
  std::printf(
      "Each repetition in a new process, with a new heap, pool or file: allocate %zu objects of "
      "%zu B, then walk them in allocation order, reading and writing the first 8 bytes of each "
      "(a caller initialising its objects), twice. The first walk touches memory the process "
      "has not touched yet (page faults: tmpfs pages for the allocators whose objects are in a "
      "file, zero-filled anonymous pages for the others), the second only where the objects lie "
      "(cache lines, TLB, prefetch). An allocator that writes into its objects or next to them "
      "(headers, free lists) takes those page faults while allocating, so `allocate + first "
      "walk` is what a caller pays. CPU ns per object, medians of %d repetitions; `÷ jemalloc` "
      "above 1: slower than jemalloc. Transparent huge pages: anonymous memory `%s`, tmpfs `%s`; "
      "the allocator is called as in threadtest.\n\n",
      count, size, cfg.reps(), sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled").c_str(),
      sysfs_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled").c_str());
  int deaths = 0;
  std::vector<std::pair<subject_info, walk_times>> rows;
  for (const peer p : all_peers) {
    const subject_info info = info_of(p);
    std::vector<double> alloc_ns, first_ns, second_ns;
    for (int r = 0; r < cfg.reps(); ++r) {
      const walk_times w = in_subprocess<walk_times>(
          [&] {
            walk_times t;
            with_peer(p, "locality", 256 * MiB,
                      [&](const auto& s) { t = allocate_and_walk(s, count, size); });
            return t;
          },
          deaths);
      alloc_ns.push_back(w.alloc_ns);
      first_ns.push_back(w.first_ns);
      second_ns.push_back(w.second_ns);
    }
    rows.push_back({info, {median(alloc_ns), median(first_ns), median(second_ns)}});
    std::fprintf(stderr, "locality: %s done\n", info.name);
  }
  walk_times je{};
  for (const auto& [info, w] : rows)
    if (std::string(info.label) == jemalloc_subject::info.label) je = w;
  table t{{"allocator", "allocate (ns)", "first walk (ns)", "allocate + first walk (ns)",
           "÷ jemalloc", "second walk (ns)", "÷ jemalloc"},
          {}};
  for (const auto& [info, w] : rows) {
    const double both = w.alloc_ns + w.first_ns;
    t.rows.push_back({info.name, fmt(w.alloc_ns, 1), fmt(w.first_ns, 1), fmt(both, 1),
                      ratio(both, je.alloc_ns + je.first_ns), fmt(w.second_ns, 1),
                      ratio(w.second_ns, je.second_ns)});
    record("locality", info.label, size, 1, "allocate", "ns/object", w.alloc_ns);
    record("locality", info.label, size, 1, "first_walk", "ns/object", w.first_ns);
    record("locality", info.label, size, 1, "allocate_and_first_walk", "ns/object", both);
    record("locality", info.label, size, 1, "second_walk", "ns/object", w.second_ns);
  }
  t.print();
  if (deaths > 0) std::printf("%d measurement processes died and were rerun.\n\n", deaths);
}

// ---------------------------------------------------------------------------
// 9. DRAM per live object byte

// Whether a peer's objects are in a file (tmpfs: shared memory, not
// anonymous) or in anonymous memory of the process.
constexpr bool objects_in_file(peer p) {
  return p != peer::jemalloc && p != peer::mimalloc && p != peer::glibc;
}

struct mapped_bytes {
  std::uint64_t anonymous = 0, shmem = 0;
};

// The process's anonymous and shmem (tmpfs) pages, from
// /proc/self/smaps_rollup: a walk of the page tables, exact, where the RSS
// counters of /proc/self/status are per-CPU sums that lag.
mapped_bytes mapped_memory() {
  std::ifstream in("/proc/self/smaps_rollup");
  mapped_bytes m;
  for (std::string key; in >> key;) {
    std::uint64_t kb = 0;
    if (key == "Anonymous:" && in >> kb) m.anonymous = kb * KiB;
    if (key == "Pss_Shmem:" && in >> kb) m.shmem = kb * KiB;
  }
  return m;
}

struct memory_growth {
  double anonymous = 0, shmem = 0;  // bytes the fill added
};

// Allocates `count` objects of `size` bytes and writes every byte of each
// (pages an allocator hands out but nobody touches take no memory). One
// object is allocated before the first reading, so that state made once
// (thread caches, arenas, the first slab) does not count. The objects stay
// live: the process ends.
template <class S>
memory_growth fill_live(const S& s, std::size_t size, std::size_t count) {
  const auto put = [&] {
    void* p = s.alloc(size);
    if (p == nullptr) out_of_memory(S::info.name, size);
    std::memset(p, 0xA5, size);
    escape(p);
  };
  put();
  const mapped_bytes before = mapped_memory();
  for (std::size_t i = 0; i < count; ++i) put();
  const mapped_bytes after = mapped_memory();
  return {static_cast<double>(after.anonymous) - static_cast<double>(before.anonymous),
          static_cast<double>(after.shmem) - static_cast<double>(before.shmem)};
}

void bench_dram() {
  struct fill {
    std::size_t size, count;
  };
  const std::vector<fill> fills =
      cfg.quick ? std::vector<fill>{{8, 1000000}, {64, 512 * KiB}, {4 * KiB, 8 * KiB}}
                : std::vector<fill>{{8, 8000000}, {64, 4 * MiB}, {4 * KiB, 64 * KiB}};
  std::printf("## 9. DRAM per live object byte\n\n");
  std::printf(
      "Each cell in a new process, with a new heap, pool or file: allocate the objects, write "
      "every byte of each, and keep them live; `anonymous` and `shmem` are what the process's "
      "anonymous and tmpfs pages grew by meanwhile (/proc/self/smaps_rollup `Anonymous:` and "
      "`Pss_Shmem:`), after one object allocated before the first reading. The heaps, pools and "
      "files are on %s (tmpfs): their objects and on-media metadata are shmem, so their "
      "anonymous growth is the allocator's volatile state alone (and the shmem column shows "
      "where the objects went). jemalloc's, mimalloc's and glibc's objects are anonymous memory "
      "themselves, so their state is (anonymous growth - live bytes). `state ÷ live` = DRAM "
      "of the allocator's state per live object byte: anonymous ÷ live for the allocators in a "
      "file, (anonymous - live) ÷ live for the others. Live bytes = objects × requested size. "
      "One measurement per cell.\n\n",
      cfg.dir.c_str());
  int deaths = 0;
  table t{{"allocator", "objects in", "size", "objects", "live bytes", "anonymous", "shmem",
           "anonymous ÷ live", "shmem ÷ live", "state ÷ live"},
          {}};
  for (const peer p : all_peers) {
    const subject_info info = info_of(p);
    for (const fill& f : fills) {
      // Room for every object with a 128-byte minimum and a quarter to spare
      // (libpmemobj takes 128 B for an 8 B object).
      const std::uint64_t bytes =
          (f.count * std::max<std::uint64_t>(f.size + 64, 128) * 5 / 4 + 64 * MiB) / MiB * MiB;
      const memory_growth g = in_subprocess<memory_growth>(
          [&] {
            memory_growth m;
            with_peer(p, "dram", bytes, [&](const auto& s) { m = fill_live(s, f.size, f.count); });
            return m;
          },
          deaths);
      const double live = static_cast<double>(f.count * f.size);
      const double state = objects_in_file(p) ? g.anonymous : g.anonymous - live;
      t.rows.push_back({info.name, objects_in_file(p) ? "file (shmem)" : "anonymous memory",
                        size_name(f.size), std::to_string(f.count), mib(f.count * f.size),
                        mib(static_cast<std::uint64_t>(std::max(0.0, g.anonymous))),
                        mib(static_cast<std::uint64_t>(std::max(0.0, g.shmem))),
                        fmt(g.anonymous / live, 3), fmt(g.shmem / live, 3), fmt(state / live, 3)});
      record_once("dram", info.label, f.size, "anonymous_per_live_byte", "B/B", g.anonymous / live);
      record_once("dram", info.label, f.size, "shmem_per_live_byte", "B/B", g.shmem / live);
      record_once("dram", info.label, f.size, "state_per_live_byte", "B/B", state / live);
    }
    std::fprintf(stderr, "dram: %s done\n", info.name);
  }
  t.print();
  if (deaths > 0) std::printf("%d measurement processes died and were rerun.\n\n", deaths);
}

// ---------------------------------------------------------------------------
// 10. pins by address (heap::pin(p), heap::unpin): what a pin + unpin costs,
// what the table of pins costs as it grows, and what pins add to a free;
// next to mlock + munlock of a page of the same mapping (what an engine
// might otherwise use to keep I/O memory resident) and glibc malloc + free.

// Runs body(t) on `threads` new threads, started together; their results,
// in thread order. An exception of a thread is rethrown here.
template <class Result, class Body>
std::vector<Result> on_threads(unsigned threads, Body&& body) {
  std::vector<Result> out(threads);
  std::vector<std::exception_ptr> failures(threads);
  std::barrier start(static_cast<std::ptrdiff_t>(threads));
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      start.arrive_and_wait();
      try {
        out[t] = body(t);
      } catch (...) {
        failures[t] = std::current_exception();
      }
    });
  for (auto& th : ts) th.join();
  for (const auto& f : failures)
    if (f) std::rethrow_exception(f);
  return out;
}

// Nanoseconds per operation of body(t), which runs `ops` operations: of the
// thread's CPU time and of the wall clock, each the mean over the threads.
// CPU time leaves out time slices taken by other processes, but also the
// time a thread sleeps on a contended lock; the wall clock has both.
struct ns_per_op {
  double cpu = 0, wall = 0;
};
template <class Body>
ns_per_op time_per_op(unsigned threads, std::size_t ops, Body&& body) {
  const auto times = on_threads<ns_per_op>(threads, [&](unsigned t) {
    const double c0 = thread_cpu(), w0 = now();
    body(t);
    return ns_per_op{thread_cpu() - c0, now() - w0};
  });
  ns_per_op sum;
  for (const ns_per_op& x : times) {
    sum.cpu += x.cpu;
    sum.wall += x.wall;
  }
  const double scale = 1e9 / threads / static_cast<double>(ops);
  return {sum.cpu * scale, sum.wall * scale};
}

// One figure at 1 and 2 threads: the samples of every round, then medians.
struct pin_figure {
  std::array<std::vector<double>, 2> samples, wall_samples;
  void add(unsigned threads, ns_per_op x) {
    samples[threads - 1].push_back(x.cpu);
    wall_samples[threads - 1].push_back(x.wall);
  }
  [[nodiscard]] double at(unsigned threads) const { return median(samples[threads - 1]); }
  [[nodiscard]] double wall_at(unsigned threads) const { return median(wall_samples[threads - 1]); }
};

// a ÷ b, with three decimals below 0.1 (a pin pair ÷ a system call).
std::string fine_ratio(double a, double b) {
  return a > 0 && b > 0 && a / b < 0.1 ? fmt(a / b, 3) + "x" : ratio(a, b);
}

void bench_pins() {
  // Short measurements, and three times the usual rounds: each row's median
  // then has enough samples of this noisy machine.
  const int rounds = 3 * cfg.reps();
  const std::size_t pairs = cfg.quick ? 100000 : 400000;  // per thread and measurement
  const std::size_t many = 100000;                        // pinned at once, over all threads
  const std::size_t others = 10000;                       // pinned beside the free path
  const std::size_t window = 64;                          // live objects per thread there
  const std::size_t block = 500;                          // free-path steps timed at once
  const std::size_t free_steps = pairs / 4 / block * block, syscall_pairs = pairs / 20;
  std::printf(
      "## 10. pins by address: heap::pin(p) + unpin, the table of pins, and a free\n\n"
      "CPU nanoseconds per operation of each thread (CLOCK_THREAD_CPUTIME_ID), the mean over "
      "the threads; cells are `1 thread / 2 threads (2T÷1T)`. Every figure is the median of %d "
      "rounds (3 × --reps); in each round every row is measured once, in table order, so that "
      "the rows of a round see the same machine. Objects: 64 KiB extents allocated with "
      "allocate(64 KiB, 4096) in a sparse 8 GiB heap (only its memmap is written) and 256 B "
      "slab objects (allocate(256)) in a 256 MiB heap, each thread its own unless a row says "
      "otherwise. `pin_guard`: `auto g = h.pin(p);` and its destructor (unpin(p, error_code&)); "
      "`pin + unpin`: `h.pin(p).release();` then `h.unpin(p)`. %zu pairs per thread and "
      "measurement (%zu for mlock).\n\n",
      rounds, pairs, syscall_pairs);
  // 64 KiB extents (4 KiB aligned) in a sparse heap (as in section 6: only
  // the memmap is written, so 100,000 of them take no RAM) and 256 B slab
  // objects in a second heap, so that each heap's table of pins is new when
  // its first fill is timed.
  const fs::path extent_file = fresh("pins-extents.heap");
  const removed_at_exit extent_gone{extent_file}, slab_gone{fresh("pins-slabs.heap")};
  sparse_heaps.store(true);
  auto xh = make_heap(extent_file, 8 * GiB);
  sparse_heaps.store(false);
  auto sh = make_heap(slab_gone.path, 256 * MiB);
  std::vector<void*> extents(many), slabs(many);
  for (auto& p : extents) p = xh.allocate(64 * KiB, 4096);
  for (auto& p : slabs) p = sh.allocate(256);
  // The free path: two twin heaps, one with `others` objects pinned (they
  // swap roles every round), so that rows a and b differ by the pins alone.
  const removed_at_exit twin0{fresh("pins-frees0.heap")}, twin1{fresh("pins-frees1.heap")};
  std::array<heap, 2> twins{make_heap(twin0.path, 128 * MiB), make_heap(twin1.path, 128 * MiB)};
  std::array<std::vector<void*>, 2> other;
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t k = 0; k < others; ++k) other[i].push_back(twins[i].allocate(256));

  struct kind {
    const char* name;
    heap* h;
    std::vector<void*>* objects;
    std::uint64_t size;
  };
  const std::array<kind, 2> kinds{kind{"64 KiB extent", &xh, &extents, 64 * KiB},
                                  kind{"256 B slab object", &sh, &slabs, 256}};
  enum class form { guard, explicit_unpin };
  const auto form_name = [](form f) { return f == form::guard ? "pin_guard" : "pin + unpin"; };
  // pins of p and unpins, `n` pairs, in the form f.
  const auto pin_pairs = [](heap& h, void* p, std::size_t n, form f) {
    if (f == form::guard) {
      for (std::size_t i = 0; i < n; ++i) auto g = h.pin(p);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        (void)h.pin(p).release();
        h.unpin(p);
      }
    }
  };

  // The first fill of each heap's table (a new table rehashes as it grows),
  // once, one thread, before anything else is pinned there.
  std::array<std::pair<double, double>, 2> first_fill{};  // ns per pin, per unpin
  for (std::size_t k = 0; k < kinds.size(); ++k) {
    heap& h = *kinds[k].h;
    const auto& objs = *kinds[k].objects;
    const double t0 = thread_cpu();
    for (void* p : objs) (void)h.pin(p).release();
    const double t1 = thread_cpu();
    for (void* p : objs) h.unpin(p);
    const double t2 = thread_cpu();
    first_fill[k] = {(t1 - t0) / many * 1e9, (t2 - t1) / many * 1e9};
  }

  // 1. one object pinned and unpinned again and again, per kind and form;
  // then both threads on one object (2 threads only).
  std::map<std::string, pin_figure> single;  // by kind name + form
  std::map<std::string, pin_figure> shared;  // by kind name
  // 2. `many` objects pinned, then unpinned: ns per pin, per unpin.
  std::map<std::string, std::pair<pin_figure, pin_figure>> bulk;
  // 3. the free path, 256 B: allocate + deallocate, nothing pinned / others
  // pinned; allocate + pin + unpin + deallocate; allocate + pin + deallocate
  // + unpin (the memory handed back at the unpin).
  const std::array<std::string, 4> free_rows{
      "allocate + deallocate, nothing pinned",
      "allocate + deallocate, " + std::to_string(others) + " other objects pinned",
      "allocate + pin + unpin + deallocate",
      "allocate + pin + deallocate + unpin (deferred hand-back)",
  };
  std::array<pin_figure, 4> frees;
  // 4. references.
  pin_figure mlock_pair, malloc_pair;
  std::string mlock_failure;

  // A page of each thread's own, in the extent heap's mapping, resident.
  std::array<void*, 2> pages{extents[many - 1], extents[many - 2]};
  for (void* p : pages) static_cast<volatile std::byte*>(p)[0] = std::byte{1};

  for (int r = 0; r < rounds; ++r) {
    for (unsigned n = 1; n <= 2; ++n) {
      // Untimed: the first row of a round came out slower than the same row
      // later in the round (the threads' and the core's start).
      (void)time_per_op(n, pairs,
                        [&](unsigned t) { pin_pairs(xh, extents[t], pairs, form::guard); });
      for (const kind& k : kinds)
        for (form f : {form::guard, form::explicit_unpin})
          single[std::string(k.name) + form_name(f)].add(
              n, time_per_op(n, pairs,
                             [&](unsigned t) { pin_pairs(*k.h, (*k.objects)[t], pairs, f); }));
      if (n == 2)
        for (const kind& k : kinds)
          shared[k.name].add(n, time_per_op(n, pairs, [&](unsigned) {
                               pin_pairs(*k.h, (*k.objects)[0], pairs, form::guard);
                             }));

      for (const kind& k : kinds)
        for (form f : {form::guard, form::explicit_unpin}) {
          // Thread t pins objects t, t + n, t + 2n, ...: the table reaches
          // `many` entries whatever the thread count. One pass untimed
          // first, so that no row pays for the caches the rows before it
          // took (each row in the same steady state).
          const auto times = on_threads<std::pair<double, double>>(n, [&](unsigned t) {
            for (std::size_t i = t; i < many; i += n) (void)k.h->pin((*k.objects)[i]).release();
            for (std::size_t i = t; i < many; i += n) k.h->unpin((*k.objects)[i]);
            std::vector<daxalloc::pin_guard<void>> guards;
            if (f == form::guard) guards.reserve(many / n + 1);
            const double t0 = thread_cpu();
            if (f == form::guard) {
              for (std::size_t i = t; i < many; i += n) guards.push_back(k.h->pin((*k.objects)[i]));
            } else {
              for (std::size_t i = t; i < many; i += n) (void)k.h->pin((*k.objects)[i]).release();
            }
            const double t1 = thread_cpu();
            if (f == form::guard) {
              guards.clear();
            } else {
              for (std::size_t i = t; i < many; i += n) k.h->unpin((*k.objects)[i]);
            }
            return std::pair{t1 - t0, thread_cpu() - t1};
          });
          double pin_s = 0, unpin_s = 0;
          for (const auto& [pin_time, unpin_time] : times) {
            pin_s += pin_time;
            unpin_s += unpin_time;
          }
          auto& [pin_fig, unpin_fig] = bulk[std::string(k.name) + form_name(f)];
          pin_fig.samples[n - 1].push_back(pin_s / many * 1e9);
          unpin_fig.samples[n - 1].push_back(unpin_s / many * 1e9);
        }

      // Blocks of `block` steps of rows a, b, c, d in turn, each row timed
      // over its blocks: a slower phase of the machine falls on all four.
      heap& quiet = twins[r % 2];
      heap& busy = twins[1 - r % 2];
      for (void* p : other[1 - r % 2]) (void)busy.pin(p).release();
      const auto spent = on_threads<std::array<ns_per_op, 4>>(n, [&](unsigned) {
        std::array<std::array<void*, window>, 4> live{};
        const auto heap_of = [&](std::size_t row) -> heap& { return row == 1 ? busy : quiet; };
        for (std::size_t row = 0; row < live.size(); ++row)
          for (auto& p : live[row]) p = heap_of(row).allocate(256);
        std::array<ns_per_op, 4> sum{};
        for (std::size_t b0 = 0; b0 < free_steps; b0 += block)
          for (std::size_t row = 0; row < live.size(); ++row) {
            heap& h = heap_of(row);
            const double c0 = thread_cpu(), w0 = now();
            for (std::size_t i = b0; i < b0 + block; ++i) {
              void*& p = live[row][i % window];
              if (row >= 2) (void)h.pin(p).release();
              if (row == 2) h.unpin(p);
              h.deallocate(p);
              if (row == 3) h.unpin(p);
              p = h.allocate(256);
            }
            sum[row].cpu += thread_cpu() - c0;
            sum[row].wall += now() - w0;
          }
        for (std::size_t row = 0; row < live.size(); ++row)
          for (void* p : live[row]) heap_of(row).deallocate(p);
        return sum;
      });
      for (void* p : other[1 - r % 2]) busy.unpin(p);
      for (std::size_t row = 0; row < frees.size(); ++row) {
        ns_per_op x;
        for (const auto& t : spent) {
          x.cpu += t[row].cpu;
          x.wall += t[row].wall;
        }
        const double scale = 1e9 / n / static_cast<double>(free_steps);
        frees[row].add(n, {x.cpu * scale, x.wall * scale});
      }

      if (mlock_failure.empty()) {
        try {
          mlock_pair.add(
              n, time_per_op(n, syscall_pairs, [&](unsigned t) {
                for (std::size_t i = 0; i < syscall_pairs; ++i)
                  if (mlock(pages[t], 4 * KiB) != 0 || munlock(pages[t], 4 * KiB) != 0)
                    throw std::runtime_error(std::string("mlock: ") + std::strerror(errno));
              }));
        } catch (const std::exception& e) {
          mlock_failure = e.what();
        }
      }
      malloc_pair.add(
          n, time_per_op(n, pairs, [&](unsigned) {
            for (std::size_t i = 0; i < pairs; ++i) {
              void* p = __libc_malloc(256);
              asm volatile("" : : "r"(p) : "memory");  // kept, as a caller would keep it
              __libc_free(p);
            }
          }));
    }
    std::fprintf(stderr, "pins: round %d done\n", r + 1);
  }

  const auto cell = [](const pin_figure& f) {
    return fmt(f.at(1), 1) + " / " + fmt(f.at(2), 1) + " (" + ratio(f.at(2), f.at(1)) + ")";
  };
  const auto wall_cell = [](const pin_figure& f) {
    return fmt(f.wall_at(1), 1) + " / " + fmt(f.wall_at(2), 1);
  };
  const auto ratios = [](const pin_figure& a, const pin_figure& b) {
    return fine_ratio(a.at(1), b.at(1)) + " / " + fine_ratio(a.at(2), b.at(2));
  };
  const auto record_figure = [rounds](const std::string& label, std::uint64_t size,
                                      const std::string& metric, const pin_figure& f) {
    for (unsigned n = 1; n <= 2; ++n)
      if (!f.samples[n - 1].empty()) {
        record("pins", label, size, n, metric, "ns", f.at(n));
        csv_rows.back().reps = rounds;
        if (!f.wall_samples[n - 1].empty()) {
          record("pins", label, size, n, metric + "_wall", "ns", f.wall_at(n));
          csv_rows.back().reps = rounds;
        }
      }
  };

  std::printf(
      "One object pinned and unpinned again and again (a pair: one pin and one unpin), next "
      "to the references of the same round: mlock + munlock of one resident 4 KiB page of the "
      "heap's mapping (each thread its own page) and glibc malloc(256) + free. The ratios "
      "are of CPU time; `wall ns` is the wall clock per pair of each thread (CPU time leaves "
      "out the time a thread sleeps on a contended lock). At 2 threads, wall ≈ CPU means that "
      "the two threads ran at once; wall ≈ 2 × CPU that they took turns on one core (another "
      "job held the other), and then no 2-thread cell of this section shows contention:\n\n");
  table a{{"pair", "CPU ns per pair", "wall ns", "÷ mlock + munlock", "÷ glibc malloc + free"}, {}};
  for (const kind& k : kinds)
    for (form f : {form::guard, form::explicit_unpin}) {
      const pin_figure& fig = single.at(std::string(k.name) + form_name(f));
      a.rows.push_back({std::string(k.name) + ", " + form_name(f), cell(fig), wall_cell(fig),
                        mlock_failure.empty() ? ratios(fig, mlock_pair) : "n/a",
                        ratios(fig, malloc_pair)});
      record_figure(std::string("daxalloc ") + form_name(f), k.size, "ns_per_pair", fig);
    }
  for (const kind& k : kinds) {
    const pin_figure& fig = shared.at(k.name);
    a.rows.push_back({std::string(k.name) + ", pin_guard, both threads on one object",
                      "– / " + fmt(fig.at(2), 1), "– / " + fmt(fig.wall_at(2), 1), "", ""});
    record_figure("daxalloc pin_guard one object", k.size, "ns_per_pair", fig);
  }
  a.rows.push_back({"mlock + munlock of a 4 KiB page",
                    mlock_failure.empty() ? cell(mlock_pair) : "failed: " + mlock_failure,
                    mlock_failure.empty() ? wall_cell(mlock_pair) : "", "", ""});
  a.rows.push_back({"glibc malloc(256) + free", cell(malloc_pair), wall_cell(malloc_pair), "", ""});
  if (mlock_failure.empty()) record_figure("mlock + munlock", 4 * KiB, "ns_per_pair", mlock_pair);
  record_figure("glibc", 256, "ns_per_pair", malloc_pair);
  a.print();

  std::printf(
      "%zu objects pinned at once, then unpinned (over both threads: thread t takes objects t, "
      "t+2, t+4, ...), so the table grows to %zu entries and back in every round; the "
      "`pin_guard` rows keep the guards in a reserved vector and clear it. Each measurement "
      "follows an untimed pass of the same pins and unpins. The buckets of a "
      "table stay when its entries go, so only the first fill of a heap's table rehashes: "
      "`first fill` is that fill, measured once (1 thread, pin + unpin, before anything else "
      "was pinned in that heap). `÷ one object` = ns per pair here ÷ the same pair on one "
      "object, above:\n\n",
      many, many);
  table b{{"objects", "ns per pin", "ns per unpin", "ns per pair", "÷ one object",
           "first fill: pin, unpin"},
          {}};
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    const kind& k = kinds[i];
    for (form f : {form::guard, form::explicit_unpin}) {
      const std::string key = std::string(k.name) + form_name(f);
      const auto& [pin_fig, unpin_fig] = bulk.at(key);
      pin_figure pair_fig;
      for (unsigned n = 1; n <= 2; ++n)
        pair_fig.samples[n - 1].push_back(pin_fig.at(n) + unpin_fig.at(n));
      b.rows.push_back({std::to_string(many) + " × " + k.name + ", " + form_name(f), cell(pin_fig),
                        cell(unpin_fig), cell(pair_fig), ratios(pair_fig, single.at(key)),
                        f == form::explicit_unpin
                            ? fmt(first_fill[i].first, 1) + ", " + fmt(first_fill[i].second, 1)
                            : ""});
      record_figure(std::string("daxalloc ") + form_name(f) + " many", k.size, "ns_per_pin",
                    pin_fig);
      record_figure(std::string("daxalloc ") + form_name(f) + " many", k.size, "ns_per_unpin",
                    unpin_fig);
    }
    record_once("pins", "daxalloc first fill", k.size, "ns_per_pin", "ns", first_fill[i].first);
    record_once("pins", "daxalloc first fill", k.size, "ns_per_unpin", "ns", first_fill[i].second);
  }
  b.print();

  std::printf(
      "What pins add to a free, 256 B objects (durable allocate and deallocate, one fence "
      "each): each thread keeps %zu live objects per row and in each step frees one and "
      "allocates one in its place; the rows run in turns of %zu steps, each row timed over its "
      "turns (%zu steps per thread and measurement). A free looks its object up in the table "
      "of pins only when some object of the heap is pinned (one atomic load otherwise): row b "
      "runs in a twin heap of 128 MiB with %zu other objects pinned (the twins swap roles "
      "every round), so every free there takes a shard's lock and looks. A pinned object that "
      "is freed is free on the media at once and handed back to the allocator at its last "
      "unpin (row d). CPU ns per step:\n\n",
      window, block, free_steps, others);
  // Each row next to the one it adds to: the lookup (b - a), a pin pair in
  // the step (c - a), the deferred hand-back instead of the immediate one
  // (d - c).
  const std::array<int, 4> versus{-1, 0, 0, 2};
  table c{{"step", "ns per step", "minus", "ns added"}, {}};
  for (std::size_t row = 0; row < free_rows.size(); ++row) {
    const int v = versus[row];
    const std::string added = v < 0 ? ""
                                    : fmt(frees[row].at(1) - frees[v].at(1), 1) + " / " +
                                          fmt(frees[row].at(2) - frees[v].at(2), 1);
    c.rows.push_back({std::string(1, static_cast<char>('a' + row)) + ". " + free_rows[row],
                      cell(frees[row]), v < 0 ? "" : std::string(1, static_cast<char>('a' + v)),
                      added});
    record_figure(std::string("daxalloc ") + free_rows[row], 256, "ns_per_step", frees[row]);
  }
  c.print();
}

// The file of the library a symbol resolves to in this process, as the
// dynamic linker chose it (global scope, DT_NEEDED order).
std::string defined_in(const char* symbol) {
  Dl_info info{};
  void* f = dlsym(RTLD_DEFAULT, symbol);
  if (f == nullptr || dladdr(f, &info) == 0 || info.dli_fname == nullptr) return "nowhere";
  return fs::path(info.dli_fname).filename().string();
}

// jemalloc and mimalloc both define malloc, free and operator new, and
// mimalloc also defines __libc_malloc and __libc_free (bench/meson.build).
// Every row must measure the allocator it names: malloc (what the libraries
// and the benchmark itself use) must be jemalloc's, __libc_malloc glibc's.
// Returns a line for the header, or exits when a symbol went elsewhere.
std::string check_allocator_symbols() {
  struct expectation {
    const char* symbol;
    const char* library;  // prefix of the file name
  };
  const expectation wanted[] = {
      {"malloc", "libjemalloc.so"},  {"free", "libjemalloc.so"},      {"_Znwm", "libjemalloc.so"},
      {"__libc_malloc", "libc.so"},  {"__libc_free", "libc.so"},      {"reallocarray", "libc.so"},
      {"mallocx", "libjemalloc.so"}, {"mi_malloc", "libmimalloc.so"},
  };
  std::string line;
  bool ok = true;
  for (const auto& w : wanted) {
    const std::string file = defined_in(w.symbol);
    if (file.rfind(w.library, 0) != 0) {
      std::fprintf(stderr, "daxalloc-bench: %s resolves to %s, not %s*: see bench/meson.build\n",
                   w.symbol, file.c_str(), w.library);
      ok = false;
    }
    line += std::string(line.empty() ? "" : ", ") + w.symbol + " → " + file;
  }
  if (!ok) std::exit(2);
  return line;
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
  const std::string symbols = check_allocator_symbols();
  std::printf("# daxalloc-bench (%s mode, %d repetitions)\n\n", cfg.quick ? "quick" : "full",
              cfg.reps());
  std::printf("- machine: %ld CPUs online, %s, Linux %s; load average at start %s\n",
              sysconf(_SC_NPROCESSORS_ONLN), cpu.c_str(), u.release, load_average().c_str());
  std::printf(
      "- region: files in %s (tmpfs, no real pmem); PMEM_IS_PMEM_FORCE=%s (libpmemobj: CLWB + "
      "SFENCE); daxalloc: persistence_mode::cache_flush (CLWB + SFENCE)\n",
      cfg.dir.c_str(), std::getenv("PMEM_IS_PMEM_FORCE"));
  std::printf(
      "- jemalloc is linked and therefore also replaces malloc in this process; the glibc rows "
      "call __libc_malloc/__libc_free, the mimalloc rows mi_malloc/mi_free (mimalloc is linked "
      "after libc, so that it replaces neither); checked with dlsym: %s\n",
      symbols.c_str());
  std::printf("- shared, noisy machine: compare rows of the same run, not runs\n\n");
  std::fflush(stdout);
}

// Runs one workload in its own process, so that no allocator's state (thread
// caches, arenas, mappings) carries over into the next workload, and a crash
// in a peer costs one table, not the run. Returns 0 when it succeeded.
int run_isolated(const std::string& name, const std::function<void()>& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    return 1;
  }
  if (pid == 0) {
    int rc = 0;
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "daxalloc-bench: %s: %s\n", name.c_str(), e.what());
      std::printf("**%s failed: %s**\n\n", name.c_str(), e.what());
      rc = 1;
    }
    write_csv(false);
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) {
    std::printf(
        "**%s: the process died with signal %d (%s); this workload's figures are missing.**\n\n",
        name.c_str(), WTERMSIG(status), strsignal(WTERMSIG(status)));
    std::fprintf(stderr, "daxalloc-bench: %s died with signal %d\n", name.c_str(),
                 WTERMSIG(status));
    return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // libpmem reads PMEM_IS_PMEM_FORCE once; make sure it is set before any use.
  if (const char* v = std::getenv("PMEM_IS_PMEM_FORCE"); v == nullptr || std::strcmp(v, "1") != 0) {
    setenv("PMEM_IS_PMEM_FORCE", "1", 1);
    execv("/proc/self/exe", argv);
    std::perror("execv /proc/self/exe");  // fall through: set in our environment anyway
  }
  const char* usage =
      "usage: %s [--quick | --full] [--reps=N] [--csv=FILE] [--dir=/dev/shm]\n"
      "          "
      "[--only=churn,prodcon,threads,fences,frag,movable,shrink,recovery,locality,dram,pins]\n";
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
    } else if (a.rfind("--csv=", 0) == 0) {
      cfg.csv = a.substr(6);
    } else if (a.rfind("--reps=", 0) == 0) {
      cfg.reps_override = std::atoi(a.c_str() + 7);
    } else {
      std::fprintf(stderr, usage, argv[0]);
      return 2;
    }
  }
  header();  // exits if an allocator symbol resolved to the wrong library
  workdir = cfg.dir / ("daxalloc-bench-" + std::to_string(getpid()));
  fs::create_directories(workdir);
  write_csv(true);
  int rc = 0;
  if (cfg.wants("churn")) rc |= run_isolated("churn", bench_churn);
  if (cfg.wants("prodcon")) rc |= run_isolated("prodcon", bench_prodcon);
  if (cfg.wants("threads")) rc |= run_isolated("threads", bench_threads);
  if (cfg.wants("fences")) rc |= run_isolated("fences", bench_fences);
  if (cfg.wants("frag")) rc |= run_isolated("frag", bench_frag);
  if (cfg.wants("frag")) rc |= run_isolated("frag_pmdk", bench_pmdk_fragmentation);
  if (cfg.wants("movable")) rc |= run_isolated("movable", bench_movable);
  if (cfg.wants("movable") || cfg.wants("shrink")) rc |= run_isolated("shrink", bench_shrink);
  if (cfg.wants("recovery"))
    rc |= run_isolated("recovery", [] {
      std::vector<meta_row> meta;
      bench_recovery(meta);
      bench_largest();
      print_meta(meta);
    });
  if (cfg.wants("locality")) rc |= run_isolated("locality", bench_locality);
  if (cfg.wants("dram")) rc |= run_isolated("dram", bench_dram);
  if (cfg.wants("pins")) rc |= run_isolated("pins", bench_pins);
  std::printf("Load average at the end: %s\n", load_average().c_str());
  std::error_code ec;
  fs::remove_all(workdir, ec);
  return rc;
}
