#include "crash/crash_sim.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace crash {

simulator::simulator(daxalloc::region& r, std::vector<range> watched)
    : base_(r.base()), path_(r.path()), watched_(std::move(watched)) {
  const std::uint64_t size = file_size();
  for (const auto& w : watched_) {
    std::vector<std::byte> copy(w.length);
    if (w.offset < size) std::memcpy(copy.data(), working(w), std::min(w.length, size - w.offset));
    durable_.push_back(std::move(copy));
  }
  daxalloc::persistence::ops table{
      &flush_hook,       &drain_hook, this, &discard_hook, daxalloc::persistence_mode::automatic,
      "crash-simulator", &copy_hook};
  r.use_persistence(daxalloc::persistence(table));
}

std::uint64_t simulator::file_size() const {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path_, ec);
  return ec ? 0 : size;
}

void simulator::flush_hook(void* self, const void* addr, std::size_t len) {
  auto* sim = static_cast<simulator*>(self);
  std::lock_guard lock(sim->mutex_);
  sim->note_flush(addr, len);
}

// What a flush writes back is the line as it is now (a later store dirties
// it again), and a non-temporal store writes what it stored: either way the
// thread's next drain makes that snapshot durable, unless a newer one of the
// same line became durable first.
void simulator::note_flush(const void* addr, std::size_t len) {
  auto& flushed = flushed_[std::this_thread::get_id()];
  const auto start = static_cast<std::uint64_t>(static_cast<const std::byte*>(addr) - base_);
  for (std::uint64_t line = start / line_size * line_size; line < start + len; line += line_size) {
    const bool watched = std::any_of(watched_.begin(), watched_.end(), [&](const range& w) {
      return line >= w.offset && line < w.offset + w.length;
    });
    if (!watched) {
      if (std::any_of(ignored_.begin(), ignored_.end(), [&](const range& w) {
            return line >= w.offset && line < w.offset + w.length;
          }))
        continue;  // durable by the caller's own account (another file's lines)
      if (problems_.size() < 20)
        problems_.push_back("flush of an unwatched line at offset " + std::to_string(line));
      continue;
    }
    pending_line p{line, ++snapshots_, {}};
    std::memcpy(p.content.data(), base_ + line, line_size);
    flushed.push_back(p);
  }
}

// A non-temporal copy: stored at once (the program reads it back), durable
// at the thread's next drain, and until then a crash may keep any of its
// lines or none, in any order with the thread's other pending lines.
void simulator::copy_hook(void* self, void* dest, const void* src, std::size_t len) {
  auto* sim = static_cast<simulator*>(self);
  std::lock_guard lock(sim->mutex_);
  std::memcpy(dest, src, len);
  ++sim->copies_;
  sim->note_flush(dest, len);
}

// A punched hole reads as zeros at once and durably: the file system did it.
void simulator::discard_hook(void* self, const void* addr, std::size_t len) {
  auto* sim = static_cast<simulator*>(self);
  std::lock_guard lock(sim->mutex_);
  const auto start = static_cast<std::uint64_t>(static_cast<const std::byte*>(addr) - sim->base_);
  for (std::size_t i = 0; i < sim->watched_.size(); ++i) {
    const range& w = sim->watched_[i];
    const std::uint64_t lo = std::max(start, w.offset),
                        hi = std::min(start + len, w.offset + w.length);
    if (lo < hi) std::memset(sim->durable_[i].data() + (lo - w.offset), 0, hi - lo);
  }
  for (auto& [thread, flushed] : sim->flushed_)  // what was flushed before is gone with it
    std::erase_if(flushed, [&](const pending_line& p) {
      return p.line + line_size > start && p.line < start + len;
    });
}

void simulator::drain_hook(void* self) {
  auto* sim = static_cast<simulator*>(self);
  std::lock_guard lock(sim->mutex_);
  sim->record(++sim->fences_);
  auto& flushed = sim->flushed_[std::this_thread::get_id()];
  for (const pending_line& p : flushed) {
    std::uint64_t& durable_snapshot = sim->durable_snapshot_[p.line];
    if (p.snapshot < durable_snapshot) continue;  // a newer one is durable already
    durable_snapshot = p.snapshot;
    for (std::size_t i = 0; i < sim->watched_.size(); ++i) {
      const range& w = sim->watched_[i];
      if (p.line >= w.offset && p.line < w.offset + w.length)
        std::memcpy(sim->durable_[i].data() + (p.line - w.offset), p.content.data(), line_size);
    }
  }
  flushed.clear();
}

void simulator::record(std::size_t fence) {
  crash_point p;
  p.fence = fence;
  p.file_size = file_size();
  p.durable = durable_;
  for (std::size_t i = 0; i < watched_.size(); ++i) {
    const range& w = watched_[i];
    const std::uint64_t visible =
        w.offset < p.file_size ? std::min(w.length, p.file_size - w.offset) : 0;
    for (std::uint64_t at = 0; at < visible; at += line_size) {
      const std::byte* now = working(w) + at;
      if (std::memcmp(now, durable_[i].data() + at, line_size) == 0) continue;
      dirty_line d{w.offset + at, {}};
      std::memcpy(d.content.data(), now, line_size);
      p.dirty.push_back(d);
    }
  }
  points_.push_back(std::move(p));
}

// A line flushed but never fenced by its thread matters only if no other
// thread's fence made it durable: the dirty lines of the last point.
std::vector<std::string> simulator::finish() {
  std::lock_guard lock(mutex_);
  record(0);
  const auto& last = points_.back();
  if (!last.dirty.empty())
    problems_.push_back(std::to_string(last.dirty.size()) +
                        " lines stored but never made durable, the first at offset " +
                        std::to_string(last.dirty.front().offset));
  return problems_;
}

namespace {

void write_image(
    const crash_point& point, const std::vector<range>& watched,
    const std::vector<std::pair<std::size_t, int>>& choice,  // dirty index, 1 = new, 2 = torn
    std::uint64_t torn_mask, const std::filesystem::path& path) {
  std::vector<std::vector<std::byte>> image = point.durable;
  for (auto [index, how] : choice) {
    const dirty_line& d = point.dirty[index];
    for (std::size_t i = 0; i < watched.size(); ++i) {
      const range& w = watched[i];
      if (d.offset < w.offset || d.offset >= w.offset + w.length) continue;
      std::byte* to = image[i].data() + (d.offset - w.offset);
      for (std::size_t word = 0; word < line_size / 8; ++word)
        if (how == 1 || (torn_mask >> (word + index % 8 * 8)) & 1)
          std::memcpy(to + word * 8, d.content.data() + word * 8, 8);
    }
  }
  std::filesystem::remove(path);
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create crash image " + path.string());
  bool ok = ftruncate(fd, static_cast<off_t>(point.file_size)) == 0;
  for (std::size_t i = 0; i < watched.size() && ok; ++i) {
    const std::uint64_t visible =
        watched[i].offset < point.file_size
            ? std::min(watched[i].length, point.file_size - watched[i].offset)
            : 0;
    ok = visible == 0 ||
         pwrite(fd, image[i].data(), visible, static_cast<off_t>(watched[i].offset)) ==
             static_cast<ssize_t>(visible);
  }
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write crash image " + path.string());
}

}  // namespace

unsigned scale() {
  static const unsigned factor = [] {
    const char* v = std::getenv("DAXALLOC_CRASH_SCALE");
    const long n = v ? std::strtol(v, nullptr, 10) : 1;
    return static_cast<unsigned>(std::clamp(n, 1L, 1000L));
  }();
  return factor;
}

std::size_t explore(const crash_point& point, const std::vector<range>& watched,
                    const std::filesystem::path& image_path, std::mt19937_64& rng,
                    const std::function<void(const std::filesystem::path&)>& visit,
                    unsigned exhaustive_limit, unsigned samples) {
  samples *= scale();
  const std::size_t n = point.dirty.size();
  std::size_t count = 0;
  std::vector<std::pair<std::size_t, int>> choice;
  const auto run = [&](std::uint64_t torn_mask) {
    write_image(point, watched, choice, torn_mask, image_path);
    visit(image_path);
    ++count;
  };
  if (n <= exhaustive_limit) {
    for (std::uint64_t subset = 0; subset < (std::uint64_t{1} << n); ++subset) {
      choice.clear();
      for (std::size_t i = 0; i < n; ++i)
        if ((subset >> i) & 1) choice.emplace_back(i, 1);
      run(0);
    }
    for (unsigned s = 0; n > 0 && s < samples / 4; ++s) {  // and some torn lines
      choice.clear();
      for (std::size_t i = 0; i < n; ++i)
        if (rng() % 2) choice.emplace_back(i, 2);
      run(rng());
    }
    return count;
  }
  choice.clear();
  run(0);  // none reached the media
  for (std::size_t i = 0; i < n; ++i) choice.emplace_back(i, 1);
  run(0);  // all did
  for (unsigned s = 0; s < samples; ++s) {
    choice.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const auto r = rng() % 8;
      if (r < 3)
        choice.emplace_back(i, 1);
      else if (r == 3)
        choice.emplace_back(i, 2);
    }
    run(rng());
  }
  return count;
}

}  // namespace crash
