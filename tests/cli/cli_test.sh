#!/usr/bin/env bash
# Runs every subcommand of the daxalloc tool on heaps in /dev/shm (or
# $DAXALLOC_TEST_DIR): the normal path, with text and with --json (parsed
# back by python3), and the error paths with their exit statuses and messages.
#
# Usage: cli_test.sh DAXALLOC HEAP_HELPER
#   DAXALLOC      the built tool
#   HEAP_HELPER   tests/cli/heap_helper: allocates, holds a heap open, abandons one
set -u
tool=$1 helper=$2
dir=${DAXALLOC_TEST_DIR:-/dev/shm}
prefix=$dir/daxalloc-cli-test-$$
out=$(mktemp -d)
holder_pid=
cleanup() {
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
  rm -rf "$out" "$prefix"*
}
trap cleanup EXIT

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# run STATUS ARGS...: runs the tool, keeps stdout and stderr in $out, checks the status.
run() {
  local want=$1
  shift
  "$tool" "$@" >"$out/stdout" 2>"$out/stderr"
  local got=$?
  if [ "$got" != "$want" ]; then
    fail "daxalloc $* exited $got, expected $want"
    sed 's/^/    stdout: /' "$out/stdout" | head -20
    sed 's/^/    stderr: /' "$out/stderr" | head -20
  fi
}
# stdout_has / stderr_has TEXT: the last run printed TEXT (fixed string).
stdout_has() { grep -qF -- "$1" "$out/stdout" || fail "stdout of the last run lacks '$1'"; }
stderr_has() { grep -qF -- "$1" "$out/stderr" || fail "stderr of the last run lacks '$1'"; }
stderr_empty() { [ ! -s "$out/stderr" ] || fail "stderr not empty: $(head -c 300 "$out/stderr")"; }
# json_true EXPR: the last run's stdout is JSON and the python expression (on d) holds.
json_true() {
  "$python" -S -c '
import json, os, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$out/stdout" "$1" ||
    fail "JSON check '$1' on: $(head -c 600 "$out/stdout")"
}
MiB=$((1 << 20))
# The interpreter itself, not a wrapper (pyenv's shim costs a fraction of a
# second per call); -S: the JSON checks need nothing beyond the standard library.
python=$(python3 -c 'import sys; print(sys.executable)') || { echo "FAIL: python3 is needed"; exit 1; }

echo "== help"
commands="devices create info stats map check repair grow shrink compact rm"
run 0 --help
stdout_has "usage: daxalloc COMMAND"
for c in $commands; do stdout_has "  $c "; done
for c in $commands; do
  run 0 "$c" --help
  stdout_has "usage: daxalloc $c"
  run 0 help "$c"
  stdout_has "usage: daxalloc $c"
done
run 0 --version
stdout_has "daxalloc "
run 2
run 2 frobnicate
stderr_has "unknown command 'frobnicate'"

echo "== devices"
run 0 devices
run 0 devices --json
json_true 'isinstance(d["devices"], list)'

echo "== create"
heap=$prefix-heap
run 0 create "$heap" --size 64M --max-size 4G
stdout_has "created $heap"
stderr_empty  # no progress when stderr is not a terminal
[ -f "$heap" ] || fail "create made no file"
run 1 create "$heap" --size 64M
stderr_has "$heap"
stderr_has "already exists"
run 0 create "$prefix-json" --size 8M --section-bits 28 --mode msync --json
json_true 'd["section_size_bits"] == 28 and d["present_bytes"] == 8 * 2**20 and d["path"].endswith("-json")'

echo "== info"
run 0 info "$heap"
stdout_has "format version 8"
stdout_has "memmap placement"
stdout_has "pageblocks by migratetype"
stdout_has "fragmentation"
grep -qE '^  shutdown +clean$' "$out/stdout" || fail "info does not say the shutdown was clean"
# A file on tmpfs has no DIMMs: no unsafe-shutdown count, and info says why.
grep -qE '^  unsafe shutdown +detection not available \(.+\)$' "$out/stdout" ||
  fail "info does not say unsafe-shutdown detection is not available"
run 0 info "$heap" --accept-unsafe-shutdown
run 0 info "$heap" --json
json_true 'd["format_version"] == 8 and d["shutdown"] == "clean" and not d["unclean_shutdown"]'
json_true 'not d["unsafe_shutdown"] and not d["unsafe_shutdown_detection"]["available"] and d["unsafe_shutdown_detection"]["note"]'
json_true 'd["geometry"]["section_size"] == 128 * 2**20 and d["geometry"]["max_range"] == 4 * 2**30'
# The head and span 0's memmap block, then the memory after the memmap area
# of the 4 GiB range (4 blocks from 2 MiB).
json_true 'd["present"]["bytes"] == 64 * 2**20 and d["present"]["ranges"] == [{"start": 0, "length": 4 * 2**20}, {"start": 10 * 2**20, "length": 60 * 2**20}]'
json_true 'd["memmap"][0]["memmap_offset"] >= d["geometry"]["head_size"]'
json_true 'd["pageblocks"]["metadata"] >= 2 and d["usage"]["free_bytes"] > 0'
json_true 'len(d["uuid"]) == 36 and d["sections"][0]["nr"] == 0'

echo "== stats and map with allocations"
"$helper" populate "$heap" >/dev/null || fail "heap_helper populate failed"
run 0 stats "$heap"
stdout_has "size classes"
stdout_has "extents"
stdout_has "alignment waste"
run 0 stats "$heap" --json
json_true 'len(d["size_classes"]) >= 5 and all(c["allocated"] <= c["capacity"] for c in d["size_classes"])'
json_true 'd["extents"]["count"] >= 4 and d["extents"]["largest_bytes"] >= 5 * 2**20'
json_true 'd["totals"]["allocated_objects"] >= 254'
json_true 'd["totals"]["alignment_waste_bytes"] == 0'  # since open: this read-only open aligned nothing
run 0 map "$heap"
stdout_has "legend"
grep -qE '^ +0 +[0-9?]+ +0x0 +##[-#UML.]*U' "$out/stdout" || fail "map: section 0 does not start with metadata and hold a slab"
grep -qE '^ +0 +[0-9?]+ +0x0 +.*L' "$out/stdout" || fail "map: no large extent drawn"
run 0 map "$heap" --json
json_true 'd["sections"][0]["map"].startswith("##") and len(d["sections"][0]["types"]) == 64'
json_true 'd["sections"][0]["types"][0] == "metadata" and "unmovable" in d["sections"][0]["types"]'
json_true 'sum(d["sections"][0]["allocated_pages"]) > 0'
run 0 map "$heap" --section 0 --json
json_true '[s["nr"] for s in d["sections"]] == [0]'
run 1 map "$heap" --section 7
stderr_has "section 7"
run 2 map "$heap" --section seven

echo "== check"
run 0 check "$heap"
stdout_has "consistent"
stderr_empty
run 0 check "$heap" --json
json_true 'd["consistent"] and d["problems"] == []'

echo "== grow and shrink"
run 0 grow "$heap" --by 64M
stdout_has "hot-added"
run 0 info "$heap" --json
json_true 'd["present"]["bytes"] == 128 * 2**20'
run 0 grow "$heap" --by 4M --json
json_true 'd["added"] and d["length"] == 4 * 2**20 and d["present_bytes"] == 132 * 2**20'
run 0 shrink "$heap" --by 68M
stdout_has "hot-removed"
run 0 info "$heap" --json
json_true 'd["present"]["bytes"] == 64 * 2**20'
run 0 check "$heap"
run 2 grow "$heap" --by 3M
stderr_has "multiple of 2 MiB"
run 2 grow "$heap"
stderr_has "--by"
run 1 grow "$heap" --by 8G
stderr_has "$heap"
run 1 shrink "$heap" --by 58M  # the slabs and extents of populate are there (memory: 60 MiB)
stderr_has "holds allocations"
run 0 check "$heap"

echo "== a full heap cannot shrink"
full=$prefix-full
run 0 create "$full" --size 16M
"$helper" fill "$full" >/dev/null || fail "heap_helper fill failed"
run 1 shrink "$full" --by 2M
stderr_has "holds allocations"
stderr_has "$full"
run 0 check "$full"

echo "== compact moves movable objects down and releases their slabs"
moving=$prefix-movable
run 0 create "$moving" --size 32M
"$helper" movable "$moving" >/dev/null || fail "heap_helper movable failed"
run 0 stats "$moving" --json
json_true 'd["totals"]["movable_objects"] == 10000 and d["allocated_bytes_by_migratetype"]["movable"] > 0'
run 0 compact "$moving" --json
json_true 'd["objects_moved"] > 4000 and d["slabs_released"] > 0 and d["movable_objects"] == 10000'
json_true 'd["largest_free_after"] > d["largest_free_before"]'
run 0 compact "$moving"
stdout_has "moved"
stdout_has "0 movable objects"
run 0 check "$moving"
echo "== shrink without --by: compact, then trim the free top"
"$helper" movable "$moving" >/dev/null 2>&1 || true  # (a second fill is refused: root exists)
run 0 shrink "$moving" --json
json_true 'd["trimmed_bytes"] > 0 and d["present_bytes"] < 32 * 2**20'
run 0 check "$moving"
run 0 rm "$moving"

echo "== unclean shutdown"
"$helper" abandon "$heap" || fail "heap_helper abandon failed"
run 0 info "$heap" --json
json_true 'd["unclean_shutdown"] and d["shutdown"] == "unclean"'
run 0 info "$heap" --json  # read-only: the info before recovered nothing
json_true 'd["unclean_shutdown"] and d["recovery"]["lanes_to_replay"] == 0'
run 0 info "$heap"
grep -qE '^  shutdown +unclean' "$out/stdout" || fail "info does not say the shutdown was unclean"
stdout_has "the next read-write open recovers it"
run 0 check "$heap"
stdout_has "not closed cleanly"
run 0 check "$heap" --json
json_true 'd["consistent"] and d["unclean_shutdown"] and d["recovery"]["steps"] == []'
json_true 'd["bad_blocks"] == []'  # a file on tmpfs: no bad-block list
run 0 info "$heap" --json
json_true 'd["unclean_shutdown"]'

echo "== repair"
run 0 repair "$heap"  # read-write: it recovers the heap the inspections left alone
stdout_has "$heap: recovered"
stdout_has "consistent"
run 0 info "$heap" --json
json_true 'not d["unclean_shutdown"]'
run 0 repair "$heap"
stdout_has "$heap: clean"
"$helper" abandon "$heap" || fail "heap_helper abandon failed"
run 0 repair "$heap" --json
json_true 'd["outcome"] == "recovered" and d["repairs"] == [] and d["consistent"]'
json_true 'd["bad_blocks"] == []'
damaged_heap=$prefix-damaged-memmap
run 0 create "$damaged_heap" --size 32M
"$helper" damage "$damaged_heap" >/dev/null || fail "heap_helper damage failed"
run 1 check "$damaged_heap"
stdout_has "inside another extent"
run 1 info "$damaged_heap"
stderr_has "corrupt"
run 0 repair "$damaged_heap"
stdout_has "$damaged_heap: repaired"
stdout_has "quarantined the pageblock at 0x"
stdout_has "consistent"
run 0 check "$damaged_heap"
run 0 repair "$damaged_heap" --json
json_true 'd["outcome"] == "clean" and d["repairs"] == [] and d["consistent"]'
run 0 info "$damaged_heap" --json
json_true 'd["pageblocks"]["isolate"] == 1'
run 0 rm "$damaged_heap"

echo "== info, stats, map and check write nothing and need no write access"
# A changed byte anywhere (a superblock generation, the shutdown marker, a
# replayed lane) changes the checksum.
inspect_all() {
  for c in info stats map check; do
    run 0 "$c" "$@"
    run 0 "$c" "$@" --json
  done
}
ro_heap=$prefix-readonly
run 0 create "$ro_heap" --size 32M
"$helper" populate "$ro_heap" >/dev/null || fail "heap_helper populate failed"
before=$(sha256sum <"$ro_heap")
inspect_all "$ro_heap"
[ "$(sha256sum <"$ro_heap")" = "$before" ] || fail "inspecting a clean heap changed its bytes"
"$helper" abandon "$ro_heap" || fail "heap_helper abandon failed"
before=$(sha256sum <"$ro_heap")
inspect_all "$ro_heap"
[ "$(sha256sum <"$ro_heap")" = "$before" ] || fail "inspecting an unclean heap changed its bytes"
run 0 info "$ro_heap" --json
json_true 'd["unclean_shutdown"]'
# A read-only file. Root ignores file modes on open(2), so as root the tool
# runs as nobody (setpriv): then opening the root-owned 0444 file O_RDWR
# fails with EACCES, and only an O_RDONLY open can work. The control: repair,
# which opens read-write, is refused there.
chmod 444 "$ro_heap"
as_reader=()
if [ "$(id -u)" = 0 ]; then
  if command -v setpriv >/dev/null && setpriv --reuid=nobody --regid=nogroup --clear-groups true; then
    as_reader=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  else
    fail "running as root without setpriv: cannot show that the tool opens read-only"
  fi
fi
real_tool=$tool
tool_as_reader() { "${as_reader[@]}" "$real_tool" "$@"; }
tool=tool_as_reader
inspect_all "$ro_heap"
run 0 check "$ro_heap" --json
json_true 'd["consistent"] and d["opened"]'
run 1 repair "$ro_heap"
stderr_has "permission"
tool=$real_tool
[ "$(sha256sum <"$ro_heap")" = "$before" ] || fail "inspecting a read-only heap changed its bytes"
chmod 644 "$ro_heap"
run 0 repair "$ro_heap"
stdout_has "$ro_heap: recovered"

echo "== a heap open in another process"
mkfifo "$out/fifo"
"$helper" hold "$heap" <"$out/fifo" >"$out/holder" &
holder_pid=$!
exec 3>"$out/fifo"
for _ in $(seq 100); do grep -q ready "$out/holder" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$out/holder" || fail "heap_helper hold did not get ready"
for c in info stats map check repair; do
  run 1 "$c" "$heap"
  stderr_has "$heap"
  stderr_has "busy"
done
run 1 grow "$heap" --by 2M
stderr_has "busy"
stderr_has "hint: the heap is open in another process"
run 1 shrink "$heap" --by 2M --json
EXPECT=$heap json_true 'd["error"]["code"] == "busy" and d["error"]["message"].startswith(os.environ["EXPECT"])'
run 1 rm "$heap"
stderr_has "busy"
[ -f "$heap" ] || fail "rm removed a heap that was open"
exec 3>&-
wait "$holder_pid" || fail "heap_helper hold failed"
holder_pid=
run 0 info "$heap"

echo "== errors"
run 1 info "$prefix-missing"
stderr_has "$prefix-missing"
run 1 info "$prefix-missing" --json
json_true 'd["error"]["code"] == "not_found" and "-missing" in d["error"]["message"]'
run 2 create "$prefix-bad" --size 12X
stderr_has "invalid size '12X'"
run 2 create "$prefix-bad"
run 2 create "$prefix-bad" --size 64M --section-bits 31
run 2 create "$prefix-bad" --size 64M --mode fast
run 2 create "$prefix-bad" --size 64M --max-size 32M
run 2 create "$prefix-bad" --size=64M --force=yes
run 1 create "$prefix-bad" --size 1M
stderr_has "needs at least"
[ -e "$prefix-bad" ] && fail "a failed create left a file behind"
run 2 info
stderr_has "missing PATH"
run 2 info "$heap" extra
run 2 info "$heap" --no-such-option
head -c $((1 * MiB)) /dev/urandom >"$prefix-junk"
run 1 info "$prefix-junk"
stderr_has "not a daxalloc heap"
run 1 check "$prefix-junk"
stdout_has "not a daxalloc heap"
run 1 repair "$prefix-junk"
stderr_has "not a daxalloc heap"
run 1 repair "$prefix-missing"
stderr_has "$prefix-missing"
run 1 rm "$prefix-junk"
stderr_has "not a daxalloc heap"
[ -f "$prefix-junk" ] || fail "rm removed a file that is not a heap"
head -c 100 /dev/urandom >"$prefix-tiny"
run 1 rm "$prefix-tiny"
stderr_has "not a daxalloc heap"
run 1 info "$dir"
stderr_has "directory"

# Superblocks rewritten by a newer daxalloc (version 99, checksum resealed),
# made to look like format version 1 (16-byte page descriptors), then damaged
# in both copies.
patch_superblocks() {
  "$python" -S - "$1" "$2" <<'EOF'
import struct, sys
path, action = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    for offset in (0, 4096):
        f.seek(offset)
        sb = bytearray(f.read(4096))
        if action in ("newer", "older"):
            if action == "newer":
                struct.pack_into("<I", sb, 16, 99)  # version, after the 16-byte magic
            else:
                struct.pack_into("<I", sb, 16, 1)  # version 1 ...
                struct.pack_into("<I", sb, 60, 16)  # ... had 16-byte descriptors
            sb[4088:4096] = bytes(8)  # Fletcher-64 over 32-bit words, checksum zero
            lo = hi = 0
            for i in range(0, 4096, 4):
                lo = (lo + struct.unpack_from("<I", sb, i)[0]) & 0xFFFFFFFF
                hi = (hi + lo) & 0xFFFFFFFFFFFFFFFF
            struct.pack_into("<Q", sb, 4088, ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF)
        else:
            sb[200] ^= 0xFF  # a reserved byte: the checksum no longer matches
        f.seek(offset)
        f.write(sb)
EOF
}
# refused_version AGE MESSAGE: a heap patched to another version (AGE newer
# or older) is refused by info, check and repair with errc AGE_format, and
# create does not take it for free media.
refused_version() {
  local heap=$prefix-$1
  run 0 create "$heap" --size 8M
  patch_superblocks "$heap" "$1"
  run 1 info "$heap"
  stderr_has "$2"
  for command in check repair; do
    run 1 "$command" "$heap" --json
    CODE=$1_format json_true 'd["error"]["code"] == os.environ["CODE"]'
  done
  run 1 create "$heap" --size 8M
  stderr_has "already"
}
refused_version newer "is newer than this library's 8"
refused_version older "format version 1 is older than this library's 8"
damaged=$prefix-damaged
run 0 create "$damaged" --size 8M
patch_superblocks "$damaged" damage
run 1 info "$damaged" --json
json_true 'd["error"]["code"] == "corrupt" and "checksum" in d["error"]["message"]'
run 1 check "$damaged"
stdout_has "1 problem"
stdout_has "both superblock copies are damaged"
run 1 repair "$damaged"  # superblocks are not what repair can mend: an error, nothing quarantined
stderr_has "both superblock copies are damaged"
run 0 rm "$damaged"  # still recognisably a heap: it can be removed
[ -e "$damaged" ] && fail "rm left the damaged heap"

echo "== JSON escaping"
odd=$prefix-odd$'"quote\\back\tslash'
run 0 create "$odd" --size 8M --json
EXPECT=$odd json_true 'd["path"] == os.environ["EXPECT"]'
run 0 info "$odd" --json
EXPECT=$odd json_true 'd["path"] == os.environ["EXPECT"]'
run 0 rm "$odd"

echo "== progress on a terminal"
if command -v script >/dev/null; then
  script -qec "'$tool' create '$prefix-tty' --size 8M" /dev/null >"$out/tty" 2>&1 ||
    fail "create under script failed"
  grep -q "creating $prefix-tty" "$out/tty" || fail "no progress shown on a terminal: $(cat -v "$out/tty")"
  script -qec "'$tool' check '$prefix-tty'" /dev/null >"$out/tty" 2>&1 || fail "check under script failed"
  grep -q "checking $prefix-tty" "$out/tty" || fail "no progress shown for check on a terminal"
else
  echo "note: script(1) is missing: progress on a terminal not tested"
fi

echo "== regions"
regions=$prefix-regions
run 0 create "$regions" --size 64M --max-size 8G --regions "$regions-a,$regions-b" --region-size 128M
run 0 info "$regions"
stdout_has "added regions"
stdout_has "$regions-a: "
run 0 info "$regions" --json
json_true 'len(d["regions"]) == 3 and d["regions"][1]["offset"] == 7 << 30 and d["regions"][2]["offset"] == 6 << 30'
run 0 remove-region "$regions" "$regions-b" --json
json_true 'd["removed"] and len(d["regions"]) == 2'
run 0 add-region "$regions" "$regions-c" --size 64M --node 1
stdout_has "added $regions-c to $regions"
stdout_has "node 1"
run 2 add-region "$regions" "$regions-e" --size 64M --node x
stderr_has "invalid --node"
run 0 info "$regions"
stdout_has "nodes (the heap's memory by the NUMA node of its regions)"
run 0 info "$regions" --json
json_true 'sum(n["present_bytes"] for n in d["nodes"]) == d["usage"]["present_bytes"] and any(n["node"] == 1 and n["regions"] == 1 for n in d["nodes"])'
run 1 remove-region "$regions" "$regions-none"
run 0 check "$regions"
mv "$regions-a" "$regions-moved"
run 1 info "$regions"
stderr_has "is missing"
stderr_has "region_paths"
run 0 info "$regions" --region-paths "$regions-moved" --json
json_true 'd["regions"][1]["path"] == "'"$regions-moved"'"'
run 0 compact "$regions" --region-paths "$regions-moved"  # a read-write open records it
run 0 info "$regions"
stdout_has "$regions-moved: "
run 0 check "$regions" --region-paths ",$regions-c"  # an empty one keeps the recorded path
mv "$regions-moved" "$regions-a"
run 0 check "$regions" --region-paths "$regions-a"
run 1 create "$regions-small" --size 64M --max-size 1G --regions "$regions-d" --region-size 64M
[ -e "$regions-small" ] && fail "a failed create --regions left the heap"
[ -e "$regions-d" ] && fail "a failed create --regions left the region file it made"
rm -f "$regions" "$regions-a" "$regions-b" "$regions-c"

echo "== rm"
run 0 rm "$heap" --json
json_true 'd["removed"] and not d["invalidated"]'
[ -e "$heap" ] && fail "rm left the heap"
run 1 rm "$heap"
stderr_has "$heap"

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "PASS: every daxalloc subcommand and its errors"
