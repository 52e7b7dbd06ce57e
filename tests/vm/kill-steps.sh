#!/bin/sh
# The guest side of the VM-kill recovery rounds (kill-rounds.sh), run by
# /init when the kernel command line has daxalloc.steps=kill-steps.sh. The VM
# has two emulated NVDIMMs backed by host files: region 0 becomes a devdax
# device (/dev/dax0.0), region 1 an fsdax namespace with ext4 mounted -o dax
# (/dev/pmem1 on /mnt/dax). The kernel command line also says
#
#   daxalloc.phase=create    first boot: make the namespaces and the file
#                            system, create both heaps, run the workloads
#   daxalloc.phase=continue  later boots: recover and verify both heaps, then
#                            run the workloads on them again
#   daxalloc.phase=final     last boot: recover and verify, power off
#   daxalloc.seed=N          the workloads' seed (devdax N, fsdax N + 1)
#
# The workloads (kill_workload run) publish until the host kills the VM; their
# PUBLISHED/FREEING/FREED lines go to the serial ports ttyS1 (devdax) and
# ttyS2 (fsdax), the VERIFY/PRESENT lines of kill_workload verify to the
# console (ttyS0); the host checks them all. Each setup step
# prints "KILLSTEP <name> PASS" or "KILLSTEP <name> FAIL <reason>".

workload=/opt/daxalloc/tests/vm/kill_workload
out=/tmp/killstep-output
phase=""
seed=1
# shellcheck disable=SC2013  # words, not lines
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    daxalloc.phase=*) phase=${arg#daxalloc.phase=} ;;
    daxalloc.seed=*) seed=${arg#daxalloc.seed=} ;;
  esac
done

# step NAME COMMAND...: runs COMMAND; on failure shows its output and the
# tail of dmesg. Returns COMMAND's status.
step() {
  name=$1
  shift
  started=$(date +%s)
  "$@" >"$out" 2>&1 </dev/null
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "KILLSTEP $name PASS ($(($(date +%s) - started)) s)"
    return 0
  fi
  sed 's/^/  | /' "$out"
  dmesg | tail -n 12 | sed 's/^/  dmesg: /'
  reason=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1 | cut -c 1-200)
  echo "KILLSTEP $name FAIL exit $rc: $reason"
  return 1
}

# wait_for PATH...: up to 10 s for device nodes to appear.
wait_for() {
  for path in "$@"; do
    i=0
    while [ ! -e "$path" ] && [ $i -lt 100 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    [ -e "$path" ] || {
      echo "ERROR: $path did not appear within 10 s"
      ndctl list -RN
      return 1
    }
  done
}

load_modules() {
  while read -r module; do
    insmod "$module" || echo "note: insmod $module failed (fatal only if it is required)"
  done </vm/modules
  while read -r m; do
    [ -d "/sys/module/$m" ] || {
      echo "ERROR: module $m not loaded"
      return 1
    }
  done </vm/required-modules
}
make_namespaces() {
  # Two label-less NVDIMMs: one raw namespace each, namespace0.0 and
  # namespace1.0, until reconfigured. The mode is kept on the media (the info
  # block), so later boots find dax0.0 and pmem1 again.
  wait_for /dev/pmem0 /dev/pmem1 &&
    ndctl create-namespace -f -e namespace0.0 --mode=devdax --align=2M &&
    ndctl create-namespace -f -e namespace1.0 --mode=fsdax --map=dev &&
    wait_for /dev/dax0.0 /dev/pmem1 &&
    mkfs.ext4 -F -q -b 4096 /dev/pmem1
}
mount_dax() {
  mount -t ext4 -o dax /dev/pmem1 /mnt/dax || return 1
  if ! grep -q " /mnt/dax ext4 [^ ]*dax" /proc/mounts; then
    echo "ERROR: /mnt/dax is not mounted with dax"
    grep /mnt/dax /proc/mounts
    return 1
  fi
}

# Step bodies of more than one command run as "sh $self --do FUNCTION".
self=$0
if [ "${1:-}" = --do ]; then
  shift
  "$@"
  exit
fi

echo "KILLSTEPS phase $phase, seed $seed"
step modules sh "$self" --do load_modules || exit 1
case "$phase" in
  create)
    step namespaces sh "$self" --do make_namespaces || exit 1
    create=--create
    ;;
  continue | final)
    step devices sh "$self" --do wait_for /dev/dax0.0 /dev/pmem1 || exit 1
    create=""
    ;;
  *)
    echo "KILLSTEP phase FAIL unknown phase '$phase' (daxalloc.phase=create|continue|final)"
    exit 1
    ;;
esac
step mount sh "$self" --do mount_dax || exit 1

if [ "$phase" != create ]; then
  ok=1
  "$workload" verify /dev/dax0.0 devdax || ok=0
  "$workload" verify /mnt/dax/heap fsdax || ok=0
  if [ "$phase" = final ] || [ $ok -eq 0 ]; then
    umount /mnt/dax
    echo "KILLSTEPS DONE"
    exit 0
  fi
fi

# Both workloads at once (the guest has 2 CPUs), until the host kills the VM.
# Each has a serial port of its own (ttyS1, ttyS2; the host logs each to a
# file): their tcdrain() after every line waits until the port has sent all
# it was given, which on a shared console would make each wait for the other.
"$workload" run /dev/dax0.0 devdax $create --seed "$seed" </dev/null >/dev/ttyS1 2>&1 &
dax_pid=$!
"$workload" run /mnt/dax/heap fsdax $create --seed "$((seed + 1))" </dev/null >/dev/ttyS2 2>&1 &
fs_pid=$!
wait "$dax_pid"
echo "WORKLOAD devdax exited with status $?"
wait "$fs_pid"
echo "WORKLOAD fsdax exited with status $?"
umount /mnt/dax
echo "KILLSTEPS DONE"
