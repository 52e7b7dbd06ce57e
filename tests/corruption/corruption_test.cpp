// The corruption suite (issue 18): a heap with objects of every kind (slab
// objects of several classes, extents, the root, named objects, a committed
// redo lane), then systematic damage to each metadata structure: single-bit
// flips of every word in use (sampled where there are too many; the line says
// how many of how many), zeroed words and pages, truncation. Each damaged
// image is opened, checked, repaired, and probed against the model: every
// object allocated on the media with its contents, the same root, every
// named object, and new allocations that overlap none of them.
//
// Outcomes: refused (a daxalloc::error with a message), reported (check() or
// repair names a problem), harmless (check() sound and the probe passes).
// Silent (check() sound, or repair reporting nothing, while the probe fails)
// is a failure. The "(unclean image)" structures are the same damage to the
// image as a crash leaves it (marked open): the memmap digests recorded at a
// clean close are not checked then, so only the descriptors' own check bits
// and the slab digests kept with every bitmap change (format 4) can see it.
//
// Usage: test_corruption [seed] [flips per structure]. Exit 1 on any silent
// outcome.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "daxalloc/heap.hpp"
#include "heap/access.hpp"
#include "heap/heap_impl.hpp"
#include "sparse/geometry.hpp"
#include "sparse/superblock.hpp"
#include "test_util.hpp"

namespace sp = daxalloc::sparse;
using daxalloc::heap;

namespace {
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t heap_bytes = 16 * MiB;
constexpr std::uint64_t root_magic = 0x726f6f742d6f6b21;
constexpr int nr_named = 17;

struct object {
  std::uint64_t offset, size;
  unsigned char fill;
};
struct root_type {
  std::uint64_t magic;
  std::uint64_t count;
  std::uint64_t objects[64];  // offsets
};

struct model {
  std::vector<object> objects;
  std::uint64_t root = 0;
  std::map<std::string, std::uint64_t> named;  // name -> offset of its object
  // Where the metadata is.
  std::uint64_t head = 0, slots = 0, lanes = 0, roots = 0, record_bytes = 0, memmap = 0;
  std::uint64_t names_table = 0, names_table_bytes = 0;
  std::vector<std::uint64_t> descriptors;   // offsets of non-zero descriptor words
  std::vector<std::uint64_t> heads;         // of those: slab and extent heads
  std::vector<std::uint64_t> bitmap_words;  // slab bitmap words with a bit set
  std::vector<std::uint64_t> lane_words;    // the committed lane's header and entries
};

std::vector<unsigned char> read_file(const std::filesystem::path& p) {
  std::vector<unsigned char> bytes(std::filesystem::file_size(p));
  const int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0 || ::pread(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
    std::abort();
  ::close(fd);
  return bytes;
}

void write_file(const std::filesystem::path& p, const std::vector<unsigned char>& bytes) {
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes.size())) != 0 ||
      ::pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
    std::abort();
  ::close(fd);
}

model generate(const std::filesystem::path& path) {
  model m;
  daxalloc::heap_options o;
  o.size = heap_bytes;
  o.max_size = 1024 * MiB;
  auto h = heap::create(path, o);
  auto* r = h.root<root_type>();
  m.root = h.offset_of(r);
  unsigned char fill = 1;
  const auto keep = [&](std::uint64_t size) {
    void* p = h.allocate(size);
    std::memset(p, fill, size);
    h.persist().persist(p, size);
    m.objects.push_back({h.offset_of(p), size, fill++});
    r->objects[r->count++] = h.offset_of(p);
  };
  for (std::uint64_t size : {24, 48, 200, 1000, 3000})
    for (int i = 0; i < 6; ++i) keep(size);
  for (std::uint64_t size : {std::uint64_t{20000}, std::uint64_t{100000}, 3 * MiB}) keep(size);
  r->magic = root_magic;
  h.persist().persist(r, sizeof *r);
  for (int i = 0; i < nr_named; ++i) {
    auto* p = h.construct<std::uint64_t>("n" + std::to_string(i), 2)(std::uint64_t(1000 + i));
    m.named["n" + std::to_string(i)] = h.offset_of(p);
  }
  const auto& geo = daxalloc::detail::internals(h).model().geo();
  m.head = geo.head_size();
  m.slots = geo.slots_offset();
  m.lanes = geo.lanes_offset();
  m.roots = geo.roots_offset();
  m.record_bytes = geo.record_size();
  m.memmap = daxalloc::detail::internals(h).model().span_memmap(0);
  m.names_table = daxalloc::detail::internals(h).names_table_offset();
  m.names_table_bytes = h.usable_size(h.at(m.names_table));
  // The descriptors of span 0 that are not free, and the bitmap words of
  // each slab.
  const auto* d = reinterpret_cast<const std::uint64_t*>(h.base() + m.memmap);
  for (std::uint64_t pfn = 0; pfn < heap_bytes / sp::page_size; ++pfn) {
    if (d[pfn] == sp::free_descriptor) continue;
    m.descriptors.push_back(m.memmap + pfn * 8);
    const sp::page_descriptor desc{d[pfn]};
    if (desc.state() == sp::page_state::extent || desc.state() == sp::page_state::slab)
      m.heads.push_back(m.memmap + pfn * 8);
    if (desc.state() == sp::page_state::slab) {
      const auto& c = daxalloc::alloc::size_classes[desc.sub()];
      const auto* bits = reinterpret_cast<const std::uint64_t*>(h.base() + pfn * sp::page_size);
      for (std::uint32_t w = 0; w < (c.objects + 63) / 64; ++w)
        if (bits[w]) m.bitmap_words.push_back(pfn * sp::page_size + w * 8);
    }
  }
  // A committed lane, as a crash after a batch's apply and before its
  // retirement leaves it: it stores what its targets hold already.
  const object& big = m.objects.back();
  const std::uint64_t store = std::uint64_t{sp::log_store} << sp::log_op_shift;
  std::vector<sp::log_entry> entries{
      {store | m.root, root_magic},
      {store | (m.memmap + big.offset / sp::page_size * 8), d[big.offset / sp::page_size]},
      {store | (m.root + 8), r->count}};
  h.close();
  std::vector<unsigned char> bytes = read_file(path);
  auto* lane = reinterpret_cast<sp::lane_header*>(bytes.data() + m.lanes + 5 * sp::lane_size);
  lane->sequence = 1u << 20;
  lane->count = entries.size();
  lane->format = sp::lane_format_inline;
  std::memcpy(lane + 1, entries.data(), entries.size() * sizeof(sp::log_entry));
  sp::fletcher64_sum sum;
  sum.add(&lane->sequence, 8);
  sum.add(&lane->count, 8);
  sum.add(lane + 1, entries.size() * sizeof(sp::log_entry));
  lane->checksum = sum.value();
  for (std::uint64_t w = 0; w < 8 + 2 * entries.size(); ++w)
    if (w < 5 || w >= 8) m.lane_words.push_back(m.lanes + 5 * sp::lane_size + w * 8);
  write_file(path, bytes);
  return m;
}

// Whether the opened heap holds every object of the model, as it was.
std::string probe(heap& h, const model& m) {
  std::set<std::uint64_t> allocated;
  for (auto [offset, size] : daxalloc::detail::internals(h).allocations()) allocated.insert(offset);
  for (const object& o : m.objects) {
    if (!allocated.count(o.offset)) return "object at " + sp::hex(o.offset) + " is not allocated";
    const auto* p = static_cast<const unsigned char*>(h.at(o.offset));
    for (std::uint64_t i = 0; i < o.size; ++i)
      if (p[i] != o.fill) return "object at " + sp::hex(o.offset) + " changed";
  }
  const auto* r = h.root<root_type>();
  if (h.offset_of(r) != m.root) return "another root";
  if (r->magic != root_magic || r->count != m.objects.size()) return "the root changed";
  for (const auto& [name, offset] : m.named) {
    auto [p, n] = h.find<std::uint64_t>(name);
    if (!p || h.offset_of(p) != offset || n != 2) return "named object " + name + " is lost";
  }
  // New allocations overlap no object of the model.
  for (std::uint64_t size : {24, 48, 200, 1000, 3000, 20000, 100000}) {
    for (int i = 0; i < 40; ++i) {
      void* p = h.allocate(size);
      if (!p) break;
      const std::uint64_t at = h.offset_of(p);
      for (const object& o : m.objects)
        if (at < o.offset + o.size && o.offset < at + size)
          return "a new allocation at " + sp::hex(at) + " overlaps the object at " +
                 sp::hex(o.offset);
    }
  }
  return {};
}

enum class outcome { refused, reported, repaired, harmless, silent };

struct verdict {
  outcome what;
  std::string why;
};

verdict try_image(const std::filesystem::path& path, const model& m) {
  bool reported = false;
  try {
    auto h = heap::open(path);
    if (auto problems = h.check(); !problems.empty()) {
      reported = true;
    } else {
      const std::string wrong = probe(h, m);
      if (wrong.empty()) return {outcome::harmless, {}};
      return {outcome::silent, "open and check() said sound: " + wrong};
    }
  } catch (const daxalloc::error& e) {
    if (std::string(e.what()).size() < 10) return {outcome::silent, "an error without a message"};
  }
  // Refused or reported: repair must either refuse too, report what it did,
  // or leave a heap the probe accepts; never a sound-looking wrong heap.
  try {
    daxalloc::heap_open_options o;
    o.repair = true;
    auto h = heap::open(path, o);
    const bool repairs = !h.repairs().empty();
    if (!h.check().empty()) return {reported ? outcome::reported : outcome::refused, {}};
    const std::string wrong = probe(h, m);
    if (wrong.empty()) return {outcome::repaired, {}};
    if (repairs) return {outcome::repaired, {}};
    return {outcome::silent, "repair reported nothing and check() said sound: " + wrong};
  } catch (const daxalloc::error&) {
    return {reported ? outcome::reported : outcome::refused, {}};
  }
}

struct tally {
  std::uint64_t tried = 0, of = 0;
  std::map<outcome, std::uint64_t> by;
  std::vector<std::string> silent;
};

}  // namespace

int main(int argc, char** argv) {
  const std::uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 0) : 20261207;
  const std::uint64_t max_flips = argc > 2 ? std::strtoull(argv[2], nullptr, 0) : 400;
  std::printf("corruption suite: seed %" PRIu64 ", at most %" PRIu64 " bit flips per structure\n",
              seed, max_flips);
  std::mt19937_64 rng(seed);
  test::temp_file pristine_file("corruption-pristine"), work("corruption-work");
  const model m = generate(pristine_file.path());
  const std::vector<unsigned char> pristine = read_file(pristine_file.path());
  {
    write_file(work.path(), pristine);
    const verdict v = try_image(work.path(), m);
    if (v.what != outcome::harmless) {
      std::printf("the undamaged image does not pass: %s\n", v.why.c_str());
      return 1;
    }
  }
  using damage = std::function<void(std::vector<unsigned char>&)>;
  std::map<std::string, tally> tallies;
  std::vector<std::string> order;
  const std::vector<unsigned char>* base_image = &pristine;
  // The same image as a crash leaves it: marked open (unclean) in both
  // superblock copies.
  std::vector<unsigned char> unclean = pristine;
  for (std::uint64_t at : sp::superblock_offset) {
    auto* sb = reinterpret_cast<sp::superblock*>(unclean.data() + at);
    sb->shutdown_state = sp::shutdown_open;
    sb->checksum = 0;
    sb->checksum = sp::fletcher64(sb, sizeof *sb);
  }
  const auto run = [&](const std::string& structure, const damage& d) {
    if (!tallies.count(structure)) order.push_back(structure);
    tally& t = tallies[structure];
    std::vector<unsigned char> bytes = *base_image;
    d(bytes);
    write_file(work.path(), bytes);
    const verdict v = try_image(work.path(), m);
    ++t.tried;
    ++t.by[v.what];
    if (v.what == outcome::silent) t.silent.push_back(v.why);
  };
  const auto flips = [&](const std::string& structure, const std::vector<std::uint64_t>& words) {
    std::vector<std::uint64_t> bits;
    for (std::uint64_t w : words)
      for (unsigned b = 0; b < 64; ++b) bits.push_back(w * 8 + b);
    if (!tallies.count(structure)) order.push_back(structure);
    tallies[structure].of += bits.size();
    std::shuffle(bits.begin(), bits.end(), rng);
    if (bits.size() > max_flips) bits.resize(max_flips);
    for (std::uint64_t bit : bits)
      run(structure, [bit](auto& b) { b[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8)); });
  };
  const auto zero_words = [&](const std::string& structure,
                              const std::vector<std::uint64_t>& words) {
    for (std::uint64_t w : words) {
      if (!tallies.count(structure)) order.push_back(structure);
      ++tallies[structure].of;
      run(structure, [w](auto& b) { std::memset(&b[w], 0, 8); });
    }
  };
  const auto zero_range = [&](const std::string& structure, std::uint64_t at, std::uint64_t n) {
    if (!tallies.count(structure)) order.push_back(structure);
    ++tallies[structure].of;
    run(structure, [at, n](auto& b) { std::memset(&b[at], 0, n); });
  };
  const auto words_of = [](std::uint64_t at, std::uint64_t n) {
    std::vector<std::uint64_t> w;
    for (std::uint64_t i = 0; i < n; i += 8) w.push_back(at + i);
    return w;
  };

  // Superblocks: the fields in use and the checksum, both copies.
  std::vector<std::uint64_t> super = words_of(0, 144), super_b = words_of(4096, 144);
  super.insert(super.end(), super_b.begin(), super_b.end());
  super.push_back(4088);
  super.push_back(4096 + 4088);
  flips("superblock", super);
  zero_words("superblock", super);
  zero_range("superblock", 0, 4096);
  zero_range("superblock", 4096, 4096);
  // The hotplug intent (cleared: op and checksum 0, the rest as last written).
  flips("hotplug intent", words_of(sp::intent_offset, 64));
  zero_range("hotplug intent", sp::intent_offset, 4096);
  // Root slot, both copies.
  std::vector<std::uint64_t> root = words_of(sp::root_slot_offset, 32),
                             root_b = words_of(m.slots + sp::root_slot_b_in_page, 32);
  root.insert(root.end(), root_b.begin(), root_b.end());
  flips("root slot", root);
  zero_words("root slot", root);
  zero_range("root slot", m.slots, 4096);
  // Name-table slot, both copies, and the table itself.
  std::vector<std::uint64_t> names = words_of(sp::names_slot_offset, 16),
                             names_b = words_of(m.slots + sp::names_slot_b_in_page, 16);
  names.insert(names.end(), names_b.begin(), names_b.end());
  flips("name-table slot", names);
  zero_words("name-table slot", names);
  const std::vector<std::uint64_t> table = words_of(m.names_table, 16 + 32 * 32);
  flips("name table", table);
  zero_words("name table", std::vector<std::uint64_t>(table.begin(), table.begin() + 80));
  // Root directory and the section record of section 0.
  flips("section map", words_of(sp::directory_offset, 8));
  flips("section map", words_of(m.roots, m.record_bytes));
  zero_words("section map", words_of(m.roots, m.record_bytes));
  zero_words("section map", {sp::directory_offset});
  // Memmap (descriptors in use) and slab bitmaps (words with objects in
  // them), in the image as it is or marked unclean.
  const auto memmap_and_bitmaps = [&](const std::string& suffix) {
    flips("memmap" + suffix, m.descriptors);
    zero_words("memmap" + suffix, m.heads);
    for (std::uint64_t page = m.memmap; page < m.memmap + heap_bytes / sp::page_size * 8;
         page += sp::page_size)
      zero_range("memmap" + suffix, page, sp::page_size);
    flips("slab bitmap" + suffix, m.bitmap_words);
    zero_words("slab bitmap" + suffix, m.bitmap_words);
  };
  memmap_and_bitmaps("");
  // The committed redo lane.
  flips("redo lane", m.lane_words);
  zero_words("redo lane", m.lane_words);
  // The same damage to an image marked unclean.
  base_image = &unclean;
  memmap_and_bitmaps(" (unclean image)");
  base_image = &pristine;
  // Truncation.
  for (std::uint64_t size : {std::uint64_t{4096}, std::uint64_t{8192}, m.head - 4096, m.head,
                             m.head + 2 * MiB, heap_bytes / 2, heap_bytes - 2 * MiB}) {
    if (!tallies.count("truncation")) order.push_back("truncation");
    ++tallies["truncation"].of;
    std::vector<unsigned char> bytes(pristine.begin(), pristine.begin() + size);
    write_file(work.path(), bytes);
    const verdict v = try_image(work.path(), m);
    ++tallies["truncation"].tried;
    ++tallies["truncation"].by[v.what];
    if (v.what == outcome::silent) tallies["truncation"].silent.push_back(v.why);
  }

  std::uint64_t silent = 0;
  for (const std::string& s : order) {
    const tally& t = tallies[s];
    const auto n = [&](outcome o) { return t.by.count(o) ? t.by.at(o) : 0; };
    std::printf("%s: %" PRIu64 " corruptions, %" PRIu64 " silent   (%" PRIu64 " of %" PRIu64
                " candidates; refused %" PRIu64 ", reported %" PRIu64 ", repaired %" PRIu64
                ", harmless %" PRIu64 ")\n",
                s.c_str(), t.tried, n(outcome::silent), t.tried, t.of, n(outcome::refused),
                n(outcome::reported), n(outcome::repaired), n(outcome::harmless));
    for (std::size_t i = 0; i < t.silent.size() && i < 3; ++i)
      std::printf("    silent: %s\n", t.silent[i].c_str());
    silent += n(outcome::silent);
  }
  std::printf("%" PRIu64 " silent outcomes\n", silent);
  return silent ? 1 : 0;
}
