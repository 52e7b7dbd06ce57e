#!/bin/sh
# The two-node VM run's steps (run-vm-numa.sh), run by /init when the kernel
# command line has daxalloc.steps=numa-steps.sh. The guest has two NUMA
# nodes of one CPU each and an emulated NVDIMM on each, in slots 0 and 1 (the
# NVDIMM in slot s is on node s). Each step prints its output and one VMSTEP
# line (guest-lib.sh); the host checks them against its expected_steps().
# daxalloc.bench=RUNS,OPS,OBJECTS on the command line sizes the bench.

probe=/opt/daxalloc/tests/vm/numa_probe
devices=/tmp/numa-devices  # "DEV0 DEV1": the devdax device of node 0, of node 1
step_timeout=120
# shellcheck source=tests/vm/guest-lib.sh
. /vm/guest-lib.sh

bench="5 20000 100000"
# shellcheck disable=SC2013  # words, not lines
for arg in $(cat /proc/cmdline); do
  case "$arg" in daxalloc.bench=*) bench=$(echo "${arg#daxalloc.bench=}" | tr , ' ') ;; esac
done

# The kernel's nodes: both online, each with its CPU and memory, and the
# SLIT distances (qemu's defaults without -numa dist: 10 local, 20 remote).
show_nodes() {
  online=$(cat /sys/devices/system/node/online)
  echo "online nodes: $online"
  for n in 0 1; do
    d=/sys/devices/system/node/node$n
    [ -d "$d" ] || {
      echo "ERROR: no node$n in sysfs"
      return 1
    }
    echo "node$n: cpus $(cat "$d/cpulist"), distance $(cat "$d/distance")," \
      "$(awk '/MemTotal/ {print $4 " kB"}' "$d/meminfo")"
    [ "$(cat "$d/cpulist")" = "$n" ] || {
      echo "ERROR: node$n has CPUs $(cat "$d/cpulist"), not CPU $n"
      return 1
    }
  done
  [ "$online" = "0-1" ] || {
    echo "ERROR: online nodes are $online, not 0-1"
    return 1
  }
}

# Each NVDIMM's region made one devdax namespace, and the nodes sysfs gives
# the region and its dax device checked against the NVDIMM's slot. Writes
# the two devices, node 0's first, to $devices.
make_namespaces() {
  wait_for /sys/bus/nd/devices/region0 && wait_for /sys/bus/nd/devices/region1 || return 1
  dev0="" dev1=""
  for region in /sys/bus/nd/devices/region*; do
    r=${region##*/region}
    # mapping0: "nmemN,offset,length,position" (one DIMM per region here)
    nmem=$(cut -d, -f1 "$region/mapping0")
    handle=$(($(cat "/sys/bus/nd/devices/$nmem/nfit/handle")))
    want=$((handle - 1))  # qemu's NFIT handle of the NVDIMM in slot s is s + 1
    ndctl create-namespace -f -e "namespace$r.0" --mode=devdax --align=2M >/dev/null &&
      wait_for "/dev/dax$r.0" || return 1
    dax=/sys/bus/dax/devices/dax$r.0
    echo "region$r: $nmem (NFIT handle $handle: slot $want), region numa_node" \
      "$(cat "$region/numa_node"), target_node $(cat "$region/target_node");" \
      "dax$r.0 numa_node $(cat "$dax/numa_node"), target_node $(cat "$dax/target_node")," \
      "size $(($(cat "$dax/size") >> 20)) MiB"
    for node in "$(cat "$region/numa_node")" "$(cat "$dax/numa_node")"; do
      [ "$node" = "$want" ] || {
        echo "ERROR: region$r or dax$r.0 is on node $node, its NVDIMM (slot $want) on node $want"
        return 1
      }
    done
    if [ "$want" = 0 ]; then dev0=/dev/dax$r.0; else dev1=/dev/dax$r.0; fi
  done
  if [ -z "$dev0" ] || [ -z "$dev1" ]; then
    echo "ERROR: no devdax device on node 0 ('$dev0') or node 1 ('$dev1')"
    return 1
  fi
  daxctl list
  echo "$dev0 $dev1" >"$devices"
}

self=$0
if [ "${1:-}" = --do ]; then
  shift
  "$@"
  exit
fi

run numa-modules sh "$self" --do load_modules
run numa-nodes sh "$self" --do show_nodes
if run numa-namespaces sh "$self" --do make_namespaces; then
  read -r dev0 dev1 <"$devices"
  want="numa_probe: PASS heap over two nodes"
  run numa-heap "$probe" heap "$dev0" "$dev1"
  want="numa_probe: PASS remove_region"
  run numa-remove "$probe" remove "$dev0" "$dev1"
  want="numa_probe: PASS bench"
  # shellcheck disable=SC2086  # three numbers
  run numa-bench "$probe" bench "$dev0" "$dev1" $bench
else
  for s in numa-heap numa-remove numa-bench; do skip "$s" "no devdax device on each node"; done
fi
