#!/usr/bin/env bash
# Installs daxalloc into a scratch root, then, as an outside user would:
# builds a storage-engine-like program against it with nothing but
# `pkg-config --cflags --libs daxalloc` (no -std of its own: the flags carry
# C++20), builds one against the umbrella header and checks its version
# macros, checks that an older standard is refused with a clear message,
# builds and runs a C11 program with `pkg-config --cflags --libs daxalloc-c`, and
# runs the installed `daxalloc` tool without LD_LIBRARY_PATH (its run path
# finds the installed library).
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --destdir "$stage" --quiet >/dev/null
pc=$(find "$stage" -name daxalloc.pc | head -n 1)
[ -n "$pc" ] || { echo "FAIL: no daxalloc.pc installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$stage
flags=$(pkg-config --cflags --libs daxalloc)
echo "pkg-config --cflags --libs daxalloc: $flags"
case " $(pkg-config --cflags daxalloc) " in
  *" -std=c++20 "*) ;;
  *) echo "FAIL: pkg-config --cflags daxalloc lacks -std=c++20"; exit 1 ;;
esac
# A sanitized build installs a sanitized library: the program needs the same runtime.
sanitize=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="b_sanitize"))')
[ "$sanitize" = none ] || flags="$flags -fsanitize=$sanitize"
c++ "$source/examples/heap_tour.cpp" $flags -o "$stage/engine"
libdir=$(dirname "$(find "$stage" -name 'libdaxalloc.so' | head -n 1)")
heap=/dev/shm/daxalloc-install-test-$$
LD_LIBRARY_PATH=$libdir "$stage/engine" "$heap" >/dev/null
rm -f "$heap"
echo "PASS: built and ran a program against the installed library"

# The umbrella header alone, and the version macros from meson's project version.
version=$(meson introspect "$build" --projectinfo |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
IFS=. read -r major minor patch <<<"$version"
cat >"$stage/umbrella.cpp" <<CPP
#include <daxalloc/daxalloc.hpp>
#include <cstdio>
static_assert(DAXALLOC_VERSION_MAJOR == $major && DAXALLOC_VERSION_MINOR == $minor &&
              DAXALLOC_VERSION_PATCH == $patch);
static_assert(DAXALLOC_VERSION == $major * 10000 + $minor * 100 + $patch);
int main() {
  daxalloc::heap h;  // an empty handle
  try {
    (void)h.base();
  } catch (const daxalloc::error& e) {
    if (e.code_value() == daxalloc::errc::invalid_argument) {
      std::printf("%s\n", DAXALLOC_VERSION_STRING);
      return 0;
    }
  }
  return 1;
}
CPP
c++ -Wall -Wextra -Werror "$stage/umbrella.cpp" $flags -o "$stage/umbrella"
got=$(LD_LIBRARY_PATH=$libdir "$stage/umbrella")
[ "$got" = "$version" ] || { echo "FAIL: DAXALLOC_VERSION_STRING is '$got', not '$version'"; exit 1; }
echo "PASS: the umbrella header alone builds; version macros say $version"

# An older standard after the flags is refused by name, not by a cascade of errors.
if out=$(c++ -fsyntax-only $(pkg-config --cflags daxalloc) -std=c++17 "$stage/umbrella.cpp" 2>&1); then
  echo "FAIL: the headers compiled as C++17"; exit 1
fi
echo "$out" | grep -q "need C++20 or later" || { echo "FAIL: C++17 refused without the message:"; echo "$out" | head -5; exit 1; }
echo "PASS: C++17 is refused with a clear #error"

# The C ABI with a C compiler and nothing but `pkg-config daxalloc-c`: its
# flags carry no C++ standard, and the C11 test of every function builds
# (-std=c11 -Wall -Wextra -Werror) and runs against the installed library.
cflags=$(pkg-config --cflags --libs daxalloc-c)
echo "pkg-config --cflags --libs daxalloc-c: $cflags"
case " $cflags " in
  *" -std="*) echo "FAIL: pkg-config daxalloc-c carries a -std flag"; exit 1 ;;
esac
[ "$sanitize" = none ] || cflags="$cflags -fsanitize=$sanitize"
[ -f "$(dirname "$pc")/daxalloc-c.pc" ] || { echo "FAIL: no daxalloc-c.pc installed"; exit 1; }
cp "$source/tests/c/api_test.c" "$source/tests/c/c_test.h" "$stage/"
cc -std=c11 -Wall -Wextra -Werror "$stage/api_test.c" $cflags -o "$stage/c_engine"
LD_LIBRARY_PATH=$libdir "$stage/c_engine" >/dev/null
echo "PASS: a C11 program built with pkg-config daxalloc-c and ran against the installed library"

# The installed tool, from the custom prefix, with no LD_LIBRARY_PATH.
tool=$(find "$stage" -path '*/bin/daxalloc' -type f | head -n 1)
[ -n "$tool" ] || { echo "FAIL: no daxalloc tool installed"; exit 1; }
resolved=$(env -u LD_LIBRARY_PATH ldd "$tool" | awk '/libdaxalloc\.so/ {print $3}')
case "$resolved" in
  "$stage"/*) ;;
  *) echo "FAIL: the installed tool resolves libdaxalloc to '$resolved', not the installed copy"; exit 1 ;;
esac
env -u LD_LIBRARY_PATH "$tool" --version | grep -q "daxalloc $version" ||
  { echo "FAIL: the installed tool does not start without LD_LIBRARY_PATH"; exit 1; }
echo "PASS: the installed tool starts from $resolved without LD_LIBRARY_PATH"
