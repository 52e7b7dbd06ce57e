// A small persistent key-value store in the spirit of pmemkv's cmap: a hash
// index of bucket chains in the heap, every change published atomically.
//
//   kvstore [PATH] put K V | get K | rm K | count | load N
//   kvstore PATH writer SEED      put k<i> = value(i) for i = SEED, SEED+1, ... forever,
//                                 printing "ACK <i>" (flushed) after each put returned
//   kvstore PATH verify ACKFILE   reopen (recovery), heap.check() must be empty, every key
//                                 acknowledged in ACKFILE present with its value, every
//                                 present key holding the value derived from its name
//
// PATH defaults to /dev/shm/daxalloc-kv; a devdax device or a file on an fsdax
// mount works too.
//
// Layout: the root holds the bucket count, the entry count and a pptr to an
// array of bucket heads (allocated once, in one batch with the root's fields).
// Each entry is {hash, next, key length, value length, key bytes, value bytes}.
//
//   put    builds the new entry in a batch reservation (volatile, 0 fences), then
//          one batch sets the bucket head (or the replaced entry's predecessor's
//          next) to it, frees the replaced entry and bumps the count: after a
//          crash the old value or the new one is there, never neither, and
//          nothing leaks (2 fences).
//   rm     one batch unlinks the entry, frees it and decrements the count
//          (free-and-clear: the entry is freed and unreachable, or neither).
//   get    walks the chain with acquire loads and takes no lock.
//
// Writers serialise on a mutex (single writer). get is lock-free against
// inserts: a new entry is complete and flushed before the link to it is
// stored. It is not safe against a concurrent rm or replace, which frees the
// old entry at publish: a store with concurrent readers would need deferred
// reclamation (epochs or hazard pointers), which this example leaves out. The
// CLI runs one operation per process, so the question does not arise here.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "daxalloc/batch.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/pptr.hpp"

namespace {

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t kv_magic = 0x3130766b78616421ull;  // "!daxkv01"
constexpr std::uint64_t default_buckets = 1 << 16;

struct entry {
  std::uint64_t hash;
  daxalloc::pptr<entry> next;
  std::uint32_t key_length;
  std::uint32_t value_length;
  // key bytes, then value bytes, follow the header
  [[nodiscard]] char* bytes() noexcept { return reinterpret_cast<char*>(this + 1); }
  [[nodiscard]] const char* bytes() const noexcept {
    return reinterpret_cast<const char*>(this + 1);
  }
  [[nodiscard]] std::string_view key() const noexcept { return {bytes(), key_length}; }
  [[nodiscard]] std::string_view value() const noexcept {
    return {bytes() + key_length, value_length};
  }
};
static_assert(sizeof(entry) == 24);

struct kv_root {
  std::uint64_t magic;    // set, with the two words below, in the batch that creates the index
  std::uint64_t buckets;  // bucket count, a power of two
  std::uint64_t count;    // entries, changed in the same batch as the chains
  daxalloc::pptr<daxalloc::pptr<entry>> table;
};

std::uint64_t hash_of(std::string_view s) noexcept {  // FNV-1a, then a final mix
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 31;
  h *= 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 29);
}

class kvstore {
 public:
  explicit kvstore(daxalloc::heap& h) : heap_(h), root_(h.root<kv_root>()) {
    if (root_->magic == kv_magic) return;
    // First use: the bucket array and the root's fields in one batch.
    daxalloc::batch b(heap_);
    const std::size_t bytes = default_buckets * sizeof(daxalloc::pptr<entry>);
    void* array = b.reserve(bytes);
    std::memset(array, 0, bytes);  // null pptrs
    b.set(root_->table, static_cast<daxalloc::pptr<entry>*>(array));
    b.set(&root_->buckets, default_buckets);
    b.set(&root_->count, 0);
    b.set(&root_->magic, kv_magic);
    b.publish();
  }

  void put(std::string_view key, std::string_view value) {
    std::lock_guard lock(writer_);
    const std::uint64_t h = hash_of(key);
    daxalloc::batch b(heap_);
    auto* fresh = static_cast<entry*>(b.reserve(sizeof(entry) + key.size() + value.size()));
    fresh->hash = h;
    ::new (&fresh->next) daxalloc::pptr<entry>();
    fresh->key_length = static_cast<std::uint32_t>(key.size());
    fresh->value_length = static_cast<std::uint32_t>(value.size());
    std::memcpy(fresh->bytes(), key.data(), key.size());
    std::memcpy(fresh->bytes() + key.size(), value.data(), value.size());

    auto [link, old] = find(h, key);
    if (old != nullptr) {  // replace in place in the chain
      fresh->next.store(old->next.get(), std::memory_order_relaxed);
      b.set(*link, fresh);
      b.defer_free(old);
    } else {  // insert at the bucket's head
      daxalloc::pptr<entry>& head = bucket(h);
      fresh->next.store(head.get(), std::memory_order_relaxed);
      b.set(head, fresh);
      b.set(&root_->count, root_->count + 1);
    }
    b.publish();  // flushes `fresh` in full, then the three actions, all or nothing
  }

  bool remove(std::string_view key) {
    std::lock_guard lock(writer_);
    auto [link, old] = find(hash_of(key), key);
    if (old == nullptr) return false;
    daxalloc::batch b(heap_);
    b.set(*link, old->next.get());
    b.defer_free(old);
    b.set(&root_->count, root_->count - 1);
    b.publish();
    return true;
  }

  [[nodiscard]] std::optional<std::string> get(std::string_view key) const {
    const std::uint64_t h = hash_of(key);
    for (const entry* e = bucket(h).get(); e != nullptr; e = e->next.get())
      if (e->hash == h && e->key() == key) return std::string(e->value());
    return std::nullopt;
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return root_->count; }

  // Every entry, bucket by bucket (verification and tools; no writer running).
  template <class F>
  void for_each(F&& f) const {
    for (std::uint64_t i = 0; i < root_->buckets; ++i)
      for (const entry* e = root_->table.get()[i].get(); e != nullptr; e = e->next.get()) f(*e, i);
  }
  [[nodiscard]] std::uint64_t bucket_of(std::uint64_t hash) const noexcept {
    return hash & (root_->buckets - 1);
  }

 private:
  [[nodiscard]] daxalloc::pptr<entry>& bucket(std::uint64_t h) const noexcept {
    return root_->table.get()[bucket_of(h)];
  }
  // The link that points to the entry with this key (or null), and the entry.
  [[nodiscard]] std::pair<daxalloc::pptr<entry>*, entry*> find(std::uint64_t h,
                                                               std::string_view key) const {
    daxalloc::pptr<entry>* link = &bucket(h);
    for (entry* e = link->get(); e != nullptr; link = &e->next, e = e->next.get())
      if (e->hash == h && e->key() == key) return {link, e};
    return {link, nullptr};
  }

  daxalloc::heap& heap_;
  kv_root* root_;
  std::mutex writer_;
};

// Open the heap at `path`, or create one (a devdax device always exists: it
// gets a heap when it holds none). The library decides under the heap's
// lock, so two writers started at once do not both create it.
daxalloc::heap open_or_create(const std::string& path) {
  daxalloc::heap_options o;
  o.size = 256 * MiB;
  o.max_size = 4096 * MiB;
  return daxalloc::heap::open_or_create(path, o);
}

// The writer's value for key k<i>: its length varies with i, so entries fall
// into several size classes.
std::string value_for(std::uint64_t i) {
  std::string v = "v" + std::to_string(i) + ":";
  v.append(static_cast<std::size_t>(i * 7 % 61), static_cast<char>('a' + i % 26));
  return v;
}

// i for a key "k<i>", or nothing for another key.
std::optional<std::uint64_t> index_of(std::string_view key) {
  if (key.size() < 2 || key.size() > 21 || key[0] != 'k') return std::nullopt;
  std::uint64_t i = 0;
  for (char c : key.substr(1)) {
    if (c < '0' || c > '9') return std::nullopt;
    i = i * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return i;
}

[[noreturn]] void writer(kvstore& kv, std::uint64_t first) {
  for (std::uint64_t i = first;; ++i) {
    kv.put("k" + std::to_string(i), value_for(i));
    // Every 16th put also inserts and removes a scratch key, so that kills
    // land in removals too; scratch keys are never acknowledged.
    if (i % 16 == 0) {
      const std::string scratch = "s" + std::to_string(i);
      kv.put(scratch, value_for(i));
      kv.remove(scratch);
    }
    std::printf("ACK %" PRIu64 "\n", i);
    std::fflush(stdout);
  }
}

int verify(daxalloc::heap& h, kvstore& kv, const std::string& ack_file) {
  int bad = 0;
  auto report = [&](const std::string& what) {
    if (++bad <= 20) std::fprintf(stderr, "verify: %s\n", what.c_str());
  };
  for (const auto& problem : h.check()) report("heap check: " + problem);

  // Every present entry: in the right bucket, its hash right, its value the
  // one derived from its key.
  std::uint64_t present = 0;
  kv.for_each([&](const entry& e, std::uint64_t bucket) {
    ++present;
    const std::string key(e.key());
    if (e.hash != hash_of(key) || kv.bucket_of(e.hash) != bucket)
      report("entry " + key + " has a wrong hash or sits in the wrong bucket");
    // k<i> from the writer, s<i> a scratch key it had not removed yet; other
    // keys (your own puts) are not checked.
    std::optional<std::uint64_t> i = index_of(key);
    if (!i && !key.empty() && key[0] == 's') i = index_of("k" + key.substr(1));
    if (i && e.value() != value_for(*i))
      report("key " + key + " holds '" + std::string(e.value()) + "', expected '" + value_for(*i) +
             "'");
  });
  if (present != kv.count())
    report("the root counts " + std::to_string(kv.count()) + " entries, the chains hold " +
           std::to_string(present));

  // Every acknowledged put: present with its value. A torn last line (the
  // writer killed mid-write) is ignored.
  std::ifstream acks(ack_file);
  if (!acks) {
    report("cannot read " + ack_file);
    return 1;
  }
  std::uint64_t acknowledged = 0;
  std::string line;
  while (std::getline(acks, line)) {
    if (line.rfind("ACK ", 0) != 0) continue;
    const auto i = index_of("k" + line.substr(4));
    if (!i) continue;
    ++acknowledged;
    const std::string key = "k" + std::to_string(*i);
    const auto got = kv.get(key);
    if (!got)
      report("acknowledged key " + key + " is missing");
    else if (*got != value_for(*i))
      report("acknowledged key " + key + " holds '" + *got + "'");
  }
  std::printf("verify: %" PRIu64 " acknowledged puts, %" PRIu64 " keys present, heap %s: %s\n",
              acknowledged, present, h.stats().unclean_shutdown ? "recovered" : "clean",
              bad ? "FAILED" : "all present");
  return bad ? 1 : 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: kvstore [PATH] put K V | get K | rm K | count | load N\n"
               "       kvstore PATH writer SEED | verify ACKFILE\n"
               "PATH defaults to /dev/shm/daxalloc-kv\n");
  return 2;
}

bool is_command(std::string_view s) {
  for (std::string_view c : {"put", "get", "rm", "count", "load", "writer", "verify"})
    if (s == c) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) try {
  int at = 1;
  std::string path = "/dev/shm/daxalloc-kv";
  if (argc > 1 && !is_command(argv[1])) path = argv[at++];
  if (at >= argc) return usage();
  const std::string_view cmd = argv[at++];
  const int rest = argc - at;
  auto need = [&](int n) { return rest == n; };

  auto h = open_or_create(path);
  kvstore kv(h);
  if (cmd == "put" && need(2)) {
    kv.put(argv[at], argv[at + 1]);
  } else if (cmd == "get" && need(1)) {
    const auto v = kv.get(argv[at]);
    if (!v) {
      std::fprintf(stderr, "kvstore: %s: not found\n", argv[at]);
      return 1;
    }
    std::printf("%s\n", v->c_str());
  } else if (cmd == "rm" && need(1)) {
    if (!kv.remove(argv[at])) {
      std::fprintf(stderr, "kvstore: %s: not found\n", argv[at]);
      return 1;
    }
  } else if (cmd == "count" && need(0)) {
    std::printf("%" PRIu64 "\n", kv.count());
  } else if (cmd == "load" && need(1)) {
    const std::uint64_t n = std::strtoull(argv[at], nullptr, 10);
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < n; ++i) kv.put("k" + std::to_string(i), value_for(i));
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("put %" PRIu64 " keys in %.3f s (%.0f puts/s, persistence by %s); %" PRIu64
                " keys in the store\n",
                n, s, s > 0 ? static_cast<double>(n) / s : 0.0, h.persist().name(), kv.count());
  } else if (cmd == "writer" && need(1)) {
    writer(kv, std::strtoull(argv[at], nullptr, 10));
  } else if (cmd == "verify" && need(1)) {
    return verify(h, kv, argv[at]);
  } else {
    return usage();
  }
  return 0;
} catch (const daxalloc::error& e) {
  std::fprintf(stderr, "kvstore: %s\n", e.what());
  return 1;
}
