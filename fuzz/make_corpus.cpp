// Writes the seed corpora of the harnesses: small inputs, encoded with the
// formats the harnesses decode (fuzz/formats.hpp), that reach each kind of
// state at once — every base image and the common damage to it (image),
// every API call with good and bad arguments (ops), a crash in every durable
// operation and in recovery (crash).
//
//   make_corpus DIR      writes DIR/image, DIR/ops, DIR/crash (replacing seed-* files)
//   ninja -C build-fuzz fuzz-corpus   does it for fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "formats.hpp"

namespace {

using namespace fuzz;

struct seed {
  std::string name;
  fuzz_output bytes;
};

// ---- image ----

// Base 0 of the image harness: 16 MiB and 4 MiB of a second span at 1 GiB,
// 128 MiB sections of a 2 GiB range. Seeds that pick a page, a subsection or
// a section of it encode against these bounds.
constexpr std::uint64_t base0_image_size = 1 * GiB + 4 * MiB;
constexpr std::uint64_t base0_pages = base0_image_size / 4096;
constexpr std::uint64_t base0_subsections = base0_image_size / (2 * MiB);
constexpr std::uint64_t base0_sections = 2 * GiB / (128 * MiB);

fuzz_output& edit(fuzz_output& out, image_edit kind) {
  return out.below(static_cast<unsigned>(image_edit::count), static_cast<unsigned>(kind));
}
fuzz_output& value_small(fuzz_output& out, std::uint8_t v) {
  return out
      .below(static_cast<unsigned>(value_mode::count), static_cast<unsigned>(value_mode::small))
      .below(256, v);
}
fuzz_output& value_word(fuzz_output& out, std::uint64_t v) {
  return out
      .below(static_cast<unsigned>(value_mode::count), static_cast<unsigned>(value_mode::word))
      .word(v);
}
fuzz_output& value_flip(fuzz_output& out, unsigned bit) {
  return out
      .below(static_cast<unsigned>(value_mode::count), static_cast<unsigned>(value_mode::flip_bit))
      .below(64, bit);
}
fuzz_output& value_simple(fuzz_output& out, value_mode mode) {  // zero, one, ones
  return out.below(static_cast<unsigned>(value_mode::count), static_cast<unsigned>(mode));
}
// Superblock fields by index in image_fuzzer.cpp's table.
constexpr unsigned sb_version = 2, sb_flags = 3, sb_generation = 5, sb_max_range = 12,
                   sb_shutdown = 17, sb_reserved = 18, sb_checksum = 23;

std::vector<seed> image_seeds() {
  std::vector<seed> s;
  for (unsigned base = 0; base < nr_image_bases; ++base) {
    seed x{"base" + std::to_string(base) + "-reopen", {}};
    x.bytes.byte(static_cast<std::uint8_t>(base | image_reopen_bit));
    s.push_back(x);
  }
  {
    seed x{"newer-version-in-copy-a", {}};
    edit(x.bytes.byte(0), image_edit::superblock_field).below(3, 0).below(24, sb_version);
    value_small(x.bytes, 3).boolean(true);  // format version 2 + 1
    s.push_back(x);
  }
  {
    seed x{"copy-b-checksum-flipped", {}};
    edit(x.bytes.byte(0), image_edit::superblock_field).below(3, 1).below(24, sb_checksum);
    value_flip(x.bytes, 3).boolean(false);
    s.push_back(x);
  }
  {
    seed x{"both-copies-resealed-flags-generation-shutdown", {}};
    edit(x.bytes.byte(1), image_edit::superblock_field).below(3, 2).below(24, sb_flags);
    value_small(x.bytes, 1).boolean(true);
    edit(x.bytes, image_edit::superblock_field).below(3, 1).below(24, sb_generation);
    value_word(x.bytes, 1000).boolean(true);
    edit(x.bytes, image_edit::superblock_field).below(3, 0).below(24, sb_shutdown);
    value_simple(x.bytes, value_mode::one).boolean(true);
    edit(x.bytes, image_edit::superblock_field).below(3, 2).below(24, sb_reserved);
    value_simple(x.bytes, value_mode::ones).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"geometry-4gib-range-resealed", {}};
    edit(x.bytes.byte(0), image_edit::superblock_geometry).below(3, 2).in(26, 31, 27);
    value_word(x.bytes, 4 * GiB).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"max-range-not-a-section-multiple", {}};
    edit(x.bytes.byte(2), image_edit::superblock_field).below(3, 2).below(24, sb_max_range);
    value_word(x.bytes, GiB + 4096).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"committed-hot-add-intent", {}};
    edit(x.bytes.byte(0), image_edit::intent).below(8, 1).boolean(true).below(1024, 40);
    x.bytes.boolean(false);
    edit(x.bytes, image_edit::intent).below(8, 2).boolean(true).below(1024, 2);
    x.bytes.boolean(false);
    edit(x.bytes, image_edit::intent).below(8, 0).below(4, 1).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"committed-hot-remove-intent-base3", {}};
    edit(x.bytes.byte(3), image_edit::intent).below(8, 0).below(4, 2).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"directory-entry-2", {}};
    edit(x.bytes.byte(0), image_edit::directory_entry).below(3, 0);
    value_small(x.bytes, 2);
    s.push_back(x);
  }
  {
    seed x{"extent-descriptor-with-a-huge-length", {}};
    edit(x.bytes.byte(0), image_edit::descriptor_info).boolean(false).below(base0_pages, 2048 + 7);
    x.bytes.boolean(true).below(8, 3).below(256, 0).boolean(true).below(48, 40);
    s.push_back(x);
  }
  {
    seed x{"slab-bitmap-all-ones", {}};
    edit(x.bytes.byte(2), image_edit::slab_bitmap).byte(0).below(16, 1);
    value_simple(x.bytes, value_mode::ones);
    s.push_back(x);
  }
  {
    seed x{"root-slot-offset-resealed", {}};
    edit(x.bytes.byte(0), image_edit::root_slot).below(4, 0);
    value_word(x.bytes, 2 * 1024 * 1024 + 4096).boolean(true);
    s.push_back(x);
  }
  {
    seed x{"lane-count-resealed-base3", {}};
    edit(x.bytes.byte(3), image_edit::lane).below(3, 1).below(4, 0).boolean(true).below(254, 3);
    x.bytes.boolean(true);
    s.push_back(x);
  }
  {
    seed x{"truncated-to-4-subsections", {}};
    edit(x.bytes.byte(0), image_edit::file_size).below(4, 1).below(base0_subsections + 1, 4);
    s.push_back(x);
  }
  {
    seed x{"section-word-0-flag-bit", {}};
    edit(x.bytes.byte(0), image_edit::section_word)
        .boolean(false)
        .below(base0_sections + 1, 0)
        .below(8, 0);
    value_flip(x.bytes, 3);
    s.push_back(x);
  }
  {
    seed x{"overlay-magic-resealed", {}};
    const char magic[16] = "DAXALLOC-HEAP";
    x.bytes.byte(image_overlay_mode).boolean(true).bytes(magic, sizeof magic);
    s.push_back(x);
  }
  {
    seed x{"older-version-in-both-copies", {}};  // format version 1: 16-byte descriptors
    edit(x.bytes.byte(1), image_edit::superblock_field).below(3, 2).below(24, sb_version);
    value_simple(x.bytes, value_mode::one).boolean(true);
    s.push_back(x);
  }
  return s;
}

// ---- ops and crash ----

call alloc(std::uint64_t size) {
  return {call_kind::allocate, size, 0, 0, 0, 0};
}
call dealloc(std::uint64_t index) {
  return {call_kind::deallocate, 0, index, 0, 0, 0};
}
call bad(std::uint8_t how, std::uint64_t index = 0) {
  return {call_kind::bad_deallocate, 0, index, 0, 0, how};
}
call reserve(std::uint64_t size) {
  return {call_kind::reserve, size, 0, 0, 0, 0};
}
call cancel(std::uint64_t index) {
  return {call_kind::cancel, 0, index, 0, 0, 0};
}
call root(std::uint64_t size) {
  return {call_kind::root, size, 0, 0, 0, 0};
}
call publish(std::uint64_t size, std::uint64_t slot) {
  return {call_kind::publish, size, slot, 0, 0, 0};
}
call free_clear(std::uint64_t slot) {
  return {call_kind::free_clear, 0, slot, 0, 0, 0};
}
call hot_add(std::uint64_t first, std::uint64_t count, std::uint8_t misalign = 0) {
  return {call_kind::hot_add, 0, 0, first, count, misalign};
}
call hot_remove(std::uint64_t first, std::uint64_t count, std::uint8_t misalign = 0) {
  return {call_kind::hot_remove, 0, 0, first, count, misalign};
}
call simple(call_kind kind) {
  return {kind, 0, 0, 0, 0, 0};
}

fuzz_output calls(std::initializer_list<call> list) {
  fuzz_output out;
  for (const auto& c : list) encode_call(out, c);
  return out;
}

std::vector<seed> ops_seeds() {
  const auto reopen = simple(call_kind::reopen), check = simple(call_kind::check);
  return {
      {"small-alloc-free", calls({alloc(24), alloc(24), dealloc(0), check})},
      {"every-size-band",
       calls({alloc(1), alloc(8), alloc(100), alloc(4096), alloc(65536), alloc(65537), alloc(MiB),
              alloc(3 * MiB), alloc(8 * MiB), reopen})},
      {"reserve-cancel", calls({reserve(48), reserve(200000), reserve(3 * MiB), cancel(1),
                                alloc(48), cancel(0), reopen, cancel(0)})},
      {"root-publish-free-clear", calls({root(512), publish(48, 0), publish(5000, 1),
                                         publish(3 * MiB, 2), free_clear(0), reopen, check})},
      // The driver's heap: memory [6, 18) MiB after the head and the memmap area.
      {"hot-add-use-remove", calls({hot_add(9, 2), alloc(3 * MiB), alloc(3 * MiB), dealloc(0),
                                    dealloc(0), hot_remove(9, 2), check})},
      {"new-span", calls({hot_add(512, 3), alloc(8 * MiB), alloc(2 * MiB), reopen,
                          hot_remove(512, 3), dealloc(0), hot_remove(512, 3)})},
      {"bad-frees", calls({alloc(48), alloc(70000), dealloc(0), bad(0), bad(1), bad(2), bad(3)})},
      {"misaligned-hotplug", calls({hot_add(9, 1, 1), hot_add(9, 1, 2), hot_remove(3, 1, 3),
                                    hot_add(0, 1), hot_remove(0, 1)})},
      {"root-sizes", calls({root(300000), root(300000), root(100), reopen, root(300000)})},
      {"many-small", calls({alloc(16), alloc(16), alloc(16), alloc(16), alloc(16), alloc(16),
                            alloc(16), alloc(16), dealloc(3), dealloc(1), alloc(16), reopen,
                            dealloc(2), alloc(4000), alloc(4000)})},
      {"hotplug-errors", calls({hot_add(512, 1), hot_add(2, 2), hot_add(4, 2), hot_add(1022, 8),
                                hot_add(20, 2), hot_add(20, 2), hot_remove(30, 1),
                                hot_remove(20, 2), hot_remove(512, 1), hot_remove(2, 1)})},
      {"fill-the-heap", calls({alloc(8 * MiB), alloc(3 * MiB), alloc(2 * MiB), alloc(65536),
                               alloc(65536), reserve(MiB), alloc(MiB), check})},
  };
}

fuzz_output crash_input(std::initializer_list<call> setup, std::initializer_list<call> crashed,
                        unsigned fence, std::initializer_list<std::uint8_t> lines = {},
                        bool recovery_crash = false, unsigned fence2 = 1) {
  fuzz_output out;
  out.below(max_setup_calls + 1, setup.size());
  for (const auto& c : setup) encode_call(out, c);
  out.in(1, max_crash_calls, crashed.size());
  for (const auto& c : crashed) encode_call(out, c);
  out.below(max_crash_fence, fence - 1);
  for (auto how : lines) {
    out.below(4, how);
    if (how == 2) out.byte(0x55);  // every other word torn
  }
  if (recovery_crash) out.boolean(true).below(max_crash_fence, fence2 - 1);
  return out;
}

std::vector<seed> crash_seeds() {
  return {
      {"first-object-of-a-class", crash_input({}, {alloc(48)}, 1, {1, 0, 1})},
      {"slab-object", crash_input({alloc(48)}, {alloc(48)}, 1, {1})},
      {"free-slab-object", crash_input({alloc(48), alloc(48)}, {dealloc(0)}, 1, {2})},
      {"page-extent", crash_input({}, {alloc(200000)}, 1, {1, 1})},
      {"pageblock-extent", crash_input({}, {alloc(5 * MiB)}, 2, {0, 1})},
      {"free-extent", crash_input({alloc(3 * MiB)}, {dealloc(0)}, 1, {1})},
      {"root", crash_input({}, {root(100)}, 2, {1, 1, 0})},
      {"publish", crash_input({root(256)}, {publish(48, 0)}, 2, {1, 2, 1})},
      {"free-clear", crash_input({root(256), publish(5000, 0)}, {free_clear(0)}, 2, {0, 1})},
      {"hot-add", crash_input({}, {hot_add(9, 2)}, 2, {1, 0, 2})},
      {"hot-add-new-span", crash_input({}, {hot_add(512, 2)}, 3, {1, 1})},
      {"hot-add-2-mib-new-span", crash_input({}, {hot_add(512, 1)}, 3, {1, 1, 0})},
      {"hot-remove", crash_input({hot_add(9, 2)}, {hot_remove(9, 2)}, 2, {1})},
      {"hot-remove-span", crash_input({hot_add(512, 1)}, {hot_remove(512, 1)}, 2, {1, 0})},
      {"two-calls", crash_input({}, {alloc(24), alloc(70000)}, 3, {1, 1, 1})},
      {"recovery-crash", crash_input({root(256)}, {publish(48, 0)}, 2, {1, 1}, true, 2)},
  };
}

void write(const std::filesystem::path& dir, const std::vector<seed>& seeds) {
  std::filesystem::create_directories(dir);
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().rfind("seed-", 0) == 0)
      std::filesystem::remove(entry.path());
  unsigned n = 0;
  for (const auto& s : seeds) {
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "seed-%02u-", n++);
    std::ofstream file(dir / (prefix + s.name), std::ios::binary);
    file.write(reinterpret_cast<const char*>(s.bytes.data().data()),
               static_cast<std::streamsize>(s.bytes.data().size()));
  }
  std::printf("%s: %zu seeds\n", dir.c_str(), seeds.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR   (writes DIR/image, DIR/ops, DIR/crash)\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir(argv[1]);
  write(dir / "image", image_seeds());
  write(dir / "ops", ops_seeds());
  write(dir / "crash", crash_seeds());
  return 0;
}
