#!/bin/sh
# The VM suite's steps, run by /init in the guest (dash, with busybox's
# applets and a few host programs). Each step prints its output and one
# VMSTEP line (guest-lib.sh); run-vm.sh expects the steps listed in its
# expected_steps() and fails on a FAIL, a missing step or a step it does not
# know. A step whose prerequisite failed still prints its line, as FAIL with
# the reason "skipped: ...".
#
# Files the host put into the initramfs:
#   /vm/modules           kernel modules to insmod, in order (paths)
#   /vm/required-modules  names that must be in /sys/module afterwards
#   /vm/devdax-tests      doctest binaries that also run in the devdax phase
#   /vm/exclude/test_X    test cases test_X leaves out (a --test-case-exclude value)
#   /vm/guest-lib.sh      the step helpers
#   /opt/daxalloc/...     the project's programs, at their build-dir paths

programs=/opt/daxalloc
probe=$programs/tests/vm/dax_probe
media_probe=$programs/tests/vm/media_probe
direct_io_probe=$programs/tests/vm/direct_io_probe
daxalloc=$programs/tools/daxalloc
tour=$programs/examples/region_tour
heap_tour=$programs/examples/heap_tour
step_timeout=240  # test_heap with DAXALLOC_VM_SLOW=1 takes 100 s or more under TCG
# pass, fail, skip, run (with $want), wait_for, load_modules
# shellcheck source=tests/vm/guest-lib.sh
. /vm/guest-lib.sh

# Doctest binaries: test_region first, then any other tests/test_* copied in;
# all run on the fsdax mount, those listed in /vm/devdax-tests (the ones whose
# files fit on /tmp, in guest RAM) in the devdax phase too.
tests="test_region"
for t in "$programs"/tests/test_*; do
  [ -f "$t" ] && [ "${t##*/}" != test_region ] && tests="$tests ${t##*/}"
done
devdax_tests=""
for t in $tests; do
  grep -qx "$t" /vm/devdax-tests 2>/dev/null && devdax_tests="$devdax_tests $t"
done

# run_test NAME DIR BINARY: a doctest binary with its files in DIR, leaving
# out the cases /vm/exclude/BINARY names.
run_test() {
  if [ -s "/vm/exclude/$3" ]; then
    run "$1" env DAXALLOC_TEST_DIR="$2" "$programs/tests/$3" \
      --test-case-exclude="$(cat "/vm/exclude/$3")"
  else
    run "$1" env DAXALLOC_TEST_DIR="$2" "$programs/tests/$3"
  fi
}

# heap_tours PHASE PATH [REOPEN_PATH]: heap_tour twice: the first run creates
# the heap on PATH (and grows it online by a 1 GiB span, which needs a device
# or file system of 2 GiB or more), the second reopens it (through REOPEN_PATH
# if given) and finds the record the first run left.
heap_tours() {
  want="hot-added [1 GiB, 2 GiB)
heap check: sound
closed and reopened: 1 run(s) recorded"
  run "$1-heap_tour-create" "$heap_tour" "$2"
  want="opened ${3:-$2}
hot-added [1 GiB, 2 GiB)
heap check: sound
closed and reopened: 2 run(s) recorded"
  run "$1-heap_tour-reopen" "$heap_tour" "${3:-$2}"
}

# Step bodies that are more than one command; run() calls them through
# "sh $self --do FUNCTION", since timeout runs programs, not functions.
find_pmem() {
  # memmap= gives a raw namespace (/dev/pmem0); an NVDIMM kept from an earlier
  # run may come up in the mode that run left it in.
  i=0
  while [ ! -e /dev/pmem0 ] && [ ! -e /dev/dax0.0 ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  [ -e /dev/pmem0 ] || [ -e /dev/dax0.0 ] || {
    echo "ERROR: no /dev/pmem0 or /dev/dax0.0 within 10 s (memmap=3G!4G or an NVDIMM needed)"
    return 1
  }
  ndctl list -N
}
# The disk for direct I/O: the host's raw image on virtio (/dev/vda), as
# ext4 without dax, so that O_DIRECT on its files goes through the block
# layer to a device that is not pmem.
mount_disk() {
  wait_for /dev/vda || return 1
  mkfs.ext4 -F -q -b 4096 /dev/vda || return 1
  mkdir -p /mnt/disk
  mount -t ext4 /dev/vda /mnt/disk || return 1
  grep " /mnt/disk " /proc/mounts
}
make_devdax() {
  ndctl create-namespace -f -e namespace0.0 --mode=devdax --align=2M && wait_for /dev/dax0.0 &&
    daxctl list
}
make_fsdax() {
  ndctl create-namespace -f -e namespace0.0 --mode=fsdax --map=dev && wait_for /dev/pmem0
}
mount_dax() {
  mount -t ext4 -o dax /dev/pmem0 /mnt/dax || return 1
  grep " /mnt/dax " /proc/mounts
  grep -q " /mnt/dax ext4 [^ ]*dax" /proc/mounts || {
    echo "ERROR: /mnt/dax is mounted without dax"
    return 1
  }
}

# daxalloc check on a heap with a bad block: a finding (exit 1), listed in
# the JSON with its pageblock quarantined by the open before.
check_bad_block() {
  "$daxalloc" check --json /mnt/dax/badblock >/tmp/check.json
  rc=$?
  cat /tmp/check.json
  [ $rc -eq 1 ] || {
    echo "ERROR: daxalloc check exited $rc, not 1 (a bad block is a finding)"
    return 1
  }
  tr -d ' \n' </tmp/check.json | grep -q '"location":"memory","quarantined":true,"cleared":false' || {
    echo "ERROR: the JSON does not list the bad block in memory, quarantined"
    return 1
  }
}
# The steps of the bad-block test (tests/vm/media_probe.cpp): a heap filled,
# the page of one object marked bad through sysfs, the heap opened around
# it, checked, repaired (the block cleared as PMDK clears it) and verified.
bad_block_steps() {
  run fsdax-badblock-fill "$media_probe" fill /mnt/dax/badblock || return
  want="media_probe: PASS inject"
  run fsdax-badblock-inject "$media_probe" inject /mnt/dax/badblock || return
  cat /sys/block/pmem0/badblocks
  want="media_probe: PASS open around the bad block"
  run fsdax-badblock-open "$media_probe" open /mnt/dax/badblock || return
  run fsdax-badblock-check sh "$self" --do check_bad_block || return
  want="cleared the bad block at
consistent"
  run fsdax-badblock-repair "$daxalloc" repair /mnt/dax/badblock || return
  want="media_probe: PASS verify after repair"
  run fsdax-badblock-verify "$media_probe" verify /mnt/dax/badblock
}
# Poison no scrub has listed yet, met by the loads of recovery and of a
# slab's first use: media_error, and the process lives.
poison_steps() {
  want="media_probe: PASS poison met by recovery, process alive"
  run fsdax-poison-recovery "$media_probe" poison-recovery /mnt/dax/poison-lanes
  want="media_probe: PASS poison in a slab bitmap, process alive"
  run fsdax-poison-slab "$media_probe" poison-slab /mnt/dax/poison-slab
  # Legacy (memmap=) pmem has no DIMMs: no unsafe-shutdown count to compare,
  # and info says so (the refusal itself is tested with injected counts:
  # tests/unsafe_shutdown_test.cpp).
  want="detection not available (no DIMMs behind the pmem region"
  run fsdax-unsafe-shutdown-info "$daxalloc" info /mnt/dax/badblock
}
bad_block_step_names="fsdax-badblock-fill fsdax-badblock-inject fsdax-badblock-open fsdax-badblock-check fsdax-badblock-repair fsdax-badblock-verify fsdax-poison-recovery fsdax-poison-slab fsdax-unsafe-shutdown-info"

self=$0
if [ "${1:-}" = --do ]; then
  shift
  "$@"
  exit
fi

# --- the pmem device -------------------------------------------------------
pmem_ok=0
run modules sh "$self" --do load_modules
run pmem0 sh "$self" --do find_pmem && pmem_ok=1

disk_ok=0
run disk-mount sh "$self" --do mount_disk && disk_ok=1

# direct_io PHASE HEAP_PATH: O_DIRECT between a file on the disk and pinned
# extents of a heap at HEAP_PATH (tests/vm/direct_io_probe.cpp).
direct_io() {
  if [ $disk_ok -eq 0 ]; then
    skip "$1-direct-io" "no disk on /mnt/disk"
    return
  fi
  want="is on block device vda
region: kind $1,
direct_io_probe: PASS O_DIRECT round trip
direct_io_probe: PASS freed during I/O"
  run "$1-direct-io" "$direct_io_probe" "$1" "$2" /mnt/disk/direct-io
}

# --- devdax ----------------------------------------------------------------
devdax_ok=0
if [ $pmem_ok -eq 0 ]; then
  skip devdax-namespace "no /dev/pmem0"
else
  run devdax-namespace sh "$self" --do make_devdax && devdax_ok=1
fi
if [ $devdax_ok -eq 1 ]; then
  run devdax-probe "$probe" devdax /dev/dax0.0
  # No file system in devdax mode: this only shows the binaries run in the guest.
  for t in $devdax_tests; do run_test "devdax-$t" /tmp "$t"; done
  run devdax-region_tour "$tour" /dev/dax0.0
  # The heap on the device itself: the first run opens the heap the probe
  # left there (or creates one), the second reopens it through a link to the
  # device (a leftover from when heap_tour always recreated devdax heaps).
  ln -sf /dev/dax0.0 /tmp/heap-dax0.0
  heap_tours devdax /dev/dax0.0 /tmp/heap-dax0.0
  # Last on the device: it makes a heap there of its own.
  direct_io devdax /dev/dax0.0
else
  skip devdax-probe "no /dev/dax0.0"
  for t in $devdax_tests; do skip "devdax-$t" "no /dev/dax0.0"; done
  skip devdax-region_tour "no /dev/dax0.0"
  skip devdax-heap_tour-create "no /dev/dax0.0"
  skip devdax-heap_tour-reopen "no /dev/dax0.0"
  skip devdax-direct-io "no /dev/dax0.0"
fi

# --- fsdax -----------------------------------------------------------------
fsdax_ok=0
if [ $pmem_ok -eq 0 ]; then
  skip fsdax-namespace "no /dev/pmem0"
  skip fsdax-mkfs "no /dev/pmem0"
  skip fsdax-mount "no /dev/pmem0"
elif ! run fsdax-namespace sh "$self" --do make_fsdax; then
  skip fsdax-mkfs "fsdax-namespace failed"
  skip fsdax-mount "fsdax-namespace failed"
elif ! run fsdax-mkfs mkfs.ext4 -F -q -b 4096 /dev/pmem0; then
  skip fsdax-mount "fsdax-mkfs failed"
elif run fsdax-mount sh "$self" --do mount_dax; then
  fsdax_ok=1
fi
if [ $fsdax_ok -eq 1 ]; then
  run fsdax-probe "$probe" fsdax /mnt/dax/probe
  for t in $tests; do run_test "fsdax-$t" /mnt/dax "$t"; done
  run fsdax-region_tour "$tour" /mnt/dax/tour
  rm -f /mnt/dax/heap
  heap_tours fsdax /mnt/dax/heap
  direct_io fsdax /mnt/dax/direct-io-heap
  # Last: the bad sector stays on the device until the namespace goes.
  bad_block_steps
  poison_steps
  umount /mnt/dax
else
  skip fsdax-probe "no DAX file system on /mnt/dax"
  for t in $tests; do skip "fsdax-$t" "no DAX file system on /mnt/dax"; done
  skip fsdax-region_tour "no DAX file system on /mnt/dax"
  skip fsdax-heap_tour-create "no DAX file system on /mnt/dax"
  skip fsdax-heap_tour-reopen "no DAX file system on /mnt/dax"
  skip fsdax-direct-io "no DAX file system on /mnt/dax"
  for s in $bad_block_step_names; do skip "$s" "no DAX file system on /mnt/dax"; done
fi
