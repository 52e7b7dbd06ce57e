// Small objects: slabs of one size class, carved from unmovable pageblocks.
//
// Persistent state of a slab: its head page descriptor {slab, class, pages}
// (the other pages stay free in the memmap, like an extent's tail) and a
// bitmap at the start of the slab, one bit per object. An object is allocated
// exactly when its bit is set; setting or clearing the bit (one atomic RMW on
// an 8-byte word, then flush) is the commit of a durable allocation or free.
//
// Volatile state, per arena and class: the slabs the arena owns and a list of
// those with free objects, each with a stack of free object indices. Objects
// handed to thread caches (and reservations) keep their bit clear, so a crash
// simply forgets them. Each thread cache takes from one arena, so threads
// rarely share a lock; an object goes back to the arena owning its slab
// (found through a lock-free directory). An arena out of partial slabs adopts
// an empty slab of another before it makes a new one, and with no pages left
// hands out objects of other arenas' partly used slabs.
//
// Invariant per slab (check()): free.size() + in_use == objects, no index in
// `free` has its bit set, popcount(bitmap) <= in_use, and no bit at or beyond
// `objects` is set.
#pragma once

#include <array>
#include <atomic>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/set.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "alloc/page_allocator.hpp"
#include "alloc/size_classes.hpp"
#include "platform/spin_mutex.hpp"

namespace daxalloc::alloc {

struct object_location {
  std::uint64_t* word;  // bitmap word holding the object's bit
  std::uint64_t mask;
  unsigned cls;
};

struct class_stats {
  std::uint64_t slabs = 0;
  std::uint64_t allocated = 0;  // objects whose bit is set
  std::uint64_t capacity = 0;   // objects in all slabs
};

class small_allocator {
 public:
  small_allocator(sparse::memory_model& model, page_allocator& pages);
  ~small_allocator();
  small_allocator(const small_allocator&) = delete;
  small_allocator& operator=(const small_allocator&) = delete;

  // Problems are appended as page_allocator::rebuild does. Every slab found
  // goes to arena 0.
  void rebuild(const std::vector<allocated_extent>& found, std::vector<std::string>& problems,
               std::vector<std::uint64_t>* bad = nullptr);

  [[nodiscard]] unsigned arenas() const noexcept { return static_cast<unsigned>(arenas_.size()); }
  // Hands out up to n free objects of class cls from the arena's slabs (bits
  // stay clear); returns how many (0: no memory for a new slab).
  std::size_t take(unsigned arena, unsigned cls, void** out, std::size_t n);
  // Takes back objects whose bits are clear, each to the arena owning its
  // slab; reorders the array (the caller drops its contents).
  void give(unsigned cls, void** objects, std::size_t n);
  // Releases every slab none of whose objects is handed out (one fence each);
  // returns how many. Empty slabs are kept until then.
  std::size_t release_empty_slabs();

  // The bitmap bit of the object starting at p; nullopt when p is not the
  // start of an object in a slab.
  [[nodiscard]] std::optional<object_location> locate(const void* p) const noexcept;
  // The same for an object handed out by take() for class cls (no checks).
  [[nodiscard]] object_location bit_of(const void* p, unsigned cls) const noexcept;
  // Durable bit updates: one atomic RMW and a flush, no fence (the caller
  // drains). Return false when the bit was already in the wanted state.
  bool mark_allocated(const object_location& at) const noexcept;
  bool mark_free(const object_location& at) const noexcept;

  [[nodiscard]] std::array<class_stats, nr_size_classes> stats() const;
  void check(std::vector<std::string>& problems) const;

 private:
  // A slab links itself into its class's lists (Boost.Intrusive: no
  // allocation when a slab fills up, empties or gets free objects again).
  struct partial_tag;
  struct empty_tag;
  using safe = boost::intrusive::link_mode<boost::intrusive::safe_link>;
  using partial_hook = boost::intrusive::set_base_hook<boost::intrusive::tag<partial_tag>, safe>;
  using empty_hook = boost::intrusive::list_base_hook<boost::intrusive::tag<empty_tag>, safe>;
  struct slab : partial_hook, empty_hook {
    slab(std::uint64_t head, std::uint32_t handed_out, unsigned owner)
        : pfn(head), in_use(handed_out), arena(owner) {}
    std::uint64_t pfn;
    std::uint32_t in_use;             // objects handed out: allocated, cached or reserved
    std::vector<std::uint32_t> free;  // indices of free objects not handed out
    std::atomic<unsigned> arena;      // changed only with both arenas' class locks held
    friend bool operator<(const slab& a, const slab& b) { return a.pfn < b.pfn; }
  };
  struct alignas(64) klass {
    mutable ::daxalloc::detail::spin_mutex mutex;
    std::unordered_map<std::uint64_t, std::unique_ptr<slab>> slabs;  // by head pfn; owns them
    // Slabs with objects not handed out, by address: the lowest is used
    // first, so live objects gather at low addresses and slabs higher up
    // empty out (address-ordered first fit, as jemalloc picks slabs).
    boost::intrusive::set<slab, boost::intrusive::base_hook<partial_hook>> partial;
    // Slabs with no object handed out (also on `partial`).
    boost::intrusive::list<slab, boost::intrusive::base_hook<empty_hook>> empty;
  };
  using arena = std::array<klass, nr_size_classes>;

  [[nodiscard]] slab* new_slab(unsigned arena, unsigned cls);  // with the class lock held
  [[nodiscard]] slab* adopt_empty_slab(unsigned arena, unsigned cls);
  std::size_t take_partial(klass& k, const size_class& c, void** out, std::size_t n);
  void release_slab(klass& k, slab* s, unsigned cls);
  void return_object(klass& k, slab* s, const void* object, const size_class& c);
  void check_slab(std::uint64_t pfn, const slab& s, unsigned arena, unsigned cls,
                  std::vector<std::string>& problems) const;
  // (No heap-wide count of empty slabs: two threads would bounce its cache
  // line every time a slab fills or empties.)
  static void became_empty(klass& k, slab& s) { k.empty.push_back(s); }
  static void no_longer_empty(klass& k, slab& s) { k.empty.erase(k.empty.iterator_to(s)); }
  [[nodiscard]] std::uint64_t* bitmap(std::uint64_t pfn) const noexcept {
    return reinterpret_cast<std::uint64_t*>(model_.pfn_to_virt(pfn));
  }
  // The directory: head pfn -> slab, one leaf per section that ever held a
  // slab (made on the first, with create).
  [[nodiscard]] std::atomic<slab*>* directory_entry(std::uint64_t pfn, bool create) const;
  [[nodiscard]] slab* slab_of(const void* object, const size_class& c) const noexcept;

  sparse::memory_model& model_;
  page_allocator& pages_;
  std::vector<std::unique_ptr<arena>> arenas_;
  std::unique_ptr<std::atomic<std::atomic<slab*>*>[]> directory_;
};

}  // namespace daxalloc::alloc
