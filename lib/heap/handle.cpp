// The public handle of include/daxalloc/heap.hpp and the non-throwing
// (std::error_code) forms of the heap's and the batch's calls: each runs the
// throwing form and reports its exception through the error_code and
// last_error_message(), except on the allocation fast paths, which throw
// nothing to begin with.
#include <bit>
#include <string>

#include "daxalloc/batch.hpp"
#include "heap/heap_impl.hpp"
#include "platform/error_report.hpp"

namespace daxalloc {

using detail::heap_impl;
using detail::into_error_code;
using detail::report_error;

heap::heap(std::unique_ptr<heap_impl> impl) : impl_(std::move(impl)) {}
heap::heap() noexcept = default;
heap::heap(heap&& other) noexcept = default;
heap& heap::operator=(heap&& other) noexcept = default;
heap::~heap() = default;
void heap::close() {
  impl_.reset();
}

// ---- opening ----

heap heap::create(const std::filesystem::path& path, const heap_options& options) {
  return heap(heap_impl::create(path, options));
}
heap heap::open(const std::filesystem::path& path, const heap_open_options& options) {
  return heap(heap_impl::open(path, options));
}
heap heap::open_read_only(const std::filesystem::path& path, const heap_open_options& options) {
  return heap(heap_impl::open_read_only(path, options));
}
heap heap::open_or_create(const std::filesystem::path& path, const heap_options& create_options,
                          const heap_open_options& open_options) {
  return heap(heap_impl::open_or_create(path, create_options, open_options));
}

heap heap::create(const std::filesystem::path& path, const heap_options& options,
                  std::error_code& ec) noexcept {
  return heap(into_error_code(ec, [&] { return heap_impl::create(path, options); }));
}
heap heap::open(const std::filesystem::path& path, std::error_code& ec) noexcept {
  return open(path, {}, ec);
}
heap heap::open(const std::filesystem::path& path, const heap_open_options& options,
                std::error_code& ec) noexcept {
  return heap(into_error_code(ec, [&] { return heap_impl::open(path, options); }));
}
heap heap::open_read_only(const std::filesystem::path& path, std::error_code& ec) noexcept {
  return open_read_only(path, {}, ec);
}
heap heap::open_read_only(const std::filesystem::path& path, const heap_open_options& options,
                          std::error_code& ec) noexcept {
  return heap(into_error_code(ec, [&] { return heap_impl::open_read_only(path, options); }));
}
heap heap::open_or_create(const std::filesystem::path& path, const heap_options& create_options,
                          std::error_code& ec) noexcept {
  return open_or_create(path, create_options, {}, ec);
}
heap heap::open_or_create(const std::filesystem::path& path, const heap_options& create_options,
                          const heap_open_options& open_options, std::error_code& ec) noexcept {
  return heap(into_error_code(
      ec, [&] { return heap_impl::open_or_create(path, create_options, open_options); }));
}

detail::heap_impl& heap::live() const {
  if (!impl_) throw error(errc::invalid_argument, "heap: the handle is closed (or was moved from)");
  return *impl_;
}

void heap::refuse_writes(const char* operation) const {
  live().refuse_if_read_only(operation);
}

bool heap::writable(const char* operation, std::error_code& ec) const noexcept {
  into_error_code(ec, [&] { refuse_writes(operation); });
  return !ec;
}

// ---- allocation ----

void* heap::allocate(std::size_t size) {
  if (void* p = live().allocate(size)) return p;
  impl_->refuse_if_read_only("allocate");
  throw error(errc::out_of_space, "allocate: no room for " + std::to_string(size) + " bytes");
}
void* heap::allocate(std::size_t size, std::nothrow_t) noexcept {
  return impl_ ? impl_->allocate(size) : nullptr;
}
void* heap::allocate(std::size_t size, std::error_code& ec) noexcept {
  if (impl_) [[likely]] {
    if (void* p = impl_->allocate(size)) [[likely]] {
      ec.clear();
      return p;
    }
  }
  return into_error_code(ec, [&] { return allocate(size); });  // the error, as allocate throws it
}

namespace {
bool valid_alignment(std::size_t alignment) noexcept {
  return std::has_single_bit(alignment) && alignment <= heap::max_alignment;
}
std::string aligned_to(std::size_t size, std::size_t alignment) {
  return std::to_string(size) + " bytes aligned to " + std::to_string(alignment);
}
[[noreturn]] void refuse_alignment(const char* operation, std::size_t alignment) {
  throw error(errc::invalid_argument, std::string(operation) + ": alignment " +
                                          std::to_string(alignment) +
                                          " is not a power of two up to 1 GiB");
}
}  // namespace

void* heap::allocate(std::size_t size, std::size_t alignment) {
  detail::heap_impl& h = live();
  if (!valid_alignment(alignment)) refuse_alignment("allocate", alignment);
  if (void* p = h.allocate_aligned(size, alignment)) return p;
  h.refuse_if_read_only("allocate");
  throw error(errc::out_of_space, "allocate: no room for " + aligned_to(size, alignment));
}
void* heap::allocate(std::size_t size, std::size_t alignment, std::nothrow_t) noexcept {
  return impl_ && valid_alignment(alignment) ? impl_->allocate_aligned(size, alignment) : nullptr;
}
void* heap::allocate(std::size_t size, std::size_t alignment, std::error_code& ec) noexcept {
  if (impl_ && valid_alignment(alignment)) [[likely]] {
    if (void* p = impl_->allocate_aligned(size, alignment)) [[likely]] {
      ec.clear();
      return p;
    }
  }
  return into_error_code(ec, [&] { return allocate(size, alignment); });
}
reservation heap::reserve(std::size_t size, std::size_t alignment) {
  detail::heap_impl& h = live();
  if (!valid_alignment(alignment)) refuse_alignment("reserve", alignment);
  if (reservation r = h.reserve_aligned(size, alignment)) return r;
  h.refuse_if_read_only("reserve");
  throw error(errc::out_of_space, "reserve: no room for " + aligned_to(size, alignment));
}
reservation heap::reserve(std::size_t size, std::size_t alignment, std::nothrow_t) noexcept {
  return impl_ && valid_alignment(alignment) ? impl_->reserve_aligned(size, alignment)
                                             : reservation{};
}
reservation heap::reserve(std::size_t size, std::size_t alignment, std::error_code& ec) noexcept {
  if (impl_ && valid_alignment(alignment)) [[likely]] {
    if (reservation r = impl_->reserve_aligned(size, alignment)) [[likely]] {
      ec.clear();
      return r;
    }
  }
  return into_error_code(ec, [&] { return reserve(size, alignment); });
}

void heap::deallocate(void* p) {
  live().deallocate(p);
}
void heap::deallocate(void* p, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { deallocate(p); });
}
reservation heap::reserve(std::size_t size, std::nothrow_t) noexcept {
  return impl_ ? impl_->reserve(size) : reservation{};
}
reservation heap::reserve(std::size_t size) {
  reservation r = live().reserve(size);
  if (r) return r;
  impl_->refuse_if_read_only("reserve");
  throw error(errc::out_of_space, "reserve: no room for " + std::to_string(size) + " bytes");
}
reservation heap::reserve(std::size_t size, std::error_code& ec) noexcept {
  if (impl_) [[likely]] {
    if (reservation r = impl_->reserve(size)) [[likely]] {
      ec.clear();
      return r;
    }
  }
  return into_error_code(ec, [&] { return reserve(size); });
}
void heap::cancel(reservation& r) {
  if (impl_ && (!r || impl_->cancel_owned(r))) [[likely]]
    return;
  (void)live();  // throws for an empty handle
  throw error(errc::invalid_argument,
              "cancel: the reservation of " + std::to_string(r.size) + " bytes at " +
                  std::to_string(reinterpret_cast<std::uintptr_t>(r.ptr)) +
                  " is not one this heap handed out (another heap's, or cancelled already)");
}
void heap::cancel(void* p) {
  if (impl_) [[likely]]
    return impl_->cancel(p);
  (void)live();  // throws
}
void heap::cancel(void* p, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { cancel(p); });
}
void* heap::root(std::size_t size) {
  return live().root(size);
}
void* heap::root(std::size_t size, std::error_code& ec) noexcept {
  return into_error_code(ec, [&] { return root(size); });
}

// ---- hotplug ----

void heap::hot_add(std::uint64_t offset, std::uint64_t length) {
  live().hot_add(offset, length);
}
void heap::hot_add(std::uint64_t offset, std::uint64_t length, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { hot_add(offset, length); });
}
void heap::hot_remove(std::uint64_t offset, std::uint64_t length) {
  live().hot_remove(offset, length);
}
void heap::hot_remove(std::uint64_t offset, std::uint64_t length, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { hot_remove(offset, length); });
}

// ---- inspection ----

heap_stats heap::stats() const {
  return live().stats();
}
open_outcome heap::outcome() const {
  const heap_impl& h = live();
  return h.created()            ? open_outcome::created
         : !h.repairs().empty() ? open_outcome::repaired
         : h.unclean_shutdown() ? open_outcome::recovered
                                : open_outcome::clean;
}
const std::vector<std::string>& heap::repairs() const {
  return live().repairs();
}
const char* to_string(bad_block_location location) noexcept {
  switch (location) {
    case bad_block_location::memory:
      return "memory";
    case bad_block_location::head:
      return "head";
    case bad_block_location::memmap:
      return "memmap";
    case bad_block_location::not_present:
      return "not_present";
  }
  return "unknown";
}
const std::vector<bad_block>& heap::bad_blocks() const {
  return live().bad_blocks();
}
bool heap::unsafe_shutdown() const {
  return live().unsafe_shutdown();
}
unsafe_shutdown_detection heap::shutdown_detection() const {
  const media::device_state& m = live().media_state();
  return {m.shutdown_count_supported, m.device_id, m.unsafe_shutdowns, m.note};
}
bool heap::read_only() const {
  return live().read_only();
}
const recovery_plan& heap::pending_recovery() const {
  return live().recovery_plan();
}
const char* to_string(open_outcome outcome) noexcept {
  switch (outcome) {
    case open_outcome::clean:
      return "clean";
    case open_outcome::recovered:
      return "recovered";
    case open_outcome::repaired:
      return "repaired";
    case open_outcome::created:
      return "created";
  }
  return "?";
}
std::vector<std::string> heap::check() const {
  return live().check();
}
std::byte* heap::base() const {
  return live().model().base();
}
std::size_t heap::size() const {
  return live().model().media().size();
}
std::uint64_t heap::offset_of(const void* p) const {
  return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base());
}
void* heap::at(std::uint64_t offset) const {
  return base() + offset;
}
namespace {
// What read_guarded copies: the bytes before the first unreadable one.
std::size_t guarded_copy(const detail::heap_impl& h, void* dst, const void* src, std::size_t n) {
  const sparse::memory_model& m = h.model();
  const auto from = reinterpret_cast<std::uintptr_t>(src);
  const auto base = reinterpret_cast<std::uintptr_t>(m.base());
  if (from < base || !m.mapped(from - base, n))
    throw error(errc::invalid_argument, m.media().path().string() + ": read_guarded: [src, src+" +
                                            std::to_string(n) +
                                            ") is not inside the heap's mapping");
  const std::uint64_t offset = from - base;
  const auto failure = m.reader().copy(dst, m.base(), offset, n);
  return failure ? static_cast<std::size_t>(failure->offset - offset) : n;
}

[[noreturn]] void throw_unreadable(const detail::heap_impl& h, const void* src, std::size_t done) {
  const sparse::memory_model& m = h.model();
  const auto offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(src) - m.base());
  // (Listed or faulted: the reader says which.)
  const auto failure = m.reader().probe(m.base(), offset + done, 1);
  throw error(errc::media_error,
              m.media().path().string() + ": read_guarded: " +
                  (failure ? media::describe(*failure)
                           : "media error at offset " + sparse::hex(offset + done)) +
                  " (" + std::to_string(done) + " bytes copied)");
}
}  // namespace

void heap::read_guarded(void* dst, const void* src, std::size_t n) const {
  const heap_impl& h = live();
  if (const std::size_t done = guarded_copy(h, dst, src, n); done != n)
    throw_unreadable(h, src, done);
}

std::size_t heap::read_guarded(void* dst, const void* src, std::size_t n,
                               std::error_code& ec) const noexcept {
  std::size_t done = 0;
  into_error_code(ec, [&] {
    const heap_impl& h = live();
    done = guarded_copy(h, dst, src, n);
    if (done != n) throw_unreadable(h, src, done);
  });
  return done;
}

std::size_t heap::usable_size(const void* p) const {
  return live().usable_size(p);
}
void heap::sync() {
  live().sync();
}
const persistence& heap::persist() const {
  return live().model().media().persist();
}
const region& heap::media() const {
  return live().model().media();
}

// ---- batches ----

void* batch::reserve(std::size_t size, std::error_code& ec) noexcept {
  return into_error_code(ec, [&] { return reserve(size); });
}
void batch::set(std::uint64_t* where, std::uint64_t value, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { set(where, value); });
}
void batch::write(void* dst, const void* src, std::size_t n, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { write(dst, src, n); });
}
void batch::adopt(reservation&& r, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { adopt(std::move(r)); });
}
void batch::defer_free(void* p, std::error_code& ec) noexcept {
  into_error_code(ec, [&] { defer_free(p); });
}
void batch::publish(std::error_code& ec) noexcept {
  into_error_code(ec, [&] { publish(); });
}

}  // namespace daxalloc
