/* DAXALLOC_API marks what the shared library exports: the public API and
 * nothing else. The library is built with -fvisibility=hidden, so anything
 * without the mark (every lib/ internal) stays inside libdaxalloc.so, and
 * tests/symbols_test.sh holds the exported list to tests/exported_symbols.txt
 * (docs/api.md, "Symbol visibility and soname"). Included by the C and the C++
 * headers. */
#ifndef DAXALLOC_EXPORT_H
#define DAXALLOC_EXPORT_H

/* DAXALLOC_LOCAL keeps a private member of an exported class inside the
 * library: one that no inline code of the public headers calls. */
#if defined(__GNUC__) || defined(__clang__)
#define DAXALLOC_API __attribute__((visibility("default")))
#define DAXALLOC_LOCAL __attribute__((visibility("hidden")))
#else
#define DAXALLOC_API
#define DAXALLOC_LOCAL
#endif

#endif /* DAXALLOC_EXPORT_H */
