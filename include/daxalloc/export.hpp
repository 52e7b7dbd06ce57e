// DAXALLOC_API marks what the shared library exports: the public API and
// nothing else. The library is built with -fvisibility=hidden, so anything
// without the mark (every lib/ internal) stays inside libdaxalloc.so
// (docs/api.md, "Symbol visibility"). Usable from C and C++.
#ifndef DAXALLOC_EXPORT_HPP
#define DAXALLOC_EXPORT_HPP

#if defined(__GNUC__) || defined(__clang__)
#define DAXALLOC_API __attribute__((visibility("default")))
#else
#define DAXALLOC_API
#endif

#endif /* DAXALLOC_EXPORT_HPP */
