"""What the dpt Airflow plugin adds to each task: the same DAG, plugin on vs off, in one process.

Usage::

    .tox/airflow/bin/python benchmarks/bench_airflow.py [--tasks 20] [--rounds 5]

A temporary AIRFLOW_HOME (migrated with ``airflow db migrate``) holds a DAG of
``--tasks`` tasks in a chain; task i reads file i-1 (an inlet Asset) and writes
file i (an outlet Asset, 4 KiB, with an asset event extra), so every task records
an invocation, one input, one output and a lineage edge on SQLite. Each round runs
the DAG with ``dag.test()`` twice, once with ``[dpt] enabled = False`` (off) and once
with the plugin on, in alternating order; the first runs warm Airflow and the dpt
database up and are not counted. Printed: one JSON line per run, then a table of
the median wall time per task for each mode, the time added per task (the median
over rounds of on minus off, wall and CPU time) and the ratio, plus the time spent inside the listener hooks per task. ``dag.test()`` runs
every task in this one process; a real worker starts a process per task try, which
pays dpt's set-up (plugin import, settings, engine, environment capture) once: the
last line times that set-up plus one task's calls in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DAG_TEMPLATE = """
import os
from pathlib import Path

from airflow.sdk import Asset, dag, get_current_context, task

DATA = Path(os.environ["DPT_BENCH_DATA"])
N = {tasks}
FILES = [Asset((DATA / f"part_{{i}}.bin").as_uri()) for i in range(N)]


def make(i):
    @task(task_id=f"step_{{i}}", inlets=FILES[i - 1 : i], outlets=[FILES[i]])
    def step():
        previous = (DATA / f"part_{{i - 1}}.bin").read_bytes() if i else b"seed"
        (DATA / f"part_{{i}}.bin").write_bytes((previous[:16] + os.urandom(16)) * 128)
        get_current_context()["outlet_events"][FILES[i]].extra = {{"step": i}}

    return step()


@dag(dag_id="dpt_bench", schedule=None)
def dpt_bench():
    previous = None
    for i in range(N):
        current = make(i)
        if previous is not None:
            previous >> current
        previous = current


bench = dpt_bench()
"""


def set_up(home: Path, tasks: int, database_url: str | None = None) -> None:
    """Point Airflow and dpt at ``home`` (before Airflow is imported) and migrate Airflow's DB."""
    (home / "dags").mkdir(parents=True)
    (home / "data").mkdir()
    (home / "dags" / "dpt_bench_dag.py").write_text(DAG_TEMPLATE.format(tasks=tasks))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "DPT_BENCH_DATA": str(home / "data"),
            "DPT_DATABASE_URL": database_url or f"sqlite:///{home / 'dpt.sqlite3'}",
            "DPT_SPOOL_DIR": str(home / "spool"),
            "DPT_CACHE_DIR": str(home / "cache"),
            "DPT_CONFIG": str(home / "dpt.toml"),
        }
    )
    (home / "dpt.toml").write_text("")
    for name in ("DPT_DISABLED", "DPT_STRICT", "AIRFLOW__DPT__TRANSLATOR"):
        os.environ.pop(name, None)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


class HookTimer:
    """Wall time spent inside the dpt listener's hooks, per task try."""

    HOOKS = (
        "on_task_instance_running",
        "on_task_instance_success",
        "on_task_instance_failed",
        "on_dag_run_success",
        "on_dag_run_failed",
    )

    def __init__(self, listener: Any) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)
        for name in self.HOOKS:
            setattr(listener, name, self._wrap(name, getattr(listener, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        @functools.wraps(method)  # pluggy reads the hook's argument names through __wrapped__
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - start)

        timed.__dict__.update(method.__func__.__dict__)  # Airflow's hookimpl marker
        return timed

    def take(self) -> dict[str, list[float]]:
        calls, self.calls = dict(self.calls), defaultdict(list)
        return calls


FRESH_PROCESS = """
import json, sys, time
from pathlib import Path
import airflow.sdk  # a task-runner process has Airflow loaded before any listener runs

start = time.perf_counter()
import dpt_airflow.plugin  # what Airflow's plugin loading imports
import dpt_core

data = Path(sys.argv[1])
tracker = dpt_core.get_tracker()
run = tracker.start("dpt_bench", orchestrator="airflow", uuid=dpt_core.invocation_uuid("fresh"),
                    parent="", environment=False)
task = tracker.start("dpt_bench", task="fresh", orchestrator="airflow", parent=run.uuid)
task.read(data / "part_0.bin")
task.write(data / "part_1.bin")
task.finish("success")
print(json.dumps({"fresh_process_dpt_ms": (time.perf_counter() - start) * 1000}))
"""


def fresh_process_ms(home: Path, repeats: int = 3) -> float:
    """dpt's one-off cost in a new task process: plugin import, settings, store, environment.

    The same tracker calls the listener makes for one task, timed inside a fresh
    interpreter that has already imported Airflow (as a task runner has).
    """
    timings = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS, str(home / "data")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        timings.append(json.loads(out.strip().splitlines()[-1])["fresh_process_dpt_ms"])
    return statistics.median(timings)


def run_once(dag: Any, plugin_on: bool, tasks: int, timer: HookTimer) -> dict[str, Any]:
    os.environ["AIRFLOW__DPT__ENABLED"] = "True" if plugin_on else "False"
    start, cpu_start = time.perf_counter(), time.process_time()
    dag_run = dag.test()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    state = str(getattr(dag_run.state, "value", dag_run.state))
    calls = timer.take()
    in_hooks = sum(sum(v) for v in calls.values())
    return {
        "mode": "on" if plugin_on else "off",
        "state": state,
        "tasks": tasks,
        "wall_s": round(wall, 4),
        "per_task_ms": round(wall / tasks * 1000, 3),
        "cpu_per_task_ms": round(cpu / tasks * 1000, 3),
        "in_listener_per_task_ms": round(in_hooks / tasks * 1000, 3),
        "first_task_start_ms": round(calls["on_task_instance_running"][0] * 1000, 3)
        if calls.get("on_task_instance_running")
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--database-url", help="dpt database (default: a new SQLite file beside AIRFLOW_HOME)"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="dpt-bench-airflow-"))
    try:
        set_up(home, args.tasks, args.database_url)
        sys.path.insert(0, str(home / "dags"))
        import dpt_bench_dag  # noqa: E402  (Airflow must see the variables above first)

        import dpt_core
        from dpt_airflow.listener import dpt_listener

        timer = HookTimer(dpt_listener)
        dag = dpt_bench_dag.bench
        for plugin_on in (True, False):  # warm-up: Airflow's first run imports a lot
            run_once(dag, plugin_on, args.tasks, timer)

        results: list[dict[str, Any]] = []
        for round_no in range(args.rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for plugin_on in order:
                result = run_once(dag, plugin_on, args.tasks, timer)
                result["round"] = round_no
                results.append(result)
                print(json.dumps(result), flush=True)

        # A fresh tracker and store: what the first task of a new worker process pays.
        dpt_core.plugin_api.reset()
        cold = run_once(dag, True, args.tasks, timer)
        cold["round"] = "cold-store"
        print(json.dumps(cold), flush=True)

        recorded = _count_rows(os.environ["DPT_DATABASE_URL"])
        summary = _summarise(results, cold, recorded)
        summary["fresh_process_dpt_ms"] = round(fresh_process_ms(home), 1)
        print(json.dumps({"summary": summary}), flush=True)
        _print_table(summary)
        bad = [r for r in results if r["state"] != "success"]
        return 1 if bad else 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _count_rows(database_url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("invocations", "data_product_versions", "lineage_edges")
            }
    finally:
        engine.dispose()


def _summarise(
    results: list[dict[str, Any]], cold: dict[str, Any], recorded: dict[str, int]
) -> dict[str, Any]:
    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["mode"] == mode)

    def paired(key: str) -> float:
        """Median over rounds of (on - off): both runs of a round saw the same machine load."""
        by_round: dict[Any, dict[str, float]] = defaultdict(dict)
        for r in results:
            by_round[r["round"]][r["mode"]] = r[key]
        return statistics.median(v["on"] - v["off"] for v in by_round.values())

    off, on = median("off", "per_task_ms"), median("on", "per_task_ms")
    return {
        "tasks_per_run": results[0]["tasks"],
        "rounds": len(results) // 2,
        "off_per_task_ms": round(off, 2),
        "on_per_task_ms": round(on, 2),
        "added_per_task_ms": round(paired("per_task_ms"), 2),
        "ratio": round(on / off, 3),
        "added_cpu_per_task_ms": round(paired("cpu_per_task_ms"), 2),
        "in_listener_per_task_ms": round(median("on", "in_listener_per_task_ms"), 2),
        "cold_first_task_start_ms": cold["first_task_start_ms"],
        "target_added_ms": 20,
        "recorded_rows": recorded,
    }


def _print_table(s: dict[str, Any]) -> None:
    rows = [
        ("tasks per run x rounds", f"{s['tasks_per_run']} x {s['rounds']}"),
        ("plugin off, per task", f"{s['off_per_task_ms']:.2f} ms"),
        ("plugin on, per task", f"{s['on_per_task_ms']:.2f} ms"),
        ("added per task (wall)", f"{s['added_per_task_ms']:.2f} ms (target <= 20 ms)"),
        ("added per task (CPU)", f"{s['added_cpu_per_task_ms']:.2f} ms"),
        ("ratio on/off", f"{s['ratio']:.3f}"),
        ("inside the listener, per task", f"{s['in_listener_per_task_ms']:.2f} ms"),
        ("start hook, store just reset", f"{s['cold_first_task_start_ms']:.1f} ms"),
        ("dpt set-up + one task, new process", f"{s['fresh_process_dpt_ms']:.1f} ms"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
