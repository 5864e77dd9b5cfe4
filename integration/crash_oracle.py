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

Points in time (`points`, then `check --point`): the daemon stamps writes in the order qemu-io
issues them (one qemu-io at a time, one command after the other), so a view at T shows a prefix
writes[:n] of the round's journaled writes, for each chunk the state after that prefix if a
later journaled write to the chunk exists (its entry holds the old data), else the chunk's
current content. The oracle brackets each write's stamp by the wall clock: after its qemu-io
started, before its "wrote" line was read; so n is exact between two qemu-io runs and known
within a few writes inside one. Unacknowledged writes: only the first one of the run the kill
cut may be in the journal (both cases are tried, and one must fit every point).

  drive --state S --url URL --rewind BIN --data DIR --volume V --pid PID --kill-after SECS --round N
  points --state S [--oldest RFC3339] [--recheck K]
  check --state S --live FILE [--view NAME=FILE ...] [--point NAME=FILE ...] [--url URL]
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
# The journal keeps old data per chunk (`[journal] chunk_size`, 4 KiB by default): a view reads
# a whole chunk from the first entry after its time, so a write makes its chunk's other cells
# come from the journal too.
CHUNK_CELLS = 4096 // CELL


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


def now_us():
    return time.time_ns() // 1000


def rfc3339(us):
    secs, micros = divmod(us, 1000000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%06dZ" % micros


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
            current["t_kill"] = now_us()

    t_start = now_us()
    threading.Thread(target=killer, daemon=True).start()
    writes = []  # dicts: off, len, pat, acked, durable, lo, hi
    batches = []  # dicts: lo (before qemu-io started), end (after it exited), first, n
    bookmarks = []  # (name, number of writes issued before it)
    pat_next = 1
    seq_next = 0
    nb = 0
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
            # Every write of the batch is stamped after this moment (qemu-io is not started yet).
            lo = now_us()
            for w in issued:
                w["lo"], w["hi"] = lo, None
            batches.append({"lo": lo, "end": None, "first": len(writes), "n": len(issued)})
            writes.extend(issued)
            proc = subprocess.Popen(qemu_io(a.url, cmds), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            current["proc"] = proc
        acks = 0
        failed = False
        for line in proc.stdout:
            if line.startswith("wrote "):
                if not failed:
                    # The write was stamped before qemu-io printed this line: before now.
                    if acks < len(issued):
                        issued[acks]["hi"] = now_us()
                    acks += 1
            elif "failed" in line or "error" in line.lower():
                failed = True
        rc = proc.wait()
        batches[-1]["end"] = now_us()
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
    st["pending"] = {"writes": writes, "bookmarks": bookmarks, "batches": batches,
                     "t_start": t_start, "t_kill": current.get("t_kill")}
    st["writes"] += len(writes)
    save(a.state, st)
    acked = sum(w["acked"] for w in writes)
    durable = sum(w["durable"] for w in writes)
    print("round %d: %d batches, %d writes issued, %d acknowledged, %d durable, %d bookmarks, "
          "killed after %.2fs" % (a.round, len(batches), len(writes), acked, durable, len(bookmarks),
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


def points(a):
    """Choose the points in time to read this round, save them in the state and print them as
    `NAME RFC3339` lines: this round's history densely, plus older points to read again."""
    st = load(a.state)
    pend = st["pending"]
    # The killed daemon has been reaped and a new one started: every write it stamped at all
    # was stamped before now.
    pend["t_dead"] = now_us()
    ws, bs = pend["writes"], pend["batches"]
    r = st["rounds"] + 1
    rng = random.Random(r)
    chosen = []  # (label, t)
    # Before the first batch: nothing of this round yet.
    first_lo = bs[0]["lo"] if bs else pend["t_dead"]
    chosen.append(("start", (pend["t_start"] + first_lo) // 2))
    for i, b in enumerate(bs):
        mine = ws[b["first"]:b["first"] + b["n"]]
        his = [w["hi"] for w in mine if w["hi"] is not None]
        # Inside the batch, at the acknowledgement of one write: the writes up to it are in,
        # the next one may or may not be (qemu-io may have sent it before we read the line).
        if len(his) == len(mine) and len(his) >= 2:
            chosen.append(("in%d" % i, his[rng.randrange(len(his) - 1)]))
        elif len(his) < len(mine):  # the batch the kill cut: the write in flight is uncertain
            chosen.append(("in%d" % i, his[-1] if his else (b["lo"] + pend["t_dead"]) // 2))
        # Between this batch and the next: exact, every write of it and none of the next.
        if i + 1 < len(bs) and len(his) == len(mine) and his:
            chosen.append(("gap%d" % i, (his[-1] + bs[i + 1]["lo"]) // 2))
    chosen.append(("end", pend["t_dead"]))
    # At most --max points (the run time of crash.sh grows with them): always the first and
    # the last, the point inside the run the kill cut, and an evenly spaced sample of the rest.
    pend["candidates"] = len(chosen)
    if a.max and len(chosen) > a.max:
        must = {0, len(chosen) - 1}
        must |= {k for k, (label, _) in enumerate(chosen) if label == "in%d" % (len(bs) - 1)}
        rest = [k for k in range(len(chosen)) if k not in must]
        m = max(a.max - len(must), 1)
        keep = {rest[round(i * (len(rest) - 1) / max(m - 1, 1))] for i in range(m)}
        chosen = [chosen[k] for k in sorted(must | keep)]
    pend["points"] = []
    for label, t in chosen:
        name = "r%d%s" % (r, label)
        pend["points"].append({"name": name, "t": t})
        print(name, rfc3339(t))
    old = sorted(st.get("points", {}))
    for name in rng.sample(old, min(a.recheck, len(old))):
        print(name, rfc3339(st["points"][name]["t"]))
    if a.oldest:
        pend["oldest"] = "r%doldest" % r
        print(pend["oldest"], a.oldest)
    save(a.state, st)
    return 0


def history_check(base, writes, live, pts, views, t_dead):
    """Check this round's points in time. Writes are stamped in the order they were issued
    (one qemu-io at a time, each write after the previous one completed), so the view at T
    shows exactly the journaled writes issued before some cut n: writes[:n] stamped at or
    before T, writes[n:] after it. The oracle knows n only within bounds: writes acknowledged
    (the line read) before T are in, writes whose qemu-io started after T are out.

    Which writes are in the journal: every acknowledged one; the first unacknowledged write
    of a batch (in flight at the kill) may or may not be; later ones were never sent. A view
    reads a chunk from the first journaled entry after T (its old data: the chunk's state
    then, i.e. after writes[:n]), or the volume's current content if there is none.

    Returns (failures, summary)."""
    acked = [w["acked"] for w in writes]
    maybe = [i for i, w in enumerate(writes) if not w["acked"] and (i == 0 or acked[i - 1])]
    nchunks = NCELLS // CHUNK_CELLS
    bounds = []
    for p in pts:
        t = p["t"]
        nlo = 0
        for i, w in enumerate(writes):
            hi = w["hi"] if w["hi"] is not None else t_dead
            if hi <= t:
                nlo = i + 1
        nhi = next((i for i, w in enumerate(writes) if w["lo"] >= t), len(writes))
        bounds.append((nlo, max(nlo, nhi)))
    order = sorted(range(len(pts)), key=lambda k: pts[k]["t"])
    need = sorted(set(n for lo, hi in bounds for n in range(lo, hi + 1)))
    results = []  # per hypothesis about the in-flight writes: (inj, fits, fails, expected)
    for mask in range(1 << len(maybe)):
        inj = set(maybe[b] for b in range(len(maybe)) if mask >> b & 1)
        journaled = [acked[i] or i in inj for i in range(len(writes))]
        maxj = [-1] * nchunks
        for i, w in enumerate(writes):
            if journaled[i]:
                c0 = w["off"] // CELL
                for k in range(c0 // CHUNK_CELLS, (c0 + w["len"] // CELL - 1) // CHUNK_CELLS + 1):
                    maxj[k] = i
        later = [maxj[c // CHUNK_CELLS] for c in range(NCELLS)]
        # expected[n]: what a view with writes[:n] stamped before it reads, per cell.
        expected = {}
        cur = list(base)
        nxt = 0
        for n in need:
            while nxt < n:
                if journaled[nxt]:
                    w = writes[nxt]
                    c0 = w["off"] // CELL
                    cur[c0:c0 + w["len"] // CELL] = [w["pat"]] * (w["len"] // CELL)
                nxt += 1
            expected[n] = [s if m >= n else v for s, m, v in zip(cur, later, live)]
        fits, fails, prev = {}, [], 0
        for k in order:
            lo, hi = bounds[k]
            got = views[pts[k]["name"]]
            ok = [n for n in range(max(lo, prev), hi + 1) if expected[n] == got]
            if ok:
                fits[k] = ok
                prev = ok[0]
            else:
                fails.append(k)
        results.append((inj, fits, fails, expected))
    passing = [r for r in results if not r[2]]
    inj, fits, fails, expected = passing[0] if passing else min(results, key=lambda r: len(r[2]))
    for k in fails[:5]:
        p, (lo, hi) = pts[k], bounds[k]
        got = views[p["name"]]
        # Show the differences from the nearest state the oracle allows.
        cand = min(range(lo, hi + 1), key=lambda n: sum(x != y for x, y in zip(expected[n], got)))
        exp = expected[cand]
        bad = [c for c in range(NCELLS) if exp[c] != got[c]]
        if not bad:
            print("  point %s (%s): reads writes[:%d], older than what an earlier point read" % (
                p["name"], rfc3339(p["t"]), cand))
            continue
        print("  point %s (%s): reads no state the oracle allows (writes[:n], n in %d..%d); "
              "nearest n=%d differs in %d cell(s)" % (p["name"], rfc3339(p["t"]), lo, hi, cand, len(bad)))
        for c in bad[:6]:
            print("    cell %d (offset %d): reads %s, expected 0x%02x" % (
                c, c * CELL, "a torn mix" if got[c] is None else "0x%02x" % got[c], exp[c]))
    if len(fails) > 5:
        print("  ... and %d more point(s) of this round that read no allowed state" % (len(fails) - 5))
    exact = sum(1 for lo, hi in bounds if lo == hi)
    span = max((hi - lo for lo, hi in bounds), default=0)
    unique = sum(1 for k, v in fits.items() if len(v) == 1 and bounds[k][0] != bounds[k][1])
    summary = ("%d point(s) of this round: %d exact, %d within a batch (n uncertain by up to %d; "
               "the view matched one n only at %d)" % (
                   len(pts), exact, len(pts) - exact, span, unique))
    if maybe:
        if len(passing) > 1:
            summary += "; the write in flight at the kill: either way fits"
        elif passing:
            summary += "; the write in flight at the kill is %s the journal" % ("in" if inj else "not in")
    return len(fails), summary


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
    # Points in time: this round's, exactly where the oracle is certain; older ones must read
    # as they did when first checked; the oldest retained point reads as the empty volume.
    pviews = {}
    for v in a.point:
        name, path = v.split("=", 1)
        pviews[name] = cells_of(path)
    st.setdefault("points", {})
    mine = [p for p in pend.get("points", []) if p["name"] in pviews]
    for p in pend.get("points", []):
        if p["name"] not in pviews:
            print("  point %s (%s) was chosen but not read" % (p["name"], rfc3339(p["t"])))
            failures += 1
    if pend.get("oldest") and pend["oldest"] not in pviews:
        print("  the oldest point was not read")
        failures += 1
    hsum = ""
    if mine:
        n, hsum = history_check(base, writes, live, mine, {p["name"]: pviews[p["name"]][0] for p in mine},
                                pend["t_dead"])
        failures += n
        for p in mine:
            st["points"][p["name"]] = {"t": p["t"], "sha256": pviews[p["name"]][1], "round": st["rounds"] + 1}
    rechecked = 0
    oldest_ok = False
    for name, (got, digest) in pviews.items():
        if name == pend.get("oldest"):
            n = compare("oldest point", got, [[0]] * NCELLS, limit=4)
            oldest_ok = n == 0
            failures += n
        elif name in st["points"] and all(p["name"] != name for p in mine):
            rechecked += 1
            if st["points"][name]["sha256"] != digest:
                print("  point %s (%s) reads differently than when it was first checked" % (
                    name, rfc3339(st["points"][name]["t"])))
                failures += 1
        elif all(p["name"] != name for p in mine):
            print("  unknown point %s" % name)
            failures += 1
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
    print("check: %d cells, %d writes in the round, %d bookmark view(s) checked, %d bookmark(s) "
          "known, %d failure(s)" % (NCELLS, len(writes), checked, len(st["bookmarks"]), failures))
    if pviews:
        if pend.get("candidates", 0) > len(mine):
            hsum += " (a sample of %d candidate points)" % pend["candidates"]
        print("  history: %s; %d older point(s) read again%s" % (
            hsum or "no point of this round", rechecked,
            ", the oldest point reads as the empty volume" if oldest_ok else ""))
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
    c.add_argument("--point", action="append", default=[],
                   help="NAME=FILE: what a client read from the view at a point given by `points`")
    q = sub.add_parser("points", help="choose this round's points in time (NAME RFC3339 lines)")
    q.add_argument("--state", required=True)
    q.add_argument("--recheck", type=int, default=4, help="older points to read again")
    q.add_argument("--max", type=int, default=0, help="at most this many points of this round "
                   "(an evenly spaced sample; 0 = all)")
    q.add_argument("--oldest", default=None, help="the oldest retained point (RFC 3339)")
    s = sub.add_parser("bookmarks", help="print the names of the known bookmarks")
    s.add_argument("--state", required=True)
    s.add_argument("--pending", action="store_true", help="only those not checked yet")
    a = p.parse_args()
    if a.cmd == "drive":
        drive(a)
        return 0
    if a.cmd == "check":
        return check(a)
    if a.cmd == "points":
        return points(a)
    st = load(a.state)
    names = [n for n, _ in st.get("pending", {}).get("bookmarks", [])]
    if not a.pending:
        names = sorted(st["bookmarks"]) + names
    print(" ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
