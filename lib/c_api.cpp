// The C ABI (include/daxalloc/daxalloc.h) on the public C++ API alone: each
// function runs its body under guarded(), which turns every exception into a
// code and the calling thread's message, so none crosses into C. Results go
// to local variables first and reach the out-parameters only on success.
#include "daxalloc/daxalloc.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "daxalloc/batch.hpp"
#include "daxalloc/error.hpp"
#include "daxalloc/heap.hpp"
#include "daxalloc/version.hpp"

// The handles: the C++ objects, behind the opaque names of the header.
struct daxalloc_heap {
  daxalloc::heap heap;
};
struct daxalloc_batch {
  explicit daxalloc_batch(daxalloc::heap& h) : batch(h) {}
  daxalloc::batch batch;
};

namespace {

using daxalloc::errc;
using daxalloc::error;

// The codes are daxalloc::errc's values: a change there is an ABI change here.
static_assert(DAXALLOC_MAX_WRITE_BYTES == daxalloc::batch::max_write_bytes);
static_assert(DAXALLOC_E_INVALID_ARGUMENT == static_cast<int>(errc::invalid_argument));
static_assert(DAXALLOC_E_NOT_FOUND == static_cast<int>(errc::not_found));
static_assert(DAXALLOC_E_PERMISSION_DENIED == static_cast<int>(errc::permission_denied));
static_assert(DAXALLOC_E_IS_DIRECTORY == static_cast<int>(errc::is_directory));
static_assert(DAXALLOC_E_NOT_DAX == static_cast<int>(errc::not_dax));
static_assert(DAXALLOC_E_MAP_SYNC_UNSUPPORTED == static_cast<int>(errc::map_sync_unsupported));
static_assert(DAXALLOC_E_MISALIGNED == static_cast<int>(errc::misaligned));
static_assert(DAXALLOC_E_TOO_SMALL == static_cast<int>(errc::too_small));
static_assert(DAXALLOC_E_TOO_LARGE == static_cast<int>(errc::too_large));
static_assert(DAXALLOC_E_ALREADY_EXISTS == static_cast<int>(errc::already_exists));
static_assert(DAXALLOC_E_BUSY == static_cast<int>(errc::busy));
static_assert(DAXALLOC_E_NOT_PRESENT == static_cast<int>(errc::not_present));
static_assert(DAXALLOC_E_IN_USE == static_cast<int>(errc::in_use));
static_assert(DAXALLOC_E_OUT_OF_SPACE == static_cast<int>(errc::out_of_space));
static_assert(DAXALLOC_E_CORRUPT == static_cast<int>(errc::corrupt));
static_assert(DAXALLOC_E_NEWER_FORMAT == static_cast<int>(errc::newer_format));
static_assert(DAXALLOC_E_GEOMETRY_MISMATCH == static_cast<int>(errc::geometry_mismatch));
static_assert(DAXALLOC_E_IO_ERROR == static_cast<int>(errc::io_error));
static_assert(DAXALLOC_E_UNSUPPORTED == static_cast<int>(errc::unsupported));
static_assert(DAXALLOC_E_OLDER_FORMAT == static_cast<int>(errc::older_format));
static_assert(DAXALLOC_E_READ_ONLY == static_cast<int>(errc::read_only));
static_assert(DAXALLOC_E_MEDIA_ERROR == static_cast<int>(errc::media_error));
static_assert(
    DAXALLOC_BAD_BLOCK_IN_MEMORY == static_cast<int>(daxalloc::bad_block_location::memory) &&
    DAXALLOC_BAD_BLOCK_IN_HEAD == static_cast<int>(daxalloc::bad_block_location::head) &&
    DAXALLOC_BAD_BLOCK_IN_MEMMAP == static_cast<int>(daxalloc::bad_block_location::memmap) &&
    DAXALLOC_BAD_BLOCK_NOT_PRESENT == static_cast<int>(daxalloc::bad_block_location::not_present));
static_assert(DAXALLOC_E_UNSAFE_SHUTDOWN == static_cast<int>(errc::unsafe_shutdown));

static_assert(DAXALLOC_PERSIST_AUTOMATIC ==
              static_cast<int>(daxalloc::persistence_mode::automatic));
static_assert(DAXALLOC_PERSIST_CACHE_FLUSH ==
              static_cast<int>(daxalloc::persistence_mode::cache_flush));
static_assert(DAXALLOC_PERSIST_MSYNC == static_cast<int>(daxalloc::persistence_mode::msync));
static_assert(DAXALLOC_PERSIST_NONE == static_cast<int>(daxalloc::persistence_mode::none));
static_assert(sizeof(std::uint64_t) == 8 && alignof(std::uint64_t) <= 8);

thread_local std::string last_message;

// Records the message of a failure; keeps the older one if even that fails.
int fail(int code, const char* function, const char* what, const char* detail = "") noexcept {
  try {
    last_message = std::string(function) + what + detail;
  } catch (...) {  // out of memory for the message: the code still says what failed
  }
  return code;
}

// Runs body, and answers every exception with its code and message: no
// exception crosses the C ABI. A daxalloc::error carries both; running out of
// process memory is out_of_space; anything else is a bug of the library that
// must still not unwind into C (DAXALLOC_E_UNEXPECTED, with its what()).
template <class Body>
int guarded(const char* function, Body&& body) noexcept {
  try {
    std::forward<Body>(body)();
    return DAXALLOC_OK;
  } catch (const error& e) {
    // An error that claims success would read as one in C.
    const int code = static_cast<int>(e.code_value());
    return fail(code != DAXALLOC_OK ? code : DAXALLOC_E_UNEXPECTED, "", e.what());
  } catch (const std::bad_alloc&) {
    return fail(DAXALLOC_E_OUT_OF_SPACE, function, ": out of process memory");
  } catch (const std::system_error& e) {
    return fail(DAXALLOC_E_IO_ERROR, function, ": ", e.what());
  } catch (const std::exception& e) {
    return fail(DAXALLOC_E_UNEXPECTED, function, ": unexpected exception: ", e.what());
  } catch (...) {
    return fail(DAXALLOC_E_UNEXPECTED, function, ": unexpected exception of an unknown type");
  }
}

// Caller mistakes the C++ API cannot see (a NULL handle or out-parameter).
void require(bool condition, const char* function, const char* what) {
  if (!condition) throw error(errc::invalid_argument, std::string(function) + ": " + what);
}

daxalloc::persistence_mode mode_of(daxalloc_persistence_mode_t mode, const char* function) {
  require(mode >= DAXALLOC_PERSIST_AUTOMATIC && mode <= DAXALLOC_PERSIST_NONE, function,
          "persistence mode out of range");
  return static_cast<daxalloc::persistence_mode>(mode);
}

daxalloc::heap_options create_options_of(const daxalloc_create_options_t* c, const char* function) {
  require(c != nullptr, function, "create options are NULL (the size is needed)");
  daxalloc::heap_options o;
  o.size = c->size;
  o.max_size = c->max_size;
  if (c->section_size_bits != 0) o.section_size_bits = c->section_size_bits;
  o.mode = mode_of(c->mode, function);
  o.overwrite = c->overwrite != 0;
  return o;
}

daxalloc::heap_open_options open_options_of(const daxalloc_open_options_t* c,
                                            const char* function) {
  daxalloc::heap_open_options o;
  if (c == nullptr) return o;
  o.section_size_bits = c->section_size_bits;
  o.mode = mode_of(c->mode, function);
  o.repair = c->repair != 0;
  o.wait_for_lock = c->wait_for_lock != 0;
  o.accept_unsafe_shutdown = c->accept_unsafe_shutdown != 0;
  return o;
}

daxalloc::durability durability_of(daxalloc_durability_t d, const char* function) {
  require(d == DAXALLOC_IMMEDIATE || d == DAXALLOC_DEFERRED, function,
          "durability is neither DAXALLOC_IMMEDIATE nor DAXALLOC_DEFERRED");
  return d == DAXALLOC_DEFERRED ? daxalloc::durability::deferred : daxalloc::durability::immediate;
}

// A new handle around an opened heap; `out` is set last (nothing leaks if
// the allocation of the handle fails: the heap closes with `opened`).
void hand_out(daxalloc::heap&& opened, daxalloc_heap_t** out) {
  auto handle = std::make_unique<daxalloc_heap>();
  handle->heap = std::move(opened);
  *out = handle.release();
}

// Where p lies in the mapping; invalid_argument outside it.
std::uint64_t offset_in(const daxalloc::heap& h, const void* p, const char* function) {
  const auto* at = static_cast<const std::byte*>(p);
  require(at >= h.base() && at < h.base() + h.size(), function, "pointer outside the heap");
  return static_cast<std::uint64_t>(at - h.base());
}

// The object at a slot's offset (nullptr for 0); invalid_argument outside the mapping.
void* object_at(const daxalloc::heap& h, std::uint64_t offset, const char* function) {
  if (offset == 0) return nullptr;
  if (offset >= h.size())
    throw error(errc::invalid_argument, std::string(function) + ": offset " +
                                            std::to_string(offset) + " outside the heap (" +
                                            std::to_string(h.size()) + " bytes)");
  return h.at(offset);
}

void check_slot(const daxalloc::heap& h, const std::uint64_t* slot, const char* function) {
  require(slot != nullptr, function, "slot is NULL");
  (void)offset_in(h, slot, function);
  require(reinterpret_cast<std::uintptr_t>(slot) % 8 == 0, function, "slot is not 8-byte aligned");
}

}  // namespace

// ---- iteration and introspection: the C forms of the infos ----

namespace {
static_assert(DAXALLOC_OBJECT_SMALL == static_cast<int>(daxalloc::object_kind::small));
static_assert(DAXALLOC_OBJECT_EXTENT == static_cast<int>(daxalloc::object_kind::extent));
static_assert(DAXALLOC_OBJECT_ROOT == static_cast<int>(daxalloc::object_kind::root));
static_assert(DAXALLOC_OBJECT_NAMED == static_cast<int>(daxalloc::object_kind::named));
static_assert(DAXALLOC_OBJECT_NAME_INDEX == static_cast<int>(daxalloc::object_kind::name_index));
static_assert(DAXALLOC_MIGRATE_UNMOVABLE == static_cast<int>(daxalloc::migratetype::unmovable));
static_assert(DAXALLOC_MIGRATE_MOVABLE == static_cast<int>(daxalloc::migratetype::movable));
static_assert(DAXALLOC_MIGRATE_LARGE == static_cast<int>(daxalloc::migratetype::large));
static_assert(DAXALLOC_MIGRATE_METADATA == static_cast<int>(daxalloc::migratetype::metadata));
static_assert(DAXALLOC_MIGRATE_ISOLATE == static_cast<int>(daxalloc::migratetype::isolate));

daxalloc_object_info_t c_info(const daxalloc::object_info& o) {
  return {o.offset, o.size, static_cast<daxalloc_object_kind_t>(o.kind), o.in_slab ? 1 : 0,
          o.movable ? 1 : 0};
}
daxalloc_section_info_t c_info(const daxalloc::section_info& s) {
  return {s.number,      s.offset,        s.size,           s.present_subsections,
          s.subsections, s.memmap_offset, s.online ? 1 : 0, s.partial ? 1 : 0};
}
daxalloc_pageblock_info_t c_info(const daxalloc::pageblock_info& p) {
  return {p.offset,       p.section, p.present ? 1 : 0, static_cast<daxalloc_migratetype_t>(p.type),
          p.skip ? 1 : 0, p.pages,   p.allocated_pages};
}

// heap.for_each_X(fn) with a C callback: a nonzero return stops it.
template <class CInfo, class Iterate>
int for_each(const char* function, const daxalloc_heap_t* heap,
             int (*fn)(const CInfo* info, void* arg), void* arg, Iterate&& iterate) {
  return guarded(function, [&] {
    require(heap != nullptr && fn != nullptr, function, "heap or fn is NULL");
    iterate(heap->heap, [&](const auto& info) {
      const CInfo c = c_info(info);
      return fn(&c, arg) == 0;
    });
  });
}
}  // namespace

extern "C" {

// ---- errors ----

const char* daxalloc_errormsg(void) {
  return last_message.c_str();
}

const char* daxalloc_strerror(int code) {
  if (code == DAXALLOC_OK) return "ok";
  if (code == DAXALLOC_E_UNEXPECTED) return "unexpected";
  return daxalloc::to_string(static_cast<errc>(code));
}

const char* daxalloc_version(void) {
  return DAXALLOC_VERSION_STRING;
}

// ---- opening and closing ----

int daxalloc_create(const char* path, const daxalloc_create_options_t* options,
                    daxalloc_heap_t** heap) {
  constexpr const char* fn = "daxalloc_create";
  return guarded(fn, [&] {
    require(path != nullptr && heap != nullptr, fn, "path or heap is NULL");
    hand_out(daxalloc::heap::create(path, create_options_of(options, fn)), heap);
  });
}

int daxalloc_open(const char* path, const daxalloc_open_options_t* options,
                  daxalloc_heap_t** heap) {
  constexpr const char* fn = "daxalloc_open";
  return guarded(fn, [&] {
    require(path != nullptr && heap != nullptr, fn, "path or heap is NULL");
    hand_out(daxalloc::heap::open(path, open_options_of(options, fn)), heap);
  });
}

int daxalloc_open_read_only(const char* path, const daxalloc_open_options_t* options,
                            daxalloc_heap_t** heap) {
  constexpr const char* fn = "daxalloc_open_read_only";
  return guarded(fn, [&] {
    require(path != nullptr && heap != nullptr, fn, "path or heap is NULL");
    hand_out(daxalloc::heap::open_read_only(path, open_options_of(options, fn)), heap);
  });
}

int daxalloc_open_or_create(const char* path, const daxalloc_create_options_t* create_options,
                            const daxalloc_open_options_t* open_options, daxalloc_heap_t** heap,
                            int* created) {
  constexpr const char* fn = "daxalloc_open_or_create";
  return guarded(fn, [&] {
    require(path != nullptr && heap != nullptr, fn, "path or heap is NULL");
    daxalloc::heap h = daxalloc::heap::open_or_create(path, create_options_of(create_options, fn),
                                                      open_options_of(open_options, fn));
    const bool made = h.outcome() == daxalloc::open_outcome::created;
    hand_out(std::move(h), heap);
    if (created != nullptr) *created = made ? 1 : 0;
  });
}

int daxalloc_close(daxalloc_heap_t* heap) {
  constexpr const char* fn = "daxalloc_close";
  std::unique_ptr<daxalloc_heap> owned(heap);  // freed whatever close() does
  return guarded(fn, [&] {
    if (owned) owned->heap.close();
  });
}

int daxalloc_outcome(const daxalloc_heap_t* heap, daxalloc_open_outcome_t* outcome) {
  constexpr const char* fn = "daxalloc_outcome";
  return guarded(fn, [&] {
    require(heap != nullptr && outcome != nullptr, fn, "heap or outcome is NULL");
    switch (heap->heap.outcome()) {
      case daxalloc::open_outcome::clean:
        *outcome = DAXALLOC_OPENED_CLEAN;
        break;
      case daxalloc::open_outcome::recovered:
        *outcome = DAXALLOC_OPENED_RECOVERED;
        break;
      case daxalloc::open_outcome::repaired:
        *outcome = DAXALLOC_OPENED_REPAIRED;
        break;
      case daxalloc::open_outcome::created:
        *outcome = DAXALLOC_OPENED_CREATED;
        break;
    }
  });
}

int daxalloc_is_read_only(const daxalloc_heap_t* heap, int* read_only) {
  constexpr const char* fn = "daxalloc_is_read_only";
  return guarded(fn, [&] {
    require(heap != nullptr && read_only != nullptr, fn, "heap or read_only is NULL");
    *read_only = heap->heap.read_only() ? 1 : 0;
  });
}

int daxalloc_unsafe_shutdown(const daxalloc_heap_t* heap, int* unsafe) {
  constexpr const char* fn = "daxalloc_unsafe_shutdown";
  return guarded(fn, [&] {
    require(heap != nullptr && unsafe != nullptr, fn, "heap or unsafe is NULL");
    *unsafe = heap->heap.unsafe_shutdown() ? 1 : 0;
  });
}

// ---- the mapping ----

int daxalloc_base(const daxalloc_heap_t* heap, void** base) {
  constexpr const char* fn = "daxalloc_base";
  return guarded(fn, [&] {
    require(heap != nullptr && base != nullptr, fn, "heap or base is NULL");
    *base = heap->heap.base();
  });
}

int daxalloc_size(const daxalloc_heap_t* heap, size_t* size) {
  constexpr const char* fn = "daxalloc_size";
  return guarded(fn, [&] {
    require(heap != nullptr && size != nullptr, fn, "heap or size is NULL");
    *size = heap->heap.size();
  });
}

int daxalloc_offset_of(const daxalloc_heap_t* heap, const void* pointer, uint64_t* offset) {
  constexpr const char* fn = "daxalloc_offset_of";
  return guarded(fn, [&] {
    require(heap != nullptr && offset != nullptr, fn, "heap or offset is NULL");
    *offset = offset_in(heap->heap, pointer, fn);
  });
}

int daxalloc_at(const daxalloc_heap_t* heap, uint64_t offset, void** pointer) {
  constexpr const char* fn = "daxalloc_at";
  return guarded(fn, [&] {
    require(heap != nullptr && pointer != nullptr, fn, "heap or pointer is NULL");
    *pointer = object_at(heap->heap, offset, fn);
  });
}

int daxalloc_slot_load(const daxalloc_heap_t* heap, const uint64_t* slot, void** object) {
  constexpr const char* fn = "daxalloc_slot_load";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    check_slot(heap->heap, slot, fn);
    *object = object_at(heap->heap, *slot, fn);
  });
}

int daxalloc_usable_size(const daxalloc_heap_t* heap, const void* pointer, size_t* size) {
  constexpr const char* fn = "daxalloc_usable_size";
  return guarded(fn, [&] {
    require(heap != nullptr && size != nullptr, fn, "heap or size is NULL");
    *size = heap->heap.usable_size(pointer);
  });
}

// ---- durable allocation ----

int daxalloc_allocate(daxalloc_heap_t* heap, size_t size, void** object) {
  constexpr const char* fn = "daxalloc_allocate";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    *object = heap->heap.allocate(size);
  });
}

int daxalloc_deallocate(daxalloc_heap_t* heap, void* object) {
  constexpr const char* fn = "daxalloc_deallocate";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.deallocate(object);
  });
}

int daxalloc_pin(daxalloc_heap_t* heap, const void* object, uint32_t* count) {
  constexpr const char* fn = "daxalloc_pin";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    auto guard = heap->heap.pin(static_cast<const char*>(object));
    (void)guard.release();
    if (count != nullptr) *count = heap->heap.pin_count(object);
  });
}

int daxalloc_unpin(daxalloc_heap_t* heap, const void* object) {
  constexpr const char* fn = "daxalloc_unpin";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.unpin(object);
  });
}

int daxalloc_allocate_aligned(daxalloc_heap_t* heap, size_t size, size_t alignment, void** object) {
  constexpr const char* fn = "daxalloc_allocate_aligned";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    *object = heap->heap.allocate(size, alignment);
  });
}

// ---- volatile reservations ----

int daxalloc_reserve(daxalloc_heap_t* heap, size_t size, void** object) {
  constexpr const char* fn = "daxalloc_reserve";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    daxalloc::reservation r = heap->heap.reserve(size);
    *object = r.ptr;
  });
}

int daxalloc_cancel(daxalloc_heap_t* heap, void* object) {
  constexpr const char* fn = "daxalloc_cancel";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    heap->heap.cancel(object);
  });
}

int daxalloc_reserve_aligned(daxalloc_heap_t* heap, size_t size, size_t alignment, void** object,
                             size_t* reserved) {
  constexpr const char* fn = "daxalloc_reserve_aligned";
  return guarded(fn, [&] {
    require(heap != nullptr && object != nullptr, fn, "heap or object is NULL");
    daxalloc::reservation r = heap->heap.reserve(size, alignment);
    *object = r.ptr;
    if (reserved != nullptr) *reserved = r.size;
  });
}

// ---- batches ----

int daxalloc_batch_new(daxalloc_heap_t* heap, daxalloc_batch_t** batch) {
  constexpr const char* fn = "daxalloc_batch_new";
  return guarded(fn, [&] {
    require(heap != nullptr && batch != nullptr, fn, "heap or batch is NULL");
    *batch = new daxalloc_batch(heap->heap);
  });
}

int daxalloc_batch_reserve(daxalloc_batch_t* batch, size_t size, void** object) {
  constexpr const char* fn = "daxalloc_batch_reserve";
  return guarded(fn, [&] {
    require(batch != nullptr && object != nullptr, fn, "batch or object is NULL");
    *object = batch->batch.reserve(size);
  });
}

int daxalloc_batch_reserve_copy(daxalloc_batch_t* batch, const void* src, size_t size,
                                void** object) {
  constexpr const char* fn = "daxalloc_batch_reserve_copy";
  return guarded(fn, [&] {
    require(batch != nullptr && object != nullptr, fn, "batch or object is NULL");
    require(src != nullptr || size == 0, fn, "src is NULL");
    *object = batch->batch.reserve_copy(src, size);
  });
}

int daxalloc_batch_adopt(daxalloc_batch_t* batch, void* object, size_t size) {
  constexpr const char* fn = "daxalloc_batch_adopt";
  return guarded(fn, [&] {
    require(batch != nullptr, fn, "batch is NULL");
    batch->batch.adopt(daxalloc::reservation(object, size));
  });
}

int daxalloc_batch_set(daxalloc_batch_t* batch, uint64_t* where, uint64_t value) {
  constexpr const char* fn = "daxalloc_batch_set";
  return guarded(fn, [&] {
    require(batch != nullptr && where != nullptr, fn, "batch or where is NULL");
    batch->batch.set(where, value);
  });
}

int daxalloc_batch_write(daxalloc_batch_t* batch, void* dst, const void* src, size_t n) {
  constexpr const char* fn = "daxalloc_batch_write";
  return guarded(fn, [&] {
    require(batch != nullptr && dst != nullptr && src != nullptr, fn, "batch, dst or src is NULL");
    batch->batch.write(dst, src, n);
  });
}

int daxalloc_batch_defer_free(daxalloc_batch_t* batch, void* object) {
  constexpr const char* fn = "daxalloc_batch_defer_free";
  return guarded(fn, [&] {
    require(batch != nullptr, fn, "batch is NULL");
    batch->batch.defer_free(object);
  });
}

int daxalloc_batch_publish(daxalloc_batch_t* batch, daxalloc_durability_t durability) {
  constexpr const char* fn = "daxalloc_batch_publish";
  return guarded(fn, [&] {
    require(batch != nullptr, fn, "batch is NULL");
    batch->batch.publish(durability_of(durability, fn));
  });
}

int daxalloc_batch_cancel(daxalloc_batch_t* batch) {
  constexpr const char* fn = "daxalloc_batch_cancel";
  return guarded(fn, [&] {
    require(batch != nullptr, fn, "batch is NULL");
    batch->batch.cancel();
  });
}

int daxalloc_batch_size(const daxalloc_batch_t* batch, size_t* actions) {
  constexpr const char* fn = "daxalloc_batch_size";
  return guarded(fn, [&] {
    require(batch != nullptr && actions != nullptr, fn, "batch or actions is NULL");
    *actions = batch->batch.size();
  });
}

void daxalloc_batch_free(daxalloc_batch_t* batch) {
  delete batch;  // ~batch cancels; it throws nothing
}

// ---- publication into slots ----

int daxalloc_allocate_publish(daxalloc_heap_t* heap, uint64_t* slot, size_t size,
                              void (*init)(void* object, void* arg), void* arg,
                              daxalloc_durability_t durability, void** object) {
  constexpr const char* fn = "daxalloc_allocate_publish";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    const daxalloc::durability d = durability_of(durability, fn);
    check_slot(heap->heap, slot, fn);
    daxalloc::batch b(heap->heap);  // cancels its reservation if anything below throws
    void* made = b.reserve(size);
    if (init != nullptr)
      init(made, arg);
    else
      std::memset(made, 0, size);
    b.set(slot, heap->heap.offset_of(made));
    b.publish(d);
    if (object != nullptr) *object = made;
  });
}

int daxalloc_allocate_publish_copy(daxalloc_heap_t* heap, uint64_t* slot, const void* src,
                                   size_t size, daxalloc_durability_t durability, void** object) {
  constexpr const char* fn = "daxalloc_allocate_publish_copy";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    require(src != nullptr || size == 0, fn, "src is NULL");
    const daxalloc::durability d = durability_of(durability, fn);
    check_slot(heap->heap, slot, fn);
    daxalloc::batch b(heap->heap);
    void* made = b.reserve_copy(src, size);
    b.set(slot, heap->heap.offset_of(made));
    b.publish(d);
    if (object != nullptr) *object = made;
  });
}

int daxalloc_free_clear(daxalloc_heap_t* heap, uint64_t* slot, daxalloc_durability_t durability) {
  constexpr const char* fn = "daxalloc_free_clear";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    const daxalloc::durability d = durability_of(durability, fn);
    check_slot(heap->heap, slot, fn);
    daxalloc::batch b(heap->heap);  // first: a read-only heap refuses even an empty slot
    void* object = object_at(heap->heap, *slot, fn);
    if (object == nullptr) return;
    b.defer_free(object);
    b.set(slot, 0);
    b.publish(d);
  });
}

int daxalloc_sync(daxalloc_heap_t* heap) {
  constexpr const char* fn = "daxalloc_sync";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.sync();
  });
}

// ---- the root object ----

int daxalloc_root(daxalloc_heap_t* heap, size_t size, void** root) {
  constexpr const char* fn = "daxalloc_root";
  return guarded(fn, [&] {
    require(heap != nullptr && root != nullptr, fn, "heap or root is NULL");
    *root = heap->heap.root(size);
  });
}

// ---- making your own stores durable ----

int daxalloc_persist(const daxalloc_heap_t* heap, const void* address, size_t length) {
  constexpr const char* fn = "daxalloc_persist";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.persist().persist(address, length);
  });
}

int daxalloc_read_guarded(const daxalloc_heap_t* heap, void* destination, const void* source,
                          size_t length, size_t* copied) {
  constexpr const char* fn = "daxalloc_read_guarded";
  if (copied != nullptr) *copied = 0;
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    std::error_code ec;
    const std::size_t done = heap->heap.read_guarded(destination, source, length, ec);
    if (copied != nullptr) *copied = done;
    if (ec) throw error(static_cast<errc>(ec.value()), daxalloc::last_error_message());
  });
}

int daxalloc_flush(const daxalloc_heap_t* heap, const void* address, size_t length) {
  constexpr const char* fn = "daxalloc_flush";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.persist().flush(address, length);
  });
}

int daxalloc_drain(const daxalloc_heap_t* heap) {
  constexpr const char* fn = "daxalloc_drain";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.persist().drain();
  });
}

int daxalloc_memcpy_persist(const daxalloc_heap_t* heap, void* destination, const void* source,
                            size_t length) {
  constexpr const char* fn = "daxalloc_memcpy_persist";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    require((destination != nullptr && source != nullptr) || length == 0, fn,
            "destination or source is NULL");
    heap->heap.persist().memcpy_persist(destination, source, length);
  });
}

// ---- growth, statistics, checking ----

int daxalloc_hot_add(daxalloc_heap_t* heap, uint64_t offset, uint64_t length) {
  constexpr const char* fn = "daxalloc_hot_add";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.hot_add(offset, length);
  });
}

int daxalloc_hot_remove(daxalloc_heap_t* heap, uint64_t offset, uint64_t length) {
  constexpr const char* fn = "daxalloc_hot_remove";
  return guarded(fn, [&] {
    require(heap != nullptr, fn, "heap is NULL");
    heap->heap.hot_remove(offset, length);
  });
}

int daxalloc_alignment_waste(const daxalloc_heap_t* heap, uint64_t* bytes) {
  constexpr const char* fn = "daxalloc_alignment_waste";
  return guarded(fn, [&] {
    require(heap != nullptr && bytes != nullptr, fn, "heap or bytes is NULL");
    *bytes = heap->heap.stats().alignment_waste_bytes;
  });
}

int daxalloc_stats(const daxalloc_heap_t* heap, daxalloc_stats_t* stats) {
  constexpr const char* fn = "daxalloc_stats";
  return guarded(fn, [&] {
    require(heap != nullptr && stats != nullptr, fn, "heap or stats is NULL");
    const daxalloc::heap_stats s = heap->heap.stats();
    daxalloc_stats_t c{};
    c.present_bytes = s.present_bytes;
    c.usable_bytes = s.usable_bytes;
    c.metadata_bytes = s.metadata_bytes;
    c.allocated_bytes = s.allocated_bytes;
    c.allocated_objects = s.allocated_objects;
    c.free_bytes = s.free_bytes;
    c.largest_free_bytes = s.largest_free_bytes;
    c.fragmentation = s.fragmentation;
    c.slab_bytes = s.slab_bytes;
    c.extent_bytes = s.extent_bytes;
    static_assert(sizeof c.pageblocks_by_migratetype / sizeof c.pageblocks_by_migratetype[0] ==
                  std::tuple_size_v<decltype(s.pageblocks_by_migratetype)>);
    for (std::size_t i = 0; i < s.pageblocks_by_migratetype.size(); ++i)
      c.pageblocks_by_migratetype[i] = s.pageblocks_by_migratetype[i];
    c.thread_flushes = s.this_thread.flushes;
    c.thread_fences = s.this_thread.fences;
    c.thread_msyncs = s.this_thread.msyncs;
    c.thread_streamed = s.this_thread.streamed;
    c.unclean_shutdown = s.unclean_shutdown ? 1 : 0;
    *stats = c;
  });
}

int daxalloc_bad_blocks(const daxalloc_heap_t* heap, daxalloc_bad_block_t* blocks, size_t capacity,
                        size_t* count) {
  constexpr const char* fn = "daxalloc_bad_blocks";
  return guarded(fn, [&] {
    require(heap != nullptr && count != nullptr, fn, "heap or count is NULL");
    require(blocks != nullptr || capacity == 0, fn, "blocks is NULL");
    const auto& found = heap->heap.bad_blocks();
    *count = found.size();
    for (std::size_t i = 0; i < found.size() && i < capacity; ++i) {
      const daxalloc::bad_block& b = found[i];
      daxalloc_bad_block_t c{};
      c.offset = b.offset;
      c.length = b.length;
      c.location = static_cast<daxalloc_bad_block_location_t>(b.location);
      c.quarantined = b.quarantined ? 1 : 0;
      c.cleared = b.cleared ? 1 : 0;
      c.objects_unknown = b.objects_unknown ? 1 : 0;
      c.lost_objects = b.objects.size();
      c.first_lost = b.objects.empty() ? 0 : b.objects.front();
      blocks[i] = c;
    }
  });
}

int daxalloc_check(const daxalloc_heap_t* heap, size_t* problems, char* message,
                   size_t message_size) {
  constexpr const char* fn = "daxalloc_check";
  return guarded(fn, [&] {
    require(heap != nullptr && problems != nullptr, fn, "heap or problems is NULL");
    require(message != nullptr || message_size == 0, fn, "message is NULL");
    const std::vector<std::string> found = heap->heap.check();
    std::string text;
    for (const std::string& line : found) text += line + '\n';
    if (message_size != 0) {
      const std::size_t n = std::min(text.size(), message_size - 1);
      std::memcpy(message, text.data(), n);
      message[n] = '\0';
    }
    *problems = found.size();
  });
}

// ---- iteration and introspection ----

int daxalloc_for_each_object(const daxalloc_heap_t* heap,
                             int (*fn)(const daxalloc_object_info_t* info, void* arg), void* arg) {
  return for_each("daxalloc_for_each_object", heap, fn, arg,
                  [](const daxalloc::heap& h, auto&& f) { h.for_each_object(f); });
}

int daxalloc_for_each_section(const daxalloc_heap_t* heap,
                              int (*fn)(const daxalloc_section_info_t* info, void* arg),
                              void* arg) {
  return for_each("daxalloc_for_each_section", heap, fn, arg,
                  [](const daxalloc::heap& h, auto&& f) { h.for_each_section(f); });
}

int daxalloc_for_each_pageblock(const daxalloc_heap_t* heap,
                                int (*fn)(const daxalloc_pageblock_info_t* info, void* arg),
                                void* arg) {
  return for_each("daxalloc_for_each_pageblock", heap, fn, arg,
                  [](const daxalloc::heap& h, auto&& f) { h.for_each_pageblock(f); });
}

int daxalloc_layout(const daxalloc_heap_t* heap, daxalloc_layout_t* layout) {
  constexpr const char* fn = "daxalloc_layout";
  return guarded(fn, [&] {
    require(heap != nullptr && layout != nullptr, fn, "heap or layout is NULL");
    const daxalloc::heap_layout l = heap->heap.layout();
    daxalloc_layout_t c{};
    c.format_version = l.format_version;
    std::copy(l.uuid.begin(), l.uuid.end(), c.uuid);
    c.create_time = l.create_time;
    c.generation = l.generation;
    c.section_size_bits = l.section_size_bits;
    c.section_size = l.section_size;
    c.subsection_size = l.subsection_size;
    c.pageblock_size = l.pageblock_size;
    c.page_size = l.page_size;
    c.descriptor_size = l.descriptor_size;
    c.max_range = l.max_range;
    c.nr_sections = l.nr_sections;
    c.head_size = l.head_size;
    c.memmap_span_size = l.memmap_span_size;
    c.memmap_bytes_per_span = l.memmap_bytes_per_span;
    c.present_sections = l.present_sections;
    c.present_subsections = l.present_subsections;
    c.present_bytes = l.present_bytes;
    c.head_bytes = l.head_bytes;
    c.memmap_bytes = l.memmap_bytes;
    c.max_small_size = l.max_small_size;
    *layout = c;
  });
}

const char* daxalloc_object_kind_name(int kind) {
  if (kind < 0 || kind > 255) return "unknown";
  return daxalloc::to_string(static_cast<daxalloc::object_kind>(kind));
}

const char* daxalloc_migratetype_name(int type) {
  if (type < 0 || type > 255) return "unknown";
  return daxalloc::to_string(static_cast<daxalloc::migratetype>(type));
}

int daxalloc_remove(const char* path, int invalidate_device, int* removed) {
  constexpr const char* fn = "daxalloc_remove";
  return guarded(fn, [&] {
    require(path != nullptr, fn, "path is NULL");
    const bool deleted = daxalloc::heap::remove(path, invalidate_device != 0);
    if (removed != nullptr) *removed = deleted ? 1 : 0;
  });
}

}  // extern "C"
