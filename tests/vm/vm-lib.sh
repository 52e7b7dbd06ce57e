# shellcheck shell=bash disable=SC2154,SC2034  # the caller's arrays; the variables set for it
# Shared by the VM suite's host scripts (run-vm.sh, run-vm-numa.sh,
# kill-rounds.sh): finding the kernel and qemu, building the guest programs,
# staging and packing the busybox initramfs, reading the console and checking
# the VMSTEP lines on it. Sourced, not run; bash.
#
# Before vm_stage_root the caller sets these arrays and variables:
#   guest_programs  programs copied into the guest, relative to the build dir
#   guest_modules   kernel modules loaded in the guest, in order
#   guest_tools     host programs copied into /usr/local/sbin (with their libraries)
#   guest_shell     the guest's /bin/sh (dash)
#   here            the directory holding init and the guest scripts

vm_libdir=/lib/x86_64-linux-gnu

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The kernel version to boot: $DAXALLOC_VM_KERNEL, else the one the
# linux-image-amd64 meta-package depends on, else the newest /boot/vmlinuz-*
# that has its modules.
vm_kernel_version() {
  if [ -n "${DAXALLOC_VM_KERNEL:-}" ]; then
    echo "$DAXALLOC_VM_KERNEL"
    return
  fi
  local dep v
  dep=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
    grep -o 'linux-image-[^ ,|]*' | head -n 1 || true)
  if [ -n "$dep" ]; then
    echo "${dep#linux-image-}"
    return
  fi
  for v in $(printf '%s\n' /boot/vmlinuz-* | sed 's|^/boot/vmlinuz-||' | sort -rV); do
    if [ -d "/lib/modules/$v/kernel" ]; then
      echo "$v"
      return
    fi
  done
}

# Sets kver, kernel, moddir, qemu and busybox, or stops with what to install.
vm_find_host_tools() {
  export PATH=$PATH:/usr/sbin:/sbin
  kver=$(vm_kernel_version)
  kernel=/boot/vmlinuz-$kver
  moddir=/lib/modules/$kver
  if [ -z "$kver" ] || [ ! -r "$kernel" ] || [ ! -d "$moddir/kernel" ]; then
    die "no kernel for the VM ($kernel or $moddir missing or unreadable);" \
      "install linux-image-amd64: scripts/deps.sh vm"
  fi
  qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found: scripts/deps.sh vm"
  busybox=$(command -v busybox) || die "busybox not found: scripts/deps.sh vm (busybox-static)"
  command -v cpio >/dev/null || die "cpio not found: scripts/deps.sh vm"
  if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked; install busybox-static"; fi
}

# vm_build_programs BUILD_DIR: builds the guest programs with ninja (`meson
# test --suite vm` rebuilds only the tests' own dependencies), unless
# DAXALLOC_VM_NO_BUILD=1.
vm_build_programs() {
  [ "${DAXALLOC_VM_NO_BUILD:-0}" != 1 ] && command -v ninja >/dev/null || return 0
  local known p wanted=()
  known=$(ninja -C "$1" -t targets all 2>/dev/null | cut -d: -f1)
  for p in "${guest_programs[@]}"; do
    grep -qxF "$p" <<<"$known" && wanted+=("$p")
  done
  if [ ${#wanted[@]} -gt 0 ]; then
    ninja -C "$1" "${wanted[@]}" >/dev/null || die "ninja could not build ${wanted[*]}"
  fi
}

# vm_copy_libraries ROOT BINARY: every shared library ldd finds, and the loader.
vm_copy_libraries() {
  local root=$1 out name arrow path rest
  out=$(ldd "$2" 2>&1) || {
    grep -q "not a dynamic executable" <<<"$out" && return 0
    die "ldd $2 failed: $out"
  }
  while read -r name arrow path rest; do
    if [ "$arrow" = "=>" ]; then
      [ "$path" = "not" ] && die "$2 needs $name, which ldd does not find"
      [ -e "$root$vm_libdir/$name" ] || cp -L "$path" "$root$vm_libdir/$name"
    elif [ "${name:0:1}" = / ]; then  # the dynamic loader, at its own path
      mkdir -p "$root$(dirname "$name")"
      [ -e "$root$name" ] || cp -L "$name" "$root$name"
    fi
  done <<<"$out"
}

# vm_stage_root ROOT BUILD_DIR: the guest's file system: busybox and its
# applets, the shell, the tools, the programs (at /opt/daxalloc/<build-dir
# path>; one not built is left out with a notice), the modules with what they
# depend on (decompressed; /vm/modules lists them in load order,
# /vm/required-modules the names that must load) and /init. Sets
# vm_copied_programs to the programs copied.
vm_stage_root() {
  local root=$1 build=$2 applet path tool p m deps verb rel target
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/sbin,dev,proc,sys,tmp,mnt,etc,vm,lib64}
  mkdir -p "$root$vm_libdir" "$root/opt/daxalloc"

  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done

  path=$(command -v "$guest_shell") || die "$guest_shell not found (Debian's /bin/sh)"
  rm -f "$root/bin/sh"
  cp -L "$path" "$root/bin/sh"
  vm_copy_libraries "$root" "$path"

  for tool in "${guest_tools[@]}"; do
    path=$(command -v "$tool") || die "$tool not found: scripts/deps.sh vm"
    cp -L "$path" "$root/usr/local/sbin/$tool"
    vm_copy_libraries "$root" "$path"
  done
  if [ -f /etc/mke2fs.conf ]; then cp /etc/mke2fs.conf "$root/etc/"; fi

  vm_copied_programs=()
  for p in "${guest_programs[@]}"; do
    if [ ! -x "$build/$p" ]; then
      echo "${0##*/}: notice: $build/$p is not built; not copied into the guest"
      continue
    fi
    mkdir -p "$root/opt/daxalloc/$(dirname "$p")"
    cp -L "$build/$p" "$root/opt/daxalloc/$p"
    vm_copy_libraries "$root" "$build/$p"
    vm_copied_programs+=("$p")
  done

  : >"$root/vm/modules"
  : >"$root/vm/required-modules"
  local -A seen=()
  for m in "${guest_modules[@]}"; do
    deps=$(modprobe -S "$kver" --ignore-install --show-depends "$m") ||
      die "modprobe does not find module $m for kernel $kver"
    while read -r verb path _; do
      [ "$verb" = insmod ] || continue
      [ -n "${seen[$path]:-}" ] && continue
      seen[$path]=1
      rel=${path#"$moddir"/}
      target=$root/lib/modules/$kver/${rel%.*}.ko
      mkdir -p "$(dirname "$target")"
      case "$path" in
        *.ko.xz) xz -dc "$path" >"$target" ;;
        *.ko.zst) zstd -qdc "$path" >"$target" ;;
        *.ko.gz) gzip -dc "$path" >"$target" ;;
        *.ko) cp "$path" "$target" ;;
        *) die "unknown module file $path" ;;
      esac
      echo "/lib/modules/$kver/${rel%.*}.ko" >>"$root/vm/modules"
    done <<<"$deps"
    if grep -q "^insmod .*/$m\.ko" <<<"$deps"; then echo "$m" >>"$root/vm/required-modules"; fi
  done
  # Module indexes, so that libkmod (used by ndctl) can look modules up.
  if command -v depmod >/dev/null; then depmod -b "$root" "$kver" 2>/dev/null || true; fi

  install -m 755 "$here/init" "$root/init"
  install -m 644 "$here/guest-lib.sh" "$root/vm/guest-lib.sh"
  # /init reopens the console on devtmpfs; this node only helps the kernel open it first.
  if [ "$(id -u)" -eq 0 ]; then mknod -m 600 "$root/dev/console" c 5 1; fi
}

# vm_pack ROOT CPIO: the initramfs.
# vm_make_stage NAME: a temporary directory for the run's files in $stage,
# removed on exit with the VM ($qemu_pid, when set) killed first.
vm_make_stage() {
  stage=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  qemu_pid=""
  trap 'if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi; rm -rf "$stage"' EXIT
  trap 'exit 130' INT TERM
}

# vm_boot LOG QEMU_ARGS...: boots $kernel with $stage/initramfs.cpio and
# $kernel_args under TCG (2 CPUs, no network, no display), the machine's
# own QEMU_ARGS added, killed after $vm_timeout s; the console goes to LOG.
# Sets $status (qemu's, or timeout's), $vm_time (s) and $console (cleaned).
vm_boot() {
  local log=$1 start end
  shift
  echo "initramfs: $(($(stat -c %s "$stage/initramfs.cpio") >> 20)) MiB," \
    "built in $(seconds_between "$build_start" "$build_end") s"
  start=$(date +%s.%N)
  timeout -k 10 "$vm_timeout" "$qemu" -accel tcg -cpu max -smp 2 -nographic -no-reboot -nic none \
    "$@" -kernel "$kernel" -initrd "$stage/initramfs.cpio" -append "$kernel_args" \
    </dev/null >"$log" 2>&1 &
  qemu_pid=$!
  status=0
  wait "$qemu_pid" || status=$?
  qemu_pid=""
  end=$(date +%s.%N)
  vm_time=$(seconds_between "$start" "$end")
  # The console uses CRLF and the firmware's terminal escapes.
  console=$(vm_console "$log")
  if [ "${DAXALLOC_VM_VERBOSE:-0}" = 1 ]; then echo "$console"; fi
}

vm_pack() {
  (cd "$1" && find . | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

# vm_console FILE: the console log as text: without the CRs and the
# firmware's terminal escapes.
vm_console() {
  tr -d '\r' <"$1" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g'
}

# vm_check_steps CONSOLE STATUS TIMEOUT STEP...: checks the console text of
# a VM that ran a step script (guest-lib.sh) against the steps expected, in
# order, and qemu's exit status (that of `timeout TIMEOUT qemu ...`). Prints
# each step's line; a FAIL, a missing, repeated or unknown step, a missing
# "VMSTEPS DONE", a time-out or another qemu status is a problem. Sets
# vm_passed and vm_failed.
vm_check_steps() {
  local console=$1 status=$2 timeout=$3 steps step lines count expected
  shift 3
  steps=$(grep -a '^VMSTEP ' <<<"$console" || true)
  vm_failed=0 vm_passed=0
  for step in "$@"; do
    lines=$(grep -a "^VMSTEP $step \(PASS\|FAIL\)" <<<"$steps" || true)
    count=$(grep -c . <<<"$lines" || true)
    if [ "$count" -eq 0 ]; then
      echo "VMSTEP $step MISSING"
      vm_failed=$((vm_failed + 1))
    elif [ "$count" -gt 1 ]; then
      echo "$lines"
      echo "VMSTEP $step reported $count times"
      vm_failed=$((vm_failed + 1))
    else
      echo "$lines"
      if [ "$lines" = "VMSTEP $step PASS" ]; then
        vm_passed=$((vm_passed + 1))
      else
        vm_failed=$((vm_failed + 1))
      fi
    fi
  done
  expected=" $* "
  while read -r _ step _; do
    [ -z "$step" ] || [[ "$expected" == *" $step "* ]] && continue
    echo "VMSTEP $step is not an expected step (update expected_steps in ${0##*/})"
    vm_failed=$((vm_failed + 1))
  done <<<"$steps"
  if ! grep -aqx 'VMSTEPS DONE' <<<"$console"; then
    echo "VMSTEPS DONE missing: the guest did not finish"
    vm_failed=$((vm_failed + 1))
  fi
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "the VM timed out after $timeout s and was killed"
    vm_failed=$((vm_failed + 1))
  elif [ "$status" -ne 0 ]; then
    echo "qemu exited with status $status"
    vm_failed=$((vm_failed + 1))
  fi
}

# vm_finish NAME CONSOLE: the verdict after vm_check_steps; on a problem the
# tail of the console (unless DAXALLOC_VM_VERBOSE=1 printed it all) and exit 1.
vm_finish() {
  if [ "$vm_failed" -ne 0 ]; then
    if [ "${DAXALLOC_VM_VERBOSE:-0}" != 1 ]; then
      echo "---- last 120 lines of the console ----"
      tail -n 120 <<<"$2"
    fi
    echo "$1: $vm_passed steps passed, $vm_failed problems"
    exit 1
  fi
  echo "$1: all $vm_passed steps passed"
}
