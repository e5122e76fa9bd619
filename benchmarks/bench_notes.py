"""Concurrent editors on the same few units of one notes database: saves per second, conflicts, errors and lost
edits, for a SQLite file and a PostgreSQL server side by side.

SESSIONS editors (threads, each with its own engine, as separate dashboard replicas would have) each save
SAVES labels and notes on one of UNITS units. An editor does what the unit page lets a person do: it opens the
unit (reads its revision), saves, and on a stale save (StaleEdit) reopens the unit and saves its text again on
top. Every save that returned must be one history row with its text, and the final value of each unit must be
the last save that returned for it: anything else is a lost edit. This measures the storage layer, not the
browser (bench_load.py drives browsers).

    python benchmarks/bench_notes.py [--sessions 20] [--saves 20] [--units 3] [--postgres]

--postgres starts a throwaway server from Debian's `postgresql` package (as tests/postgres_support.py does).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from store.notes import Notes, StaleEdit  # noqa: E402 - importable once the root is on the path

MODEL, LAYER = "bench-model", "blocks.1"


def run(url: str, sessions: int, saves: int, units: int) -> dict:
    Notes.open(url, readonly=False).close()
    done: list[tuple[int, str, float]] = []  # (unit, label, commit time) of every save that returned
    errors: list[str] = []
    conflicts = [0]
    lock = threading.Lock()
    start = threading.Barrier(sessions)

    def editor(n: int) -> None:
        held = Notes(url)
        try:
            start.wait()
            for i in range(saves):
                unit = (n + i) % units
                label = f"s{n}-{i}"
                while True:
                    seen = held.get(MODEL, LAYER, unit).revision
                    try:
                        held.save(MODEL, LAYER, unit, label=label, note=f"note by {n}, edit {i}", families=[],
                                  author=f"user{n}@lab.org", seen=seen)
                        break
                    except StaleEdit:
                        with lock:
                            conflicts[0] += 1
                with lock:
                    done.append((unit, label, time.perf_counter()))
        except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure instead of stopping
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            held.close()

    threads = [threading.Thread(target=editor, args=(n,)) for n in range(sessions)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began

    held = Notes(url)
    lost = 0
    for unit in range(units):
        labels = [r["new_value"] for r in held.history(MODEL, LAYER, unit) if r["field"] == "label"]
        mine = [label for u, label, _ in done if u == unit]
        lost += len(set(mine) - set(labels)) + abs(len(labels) - len(mine))
        revision = held.get(MODEL, LAYER, unit).revision
        lost += revision != len(mine)  # one revision per returned save, none skipped, none twice
    held.close()
    return {"saves": len(done), "seconds": seconds, "per_second": len(done) / seconds, "conflicts": conflicts[0],
            "errors": errors, "lost": lost}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--saves", type=int, default=20)
    p.add_argument("--units", type=int, default=3)
    p.add_argument("--postgres", action="store_true", help="also run against a throwaway PostgreSQL server")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="microscope-bench-notes-"))
    results = {}
    try:
        results["sqlite"] = run(f"sqlite:///{folder / 'notes.sqlite'}", args.sessions, args.saves, args.units)
        if args.postgres:
            from tests.postgres_support import postgres_server

            pg = Path(tempfile.mkdtemp(prefix="microscope-bench-pg-"))  # its own: the server's user must enter it
            try:
                with postgres_server(pg) as url:
                    results["postgresql"] = run(url, args.sessions, args.saves, args.units)
            finally:
                shutil.rmtree(pg, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.sessions} editors x {args.saves} saves on {args.units} units")
    for name, r in results.items():
        print(f"{name:11s} {r['saves']:5d} saves in {r['seconds']:6.2f} s = {r['per_second']:7.1f} saves/s; "
              f"{r['conflicts']} stale saves retried; {len(r['errors'])} errors; {r['lost']} lost edits")
        for e in r["errors"][:3]:
            print(f"    {e}")
    if len(results) == 2:
        ratio = results["postgresql"]["per_second"] / results["sqlite"]["per_second"]
        print(f"postgresql / sqlite saves per second: {ratio:.2f}")


if __name__ == "__main__":
    main()
