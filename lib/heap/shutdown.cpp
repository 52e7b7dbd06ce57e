// Unsafe-shutdown detection, as PMDK's shutdown_state: every read-write open
// records the identity and the unsafe-shutdown count of the DIMMs behind the
// region (sparse::shutdown_record, in the slot page); an open that finds the
// heap not closed cleanly and the DIMMs' identity or count changed since
// refuses it (errc::unsafe_shutdown): the DIMMs lost power without draining
// their write-pending queues, so stores that a flush and fence had made
// durable may be missing, and the redo lanes and marker cannot tell.
#include <cstring>
#include <string>

#include "heap/heap_impl.hpp"

namespace daxalloc::detail {
namespace {

// Fletcher-64 of the id's length and its bytes, padded with zeros to a
// multiple of 4 (fletcher64 sums whole 32-bit words only).
std::uint64_t id_checksum(const std::string& id) {
  std::string bytes(8 + (id.size() + 3) / 4 * 4, '\0');
  const std::uint64_t length = id.size();
  std::memcpy(bytes.data(), &length, 8);
  std::memcpy(bytes.data() + 8, id.data(), id.size());
  return sparse::fletcher64(bytes.data(), bytes.size());
}

bool record_zero(const sparse::shutdown_record& r) {
  return r.unsafe_shutdowns == 0 && r.id_checksum == 0 && r.flags == 0 && r.checksum == 0;
}

bool record_valid(const sparse::shutdown_record& r) {
  return r.flags == sparse::shutdown_recorded &&
         r.checksum == sparse::fletcher64(&r, offsetof(sparse::shutdown_record, checksum));
}

bool record_equal(const sparse::shutdown_record& a, const sparse::shutdown_record& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

sparse::shutdown_record shutdown_record_of(const media::device_state& state) {
  sparse::shutdown_record r{};
  if (!state.shutdown_count_supported) return r;
  r.unsafe_shutdowns = state.unsafe_shutdowns;
  r.id_checksum = id_checksum(state.device_id);
  r.flags = sparse::shutdown_recorded;
  r.checksum = sparse::fletcher64(&r, offsetof(sparse::shutdown_record, checksum));
  return r;
}

sparse::shutdown_record* heap_impl::shutdown_record_on_media() const noexcept {
  return reinterpret_cast<sparse::shutdown_record*>(model_->base() + model_->geo().slots_offset() +
                                                    sparse::shutdown_record_in_page);
}

// PMDK's rule: dirty (not closed cleanly) and the DIMMs' id or count changed.
// A zero record (a heap made before the record existed, or last opened on
// media without counts) and a device without counts give nothing to compare.
heap_impl::shutdown_verdict heap_impl::inspect_shutdown_record(
    const std::string& path, const sparse::superblock& sb, const sparse::shutdown_record& record,
    const media::device_state& now, bool accept) {
  shutdown_verdict v;
  if (record_zero(record)) return v;
  if (!record_valid(record)) {
    v.damaged_record = true;
    return v;
  }
  if (sb.shutdown_state == sparse::shutdown_clean || !now.shutdown_count_supported) return v;
  const bool replaced = record.id_checksum != id_checksum(now.device_id);
  if (!replaced && record.unsafe_shutdowns == now.unsafe_shutdowns) return v;
  if (accept) {
    v.unsafe = true;
    return v;
  }
  throw error(
      errc::unsafe_shutdown,
      path + ": unsafe shutdown: the heap was not closed cleanly, and " +
          (replaced ? "the DIMMs behind it are not those it was open on (they were replaced, or "
                      "the heap was moved; now: " +
                          now.device_id + ")"
                    : "the DIMMs behind it lost power without draining their write buffers "
                      "while it was open (their unsafe-shutdown count was " +
                          std::to_string(record.unsafe_shutdowns) + " at its last open, it is " +
                          std::to_string(now.unsafe_shutdowns) + " now)") +
          "; stores that were flushed but still in the memory controller's write-pending "
          "queues (or, on eADR platforms, in the CPU caches) may be lost, in the data and in "
          "the heap's metadata, which recovery cannot tell. To proceed with a full check after "
          "recovery: heap_open_options::accept_unsafe_shutdown (C: "
          "daxalloc_open_options_t.accept_unsafe_shutdown; daxalloc tool: "
          "--accept-unsafe-shutdown)");
}

// After recovery, before the heap is marked open: a crash after the record
// is written leaves the heap unclean with the record of this open's devices,
// which the next open recovers without a refusal (this open's check passed);
// a crash before it leaves the old record, and the refusal stands.
void heap_impl::finish_shutdown_record() {
  if (shutdown_.unsafe) {
    const std::vector<std::string> problems = check();
    if (!problems.empty())
      throw error(
          errc::corrupt,
          model_->media().path().string() +
              ": after the unsafe shutdown, the check found: " + problems.front() +
              (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more)"
                                   : "") +
              (repair_ ? "" : "; open with repair to quarantine damaged pageblocks"));
  }
  const std::string damaged =
      "the damaged unsafe-shutdown record in the slot page (its checksum does not match; "
      "ignored, so this open could not detect an unsafe shutdown)";
  if (read_only()) {
    if (shutdown_.damaged_record) plan_.steps.push_back("rewrite " + damaged);
    return;
  }
  const sparse::shutdown_record now = shutdown_record_of(media_);
  sparse::shutdown_record* on_media = shutdown_record_on_media();
  if (record_equal(*on_media, now)) return;
  model_->media().persist().memcpy_persist(on_media, &now, sizeof now);
  if (shutdown_.damaged_record) repairs_.push_back("rewrote " + damaged);
}

}  // namespace daxalloc::detail
