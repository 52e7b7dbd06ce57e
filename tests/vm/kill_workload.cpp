// The guest program of the VM-kill recovery rounds (tests/vm/kill-rounds.sh):
// a workload that publishes objects atomically on a heap until the host kills
// the VM, and the check that runs after the next boot.
//
//   kill_workload run PATH TAG [--create] [--seed N] [--count N]
//   kill_workload verify PATH TAG
//
// PATH is a devdax device or a file on an fsdax mount; TAG names the heap in
// the console lines (devdax, fsdax). The heap's root holds a singly linked
// list, newest node first. Each node is {magic, size, seq, checksum, next}
// followed by `size` payload bytes, all derived from seq, so a node can be
// checked on its own. `run` loops (forever, or --count publishes):
//
//   publish seq:  one daxalloc::batch reserves the node, links it at the head
//                 and sets root->next_seq = seq + 1 and root->published + 1;
//                 then prints "PUBLISHED TAG seq".
//   free:         now and then (never the newest node) prints
//                 "FREEING TAG seq", then one batch unlinks the node, frees it
//                 (defer_free) and bumps root->freed; then "FREED TAG seq".
//   cancel:       now and then builds a batch with a node and a store and
//                 cancels it, which must leave nothing behind.
//
// Every console line is one write() followed by tcdrain(): when the next
// operation starts, the host has the line. So after a kill the host knows the
// state up to one operation in flight: the publish of the seq after the last
// PUBLISHED, or the free announced by a FREEING without its FREED.
//
// `verify` opens the heap (recovery), runs heap::check(), walks the list
// checking every node (magic, bounds, order, checksum, payload), checks the
// root's counters against the list and that the heap holds exactly the list's
// objects and the root (no leak from a torn publish or free), and prints:
//
//   VERIFY TAG opened: unclean shutdown recovered|clean, next N, live L, published P, freed F
//   PRESENT TAG 0-11,13,15-40          (the live seqs, ascending; several lines if long)
//   VERIFY TAG OK                      or  VERIFY TAG FAIL <reason>   (one line per problem)
//
// Exit status: 0 when verify found no problem (run: only on --count or error).
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"

namespace {

using daxalloc::pptr;

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint32_t node_magic = 0x4b574e31;             // "KWN1"
constexpr std::uint64_t root_magic = 0x6b696c6c2d726f6fULL;  // "kill-roo"
constexpr std::uint32_t max_payload = 256 * 1024;
constexpr std::size_t max_live = 1000;  // frees every time above this

struct node {
  std::uint32_t magic;
  std::uint32_t size;  // payload bytes, a multiple of 8
  std::uint64_t seq;
  std::uint64_t checksum;  // of magic, size, seq and the payload
  pptr<node> next;         // the next older node
  [[nodiscard]] std::uint64_t* payload() { return reinterpret_cast<std::uint64_t*>(this + 1); }
  [[nodiscard]] const std::uint64_t* payload() const {
    return reinterpret_cast<const std::uint64_t*>(this + 1);
  }
};
static_assert(sizeof(node) == 32);

struct list_root {
  std::uint64_t magic;     // 0 until the first publish sets it
  std::uint64_t next_seq;  // the seq of the next publish
  std::uint64_t published;
  std::uint64_t freed;
  pptr<node> head;  // the newest node
};

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The payload's i-th word: a function of seq and i only.
std::uint64_t payload_word(std::uint64_t seq, std::uint64_t i) {
  return splitmix(seq * 0x100000001b3ULL + i);
}

std::uint64_t checksum_of(const node& n) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ n.magic;
  h = (h ^ n.size) * 0x100000001b3ULL;
  h = (h ^ n.seq) * 0x100000001b3ULL;
  const std::uint64_t* p = n.payload();
  for (std::uint32_t i = 0; i < n.size / 8; ++i) h = (h ^ p[i]) * 0x100000001b3ULL + (h >> 29);
  return h;
}

// One console line: one write(), then wait until the tty has sent it (the
// serial console is what the host sees; a line still in the tty's buffer
// when the VM is killed would be lost).
void say(const char* format, ...) __attribute__((format(printf, 1, 2)));
void say(const char* format, ...) {
  char line[4096];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(line, sizeof line - 1, format, args);
  va_end(args);
  if (n < 0) return;
  if (n > static_cast<int>(sizeof line) - 2) n = sizeof line - 2;
  line[n++] = '\n';
  for (int done = 0; done < n;) {
    const ssize_t w = ::write(STDOUT_FILENO, line + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) std::exit(3);  // the host can no longer see us
    done += static_cast<int>(w);
  }
  ::tcdrain(STDOUT_FILENO);  // ENOTTY when not a terminal: nothing to wait for
}

class rng {
 public:
  explicit rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() { return splitmix(state_++); }
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

// Payload sizes: mostly small slab objects, some larger slab objects, and a
// few page extents (beyond the 64 KiB of the largest size class).
std::uint32_t pick_size(rng& r) {
  const auto kind = r.below(100);
  std::uint64_t size = 0;
  if (kind < 70) {
    size = 8 + r.below(512);
  } else if (kind < 95) {
    size = 512 + r.below(8192);
  } else {
    size = 65 * 1024 + r.below(max_payload - 65 * 1024);
  }
  return static_cast<std::uint32_t>(size / 8 * 8);
}

void fill(node* n, std::uint64_t seq, std::uint32_t size) {
  n->magic = node_magic;
  n->size = size;
  n->seq = seq;
  std::uint64_t* p = n->payload();
  for (std::uint32_t i = 0; i < size / 8; ++i) p[i] = payload_word(seq, i);
  n->checksum = checksum_of(*n);
}

std::string ranges(const std::vector<std::uint64_t>& ascending, std::size_t from, std::size_t to) {
  std::string s;
  for (std::size_t i = from; i < to;) {
    std::size_t j = i;
    while (j + 1 < to && ascending[j + 1] == ascending[j] + 1) ++j;
    if (!s.empty()) s += ',';
    s += std::to_string(ascending[i]);
    if (j > i) s += '-' + std::to_string(ascending[j]);
    i = j + 1;
  }
  return s;
}

// The objects a heap holds besides the list's nodes: the root object.
std::uint64_t baseline_objects = 1;

int verify(const std::string& path, const char* tag) {
  std::vector<std::string> problems;
  auto problem = [&](const std::string& p) {
    if (problems.size() < 20) problems.push_back(p);
  };
  daxalloc::heap h = daxalloc::heap::open(path);
  const auto opened = h.stats();
  auto* root = h.root<list_root>();
  const auto* lo = reinterpret_cast<const std::byte*>(h.base());
  const auto* hi = lo + h.size();

  for (const auto& p : h.check()) problem("heap check: " + p);
  if (root->magic != root_magic && !(root->magic == 0 && root->next_seq == 0 &&
                                     root->published == 0 && root->freed == 0 && !root->head))
    problem("bad root: magic " + std::to_string(root->magic));

  std::vector<std::uint64_t> seqs;
  std::uint64_t previous = UINT64_MAX;
  std::uint64_t corrupt = 0;
  for (const node* n = root->head.get(); n != nullptr; n = n->next.get()) {
    const auto* at = reinterpret_cast<const std::byte*>(n);
    const std::string where = "node at offset " + std::to_string(at - lo);
    if (at < lo || at + sizeof(node) > hi || reinterpret_cast<std::uintptr_t>(at) % 8 != 0) {
      problem("a pointer leaves the heap or is misaligned (" + std::to_string(at - lo) + ")");
      ++corrupt;
      break;
    }
    if (n->magic != node_magic || n->size > max_payload || n->size % 8 != 0 ||
        at + sizeof(node) + n->size > hi) {
      problem(where + ": bad header (magic " + std::to_string(n->magic) + ", size " +
              std::to_string(n->size) + ")");
      ++corrupt;
      break;
    }
    if (n->seq >= previous) {
      problem(where + ": seq " + std::to_string(n->seq) + " after " + std::to_string(previous) +
              " (the list must be newest first)");
      ++corrupt;
      break;
    }
    previous = n->seq;
    if (h.usable_size(n) < sizeof(node) + n->size)
      problem(where + " (seq " + std::to_string(n->seq) + "): usable size " +
              std::to_string(h.usable_size(n)) + " < " + std::to_string(sizeof(node) + n->size));
    bool intact = checksum_of(*n) == n->checksum;
    for (std::uint32_t i = 0; intact && i < n->size / 8; ++i)
      intact = n->payload()[i] == payload_word(n->seq, i);
    if (!intact) {
      problem("seq " + std::to_string(n->seq) + ": torn or corrupt (checksum or payload differs)");
      ++corrupt;
    }
    seqs.push_back(n->seq);
    if (seqs.size() > root->published + 1) {
      problem("the list is longer than the published count (a cycle?)");
      ++corrupt;
      break;
    }
  }
  std::reverse(seqs.begin(), seqs.end());

  const std::uint64_t live = seqs.size();
  if (root->published - root->freed != live)
    problem("published " + std::to_string(root->published) + " - freed " +
            std::to_string(root->freed) + " != " + std::to_string(live) + " nodes in the list");
  const std::uint64_t expect_next = seqs.empty() ? 0 : seqs.back() + 1;
  if (!seqs.empty() && root->next_seq != expect_next)
    problem("next_seq " + std::to_string(root->next_seq) + " but the newest node is seq " +
            std::to_string(seqs.back()));
  if (seqs.empty() && root->published != 0)
    problem("the list is empty after " + std::to_string(root->published) + " publishes");
  const auto stats = h.stats();
  if (stats.allocated_objects != live + baseline_objects)
    problem("the heap holds " + std::to_string(stats.allocated_objects) + " objects, expected " +
            std::to_string(live) + " nodes + " + std::to_string(baseline_objects) +
            " (leaked or lost)");

  say("VERIFY %s opened: %s, next %" PRIu64 ", live %" PRIu64 ", published %" PRIu64
      ", freed %" PRIu64 ", corrupt %" PRIu64,
      tag, opened.unclean_shutdown ? "unclean shutdown recovered" : "clean", root->next_seq, live,
      root->published, root->freed, corrupt);
  constexpr std::size_t per_line = 100;  // ranges: under 1.5 KB a line
  for (std::size_t i = 0; i < seqs.size(); i += per_line)
    say("PRESENT %s %s", tag, ranges(seqs, i, std::min(seqs.size(), i + per_line)).c_str());
  if (seqs.empty()) say("PRESENT %s", tag);
  for (const auto& p : problems) say("VERIFY %s FAIL %s", tag, p.c_str());
  if (problems.empty()) say("VERIFY %s OK", tag);
  h.close();
  return problems.empty() ? 0 : 1;
}

int run(const std::string& path, const char* tag, bool create, std::uint64_t seed,
        std::uint64_t count) {
  daxalloc::heap h = [&] {
    if (!create) return daxalloc::heap::open(path);
    daxalloc::heap_options o;
    o.size = 256 * MiB;
    o.overwrite = true;  // devdax: whatever the device held before
    return daxalloc::heap::create(path, o);
  }();
  auto* root = h.root<list_root>();
  // The live nodes, oldest first, as the list holds them newest first.
  std::deque<node*> live;
  for (node* n = root->head.get(); n != nullptr; n = n->next.get()) live.push_front(n);
  std::uint64_t seq = root->next_seq;
  if (!live.empty() && live.back()->seq + 1 != seq) {
    say("WORKLOAD %s FAIL next_seq %" PRIu64 " but the newest node is %" PRIu64, tag, seq,
        live.back()->seq);
    return 1;
  }
  say("WORKLOAD %s %s %s: next %" PRIu64 ", live %zu, seed %" PRIu64, tag,
      create ? "created" : "opened", path.c_str(), seq, live.size(), seed);
  rng r(seed);
  for (std::uint64_t done = 0; count == 0 || done < count; ++done, ++seq) {
    {
      const std::uint32_t size = pick_size(r);
      daxalloc::batch b(h);
      auto* n = static_cast<node*>(b.reserve(sizeof(node) + size));
      ::new (n) node{};
      fill(n, seq, size);
      n->next = live.empty() ? nullptr : live.back();
      b.set(root->head, n);
      b.set(&root->next_seq, seq + 1);
      b.set(&root->published, root->published + 1);
      if (root->magic != root_magic) b.set(&root->magic, root_magic);
      b.publish();
      live.push_back(n);
    }
    say("PUBLISHED %s %" PRIu64, tag, seq);

    if (live.size() > 1 && (live.size() > max_live || r.below(100) < 45)) {
      // Mostly the oldest node, sometimes any but the newest.
      const std::size_t i = r.below(100) < 70 ? 0 : r.below(live.size() - 1);
      node* victim = live[i];
      node* newer = live[i + 1];  // the node whose next points at the victim
      const std::uint64_t v = victim->seq;
      say("FREEING %s %" PRIu64, tag, v);
      daxalloc::batch b(h);
      b.set(newer->next, victim->next.get());
      b.defer_free(victim);
      b.set(&root->freed, root->freed + 1);
      b.publish();
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      say("FREED %s %" PRIu64, tag, v);
    }

    if (r.below(100) < 5) {  // a batch given up: must leave no trace
      daxalloc::batch b(h);
      auto* n = static_cast<node*>(b.reserve(sizeof(node) + 64));
      ::new (n) node{};
      fill(n, UINT64_MAX, 64);
      b.set(root->head, n);
      b.set(&root->next_seq, 0);
      b.cancel();
    }
  }
  h.close();
  return 0;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: kill_workload run PATH TAG [--create] [--seed N] [--count N]\n"
               "       kill_workload verify PATH TAG\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) usage();
  const std::string mode = argv[1], path = argv[2];
  const char* tag = argv[3];
  bool create = false;
  std::uint64_t seed = 1, count = 0;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--create") {
      create = true;
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--count" && i + 1 < argc) {
      count = std::strtoull(argv[++i], nullptr, 0);
    } else {
      usage();
    }
  }
  try {
    if (mode == "verify") return verify(path, tag);
    if (mode == "run") return run(path, tag, create, seed, count);
    usage();
  } catch (const std::exception& e) {
    say("%s %s FAIL %s", mode == "verify" ? "VERIFY" : "WORKLOAD", tag, e.what());
    return 1;
  }
}
