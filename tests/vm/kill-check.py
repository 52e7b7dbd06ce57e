#!/usr/bin/env python3
"""Checks one boot of the VM-kill recovery rounds (kill-rounds.sh).

    kill-check.py STATE BOOT PHASE LOG...

STATE is a JSON file carried from boot to boot (created on boot 1); PHASE is
create, continue or final (see kill-steps.sh); the LOGs are what the boot's
serial ports sent (as text: CRs and escapes removed): the console, with the
steps and the verify, and one per workload, with its PUBLISHED, FREEING and
FREED lines.

A boot after the first starts with `kill_workload verify` of both heaps: the
set of live sequence numbers it prints must be what the previous boot's
workload lines imply. Those lines are written with tcdrain(), so the host has
every operation's line before the next operation starts: when the VM was
killed, at most one operation per heap was in flight. So, per heap:

  - every seq reported PUBLISHED and not FREED must be present;
  - a seq reported FREED must be absent;
  - the one seq after the last PUBLISHED may be present or not (in flight),
    and so may a seq reported FREEING without its FREED;
  - nothing else may be present (in particular no seq beyond the last
    PUBLISHED + 1);
  - the guest's own check must be OK (heap::check() empty, every node's
    checksum and payload intact, the root's counters match the list, no leaked
    object).

Then the boot's workload lines are checked for sense (consecutive seqs from
where the verify left off, frees of live objects) and the expected state at
the kill is saved for the next boot. Prints a "VMKILL round N: ..." line per
verified round and one line per problem; exit status 1 on any problem.
"""
import json
import re
import sys

TAGS = ("devdax", "fsdax")


def ranges_to_set(text):
    seqs = set()
    for part in text.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        seqs.update(range(int(lo), int(hi or lo) + 1))
    return seqs


def compact(seqs, limit=12):
    """A short text for a set of seqs: ranges, at most `limit` of them."""
    out, items = [], sorted(seqs)
    i = 0
    while i < len(items) and len(out) < limit:
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out) + (",..." if i < len(items) else "")


def main():
    state_path, boot, phase, logs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    try:
        with open(state_path) as f:
            state = json.load(f)
    except FileNotFoundError:
        state = {t: {"live": [], "next": 0, "expect": [], "maybe": [], "published": 0,
                     "freed": 0} for t in TAGS}
        state["kills"] = 0
        state["verified_rounds"] = 0

    lines = []
    for path in logs:
        with open(path, errors="replace") as f:
            # A line still being sent when the VM was killed has no newline:
            # not a line.
            lines += f.read().split("\n")[:-1]
    problems = []

    for line in lines:
        if re.match(r"^KILLSTEP \S+ FAIL", line) or re.match(r"^WORKLOAD \S+ (FAIL|exited)", line):
            problems.append(line)

    # --- the verify at the start of this boot ---------------------------------
    if phase in ("continue", "final"):
        round_no = boot - 1
        totals = {"verified": 0, "live": 0, "missing": 0, "unexpected": 0, "corrupt": 0}
        detail = []
        for tag in TAGS:
            st = state[tag]
            opened = [l for l in lines if l.startswith(f"VERIFY {tag} opened: ")]
            verdict = [l for l in lines if re.match(rf"^VERIFY {tag} (OK|FAIL)", l)]
            present = set()
            for l in lines:
                if l == f"PRESENT {tag}" or l.startswith(f"PRESENT {tag} "):
                    present |= ranges_to_set(l[len(f"PRESENT {tag}"):].strip())
            problems += [l for l in verdict if " FAIL" in l]
            if len(opened) != 1 or not verdict:
                problems.append(f"{tag}: no complete verify output in boot {boot}")
                continue
            m = re.search(r"next (\d+), live (\d+), published (\d+), freed (\d+), corrupt (\d+)",
                          opened[0])
            if not m:
                problems.append(f"{tag}: cannot parse '{opened[0]}'")
                continue
            nxt, live, corrupt = int(m.group(1)), int(m.group(2)), int(m.group(5))
            if "unclean shutdown recovered" not in opened[0]:
                problems.append(f"{tag}: the heap was closed cleanly, but the VM was killed: "
                                f"'{opened[0]}'")
            if live != len(present):
                problems.append(f"{tag}: verify says live {live}, PRESENT lists {len(present)}")
            expect, maybe = set(st["expect"]), set(st["maybe"])
            missing = (expect - maybe) - present
            unexpected = present - (expect | maybe)
            if missing:
                problems.append(f"{tag}: {len(missing)} objects reported published are missing: "
                                f"{compact(missing)}")
            if unexpected:
                problems.append(f"{tag}: {len(unexpected)} objects present that were never "
                                f"published or were freed: {compact(unexpected)}")
            expected_next = st["next"] + (1 if st["next"] in present else 0)
            if nxt != expected_next:
                problems.append(f"{tag}: next seq {nxt}, expected {expected_next}")
            flight = []
            if st["next"] in maybe:
                flight.append(f"publish {st['next']} " +
                              ("done" if st["next"] in present else "not done"))
            for v in sorted(maybe - {st["next"]}):
                flight.append(f"free {v} " + ("not done" if v in present else "done"))
            detail.append(f"{tag}: {st['published']} published, {st['freed']} freed in round "
                          f"{round_no}; {nxt} objects checked, {len(present)} live"
                          f"{'; in flight: ' + ', '.join(flight) if flight else ''}")
            totals["verified"] += nxt
            totals["live"] += len(present)
            totals["missing"] += len(missing)
            totals["unexpected"] += len(unexpected)
            totals["corrupt"] += corrupt
            st["live"], st["next"] = sorted(present), nxt
        pub = sum(state[t]["published"] for t in TAGS)
        freed = sum(state[t]["freed"] for t in TAGS)
        print(f"VMKILL round {round_no}: killed after {pub} published ({freed} freed), "
              f"verified {totals['verified']} objects ({totals['live']} live), "
              f"{totals['missing']} missing, {totals['unexpected']} unexpected, "
              f"{totals['corrupt']} corrupt")
        for d in detail:
            print("  " + d)
        state["verified_rounds"] += 1
        state["verified_objects"] = totals["verified"]
        state["live_objects"] = totals["live"]

    # --- this boot's workload, up to the kill -----------------------------------
    if phase in ("create", "continue"):
        for tag in TAGS:
            st = state[tag]
            live, nxt = set(st["live"]), st["next"]
            freeing = None
            published = freed = 0
            started = False
            for l in lines:
                w = l.split()
                if len(w) < 2 or w[1] != tag:
                    continue
                if w[0] == "WORKLOAD" and len(w) > 2 and w[2] in ("created", "opened"):
                    started = True
                    m = re.search(r"next (\d+), live (\d+)", l)
                    if not m or int(m.group(1)) != nxt or int(m.group(2)) != len(live):
                        problems.append(f"{tag}: the workload {w[2]} the heap at '{l}', but the "
                                        f"verify left next {nxt}, live {len(live)}")
                elif w[0] == "PUBLISHED" and len(w) == 3:
                    s = int(w[2])
                    if s != nxt:
                        problems.append(f"{tag}: PUBLISHED {s}, expected {nxt}")
                    live.add(s)
                    nxt = s + 1
                    published += 1
                elif w[0] == "FREEING" and len(w) == 3:
                    freeing = int(w[2])
                    if freeing not in live:
                        problems.append(f"{tag}: FREEING {freeing}, which is not live")
                elif w[0] == "FREED" and len(w) == 3:
                    s = int(w[2])
                    if s != freeing:
                        problems.append(f"{tag}: FREED {s} without FREEING")
                    live.discard(s)
                    freeing = None
                    freed += 1
            if not started:
                problems.append(f"{tag}: the workload did not start in boot {boot}")
            st["expect"] = sorted(live)
            st["maybe"] = [nxt] + ([freeing] if freeing is not None else [])
            st["next"], st["published"], st["freed"] = nxt, published, freed
        state["kills"] += 1

    for p in problems:
        print(f"VMKILL FAIL boot {boot}: {p}")
    with open(state_path, "w") as f:
        json.dump(state, f)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
