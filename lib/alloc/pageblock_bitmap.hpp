// A set of pageblock numbers of a heap's address range, one bit each, with a
// summary bit per 64-bit word saying whether the word has a bit set, so that
// searches skip empty stretches 4096 pageblocks (8 GiB) at a time. The page
// allocator's pool of wholly free pageblocks: no node is allocated to insert
// or erase, and a run of set bits is a run of contiguous free pageblocks.
// Not synchronised: the pool's lock covers it.
#pragma once

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstdint>
#include <optional>

#include "platform/zeroed_memory.hpp"

namespace daxalloc::alloc {

class pageblock_bitmap {
 public:
  // For pageblocks 0..size-1; untouched words cost no DRAM.
  explicit pageblock_bitmap(std::uint64_t size)
      : size_(size),
        words_((size + 63) / 64),
        memory_((words_ + (words_ + 63) / 64) * sizeof(std::uint64_t)),
        bits_(static_cast<std::uint64_t*>(memory_.data())),
        summary_(bits_ + words_) {}

  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] bool contains(std::uint64_t pb) const noexcept {
    return (bits_[pb / 64] >> (pb % 64)) & 1;
  }
  void insert(std::uint64_t pb) noexcept {
    assert(pb < size_ && !contains(pb));
    bits_[pb / 64] |= bit(pb);
    summary_[pb / 4096] |= bit(pb / 64);
    ++count_;
  }
  void erase(std::uint64_t pb) noexcept {
    assert(pb < size_ && contains(pb));
    if ((bits_[pb / 64] &= ~bit(pb)) == 0) summary_[pb / 4096] &= ~bit(pb / 64);
    --count_;
  }

  void clear() noexcept {
    memory_.zero(0, memory_.size());
    count_ = 0;
  }

  // The lowest member at or after `from`; size() when there is none.
  [[nodiscard]] std::uint64_t next_set(std::uint64_t from) const noexcept {
    if (from >= size_) return size_;
    std::uint64_t w = from / 64;
    if (const std::uint64_t word = bits_[w] & ~(bit(from) - 1))
      return w * 64 + static_cast<unsigned>(std::countr_zero(word));
    ++w;  // the next non-empty word, from the summary
    for (std::uint64_t s = w / 64; s * 64 < words_; ++s) {
      std::uint64_t word = summary_[s];
      if (s == w / 64) word &= ~(bit(w) - 1);
      if (word) {
        w = s * 64 + static_cast<unsigned>(std::countr_zero(word));
        return w * 64 + static_cast<unsigned>(std::countr_zero(bits_[w]));
      }
    }
    return size_;
  }
  // The lowest non-member at or after `from`, at most size().
  [[nodiscard]] std::uint64_t next_clear(std::uint64_t from) const noexcept {
    if (from >= size_) return size_;
    std::uint64_t w = from / 64;
    std::uint64_t word = ~bits_[w] & ~(bit(from) - 1);
    while (word == 0 && ++w < words_) word = ~bits_[w];
    if (word == 0) return size_;
    return std::min(size_, w * 64 + static_cast<unsigned>(std::countr_zero(word)));
  }

  // f(first, count) for every maximal run of members, lowest first.
  template <class F>
  void for_each_run(F f) const {
    for (std::uint64_t at = next_set(0); at < size_;) {
      const std::uint64_t end = next_clear(at);
      f(at, end - at);
      at = next_set(end);
    }
  }
  // The first member of the smallest run of at least `count` members, the
  // lowest such run on a tie (best fit, address ordered).
  // Within [from, to): runs end there.
  [[nodiscard]] std::optional<std::uint64_t> best_fit(
      std::uint64_t count, std::uint64_t from = 0, std::uint64_t to = UINT64_MAX) const noexcept {
    std::optional<std::uint64_t> best;
    std::uint64_t best_count = 0;
    to = std::min(to, size_);
    for (std::uint64_t at = next_set(std::min(from, size_)); at < to;) {
      const std::uint64_t end = std::min(next_clear(at), to);
      if (end - at >= count && (!best || end - at < best_count)) {
        best = at;
        best_count = end - at;
        if (best_count == count) break;  // nothing fits better
      }
      at = next_set(end);
    }
    return best;
  }
  // Adds every member of `other` (of the same size).
  void unite(const pageblock_bitmap& other) noexcept {
    assert(other.size_ == size_);
    for (std::uint64_t at = other.next_set(0); at < size_;
         at = other.next_set((at / 64 + 1) * 64)) {
      const std::uint64_t w = at / 64, added = other.bits_[w] & ~bits_[w];
      bits_[w] |= added;
      summary_[w / 64] |= bit(w);
      count_ += static_cast<unsigned>(std::popcount(added));
    }
  }

 private:
  static constexpr std::uint64_t bit(std::uint64_t n) noexcept {
    return std::uint64_t{1} << (n % 64);
  }

  std::uint64_t size_, words_;
  std::uint64_t count_ = 0;
  detail::zeroed_memory memory_;  // words_ bitmap words, then the summary
  std::uint64_t* bits_;
  std::uint64_t* summary_;
};

}  // namespace daxalloc::alloc
