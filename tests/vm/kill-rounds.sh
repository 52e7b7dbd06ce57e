#!/usr/bin/env bash
# The VM-kill recovery rounds: daxalloc heaps on emulated NVDIMMs backed by
# host files, a workload publishing objects in the guest, qemu killed with
# SIGKILL at a random moment, and a boot on the same files that recovers and
# verifies every object the guest reported as published. See
# docs/emulated-pmem.md, section 9.
#
# Boot 1 makes a devdax namespace on one NVDIMM and an ext4 -o dax file system
# on the other, creates a heap on each (/dev/dax0.0, /mnt/dax/heap) and runs
# kill_workload on both at once; a random time after both printed their
# first PUBLISHED lines, the host kills qemu. Each later boot verifies
# both heaps (kill-check.py compares what is there with what the serial
# ports said), runs the workloads again and is killed in turn; the last boot
# only verifies. Killing qemu loses what the guest had not yet stored to the
# NVDIMM (the rest of the operation in flight, guest RAM, the guest's page
# cache), but no store it made: the NVDIMM is a shared mapping of the host
# file, and qemu models no CPU cache that could hold data back. So this tests
# losing the work in flight at a power failure, not losing cache lines that
# were never flushed.
#
# Usage: tests/vm/kill-rounds.sh BUILD_DIR [SOURCE_DIR]
# Environment:
#   DAXALLOC_VM_KILL_ROUNDS=N     kills (default 3); N + 1 boots
#   DAXALLOC_VM_KILL_SEED=N       the seed of the kill moments and workloads (default: random)
#   DAXALLOC_VM_KILL_DIR=DIR      where the NVDIMM backing files go (default /dev/shm if
#                                 it has room, else BUILD_DIR/tests/vm); removed at the end
#   DAXALLOC_VM_KILL_KEEP=1       keep the backing files (their paths are printed)
#   DAXALLOC_VM_BOOT_TIMEOUT=S    a boot must reach its kill point or power off within S s (180)
#   DAXALLOC_VM_KERNEL, DAXALLOC_VM_VERBOSE, DAXALLOC_VM_NO_BUILD: as for run-vm.sh
# Exit status 0 only when every round's verify found every object as reported.
set -euo pipefail

guest_programs=(tests/vm/kill_workload)
guest_modules=(libnvdimm nd_btt nd_pmem dax_pmem device_dax ext4 nfit)
guest_tools=(ndctl daxctl mkfs.ext4)
guest_shell=dash

rounds=${DAXALLOC_VM_KILL_ROUNDS:-3}
seed=${DAXALLOC_VM_KILL_SEED:-$(($(od -An -N4 -tu4 /dev/urandom) % 1000000))}
boot_timeout=${DAXALLOC_VM_BOOT_TIMEOUT:-180}
nvdimm_gib=1
# The kill moment: once both workloads have printed kill_lines PUBLISHED
# lines in the boot, after a random delay of up to kill_delay_ms (time, not a
# line count, so that a slow or busy machine does not make a round longer).
kill_lines=100
kill_delay_ms=5000

[ $# -ge 1 ] || { echo "usage: kill-rounds.sh BUILD_DIR [SOURCE_DIR]" >&2; exit 1; }
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] && here=$(cd "$2/tests/vm" && pwd)
# shellcheck source=tests/vm/vm-lib.sh
source "$here/vm-lib.sh"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "DAXALLOC_VM_KILL_ROUNDS=$rounds: want a number >= 1"
[[ "$seed" =~ ^[0-9]+$ ]] || die "DAXALLOC_VM_KILL_SEED=$seed: want a number"
command -v python3 >/dev/null || die "python3 not found"

vm_find_host_tools
vm_build_programs "$build"
[ -x "$build/tests/vm/kill_workload" ] || die "$build/tests/vm/kill_workload is not built"

stage=$(mktemp -d "${TMPDIR:-/tmp}/daxalloc-vmkill.XXXXXX")
# The backing files are sparse, but may fill up to their size: /dev/shm only
# if it has room for both (a container's is often 64 MiB).
pmem_dir=${DAXALLOC_VM_KILL_DIR:-}
if [ -z "$pmem_dir" ]; then
  pmem_dir=$build/tests/vm
  if [ -d /dev/shm ] && [ -w /dev/shm ] &&
    [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -ge $((2 * nvdimm_gib << 20)) ]; then
    pmem_dir=/dev/shm
  fi
fi
mkdir -p "$pmem_dir" "$build/tests/vm"
pmem_files=("$pmem_dir/daxalloc-vmkill-$$-0.img" "$pmem_dir/daxalloc-vmkill-$$-1.img")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill -9 "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$stage"
  if [ "${DAXALLOC_VM_KILL_KEEP:-0}" != 1 ]; then rm -f "${pmem_files[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_start=$(date +%s.%N)
vm_stage_root "$stage/root" "$build"
install -m 755 "$here/kill-steps.sh" "$stage/root/vm/kill-steps.sh"
vm_pack "$stage/root" "$stage/initramfs.cpio"
build_end=$(date +%s.%N)

rm -f "${pmem_files[@]}" "$build"/tests/vm/kill-boot* "$build/tests/vm/kill-state.json"
memory_args=(-machine "pc,nvdimm=on" -m "2G,slots=2,maxmem=8G")
for i in 0 1; do
  truncate -s "${nvdimm_gib}G" "${pmem_files[$i]}"  # sparse: only what the guest writes
  # shellcheck disable=SC2054  # the commas are qemu's
  memory_args+=(-object "memory-backend-file,id=pmem$i,share=on,mem-path=${pmem_files[$i]//,/,,},size=${nvdimm_gib}G"
    -device "nvdimm,memdev=pmem$i,id=nvdimm$i")
done

RANDOM=$seed
echo "kernel $kver, qemu $("$qemu" --version | head -n 1 | awk '{print $4}') (TCG);" \
  "2 NVDIMMs of $nvdimm_gib GiB on ${pmem_files[*]}"
echo "initramfs: $(($(stat -c %s "$stage/initramfs.cpio") >> 20)) MiB," \
  "built in $(seconds_between "$build_start" "$build_end") s"
echo "$rounds rounds, seed $seed (DAXALLOC_VM_KILL_SEED=$seed repeats the kill delays" \
  "and the workloads' choices, not the timing of a TCG guest)"

# published_enough LOG_PREFIX N: both workloads have printed N PUBLISHED lines.
published_enough() {
  cat "$1"-devdax.log "$1"-fsdax.log 2>/dev/null | awk -v n="$2" '
    /^PUBLISHED devdax / { d++ }
    /^PUBLISHED fsdax / { f++ }
    END { exit !(d >= n && f >= n) }'
}

vm_total=0
boots=0
failed=0
kills=0
state=$build/tests/vm/kill-state.json
for ((boot = 1; boot <= rounds + 1; boot++)); do
  if [ "$boot" -eq 1 ]; then phase="create"
  elif [ "$boot" -le "$rounds" ]; then phase="continue"
  else phase="final"; fi
  log=$build/tests/vm/kill-boot$boot.log
  kill_delay=$((RANDOM % kill_delay_ms))
  guest_seed=$((seed * 100 + boot * 2))
  args="console=ttyS0 panic=-1 loglevel=4 daxalloc.steps=kill-steps.sh"
  args+=" daxalloc.phase=$phase daxalloc.seed=$guest_seed"

  start=$(date +%s.%N)
  boots=$((boots + 1))
  rm -f "$log" "${log%.log}"-*.log
  # ttyS0 the console, ttyS1 and ttyS2 the two workloads' lines.
  "$qemu" -accel tcg -cpu max "${memory_args[@]}" -smp 2 -nographic -no-reboot -nic none \
    -serial mon:stdio -serial "file:${log%.log}-devdax.log" -serial "file:${log%.log}-fsdax.log" \
    -kernel "$kernel" -initrd "$stage/initramfs.cpio" -append "$args" </dev/null >"$log" 2>&1 &
  qemu_pid=$!
  outcome=""
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ "$phase" != final ] && published_enough "${log%.log}" "$kill_lines"; then
      sleep "$(awk -v ms="$kill_delay" 'BEGIN { printf "%.3f", ms / 1000 }')"
      kill -9 "$qemu_pid"
      outcome="killed"
      break
    fi
    if cat "${log%.log}"-*.log 2>/dev/null | grep -aq '^WORKLOAD [a-z]* FAIL'; then
      kill -9 "$qemu_pid"
      outcome="workload failed"
      break
    fi
    if awk -v a="$start" -v b="$(date +%s.%N)" -v t="$boot_timeout" 'BEGIN { exit !(b - a > t) }'; then
      kill -9 "$qemu_pid"
      outcome="timeout"
      break
    fi
    sleep 0.1
  done
  status=0
  { wait "$qemu_pid" || status=$?; } 2>/dev/null  # without bash's "Killed" notice
  qemu_pid=""
  end=$(date +%s.%N)
  took=$(seconds_between "$start" "$end")
  vm_total=$(awk -v a="$vm_total" -v b="$took" 'BEGIN { printf "%.1f", a + b }')
  vm_console "$log" >"$log.txt"
  for tag in devdax fsdax; do
    touch "${log%.log}-$tag.log"
    vm_console "${log%.log}-$tag.log" >"${log%.log}-$tag.log.txt"
  done
  [ "${DAXALLOC_VM_VERBOSE:-0}" = 1 ] && sed "s/^/boot $boot | /" "$log.txt"

  case "$outcome" in
    killed)
      kills=$((kills + 1))
      echo "boot $boot ($phase): SIGKILL to qemu $kill_delay ms after both workloads had" \
        "$kill_lines PUBLISHED lines, $took s after its start"
      ;;
    timeout)
      echo "boot $boot ($phase): FAIL: no kill point or power-off within $boot_timeout s; killed"
      failed=1
      ;;
    "workload failed")
      echo "boot $boot ($phase): FAIL: a workload failed (below); VM killed"
      failed=1
      ;;
    *)
      if [ "$phase" != final ]; then
        echo "boot $boot ($phase): FAIL: qemu exited (status $status) before the kill point"
        failed=1
      elif [ "$status" -ne 0 ] || ! grep -qx 'KILLSTEPS DONE' "$log.txt"; then
        echo "boot $boot ($phase): FAIL: the guest did not finish (qemu status $status)"
        failed=1
      else
        echo "boot $boot ($phase): verified and powered off, $took s"
      fi
      ;;
  esac
  python3 "$here/kill-check.py" "$state" "$boot" "$phase" \
    "$log.txt" "${log%.log}-devdax.log.txt" "${log%.log}-fsdax.log.txt" || failed=1
  if [ "$failed" -ne 0 ]; then
    if [ "${DAXALLOC_VM_VERBOSE:-0}" != 1 ]; then
      echo "---- last 60 lines of the console of boot $boot ($log) ----"
      grep -av '^\(PUBLISHED\|FREEING\|FREED\|PRESENT\) ' "$log.txt" | tail -n 60
      for tag in devdax fsdax; do
        echo "---- last 5 lines of the $tag workload of boot $boot ----"
        tail -n 5 "${log%.log}-$tag.log.txt" | awk 1  # ends a cut-off last line
      done
    fi
    break
  fi
done

if [ "${DAXALLOC_VM_KILL_KEEP:-0}" = 1 ]; then echo "NVDIMM backing files kept: ${pmem_files[*]}"; fi
echo "VM time: $vm_total s in $boots boots; console logs: $build/tests/vm/kill-boot*.log"
summary=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
print(s.get("verified_rounds", 0), s.get("verified_objects", 0), s.get("live_objects", 0))' \
  "$state" 2>/dev/null || echo "0 0 0")
read -r verified_rounds verified live <<<"$summary"
if [ "$failed" -ne 0 ] || [ "$verified_rounds" -ne "$rounds" ]; then
  echo "vm_kill: FAIL after $kills kills and $verified_rounds verified rounds (seed $seed)"
  exit 1
fi
echo "vm_kill: PASS: $rounds rounds, $kills kills of qemu, $verified_rounds recoveries verified;" \
  "$verified objects published in all, each found intact or freed as the console said;" \
  "$live live at the end (seed $seed)"
