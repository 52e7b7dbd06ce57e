#!/usr/bin/env bash
# Runs one libFuzzer harness for a while; fails on any finding.
# Usage: run_fuzzer.sh FUZZER NAME SECONDS MAX_LEN SEED_CORPUS WORK_DIR [DICT]
#   New inputs go to WORK_DIR/corpus (the seed corpus in the source tree is
#   only read); a finding is saved in WORK_DIR/artifacts/ and the run fails.
#   The last run's output is kept in WORK_DIR/last-run.log.
set -uo pipefail
fuzzer=$1 name=$2 seconds=$3 max_len=$4 seeds=$5 work=$6 dict=${7:-}
mkdir -p "$work/corpus" "$work/artifacts"
# UBSan only prints by default: make every report a finding.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len="$max_len"
      -print_final_stats=1 -artifact_prefix="$work/artifacts/")
[ -n "$dict" ] && [ -f "$dict" ] && args+=(-dict="$dict")
dirs=("$work/corpus")
[ -d "$seeds" ] && dirs+=("$seeds")
before=$(ls "$work/artifacts" | wc -l)
echo "== fuzz $name: ${seconds}s, corpus ${dirs[*]}"
"$fuzzer" "${args[@]}" "${dirs[@]}" >"$work/last-run.log" 2>&1
status=$?
after=$(ls "$work/artifacts" | wc -l)
grep -aE '^#[0-9]+.*(DONE|pulse)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
  "$work/last-run.log" | tail -n 6
if [ $status -ne 0 ] || [ "$after" -ne "$before" ]; then
  grep -a -B2 -A40 -E 'daxalloc fuzz finding|ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error|==ERROR' \
    "$work/last-run.log" | head -n 80
  echo "== fuzz $name: FINDING (exit $status); inputs in $work/artifacts/:"
  ls -1 "$work/artifacts"
  echo "   replay one with: $fuzzer FILE   (or the ${name}_replay program)"
  exit 1
fi
echo "== fuzz $name: no finding"
