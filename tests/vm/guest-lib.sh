# shellcheck shell=sh
# Shared by the guest step scripts (guest-steps.sh, numa-steps.sh): how a
# step runs and reports itself. Sourced, not run; dash in the guest. The
# caller may set step_timeout (seconds) before running steps.
#
# Each step prints its command's output indented by "  | ", then exactly one line
#   VMSTEP <name> PASS      or      VMSTEP <name> FAIL <reason>
# and the host checks them against its list of expected steps.

out=/tmp/vmstep-output
step_timeout=${step_timeout:-240}

pass() { echo "VMSTEP $1 PASS"; }
fail() {
  name=$1
  shift
  echo "VMSTEP $name FAIL $*"
}
skip() { fail "$1" "skipped: $2"; }

# run NAME COMMAND...: runs COMMAND with a time limit, shows its output and
# how long it took, and reports the step; the reason of a failure is the first
# line that says FAIL or ERROR (the probes, doctest), else the last line of
# output. A step passes when COMMAND exits with 0 and its output has every
# line in $want (newline-separated fixed strings; empty: nothing asked for).
want=""
run() {
  name=$1
  shift
  started=$(date +%s)
  timeout "$step_timeout" "$@" >"$out" 2>&1 </dev/null
  rc=$?
  sed 's/^/  | /' "$out"
  echo "  ($name: $(($(date +%s) - started)) s)"
  missing=""
  if [ $rc -eq 0 ] && [ -n "$want" ]; then
    missing=$(printf '%s\n' "$want" | while IFS= read -r line; do
      [ -z "$line" ] || grep -qF -- "$line" "$out" || echo "$line"
    done | head -n 1)
  fi
  want=""
  if [ $rc -eq 0 ] && [ -z "$missing" ]; then
    pass "$name"
    return 0
  fi
  if [ $rc -eq 0 ]; then
    fail "$name" "the output lacks \"$missing\""
    return 1
  fi
  reason=$(grep -m 1 -E 'FAIL|ERROR|[Ee]rror' "$out")
  [ -n "$reason" ] || reason=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)
  [ $rc -eq 143 ] && reason="killed after ${step_timeout}s; $reason"
  fail "$name" "exit $rc: $(printf '%s\n' "$reason" | cut -c 1-200)"
  dmesg | tail -n 12 | sed 's/^/  dmesg: /'
  return 1
}

# wait_for PATH: up to 10 s for a device node to appear.
wait_for() {
  i=0
  while [ ! -e "$1" ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  [ -e "$1" ] || {
    echo "ERROR: $1 did not appear within 10 s"
    return 1
  }
}

# The modules the host listed (/vm/modules, in load order), and a check that
# those in /vm/required-modules are in.
load_modules() {
  while read -r module; do
    insmod "$module" || echo "note: insmod $module failed (fatal only if it is required)"
  done </vm/modules
  missing=""
  # shellcheck disable=SC2013  # one name a line, no spaces
  for m in $(cat /vm/required-modules); do
    [ -d "/sys/module/$m" ] || missing="$missing $m"
  done
  [ -z "$missing" ] || {
    echo "ERROR: modules not loaded:$missing"
    return 1
  }
}
