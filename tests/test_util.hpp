// Helpers shared by the test suites.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"

namespace test {

// Where test files go: $DAXALLOC_TEST_DIR (a DAX mount in the VM suite), else /dev/shm.
inline std::filesystem::path test_dir() {
  const char* dir = std::getenv("DAXALLOC_TEST_DIR");
  return dir && *dir ? dir : "/dev/shm";
}

// A file name unique to this process and call, removed when it goes out of scope.
class temp_file {
 public:
  explicit temp_file(const std::string& tag = "t") {
    static std::atomic<int> counter{0};
    path_ = test_dir() / ("daxalloc-test-" + std::to_string(getpid()) + "-" + tag + "-" +
                          std::to_string(counter++));
    std::filesystem::remove_all(path_);
  }
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Requires check() of a heap or memory model to find nothing, printing what it found.
template <class Checked>
void require_sound(const Checked& checked) {
  const auto problems = checked.check();
  for (const auto& p : problems) MESSAGE(p);
  REQUIRE(problems.empty());
}

// A heap of `size` bytes flushed as pmem, with 1 GiB of address space:
// TSan cannot shadow the default 1 TiB reservation (the stress suite runs
// the tests that use this under TSan).
inline daxalloc::heap make_small_heap(const temp_file& f, std::uint64_t size) {
  daxalloc::heap_options o;
  o.size = size;
  o.max_size = std::uint64_t{1} << 30;
  o.mode = daxalloc::persistence_mode::cache_flush;
  return daxalloc::heap::create(f.path(), o);
}

}  // namespace test

// Checks that `expr` throws daxalloc::error with the given code.
#define CHECK_ERRC(expr, expected)                                                         \
  do {                                                                                     \
    bool thrown_ = false;                                                                  \
    try {                                                                                  \
      (void)(expr);                                                                        \
    } catch (const daxalloc::error& e_) {                                                  \
      thrown_ = true;                                                                      \
      CHECK_MESSAGE(e_.code_value() == (expected), "message: " << std::string(e_.what())); \
      CHECK(std::string(e_.what()).size() > 10);                                           \
    }                                                                                      \
    CHECK_MESSAGE(thrown_, #expr " did not throw");                                        \
  } while (0)
