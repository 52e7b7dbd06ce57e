// Harness `crash`: power failure at a chosen fence, with a chosen subset of
// the cache lines that had not reached the media.
//
// The input (fuzz/formats.hpp) chooses setup calls (run and closed normally),
// then a few calls run under a simulated persistence domain, the fence before
// which the power fails, and for each line that differs from the durable
// image at that instant whether it reached the media whole, torn at 8-byte
// granularity, or not at all. The crash image must open (recovery never
// refuses a crash image), check() must be empty, and the recovered durable
// state (allocations, the root and its pptr slots, present subsections) must
// be the state before or after the call that was interrupted: all or nothing.
// The heap must then stay usable. Optionally the recovery itself is crashed
// the same way, and the image of that crash must recover to the same state.
//
// The simulator here follows tests/crash/crash_sim.cpp but records only the
// one crash point the input asks for, and tracks the durable image sparsely
// (a 16 MiB heap is mostly holes), so an input runs in milliseconds.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <set>

#include "api_driver.hpp"
#include "heap/access.hpp"

namespace {

using namespace fuzz;
constexpr std::size_t line = 64;

struct dirty_line {
  std::uint64_t offset;
  std::array<std::uint8_t, line> content;
};

// Durable = what survives a power failure: the image at the start, plus every
// line flushed and then fenced. One crash point is recorded: at the entry of
// fence number `crash_fence` (1-based), or at finish() when the run has fewer.
class crash_point_sim {
 public:
  crash_point_sim(daxalloc::region& r, sparse_image durable, std::size_t crash_fence)
      : base_(reinterpret_cast<std::uint8_t*>(r.base())),
        durable_(std::move(durable)),
        crash_fence_(crash_fence) {
    durable_.size = std::uint64_t{1} << 62;  // the file grows; its size is read at the crash
    fd_ = ::open(r.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) finding("cannot open " + r.path().string());
    daxalloc::persistence::ops table{
        &flush_hook, &drain_hook, this, &discard_hook, daxalloc::persistence_mode::automatic,
        "fuzz-crash"};
    r.use_persistence(daxalloc::persistence(table));
  }
  ~crash_point_sim() { ::close(fd_); }
  crash_point_sim(const crash_point_sim&) = delete;
  crash_point_sim& operator=(const crash_point_sim&) = delete;

  [[nodiscard]] std::size_t fences() const { return fences_; }
  [[nodiscard]] bool crashed_in_run() const { return crashed_; }

  // Ends the run; lines stored but never made durable are a finding.
  void finish(const char* what) {
    // A line flushed but never fenced matters only if it differs from the
    // durable image, which dirty_lines() finds.
    const auto dirty = dirty_lines();
    if (!dirty.empty())
      finding(std::string(what) + ": " + std::to_string(dirty.size()) +
              " line(s) stored but never made durable, the first at offset " +
              std::to_string(dirty.front().offset));
    if (!crashed_) snapshot();
  }

  // The crash image: the durable image at the crash point and the chosen lines.
  sparse_image crash_image(fuzz_input& in) const {
    sparse_image image = crash_durable_;
    image.size = crash_size_;
    std::uint8_t rest = 0;
    for (std::size_t i = 0; i < crash_dirty_.size(); ++i) {
      const dirty_line& d = crash_dirty_[i];
      unsigned how = 0;
      std::uint8_t mask = 0xff;
      if (i < max_chosen_lines) {
        how = static_cast<unsigned>(in.below(4));
        if (how == 2) mask = in.byte();
      } else {
        if (i == max_chosen_lines) rest = static_cast<std::uint8_t>(in.below(2));
        how = rest;
      }
      if (how == 0) continue;
      for (unsigned w = 0; w < line / 8; ++w)
        if ((mask >> w) & 1) image.store(d.offset + 8 * w, d.content.data() + 8 * w, 8);
    }
    return image;
  }
  [[nodiscard]] std::size_t crash_dirty_count() const { return crash_dirty_.size(); }

 private:
  static void flush_hook(void* self, const void* addr, std::size_t len) {
    auto* sim = static_cast<crash_point_sim*>(self);
    const auto start =
        static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(addr) - sim->base_);
    for (std::uint64_t at = start / line * line; at < start + len; at += line)
      sim->flushed_.push_back(at);
  }
  static void drain_hook(void* self) {
    auto* sim = static_cast<crash_point_sim*>(self);
    if (++sim->fences_ == sim->crash_fence_) {
      sim->snapshot();
      sim->crashed_ = true;
    }
    for (auto at : sim->flushed_) sim->durable_.store(at, sim->base_ + at, line);
    sim->flushed_.clear();
  }
  // A punched hole reads as zeros at once and durably (the file system did it).
  static void discard_hook(void* self, const void* addr, std::size_t len) {
    auto* sim = static_cast<crash_point_sim*>(self);
    const auto start =
        static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(addr) - sim->base_);
    const std::uint64_t end = start + len;
    for (std::uint64_t page = start / sparse_image::page * sparse_image::page; page < end;
         page += sparse_image::page) {
      const std::uint64_t lo = std::max(page, start), hi = std::min(page + sparse_image::page, end);
      if (hi - lo == sparse_image::page) {
        sim->durable_.pages.erase(page);
      } else {
        const std::vector<std::uint8_t> zero(hi - lo);
        sim->durable_.store(lo, zero.data(), zero.size());
      }
    }
  }

  [[nodiscard]] std::uint64_t file_size() const {
    return static_cast<std::uint64_t>(lseek(fd_, 0, SEEK_END));
  }

  // Lines whose working content differs from the durable image: on the pages
  // the file holds data in, and the durable image's non-zero pages.
  [[nodiscard]] std::vector<dirty_line> dirty_lines() const {
    const std::uint64_t size = file_size();
    std::set<std::uint64_t> pages;
    for (off_t at = 0; static_cast<std::uint64_t>(at) < size;) {
      const off_t data = lseek(fd_, at, SEEK_DATA);
      if (data < 0) break;
      off_t hole = lseek(fd_, data, SEEK_HOLE);
      if (hole < 0) hole = static_cast<off_t>(size);
      for (off_t p = data / 4096 * 4096; p < hole; p += 4096)
        pages.insert(static_cast<std::uint64_t>(p));
      at = hole;
    }
    for (const auto& [offset, bytes] : durable_.pages)
      if (offset < size) pages.insert(offset);
    std::vector<dirty_line> out;
    std::uint8_t want[line];
    for (std::uint64_t page : pages)
      for (std::uint64_t at = page; at < page + sparse_image::page && at < size; at += line) {
        durable_.load(at, want, line);
        if (std::memcmp(base_ + at, want, line) == 0) continue;
        dirty_line d{at, {}};
        std::memcpy(d.content.data(), base_ + at, line);
        out.push_back(d);
      }
    return out;
  }

  void snapshot() {
    crash_durable_ = durable_;
    crash_size_ = file_size();
    crash_dirty_ = dirty_lines();
  }

  std::uint8_t* base_;
  int fd_ = -1;
  sparse_image durable_;
  std::vector<std::uint64_t> flushed_;  // line offsets flushed since the last fence
  std::size_t fences_ = 0, crash_fence_;
  bool crashed_ = false;
  sparse_image crash_durable_;
  std::uint64_t crash_size_ = 0;
  std::vector<dirty_line> crash_dirty_;
};

daxalloc::heap_open_options open_options() {
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::none;
  return o;
}

void require_sound(const daxalloc::heap& h, const std::string& when) {
  const auto problems = without_known_issues(h.check());
  if (problems.empty()) return;
  std::string all;
  for (const auto& p : problems) all += "\n  " + p;
  finding("check() after " + when + ":" + all);
}

// Opens a crash image: it must recover into a sound heap.
daxalloc::heap recover(const std::filesystem::path& path, const std::string& what) {
  try {
    auto h = daxalloc::heap::open(path, open_options());
    require_sound(h, what);
    return h;
  } catch (const daxalloc::error& e) {
    finding(what + ": the crash image was refused: " + e.what());
  } catch (const std::exception& e) {
    finding(what + ": open threw something other than daxalloc::error: " + e.what());
  }
}

// The recovered heap stays usable: allocate and free around the classes,
// close, reopen.
void follow_up(std::optional<daxalloc::heap>& h, const std::filesystem::path& path) {
  try {
    for (std::size_t size : {24, 5000, 70000, 3 * 1024 * 1024})
      if (void* p = h->allocate(size, std::nothrow)) h->deallocate(p);
    h->close();
    h.emplace(daxalloc::heap::open(path, open_options()));
  } catch (const daxalloc::error& e) {
    finding(std::string("after recovery: ") + e.what());
  }
  require_sound(*h, "the follow-up after recovery");
}

daxalloc::region& region_of(daxalloc::heap& h) {
  // The test hook region::use_persistence needs the heap's own region.
  return const_cast<daxalloc::region&>(h.media());
}

void run(const std::uint8_t* data, std::size_t size) {
  static const auto work = scratch_file("crash-work");
  static const auto image_path = scratch_file("crash-image");
  fuzz_input in(data, size);
  driver_options quiet;
  quiet.payloads = false;  // the simulator must see only the heap's own stores
  quiet.allow_reopen = false;
  quiet.stats_every_call = false;

  pristine_heap_image().write(work);
  std::optional<daxalloc::heap> h;
  try {
    h.emplace(daxalloc::heap::open(work, open_options()));
    api_driver setup(h, work, quiet);
    const auto n = in.below(max_setup_calls + 1);
    for (std::uint64_t i = 0; i < n; ++i) setup.run(decode_call(in));
    h->close();
    h.emplace(daxalloc::heap::open(work, open_options()));
  } catch (const std::exception& e) {
    finding(std::string("setup: ") + e.what());
  }

  // The simulated run. The open above is not part of it; the recovery crash
  // below covers open.
  api_driver driver(h, work, quiet);
  std::vector<call> calls(in.in(1, max_crash_calls));
  for (auto& c : calls) c = decode_call(in);
  const std::size_t fence = in.below(max_crash_fence) + 1;
  std::vector<std::string> states{api_driver::signature(*h)};
  std::vector<std::size_t> fences_after;
  {
    crash_point_sim sim(region_of(*h), sparse_image::read(work), fence);
    daxalloc::detail::internals(*h).use_persistence(
        region_of(*h).persist());  // under the heap's fences
    for (const auto& c : calls) {
      driver.run(c);
      states.push_back(api_driver::signature(*h));
      fences_after.push_back(sim.fences());
    }
    h->persist().drain();  // makes a lazily invalidated redo lane durable
    sim.finish("the simulated calls");
    daxalloc::detail::internals(*h).use_persistence(daxalloc::persistence{});
    h.reset();
    // Before or after the call during whose fence the power failed (after
    // the last call for the final fence).
    std::set<std::string> expected{states.back()};
    std::size_t during = calls.size();
    if (sim.crashed_in_run()) {
      during = 0;
      while (during < calls.size() && fences_after[during] < fence) ++during;
      if (during < calls.size()) expected = {states[during], states[during + 1]};
    }
    const sparse_image crashed = sim.crash_image(in);
    crashed.write(image_path);
    h.emplace(recover(image_path, "a crash before fence " + std::to_string(fence)));
    const std::string state = api_driver::signature(*h);
    if (!expected.count(state)) {
      std::string want;
      for (const auto& s : expected) want += "\n  " + s;
      finding("a crash before fence " + std::to_string(fence) + " (in call " +
              std::to_string(during) + ", " + std::to_string(sim.crash_dirty_count()) +
              " pending lines) recovered to\n  " + state + "\nnot to one of" + want);
    }
    follow_up(h, image_path);
    h.reset();
    if (!in.boolean()) return;

    // Crash the recovery of that image too: it must recover to the same state.
    crashed.write(image_path);
    const std::size_t fence2 = in.below(max_crash_fence) + 1;
    daxalloc::region_options ro;
    ro.mode = daxalloc::persistence_mode::none;
    auto r = daxalloc::region::open(image_path, ro);
    r.reserve(driver_max_range);
    crash_point_sim sim2(r, crashed, fence2);
    std::unique_ptr<daxalloc::detail::heap_impl> impl;
    try {
      impl = daxalloc::detail::heap_impl::open(std::move(r), {});
    } catch (const std::exception& e) {
      finding(std::string("recovery under the simulator failed: ") + e.what());
    }
    sim2.finish("recovery");
    impl->use_persistence(daxalloc::persistence{});
    impl.reset();
    sim2.crash_image(in).write(image_path);
    h.emplace(
        recover(image_path, "a crash of the recovery before fence " + std::to_string(fence2)));
    if (const std::string again = api_driver::signature(*h); again != state)
      finding("a crash of the recovery before fence " + std::to_string(fence2) +
              " recovered to\n  " + again + "\nnot to\n  " + state);
    h.reset();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  run(data, size);
  return 0;
}
