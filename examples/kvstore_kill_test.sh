#!/bin/sh
# Process-kill crash test of the key-value store example.
#
#   kvstore_kill_test.sh KVSTORE [HEAP] [ROUNDS] [SEED]
#
# Each round starts `kvstore HEAP writer FIRST` in the background (round 1 on a
# fresh heap, later rounds on the heap the previous round left behind, with
# FIRST chosen so that they overwrite keys of earlier rounds), kills it with
# SIGKILL a random 0.1-0.8 s after its first acknowledged put, then runs `kvstore HEAP verify ACKS`: the
# heap must recover and pass its check, every put the writer acknowledged
# must be there with its value, and every key present must hold its value.
# The delays come from SEED (default: the time), printed so that a failure
# can be replayed.
#
# What this does and does not test: SIGKILL stops the process between two
# instructions, but loses no store. The data lives in the page cache (tmpfs)
# or in DAX memory and every store the process made, flushed or not, stays
# visible to the next process. So this tests the crash atomicity of the
# software path (the batch's redo lane, its replay by open, the store's
# publication order, the flock and the recovery after an unclean shutdown),
# not a power failure, where unflushed cache lines are lost. Power failure at
# every fence is what the simulated persistence domain of tests/crash explores.
set -eu

kvstore=$1
heap=${2:-/dev/shm/daxalloc-kv-kill-test}
rounds=${3:-5}
seed=${4:-$(date +%s)}
acks=$heap.acks

echo "kill test: heap $heap, $rounds rounds, seed $seed"
rm -f "$heap" "$acks"

# A small deterministic generator (an LCG), so that the seed replays the delays.
state=$seed
next_random() {  # next_random MODULUS: sets $random to a number in [0, MODULUS)
  state=$(( (state * 1103515245 + 12345) % 2147483648 ))
  random=$(( state / 65536 % $1 ))
}

first=0
round=1
while [ "$round" -le "$rounds" ]; do
  next_random 700  # not in $(...): a subshell would not advance the state
  delay_ms=$(( 100 + random ))
  : > "$acks"
  "$kvstore" "$heap" writer "$first" > "$acks" &
  pid=$!
  # Start the clock at the first acknowledged put (creating the heap takes a
  # while in sanitizer builds), for at most 30 s.
  waited=0
  while ! grep -q '^ACK' "$acks" && [ "$waited" -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
    waited=$(( waited + 1 ))
  done
  # Sleep in fractions of a second (POSIX sleep takes whole seconds; GNU and
  # busybox sleep take decimals).
  sleep "$(( delay_ms / 1000 )).$(printf '%03d' $(( delay_ms % 1000 )))"
  if ! kill -KILL "$pid" 2>/dev/null; then
    echo "round $round: the writer exited before it was killed" >&2
    wait "$pid" || true
    exit 1
  fi
  wait "$pid" 2>/dev/null || true  # 137: killed, as intended
  acked=$(grep -c '^ACK [0-9]*$' "$acks" || true)
  if ! out=$("$kvstore" "$heap" verify "$acks" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "round $round: killed after $acked acknowledged puts (${delay_ms} ms): FAILED" >&2
    exit 1
  fi
  echo "round $round: killed after $acked acknowledged puts (${delay_ms} ms), all present"
  # The next round starts inside this round's range: half its keys get replaced.
  first=$(( first + acked / 2 ))
  round=$(( round + 1 ))
done
rm -f "$heap" "$acks"
echo "kill test: $rounds rounds passed"
