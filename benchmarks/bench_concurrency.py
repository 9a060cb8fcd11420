"""Concurrency: P processes recording overlapping products into one database at once.

Each process runs I invocations; each reads 4 shared inputs and writes 8 shared
products (shuffled, so writers collide on the same rows in different orders)
plus one of its own. Printed per backend and process count: wall time, events
and invocations per second, the ratio to one process, and (PostgreSQL) the
deadlocks the server detected (and dpt retried) during the run.

    python -m benchmarks.bench_concurrency [--processes 1,2,4,8] [--invocations 20]
        [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks._common import database, emit, isolated_dpt, machine, table

READS, WRITES, SHARED = 4, 8, 12


def _worker(args: tuple[int, int, list[str], str, str]) -> float:
    index, invocations, inputs, own_dir, gate = args
    import dpt_core

    rng = random.Random(index)
    dpt_core.get_tracker().environment()
    while not os.path.exists(gate):
        time.sleep(0.001)
    start = time.perf_counter()
    for i in range(invocations):
        with dpt_core.invocation("bench", task=f"p{index}-{i}") as inv:
            inv.read(*rng.sample(inputs, READS))
            shared = [f"s3://bench/shared/{j}" for j in range(SHARED)]
            rng.shuffle(shared)
            own = Path(own_dir) / f"p{index}-{i}.dat"
            own.write_text(own.name)
            inv.write(*shared[:WRITES], own)
    return time.perf_counter() - start


def deadlocks(url: str) -> int | None:
    if not url.startswith("postgresql"):
        return None
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        ).scalar()
    engine.dispose()
    return int(count or 0)


def run(backend: str, processes: int, invocations: int) -> dict[str, object]:
    with database(backend) as url, isolated_dpt(url, DPT_STRICT="1") as tmp:
        inputs = []
        for k in range(10):
            path = tmp / f"in{k}.dat"
            path.write_text(f"input {k}")
            inputs.append(str(path))
        gate = tempfile.mktemp(prefix="dpt-bench-gate-")
        before = deadlocks(url)
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            pending = pool.map_async(
                _worker,
                [(p, invocations, inputs, str(tmp / "own"), gate) for p in range(processes)],
            )
            (tmp / "own").mkdir(exist_ok=True)
            time.sleep(0.5)  # every process imported dpt and captured its environment
            start = time.perf_counter()
            Path(gate).touch()
            pending.get()
            wall = time.perf_counter() - start
        os.unlink(gate)
        total = processes * invocations
        events = total * 4  # start, read, write, finish
        after = deadlocks(url)
        return {
            "backend": backend,
            "processes": processes,
            "invocations": total,
            "wall_s": wall,
            "invocations_per_s": total / wall,
            "events_per_s": events / wall,
            "deadlocks_retried": None if before is None else after - before,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", default="1,2,4,8")
    parser.add_argument("--invocations", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        baseline = None
        for processes in [int(p) for p in args.processes.split(",")]:
            row = run(backend, processes, args.invocations)
            baseline = baseline or row["invocations_per_s"]
            row["vs_1_process"] = row["invocations_per_s"] / baseline  # type: ignore[operator]
            rows.append(row)
            emit("concurrency", machine=machine(), **row)
    table(rows)


if __name__ == "__main__":
    main()
