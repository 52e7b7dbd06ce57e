// The sparse memory model on the media: the kernel's SPARSEMEM + ZONE_DEVICE
// design kept persistently in the region itself.
//
// The region's address range (max_range bytes, reserved at create) is cut into
// sections of 2^section_size_bits bytes and subsections of 2 MiB. A section's
// record (state bits, subsection_map, pageblock flags, memmap offset) lives in
// a root page; root pages are populated on demand and found through the root
// directory (SPARSEMEM_EXTREME), so absent address space costs nothing.
//
// Every 4 KiB page has an 8-byte page_descriptor in a memmap block: 2 MiB
// aligned, carved from the first subsections of the first add into its span
// (1 GiB of address space: 8 sections of 128 MiB, down to one of 1 GiB), so
// memory that is hot-added brings its own metadata, as with the kernel's
// vmem_altmap.
//
// Durability (docs/on-media-format.md has the byte layout):
//   create      writes head, records and memmap, then superblock A, then B;
//               the heap exists once copy A is durable.
//   hot-add,    prepare (grow file, zero descriptors and root pages; persist),
//   hot-remove  commit the hotplug intent (persist: the commit point), apply it
//               to the section records (persist), clear it (persist). Open
//               redoes a committed intent, so the change is all or nothing.
//   pageblock   one compare-and-swap on a 64-bit flags word, then persist: the
//   flags       CAS is the commit (8-byte stores are failure-atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daxalloc/region.hpp"
#include "platform/media.hpp"
#include "platform/media_guard.hpp"
#include "sparse/geometry.hpp"
#include "sparse/layout.hpp"

namespace daxalloc::sparse {

struct create_options {
  std::uint64_t size = 0;       // bytes present after create (rounded up to 2 MiB)
  std::uint64_t max_range = 0;  // address range for growth; 0: 1 TiB (devdax: the device)
  unsigned section_size_bits = default_section_size_bits;
  bool overwrite = false;  // devdax: replace a heap that is already there
  region_options region;   // kind-specific options (persistence mode, ...)
};

struct open_options {
  unsigned section_size_bits = 0;  // 0 accepts the heap's; else must match
  region_options region;
  // The media's known bad blocks (media::device_state::bad_blocks): ranges
  // open must not load from.
  std::vector<media::bad_range> known_bad;
  // Called once the superblock copy is chosen and the head is mapped, before
  // open writes anything (a stale superblock copy, a hotplug intent redone):
  // where a caller refuses a heap it must leave untouched, by throwing (the
  // heap layer's unsafe-shutdown check). `base` is the region's start.
  std::function<void(const superblock&, const geometry&, const std::byte* base)> before_writes;
  // Where members are now, by their index (an empty path, or none: where
  // their record says).
  std::vector<std::filesystem::path> member_paths;
};

// What add_member takes: a file is created when missing (with `size`);
// size 0 takes the file's size or the whole device.
struct member_options {
  std::uint64_t size = 0;
  bool create = true;
  int node = -1;  // its NUMA node; -1: the node sysfs gives its device (or none)
};

struct model_stats {
  std::uint64_t present_bytes = 0;  // bytes of present subsections, metadata included
  std::uint64_t present_sections = 0;
  std::uint64_t present_subsections = 0;
  std::uint64_t populated_roots = 0;
  std::uint64_t head_bytes = 0;  // superblocks, intent, directory, root pages
  // Memmap: the blocks (no memmap area), or the area's backed descriptor
  // pages, 4 KiB per present pageblock (format 6).
  std::uint64_t memmap_bytes = 0;
  std::uint64_t area_bytes = 0;    // present subsections of the memmap area (its blocks)
  std::uint64_t usable_bytes = 0;  // present minus head and memmap (or area)
  // Metadata bytes per present 4 KiB page: (head + memmap) / present pages.
  [[nodiscard]] double metadata_per_page() const;
};

// The memmap area's blocks that memory in [start, end) needs (format 6).
[[nodiscard]] std::vector<std::uint64_t> blocks_for(const geometry& geo, std::uint64_t start,
                                                    std::uint64_t end);

class memory_model {
 public:
  // Tests: new heaps keep each span's memmap block inside the span, as format
  // 5 and older did (how the upgrade tests make images of older formats).
  static inline bool make_legacy_memmap = false;

  [[nodiscard]] static std::unique_ptr<memory_model> create(const std::filesystem::path& path,
                                                            const create_options& options);
  [[nodiscard]] static std::unique_ptr<memory_model> create(region&& r,
                                                            const create_options& options);
  [[nodiscard]] static std::unique_ptr<memory_model> open(const std::filesystem::path& path,
                                                          const open_options& options = {});
  [[nodiscard]] static std::unique_ptr<memory_model> open(region&& r,
                                                          const open_options& options = {});
  // Whether either superblock copy carries the daxalloc magic: the region
  // holds a heap (maybe damaged, maybe of another version), or a create of
  // one that got as far as writing a copy.
  [[nodiscard]] static bool holds_heap(const region& r) noexcept;
  ~memory_model();
  memory_model(const memory_model&) = delete;
  memory_model& operator=(const memory_model&) = delete;

  [[nodiscard]] const geometry& geo() const noexcept { return geo_; }
  [[nodiscard]] region& media() noexcept { return region_; }
  [[nodiscard]] const region& media() const noexcept { return region_; }
  [[nodiscard]] const superblock& super() const noexcept { return super_; }
  [[nodiscard]] std::byte* base() const noexcept { return region_.base(); }
  // Whether [offset, offset + len) is mapped: in the region's own file, or
  // in a member's.
  [[nodiscard]] bool mapped(std::uint64_t offset, std::uint64_t len) const noexcept {
    return offset <= geo_.max_range && region_.contains(base() + offset, len);
  }
  // Guarded loads from the region that skip its known bad blocks
  // (open_options::known_bad): recovery and check read metadata through it.
  [[nodiscard]] const media::guarded_reader& reader() const noexcept { return reader_; }
  // The descriptors of the pageblock at pfn (its 4 KiB of the memmap)
  // probed: how a media error or bad block there is found before a scan
  // loads them. The pfn must be valid.
  [[nodiscard]] std::optional<media::read_failure> probe_descriptors(std::uint64_t pfn) const;

  // On a read-only region, open writes nothing: what its recovery would have
  // written (a superblock copy, a hotplug intent redone or cleared) is listed
  // here instead, one line each, and is left out of check(). Empty read-write.
  [[nodiscard]] const std::vector<std::string>& pending_recovery() const noexcept {
    return pending_;
  }

  // pfn: page frame number, the byte offset in the region >> 12.
  [[nodiscard]] bool pfn_valid(std::uint64_t pfn) const noexcept;
  // O(1): one load of the section's encoded memmap and an add (the kernel's
  // section_mem_map trick). The pfn must be valid.
  [[nodiscard]] page_descriptor* pfn_to_page(std::uint64_t pfn) const noexcept {
    return reinterpret_cast<page_descriptor*>(
        mem_map_[geo_.pfn_to_section_nr(pfn)].load(std::memory_order_relaxed) +
        pfn * sizeof(page_descriptor));
  }
  // O(1). In the memmap area, the block's place names its span. A block
  // carved from its span (no area) never straddles a section, so the section
  // holding the descriptor has the same encoded memmap as the page's own
  // section (the kernel's page - section_mem_map).
  [[nodiscard]] std::uint64_t page_to_pfn(const page_descriptor* page) const noexcept {
    const auto address = reinterpret_cast<std::uintptr_t>(page);
    const auto offset =
        static_cast<std::uint64_t>(address - reinterpret_cast<std::uintptr_t>(base()));
    if (geo_.memmap_area) {
      const std::uint64_t in_area = offset - geo_.memmap_area;
      return (in_area / geo_.memmap_bytes() << (geo_.span_bits() - page_shift)) +
             in_area % geo_.memmap_bytes() / sizeof(page_descriptor);
    }
    return (address - mem_map_[offset >> geo_.section_size_bits].load(std::memory_order_relaxed)) /
           sizeof(page_descriptor);
  }
  [[nodiscard]] std::byte* pfn_to_virt(std::uint64_t pfn) const noexcept {
    return base() + (pfn << page_shift);
  }

  [[nodiscard]] migratetype get_pageblock_migratetype(std::uint64_t pfn) const noexcept;
  [[nodiscard]] bool get_pageblock_skip(std::uint64_t pfn) const noexcept;
  // Durable when they return (one CAS + one persist). The pfn must be valid.
  // Refused (false) for metadata: the head and memmap pageblocks keep that
  // type, and no other pageblock may take it.
  // fence = false leaves the drain to the caller (several pageblocks, one fence).
  bool set_pageblock_migratetype(std::uint64_t pfn, migratetype type, bool fence = true) noexcept;
  void set_pageblock_skip(std::uint64_t pfn, bool skip) noexcept;

  // Online hot-add and hot-remove of a 2 MiB-aligned span of byte offsets,
  // with the kernel's rules (docs/kernel-model.md). Serialised with each other.
  void hot_add(std::uint64_t start, std::uint64_t length);
  void hot_remove(std::uint64_t start, std::uint64_t length);
  // The kernel's check_pfn_span: a non-empty span of whole 2 MiB subsections
  // (errc::invalid_argument, errc::misaligned). Returns the prefix of the
  // operation's error messages.
  [[nodiscard]] std::string check_pfn_span(const char* operation, std::uint64_t start,
                                           std::uint64_t length) const;

  // Every invariant of the superblock, directory, section records, memmap
  // placement and pageblock flags; one line per violation, empty when sound.
  [[nodiscard]] std::vector<std::string> check() const;
  [[nodiscard]] model_stats stats() const;

  // Rewrites both superblock copies with a new shutdown_state (the heap
  // layer's clean/unclean marker): copy A, persist, copy B, persist.
  void set_shutdown_state(std::uint64_t state);

  // Members (format 8): another file or devdax device as a run of 1 GiB
  // spans at the top of the range, below the members there are. add_member
  // maps it, labels it, records it (adding), adds its memory after the
  // label's 2 MiB, and records it online: a crash after the record leaves
  // an add that the next open finishes. remove_member drops the record and
  // unmaps the member, whose memory must be absent (errc::in_use).
  const member_record& add_member(const std::filesystem::path& path, const member_options& options);
  void remove_member(std::size_t index);
  [[nodiscard]] std::span<const member_record> members() const noexcept {
    return {super_.members, super_.nr_members};
  }
  // The runs [start, length) of present (or, present false, absent)
  // subsections in [from, to), in address order.
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> subsection_runs(
      std::uint64_t from, std::uint64_t to, bool present = true) const;

  [[nodiscard]] std::uint64_t* section_record(std::uint64_t section_nr) const noexcept;
  [[nodiscard]] bool section_present(std::uint64_t section_nr) const noexcept;
  [[nodiscard]] bool subsection_present(std::uint64_t offset) const noexcept;
  // Offset of the memmap block of the span holding `offset`, or 0 if none.
  [[nodiscard]] std::uint64_t span_memmap(std::uint64_t offset) const noexcept;
  [[nodiscard]] std::uint64_t directory_entry(std::uint64_t root) const noexcept;

  // Whether the offset lies in a present memmap block (its span's, or in
  // the memmap area).
  [[nodiscard]] bool in_memmap_block(std::uint64_t offset) const noexcept;
  // Whether any subsection of the span holding `offset` is present.
  [[nodiscard]] bool span_has_memory(std::uint64_t offset) const noexcept;

 private:
  explicit memory_model(region&& r);
  [[nodiscard]] std::string intent_problem(const hotplug_intent& in) const;
  static std::unique_ptr<memory_model> create_impl(std::unique_ptr<memory_model> m,
                                                   std::uint64_t data);
  void load(const open_options& options);
  void attach_members(const open_options& options);
  // Each added region mapped whole, its label intact, its label's 2 MiB absent.
  void member_problems(std::vector<std::string>& out) const;
  void settle_members();
  // Why region i's label is not its own (empty: it is); `unreadable` when
  // it does not read.
  [[nodiscard]] std::string label_problem_of(std::uint32_t i, bool& unreadable) const;
  // Drops record i (the later ones move down) and unmaps the member; the
  // caller writes the superblocks.
  void drop_member(std::uint32_t i);
  void init_volatile();
  void write_superblocks();
  void add_locked(std::uint64_t start, std::uint64_t length, std::optional<bool> fresh);
  void apply_intent(const hotplug_intent& intent);
  void update_records(std::uint64_t start, std::uint64_t end, bool adding);
  // The area blocks a removal of [start, end) leaves describing no memory.
  [[nodiscard]] std::vector<std::uint64_t> idle_blocks(std::uint64_t start,
                                                       std::uint64_t end) const;
  void commit_intent(hotplug_op op, std::uint64_t start, std::uint64_t length);
  void clear_intent();
  void refresh_volatile(std::uint64_t start, std::uint64_t length);
  [[nodiscard]] std::uint8_t pageblock_bits(std::uint64_t pfn) const noexcept;
  void set_pageblock_bits(std::uint64_t pfn, std::uint8_t mask, std::uint8_t value) noexcept;
  [[nodiscard]] std::uint64_t memmap_placement(std::uint64_t span_start, std::uint64_t start,
                                               std::uint64_t end) const;
  [[nodiscard]] hotplug_intent* intent() const noexcept;
  // A structure of the head (or a descriptor page of a metadata pageblock)
  // that does not read: where, and what it holds ("the redo lanes (lane 3)").
  struct unreadable {
    media::read_failure failure;
    std::string structure;
  };
  // The head after the superblocks, in the order open reads it: the intent
  // page, the root directory, the populated root pages, the lanes, the slot page.
  [[nodiscard]] std::optional<unreadable> probe_head() const;
  // The descriptor pages of the head's and the memmap's pageblocks (the
  // volatile memmap must be built).
  [[nodiscard]] std::optional<unreadable> probe_metadata_descriptors() const;
  [[nodiscard]] const persistence& persist() const noexcept { return region_.persist(); }
  void refuse_if_read_only(const char* operation) const;  // errc::read_only

  region region_;
  geometry geo_;
  superblock super_{};
  std::mutex hotplug_mutex_;
  // Read-only opens: recovery steps not taken (pending_recovery()), the
  // superblock copy they would rewrite (-1: none), an intent left in place.
  std::vector<std::string> pending_;
  int stale_copy_ = -1;
  // A superblock copy that does not read (-1: none): left as it is (a store
  // to poison does not clear it), reported by check() after open.
  int unreadable_copy_ = -1;
  bool loading_ = true;
  media::guarded_reader reader_;
  bool intent_pending_ = false;
  // Volatile, rebuilt at open. mem_map_[nr] = address of pfn 0's descriptor
  // as if the section's memmap extended down to pfn 0 (0: no memmap).
  std::unique_ptr<std::atomic<std::uintptr_t>[], void (*)(void*)> mem_map_ { nullptr, nullptr };
};

}  // namespace daxalloc::sparse
