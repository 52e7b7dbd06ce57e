#include "fuzz_common.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <vector>

namespace fuzz {
namespace {

std::mutex scratch_mutex;
std::vector<std::filesystem::path>* scratch_files = nullptr;

void remove_scratch_files() {
  std::lock_guard lock(scratch_mutex);
  if (scratch_files == nullptr) return;
  for (const auto& p : *scratch_files) {
    std::error_code ec;
    std::filesystem::remove(p, ec);
  }
}

}  // namespace

namespace {

struct known_issue {
  const char* problem;     // the check() line it causes
  const char* reproducer;  // under tests/fuzz_regressions/pending/
};
// None at present (docs/fuzzing.md lists the findings and their fixes).
constexpr std::array<known_issue, 0> known_issues{};

}  // namespace

std::vector<std::string> without_known_issues(std::vector<std::string> problems) {
  static const bool strict = [] {
    const char* v = std::getenv("DAXALLOC_FUZZ_STRICT");
    return v && std::strcmp(v, "1") == 0;
  }();
  if (strict) return problems;
  std::erase_if(problems, [](const std::string& p) {
    for (const auto& k : known_issues)
      if (p == k.problem) return true;
    return false;
  });
  return problems;
}

void finding(const std::string& what) {
  std::fprintf(stderr, "\n==== daxalloc fuzz finding: %s\n", what.c_str());
  std::fflush(stderr);
  remove_scratch_files();
  std::abort();
}

std::filesystem::path scratch_file(const std::string& tag) {
  const char* dir = std::getenv("DAXALLOC_FUZZ_DIR");
  std::filesystem::path p = std::filesystem::path(dir && *dir ? dir : "/dev/shm") /
                            ("daxalloc-fuzz-" + tag + "-" + std::to_string(getpid()));
  std::lock_guard lock(scratch_mutex);
  if (scratch_files == nullptr) {
    scratch_files = new std::vector<std::filesystem::path>;
    std::atexit(&remove_scratch_files);
  }
  scratch_files->push_back(p);
  return p;
}

sparse_image sparse_image::read(const std::filesystem::path& path) {
  sparse_image image;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) finding("cannot read " + path.string());
  image.size = static_cast<std::uint64_t>(lseek(fd, 0, SEEK_END));
  std::vector<std::uint8_t> buf(page);
  static const std::vector<std::uint8_t> zero(page);
  // SEEK_DATA skips the holes of a sparse file.
  for (off_t at = lseek(fd, 0, SEEK_DATA); at >= 0 && static_cast<std::uint64_t>(at) < image.size;
       at += page) {
    const off_t data = lseek(fd, at, SEEK_DATA);
    if (data < 0) break;
    at = data / static_cast<off_t>(page) * static_cast<off_t>(page);
    const ssize_t got = pread(fd, buf.data(), page, at);
    if (got <= 0) break;
    std::fill(buf.begin() + got, buf.end(), 0);
    if (buf != zero) image.pages[static_cast<std::uint64_t>(at)] = buf;
  }
  ::close(fd);
  return image;
}

void sparse_image::write(const std::filesystem::path& path) const {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) finding("cannot create " + path.string());
  bool ok = ftruncate(fd, 0) == 0 && ftruncate(fd, static_cast<off_t>(size)) == 0;
  for (const auto& [offset, bytes] : pages) {
    if (!ok || offset >= size) break;
    const std::size_t n = std::min<std::uint64_t>(page, size - offset);
    ok = pwrite(fd, bytes.data(), n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n);
  }
  ::close(fd);
  if (!ok) finding("cannot write the image " + path.string());
}

std::uint8_t* sparse_image::page_at(std::uint64_t offset) {
  const std::uint64_t first = offset / page * page;
  auto it = pages.find(first);
  if (it == pages.end()) it = pages.emplace(first, std::vector<std::uint8_t>(page)).first;
  return it->second.data();
}

bool sparse_image::store(std::uint64_t offset, const void* p, std::size_t n) {
  if (offset > size || n > size - offset) return false;
  const auto* from = static_cast<const std::uint8_t*>(p);
  while (n) {
    const std::size_t in_page = std::min<std::size_t>(n, page - offset % page);
    std::memcpy(page_at(offset) + offset % page, from, in_page);
    offset += in_page;
    from += in_page;
    n -= in_page;
  }
  return true;
}

bool sparse_image::load(std::uint64_t offset, void* p, std::size_t n) const {
  if (offset > size || n > size - offset) return false;
  auto* to = static_cast<std::uint8_t*>(p);
  while (n) {
    const std::size_t in_page = std::min<std::size_t>(n, page - offset % page);
    const auto it = pages.find(offset / page * page);
    if (it == pages.end())
      std::memset(to, 0, in_page);
    else
      std::memcpy(to, it->second.data() + offset % page, in_page);
    offset += in_page;
    to += in_page;
    n -= in_page;
  }
  return true;
}

}  // namespace fuzz
