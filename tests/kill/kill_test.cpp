// Real process crashes (issue 6, item 3): rounds in which a child process runs
// a seeded random workload against a heap file and is killed with SIGKILL at
// a random moment; the parent then reopens the heap, checks it and verifies
// everything the child reported, and starts the next round on that heap.
//
//   kill_test [KILLS] [--seed S] [-v]    (defaults: 200 kills, a random seed)
//
// It prints `N kills, M published objects verified` (M: the objects in
// slots and the named objects checked, summed over the rounds) and exits 0,
// or names the round, the seeds, the call in flight and what was wrong, and
// exits 1. -v prints a line per round on stderr.
//
// What a kill does and does not test. SIGKILL stops the child between two
// instructions but loses no store: the heap lives in the page cache (tmpfs)
// or in DAX memory, and every store the child made, flushed or not, is seen
// by the next open. So this tests the software path of crash consistency:
// the redo lanes and their replay, the order of the steps of each call, the
// flock left behind by a dead process, the unclean-shutdown marker, and
// recovery itself (some kills land inside the child's open). It does not
// test a power failure, which loses cache lines that were not flushed and
// fenced: tests/crash/ explores that at every fence with a simulated
// persistence domain.
//
// The heap's root holds a counter, `nr_slots` pptr slots and, after them,
// `nr_movable` slots that own movable objects (allocate_movable, handed
// from slot to slot by move_owner, freed by free_clear; compact() steps
// move them, so the parent checks them by id and checksum, not by offset,
// and a compaction in flight must change nothing it can see). Every object is
// {id, size, checksum} and payload words derived from the id, so it can be
// checked on its own. The child mixes allocate_publish / make_published /
// reserve + adopt into empty slots, free_clear, batches (replace two slots,
// defer_free the old objects and bump the counter; swap two slots; clear up
// to four), plain allocate + link and unlink + deallocate, named objects
// construct / destroy, reserve / cancel and cancelled batches. Through a pipe
// it writes one record before each durable call (what the call will change)
// and one after it returned (what it changed, with the new objects'
// offsets); one write() per record, so records arrive whole.
//
// After the kill the parent applies every completed call to its model, then
// requires of the reopened heap: open succeeds and reports the unclean
// shutdown (once the child had reported its open); check() is empty; every
// slot, the counter and every named object that the call in flight does not
// touch is exactly as the model says (offset, id, size, and the checksum
// both stored and recomputed); what the call in flight touches is wholly as
// before it or wholly as after it. Then nothing leaks and nothing dangles:
// the durable allocations (heap_impl::allocations()) are exactly the root,
// the name table, the objects in slots, the named objects and their names,
// and the plain allocations in no slot (which the parent then frees), and
// heap::stats() counts exactly those objects and bytes. The one allowed
// unknown: a plain allocate in flight may have left an object that the
// child never reported (a leak by the API's contract); it must be the one
// allocation left over, of the size asked for, and the parent frees it too.
//
// The seed replays the workloads and the delays, not the exact instants of
// the kills.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"
#include "heap/access.hpp"
#include "sparse/layout.hpp"
#include "test_util.hpp"

namespace {

using daxalloc::batch;
using daxalloc::heap;
using daxalloc::pptr;

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t heap_size = 64 * MiB;
constexpr std::size_t nr_slots = 64;
constexpr std::size_t nr_movable = 32;  // slots nr_slots.. own movable objects
constexpr std::size_t nr_all_slots = nr_slots + nr_movable;
constexpr std::size_t nr_names = 24;  // above the name table's first capacity (16): it grows
constexpr std::size_t max_targets = 4;

// A test failure: main prints it with the round and the seed.
struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string hex(std::uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(v));
  return text;
}

// splitmix64's finaliser: ids to payload words, and the checksums.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Every object in a slot: this header, then (size - 24) / 8 payload words.
struct object_header {
  std::uint64_t id;        // unique over the whole run; never 0
  std::uint64_t size;      // bytes, header included, a multiple of 8
  std::uint64_t checksum;  // of id, size and every payload word
};
static_assert(sizeof(object_header) == 24);

std::uint64_t payload_word(std::uint64_t id, std::uint64_t i) {
  return mix(id * 0x2545f4914f6cdd1dULL + i);
}
// The checksum of an object whose payload word i is word(i).
template <class Words>
std::uint64_t checksum_of(std::uint64_t id, std::uint64_t size, Words word) {
  std::uint64_t h = mix(id ^ (size << 17));
  for (std::uint64_t i = 0; i < (size - sizeof(object_header)) / 8; ++i) h = mix(h ^ word(i));
  return h;
}
std::uint64_t expected_checksum(std::uint64_t id, std::uint64_t size) {
  return checksum_of(id, size, [id](std::uint64_t i) { return payload_word(id, i); });
}
std::uint64_t stored_checksum(const object_header* o) {
  const auto* words = reinterpret_cast<const std::uint64_t*>(o + 1);
  return checksum_of(o->id, o->size, [words](std::uint64_t i) { return words[i]; });
}

// The state of a slot: id 0 is null. In the record before a call, offset 0
// marks an object not placed yet.
struct slot_value {
  std::uint64_t offset = 0, id = 0, size = 0, checksum = 0;
};

void fill(void* p, const slot_value& v) {
  auto* o = static_cast<object_header*>(p);
  auto* words = reinterpret_cast<std::uint64_t*>(o + 1);
  for (std::uint64_t i = 0; i < (v.size - sizeof(object_header)) / 8; ++i)
    words[i] = payload_word(v.id, i);
  *o = {v.id, v.size, v.checksum};
}

struct root_type {
  std::uint64_t counter;  // bumped by batches, with their other actions
  pptr<object_header> slots[nr_all_slots];
};
static_assert(sizeof(root_type) == 8 + 8 * nr_all_slots);

// A named object: `count` copies of this, built from one id.
struct named_item {
  std::uint64_t id, value, checksum;
  explicit named_item(std::uint64_t i) : id(i), value(mix(i)), checksum(mix(i ^ mix(i))) {}
};
static_assert(sizeof(named_item) == 24);

// Fixed length, so that every name copy in the heap has the same size class.
std::string name_of(std::size_t key) {
  char text[16];
  std::snprintf(text, sizeof text, "named-%02zu", key);
  return text;
}

struct name_value {
  std::uint64_t id = 0, count = 0;  // id 0: absent
  friend bool operator==(const name_value&, const name_value&) = default;
};

enum class op : std::uint32_t {
  opened,          // the child's heap::open returned
  publish,         // allocate_publish, make_published or reserve + adopt into an empty slot
  free_clear,      // one slot
  replace,         // batch: two slots get new objects, the old ones are freed, counter + 1
  swap,            // batch: two slots exchange their objects, counter + 1
  clear,           // batch: up to four slots cleared, their objects freed, counter + 1
  plain_allocate,  // heap::allocate: `object` after it returned
  link,            // a plain allocation `object` into an empty slot (batch or store + persist)
  unlink,          // a slot cleared, its object `object` not freed
  plain_deallocate,
  name_create,
  name_destroy,
  reserve_cancel,  // heap::reserve + cancel: nothing durable
  batch_cancel,    // a batch with a reservation, stores and a free, cancelled
  movable,         // allocate_movable into an empty movable slot
  hand,            // move_owner: a movable slot's object to an empty movable slot
  compact,         // a compact() step: moves objects, changes nothing the model sees
  failed,          // the child caught an exception: `text`
};

const char* op_name(op o) {
  static const char* const names[] = {
      "open",           "publish",      "free_clear", "replace",    "swap",        "clear",
      "allocate",       "link",         "unlink",     "deallocate", "name_create", "name_destroy",
      "reserve_cancel", "batch_cancel", "movable",    "hand",       "compact",     "failed"};
  return names[static_cast<std::size_t>(o)];
}

struct target {
  std::uint32_t slot = 0, unused = 0;
  slot_value value;  // what the slot holds after the call
};

// What the child writes to the pipe, once before a durable call and once
// after it returned (then with the offsets of the new objects).
struct record {
  std::uint32_t done = 0;  // 0: the call is about to run; 1: it returned
  op what = op::opened;
  std::uint32_t nr_targets = 0;
  std::uint32_t bumps_counter = 0;
  target targets[max_targets];
  std::uint64_t counter = 0;  // the counter after the call, when it bumps it
  std::uint64_t object = 0;   // allocate, link, unlink, deallocate: the object's offset
  std::uint64_t object_size = 0;
  std::uint64_t name = 0, name_count = 0, name_id = 0;  // name_create, name_destroy
  char text[256] = {};                                  // failed
};
static_assert(sizeof(record) <= PIPE_BUF, "one write() per record keeps records whole");

std::string describe(const record& r) {
  std::string s = op_name(r.what);
  for (std::uint32_t i = 0; i < r.nr_targets; ++i)
    s += (i ? ", " : " of slot ") + std::to_string(r.targets[i].slot);
  if (r.bumps_counter) s += " (counter to " + std::to_string(r.counter) + ")";
  if (r.what == op::name_create || r.what == op::name_destroy) s += " of " + name_of(r.name);
  if (r.object) s += " (object at " + hex(r.object) + ")";
  return s;
}

// What the parent knows the heap holds.
struct model {
  std::array<slot_value, nr_all_slots> slots{};
  std::array<name_value, nr_names> names{};
  std::uint64_t counter = 0;
  std::map<std::uint64_t, std::uint64_t> unlinked;  // plain allocations in no slot: offset -> size
};

// The effect of a call that completed.
void apply(model& m, const record& r) {
  for (std::uint32_t i = 0; i < r.nr_targets; ++i) {
    m.slots[r.targets[i].slot] = r.targets[i].value;
    if (r.targets[i].slot >= nr_slots) m.slots[r.targets[i].slot].offset = 0;  // it may move
  }
  if (r.bumps_counter) m.counter = r.counter;
  switch (r.what) {
    case op::plain_allocate:
    case op::unlink:
      m.unlinked[r.object] = r.object_size;
      break;
    case op::link:
    case op::plain_deallocate:
      m.unlinked.erase(r.object);
      break;
    case op::name_create:
      m.names[r.name] = {r.name_id, r.name_count};
      break;
    case op::name_destroy:
      m.names[r.name] = {};
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- the child

class workload {
 public:
  workload(heap& h, const model& m, std::uint64_t seed, std::uint64_t round, int fd)
      : heap_(h),
        root_(h.root<root_type>()),
        model_(m),
        random_(seed),
        next_id_((round << 32) | 1),
        fd_(fd) {}

  [[noreturn]] void run() {
    record opened;
    opened.done = 1;
    send(opened);
    // The calls and their weights.
    static constexpr std::pair<unsigned, void (workload::*)()> calls[] = {
        {18, &workload::publish},
        {10, &workload::free_clear},
        {14, &workload::replace},
        {6, &workload::swap},
        {5, &workload::clear},
        {8, &workload::allocate_and_link},
        {6, &workload::unlink_and_deallocate},
        {3, &workload::allocate_and_deallocate},
        {7, &workload::name_create},
        {5, &workload::name_destroy},
        {4, &workload::reserve_cancel},
        {4, &workload::batch_cancel},
        {10, &workload::movable_publish},
        {5, &workload::movable_free},
        {4, &workload::hand},
        {1, &workload::compact}};
    unsigned total = 0;
    for (const auto& [weight, call] : calls) total += weight;
    for (;;) {
      unsigned dice = static_cast<unsigned>(random_() % total);
      for (const auto& [weight, call] : calls) {
        if (dice < weight) {
          (this->*call)();
          break;
        }
        dice -= weight;
      }
    }
  }

 private:
  void send(const record& r) {
    const char* p = reinterpret_cast<const char*>(&r);
    std::size_t left = sizeof r;
    while (left) {  // a pipe write of at most PIPE_BUF bytes is whole; the loop is for EINTR
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(4);  // the parent is gone
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void before(record& r) {
    r.done = 0;
    send(r);
  }
  void after(record& r) {
    r.done = 1;
    send(r);
    apply(model_, r);
  }
  static record start(op what) {
    record r;
    r.what = what;
    return r;
  }
  static void add_target(record& r, std::size_t slot, const slot_value& v) {
    r.targets[r.nr_targets++] = {static_cast<std::uint32_t>(slot), 0, v};
  }
  // Announced with the call: its batch sets the counter to r.counter.
  void bumps_counter(record& r) const {
    r.bumps_counter = 1;
    r.counter = model_.counter + 1;
  }

  // Mostly small objects; some above 4 KiB (their batch fences them first),
  // some near the slab limit, a few page extents.
  std::uint64_t pick_size() {
    const unsigned dice = static_cast<unsigned>(random_() % 100);
    std::uint64_t size;
    if (dice < 5)
      size = sizeof(object_header);
    else if (dice < 70)
      size = 32 + random_() % 480;
    else if (dice < 90)
      size = 512 + random_() % (16 * 1024);
    else if (dice < 98)
      size = 16 * 1024 + random_() % (48 * 1024);
    else
      size = 64 * 1024 + 8 + random_() % (192 * 1024);
    return size & ~std::uint64_t{7};
  }
  slot_value new_object(std::uint64_t size) {
    const std::uint64_t id = next_id_++;
    return {0, id, size, expected_checksum(id, size)};
  }
  // A random slot that is empty (full = false) or holds an object; -1 if
  // none. Of the movable slots with `movable`.
  int pick_slot(bool full, bool movable = false) {
    std::vector<int> fit;
    for (std::size_t s = movable ? nr_slots : 0; s < (movable ? nr_all_slots : nr_slots); ++s)
      if ((model_.slots[s].id != 0) == full) fit.push_back(static_cast<int>(s));
    return fit.empty() ? -1 : fit[random_() % fit.size()];
  }
  std::uint64_t offset_of(const void* p) const { return heap_.offset_of(p); }

  void publish() {
    const int s = pick_slot(false);
    if (s < 0) return;
    record r = start(op::publish);
    add_target(r, s, new_object(pick_size()));
    slot_value& v = r.targets[0].value;
    before(r);
    object_header* o;
    if (v.size == sizeof(object_header)) {
      o = heap_.make_published(root_->slots[s], object_header{v.id, v.size, v.checksum});
    } else if (random_() % 3) {
      o = heap_.allocate_publish(root_->slots[s], v.size, [&](object_header* p) { fill(p, v); });
    } else {  // a reservation of the heap, adopted by a batch
      daxalloc::reservation reserved = heap_.reserve(v.size);
      o = static_cast<object_header*>(reserved.ptr);
      fill(o, v);
      batch b(heap_);
      b.adopt(std::move(reserved));
      b.set(root_->slots[s], o);
      b.publish();
    }
    v.offset = offset_of(o);
    after(r);
  }

  void free_clear() { free_clear_slot(false); }
  void movable_free() { free_clear_slot(true); }
  void free_clear_slot(bool movable) {
    const int s = pick_slot(true, movable);
    if (s < 0) return;
    record r = start(op::free_clear);
    add_target(r, s, {});
    before(r);
    heap_.free_clear(root_->slots[s]);
    after(r);
  }

  void replace() {
    const std::size_t a = random_() % nr_slots;
    const std::size_t c = (a + 1 + random_() % (nr_slots - 1)) % nr_slots;
    record r = start(op::replace);
    add_target(r, a, new_object(pick_size()));
    add_target(r, c, new_object(pick_size()));
    bumps_counter(r);
    before(r);
    batch b(heap_);
    for (std::uint32_t i = 0; i < 2; ++i) {
      slot_value& v = r.targets[i].value;
      auto& slot = root_->slots[r.targets[i].slot];
      auto* fresh = static_cast<object_header*>(b.reserve(v.size));
      fill(fresh, v);
      v.offset = offset_of(fresh);
      if (object_header* old = slot.get()) b.defer_free(old);
      b.set(slot, fresh);
    }
    b.set(&root_->counter, r.counter);
    b.publish();
    after(r);
  }

  void swap() {
    const std::size_t a = random_() % nr_slots;
    const std::size_t c = (a + 1 + random_() % (nr_slots - 1)) % nr_slots;
    if (model_.slots[a].id == 0 && model_.slots[c].id == 0) return;
    record r = start(op::swap);
    add_target(r, a, model_.slots[c]);
    add_target(r, c, model_.slots[a]);
    bumps_counter(r);
    before(r);
    batch b(heap_);
    object_header* at_a = root_->slots[a].get();
    b.set(root_->slots[a], root_->slots[c].get());
    b.set(root_->slots[c], at_a);
    b.set(&root_->counter, r.counter);
    b.publish();
    after(r);
  }

  void clear() {
    std::vector<std::size_t> full;
    for (std::size_t s = 0; s < nr_slots; ++s)
      if (model_.slots[s].id) full.push_back(s);
    if (full.empty()) return;
    std::shuffle(full.begin(), full.end(), random_);
    full.resize(std::min<std::size_t>(full.size(), 1 + random_() % max_targets));
    record r = start(op::clear);
    for (std::size_t s : full) add_target(r, s, {});
    bumps_counter(r);
    before(r);
    batch b(heap_);
    for (std::size_t s : full) {
      b.defer_free(root_->slots[s].get());
      b.set(root_->slots[s], static_cast<object_header*>(nullptr));
    }
    b.set(&root_->counter, r.counter);
    b.publish();
    after(r);
  }

  // heap::allocate: durable when it returns, a leak until linked.
  std::uint64_t plain_allocate(std::uint64_t size) {
    record r = start(op::plain_allocate);
    r.object_size = size;
    before(r);
    r.object = offset_of(heap_.allocate(size));
    after(r);
    return r.object;
  }
  void plain_deallocate(std::uint64_t offset, std::uint64_t size) {
    record r = start(op::plain_deallocate);
    r.object = offset;
    r.object_size = size;
    before(r);
    heap_.deallocate(heap_.at(offset));
    after(r);
  }
  // A store to one slot: by a batch, or by a pptr store made durable with
  // heap::persist() (the way the API asks for words a batch may have written).
  void store_slot(std::size_t s, object_header* value) {
    if (random_() % 2) {
      batch b(heap_);
      b.set(root_->slots[s], value);
      b.publish();
    } else {
      root_->slots[s].store(value);
      heap_.persist().persist(&root_->slots[s], sizeof root_->slots[s]);
    }
  }

  void allocate_and_link() {
    const int s = pick_slot(false);
    if (s < 0) return;
    const slot_value v = new_object(pick_size());
    const std::uint64_t offset = plain_allocate(v.size);
    auto* o = static_cast<object_header*>(heap_.at(offset));
    fill(o, v);
    heap_.persist().persist(o, v.size);
    record r = start(op::link);
    add_target(r, s, v);
    r.targets[0].value.offset = offset;
    r.object = offset;
    r.object_size = v.size;
    before(r);
    store_slot(s, o);
    after(r);
  }

  void unlink_and_deallocate() {
    const int s = pick_slot(true);
    if (s < 0) return;
    const slot_value old = model_.slots[s];
    record r = start(op::unlink);
    add_target(r, s, {});
    r.object = old.offset;
    r.object_size = old.size;
    before(r);
    store_slot(s, nullptr);
    after(r);
    plain_deallocate(old.offset, old.size);
  }

  void allocate_and_deallocate() {
    const std::uint64_t size = pick_size();
    const std::uint64_t offset = plain_allocate(size);
    std::memset(heap_.at(offset), 0x5a, size);
    plain_deallocate(offset, size);
  }

  int pick_name(bool present) {
    std::vector<int> fit;
    for (std::size_t k = 0; k < nr_names; ++k)
      if ((model_.names[k].id != 0) == present) fit.push_back(static_cast<int>(k));
    return fit.empty() ? -1 : fit[random_() % fit.size()];
  }

  void name_create() {
    const int k = pick_name(false);
    if (k < 0) return;
    record r = start(op::name_create);
    r.name = static_cast<std::uint64_t>(k);
    r.name_count = 1 + random_() % 4;
    r.name_id = next_id_++;
    before(r);
    const std::uint64_t id = r.name_id;
    (void)heap_.construct<named_item>(name_of(r.name), r.name_count)(id);
    after(r);
  }

  void name_destroy() {
    const int k = pick_name(true);
    if (k < 0) return;
    record r = start(op::name_destroy);
    r.name = static_cast<std::uint64_t>(k);
    before(r);
    if (!heap_.destroy<named_item>(name_of(r.name)))
      throw failure("destroy did not find " + name_of(r.name));
    after(r);
  }

  // Nothing here may become durable.
  void reserve_cancel() {
    record r = start(op::reserve_cancel);
    before(r);
    const std::uint64_t size = pick_size();
    daxalloc::reservation reserved = heap_.reserve(size);
    std::memset(reserved.ptr, 0xc3, size);
    heap_.cancel(reserved);
    after(r);
  }

  void movable_publish() {
    const int s = pick_slot(false, true);
    if (s < 0) return;
    record r = start(op::movable);
    std::uint64_t size = pick_size();
    if (size > heap::max_movable_size) size = 4096;
    add_target(r, s, new_object(size));
    const slot_value& v = r.targets[0].value;
    before(r);
    (void)heap_.allocate_movable(root_->slots[s], v.size, [&](object_header* p) { fill(p, v); });
    after(r);
  }

  void hand() {
    const int from = pick_slot(true, true), to = pick_slot(false, true);
    if (from < 0 || to < 0) return;
    record r = start(op::hand);
    add_target(r, from, {});
    add_target(r, to, model_.slots[from]);
    before(r);
    heap_.move_owner(root_->slots[from], root_->slots[to]);
    after(r);
  }

  void compact() {
    record r = start(op::compact);
    before(r);
    daxalloc::compact_options o;
    o.max_bytes = 16 * 1024;
    (void)heap_.compact(o);
    after(r);
  }

  void batch_cancel() {
    record r = start(op::batch_cancel);
    before(r);
    const std::size_t s = random_() % nr_slots;
    const std::uint64_t size = pick_size();
    batch b(heap_);
    void* p = b.reserve(size);
    std::memset(p, 0x3c, size);
    b.set(root_->slots[s], static_cast<object_header*>(p));
    b.set(&root_->counter, ~std::uint64_t{0});
    if (const int full = pick_slot(true); full >= 0) b.defer_free(root_->slots[full].get());
    if (random_() % 2) b.cancel();  // else its destructor cancels it
    after(r);
  }

  heap& heap_;
  root_type* root_;
  model model_;
  std::mt19937_64 random_;
  std::uint64_t next_id_;
  int fd_;
};

[[noreturn]] void run_child(const std::filesystem::path& path, daxalloc::persistence_mode mode,
                            const model& m, std::uint64_t seed, std::uint64_t round, int fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  try {
    heap h = heap::open(path, {.mode = mode});
    workload(h, m, seed, round, fd).run();
  } catch (const std::exception& e) {
    record r;
    r.what = op::failed;
    r.done = 1;
    std::snprintf(r.text, sizeof r.text, "%s", e.what());
    if (::write(fd, &r, sizeof r) < 0) _exit(3);
  }
  _exit(2);
}

// --------------------------------------------------------------- the parent

// Reads the pipe while the child runs.
class pipe_reader {
 public:
  explicit pipe_reader(int fd) : fd_(fd) {}
  // Reads until `deadline` (CLOCK_MONOTONIC), end of file or, when
  // `records` is given, until that many whole records arrived.
  void read_until(const timespec& deadline, std::size_t records = SIZE_MAX) {
    while (!eof_ && bytes_.size() / sizeof(record) < records) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      std::int64_t left =
          (deadline.tv_sec - now.tv_sec) * 1000000000LL + (deadline.tv_nsec - now.tv_nsec);
      if (left <= 0) return;
      const timespec wait{static_cast<time_t>(left / 1000000000),
                          static_cast<long>(left % 1000000000)};
      pollfd p{fd_, POLLIN, 0};
      const int n = ::ppoll(&p, 1, &wait, nullptr);
      if (n < 0 && errno != EINTR) throw failure(std::string("ppoll: ") + std::strerror(errno));
      if (n > 0) read_some();
    }
  }
  void read_to_end() {
    while (!eof_) read_some();
  }
  [[nodiscard]] std::vector<record> records() const {
    if (bytes_.size() % sizeof(record))
      throw failure("the pipe holds a torn record (" + std::to_string(bytes_.size()) + " bytes)");
    std::vector<record> out(bytes_.size() / sizeof(record));
    if (!out.empty()) std::memcpy(out.data(), bytes_.data(), bytes_.size());
    return out;
  }

 private:
  void read_some() {
    char buffer[65536];
    const ssize_t n = ::read(fd_, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) return;
    if (n < 0) throw failure(std::string("read from the pipe: ") + std::strerror(errno));
    if (n == 0) eof_ = true;
    bytes_.insert(bytes_.end(), buffer, buffer + n);
  }
  int fd_;
  bool eof_ = false;
  std::vector<char> bytes_;
};

timespec after_micros(std::uint64_t micros) {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  const std::uint64_t ns = static_cast<std::uint64_t>(t.tv_nsec) + micros * 1000;
  t.tv_sec += static_cast<time_t>(ns / 1000000000);
  t.tv_nsec = static_cast<long>(ns % 1000000000);
  return t;
}

// What a slot holds, read and checked from the heap; `problem` says why it
// is not a whole object.
struct seen_slot {
  slot_value value;
  std::string problem;
};

seen_slot read_slot(const heap& h, const root_type* root, std::size_t s) {
  seen_slot seen;
  const object_header* o = root->slots[s].get();
  if (!o) return seen;
  const auto* p = reinterpret_cast<const std::byte*>(o);
  seen.value.offset = h.offset_of(o);
  if (p < h.base() || p >= h.base() + h.size() || seen.value.offset % 8) {
    seen.problem = "points outside the heap (offset " + hex(seen.value.offset) + ")";
    return seen;
  }
  const std::size_t room = h.usable_size(o);
  if (room < sizeof(object_header)) {
    seen.problem = "points to no object (offset " + hex(seen.value.offset) + ")";
    return seen;
  }
  seen.value.id = o->id;
  seen.value.size = o->size;
  seen.value.checksum = o->checksum;
  if (o->size < sizeof(object_header) || o->size > room || o->size % 8) {
    seen.problem = "holds a header of size " + std::to_string(o->size) + " in " +
                   std::to_string(room) + " bytes";
    return seen;
  }
  if (stored_checksum(o) != o->checksum)
    seen.problem = "holds object " + hex(o->id) + " whose contents do not match its checksum";
  return seen;
}

std::string describe(const slot_value& v) {
  if (v.id == 0) return "null";
  return "object " + hex(v.id) + " of " + std::to_string(v.size) + " B at " +
         (v.offset ? hex(v.offset) : std::string("a new offset")) + " checksum " + hex(v.checksum);
}
std::string describe(const seen_slot& seen) {
  return seen.problem.empty() ? describe(seen.value) : seen.problem;
}

// Whether a slot holds `want`; a `want` with offset 0 (a new object, in the
// record before the call) matches any offset.
bool holds(const seen_slot& seen, const slot_value& want) {
  if (!seen.problem.empty()) return false;
  if (want.id == 0) return seen.value.id == 0;
  return seen.value.id == want.id && seen.value.size == want.size &&
         seen.value.checksum == want.checksum &&
         (want.offset == 0 || seen.value.offset == want.offset);
}

// A named object as the heap holds it; problem: why it is not whole.
struct seen_name {
  name_value value;
  std::string problem;
};

seen_name read_name(const heap& h, std::size_t key) {
  seen_name seen;
  const auto [items, count] = h.find<named_item>(name_of(key));
  if (!items) return seen;
  seen.value = {items[0].id, count};
  const named_item want(items[0].id);
  for (std::size_t i = 0; i < count; ++i)
    if (items[i].id != want.id || items[i].value != want.value ||
        items[i].checksum != want.checksum)
      seen.problem = "element " + std::to_string(i) + " of " + std::to_string(count) +
                     " does not hold what id " + hex(want.id) + " makes";
  return seen;
}

std::string describe(const name_value& v) {
  return v.id ? "id " + hex(v.id) + " x" + std::to_string(v.count) : std::string("absent");
}

// Verifies the reopened heap against the model and the call in flight,
// brings the model up to date, frees the plain allocations that are in no
// slot, and returns how many objects it verified.
class verifier {
 public:
  verifier(heap& h, model& m) : h_(h), root_(h.root<root_type>()), m_(m) {}

  std::uint64_t run(const std::optional<record>& in_flight) {
    if (const auto problems = h_.check(); !problems.empty()) {
      std::string text = "heap::check() found " + std::to_string(problems.size()) + " problems:";
      for (const auto& p : problems) text += "\n  " + p;
      throw failure(text);
    }
    std::set<std::size_t> touched_slots;
    std::optional<std::size_t> touched_name;
    bool touches_counter = false;
    if (in_flight) {
      resolve(*in_flight);
      for (std::uint32_t i = 0; i < in_flight->nr_targets; ++i)
        touched_slots.insert(in_flight->targets[i].slot);
      if (in_flight->what == op::name_create || in_flight->what == op::name_destroy)
        touched_name = in_flight->name;
      touches_counter = in_flight->bumps_counter;
    }
    // resolve() checked what the call in flight touches; the rest must be
    // exactly as the model says.
    for (std::size_t s = 0; s < nr_all_slots; ++s) {
      if (touched_slots.count(s)) continue;
      const seen_slot seen = read_slot(h_, root_, s);
      if (!holds(seen, m_.slots[s]))
        throw failure("slot " + std::to_string(s) + ": expected " + describe(m_.slots[s]) +
                      ", found " + describe(seen));
    }
    if (!touches_counter && root_->counter != m_.counter)
      throw failure("counter: expected " + std::to_string(m_.counter) + ", found " +
                    std::to_string(root_->counter));
    for (std::size_t k = 0; k < nr_names; ++k) {
      if (touched_name == k) continue;
      const seen_name seen = read_name(h_, k);
      if (seen.value != m_.names[k] || !seen.problem.empty())
        throw failure(name_of(k) + ": expected " + describe(m_.names[k]) + ", found " +
                      describe(seen.value) + (seen.problem.empty() ? "" : ": " + seen.problem));
    }
    std::size_t names_present = 0;
    for (const auto& n : m_.names) names_present += n.id != 0;
    if (const auto listed = h_.named_objects(); listed.size() != names_present)
      throw failure("named_objects() lists " + std::to_string(listed.size()) + " names, expected " +
                    std::to_string(names_present));
    const std::uint64_t verified = account(in_flight);
    for (const auto& [offset, size] : m_.unlinked) h_.deallocate(h_.at(offset));
    m_.unlinked.clear();
    return verified;
  }
  // How the call in flight ended, for -v.
  [[nodiscard]] const char* outcome() const { return outcome_; }

 private:
  // The call in flight happened wholly or not at all; if wholly, the model
  // takes its effect, with the offsets of its new objects read from the heap.
  void resolve(const record& r) {
    bool before = true, after = true;
    std::string found;
    record done = r;
    for (std::uint32_t i = 0; i < r.nr_targets; ++i) {
      const std::size_t s = r.targets[i].slot;
      const seen_slot seen = read_slot(h_, root_, s);
      before = before && holds(seen, m_.slots[s]);
      after = after && holds(seen, r.targets[i].value);
      done.targets[i].value.offset = seen.value.offset;
      found += "\n  slot " + std::to_string(s) + ": before " + describe(m_.slots[s]) + ", after " +
               describe(r.targets[i].value) + ", found " + describe(seen);
    }
    if (r.bumps_counter) {
      before = before && root_->counter == m_.counter;
      after = after && root_->counter == r.counter;
      found += "\n  counter: before " + std::to_string(m_.counter) + ", after " +
               std::to_string(r.counter) + ", found " + std::to_string(root_->counter);
    }
    if (r.what == op::name_create || r.what == op::name_destroy) {
      const seen_name seen = read_name(h_, r.name);
      const name_value wanted =
          r.what == op::name_create ? name_value{r.name_id, r.name_count} : name_value{};
      before = before && seen.problem.empty() && seen.value == m_.names[r.name];
      after = after && seen.problem.empty() && seen.value == wanted;
      found += "\n  " + name_of(r.name) + ": before " + describe(m_.names[r.name]) + ", after " +
               describe(wanted) + ", found " + describe(seen.value) +
               (seen.problem.empty() ? "" : ": " + seen.problem);
    }
    if (!before && !after)
      throw failure("the call in flight, " + describe(r) +
                    ", is neither undone nor complete:" + found);
    if (!before) apply(m_, done);
    outcome_ = before && after ? "left nothing to see" : before ? "was undone" : "completed";
  }

  // The durable allocations are exactly what the model reaches: the root,
  // the name table (the head's name-table slot holds its offset), the
  // objects in slots, the named objects and one copy of each name, and the
  // plain allocations in no slot. A plain deallocate in flight decides by
  // itself whether its object is still one; a plain allocate in flight may
  // have made one that the child never reported, which then joins the plain
  // allocations in no slot (and is freed). heap::stats() must count exactly
  // these. Returns the number of objects in slots and named objects.
  std::uint64_t account(const std::optional<record>& in_flight) {
    std::map<std::uint64_t, std::uint64_t> allocated;  // offset -> bytes, as the media says
    for (const auto& [offset, bytes] : daxalloc::detail::internals(h_).allocations())
      allocated[offset] = bytes;
    std::map<std::uint64_t, std::string> reached;  // offset -> what it is
    auto reach = [&](std::uint64_t offset, const std::string& what) {
      if (!allocated.count(offset))
        throw failure(what + " at " + hex(offset) + " is not allocated on the media");
      if (const auto [at, fresh] = reached.emplace(offset, what); !fresh)
        throw failure(what + " at " + hex(offset) + " is also " + at->second);
    };
    reach(h_.offset_of(root_), "the root");
    reach(*reinterpret_cast<const std::uint64_t*>(h_.base() + daxalloc::sparse::names_slot_offset),
          "the name table");
    std::uint64_t verified = 0;
    for (std::size_t s = 0; s < nr_all_slots; ++s)
      if (m_.slots[s].id) {  // (a movable one: where it is now)
        reach(s < nr_slots ? m_.slots[s].offset : h_.offset_of(root_->slots[s].get()),
              "the object in slot " + std::to_string(s));
        ++verified;
      }
    std::map<std::string, bool> names;  // name -> its copy was found
    for (const auto& n : h_.named_objects()) {
      reach(h_.offset_of(n.object), "named object " + n.name);
      names[n.name] = false;
      ++verified;
    }
    if (in_flight && in_flight->what == op::plain_deallocate && !allocated.count(in_flight->object))
      m_.unlinked.erase(in_flight->object);
    for (const auto& [offset, size] : m_.unlinked)
      reach(offset, "the plain allocation of " + std::to_string(size) + " B in no slot");
    std::vector<std::pair<std::uint64_t, std::uint64_t>> unreached;
    for (const auto& [offset, bytes] : allocated) {
      if (reached.count(offset)) continue;
      const auto* text = static_cast<const char*>(h_.at(offset));
      const auto name = names.find(std::string(text, strnlen(text, bytes)));
      if (name != names.end() && !name->second) {
        name->second = true;
        reached.emplace(offset, "the name " + name->first);
      } else {
        unreached.emplace_back(offset, bytes);
      }
    }
    for (const auto& [name, found] : names)
      if (!found) throw failure("no allocation holds the name " + name);
    if (in_flight && in_flight->what == op::plain_allocate && unreached.size() == 1 &&
        unreached[0].second >= in_flight->object_size &&
        unreached[0].second <= in_flight->object_size + in_flight->object_size / 4 + 4096) {
      m_.unlinked[unreached[0].first] = in_flight->object_size;
      reached.emplace(unreached[0].first, "the plain allocation in flight");
      unreached.clear();
    }
    if (!unreached.empty()) {
      std::string text = "a leak: durable allocations that nothing reaches (" +
                         std::to_string(unreached.size()) + "):";
      for (std::size_t i = 0; i < unreached.size() && i < 12; ++i)
        text += "\n  " + hex(unreached[i].first) + " " + std::to_string(unreached[i].second) + " B";
      throw failure(text);
    }
    std::uint64_t bytes = 0;
    for (const auto& [offset, what] : reached) bytes += h_.usable_size(h_.at(offset));
    if (const daxalloc::heap_stats s = h_.stats();
        s.allocated_objects != reached.size() || s.allocated_bytes != bytes)
      throw failure("heap::stats() counts " + std::to_string(s.allocated_objects) +
                    " allocated objects of " + std::to_string(s.allocated_bytes) +
                    " B; what the model reaches is " + std::to_string(reached.size()) +
                    " objects of " + std::to_string(bytes) + " B");
    return verified;
  }

  heap& h_;
  root_type* root_;
  model& m_;
  const char* outcome_ = "";  // how the call in flight ended
};

// Creates the heap, its root and its name table (by a named object created
// and destroyed): every round's accounting finds the table through the head.
void create_heap(const std::filesystem::path& path) {
  heap h = heap::create(
      path,
      {.size = heap_size, .max_size = heap_size, .mode = daxalloc::persistence_mode::cache_flush});
  (void)h.root<root_type>();
  const std::uint64_t id = 1;
  (void)h.construct<named_item>(name_of(0))(id);
  if (!h.destroy<named_item>(name_of(0))) throw failure("destroy did not find " + name_of(0));
  h.close();
}

// One round: fork the child, kill it, and return the records it wrote.
struct round_plan {
  std::uint64_t child_seed;
  bool wait_for_open;  // else the delay starts at fork: the kill may land inside open
  std::uint64_t delay_us;
  daxalloc::persistence_mode mode;
};

std::vector<record> run_round(const std::filesystem::path& path, const model& m,
                              const round_plan& plan, std::uint64_t round) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw failure(std::string("pipe: ") + std::strerror(errno));
  // Room for every record of a round, so that the child does not wait for
  // the parent to read (if the kernel refuses, it waits now and then).
  (void)::fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw failure(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(fds[0]);
    run_child(path, plan.mode, m, plan.child_seed, round, fds[1]);
  }
  ::close(fds[1]);
  pipe_reader reader(fds[0]);
  if (plan.wait_for_open) reader.read_until(after_micros(60'000'000), 1);
  reader.read_until(after_micros(plan.delay_us));
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  reader.read_to_end();
  ::close(fds[0]);
  std::vector<record> records = reader.records();
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    std::string why = "the child ended before the kill (status " + std::to_string(status) + ")";
    for (const auto& r : records)
      if (r.what == op::failed) why += ": " + std::string(r.text, strnlen(r.text, sizeof r.text));
    throw failure(why);
  }
  return records;
}

// Applies the completed calls to the model; returns the call in flight.
std::optional<record> replay(model& m, const std::vector<record>& records, bool& opened) {
  std::optional<record> pending;
  for (const record& r : records) {
    if (r.what == op::opened) {
      opened = true;
      continue;
    }
    if (r.what == op::failed)
      throw failure("the child failed: " + std::string(r.text, strnlen(r.text, sizeof r.text)));
    if (!r.done) {
      if (pending) throw failure("two calls in flight: " + describe(*pending) + ", " + describe(r));
      pending = r;
      continue;
    }
    if (!pending || pending->what != r.what)
      throw failure("the child reported " + describe(r) + " without announcing it");
    apply(m, r);
    pending.reset();
  }
  return pending;
}

// Opens the heap, verifies it and closes it; returns the objects verified.
struct verified_round {
  std::uint64_t objects = 0;  // in slots, and named
  std::string in_flight;      // how the call in flight ended
};

verified_round reopen_and_verify(const std::filesystem::path& path, model& m,
                                 const std::optional<record>& in_flight, bool must_be_unclean,
                                 bool must_be_clean) {
  heap h = heap::open(path, {.mode = daxalloc::persistence_mode::cache_flush});
  const bool unclean = h.stats().unclean_shutdown;
  if (must_be_unclean && !unclean)
    throw failure("heap::open does not report the unclean shutdown of the killed child");
  if (must_be_clean && unclean) throw failure("heap::open reports an unclean shutdown after close");
  verifier v(h, m);
  verified_round result{v.run(in_flight), v.outcome()};
  h.close();
  return result;
}

struct options {
  std::uint64_t kills = 200;
  std::uint64_t seed = 0;
  bool verbose = false;  // a line per round on stderr
};

options parse(int argc, char** argv) {
  options o;
  o.seed = std::random_device{}();
  o.seed = (o.seed << 32) ^ std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-v") {
      o.verbose = true;
    } else if (arg == "--seed" && i + 1 < argc) {
      o.seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) {
      o.kills = std::strtoull(arg.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [KILLS] [--seed S] [-v]\n", argv[0]);
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  const test::temp_file file("kill");
  std::fprintf(stderr, "kill_test: %llu kills, seed %llu (--seed %llu replays the workloads)\n",
               static_cast<unsigned long long>(opt.kills),
               static_cast<unsigned long long>(opt.seed),
               static_cast<unsigned long long>(opt.seed));
  std::string stage = "creating the heap";
  std::uint64_t verified = 0;
  try {
    create_heap(file.path());
    model m;
    std::mt19937_64 plans(opt.seed);
    for (std::uint64_t round = 1; round <= opt.kills; ++round) {
      round_plan plan;
      plan.child_seed = plans();
      plan.wait_for_open = plans() % 8 != 0;
      // Mostly a few ms of workload; now and then longer, so the heap fills.
      plan.delay_us = plans() % 8 == 0 ? 5000 + plans() % 25000 : plans() % 4000;
      plan.mode = plans() % 4 == 0 ? daxalloc::persistence_mode::msync
                                   : daxalloc::persistence_mode::cache_flush;
      stage = "round " + std::to_string(round) + " (child seed " + std::to_string(plan.child_seed) +
              ")";
      const std::vector<record> records = run_round(file.path(), m, plan, round);
      bool opened = false;
      const std::optional<record> in_flight = replay(m, records, opened);
      if (in_flight) stage += ", call in flight: " + describe(*in_flight);
      const verified_round result = reopen_and_verify(file.path(), m, in_flight, opened, false);
      verified += result.objects;
      if (opt.verbose) {
        std::size_t names = 0;
        for (const auto& n : m.names) names += n.id != 0;
        std::fprintf(stderr,
                     "%s%s%s: killed %s open returned, %zu records, %llu objects verified, "
                     "%zu names, counter %llu\n",
                     stage.c_str(), in_flight ? " " : "", result.in_flight.c_str(),
                     opened ? "after" : "before", records.size(),
                     static_cast<unsigned long long>(result.objects), names,
                     static_cast<unsigned long long>(m.counter));
      }
    }
    stage = "the last open, after a clean close";
    verified += reopen_and_verify(file.path(), m, std::nullopt, false, true).objects;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kill_test: FAILED in %s, seed %llu:\n  %s\n", stage.c_str(),
                 static_cast<unsigned long long>(opt.seed), e.what());
    return 1;
  }
  std::printf("%llu kills, %llu published objects verified\n",
              static_cast<unsigned long long>(opt.kills),
              static_cast<unsigned long long>(verified));
  return 0;
}
