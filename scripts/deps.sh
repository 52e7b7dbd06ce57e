#!/usr/bin/env bash
# Installs what building and testing daxalloc needs on Debian 12. Idempotent:
# packages already present are skipped without touching the network.
# Usage: scripts/deps.sh [build|test|vm|bench|fuzz]...   (default: build test)
set -euo pipefail

build=(build-essential pkg-config meson ninja-build libpmem-dev libpmem2-dev
       libdaxctl-dev libndctl-dev libboost-dev doctest-dev)
test=(clang libclang-rt-14-dev libfuzzer-14-dev)
vm=(qemu-system-x86 linux-image-amd64 busybox-static e2fsprogs ndctl daxctl cpio)
bench=(libpmemobj-dev libmemkind-dev libjemalloc-dev libmimalloc-dev pmdk-tools)
fuzz=(clang libfuzzer-14-dev libclang-rt-14-dev)

wanted=()
[ $# -gt 0 ] || set -- build test
for group in "$@"; do
  case "$group" in
    build) wanted+=("${build[@]}") ;;
    test) wanted+=("${build[@]}" "${test[@]}") ;;
    vm) wanted+=("${vm[@]}") ;;
    bench) wanted+=("${bench[@]}") ;;
    fuzz) wanted+=("${fuzz[@]}") ;;
    *) echo "deps.sh: unknown group '$group' (build, test, vm, bench, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in $(printf '%s\n' "${wanted[@]}" | sort -u); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
