/* A kill test through the C ABI: a child publishes into the slots of the
 * root object in a loop (allocate-and-publish, free-and-clear, batches that
 * move an object between slots, group commits) and is killed with SIGKILL at
 * a random moment; the parent reopens the heap, requires check() to find
 * nothing and every slot to name a live object whose contents are intact.
 * Usage: test_c_kill [ROUNDS [SEED]]; the seed is printed. */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#include "c_test.h"

#define SLOTS 64
#define MAX_OBJECT 9000

struct root {
  uint64_t slot[SLOTS]; /* offsets of objects, 0 for none */
};

/* An object: its size, a tag, then bytes derived from both. */
struct header {
  uint64_t size;
  uint64_t tag;
};

static uint64_t next_random(uint64_t* state) {
  uint64_t x = *state; /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static unsigned char byte_of(uint64_t tag, size_t k) {
  return (unsigned char)((tag >> (8 * (k % 8))) ^ (k * 131));
}

static void fill(void* object, void* arg) {
  const struct header* h = arg;
  memcpy(object, h, sizeof *h);
  for (size_t k = sizeof *h; k < h->size; ++k) ((unsigned char*)object)[k] = byte_of(h->tag, k);
}

static struct header random_object(uint64_t* rng) {
  struct header h;
  h.size = sizeof h + next_random(rng) % (MAX_OBJECT - sizeof h);
  h.tag = next_random(rng);
  return h;
}

/* The child: opens the heap, says so on `ready`, then publishes until
 * killed. Any failure exits with 2. */
static void publish_forever(const char* path, uint64_t seed, int ready) {
  daxalloc_heap_t* h = NULL;
  if (daxalloc_open(path, NULL, &h) != DAXALLOC_OK) _exit(2);
  void* root_memory = NULL;
  if (daxalloc_root(h, sizeof(struct root), &root_memory) != DAXALLOC_OK) _exit(2);
  struct root* root = root_memory;
  if (write(ready, "r", 1) != 1) _exit(2);
  static unsigned char buffer[MAX_OBJECT];
  uint64_t rng = seed;
  for (;;) {
    const unsigned i = (unsigned)(next_random(&rng) % SLOTS);
    int rc = DAXALLOC_OK;
    switch (next_random(&rng) % 4) {
      case 0: { /* allocate-and-publish (with an init function) or free-and-clear */
        if (root->slot[i] != 0) {
          rc = daxalloc_free_clear(h, &root->slot[i], DAXALLOC_IMMEDIATE);
        } else {
          struct header o = random_object(&rng);
          rc = daxalloc_allocate_publish(h, &root->slot[i], o.size, fill, &o, DAXALLOC_IMMEDIATE,
                                         NULL);
        }
        break;
      }
      case 1: { /* the copy-in form, replacing what the slot held, in one batch */
        struct header o = random_object(&rng);
        fill(buffer, &o);
        daxalloc_batch_t* b = NULL;
        void* old = NULL;
        void* made = NULL;
        uint64_t offset = 0;
        if ((rc = daxalloc_batch_new(h, &b)) != DAXALLOC_OK) break;
        if ((rc = daxalloc_slot_load(h, &root->slot[i], &old)) == DAXALLOC_OK &&
            (rc = daxalloc_batch_reserve_copy(b, buffer, o.size, &made)) == DAXALLOC_OK &&
            (rc = daxalloc_offset_of(h, made, &offset)) == DAXALLOC_OK &&
            (rc = daxalloc_batch_set(b, &root->slot[i], offset)) == DAXALLOC_OK &&
            (rc = daxalloc_batch_defer_free(b, old)) == DAXALLOC_OK)
          rc = daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE);
        daxalloc_batch_free(b);
        break;
      }
      case 2: { /* move an object to another slot (swap), atomically */
        const unsigned j = (unsigned)(next_random(&rng) % SLOTS);
        if (j == i) break;
        daxalloc_batch_t* b = NULL;
        if ((rc = daxalloc_batch_new(h, &b)) != DAXALLOC_OK) break;
        const uint64_t a = root->slot[i], c = root->slot[j];
        if ((rc = daxalloc_batch_set(b, &root->slot[i], c)) == DAXALLOC_OK &&
            (rc = daxalloc_batch_set(b, &root->slot[j], a)) == DAXALLOC_OK)
          rc = daxalloc_batch_publish(b, DAXALLOC_IMMEDIATE);
        daxalloc_batch_free(b);
        break;
      }
      case 3: { /* group commit: eight distinct slots, deferred, then one sync */
        for (unsigned k = 0; k < 8 && rc == DAXALLOC_OK; ++k) {
          uint64_t* slot = &root->slot[(i + k) % SLOTS];
          if (*slot != 0) {
            rc = daxalloc_free_clear(h, slot, DAXALLOC_DEFERRED);
          } else {
            struct header o = random_object(&rng);
            rc = daxalloc_allocate_publish(h, slot, o.size, fill, &o, DAXALLOC_DEFERRED, NULL);
          }
        }
        if (rc == DAXALLOC_OK) rc = daxalloc_sync(h);
        break;
      }
    }
    if (rc != DAXALLOC_OK) {
      fprintf(stderr, "child: %s: %s\n", daxalloc_strerror(rc), daxalloc_errormsg());
      _exit(2);
    }
  }
}

/* The parent after a kill: recovery, check(), every slot's object intact. */
static void verify(const char* path, unsigned round) {
  daxalloc_heap_t* h = NULL;
  EXPECT_OK(daxalloc_open(path, NULL, &h));
  /* The child had the heap open: this open recovers. */
  daxalloc_open_outcome_t outcome = DAXALLOC_OPENED_CLEAN;
  EXPECT_OK(daxalloc_outcome(h, &outcome));
  EXPECT(outcome == DAXALLOC_OPENED_RECOVERED);
  size_t problems = 0;
  char message[2048];
  EXPECT_OK(daxalloc_check(h, &problems, message, sizeof message));
  if (problems != 0) {
    fprintf(stderr, "round %u: check() found %zu problems:\n%s", round, problems, message);
    exit(1);
  }
  void* root_memory = NULL;
  EXPECT_OK(daxalloc_root(h, sizeof(struct root), &root_memory));
  struct root* root = root_memory;
  size_t live = 0;
  for (unsigned i = 0; i < SLOTS; ++i) {
    void* loaded = NULL;
    EXPECT_OK(daxalloc_slot_load(h, &root->slot[i], &loaded));
    const unsigned char* object = loaded;
    if (object == NULL) continue;
    ++live;
    struct header o;
    memcpy(&o, object, sizeof o);
    size_t usable = 0;
    EXPECT_OK(daxalloc_usable_size(h, object, &usable));
    if (o.size < sizeof o || o.size >= MAX_OBJECT || usable < o.size) {
      fprintf(stderr, "round %u: slot %u: object of size %llu in a block of %zu\n", round, i,
              (unsigned long long)o.size, usable);
      exit(1);
    }
    for (size_t k = sizeof o; k < o.size; ++k) {
      if (object[k] != byte_of(o.tag, k)) {
        fprintf(stderr, "round %u: slot %u: byte %zu of %llu differs\n", round, i, k,
                (unsigned long long)o.size);
        exit(1);
      }
    }
  }
  daxalloc_stats_t s;
  EXPECT_OK(daxalloc_stats(h, &s));
  /* Every object a slot names counts as allocated, and no two slots share one. */
  EXPECT(s.allocated_objects >= live);
  for (unsigned i = 0; i < SLOTS; ++i)
    for (unsigned j = i + 1; j < SLOTS; ++j)
      EXPECT(root->slot[i] == 0 || root->slot[i] != root->slot[j]);
  EXPECT_OK(daxalloc_close(h));
}

int main(int argc, char** argv) {
  const unsigned rounds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 20;
  uint64_t seed =
      argc > 2 ? strtoull(argv[2], NULL, 10) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
  if (seed == 0) seed = 1;
  printf("seed %llu, %u rounds\n", (unsigned long long)seed, rounds);
  fflush(stdout);
  uint64_t rng = seed;

  char path[256];
  test_path(path, sizeof path, "kill");
  daxalloc_heap_t* h = NULL;
  daxalloc_create_options_t co = {0};
  co.size = 64 * 1024 * 1024;
  EXPECT_OK(daxalloc_create(path, &co, &h));
  void* root = NULL;
  EXPECT_OK(daxalloc_root(h, sizeof(struct root), &root));
  EXPECT_OK(daxalloc_close(h));

  for (unsigned round = 0; round < rounds; ++round) {
    const uint64_t child_seed = next_random(&rng) | 1;
    int ready[2];
    EXPECT(pipe(ready) == 0);
    const pid_t child = fork();
    EXPECT(child >= 0);
    if (child == 0) {
      close(ready[0]);
      publish_forever(path, child_seed, ready[1]);
    }
    close(ready[1]);
    char byte = 0;
    const ssize_t got = read(ready[0], &byte, 1); /* 0: the child failed before it was ready */
    close(ready[0]);
    /* 1..60 ms of publications, then the kill: it lands anywhere in them. */
    const long delay_us = 1000 + (long)(next_random(&rng) % 59000);
    struct timespec pause = {0, delay_us * 1000};
    if (got == 1) nanosleep(&pause, NULL);
    kill(child, SIGKILL);
    int status = 0;
    EXPECT(waitpid(child, &status, 0) == child);
    if (WIFEXITED(status)) {
      fprintf(stderr, "round %u: the child failed (exit %d) before the kill\n", round,
              WEXITSTATUS(status));
      return 1;
    }
    EXPECT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    verify(path, round);
  }
  unlink(path);
  printf("PASS: %u kills during publications: every published object intact\n", rounds);
  return 0;
}
