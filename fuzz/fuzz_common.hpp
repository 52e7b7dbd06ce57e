// Decoding a fuzzer's input bytes into choices, and the helpers every harness
// shares: a per-process image file, sparse images kept in memory, and the way
// a harness reports a finding.
//
// The decoding is ours rather than clang's FuzzedDataProvider so that the
// replayers built by gcc (fuzz/replay_main.cpp, the regression tests) decode
// a saved input exactly as the libFuzzer build did. It is simple on purpose:
// every value is read from the front, little endian, in as many bytes as its
// range needs; an exhausted input reads as zeros. fuzz/make_corpus.cpp writes
// seeds with fuzz_output, the mirror image.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fuzz {

class fuzz_input {
 public:
  fuzz_input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  [[nodiscard]] bool empty() const noexcept { return at_ >= size_; }
  [[nodiscard]] std::size_t remaining() const noexcept { return empty() ? 0 : size_ - at_; }

  std::uint8_t byte() noexcept { return at_ < size_ ? data_[at_++] : 0; }
  bool boolean() noexcept { return byte() & 1; }
  // A value in [0, bound): ceil(log256(bound)) bytes, then modulo bound.
  std::uint64_t below(std::uint64_t bound) noexcept {
    if (bound <= 1) return 0;
    std::uint64_t v = 0;
    unsigned shift = 0;
    for (std::uint64_t left = bound - 1; left; left >>= 8, shift += 8)
      v |= std::uint64_t{byte()} << shift;
    return v % bound;
  }
  // A value in [lo, hi].
  std::uint64_t in(std::uint64_t lo, std::uint64_t hi) noexcept {
    return hi - lo == ~std::uint64_t{0} ? word() : lo + below(hi - lo + 1);
  }
  std::uint64_t word() noexcept {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < 8; ++i) v |= std::uint64_t{byte()} << (8 * i);
    return v;
  }
  // Up to n bytes (fewer when the input ends).
  std::vector<std::uint8_t> bytes(std::size_t n) {
    n = std::min(n, remaining());
    std::vector<std::uint8_t> out(data_ + at_, data_ + at_ + n);
    at_ += n;
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// The encoder for seeds: the same widths as fuzz_input.
class fuzz_output {
 public:
  fuzz_output& byte(std::uint8_t b) {
    out_.push_back(b);
    return *this;
  }
  fuzz_output& boolean(bool b) { return byte(b ? 1 : 0); }
  fuzz_output& below(std::uint64_t bound, std::uint64_t v) {
    for (std::uint64_t left = bound - 1; bound > 1 && left; left >>= 8, v >>= 8)
      out_.push_back(static_cast<std::uint8_t>(v));
    return *this;
  }
  fuzz_output& in(std::uint64_t lo, std::uint64_t hi, std::uint64_t v) {
    if (hi - lo == ~std::uint64_t{0}) return word(v);
    return below(hi - lo + 1, v - lo);
  }
  fuzz_output& word(std::uint64_t v) {
    for (unsigned i = 0; i < 8; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return *this;
  }
  fuzz_output& bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
    return *this;
  }
  [[nodiscard]] const std::vector<std::uint8_t>& data() const { return out_; }

 private:
  std::vector<std::uint8_t> out_;
};

// A finding: print what broke and abort, which libFuzzer reports as a crash
// and saves the input for.
[[noreturn]] void finding(const std::string& what);

// Known findings in code the fuzzing work does not change (lib/heap/,
// include/): reported with a reproducer in tests/fuzz_regressions/pending/.
// The harnesses drop exactly these check() problems, unless the environment
// sets DAXALLOC_FUZZ_STRICT=1, so that runs keep looking for new bugs. When
// one is fixed, delete its entry (fuzz_common.cpp) and move its reproducer
// to tests/fuzz_regressions/<harness>/.
std::vector<std::string> without_known_issues(std::vector<std::string> problems);

// Where a harness keeps its image files: $DAXALLOC_FUZZ_DIR, else /dev/shm.
// The name holds the harness and the pid, so parallel jobs never share one;
// the files are removed at exit.
std::filesystem::path scratch_file(const std::string& tag);

// A heap image kept in memory as its non-zero 4 KiB pages: a 16 MiB heap is
// a few dozen pages, so writing one to a fresh sparse file costs little.
struct sparse_image {
  static constexpr std::size_t page = 4096;
  std::uint64_t size = 0;                                    // file size in bytes
  std::map<std::uint64_t, std::vector<std::uint8_t>> pages;  // page offset -> 4096 bytes

  static sparse_image read(const std::filesystem::path& path);
  void write(const std::filesystem::path& path) const;  // replaces the file's content
  // The page holding `offset`, created zero-filled (never beyond `size`).
  std::uint8_t* page_at(std::uint64_t offset);
  // Bytes at [offset, offset+n) inside one page; false when beyond the size.
  bool store(std::uint64_t offset, const void* p, std::size_t n);
  bool load(std::uint64_t offset, void* p, std::size_t n) const;
};

}  // namespace fuzz
