"""What a fork costs in a process that records, now that it waits for dpt's threads.

    python -m benchmarks.bench_fork [--forks 200] [--backends sqlite,postgresql]

A fork waits until dpt's threads are between two pieces of work (dpt_core/forksafe.py).
Each case is a new interpreter that forks N times, the child ending at once
(``os._exit(0)``) and the parent reaping it; timed per fork: ``os.fork()`` returning in
the parent (the wait is in there), and fork to reaped.

- ``baseline``: a process that never imported dpt (the same loop);
- ``loaded``: dpt and its database stack imported (``dpt_core.store.bulk``, SQLAlchemy,
  the driver), nothing recorded: no writer thread, no fork handler, the same size as
  the next case (a fork copies the page tables: a bigger process forks slower);
- ``idle``: one invocation recorded and flushed: the writer thread exists and is idle,
  the fork handler registered;
- ``busy``: a thread of the process records small invocations without pause (the
  default background writer writing all the time), so most forks find a write under
  way and wait for it.

The figures are medians, p95 and maxima in ms, and each case's median fork time as a
ratio to ``loaded``'s (what dpt's thread and handler add) and to ``baseline``'s, from
the same run. For ``busy``, ``writes`` is how many
invocations the thread recorded meanwhile (the writer kept going).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks._common import database, emit, isolated_dpt, machine, p95, table

LOOP = r"""
import json, os, sys, threading, time
forks = int(sys.argv[1])
case = sys.argv[2]
writes = [0]
if case != "baseline":
    import dpt_core
    import dpt_core.store.bulk, dpt_core.store.engine
    from dpt_core.config import get_settings
    dpt_core.store.engine.load_driver(get_settings().database_url)
if case in ("idle", "busy"):
    with dpt_core.invocation("bench-fork-warm"):
        pass
    dpt_core.flush()
if case == "busy":
    stop = threading.Event()
    def record():
        while not stop.is_set():
            with dpt_core.invocation("bench-fork-busy"):
                pass
            writes[0] += 1
    threading.Thread(target=record, daemon=True).start()
    time.sleep(0.5)
fork_ms, reaped_ms = [], []
for _ in range(forks):
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    forked = time.perf_counter()
    os.waitpid(pid, 0)
    done = time.perf_counter()
    fork_ms.append((forked - start) * 1000)
    reaped_ms.append((done - start) * 1000)
    time.sleep(0.005)
if case == "busy":
    stop.set()
if case in ("idle", "busy"):
    dpt_core.flush()
print(json.dumps({"fork_ms": fork_ms, "reaped_ms": reaped_ms, "writes": writes[0]}))
"""


def run_case(case: str, forks: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", LOOP, str(forks), case],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    fork_ms, reaped_ms = figures["fork_ms"], figures["reaped_ms"]
    return {
        "case": case,
        "fork_median_ms": statistics.median(fork_ms),
        "fork_p95_ms": p95(fork_ms),
        "fork_max_ms": max(fork_ms),
        "reaped_median_ms": statistics.median(reaped_ms),
        "writes": figures["writes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forks", type=int, default=200, help="forks a case (default 200)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    emit("fork", machine=machine(), load=os.getloadavg()[0])
    rows: list[dict[str, object]] = []
    for backend in args.backends.split(","):
        with database(backend) as url, isolated_dpt(url, DPT_WRITE="background"):
            cases = [run_case(case, args.forks) for case in ("baseline", "loaded", "idle", "busy")]
        base, loaded = (float(c["fork_median_ms"]) for c in cases[:2])  # type: ignore[arg-type]
        for row in cases:
            row["backend"] = backend
            row["ratio_to_loaded"] = float(row["fork_median_ms"]) / loaded  # type: ignore[arg-type]
            row["ratio_to_baseline"] = float(row["fork_median_ms"]) / base  # type: ignore[arg-type]
            row["load"] = round(os.getloadavg()[0], 2)
            emit("fork", **row)
            rows.append(row)
    table(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
