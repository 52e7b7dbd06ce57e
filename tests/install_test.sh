#!/usr/bin/env bash
# Installs daxalloc into a scratch root, then builds a storage-engine-like
# program against it with nothing but `pkg-config --cflags --libs daxalloc`.
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
# A sanitized build installs a sanitized library: the program needs the same runtime.
sanitize=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="b_sanitize"))')
[ "$sanitize" = none ] || flags="$flags -fsanitize=$sanitize"
c++ -std=c++20 "$source/examples/heap_tour.cpp" $flags -o "$stage/engine"
libdir=$(dirname "$(find "$stage" -name 'libdaxalloc.so' | head -n 1)")
heap=/dev/shm/daxalloc-install-test-$$
LD_LIBRARY_PATH=$libdir "$stage/engine" "$heap" >/dev/null
rm -f "$heap"
echo "PASS: built and ran a program against the installed library"
