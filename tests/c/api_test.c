/* Every function of the C ABI (daxalloc/daxalloc.h), compiled as C11 with
 * -Wall -Wextra -Werror: each succeeds, and each kind of failure comes back
 * as its code with a message, never as an exception. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "c_test.h"

#define MiB ((uint64_t)1 << 20)

struct root {
  uint64_t list;  /* a slot: the offset of an object, 0 for none */
  uint64_t other; /* another slot */
  uint64_t count;
};

static void fill_with_seven(void* object, void* arg) {
  memset(object, 7, *(size_t*)arg);
}

static void errors_and_version(void) {
  EXPECT(strcmp(daxalloc_strerror(DAXALLOC_OK), "ok") == 0);
  EXPECT(strcmp(daxalloc_strerror(DAXALLOC_E_ALREADY_EXISTS), "already_exists") == 0);
  EXPECT(strcmp(daxalloc_strerror(DAXALLOC_E_READ_ONLY), "read_only") == 0);
  EXPECT(strcmp(daxalloc_strerror(DAXALLOC_E_UNEXPECTED), "unexpected") == 0);
  EXPECT(strcmp(daxalloc_strerror(-5), "unknown") == 0);
  EXPECT(daxalloc_version()[0] >= '0' && daxalloc_version()[0] <= '9');
}

/* create, open, open_read_only, open_or_create, close, outcome, is_read_only. */
static void opening(const char* path) {
  daxalloc_heap_t* h = NULL;
  daxalloc_create_options_t co = {0};
  co.size = 16 * MiB;

  /* A missing file: not_found, with a message naming it; *heap untouched. */
  EXPECT_CODE(daxalloc_open(path, NULL, &h), DAXALLOC_E_NOT_FOUND);
  EXPECT(h == NULL);
  EXPECT(strstr(daxalloc_errormsg(), path) != NULL);
  EXPECT_CODE(daxalloc_open_read_only(path, NULL, &h), DAXALLOC_E_NOT_FOUND);
  EXPECT_CODE(daxalloc_open(NULL, NULL, &h), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT(strstr(daxalloc_errormsg(), "daxalloc_open") != NULL);
  EXPECT_CODE(daxalloc_create(path, NULL, &h), DAXALLOC_E_INVALID_ARGUMENT);
  co.mode = (daxalloc_persistence_mode_t)9;
  EXPECT_CODE(daxalloc_create(path, &co, &h), DAXALLOC_E_INVALID_ARGUMENT);
  co.mode = DAXALLOC_PERSIST_AUTOMATIC;

  EXPECT_OK(daxalloc_create(path, &co, &h));
  EXPECT(h != NULL);
  daxalloc_open_outcome_t outcome = DAXALLOC_OPENED_CLEAN;
  EXPECT_OK(daxalloc_outcome(h, &outcome));
  EXPECT(outcome == DAXALLOC_OPENED_CREATED);
  /* A file on tmpfs lists no bad blocks (tests/bad_blocks_test.cpp has some). */
  size_t nr_bad = 7;
  EXPECT_OK(daxalloc_bad_blocks(h, NULL, 0, &nr_bad));
  EXPECT(nr_bad == 0);
  daxalloc_bad_block_t bad[2];
  EXPECT_OK(daxalloc_bad_blocks(h, bad, 2, &nr_bad));
  EXPECT_CODE(daxalloc_bad_blocks(h, NULL, 2, &nr_bad), DAXALLOC_E_INVALID_ARGUMENT);
  int read_only = 1;
  EXPECT_OK(daxalloc_is_read_only(h, &read_only));
  EXPECT(read_only == 0);

  /* While it is open read-write, nobody else may open it. */
  daxalloc_heap_t* other = NULL;
  EXPECT_CODE(daxalloc_open(path, NULL, &other), DAXALLOC_E_BUSY);
  EXPECT_CODE(daxalloc_open_read_only(path, NULL, &other), DAXALLOC_E_BUSY);
  EXPECT(other == NULL);
  EXPECT_OK(daxalloc_close(h));
  EXPECT_OK(daxalloc_close(NULL));

  EXPECT_CODE(daxalloc_create(path, &co, &h), DAXALLOC_E_ALREADY_EXISTS);
  EXPECT(strlen(daxalloc_errormsg()) > 0);

  daxalloc_open_options_t oo = {0};
  oo.section_size_bits = 30; /* the heap has 27 */
  EXPECT_CODE(daxalloc_open(path, &oo, &h), DAXALLOC_E_GEOMETRY_MISMATCH);
  oo.section_size_bits = 27;
  EXPECT_OK(daxalloc_open(path, &oo, &h));
  EXPECT_OK(daxalloc_outcome(h, &outcome));
  EXPECT(outcome == DAXALLOC_OPENED_CLEAN);
  EXPECT_OK(daxalloc_close(h));

  /* open_or_create: creates once, then opens. */
  char fresh[256];
  test_path(fresh, sizeof fresh, "fresh");
  int created = 0;
  EXPECT_OK(daxalloc_open_or_create(fresh, &co, NULL, &h, &created));
  EXPECT(created == 1);
  EXPECT_OK(daxalloc_close(h));
  EXPECT_OK(daxalloc_open_or_create(fresh, &co, NULL, &h, &created));
  EXPECT(created == 0);
  EXPECT_OK(daxalloc_close(h));
  EXPECT_CODE(daxalloc_open_or_create(fresh, NULL, NULL, &h, &created),
              DAXALLOC_E_INVALID_ARGUMENT);
  unlink(fresh);
}

/* base, size, offset_of, at, slot_load, usable_size. */
static void mapping(daxalloc_heap_t* h) {
  void* base = NULL;
  size_t size = 0;
  EXPECT_OK(daxalloc_base(h, &base));
  EXPECT_OK(daxalloc_size(h, &size));
  EXPECT(base != NULL && size >= 16 * MiB);

  void* p = NULL;
  EXPECT_OK(daxalloc_allocate(h, 100, &p));
  uint64_t offset = 0;
  EXPECT_OK(daxalloc_offset_of(h, p, &offset));
  EXPECT(offset != 0 && (char*)base + offset == (char*)p);
  void* back = NULL;
  EXPECT_OK(daxalloc_at(h, offset, &back));
  EXPECT(back == p);
  EXPECT_OK(daxalloc_at(h, 0, &back));
  EXPECT(back == NULL);
  size_t usable = 0;
  EXPECT_OK(daxalloc_usable_size(h, p, &usable));
  EXPECT(usable >= 100);

  int outside = 0;
  EXPECT_CODE(daxalloc_offset_of(h, &outside, &offset), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_at(h, (uint64_t)size, &back), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT(back == NULL); /* untouched on failure */
  EXPECT_CODE(daxalloc_base(NULL, &base), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_size(h, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_usable_size(NULL, p, &usable), DAXALLOC_E_INVALID_ARGUMENT);

  void* slot_memory = NULL;
  EXPECT_OK(daxalloc_allocate(h, 8, &slot_memory));
  uint64_t* slot = slot_memory;
  *slot = offset;
  void* loaded = NULL;
  EXPECT_OK(daxalloc_slot_load(h, slot, &loaded));
  EXPECT(loaded == p);
  *slot = 0;
  EXPECT_OK(daxalloc_slot_load(h, slot, &loaded));
  EXPECT(loaded == NULL);
  uint64_t stack_slot = offset;
  EXPECT_CODE(daxalloc_slot_load(h, &stack_slot, &loaded), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_slot_load(h, (uint64_t*)((char*)slot + 1), &loaded),
              DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_OK(daxalloc_deallocate(h, slot));
  EXPECT_OK(daxalloc_deallocate(h, p));
}

/* allocate, deallocate, reserve, cancel. */
static void allocation(daxalloc_heap_t* h) {
  void* p = NULL;
  EXPECT_OK(daxalloc_allocate(h, 64, &p));
  memset(p, 1, 64);
  EXPECT_OK(daxalloc_persist(h, p, 64));
  EXPECT_OK(daxalloc_deallocate(h, p));
  EXPECT_OK(daxalloc_deallocate(h, NULL));
  void* big = NULL;
  EXPECT_OK(daxalloc_allocate(h, 300000, &big));
  EXPECT_OK(daxalloc_deallocate(h, big));

  void* none = NULL;
  EXPECT_CODE(daxalloc_allocate(h, (size_t)1 << 40, &none), DAXALLOC_E_OUT_OF_SPACE);
  EXPECT(none == NULL);
  EXPECT(strlen(daxalloc_errormsg()) > 0);
  int outside = 0;
  EXPECT_CODE(daxalloc_deallocate(h, &outside), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate(NULL, 8, &p), DAXALLOC_E_INVALID_ARGUMENT);

  void* r = NULL;
  EXPECT_OK(daxalloc_reserve(h, 48, &r));
  EXPECT(r != NULL);
  EXPECT_OK(daxalloc_cancel(h, r));
  EXPECT_CODE(daxalloc_reserve(h, (size_t)1 << 40, &r), DAXALLOC_E_OUT_OF_SPACE);
  EXPECT_CODE(daxalloc_cancel(h, &outside), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_cancel(h, NULL), DAXALLOC_E_INVALID_ARGUMENT);
}

/* allocate_aligned, reserve_aligned, alignment_waste. */
static void aligned_allocation(daxalloc_heap_t* h, struct root* root) {
  uint64_t waste_before = 1;
  EXPECT_OK(daxalloc_alignment_waste(h, &waste_before));
  for (size_t alignment = 1; alignment <= 2 * MiB; alignment *= 2) {
    void* p = NULL;
    EXPECT_OK(daxalloc_allocate_aligned(h, 24, alignment, &p));
    EXPECT(p != NULL && (uintptr_t)p % alignment == 0);
    memset(p, 7, 24);
    EXPECT_OK(daxalloc_deallocate(h, p));
    void* r = NULL;
    size_t reserved = 0;
    EXPECT_OK(daxalloc_reserve_aligned(h, 5000, alignment, &r, &reserved));
    EXPECT(r != NULL && (uintptr_t)r % alignment == 0 && reserved >= 5000);
    EXPECT_OK(daxalloc_cancel(h, r));
  }
  /* Pins: counted, a pinned object freed is not handed out again until unpinned. */
  void* io = NULL;
  uint32_t pins = 0;
  EXPECT_OK(daxalloc_allocate_aligned(h, 16384, 4096, &io));
  EXPECT_OK(daxalloc_pin(h, io, &pins));
  EXPECT(pins == 1);
  EXPECT_OK(daxalloc_pin(h, io, NULL));
  EXPECT_OK(daxalloc_deallocate(h, io));
  EXPECT_CODE(daxalloc_pin(h, io, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  for (int i = 0; i < 8; ++i) {
    void* other = NULL;
    EXPECT_OK(daxalloc_allocate_aligned(h, 16384, 4096, &other));
    EXPECT(other != io);
    EXPECT_OK(daxalloc_deallocate(h, other));
  }
  EXPECT_OK(daxalloc_unpin(h, io));
  EXPECT_OK(daxalloc_unpin(h, io));
  EXPECT_CODE(daxalloc_unpin(h, io), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_pin(NULL, io, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  uint64_t waste = 0;
  EXPECT_OK(daxalloc_alignment_waste(h, &waste));
  EXPECT(waste > waste_before); /* 24 bytes at 4 KiB take a page */

  /* An aligned reservation adopted by a batch with the size it reserved. */
  void* r = NULL;
  size_t reserved = 0;
  EXPECT_OK(daxalloc_reserve_aligned(h, 40, 64, &r, NULL));
  EXPECT_OK(daxalloc_cancel(h, r));
  EXPECT_OK(daxalloc_reserve_aligned(h, 40, 4096, &r, &reserved));
  EXPECT(reserved == 4096);
  daxalloc_batch_t* b = NULL;
  EXPECT_OK(daxalloc_batch_new(h, &b));
  EXPECT_OK(daxalloc_batch_adopt(b, r, reserved));
  uint64_t offset = 0;
  EXPECT_OK(daxalloc_offset_of(h, r, &offset));
  EXPECT_OK(daxalloc_batch_set(b, &root->other, offset));
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE));
  EXPECT_OK(daxalloc_batch_defer_free(b, r));
  EXPECT_OK(daxalloc_batch_set(b, &root->other, 0));
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE));
  daxalloc_batch_free(b);

  void* none = NULL;
  EXPECT_CODE(daxalloc_allocate_aligned(h, 8, 3, &none), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate_aligned(h, 8, 0, &none), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate_aligned(h, 8, DAXALLOC_MAX_ALIGNMENT * 2, &none),
              DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_reserve_aligned(h, 8, 48, &none, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate_aligned(h, (size_t)1 << 40, 64, &none), DAXALLOC_E_OUT_OF_SPACE);
  EXPECT(none == NULL);
  EXPECT_CODE(daxalloc_allocate_aligned(NULL, 8, 8, &none), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_reserve_aligned(h, 8, 8, NULL, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_alignment_waste(h, NULL), DAXALLOC_E_INVALID_ARGUMENT);
}

/* batch_new, _reserve, _reserve_copy, _adopt, _set, _defer_free, _publish
 * (immediate and deferred), _cancel, _size, _free; sync. */
static void batches(daxalloc_heap_t* h, struct root* root) {
  daxalloc_batch_t* b = NULL;
  EXPECT_OK(daxalloc_batch_new(h, &b));
  size_t actions = 9;
  EXPECT_OK(daxalloc_batch_size(b, &actions));
  EXPECT(actions == 0);

  void* node_memory = NULL;
  EXPECT_OK(daxalloc_batch_reserve(b, 64, &node_memory));
  uint64_t* node = node_memory;
  node[0] = 42;
  const char text[] = "copied in";
  void* copy = NULL;
  EXPECT_OK(daxalloc_batch_reserve_copy(b, text, sizeof text, &copy));
  void* adopted = NULL;
  EXPECT_OK(daxalloc_reserve(h, 32, &adopted));
  EXPECT_OK(daxalloc_batch_adopt(b, adopted, 32));
  uint64_t node_offset = 0, copy_offset = 0;
  EXPECT_OK(daxalloc_offset_of(h, node, &node_offset));
  EXPECT_OK(daxalloc_offset_of(h, copy, &copy_offset));
  EXPECT_OK(daxalloc_batch_set(b, &root->list, node_offset));
  EXPECT_OK(daxalloc_batch_set(b, &root->other, copy_offset));
  EXPECT_OK(daxalloc_batch_set(b, &root->count, 2));
  EXPECT_OK(daxalloc_batch_size(b, &actions));
  EXPECT(actions == 6);
  EXPECT(root->list == 0); /* stores wait for publish */
  EXPECT_CODE(daxalloc_batch_publish(b, (daxalloc_durability_t)7), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE));
  EXPECT(root->list == node_offset && root->other == copy_offset && root->count == 2);
  EXPECT(strcmp((const char*)copy, text) == 0);
  EXPECT_OK(daxalloc_batch_size(b, &actions));
  EXPECT(actions == 0);

  /* Reused: free what was published, cancel what was not. */
  EXPECT_OK(daxalloc_batch_defer_free(b, adopted));
  EXPECT_OK(daxalloc_batch_defer_free(b, NULL));
  void* dropped = NULL;
  EXPECT_OK(daxalloc_batch_reserve(b, 16, &dropped));
  EXPECT_OK(daxalloc_batch_cancel(b));
  EXPECT_OK(daxalloc_batch_size(b, &actions));
  EXPECT(actions == 0);
  EXPECT_OK(daxalloc_batch_defer_free(b, adopted));
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE));

  /* Range writes: bytes of a live object, applied at publish. */
  const char updated[] = "written"; /* (within the 16-byte slot of copy) */
  EXPECT_OK(daxalloc_batch_write(b, copy, updated, sizeof updated));
  EXPECT(strcmp((const char*)copy, text) == 0);
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE));
  EXPECT(strcmp((const char*)copy, updated) == 0);
  EXPECT_CODE(daxalloc_batch_write(b, copy, NULL, 4), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_write(b, root, updated, DAXALLOC_MAX_WRITE_BYTES + 1),
              DAXALLOC_E_TOO_LARGE);

  /* Group commit: applied at sync. */
  EXPECT_OK(daxalloc_batch_set(b, &root->count, 3));
  EXPECT_OK(daxalloc_batch_publish(b, DAXALLOC_DEFERRED));
  EXPECT(root->count == 2);
  EXPECT_OK(daxalloc_sync(h));
  EXPECT(root->count == 3);
  EXPECT_OK(daxalloc_sync(h)); /* nothing queued */

  /* Failures: a bogus adoption, a full batch, a store outside the heap. */
  int outside = 0;
  EXPECT_CODE(daxalloc_batch_adopt(b, &outside, 8), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_adopt(b, NULL, 8), DAXALLOC_E_INVALID_ARGUMENT);
  int full = 0;
  for (int i = 0; i < 300 && !full; ++i) {
    int rc = daxalloc_batch_set(b, &root->count, (uint64_t)i);
    if (rc == DAXALLOC_E_TOO_LARGE)
      full = 1;
    else
      EXPECT_OK(rc);
  }
  EXPECT(full);
  EXPECT_OK(daxalloc_batch_cancel(b));
  uint64_t stack_word = 0;
  EXPECT_OK(daxalloc_batch_set(b, &stack_word, 1));
  EXPECT(daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE) != DAXALLOC_OK);
  EXPECT(stack_word == 0);
  EXPECT_OK(daxalloc_batch_cancel(b));
  EXPECT_CODE(daxalloc_batch_reserve(b, (size_t)1 << 40, &dropped), DAXALLOC_E_OUT_OF_SPACE);
  EXPECT_CODE(daxalloc_batch_reserve_copy(b, NULL, 8, &dropped), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_set(b, NULL, 1), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_size(NULL, &actions), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_defer_free(NULL, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_publish(NULL, DAXALLOC_IMMEDIATE), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_cancel(NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_batch_new(NULL, &b), DAXALLOC_E_INVALID_ARGUMENT);

  /* Freed with a reservation pending: it is cancelled. */
  EXPECT_OK(daxalloc_batch_reserve(b, 16, &dropped));
  daxalloc_batch_free(b);
  daxalloc_batch_free(NULL);
}

/* allocate_publish (init and zero-filled, immediate and deferred),
 * allocate_publish_copy, free_clear. */
static void slots(daxalloc_heap_t* h, struct root* root) {
  EXPECT_OK(daxalloc_free_clear(h, &root->list, DAXALLOC_IMMEDIATE));
  EXPECT(root->list == 0);
  EXPECT_OK(daxalloc_free_clear(h, &root->other, DAXALLOC_IMMEDIATE));
  EXPECT_OK(daxalloc_free_clear(h, &root->list, DAXALLOC_IMMEDIATE)); /* 0: no-op */

  size_t n = 200;
  void* object = NULL;
  EXPECT_OK(daxalloc_allocate_publish(h, &root->list, n, fill_with_seven, &n, DAXALLOC_IMMEDIATE,
                                      &object));
  void* loaded = NULL;
  EXPECT_OK(daxalloc_slot_load(h, &root->list, &loaded));
  EXPECT(loaded == object && ((unsigned char*)object)[199] == 7);

  EXPECT_OK(
      daxalloc_allocate_publish(h, &root->other, 5000, NULL, NULL, DAXALLOC_IMMEDIATE, &object));
  for (int i = 0; i < 5000; ++i) EXPECT(((unsigned char*)object)[i] == 0);
  EXPECT_OK(daxalloc_free_clear(h, &root->other, DAXALLOC_DEFERRED));
  EXPECT(root->other != 0);
  EXPECT_OK(daxalloc_sync(h));
  EXPECT(root->other == 0);

  const char value[] = "a value the engine already had in a buffer";
  EXPECT_OK(daxalloc_allocate_publish_copy(h, &root->other, value, sizeof value, DAXALLOC_DEFERRED,
                                           NULL));
  EXPECT(root->other == 0);
  EXPECT_OK(daxalloc_sync(h));
  EXPECT_OK(daxalloc_slot_load(h, &root->other, &loaded));
  EXPECT(loaded != NULL && strcmp((const char*)loaded, value) == 0);

  /* Slots outside the heap, a slot naming no object, out of space. */
  uint64_t stack_slot = 0;
  EXPECT_CODE(daxalloc_allocate_publish(h, &stack_slot, 8, NULL, NULL, DAXALLOC_IMMEDIATE, NULL),
              DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate_publish_copy(h, &stack_slot, value, 8, DAXALLOC_IMMEDIATE, NULL),
              DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_free_clear(h, &stack_slot, DAXALLOC_IMMEDIATE), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_allocate_publish(h, &root->count, (size_t)1 << 40, NULL, NULL,
                                        DAXALLOC_IMMEDIATE, NULL),
              DAXALLOC_E_OUT_OF_SPACE);
  EXPECT(root->count == 3);
  uint64_t saved = root->count;
  root->count = 64; /* the heap's header: no object */
  EXPECT(daxalloc_free_clear(h, &root->count, DAXALLOC_IMMEDIATE) != DAXALLOC_OK);
  EXPECT(root->count == 64);
  root->count = saved;
  EXPECT_CODE(daxalloc_sync(NULL), DAXALLOC_E_INVALID_ARGUMENT);
}

/* root, persist, flush, drain, memcpy_persist, stats, check, hot_add, hot_remove. */
static void the_rest(daxalloc_heap_t* h) {
  void* again = NULL;
  EXPECT_OK(daxalloc_root(h, sizeof(struct root), &again));
  EXPECT_CODE(daxalloc_root(h, 2 * sizeof(struct root), &again), DAXALLOC_E_INVALID_ARGUMENT);

  void* memory = NULL;
  EXPECT_OK(daxalloc_allocate(h, 128, &memory));
  char* p = memory;
  memset(p, 3, 128);
  EXPECT_OK(daxalloc_flush(h, p, 64));
  EXPECT_OK(daxalloc_flush(h, p + 64, 64));
  EXPECT_OK(daxalloc_drain(h));
  EXPECT_OK(daxalloc_memcpy_persist(h, p, "xyz", 4));
  EXPECT(strcmp(p, "xyz") == 0);
  EXPECT_CODE(daxalloc_persist(NULL, p, 1), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_flush(NULL, p, 1), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_drain(NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_memcpy_persist(h, NULL, p, 1), DAXALLOC_E_INVALID_ARGUMENT);

  daxalloc_stats_t before, after;
  EXPECT_OK(daxalloc_stats(h, &before));
  void* q = NULL;
  EXPECT_OK(daxalloc_allocate(h, 128, &q));
  EXPECT_OK(daxalloc_stats(h, &after));
  EXPECT(after.allocated_objects == before.allocated_objects + 1);
  EXPECT(after.present_bytes >= 16 * MiB && after.usable_bytes < after.present_bytes);
  EXPECT(after.free_bytes > 0 && after.thread_fences > 0 && after.unclean_shutdown == 0);
  EXPECT_CODE(daxalloc_stats(h, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_OK(daxalloc_deallocate(h, q));
  EXPECT_OK(daxalloc_deallocate(h, p));

  /* Growth: the heap was created with 16 MiB present, 1 GiB reserved. */
  EXPECT_OK(daxalloc_hot_add(h, 32 * MiB, 4 * MiB));
  EXPECT_CODE(daxalloc_hot_add(h, 32 * MiB, 2 * MiB), DAXALLOC_E_ALREADY_EXISTS);
  EXPECT_CODE(daxalloc_hot_add(h, 33 * MiB, 2 * MiB), DAXALLOC_E_MISALIGNED);
  EXPECT_OK(daxalloc_stats(h, &after));
  EXPECT(after.present_bytes >= 20 * MiB);
  EXPECT_OK(daxalloc_hot_remove(h, 32 * MiB, 4 * MiB));
  EXPECT_CODE(daxalloc_hot_remove(h, 32 * MiB, 2 * MiB), DAXALLOC_E_NOT_PRESENT);

  size_t problems = 99;
  char message[512];
  EXPECT_OK(daxalloc_check(h, &problems, message, sizeof message));
  if (problems != 0) fprintf(stderr, "check: %s", message);
  EXPECT(problems == 0 && message[0] == '\0');
  EXPECT_OK(daxalloc_check(h, &problems, NULL, 0));
  EXPECT_CODE(daxalloc_check(h, NULL, message, sizeof message), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_check(h, &problems, NULL, 8), DAXALLOC_E_INVALID_ARGUMENT);
}

/* Reopened read-only: everything published is there; writes are refused. */
static void read_only(const char* path) {
  daxalloc_heap_t* h = NULL;
  EXPECT_OK(daxalloc_open_read_only(path, NULL, &h));
  int ro = 0;
  EXPECT_OK(daxalloc_is_read_only(h, &ro));
  EXPECT(ro == 1);
  void* refused = NULL;
  EXPECT_CODE(daxalloc_allocate_aligned(h, 64, 64, &refused), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_reserve_aligned(h, 64, 4096, &refused, NULL), DAXALLOC_E_READ_ONLY);
  daxalloc_heap_t* writer = NULL;
  EXPECT_CODE(daxalloc_open(path, NULL, &writer), DAXALLOC_E_BUSY);
  daxalloc_heap_t* reader = NULL;
  EXPECT_OK(daxalloc_open_read_only(path, NULL, &reader));
  EXPECT_OK(daxalloc_close(reader));

  void* root_memory = NULL;
  EXPECT_OK(daxalloc_root(h, sizeof(struct root), &root_memory));
  struct root* root = root_memory;
  EXPECT(root->count == 3 && root->list != 0 && root->other != 0);
  void* object = NULL;
  EXPECT_OK(daxalloc_slot_load(h, &root->list, &object));
  EXPECT(((unsigned char*)object)[0] == 7);
  size_t problems = 1;
  EXPECT_OK(daxalloc_check(h, &problems, NULL, 0));
  EXPECT(problems == 0);
  daxalloc_stats_t s;
  EXPECT_OK(daxalloc_stats(h, &s));
  EXPECT(s.allocated_objects >= 3);

  void* p = NULL;
  daxalloc_batch_t* b = NULL;
  EXPECT_CODE(daxalloc_allocate(h, 8, &p), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_deallocate(h, object), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_reserve(h, 8, &p), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_batch_new(h, &b), DAXALLOC_E_READ_ONLY);
  EXPECT(b == NULL);
  EXPECT_CODE(daxalloc_allocate_publish(h, &root->other, 8, NULL, NULL, DAXALLOC_IMMEDIATE, NULL),
              DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_free_clear(h, &root->list, DAXALLOC_IMMEDIATE), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_hot_add(h, 64 * MiB, 2 * MiB), DAXALLOC_E_READ_ONLY);
  EXPECT_CODE(daxalloc_hot_remove(h, 0, 2 * MiB), DAXALLOC_E_READ_ONLY);
  EXPECT(strstr(daxalloc_errormsg(), "read") != NULL);
  EXPECT_OK(daxalloc_close(h));
}

/* Iteration and introspection: on the read-write heap and, read-only. */
struct tally {
  size_t objects, roots, extents, stop_after, sections, pageblocks, present;
  uint64_t last, wanted, found_size;
  int ordered;
};

static int count_object(const daxalloc_object_info_t* o, void* arg) {
  struct tally* t = arg;
  t->ordered = t->ordered && (t->objects == 0 || o->offset > t->last);
  t->last = o->offset;
  ++t->objects;
  t->roots += o->kind == DAXALLOC_OBJECT_ROOT;
  t->extents += !o->in_slab;
  if (o->offset == t->wanted) t->found_size = o->size;
  EXPECT(o->movable == 0);
  return t->stop_after != 0 && t->objects == t->stop_after;
}

static int count_section(const daxalloc_section_info_t* s, void* arg) {
  struct tally* t = arg;
  ++t->sections;
  EXPECT(s->online == 1 && s->present_subsections > 0 && s->subsections >= s->present_subsections);
  return 0;
}

static int count_pageblock(const daxalloc_pageblock_info_t* p, void* arg) {
  struct tally* t = arg;
  ++t->pageblocks;
  t->present += p->present != 0;
  EXPECT(p->pages == 512);
  return 0;
}

static void iteration(daxalloc_heap_t* h, int writable) {
  daxalloc_stats_t s;
  EXPECT_OK(daxalloc_stats(h, &s));
  struct tally t = {0};
  t.ordered = 1;
  EXPECT_OK(daxalloc_for_each_object(h, count_object, &t));
  EXPECT(t.objects == s.allocated_objects && t.roots == 1 && t.ordered);
  if (writable) {
    void* extent = NULL;
    EXPECT_OK(daxalloc_allocate(h, 100 * 1024, &extent));
    struct tally more = {0};
    EXPECT_OK(daxalloc_offset_of(h, extent, &more.wanted));
    EXPECT_OK(daxalloc_for_each_object(h, count_object, &more));
    EXPECT(more.objects == t.objects + 1 && more.extents == t.extents + 1);
    EXPECT(more.found_size == 100 * 1024);
    EXPECT_OK(daxalloc_deallocate(h, extent));
  }
  struct tally stopped = {0};
  stopped.stop_after = 2;
  EXPECT_OK(daxalloc_for_each_object(h, count_object, &stopped));
  EXPECT(stopped.objects == 2);

  EXPECT_OK(daxalloc_for_each_section(h, count_section, &t));
  EXPECT_OK(daxalloc_for_each_pageblock(h, count_pageblock, &t));
  daxalloc_layout_t l;
  EXPECT_OK(daxalloc_layout(h, &l));
  EXPECT(t.sections == l.present_sections && t.present == l.present_subsections);
  EXPECT(t.pageblocks == t.sections * (l.section_size / l.pageblock_size));
  EXPECT(l.page_size == 4096 && l.pageblock_size == 2 * MiB && l.present_bytes == s.present_bytes);
  EXPECT(t.present * l.pageblock_size == s.present_bytes);
  EXPECT(l.max_small_size == 64 * 1024 && l.format_version > 0);

  EXPECT(strcmp(daxalloc_object_kind_name(DAXALLOC_OBJECT_ROOT), "root") == 0);
  EXPECT(strcmp(daxalloc_object_kind_name(-1), "unknown") == 0);
  EXPECT(strcmp(daxalloc_migratetype_name(DAXALLOC_MIGRATE_LARGE), "large") == 0);
  EXPECT(strcmp(daxalloc_migratetype_name(4), "unknown") == 0);
  EXPECT_CODE(daxalloc_for_each_object(NULL, count_object, &t), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_for_each_section(h, NULL, &t), DAXALLOC_E_INVALID_ARGUMENT);
  EXPECT_CODE(daxalloc_layout(h, NULL), DAXALLOC_E_INVALID_ARGUMENT);
}

int main(void) {
  char path[256];
  test_path(path, sizeof path, "api");
  errors_and_version();
  opening(path);
  unlink(path);

  daxalloc_heap_t* h = NULL;
  daxalloc_create_options_t co = {0};
  co.size = 16 * MiB;
  co.max_size = 1024 * MiB;
  EXPECT_OK(daxalloc_create(path, &co, &h));
  void* root_memory = NULL;
  EXPECT_OK(daxalloc_root(h, sizeof(struct root), &root_memory));
  struct root* root = root_memory;
  EXPECT(root->list == 0 && root->count == 0);
  mapping(h);
  allocation(h);
  aligned_allocation(h, root);
  batches(h, root);
  slots(h, root);
  the_rest(h);
  iteration(h, 1);
  EXPECT_OK(daxalloc_close(h));

  read_only(path);
  daxalloc_heap_t* reader = NULL;
  EXPECT_OK(daxalloc_open_read_only(path, NULL, &reader));
  iteration(reader, 0);
  int removed = 0;
  EXPECT_CODE(daxalloc_remove(path, 0, &removed), DAXALLOC_E_BUSY);
  EXPECT_OK(daxalloc_close(reader));
  EXPECT_OK(daxalloc_remove(path, 0, &removed));
  EXPECT(removed == 1 && access(path, F_OK) != 0);
  EXPECT(daxalloc_remove(path, 0, NULL) != DAXALLOC_OK);
  EXPECT_CODE(daxalloc_remove(NULL, 0, NULL), DAXALLOC_E_INVALID_ARGUMENT);
  printf("PASS: every function of daxalloc.h\n");
  return 0;
}
