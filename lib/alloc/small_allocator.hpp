// Small objects: slabs of one size class, carved from unmovable pageblocks;
// slabs of movable objects (format 7) from movable ones.
//
// Persistent state of a slab: its head page descriptor {slab, class, pages}
// (the other pages stay free in the memmap, like an extent's tail) and a
// bitmap at the start of the slab, one bit per object. An object is
// allocated exactly when its bit is set; setting or clearing the bit (one
// compare-and-swap of an 8-byte word that changes its check bits with it,
// then a flush) is the commit of a durable allocation or free. Slabs made
// by format 4 and older (legacy classes) keep 64 bits per word and a digest
// in the head descriptor, which an atomic XOR keeps in step before the same
// fence; new slabs are always of format 5.
//
// Volatile state, the kernel's way: a table per present section with one
// entry per 64 KiB chunk (the smallest slab), like the memmap with one per
// page. A chunk's map word names its slab's class and head chunk, so a free
// that has only the pointer finds its size class with two loads (section
// leaf, chunk word) and no lock; the head chunk's slot holds the slab's
// volatile descriptor: its arena, how many objects are handed out, and an
// `avail` bitmap of the objects neither allocated nor handed out (inline for
// slabs of up to 1,024 objects, else in the leaf's wide area). Objects leave
// a slab lowest address first, so a fresh slab hands out ascending runs.
// Nothing here is node-based or allocated per slab: the leaves are lazily
// populated anonymous memory made when a section becomes present.
//
// Open is lazy (O(present memmap), not O(objects)): rebuild() installs each
// slab found (map words, descriptor slot) but reads nothing of its bitmap;
// the slab waits, unloaded, on its class's unloaded list (on no arena's
// lists) until its first use loads it: a take() whose arena has no partial
// slab (up to 4 per call, or all of the class when no new slab can be made),
// ensure_loaded() before a durable free of an object allocated in an earlier
// session, check(), release_empty_slabs(). Loading reads the bitmap (its
// words' check bits and, after a clean close, the digest recorded in the
// head descriptor: no bit of an unloaded slab changes before its load, since
// no object of it is handed out and every durable free loads it first) and
// puts the slab on an arena's lists; a damaged slab goes on its arena's
// `slabs` only (avail 0, in_use = objects: never handed out, frees of its
// objects refused) and its problem is reported by check(). A repair loads
// every slab at open, so damage is quarantined there as before.
//
// Objects handed to thread caches (and reservations) keep their bit clear,
// so a crash simply forgets them. Each thread cache takes from one arena, so
// threads rarely share a lock; an object goes back to the arena owning its
// slab. An arena out of partial slabs adopts an empty slab of another before
// it makes a new one, and with no pages left hands out objects of other
// arenas' partly used slabs. With placement by node (placement.hpp) it
// loads, adopts and makes slabs of its own node's memory first.
//
// Movable objects live in slabs of their own (head descriptor state
// movable_slab), all in one arena of their own (movable_arena(): never a
// thread's, never adopting from or lending to the others). Each slot
// begins with a 16-byte sparse::movable_header, and an object's address
// is the slot's plus movable_skew: everything here (take, give, locate,
// any_class_of) deals in those addresses, so a free by pointer works alike.
// The skew is in the chunk's map word: a first object is 64-byte aligned
// (the header is a multiple of 64), so the word's offset modulo 64 is it.
//
// Invariant per slab (check()): popcount(avail) + in_use == objects, no avail
// bit is also set in the persistent bitmap, popcount(bitmap) <= in_use, no
// bit at or beyond `objects` is set in either, every bitmap word checks out
// (format 5), and a legacy slab's head descriptor digest is that of the
// bitmap (every bitmap change XORs its objects' terms into it: bits_changed).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/set.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "alloc/size_classes.hpp"
#include "platform/spin_mutex.hpp"
#include "platform/zeroed_memory.hpp"

namespace daxalloc::alloc {

struct object_location {
  std::uint64_t* word;  // bitmap word holding the object's bit
  std::uint64_t mask;
  unsigned cls;
};

struct class_stats {
  std::uint64_t slabs = 0;
  std::uint64_t allocated = 0;      // objects whose bit is set
  std::uint64_t capacity = 0;       // objects in all slabs
  std::uint64_t movable_slabs = 0;  // of them, slabs of movable objects
  std::uint64_t movable_allocated = 0;
};

inline constexpr unsigned chunk_shift = sparse::page_shift + min_slab_order;  // 64 KiB
// A movable object's address is its slot's plus this (its header).
inline constexpr std::uint32_t movable_skew = sizeof(sparse::movable_header);

// A movable slab as compaction sees it (small_allocator::movable_slabs).
struct slab_usage {
  std::uint64_t pfn;
  std::uint32_t in_use;   // objects handed out (allocated, or reserved)
  std::uint32_t objects;  // its capacity
};

class small_allocator {
 public:
  small_allocator(sparse::memory_model& model, page_allocator& pages);
  ~small_allocator();
  small_allocator(const small_allocator&) = delete;
  small_allocator& operator=(const small_allocator&) = delete;

  // Problems are appended as page_allocator::rebuild does. Every slab found
  // is installed unloaded; with `eager` each is loaded (into arena 0) at
  // once and its bitmap's problems appended here instead of deferred to
  // check(). `digests`: the heap was closed cleanly, so a format 5 slab's
  // bitmap must match the digest its head descriptor recorded at close.
  void rebuild(const std::vector<allocated_extent>& found, std::vector<std::string>& problems,
               std::vector<std::uint64_t>* bad = nullptr, bool eager = true, bool digests = false);
  // Loads the slab holding `object` (allocated in an earlier session) if it
  // is not yet, before its bit is cleared; false when its bitmap is damaged
  // (its objects cannot be freed). Lock-free when the slab is loaded.
  [[nodiscard]] bool ensure_loaded(const void* object) const {
    const std::uint8_t st = slab_of(object)->state.load(std::memory_order_acquire);
    return st == loaded || (st != damaged && ensure_loaded_slow(object));
  }
  // Loads every slab still unloaded (O(objects)).
  void load_all() const;
  // Whether close should record the digest of the format 5 slab at pfn:
  // not for a damaged slab (the next open finds it again), nor for one
  // unloaded since a clean open (its bitmap is what the last close recorded).
  [[nodiscard]] bool digest_stale(std::uint64_t pfn) const noexcept;
  // Makes the tables of the sections a hot-added span reaches.
  void add_span(std::uint64_t offset, std::uint64_t length);

  // Arenas of ordinary objects (threads' caches take from these), and the
  // one of movable objects, after them.
  [[nodiscard]] unsigned arenas() const noexcept { return movable_arena_; }
  [[nodiscard]] unsigned movable_arena() const noexcept { return movable_arena_; }
  // Whether the object at p (as class_of finds it) is movable.
  [[nodiscard]] bool movable(const void* p) const noexcept {
    const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base_);
    return ((chunk_map_[offset >> chunk_shift].load(std::memory_order_acquire) >> 8) & 63) != 0;
  }
  // Compaction's view of class cls's movable slabs (loaded first), in
  // address order.
  [[nodiscard]] std::vector<slab_usage> movable_slabs(unsigned cls) const;
  // Hands out one free object of the movable slab at pfn (as take() does);
  // nullptr when it has none.
  [[nodiscard]] void* take_from(std::uint64_t pfn);
  // A new empty movable slab of class cls (where the page allocator puts
  // it); its head pfn, or nullopt when no pages are left.
  [[nodiscard]] std::optional<std::uint64_t> new_movable_slab(unsigned cls);
  // Releases the empty slabs of the movable arena only; returns how many,
  // and their pages.
  std::pair<std::size_t, std::uint64_t> release_empty_movable_slabs();
  // Hands out up to n free objects of class cls from the arena's slabs (bits
  // stay clear), in ascending address order within each slab; returns how
  // many (0: no memory for a new slab).
  std::size_t take(unsigned arena, unsigned cls, void** out, std::size_t n);
  // Takes back objects of class cls whose bits are clear, each to the arena
  // owning its slab; reorders the array (the caller drops its contents).
  void give(unsigned cls, void** objects, std::size_t n);
  // Releases every slab none of whose objects is handed out (one fence each);
  // returns how many. Empty slabs are kept until then.
  std::size_t release_empty_slabs();
  // Placement by node (placement.hpp): the slabs an arena holds of another
  // arena's node go to that arena (objects of them in thread caches go back
  // to their slab's arena, as ever); an arena out of partial slabs loads,
  // adopts or makes one of its node's first; a slab loaded outside take()
  // goes to an arena of its node.
  void place(std::shared_ptr<const node_placement> placement);

  // The class of the slab in which an ordinary object starts at p (a legacy
  // class for a slab of format 4 or older), or -1 (also for a movable
  // object, which never goes to a thread's cache): O(1), no lock, no load
  // from the media (the free-by-pointer fast path).
  [[nodiscard]] int class_of(const void* p) const noexcept { return class_at(p, false); }
  // The same for any object, movable ones included.
  [[nodiscard]] int any_class_of(const void* p) const noexcept { return class_at(p, true); }
  [[nodiscard]] int class_at(const void* p, bool movable_too) const noexcept {
    const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base_);
    if (offset >= range_) return -1;
    const std::uint64_t e = chunk_map_[offset >> chunk_shift].load(std::memory_order_acquire);
    if (e == 0 || (!movable_too && (e & std::uint64_t{63} << 8))) return -1;
    const unsigned cls = static_cast<unsigned>(e & 0xff);
    const size_class& c = size_classes[cls];
    const std::uint64_t at = offset - (e >> 8);  // from the slab's first object
    if (at >= c.bytes || std::uint64_t{c.index(at)} * c.size != at) return -1;
    return static_cast<int>(cls);
  }
  // The bytes an object of class cls at p holds (its class's size, less
  // the header of a movable one).
  [[nodiscard]] std::uint32_t object_size(const void* p, unsigned cls) const noexcept {
    return size_classes[cls].size - (movable(p) ? movable_skew : 0);
  }
  // Whether [offset, offset + n) of the region overlaps the header (the
  // bitmap) of a live slab: one map load per 64 KiB chunk, no lock.
  [[nodiscard]] bool touches_slab_header(std::uint64_t offset, std::uint64_t n) const noexcept {
    if (n == 0 || offset >= range_ || n > range_ - offset) return false;
    for (std::uint64_t chunk = offset >> chunk_shift; chunk <= (offset + n - 1) >> chunk_shift;
         ++chunk) {
      const std::uint64_t e = chunk_map_[chunk].load(std::memory_order_acquire);
      if (e == 0) continue;
      const std::uint64_t first = (e >> 8) & ~std::uint64_t{63};  // its first slot
      if (offset < first && offset + n > first - size_classes[e & 0xff].header) return true;
    }
    return false;
  }
  // Whether [offset, offset + n) overlaps the header of a slot of a movable
  // slab (owner and check: written by the heap's batches only).
  [[nodiscard]] bool touches_movable_header(std::uint64_t offset, std::uint64_t n) const noexcept {
    if (n == 0 || offset >= range_ || n > range_ - offset) return false;
    for (std::uint64_t chunk = offset >> chunk_shift; chunk <= (offset + n - 1) >> chunk_shift;
         ++chunk) {
      const std::uint64_t e = chunk_map_[chunk].load(std::memory_order_acquire);
      if (e == 0 || ((e >> 8) & 63) == 0) continue;
      const size_class& c = size_classes[e & 0xff];
      const std::uint64_t first = (e >> 8) - movable_skew;  // slot 0
      const std::uint64_t lo = std::max(offset, first), hi = std::min(offset + n, first + c.bytes);
      if (lo >= hi) continue;
      const std::uint64_t slot = first + (lo - first) / c.size * c.size;
      if (lo < slot + movable_skew || slot + c.size < hi) return true;
    }
    return false;
  }
  // The bitmap bit of the object that starts at p in a live slab (as
  // class_of finds it); nullopt when there is none.
  [[nodiscard]] std::optional<object_location> locate(const void* p) const noexcept;
  // The same read from the media alone (page descriptors and the class
  // table), for recovery before the volatile state exists.
  [[nodiscard]] std::optional<object_location> locate_on_media(const void* p) const noexcept;
  // The same for an object handed out by take() (no checks).
  [[nodiscard]] object_location bit_of(const void* p) const noexcept;
  // Durable bit updates: one atomic RMW and a flush, no fence (the caller
  // drains). Return false when the bit was already in the wanted state.
  bool mark_allocated(const object_location& at) const noexcept { return mark(at, true); }
  bool mark_free(const object_location& at) const noexcept { return mark(at, false); }
  // Sets or clears the bits `mask` of a bitmap word of a slab of class cls
  // with one atomic RMW that keeps its check bits (or a legacy slab's
  // digest) in step; returns the bits that changed. Nothing is flushed: the
  // word, and digest_of(word) when there is one, are the caller's to flush.
  std::uint64_t change_bits(std::uint64_t* word, std::uint64_t mask, bool set,
                            unsigned cls) const noexcept;
  // The class of the slab a bitmap word belongs to, from its head descriptor.
  [[nodiscard]] unsigned word_class(const std::uint64_t* word) const noexcept;
  // The descriptor holding the digest of the legacy slab a bitmap word
  // belongs to; null for a format 5 slab.
  [[nodiscard]] sparse::page_descriptor* digest_of(const std::uint64_t* word) const noexcept;
  // The digest a slab's bitmap should have (sparse::slab_bitmap_digest).
  [[nodiscard]] std::uint64_t bitmap_digest(std::uint64_t pfn, unsigned cls) const noexcept;
  // What is wrong with the bitmap of the slab of class cls at pfn, alone: a
  // word that fails its check bits (format 5), a bit beyond the objects.
  [[nodiscard]] std::string bitmap_problem(std::uint64_t pfn, unsigned cls) const;
  // The header (bitmap) of the slab holding `object` probed: where it does
  // not read (a load there ends the process), or nothing.
  [[nodiscard]] std::optional<media::read_failure> unreadable(const void* object) const;
  // Tests: new slabs in the legacy encoding, as format 4 made them (how the
  // upgrade tests make images of older formats).
  static inline bool make_legacy_slabs = false;

  // by_type: the allocated objects' usable bytes added per migratetype of
  // the pageblock their slab lies in.
  [[nodiscard]] std::array<class_stats, nr_size_classes> stats(
      std::array<std::uint64_t, 8>* by_type = nullptr) const;
  // `digests_pending`: slabs (head pfns, sorted) whose digest a read-only
  // open found explained by a crash but could not rewrite: not compared.
  void check(std::vector<std::string>& problems,
             std::span<const std::uint64_t> digests_pending = {}) const;

 private:
  // A slab links itself into its class's lists (Boost.Intrusive: no
  // allocation when a slab fills up, empties or gets free objects again).
  struct partial_tag;
  struct empty_tag;
  struct all_tag;
  using safe = boost::intrusive::link_mode<boost::intrusive::safe_link>;
  using partial_hook = boost::intrusive::set_base_hook<boost::intrusive::tag<partial_tag>, safe>;
  using empty_hook = boost::intrusive::list_base_hook<boost::intrusive::tag<empty_tag>, safe>;
  using all_hook = boost::intrusive::list_base_hook<boost::intrusive::tag<all_tag>, safe>;
  static constexpr std::uint32_t inline_words = (1024 + slab_word_bits - 1) / slab_word_bits;
  static constexpr std::uint32_t wide_words = max_slab_words;
  // A slab's volatile state: unloaded (on its class's unloaded list, through
  // all_hook), loading (off every list, being read by the thread that took
  // it off), loaded or damaged (on its arena's lists). Changed from unloaded
  // under the unloaded list's mutex, from loading by the loading thread.
  enum : std::uint8_t { unloaded, loading, loaded, damaged };
  struct slab : partial_hook, empty_hook, all_hook {
    slab(std::uint64_t head, unsigned klass, unsigned owner, std::uint64_t* bits, bool moves)
        : pfn(head),
          avail(bits),
          arena(owner),
          cls(static_cast<std::uint8_t>(klass)),
          movable(moves) {}
    std::uint64_t pfn;
    std::uint64_t* avail;         // 1: neither allocated nor handed out
    std::uint32_t in_use = 0;     // objects handed out: allocated, cached or reserved
    std::uint32_t low_word = 0;   // no avail bit below this word
    std::atomic<unsigned> arena;  // changed only with both arenas' class locks held
    std::uint8_t cls;
    bool movable;  // of movable objects (movable_arena_'s)
    std::atomic<std::uint8_t> state = loaded;
    std::uint64_t inline_avail[inline_words] = {};
    friend bool operator<(const slab& a, const slab& b) { return a.pfn < b.pfn; }
  };
  // The slab table: per 64 KiB chunk of the range a map word (0: no slab;
  // else the class in bits 0-7 and above them the region offset of the
  // slab's first object, never 0), one lazily populated mapping for the
  // whole range, so the free path reaches a chunk's word in one load. Per
  // present section a second mapping holds the descriptor slot of a slab
  // headed at each of its chunks, then room for a wide bitmap per chunk.
  struct leaf {
    slab* slabs;
    std::uint64_t* wide;  // wide_words per chunk
  };
  struct alignas(64) klass {
    mutable ::daxalloc::detail::spin_mutex mutex;
    boost::intrusive::list<slab, boost::intrusive::base_hook<all_hook>> slabs;  // all of them
    // Slabs with objects not handed out, by address: the lowest is used
    // first, so live objects gather at low addresses and slabs higher up
    // empty out (address-ordered first fit, as jemalloc picks slabs).
    boost::intrusive::set<slab, boost::intrusive::base_hook<partial_hook>> partial;
    // Slabs with no object handed out (also on `partial`).
    boost::intrusive::list<slab, boost::intrusive::base_hook<empty_hook>> empty;
  };
  using arena = std::array<klass, nr_size_classes>;
  // Per class, the slabs not loaded yet, in address order; the mutex is a
  // leaf lock (nothing else is locked while it is held).
  struct alignas(64) unloaded_class {
    ::daxalloc::detail::spin_mutex mutex;
    boost::intrusive::list<slab, boost::intrusive::base_hook<all_hook>> slabs;
  };

  [[nodiscard]] leaf leaf_of(std::uint64_t pfn) const;  // made on first use
  [[nodiscard]] leaf leaf_at(std::byte* memory) const noexcept;
  [[nodiscard]] static std::uint64_t head_chunk(std::uint64_t map_word) noexcept {
    return map_word >> 8 >> chunk_shift;  // (a slab's header is smaller than a chunk)
  }
  [[nodiscard]] slab* slab_at(std::uint64_t head_pfn) const noexcept;  // null when none
  [[nodiscard]] slab* slab_of(const void* object) const noexcept;      // in a live slab
  slab* install(std::uint64_t pfn, unsigned cls, unsigned arena,
                bool movable);  // with the class lock held
  void uninstall(slab* s);
  [[nodiscard]] slab* new_slab(unsigned arena, unsigned cls);  // with the class lock held
  [[nodiscard]] slab* adopt_empty_slab(unsigned arena, unsigned cls);
  std::size_t take_partial(klass& k, void** out, std::size_t n);
  // Loading (volatile state only, hence const): pops the first unloaded
  // slab of a class, marked loading; null when none.
  // With `local_to`, only a slab of the node arena a serves (placement).
  slab* pop_unloaded(unsigned cls, bool movable, const node_placement* local_to = nullptr,
                     unsigned a = 0) const;
  [[nodiscard]] unsigned home_of(const slab& s) const;
  // Reads the bitmap of s (popped, loading) and puts it on arena a's lists,
  // whose class lock the caller holds; false when it is damaged.
  bool load(slab& s, unsigned a) const;
  // Loads unloaded slabs of class cls into arena a (its class lock held)
  // until one has a free object, at most `limit`: whether one had.
  // `local`: only slabs of a's node (placement by node).
  bool load_some(unsigned a, unsigned cls, std::size_t limit, bool local) const;
  bool ensure_loaded_slow(const void* object) const;
  void release_slab(klass& k, slab* s);
  void returned(klass& k, slab& s, std::uint32_t count);
  bool mark(const object_location& at, bool set) const noexcept;
  // Keeps a legacy slab's digest in step after the bits `changed` of one of
  // its bitmap words flipped: one atomic XOR on the head descriptor.
  sparse::page_descriptor* bits_changed(const std::uint64_t* word,
                                        std::uint64_t changed) const noexcept;
  [[nodiscard]] sparse::page_descriptor* head_of(const std::uint64_t* word) const noexcept;
  void check_slab(const slab& s, std::vector<std::string>& problems,
                  std::span<const std::uint64_t> digests_pending) const;
  template <class F>
  void for_each_slab(F&& f) const;  // every live slab, in address order
  static void became_empty(klass& k, slab& s) { k.empty.push_back(s); }
  static void no_longer_empty(klass& k, slab& s) { k.empty.erase(k.empty.iterator_to(s)); }
  [[nodiscard]] std::uint64_t* bitmap(std::uint64_t pfn) const noexcept {
    return reinterpret_cast<std::uint64_t*>(model_.pfn_to_virt(pfn));
  }

  sparse::memory_model& model_;
  page_allocator& pages_;
  std::byte* base_;
  std::uint64_t range_;
  unsigned section_bits_;
  ::daxalloc::detail::zeroed_memory chunk_map_memory_;
  std::atomic<std::uint64_t>* chunk_map_;  // by region offset >> chunk_shift
  std::vector<std::unique_ptr<arena>> arenas_;
  std::uint64_t chunks_;                               // per section
  std::uint64_t leaf_bytes_;                           // of each section's mapping
  std::unique_ptr<std::atomic<std::byte*>[]> leaves_;  // by section number
  unsigned movable_arena_;  // arenas_[movable_arena_]: the movable slabs'
  // Per kind (ordinary, movable) and class.
  mutable std::array<std::array<unloaded_class, nr_size_classes>, 2> unloaded_;
  bool check_digests_ = false;  // rebuild's `digests`
  // The problems of damaged slabs found by a load (check() reports them),
  // with their pageblocks.
  mutable std::mutex deferred_mutex_;
  mutable std::vector<std::pair<std::string, std::uint64_t>> deferred_;
  std::atomic<std::shared_ptr<const node_placement>> placement_;  // place()
};

}  // namespace daxalloc::alloc
