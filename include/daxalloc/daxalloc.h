/* daxalloc's C ABI: the heap, batches and the publish API for C (and, through
 * C, for Rust, Go, Zig, ...). docs/c-api.md describes it in full.
 *
 *   daxalloc_heap_t* h;
 *   daxalloc_create_options_t o = {0};
 *   o.size = 1 << 30;
 *   if (daxalloc_open_or_create("/mnt/pmem/kv", &o, NULL, &h, NULL) != DAXALLOC_OK) {
 *     fprintf(stderr, "%s\n", daxalloc_errormsg());
 *     return 1;
 *   }
 *   uint64_t* head;                             // a slot: an offset from the heap's base
 *   daxalloc_root(h, sizeof *head, (void**)&head);
 *   daxalloc_allocate_publish_copy(h, head, value, n, DAXALLOC_IMMEDIATE, NULL);
 *   daxalloc_close(h);
 *
 * Errors: every function returns a daxalloc_errc_t (DAXALLOC_OK, 0, on
 * success) and hands its results back through out-parameters, which are left
 * untouched on failure. daxalloc_errormsg() gives the full message of the
 * calling thread's last failure. No C++ exception crosses this interface.
 *
 * Slots: an 8-byte word (uint64_t, 8-byte aligned, inside the heap) that
 * holds the offset of an object from the heap's base, 0 for none (offset 0 is
 * the heap's header, never an object). Offsets stay valid wherever the heap is
 * mapped; daxalloc_slot_load and daxalloc_at turn them into pointers.
 *
 * Threads: the functions on one daxalloc_heap_t may be called from any number
 * of threads at once, except daxalloc_close, which needs the heap quiet (no
 * call in flight, no batch in use). A daxalloc_batch_t is used by one thread
 * at a time. daxalloc_errormsg() is per thread.
 *
 * Link with `pkg-config --cflags --libs daxalloc-c` (a C compiler); the
 * `daxalloc` package is the C++20 one. */
#ifndef DAXALLOC_DAXALLOC_H
#define DAXALLOC_DAXALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "daxalloc/export.h"

#ifdef __cplusplus
/* C++ gives the enums int as their type, the size C gives them, so that any
 * int a C caller passes (an out-of-range one is refused with
 * DAXALLOC_E_INVALID_ARGUMENT) is a valid value on the C++ side. */
#define DAXALLOC_ENUM_TYPE : int
extern "C" {
#else
#define DAXALLOC_ENUM_TYPE
#endif

/* The error codes: daxalloc::errc (daxalloc/error.hpp), value for value. */
typedef enum daxalloc_errc DAXALLOC_ENUM_TYPE {
  DAXALLOC_OK = 0,
  DAXALLOC_E_INVALID_ARGUMENT = 1,     /* a caller passed something that can never work */
  DAXALLOC_E_NOT_FOUND = 2,            /* no such file or device */
  DAXALLOC_E_PERMISSION_DENIED = 3,    /* the OS refused access */
  DAXALLOC_E_IS_DIRECTORY = 4,         /* a directory where a file or device was expected */
  DAXALLOC_E_NOT_DAX = 5,              /* DAX (MAP_SYNC or devdax) required but absent */
  DAXALLOC_E_MAP_SYNC_UNSUPPORTED = 6, /* the file system refused MAP_SYNC */
  DAXALLOC_E_MISALIGNED = 7,           /* offset, size or address not suitably aligned */
  DAXALLOC_E_TOO_SMALL = 8,            /* region too small for what was asked */
  DAXALLOC_E_TOO_LARGE = 9,            /* beyond the device or reserved range; a full batch */
  DAXALLOC_E_ALREADY_EXISTS = 10,      /* creating over a heap; overlapping a present span */
  DAXALLOC_E_BUSY = 11,                /* the heap is open elsewhere (lock held) */
  DAXALLOC_E_NOT_PRESENT = 12,         /* removing or using a span that is not present */
  DAXALLOC_E_IN_USE = 13,              /* removing a span that still holds allocations */
  DAXALLOC_E_OUT_OF_SPACE = 14,        /* no free memory in the heap (or in the process) */
  DAXALLOC_E_CORRUPT = 15,             /* media content fails a check */
  DAXALLOC_E_NEWER_FORMAT = 16,        /* made by a newer daxalloc */
  DAXALLOC_E_GEOMETRY_MISMATCH = 17,   /* open asked for a geometry the heap does not have */
  DAXALLOC_E_IO_ERROR = 18,            /* a system call failed for another reason */
  DAXALLOC_E_UNSUPPORTED = 19,         /* not possible on this kind of region */
  DAXALLOC_E_OLDER_FORMAT = 20,        /* made by an older daxalloc this one cannot read */
  DAXALLOC_E_READ_ONLY = 21,           /* a call that writes, on a heap opened read-only */
  DAXALLOC_E_MEDIA_ERROR = 22,         /* a load from the media faulted (poison, a bad block) */
  DAXALLOC_E_UNSAFE_SHUTDOWN = 23,     /* the device lost power with the heap open */
  /* Not in daxalloc::errc: the library failed in a way it has no code for
   * (an exception other than daxalloc::error); the message names it. */
  DAXALLOC_E_UNEXPECTED = 1000
} daxalloc_errc_t;

typedef struct daxalloc_heap daxalloc_heap_t;
typedef struct daxalloc_batch daxalloc_batch_t;

typedef enum daxalloc_persistence_mode DAXALLOC_ENUM_TYPE {
  DAXALLOC_PERSIST_AUTOMATIC = 0, /* what the region supports (the default) */
  DAXALLOC_PERSIST_CACHE_FLUSH = 1,
  DAXALLOC_PERSIST_MSYNC = 2,
  DAXALLOC_PERSIST_NONE = 3
} daxalloc_persistence_mode_t;

/* When a publication is durable: when the call returns, or at the next
 * daxalloc_sync() (group commit). */
typedef enum daxalloc_durability DAXALLOC_ENUM_TYPE {
  DAXALLOC_IMMEDIATE = 0,
  DAXALLOC_DEFERRED = 1
} daxalloc_durability_t;

typedef enum daxalloc_open_outcome DAXALLOC_ENUM_TYPE {
  DAXALLOC_OPENED_CLEAN = 0,     /* the heap was closed cleanly */
  DAXALLOC_OPENED_RECOVERED = 1, /* recovered after an unclean shutdown */
  DAXALLOC_OPENED_REPAIRED = 2,  /* repaired (daxalloc_open_options_t.repair) */
  DAXALLOC_OPENED_CREATED = 3    /* this handle created it */
} daxalloc_open_outcome_t;

/* Zero-filled is the default for every field but size. */
typedef struct daxalloc_create_options {
  uint64_t size;                    /* bytes present after create (rounded up to 2 MiB) */
  uint64_t max_size;                /* address range reserved for growth; 0: 1 TiB */
  unsigned section_size_bits;       /* 27..30; 0: 27 (128 MiB sections) */
  daxalloc_persistence_mode_t mode; /* 0: automatic */
  int overwrite;                    /* devdax: replace an existing heap */
} daxalloc_create_options_t;

/* Zero-filled (or a NULL pointer) is the default. */
typedef struct daxalloc_open_options {
  unsigned section_size_bits;       /* 0 accepts any; else the heap must have it */
  daxalloc_persistence_mode_t mode; /* 0: automatic */
  int repair;                       /* quarantine damaged pageblocks instead of refusing */
  int wait_for_lock;                /* wait while another handle has the heap */
  int accept_unsafe_shutdown;       /* open after an unsafe shutdown, with a full check */
} daxalloc_open_options_t;

/* The main counters of daxalloc::heap_stats. */
typedef struct daxalloc_stats {
  uint64_t present_bytes;   /* present subsections, metadata included */
  uint64_t usable_bytes;    /* present minus head and memmap */
  uint64_t metadata_bytes;  /* head + memmap */
  uint64_t allocated_bytes; /* durable allocations, at their class or page-rounded size */
  uint64_t allocated_objects;
  uint64_t free_bytes; /* pages the page allocator can hand out */
  uint64_t largest_free_bytes;
  double fragmentation;  /* 1 - largest_free / free */
  uint64_t slab_bytes;   /* pages held by slabs */
  uint64_t extent_bytes; /* pages held by large objects */
  uint64_t pageblocks_by_migratetype[8];
  uint64_t thread_flushes;  /* the calling thread's cache lines flushed, */
  uint64_t thread_fences;   /* fences, */
  uint64_t thread_msyncs;   /* msync calls */
  uint64_t thread_streamed; /* and lines written with non-temporal stores */
  int unclean_shutdown;     /* the last close before this open did not happen */
} daxalloc_stats_t;

/* ---- errors ---- */

/* The message of the calling thread's last failed call ("" before the
 * first); valid until this thread's next failing call. */
DAXALLOC_API const char* daxalloc_errormsg(void);
/* The code's name: "already_exists"; "unknown" for a value not in the enum. */
DAXALLOC_API const char* daxalloc_strerror(int code);
/* The library's version, "MAJOR.MINOR.PATCH". */
DAXALLOC_API const char* daxalloc_version(void);

/* ---- opening and closing ---- */

DAXALLOC_API int daxalloc_create(const char* path, const daxalloc_create_options_t* options,
                                 daxalloc_heap_t** heap);
DAXALLOC_API int daxalloc_open(const char* path, const daxalloc_open_options_t* options,
                               daxalloc_heap_t** heap);
/* Read-only: shared with other read-only handles, nothing written, no
 * recovery. Every call that writes is DAXALLOC_E_READ_ONLY. */
DAXALLOC_API int daxalloc_open_read_only(const char* path, const daxalloc_open_options_t* options,
                                         daxalloc_heap_t** heap);
/* Opens the heap, or creates it when there is none, without a race;
 * *created (if not NULL) is 1 when this call created it. */
DAXALLOC_API int daxalloc_open_or_create(const char* path,
                                         const daxalloc_create_options_t* create_options,
                                         const daxalloc_open_options_t* open_options,
                                         daxalloc_heap_t** heap, int* created);
/* Records a clean shutdown (read-write) and frees the handle, whatever it
 * returns. NULL is a no-op. */
DAXALLOC_API int daxalloc_close(daxalloc_heap_t* heap);
DAXALLOC_API int daxalloc_outcome(const daxalloc_heap_t* heap, daxalloc_open_outcome_t* outcome);
DAXALLOC_API int daxalloc_is_read_only(const daxalloc_heap_t* heap, int* read_only);
/* *unsafe is 1 when this open found an unsafe shutdown and went on
 * (daxalloc_open_options_t.accept_unsafe_shutdown) after a full check. */
DAXALLOC_API int daxalloc_unsafe_shutdown(const daxalloc_heap_t* heap, int* unsafe);

/* ---- the mapping ---- */

DAXALLOC_API int daxalloc_base(const daxalloc_heap_t* heap, void** base);
DAXALLOC_API int daxalloc_size(const daxalloc_heap_t* heap, size_t* size);
/* DAXALLOC_E_INVALID_ARGUMENT for a pointer outside the mapping. */
DAXALLOC_API int daxalloc_offset_of(const daxalloc_heap_t* heap, const void* pointer,
                                    uint64_t* offset);
/* DAXALLOC_E_INVALID_ARGUMENT for an offset outside the mapping; 0 gives NULL. */
DAXALLOC_API int daxalloc_at(const daxalloc_heap_t* heap, uint64_t offset, void** pointer);
/* The object a slot points to (NULL for 0). */
DAXALLOC_API int daxalloc_slot_load(const daxalloc_heap_t* heap, const uint64_t* slot,
                                    void** object);
/* The slot's size in a slab, an extent's size, else 0. */
DAXALLOC_API int daxalloc_usable_size(const daxalloc_heap_t* heap, const void* pointer,
                                      size_t* size);

/* ---- durable allocation ---- */

/* Recorded on the media when it returns; a leak if never linked. */
DAXALLOC_API int daxalloc_allocate(daxalloc_heap_t* heap, size_t size, void** object);
/* NULL is a no-op. */
DAXALLOC_API int daxalloc_deallocate(daxalloc_heap_t* heap, void* object);
/* The largest alignment of the _aligned calls: 1 GiB. */
#define DAXALLOC_MAX_ALIGNMENT ((size_t)1 << 30)
/* The most bytes of daxalloc_batch_write per batch (batch::max_write_bytes). */
#define DAXALLOC_MAX_WRITE_BYTES ((size_t)64 * 1024)
/* At an address that is a multiple of alignment, a power of two up to
 * DAXALLOC_MAX_ALIGNMENT (else DAXALLOC_E_INVALID_ARGUMENT); freed by
 * daxalloc_deallocate as any object. */
DAXALLOC_API int daxalloc_allocate_aligned(daxalloc_heap_t* heap, size_t size, size_t alignment,
                                           void** object);

/* ---- pins (heap::pin(p): docs/api.md, "Pins and direct I/O") ---- */

/* Pins the allocated object that starts at object while the kernel or a
 * device uses its memory (O_DIRECT, RDMA); pins nest. A pinned object that
 * is freed is free on the media at once, but its memory is reused only after
 * its last unpin; hot-removing a span with pins is DAXALLOC_E_BUSY.
 * DAXALLOC_E_INVALID_ARGUMENT for anything but the start of an allocated,
 * non-movable object, and for unpin of an object not pinned. count (may be
 * NULL): the object's pins after the call. */
DAXALLOC_API int daxalloc_pin(daxalloc_heap_t* heap, const void* object, uint32_t* count);
DAXALLOC_API int daxalloc_unpin(daxalloc_heap_t* heap, const void* object);

/* ---- volatile reservations ---- */

/* Yours until cancelled or adopted by a batch; a crash forgets it. */
DAXALLOC_API int daxalloc_reserve(daxalloc_heap_t* heap, size_t size, void** object);
DAXALLOC_API int daxalloc_cancel(daxalloc_heap_t* heap, void* object);
/* Aligned as daxalloc_allocate_aligned; *reserved (if not NULL) is the size
 * reserved, the size daxalloc_batch_adopt takes it with (a larger class or
 * whole pages, when the alignment needs them). */
DAXALLOC_API int daxalloc_reserve_aligned(daxalloc_heap_t* heap, size_t size, size_t alignment,
                                          void** object, size_t* reserved);

/* ---- batches: all of their actions, or none ---- */

DAXALLOC_API int daxalloc_batch_new(daxalloc_heap_t* heap, daxalloc_batch_t** batch);
/* Volatile memory that becomes allocated at publish. */
DAXALLOC_API int daxalloc_batch_reserve(daxalloc_batch_t* batch, size_t size, void** object);
/* The same, filled with a copy of src by non-temporal stores. */
DAXALLOC_API int daxalloc_batch_reserve_copy(daxalloc_batch_t* batch, const void* src, size_t size,
                                             void** object);
/* Takes over a reservation made with daxalloc_reserve(size) (or with
 * daxalloc_reserve_aligned: the size it reserved). */
DAXALLOC_API int daxalloc_batch_adopt(daxalloc_batch_t* batch, void* object, size_t size);
/* An 8-byte store into the heap, applied at publish (to fill a slot, store
 * the object's offset: daxalloc_offset_of). */
DAXALLOC_API int daxalloc_batch_set(daxalloc_batch_t* batch, uint64_t* where, uint64_t value);
/* Writes n bytes from src to dst (inside the heap's memory, any alignment)
 * at publish, atomically with the batch; src is copied now. At most
 * DAXALLOC_MAX_WRITE_BYTES in all per batch (DAXALLOC_E_TOO_LARGE). */
DAXALLOC_API int daxalloc_batch_write(daxalloc_batch_t* batch, void* dst, const void* src,
                                      size_t n);
/* Frees an allocated object at publish; NULL is a no-op. */
DAXALLOC_API int daxalloc_batch_defer_free(daxalloc_batch_t* batch, void* object);
/* Makes every action durable at once (DAXALLOC_IMMEDIATE), or queues them for
 * the next daxalloc_sync() (DAXALLOC_DEFERRED). The batch is empty afterwards
 * and may be reused; on failure it is unchanged. */
DAXALLOC_API int daxalloc_batch_publish(daxalloc_batch_t* batch, daxalloc_durability_t durability);
/* Gives back the reservations and forgets every action; the batch is empty. */
DAXALLOC_API int daxalloc_batch_cancel(daxalloc_batch_t* batch);
DAXALLOC_API int daxalloc_batch_size(const daxalloc_batch_t* batch, size_t* actions);
/* Cancels what is unpublished and frees the batch. NULL is a no-op. */
DAXALLOC_API void daxalloc_batch_free(daxalloc_batch_t* batch);

/* ---- publication into slots ---- */

/* Allocates size bytes, runs init(object, arg) on them (NULL: zero-filled),
 * and stores the object's offset into *slot (a word inside the heap), all or
 * nothing. init must return normally. *object (if not NULL) is the object. */
DAXALLOC_API int daxalloc_allocate_publish(daxalloc_heap_t* heap, uint64_t* slot, size_t size,
                                           void (*init)(void* object, void* arg), void* arg,
                                           daxalloc_durability_t durability, void** object);
/* The same, the object filled with a copy of src (non-temporal stores). */
DAXALLOC_API int daxalloc_allocate_publish_copy(daxalloc_heap_t* heap, uint64_t* slot,
                                                const void* src, size_t size,
                                                daxalloc_durability_t durability, void** object);
/* Frees the object *slot points to and sets *slot to 0, all or nothing; a
 * slot holding 0 is a no-op. */
DAXALLOC_API int daxalloc_free_clear(daxalloc_heap_t* heap, uint64_t* slot,
                                     daxalloc_durability_t durability);
/* Publishes every deferred batch queued so far (any thread's) with one fence. */
DAXALLOC_API int daxalloc_sync(daxalloc_heap_t* heap);

/* ---- the root object ---- */

/* Created zero-filled on first use, found again after reopen;
 * DAXALLOC_E_INVALID_ARGUMENT when the stored root has another size. */
DAXALLOC_API int daxalloc_root(daxalloc_heap_t* heap, size_t size, void** root);

/* ---- making your own stores durable ---- */

DAXALLOC_API int daxalloc_persist(const daxalloc_heap_t* heap, const void* address, size_t length);
DAXALLOC_API int daxalloc_flush(const daxalloc_heap_t* heap, const void* address, size_t length);
DAXALLOC_API int daxalloc_drain(const daxalloc_heap_t* heap);
DAXALLOC_API int daxalloc_memcpy_persist(const daxalloc_heap_t* heap, void* destination,
                                         const void* source, size_t length);

/* heap::read_guarded: copies length bytes of the heap's memory at source
 * to destination; a load that faults (poisoned media, a bad block) does not
 * end the process but returns DAXALLOC_E_MEDIA_ERROR, the message naming
 * the heap offset of the first unreadable byte. *copied (copied may be
 * NULL): the bytes copied, all before that byte. */
DAXALLOC_API int daxalloc_read_guarded(const daxalloc_heap_t* heap, void* destination,
                                       const void* source, size_t length, size_t* copied);

/* ---- growth, statistics, checking ---- */

/* 2 MiB-aligned spans of byte offsets, all or nothing. */
DAXALLOC_API int daxalloc_hot_add(daxalloc_heap_t* heap, uint64_t offset, uint64_t length);
DAXALLOC_API int daxalloc_hot_remove(daxalloc_heap_t* heap, uint64_t offset, uint64_t length);
DAXALLOC_API int daxalloc_stats(const daxalloc_heap_t* heap, daxalloc_stats_t* stats);
/* heap_stats::alignment_waste_bytes: what aligned allocations and
 * reservations took beyond their unaligned size, since open (a function of
 * its own: daxalloc_stats_t keeps its size). */
DAXALLOC_API int daxalloc_alignment_waste(const daxalloc_heap_t* heap, uint64_t* bytes);
/* Checks every invariant: *problems is the number of violations; their
 * descriptions, one a line, go into message (NUL-terminated, truncated to
 * message_size; message may be NULL when message_size is 0). */
DAXALLOC_API int daxalloc_check(const daxalloc_heap_t* heap, size_t* problems, char* message,
                                size_t message_size);

/* Where a bad block lies (daxalloc::bad_block_location). */
typedef enum daxalloc_bad_block_location DAXALLOC_ENUM_TYPE {
  DAXALLOC_BAD_BLOCK_IN_MEMORY = 0,
  DAXALLOC_BAD_BLOCK_IN_HEAD = 1,
  DAXALLOC_BAD_BLOCK_IN_MEMMAP = 2,
  DAXALLOC_BAD_BLOCK_NOT_PRESENT = 3
} daxalloc_bad_block_location_t;
/* One of heap::bad_blocks() (docs/media-errors.md). */
typedef struct daxalloc_bad_block {
  uint64_t offset; /* bytes from the heap's start */
  uint64_t length; /* bytes */
  daxalloc_bad_block_location_t location;
  int quarantined;     /* memory: its pageblocks are isolate */
  int cleared;         /* cleared by this open (repair): reads as zeros */
  int objects_unknown; /* a slab bitmap in it: which objects were allocated is unknown */
  size_t lost_objects; /* allocated objects overlapping it */
  uint64_t first_lost; /* the offset of the first of them (0: none) */
} daxalloc_bad_block_t;
/* The media's bad blocks in the heap as open found them: *count is how many
 * there are; the first min(*count, capacity) go to blocks (which may be NULL
 * when capacity is 0). */
DAXALLOC_API int daxalloc_bad_blocks(const daxalloc_heap_t* heap, daxalloc_bad_block_t* blocks,
                                     size_t capacity, size_t* count);

/* ---- iteration and introspection (read-only: also on a read-only heap) ---- */

/* What an allocated object is (daxalloc::object_kind). */
typedef enum daxalloc_object_kind DAXALLOC_ENUM_TYPE {
  DAXALLOC_OBJECT_SMALL = 0,     /* allocated, in a slab (up to 64 KiB) */
  DAXALLOC_OBJECT_EXTENT = 1,    /* allocated, whole pages */
  DAXALLOC_OBJECT_ROOT = 2,      /* the root object */
  DAXALLOC_OBJECT_NAMED = 3,     /* the objects of a name (C++ heap::construct) */
  DAXALLOC_OBJECT_NAME_INDEX = 4 /* the named-object index: its table and names */
} daxalloc_object_kind_t;

/* A durable allocation, as a crash would leave it. */
typedef struct daxalloc_object_info {
  uint64_t offset; /* from the heap's base (daxalloc_at) */
  uint64_t size;   /* usable bytes: the size class, or the extent's whole pages */
  daxalloc_object_kind_t kind;
  int in_slab; /* a slot of a slab; 0: an extent of whole pages */
  int movable; /* a movable object (C++ heap::allocate_movable) */
} daxalloc_object_info_t;

/* A pageblock's migratetype; the values are the ones on the media. */
typedef enum daxalloc_migratetype DAXALLOC_ENUM_TYPE {
  DAXALLOC_MIGRATE_UNMOVABLE = 0, /* slabs of small objects */
  DAXALLOC_MIGRATE_MOVABLE = 1,   /* the common pool and page-sized extents */
  DAXALLOC_MIGRATE_LARGE = 2,     /* extents of 2 MiB and more */
  DAXALLOC_MIGRATE_METADATA = 3,  /* head and memmap: never allocated from */
  DAXALLOC_MIGRATE_ISOLATE = 5    /* quarantined, or being removed */
} daxalloc_migratetype_t;

typedef struct daxalloc_section_info {
  uint64_t number;
  uint64_t offset;
  uint64_t size;
  uint32_t present_subsections;
  uint32_t subsections;
  uint64_t memmap_offset; /* the memmap block describing its span */
  int online;             /* its pages may be allocated */
  int partial;            /* tainted: some subsections were never present */
} daxalloc_section_info_t;

typedef struct daxalloc_pageblock_info {
  uint64_t offset;
  uint64_t section; /* its section's number */
  int present;      /* 0: absent, the fields below are meaningless */
  daxalloc_migratetype_t type;
  int skip;                 /* the compaction skip flag */
  uint32_t pages;           /* 512 */
  uint32_t allocated_pages; /* pages of extents and slabs in it */
} daxalloc_pageblock_info_t;

/* The superblock and the geometry (daxalloc::heap_layout). */
typedef struct daxalloc_layout {
  uint32_t format_version;
  uint8_t uuid[16];
  uint64_t create_time; /* seconds since the epoch */
  uint64_t generation;
  uint32_t section_size_bits;
  uint64_t section_size;
  uint64_t subsection_size;
  uint64_t pageblock_size;
  uint64_t page_size;
  uint64_t descriptor_size;
  uint64_t max_range;
  uint64_t nr_sections;
  uint64_t head_size;
  uint64_t memmap_span_size;
  uint64_t memmap_bytes_per_span;
  uint64_t present_sections;
  uint64_t present_subsections;
  uint64_t present_bytes;
  uint64_t head_bytes;
  uint64_t memmap_bytes;
  uint64_t max_small_size;
} daxalloc_layout_t;

/* Call fn(info, arg) once per item in address order: every allocated object;
 * every present section; every pageblock of the present sections. A nonzero
 * return from fn stops the iteration (the call still returns DAXALLOC_OK).
 * The info is valid during the call only. */
DAXALLOC_API int daxalloc_for_each_object(const daxalloc_heap_t* heap,
                                          int (*fn)(const daxalloc_object_info_t* info, void* arg),
                                          void* arg);
DAXALLOC_API int daxalloc_for_each_section(const daxalloc_heap_t* heap,
                                           int (*fn)(const daxalloc_section_info_t* info,
                                                     void* arg),
                                           void* arg);
DAXALLOC_API int daxalloc_for_each_pageblock(const daxalloc_heap_t* heap,
                                             int (*fn)(const daxalloc_pageblock_info_t* info,
                                                       void* arg),
                                             void* arg);
DAXALLOC_API int daxalloc_layout(const daxalloc_heap_t* heap, daxalloc_layout_t* layout);
/* "small", "extent", ...; "unknown" for a value not in the enum. */
DAXALLOC_API const char* daxalloc_object_kind_name(int kind);
DAXALLOC_API const char* daxalloc_migratetype_name(int type);

/* Removes the heap at path: deletes the file, or (only with
 * invalidate_device) clears a devdax device's superblocks. *removed (if not
 * NULL) is 1 when a file was deleted. DAXALLOC_E_BUSY while it is open,
 * DAXALLOC_E_CORRUPT for anything that is not a heap. */
DAXALLOC_API int daxalloc_remove(const char* path, int invalidate_device, int* removed);

#ifdef __cplusplus
}
#endif

#undef DAXALLOC_ENUM_TYPE

#endif /* DAXALLOC_DAXALLOC_H */
