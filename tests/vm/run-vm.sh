#!/usr/bin/env bash
# The VM suite: daxalloc on real kernel DAX devices. Builds a busybox
# initramfs holding the nvdimm, dax and ext4 modules, ndctl, daxctl,
# mkfs.ext4 and the project's programs, boots the installed Debian kernel in
# qemu (TCG: KVM guests hang on the build machines) with 3 GiB of emulated
# pmem (memmap=3G!4G) and a small virtio disk (for direct I/O between a file
# on it and heap memory), lets the guest run guest-steps.sh, and checks the
# VMSTEP lines it printed on the console against expected_steps().
#
# Usage: tests/vm/run-vm.sh BUILD_DIR [SOURCE_DIR]
# Environment:
#   DAXALLOC_VM_TIMEOUT=SECONDS  kill the VM after this long (default 480)
#   DAXALLOC_VM_KERNEL=VERSION   kernel to boot (default: the one linux-image-amd64 installs)
#   DAXALLOC_VM_VERBOSE=1        print the whole console log
#   DAXALLOC_VM_NO_BUILD=1       do not run ninja for the guest programs
#   DAXALLOC_VM_SLOW=1           also run test_heap's model-based test (100 s or more)
#   DAXALLOC_VM_PMEM_FILE=FILE   back the pmem with FILE (an emulated 3 GiB NVDIMM,
#                                created if missing) instead of memmap= RAM, so that
#                                what the guest wrote is kept across runs
# Exit status 0 only when every expected step passed and the guest finished.
set -euo pipefail

# Programs copied into the guest, relative to BUILD_DIR (one a line; one not
# built is left out with a notice). Every tests/test_* doctest binary runs on
# the fsdax mount; those in devdax_phase_tests also run in the devdax phase.
guest_programs=(
  tests/vm/dax_probe
  tests/vm/media_probe
  tests/vm/direct_io_probe
  tools/daxalloc
  tests/test_region
  tests/test_heap
  tests/test_sparse
  examples/region_tour
  examples/heap_tour
)
# Doctest binaries that also run in the devdax phase, with their files on /tmp
# (guest RAM; a tmpfs of half of it, 1.5 GiB), which only shows that they run
# in the guest: those that fit there. test_sparse makes 2 GiB files, so it
# runs only on the fsdax mount. (The devdax phase's heaps are on the device
# itself: dax_probe's and heap_tour's.)
devdax_phase_tests=(test_region test_heap)
# Kernel modules loaded in the guest, in this order, each after what it needs.
# virtio_blk: the disk that direct I/O goes to and from (a host image).
guest_modules=(libnvdimm nd_btt nd_pmem nd_e820 dax_pmem device_dax ext4 virtio_pci virtio_blk)
# Host programs copied into the guest with their shared libraries (into
# /usr/local/sbin, ahead of busybox in PATH). GNU cp, because test_heap copies
# a heap with system("cp --sparse=always ..."), which busybox cp does not know.
guest_tools=(ndctl daxctl mkfs.ext4 cp)
# The guest's /bin/sh (for /init, the steps and system()): dash, not busybox
# sh, which runs its own applets (cp) before looking at PATH.
guest_shell=dash
# Test cases the guest leaves out, per doctest binary (a --test-case-exclude
# value: comma-separated wildcards). See docs/vm-testing.md.
declare -A guest_test_exclude=(
  # Also makes a file with a 16 TiB range, beyond ext4's largest file
  # (16 TiB - 4 KiB with 4 KiB blocks): "cannot extend to 16 TiB: File too large".
  # And expects a 2 MiB hole punch to lower st_blocks by exactly 2 MiB, which
  # on ext4 -o dax it lowers by 4 KiB less (on ext4 without dax it passes).
  [test_sparse]="*1 TiB address range*,hot-remove follows*"
  # 100 s and more under TCG (about 35 times its native time); the other
  # cases take 5 to 15 s. DAXALLOC_VM_SLOW=1 runs it.
  # The 95 % case makes a 4 GiB heap: more than the guest's 3 GiB of pmem.
  [test_heap]="model-based random test*,an empty heap hands out 95 %*"
)
[ "${DAXALLOC_VM_SLOW:-0}" = 1 ] && guest_test_exclude[test_heap]="an empty heap hands out 95 %*"

vm_timeout=${DAXALLOC_VM_TIMEOUT:-480}
kernel_args="console=ttyS0 panic=-1 loglevel=4"
# The pmem: 3 GiB, so that test_sparse's 2 GiB files fit on the fsdax mount
# (the namespace keeps 50 MiB of it for its struct pages, ext4 ~120 MiB).
pmem_gib=3
pmem_file=${DAXALLOC_VM_PMEM_FILE:+$(realpath -m "$DAXALLOC_VM_PMEM_FILE")}
if [ -z "$pmem_file" ]; then
  # qemu's pc machine puts 3 GiB of a 6 GiB guest below 4 GiB and the rest at
  # [4 GiB, 7 GiB); memmap= turns that upper part into a legacy pmem region
  # (nd_e820), leaving the guest 3 GiB of RAM. TCG allocates host memory only
  # as the guest touches it.
  pmem_desc="memmap=${pmem_gib}G!4G (guest RAM)"
  kernel_args+=" memmap=${pmem_gib}G!4G"
  memory_args=(-m "$((pmem_gib + 3))G")
else
  # An ACPI NFIT NVDIMM whose media is the host file (nfit.ko in the guest).
  pmem_desc="NVDIMM on $pmem_file (${pmem_gib} GiB)"
  guest_modules+=(nfit)
  # shellcheck disable=SC2054  # the commas are qemu's
  memory_args=(-machine "pc,nvdimm=on" -m "3G,slots=2,maxmem=$((pmem_gib + 4))G"
    -object "memory-backend-file,id=pmem1,share=on,mem-path=${pmem_file//,/,,},size=${pmem_gib}G"
    -device nvdimm,memdev=pmem1,id=nvdimm1)
fi

[ $# -ge 1 ] || die "usage: run-vm.sh BUILD_DIR [SOURCE_DIR]"
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] && here=$(cd "$2/tests/vm" && pwd)
# shellcheck source=tests/vm/vm-lib.sh
source "$here/vm-lib.sh"

# The doctest binaries among the guest programs: the guest runs each of them.
copied_tests=()

# Every step the guest must report, in order. guest-steps.sh prints them.
expected_steps() {
  local t
  echo modules pmem0 disk-mount devdax-namespace devdax-probe
  for t in "${copied_tests[@]}"; do
    [[ " ${devdax_phase_tests[*]} " == *" $t "* ]] && echo "devdax-$t"
  done
  echo devdax-region_tour devdax-heap_tour-create devdax-heap_tour-reopen devdax-direct-io
  echo fsdax-namespace fsdax-mkfs fsdax-mount fsdax-probe
  for t in "${copied_tests[@]}"; do echo "fsdax-$t"; done
  echo fsdax-region_tour fsdax-heap_tour-create fsdax-heap_tour-reopen fsdax-direct-io
  echo fsdax-badblock-fill fsdax-badblock-inject fsdax-badblock-open fsdax-badblock-check
  echo fsdax-badblock-repair fsdax-badblock-verify fsdax-poison-recovery fsdax-poison-slab
  echo fsdax-unsafe-shutdown-info
}

vm_find_host_tools
if [ -n "$pmem_file" ] && [ -e "$pmem_file" ] &&
  [ "$(stat -L -c %s "$pmem_file")" -lt $((pmem_gib << 30)) ]; then
  die "$pmem_file is smaller than the ${pmem_gib} GiB NVDIMM (made by an older run-vm.sh?);" \
    "remove it and a new one is made"
fi

vm_build_programs "$build"

vm_make_stage daxalloc-vm
root=$stage/root
build_start=$(date +%s.%N)
vm_stage_root "$root" "$build"
for p in "${vm_copied_programs[@]}"; do
  case "$p" in tests/test_*) copied_tests+=("${p#tests/}") ;; esac
done
# The guest always runs test_region (a missing one fails there); list it once.
if [ ${#copied_tests[@]} -eq 0 ] || [ "${copied_tests[0]}" != test_region ]; then
  rest=()
  for t in "${copied_tests[@]}"; do [ "$t" = test_region ] || rest+=("$t"); done
  copied_tests=(test_region "${rest[@]}")
fi

printf '%s\n' "${devdax_phase_tests[@]}" >"$root/vm/devdax-tests"
mkdir -p "$root/vm/exclude"
for t in "${!guest_test_exclude[@]}"; do
  [ -z "${guest_test_exclude[$t]}" ] || printf '%s\n' "${guest_test_exclude[$t]}" >"$root/vm/exclude/$t"
done
install -m 755 "$here/guest-steps.sh" "$root/vm/guest-steps.sh"
vm_pack "$root" "$stage/initramfs.cpio"
# The guest's disk for direct I/O (/dev/vda; it makes an ext4 on it): sparse,
# in the stage, gone with it. The host's caching of it does not matter: the
# guest's O_DIRECT is what takes its DAX pages for the I/O.
disk_image=$stage/disk.img
truncate -s 64M "$disk_image"
# shellcheck disable=SC2054  # the commas are qemu's
disk_args=(-drive "file=${disk_image//,/,,},if=virtio,format=raw")
build_end=$(date +%s.%N)

mkdir -p "$build/tests/vm"
log=$build/tests/vm/console.log
echo "kernel $kver ($kernel), qemu $("$qemu" --version | head -n 1 | awk '{print $4}') (TCG)," \
  "pmem: $pmem_desc"
vm_boot "$log" "${memory_args[@]}" "${disk_args[@]}"
# A step line is "VMSTEP <name> PASS|FAIL <reason>".
# shellcheck disable=SC2046  # a word per step
vm_check_steps "$console" "$status" "$vm_timeout" $(expected_steps)

echo "VM time: $vm_time s (boot, steps, power-off); kernel $kver; console log: $log"
vm_finish vm "$console"
