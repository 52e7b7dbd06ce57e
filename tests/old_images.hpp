// Heap images of older formats for the upgrade tests: a heap of this
// version made with each span's memmap block inside the span (legacy_memmap)
// and, for formats 2 to 4, legacy slabs only (legacy_slabs below), closed
// cleanly, written back as the older format stored it
// (docs/on-media-format.md, "Versions").
//   Format 5: no memmap area (superblock::memmap_area 0).
//   Format 4: every slab of class c < n (64 objects per bitmap word, a
//   digest in its head descriptor) where format 5 names its legacy twin n + c.
//   Format 3: descriptor check bits unseeded (a free descriptor is 0), slab
//   digests a multiply-xor hash of the bitmap words recorded at close.
//   Format 2: page descriptors without check bits, the name-table slot as
//   its offset word alone, no digests, no slot page (copy B of both slots
//   zero), both superblock copies of version 2 with format 2's head size.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "alloc/size_classes.hpp"
#include "alloc/small_allocator.hpp"
#include "sparse/geometry.hpp"
#include "sparse/memory_model.hpp"
#include "sparse/superblock.hpp"

namespace test {

// While one lives, new heaps keep each span's memmap block inside the span
// (what format 5 and older did).
struct legacy_memmap {
  legacy_memmap() { daxalloc::sparse::memory_model::make_legacy_memmap = true; }
  ~legacy_memmap() { daxalloc::sparse::memory_model::make_legacy_memmap = false; }
  legacy_memmap(const legacy_memmap&) = delete;
  legacy_memmap& operator=(const legacy_memmap&) = delete;
};

// While one lives, new slabs are made in the legacy encoding (what format 4
// and older wrote), and new heaps as under legacy_memmap, so that downgrade
// can write the image back.
struct legacy_slabs {
  legacy_slabs() { daxalloc::alloc::small_allocator::make_legacy_slabs = true; }
  ~legacy_slabs() { daxalloc::alloc::small_allocator::make_legacy_slabs = false; }
  legacy_slabs(const legacy_slabs&) = delete;
  legacy_slabs& operator=(const legacy_slabs&) = delete;
  legacy_memmap memmap;
};

// Rewrites the closed heap in `path` (made under legacy_memmap, and for
// formats 2 to 4 under legacy_slabs) as format 2, 3, 4 or 5.
inline void downgrade(const std::filesystem::path& path, std::uint32_t version) {
  namespace sp = daxalloc::sparse;
  namespace al = daxalloc::alloc;
  std::vector<unsigned char> b(std::filesystem::file_size(path));
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0 || ::pread(fd, b.data(), b.size(), 0) != static_cast<ssize_t>(b.size())) std::abort();
  sp::superblock sb;
  std::memcpy(&sb, b.data(), sizeof sb);
  const sp::geometry geo{sb.section_size_bits, sb.max_range};
  if (sb.memmap_area != 0) std::abort();  // not made under legacy_memmap
  // Descriptors of every span's memmap block (the records name them).
  std::set<std::uint64_t> blocks;
  for (std::uint64_t nr = 0; nr < geo.nr_sections(); ++nr) {
    if (reinterpret_cast<const std::uint64_t*>(
            b.data() + sp::directory_offset)[nr / geo.sections_per_root()] != 1)
      continue;
    const auto* record = reinterpret_cast<const std::uint64_t*>(
        b.data() + geo.roots_offset() + (nr / geo.sections_per_root()) * sp::root_page_size +
        (nr % geo.sections_per_root()) * geo.record_size());
    const std::uint64_t block = record[0] & sp::section_memmap_mask;
    if (!(record[0] & sp::section_has_mem_map) || !blocks.insert(block).second || version == 5)
      continue;
    auto* d = reinterpret_cast<std::uint64_t*>(b.data() + block);
    const std::uint64_t span = (nr << geo.section_size_bits) & ~(geo.span_size() - 1);
    const std::vector<std::uint64_t> format5(d, d + geo.memmap_bytes() / 8);
    for (std::uint64_t i = 0; i < geo.memmap_bytes() / 8; ++i) {  // format 4's class numbers
      const sp::page_descriptor desc{d[i]};
      if (desc.state() != sp::page_state::slab) continue;
      if (!al::is_legacy_class(desc.sub())) std::abort();  // not made under legacy_slabs
      d[i] = sp::with_descriptor_check((d[i] & ~(std::uint64_t{0xff} << 8)) |
                                       std::uint64_t{al::base_class(desc.sub())} << 8);
    }
    // Format 4 recorded each memmap page's digest (heap_impl::
    // memmap_page_digest) over its own class numbers: find the pageblock type
    // the recorded one covers, and record it again over those.
    const auto digest = [&](const std::uint64_t* descriptors, std::uint64_t type,
                            std::uint64_t seed) {
      std::vector<std::uint64_t> w(al::pageblock_pages + 1);
      for (std::uint64_t i = 0; i < al::pageblock_pages; ++i)
        w[i] = sp::page_descriptor{descriptors[i]}.state() == sp::page_state::memmap
                   ? sp::page_info(sp::page_state::memmap)
                   : descriptors[i];
      w[al::pageblock_pages] = type;
      return sp::words_digest(w.data(), w.size(), seed, 48);
    };
    for (std::uint64_t k = 0; k < geo.memmap_bytes() / sp::page_size && version == 4; ++k) {
      std::uint64_t& own = d[(block + k * sp::page_size - span) >> sp::page_shift];
      const std::uint64_t recorded = sp::memmap_digest(own);
      for (std::uint64_t type = 0; recorded && type < 256; ++type)
        if (digest(format5.data() + k * al::pageblock_pages, type, block + k) == recorded) {
          own = sp::memmap_info(digest(d + k * al::pageblock_pages, type, block + k));
          break;
        }
    }
    for (std::uint64_t i = 0; i < geo.memmap_bytes() / 8 && version == 3; ++i) {
      const sp::page_descriptor desc{d[i]};
      std::uint64_t data = d[i] & sp::descriptor_data_mask;
      if (desc.state() == sp::page_state::memmap)
        data = static_cast<std::uint64_t>(sp::page_state::memmap);  // no digest recorded
      if (desc.state() == sp::page_state::slab) {
        const std::uint64_t pfn = (span >> sp::page_shift) + i;
        const auto* bits = reinterpret_cast<const std::uint64_t*>(b.data() + (pfn << 12));
        const std::uint64_t words = al::size_classes[al::legacy_class(desc.sub())].words();
        data = (data & ~(sp::slab_digest_mask << sp::slab_digest_shift)) |
               sp::words_digest(bits, words, pfn, 24) << sp::slab_digest_shift;
      }
      d[i] = data | sp::descriptor_fold(data) << sp::descriptor_check_shift;
    }
    for (std::uint64_t i = 0; i < geo.memmap_bytes() / 8 && version == 2; ++i) {
      const sp::page_descriptor desc{d[i]};
      if (desc.state() == sp::page_state::memmap)
        d[i] = static_cast<std::uint64_t>(sp::page_state::memmap);  // no digest
      else if (desc.state() == sp::page_state::slab)
        d[i] &= ~(sp::slab_digest_mask << sp::slab_digest_shift);
      d[i] &= sp::descriptor_data_mask;  // no check bits
    }
  }
  if (version == 2) {
    std::memset(b.data() + sp::names_slot_offset + 8, 0, 8);
    std::memset(b.data() + geo.slots_offset(), 0, sp::root_page_size);
    sb.head_size = geo.head_size_v2();
  }
  sb.version = version;
  sp::superblock_seal(sb);
  std::memcpy(b.data(), &sb, sizeof sb);
  std::memcpy(b.data() + 4096, &sb, sizeof sb);
  if (::pwrite(fd, b.data(), b.size(), 0) != static_cast<ssize_t>(b.size())) std::abort();
  ::close(fd);
}

}  // namespace test
