// Size classes of small objects. Every 8 bytes up to 128 bytes, then eight
// classes per power of two up to 64 KiB: rounding a request up to its class
// wastes at most 12.5 % of the class above 64 bytes, and at most 7 bytes
// below (the 8-byte granularity). Larger objects are page extents, whose
// rounding to 4 KiB wastes at most 6.25 %.
//
// A slab of a class is a naturally aligned block of 2^order pages: a bitmap
// header (a multiple of 64 bytes) and then the objects. Format 5 bitmap
// words hold 56 objects' bits and 8 check bits (sparse::slab_word); slabs
// made by formats 2 to 4 keep 64 objects' bits per word and a digest in
// their head descriptor, under a class index of their own (legacy_class:
// the same size, its own geometry). The table is part of the on-media
// format (a slab's class is stored in its head page descriptor).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace daxalloc::alloc {

inline constexpr std::size_t max_small_size = 64 * 1024;
inline constexpr unsigned min_slab_order = 4;  // 64 KiB

struct size_class {
  std::uint32_t size;        // object size in bytes
  std::uint32_t objects;     // objects per slab
  std::uint32_t header;      // bytes before the first object (bitmap, 64-byte multiple)
  std::uint32_t bytes;       // objects * size
  std::uint64_t magic;       // ceil(2^32 / size): see index()
  std::uint8_t slab_order;   // slab = 2^slab_order pages
  std::uint8_t word_bits;    // objects per bitmap word: 56 (format 5), 64 (legacy)
  std::uint32_t word_magic;  // ceil(2^32 / word_bits): see word_of()

  // n / size for n a multiple of size below 2^32 (an object's offset from
  // the first object), by a multiplication: exact for such n, as jemalloc's
  // div_info shows. The test suite checks every object of every class.
  [[nodiscard]] constexpr std::uint32_t index(std::uint64_t n) const {
    return static_cast<std::uint32_t>((n * magic) >> 32);
  }
  // The bitmap word of object i, and its bit there (a multiplication, exact
  // for i below 2^32 / 24, far above any slab's objects; tested).
  [[nodiscard]] constexpr std::uint32_t word_of(std::uint32_t i) const {
    return static_cast<std::uint32_t>((std::uint64_t{i} * word_magic) >> 32);
  }
  [[nodiscard]] constexpr std::uint64_t mask_of(std::uint32_t i) const {
    return std::uint64_t{1} << (i - word_of(i) * word_bits);
  }
  [[nodiscard]] constexpr std::uint32_t words() const { return word_of(objects + word_bits - 1); }
  // Whether object i's bit is set in a slab's bitmap: an atomic load
  // (batches change the word on other threads; acquire: an object seen
  // allocated has what its batch wrote, such as a movable header).
  [[nodiscard]] bool allocated(const std::uint64_t* bitmap, std::uint32_t i) const {
    return (std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(bitmap[word_of(i)]))
                .load(std::memory_order_acquire) &
            mask_of(i)) != 0;
  }
  // The bits of word w that stand for objects.
  [[nodiscard]] constexpr std::uint64_t valid_bits(std::uint32_t w) const {
    const std::uint64_t first = std::uint64_t{w} * word_bits;
    if (first >= objects) return 0;
    const std::uint64_t n = std::min<std::uint64_t>(objects - first, word_bits);
    return n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1;
  }
};

namespace detail {
constexpr std::size_t count_classes() {
  std::size_t n = 128 / 8;
  for (std::size_t base = 128; base < max_small_size; base *= 2) n += 8;
  return n;
}
constexpr size_class make_class(std::uint32_t size, unsigned word_bits) {
  unsigned order = min_slab_order;
  while ((std::size_t{4096} << order) < std::size_t{size} * 8) ++order;
  const std::size_t slab = std::size_t{4096} << order;
  std::uint32_t objects = static_cast<std::uint32_t>(slab / size);
  std::uint32_t header = 0;
  for (;;) {  // shrink until bitmap and objects fit
    header = static_cast<std::uint32_t>((objects + 8 * word_bits - 1) / (8 * word_bits) * 64);
    if (header + std::size_t{objects} * size <= slab) break;
    --objects;
  }
  return {size,
          objects,
          header,
          objects * size,
          ((std::uint64_t{1} << 32) + size - 1) / size,
          static_cast<std::uint8_t>(order),
          static_cast<std::uint8_t>(word_bits),
          static_cast<std::uint32_t>(((std::uint64_t{1} << 32) + word_bits - 1) / word_bits)};
}
}  // namespace detail

// The classes allocations are made in; a slab's descriptor may also name
// the legacy twin of one (up to nr_slab_classes).
inline constexpr std::size_t nr_size_classes = detail::count_classes();
inline constexpr std::size_t nr_slab_classes = 2 * nr_size_classes;
inline constexpr unsigned slab_word_bits = 56;    // format 5
inline constexpr unsigned legacy_word_bits = 64;  // formats 2 to 4
[[nodiscard]] constexpr unsigned legacy_class(unsigned cls) {
  return cls + static_cast<unsigned>(nr_size_classes);
}
[[nodiscard]] constexpr bool is_legacy_class(unsigned cls) {
  return cls >= nr_size_classes;
}
[[nodiscard]] constexpr unsigned base_class(unsigned cls) {
  return is_legacy_class(cls) ? cls - static_cast<unsigned>(nr_size_classes) : cls;
}

inline constexpr std::array<size_class, nr_slab_classes> size_classes = [] {
  std::array<size_class, nr_slab_classes> table{};
  std::size_t i = 0;
  for (unsigned bits : {slab_word_bits, legacy_word_bits}) {
    for (std::uint32_t s = 8; s <= 128; s += 8) table[i++] = detail::make_class(s, bits);
    for (std::uint32_t base = 128; base < max_small_size; base *= 2)
      for (std::uint32_t step = 1; step <= 8; ++step)
        table[i++] = detail::make_class(base + base / 8 * step, bits);
  }
  return table;
}();
static_assert(size_classes[nr_size_classes - 1].size == max_small_size);
static_assert(nr_slab_classes < 256, "a class index fits the descriptor's 8-bit field");
// The most bitmap words a slab has.
inline constexpr std::uint32_t max_slab_words = [] {
  std::uint32_t m = 0;
  for (const auto& c : size_classes) m = std::max(m, c.words());
  return m;
}();

namespace detail {
constexpr unsigned compute_class_of(std::size_t size) {
  if (size <= 128) return static_cast<unsigned>(size == 0 ? 0 : (size - 1) / 8);
  const unsigned log =
      static_cast<unsigned>(std::bit_width(size - 1)) - 1;  // 2^log < size <= 2^(log+1)
  const std::size_t base = std::size_t{1} << log;
  // ceil((size - base) / (base / 8)), by a shift: a division here was a
  // third of reserve()'s time in profiles.
  const unsigned step = static_cast<unsigned>((size - base + (base >> 3) - 1) >> (log - 3));
  return 16 + (log - 7) * 8 + step - 1;
}
// Up to 1 KiB every class boundary is a multiple of 8, so the class of
// `size` is that of size rounded up to 8: one table load (as jemalloc's
// sz_size2index_tab).
inline constexpr std::size_t class_table_max = 1024;
inline constexpr auto class_table = [] {
  std::array<std::uint8_t, class_table_max / 8 + 1> t{};
  for (std::size_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<std::uint8_t>(compute_class_of(i * 8));
  return t;
}();
}  // namespace detail

// The smallest class that holds `size` bytes (size in 1..max_small_size).
[[nodiscard]] constexpr unsigned size_class_of(std::size_t size) {
  if (size <= detail::class_table_max) return detail::class_table[(size + 7) >> 3];
  return detail::compute_class_of(size);
}

// The alignment every object of class cls has: a slab starts on a 64 KiB
// boundary (naturally aligned, at least 2^min_slab_order pages, in a 2 MiB
// aligned mapping), its objects at header + i * size.
[[nodiscard]] constexpr std::size_t class_alignment(unsigned cls) {
  const size_class& c = size_classes[cls];
  const auto lowest_bit = [](std::uint32_t v) { return std::size_t{v & (~v + 1)}; };
  return std::min(lowest_bit(c.size), lowest_bit(c.header));
}
// The largest alignment a slab object can have (the headers' 64 bytes).
inline constexpr std::size_t max_class_alignment = 64;
static_assert(class_alignment(size_class_of(max_small_size)) == max_class_alignment);

// The smallest class that holds `size` bytes (1..max_small_size) and whose
// objects are all aligned to `alignment` (a power of two); nr_size_classes
// when none is (alignments above max_class_alignment: pages instead).
[[nodiscard]] constexpr unsigned aligned_size_class_of(std::size_t size, std::size_t alignment) {
  if (alignment > max_class_alignment) return nr_size_classes;
  unsigned cls = size_class_of(size);
  while (cls < nr_size_classes && class_alignment(cls) < alignment) ++cls;
  return cls;
}

}  // namespace daxalloc::alloc
