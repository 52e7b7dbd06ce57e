/* What the C tests share: a checked call that prints the library's message
 * and a file name unique to the process. */
#ifndef DAXALLOC_TESTS_C_TEST_H
#define DAXALLOC_TESTS_C_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <daxalloc/daxalloc.h>

/* Fails the test unless `call` returns `expected`; says where, what came
 * back and the library's message. */
#define EXPECT_CODE(call, expected)                                                            \
  do {                                                                                         \
    int got_ = (call);                                                                         \
    if (got_ != (expected)) {                                                                  \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); message: %s\n", __FILE__, \
              __LINE__, #call, got_, daxalloc_strerror(got_), (int)(expected),                 \
              daxalloc_strerror(expected), daxalloc_errormsg());                               \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

#define EXPECT_OK(call) EXPECT_CODE(call, DAXALLOC_OK)

#define EXPECT(condition)                                                      \
  do {                                                                         \
    if (!(condition)) {                                                        \
      fprintf(stderr, "%s:%d: %s is false\n", __FILE__, __LINE__, #condition); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

/* $DAXALLOC_TEST_DIR (a DAX mount in the VM suite), else /dev/shm. */
static inline void test_path(char* out, size_t size, const char* tag) {
  const char* dir = getenv("DAXALLOC_TEST_DIR");
  snprintf(out, size, "%s/daxalloc-c-test-%ld-%s", dir && *dir ? dir : "/dev/shm", (long)getpid(),
           tag);
  unlink(out);
}

#endif
