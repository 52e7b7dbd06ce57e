#!/usr/bin/env bash
# The two-node VM run: one daxalloc heap over two emulated NVDIMMs on two
# NUMA nodes. Boots the installed Debian kernel in qemu (TCG) with two nodes
# of one CPU and 1 GiB of RAM each and one NVDIMM per node, lets the guest run
# numa-steps.sh (both NVDIMMs made devdax, then tests/vm/numa_probe: a heap on
# node 0's device, node 1's added online, placement by node, removal, and a
# bench of node-local against remote allocation), and checks its VMSTEP
# lines as run-vm.sh does. See docs/vm-testing.md, "Two NUMA nodes".
#
# Usage: tests/vm/run-vm-numa.sh BUILD_DIR [SOURCE_DIR]
# Environment:
#   DAXALLOC_VM_TIMEOUT=SECONDS      kill the VM after this long (default 300)
#   DAXALLOC_VM_NUMA_BENCH="R O N"   the bench's runs, churn operations and
#                                    round objects (default "5 20000 100000")
#   DAXALLOC_VM_KERNEL, DAXALLOC_VM_VERBOSE, DAXALLOC_VM_NO_BUILD: as for run-vm.sh
# Exit status 0 only when every expected step passed and the guest finished.
set -euo pipefail

guest_programs=(tests/vm/numa_probe)
# nfit: the ACPI NVDIMMs (after libnvdimm); no e820 (legacy) pmem here.
guest_modules=(libnvdimm nd_btt nd_pmem dax_pmem device_dax nfit)
guest_tools=(ndctl daxctl)
guest_shell=dash

vm_timeout=${DAXALLOC_VM_TIMEOUT:-300}
bench=${DAXALLOC_VM_NUMA_BENCH:-5 20000 100000}
nvdimm_gib=1

[ $# -ge 1 ] || { echo "usage: run-vm-numa.sh BUILD_DIR [SOURCE_DIR]" >&2; exit 1; }
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] && here=$(cd "$2/tests/vm" && pwd)
# shellcheck source=tests/vm/vm-lib.sh
source "$here/vm-lib.sh"
[[ "$bench" =~ ^[1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*$ ]] ||
  die "DAXALLOC_VM_NUMA_BENCH=\"$bench\": want three numbers, \"RUNS OPS OBJECTS\""

expected_steps() {
  echo numa-modules numa-nodes numa-namespaces numa-heap numa-remove numa-bench
}

vm_find_host_tools
vm_build_programs "$build"

vm_make_stage daxalloc-vmnuma
build_start=$(date +%s.%N)
vm_stage_root "$stage/root" "$build"
install -m 755 "$here/numa-steps.sh" "$stage/root/vm/numa-steps.sh"
vm_pack "$stage/root" "$stage/initramfs.cpio"
build_end=$(date +%s.%N)

# Two nodes, each a CPU and 1 GiB of RAM (-numa memdev: the RAM of a node
# is a backend of its own, and the nodes' backends add up to -m). The
# NVDIMMs go into the machine's hotplug memory area (slots, maxmem), each
# with the node of its NFIT range and SRAT entry (node=); their slots are
# fixed, so that the guest can tell them apart by NFIT handle (slot + 1).
# Their media are sparse files in the stage, gone with it.
# shellcheck disable=SC2054  # the commas are qemu's
memory_args=(-machine "pc,nvdimm=on" -m "2G,slots=4,maxmem=8G"
  -object memory-backend-ram,id=ram0,size=1G -object memory-backend-ram,id=ram1,size=1G
  -numa node,nodeid=0,cpus=0,memdev=ram0 -numa node,nodeid=1,cpus=1,memdev=ram1)
for node in 0 1; do
  image=$stage/nv$node.img
  truncate -s "${nvdimm_gib}G" "$image"
  # shellcheck disable=SC2054
  memory_args+=(-object "memory-backend-file,id=pmem$node,share=on,mem-path=${image//,/,,},size=${nvdimm_gib}G"
    -device "nvdimm,memdev=pmem$node,id=nv$node,slot=$node,node=$node")
done
kernel_args="console=ttyS0 panic=-1 loglevel=4 daxalloc.steps=numa-steps.sh"
kernel_args+=" daxalloc.bench=${bench// /,}"

mkdir -p "$build/tests/vm"
log=$build/tests/vm/console-numa.log
echo "kernel $kver, qemu $("$qemu" --version | head -n 1 | awk '{print $4}') (TCG);" \
  "2 NUMA nodes of 1 CPU and 1 GiB RAM, an NVDIMM of $nvdimm_gib GiB on each"
vm_boot "$log" "${memory_args[@]}"

# shellcheck disable=SC2046  # a word per step
vm_check_steps "$console" "$status" "$vm_timeout" $(expected_steps)
# The bench's numbers, for the log of a passing run too.
grep -a '^  | numa_probe: bench: ' <<<"$console" | sed 's/^  | //' || true
echo "VM time: $vm_time s (boot, steps, power-off);" \
  "kernel $kver; console log: $log"
vm_finish vm_numa "$console"
