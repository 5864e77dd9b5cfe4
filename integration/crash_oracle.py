#!/usr/bin/env python3
"""Oracle for integration/crash.sh: drives writes with qemu-io (QEMU's own iSCSI client),
remembers what was written where and which writes a completed flush (SYNCHRONIZE CACHE) or FUA
made durable, kills the daemon with SIGKILL at a chosen moment, and afterwards checks what an
independent client reads back.

The volume's first HOT bytes are cut into 512-byte cells. Every write fills whole cells with
one byte value (qemu-io `write -P`), so a cell reads as exactly one pattern unless it was torn.

After a crash a cell may read as any write from the last *durable* one on (later writes may or
may not have reached the disk), but never as an older value, never as a write that was not
issued, and never mixed (torn). A bookmark's view may read, for each cell, what the volume could
read at the bookmark by the same rule, and once observed must read the same forever after.

  drive --state S --url URL --rewind BIN --data DIR --volume V --pid PID --kill-after SECS --round N
  check --state S --live FILE [--view NAME=FILE ...] [--url URL]
"""
import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

CELL = 512
HOT = 4 << 20
NCELLS = HOT // CELL


def load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"baseline": [0] * NCELLS, "bookmarks": {}, "rounds": 0, "writes": 0}


def save(path, st):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, path)


def qemu_io(url, cmds, readonly=False):
    args = ["stdbuf", "-oL", "qemu-io", "-f", "raw"]
    if readonly:
        args.append("-r")
    for c in cmds:
        args += ["-c", c]
    args.append(url)
    return args


def drive(a):
    st = load(a.state)
    rng = random.Random(a.seed)
    killed = threading.Event()
    current = {"proc": None}
    lock = threading.Lock()

    def killer():
        time.sleep(a.kill_after)
        with lock:
            killed.set()
            try:
                os.kill(a.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p = current["proc"]
            if p is not None and p.poll() is None:
                p.kill()

    threading.Thread(target=killer, daemon=True).start()
    writes = []  # dicts: off, len, pat, acked, durable
    bookmarks = []  # (name, number of writes issued before it)
    pat_next = 1
    seq_next = 0
    nb = 0
    batches = 0
    while not killed.is_set():
        cmds, batch = [], []
        n = rng.randint(2, 6)
        for i in range(n):
            if i not in (0, n - 1) and rng.random() < 0.15:
                cmds.append("flush")
                batch.append(("flush", None))
                continue
            cells = rng.choice([1, 1, 2, 7, 8, 16, 64, 128])
            start = rng.randrange(0, NCELLS - cells + 1)
            if rng.random() < 0.5:  # mostly 4 KiB aligned, sometimes not
                start -= start % 8
            fua = rng.random() < 0.1
            w = {"off": start * CELL, "len": cells * CELL, "pat": pat_next,
                 "acked": False, "durable": False, "fua": fua, "seq": seq_next}
            seq_next += 1
            pat_next = pat_next % 255 + 1
            cmds.append("write %s-P %d %d %d" % ("-f " if fua else "", w["pat"], w["off"], w["len"]))
            batch.append(("write", w))
        issued = [w for kind, w in batch if kind == "write"]
        with lock:
            if killed.is_set():
                break
            writes.extend(issued)
            proc = subprocess.Popen(qemu_io(a.url, cmds), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            current["proc"] = proc
        acks = 0
        failed = False
        for line in proc.stdout:
            if line.startswith("wrote "):
                if not failed:
                    acks += 1
            elif "failed" in line or "error" in line.lower():
                failed = True
        rc = proc.wait()
        # The k-th "wrote" line acknowledges the k-th write; a flush completed if a write after
        # it was acknowledged (qemu-io runs its commands one after the other).
        k = 0
        flush_pending = []
        for kind, w in batch:
            if kind == "flush":
                flush_pending.append(k)
                continue
            if k < acks:
                w["acked"] = True
                if w["fua"]:
                    w["durable"] = True
                if flush_pending:
                    # Every write acknowledged before the flush is durable now.
                    flush_pending = []
                    for prev in writes:
                        if prev["acked"] and prev["seq"] < w["seq"]:
                            prev["durable"] = True
            k += 1
        batches += 1
        if killed.is_set() or rc != 0:
            break
        if rng.random() < 0.3:
            nb += 1
            name = "r%db%d" % (a.round, nb)
            r = subprocess.run([a.rewind, "--data", a.data, "bookmark", a.volume, name],
                               capture_output=True, text=True)
            if r.returncode == 0 and not killed.is_set():
                bookmarks.append((name, len(writes)))
    # Wait for the kill if the loop ended early (a qemu-io failure).
    while not killed.is_set():
        time.sleep(0.05)
    st["pending"] = {"writes": writes, "bookmarks": bookmarks}
    st["writes"] += len(writes)
    save(a.state, st)
    acked = sum(w["acked"] for w in writes)
    durable = sum(w["durable"] for w in writes)
    print("round %d: %d batches, %d writes issued, %d acknowledged, %d durable, %d bookmarks, "
          "killed after %.2fs" % (a.round, batches, len(writes), acked, durable, len(bookmarks),
                                  a.kill_after))


def allowed_sets(baseline, writes):
    """Per cell, the values it may read after the crash: from the last durable write on."""
    hist = [[] for _ in range(NCELLS)]
    for w in writes:
        c0 = w["off"] // CELL
        for c in range(c0, c0 + w["len"] // CELL):
            hist[c].append(w)
    out = []
    for c in range(NCELLS):
        h = hist[c]
        last = None
        for i, w in enumerate(h):
            if w["durable"]:
                last = i
        if last is None:
            vals = {baseline[c]} | {w["pat"] for w in h}
        else:
            vals = {w["pat"] for w in h[last:]}
        out.append(sorted(vals))
    return out


def cells_of(path):
    with open(path, "rb") as f:
        data = f.read(HOT)
    if len(data) < HOT:
        data += b"\0" * (HOT - len(data))
    out = []
    for c in range(NCELLS):
        cell = data[c * CELL:(c + 1) * CELL]
        v = cell[0]
        out.append(v if cell.count(v) == CELL else None)  # None: torn cell
    return out, hashlib.sha256(data).hexdigest()


def compare(what, got, allowed, limit=8):
    bad = []
    for c, (v, ok) in enumerate(zip(got, allowed)):
        if v is None or v not in ok:
            bad.append("cell %d (offset %d): reads %s, allowed %s" % (
                c, c * CELL, "a torn mix" if v is None else "0x%02x" % v,
                ["0x%02x" % x for x in ok]))
    for b in bad[:limit]:
        print("  %s: %s" % (what, b))
    return len(bad)


def check(a):
    st = load(a.state)
    pend = st.pop("pending", {"writes": [], "bookmarks": []})
    writes = pend["writes"]
    base = st["baseline"]
    failures = 0
    live, _ = cells_of(a.live)
    allowed = allowed_sets(base, writes)
    n = compare("live volume", live, allowed)
    failures += n
    for name, upto in pend["bookmarks"]:
        st["bookmarks"][name] = {"allowed": allowed_sets(base, writes[:upto]), "sha256": None}
    views = dict(v.split("=", 1) for v in a.view)
    checked = 0
    for name, path in views.items():
        bm = st["bookmarks"].get(name)
        if bm is None:
            print("  unknown bookmark %s" % name)
            failures += 1
            continue
        got, digest = cells_of(path)
        if bm["sha256"] is None:
            n = compare("view " + name, got, bm["allowed"])
            failures += n
            bm["sha256"] = digest
            bm.pop("allowed")
        elif bm["sha256"] != digest:
            print("  view %s changed since it was first checked" % name)
            failures += 1
        checked += 1
    # Spot checks with qemu-io's own pattern verification on cells made durable this round.
    durable_cells = [c for c, ok in enumerate(allowed) if len(ok) == 1 and live[c] == ok[0] and ok[0] != 0]
    if a.url and durable_cells:
        for c in random.Random(len(writes)).sample(durable_cells, min(3, len(durable_cells))):
            cmd = qemu_io(a.url, ["read -P %d %d %d" % (live[c], c * CELL, CELL)], readonly=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0 or "verification failed" in r.stdout or "read 512/512" not in r.stdout:
                print("  qemu-io read -P check of cell %d failed: %s" % (c, r.stdout + r.stderr))
                failures += 1
    # What the disk holds now is the next round's starting point.
    if all(v is not None for v in live):
        st["baseline"] = live
    st["rounds"] += 1
    save(a.state, st)
    never = [n for n, b in st["bookmarks"].items() if b["sha256"] is None]
    print("check: %d cells, %d writes in the round, %d view(s) checked, %d bookmark(s) known, "
          "%d failure(s)" % (NCELLS, len(writes), checked, len(st["bookmarks"]), failures))
    if never:
        print("  bookmarks not yet checked: %s" % " ".join(never))
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive")
    d.add_argument("--state", required=True)
    d.add_argument("--url", required=True)
    d.add_argument("--rewind", required=True)
    d.add_argument("--data", required=True)
    d.add_argument("--volume", required=True)
    d.add_argument("--pid", type=int, required=True)
    d.add_argument("--kill-after", type=float, required=True)
    d.add_argument("--round", type=int, required=True)
    d.add_argument("--seed", type=int, default=None)
    c = sub.add_parser("check")
    c.add_argument("--state", required=True)
    c.add_argument("--live", required=True)
    c.add_argument("--view", action="append", default=[])
    c.add_argument("--url", default=None)
    s = sub.add_parser("bookmarks", help="print the names of the known bookmarks")
    s.add_argument("--state", required=True)
    s.add_argument("--pending", action="store_true", help="only those not checked yet")
    a = p.parse_args()
    if a.cmd == "drive":
        drive(a)
        return 0
    if a.cmd == "check":
        return check(a)
    st = load(a.state)
    names = [n for n, _ in st.get("pending", {}).get("bookmarks", [])]
    if not a.pending:
        names = sorted(st["bookmarks"]) + names
    print(" ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
