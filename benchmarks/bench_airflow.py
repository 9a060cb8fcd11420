"""What the dpt Airflow plugin adds to each task: the same DAG, plugin on vs off, in one process.

Usage::

    .tox/airflow/bin/python benchmarks/bench_airflow.py [--tasks 40] [--rounds 5]
        [--modes off,dpt,ol-thread,ol-fork]

A temporary AIRFLOW_HOME (migrated with ``airflow db migrate``) holds a DAG of
``--tasks`` tasks in a chain; task i reads file i-1 (an inlet Asset) and writes
file i (an outlet Asset, 4 KiB, with an asset event extra), so every task records
an invocation, one input, one output and a lineage edge on SQLite. Each round runs
the DAG with ``dag.test()`` once per mode, the order rotating from round to round:

- ``off``: ``[dpt] enabled = False``, no OpenLineage listener (the baseline);
- ``dpt``: the dpt plugin on, in dpt's default write mode (``DPT_WRITE`` unset: the
  background writer) or ``--write-mode``'s; the mode in effect is printed. With
  ``--write-mode deferred`` the events go to the spool only, and a ``dpt spool drain
  --follow`` process writes them while the DAG runs, as beside real workers (its CPU a
  task try is printed; ``--no-drainer``: one drain at the end instead);
- ``ol-thread`` / ``ol-fork``: dpt off, Airflow's OpenLineage provider on with a file
  transport (``append``), with ``[openlineage] execute_in_thread = True`` / its
  default, a fork per task event.

The first run of each mode warms Airflow and the dpt database up and is not counted.
Every run starts after a full garbage collection (``gc.collect()``, not timed): else
the collection Airflow's own objects bring on every second run lands in one mode's run.
Printed: one JSON line per run, then a table with, per mode, the median wall time
per task, the time added per task against ``off`` (the median over rounds of mode
minus off, wall and CPU time of the process, all threads; and the mean added wall with
its 95 % confidence interval over the rounds, which says how finely a run can tell), the time spent on the
task's thread inside the mode's listener hooks per task (for ``ol-fork`` the parent
waits for each forked child there), and for ``dpt`` the time added until the
background writer has written everything (``dag.test()`` then ``dpt_core.flush()``),
and dpt's own CPU time per task: its hooks' (the thread's CPU clock) plus its writer
thread's (the thread's CPU clock, the flush included). In ``dag.test()``'s one process
that CPU is what dpt adds to a run, free of the drift of Airflow's own time (+-15 ms a
task try from run to run), which buries the wall-time difference at the 2 ms level.
So dpt's added wall is also printed as bounds: at least its hooks' time on the task's
thread less the disabled plugin's in ``off`` (Airflow's thread waits for them), at most
that plus its writer thread's user CPU (from ``/proc``: all the GIL the writer can take).
``dag.test()`` runs every task in this one process; a real worker starts a process per task try, which
pays dpt's set-up (plugin import, settings, engine, environment capture) once: the
last line times that set-up plus one task's calls in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import functools
import gc
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


def set_up(
    home: Path,
    tasks: int,
    database_url: str | None = None,
    openlineage: bool = False,
    write_mode: str | None = None,
) -> None:
    """Point Airflow and dpt at ``home`` (before Airflow is imported) and migrate Airflow's DB.

    With ``openlineage``, Airflow's OpenLineage provider gets a file transport, so it
    registers its listener when plugins load (:class:`OpenLineageSwitch` turns it off
    and on); without, the provider stays disabled."""
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
    for name in ("DPT_DISABLED", "DPT_STRICT", "DPT_WRITE", "AIRFLOW__DPT__TRANSLATOR"):
        os.environ.pop(name, None)
    if write_mode:
        os.environ["DPT_WRITE"] = write_mode
    for name in [k for k in os.environ if k.startswith(("OPENLINEAGE", "AIRFLOW__OPENLINEAGE"))]:
        os.environ.pop(name)
    if openlineage:
        transport = {
            "type": "file",
            "log_file_path": str(home / "openlineage.jsonl"),
            "append": True,
        }
        os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(transport)
        os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "dpt_bench"
    else:
        os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


class HookTimer:
    """Wall time spent inside a listener's hooks, per task try (and the CPU time of the
    thread running them, in :attr:`cpu`)."""

    HOOKS = (
        "on_task_instance_running",
        "on_task_instance_success",
        "on_task_instance_failed",
        "on_dag_run_running",
        "on_dag_run_success",
        "on_dag_run_failed",
    )

    def __init__(self, listener: Any) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.cpu = 0.0
        self.add(listener)

    def add(self, listener: Any) -> None:
        """Time ``listener``'s hooks too (before it is registered with a listener manager)."""
        for name in self.HOOKS:
            method = getattr(listener, name, None)
            if method is not None and hasattr(method, "__func__"):
                setattr(listener, name, self._wrap(name, method))

    def _wrap(self, name: str, method: Any) -> Any:
        @functools.wraps(method)  # pluggy reads the hook's argument names through __wrapped__
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - start)
                self.cpu += time.thread_time() - cpu

        timed.__dict__.update(method.__func__.__dict__)  # Airflow's hookimpl marker
        return timed

    def take(self) -> tuple[dict[str, list[float]], float]:
        calls, self.calls = dict(self.calls), defaultdict(list)
        cpu, self.cpu = self.cpu, 0.0
        return calls, cpu


def writer_cpu() -> tuple[int | None, float, float]:
    """(thread id, CPU seconds, user CPU seconds) of dpt's background writer thread in
    this process, if any. The user CPU is read from ``/proc`` (Linux; 0 elsewhere): the
    writer's Python runs in user mode, holding the GIL, so it bounds the time the writer
    can take the GIL from the task's thread (its system time, ``fsync`` and SQLite's
    writes, does not hold it)."""
    store_module = sys.modules.get("dpt_core.store.plugin")
    store = getattr(store_module, "_store", None)
    thread = store.writer.thread if store is not None else None
    if thread is None or thread.ident is None or not thread.is_alive():
        return None, 0.0, 0.0
    try:
        cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, AttributeError):  # (gone meanwhile; not on this platform)
        return None, 0.0, 0.0
    try:
        with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        user = int(fields[11]) / os.sysconf("SC_CLK_TCK")
    except OSError:  # (no /proc)
        user = 0.0
    return thread.ident, cpu, user


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
    interpreter that has already imported Airflow (as a task runner has), with the
    bytecode compiled once (as an installed package has it).
    """
    from benchmarks._common import bytecode_cached

    env = bytecode_cached(dict(os.environ), home / "pycache")
    timings = []
    for _ in range(repeats + 1):  # (the first writes the bytecode, not counted)
        out = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS, str(home / "data")],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        timings.append(json.loads(out.strip().splitlines()[-1])["fresh_process_dpt_ms"])
    return statistics.median(timings[1:])


MODES = ("off", "dpt", "ol-thread", "ol-fork")


class OpenLineageSwitch:
    """Airflow's OpenLineage provider listener, registered only for the ``ol-*`` modes.

    The provider registers its listener with Airflow's listener managers when plugins
    load (its transport is configured by then, see :func:`set_up`); this takes it out
    and puts it back, and switches ``execute_in_thread`` (a cached setting) per run.
    """

    def __init__(self) -> None:
        import airflow.listeners.listener as core_listeners
        import airflow.sdk.listener as sdk_listeners
        from airflow.providers.openlineage import conf as ol_conf
        from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

        self.conf = ol_conf
        self.listener = get_openlineage_listener()
        self.managers = [
            sdk_listeners.get_listener_manager(),
            core_listeners.get_listener_manager(),
        ]
        self.on = True
        self.switch(False)

    def switch(self, mode: str | bool) -> None:
        on = isinstance(mode, str) and mode.startswith("ol-")
        if on:
            os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = str(mode == "ol-thread")
            self.conf.execute_in_thread.cache_clear()
        if on == self.on:
            return
        for manager in self.managers:
            if on:
                manager.add_listener(self.listener)
            elif manager.pm.is_registered(self.listener):
                manager.pm.unregister(self.listener)
        self.on = on


def run_once(
    dag: Any, mode: str, tasks: int, timer: HookTimer, lineage: OpenLineageSwitch | None
) -> dict[str, Any]:
    import dpt_core

    os.environ["AIRFLOW__DPT__ENABLED"] = "True" if mode == "dpt" else "False"
    if lineage is not None:
        lineage.switch(mode)
    # Each run starts with no garbage pending: Airflow promotes ~80 000 objects a 40-task
    # run, so a full collection of the ~650 000 objects (0.5 s) fell every second run,
    # into whichever mode ran then, and moved "added" by +-12 ms a task try.
    gc.collect()
    writer_before = writer_cpu()
    start, cpu_start = time.perf_counter(), time.process_time()
    dag_run = dag.test()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    dpt_core.flush()  # the dpt run's writes, before the next run is timed
    until_written = time.perf_counter() - start
    writer_after = writer_cpu()
    same_writer = writer_before[0] == writer_after[0]
    written_cpu = writer_after[1] - (writer_before[1] if same_writer else 0)
    written_user = writer_after[2] - (writer_before[2] if same_writer else 0)
    state = str(getattr(dag_run.state, "value", dag_run.state))
    calls, hooks_cpu = timer.take()
    task_hooks = sum(sum(v) for k, v in calls.items() if k.startswith("on_task_instance"))
    in_hooks = sum(sum(v) for v in calls.values())
    return {
        "mode": mode,
        "state": state,
        "tasks": tasks,
        "wall_s": round(wall, 4),
        "per_task_ms": round(wall / tasks * 1000, 3),
        "until_written_per_task_ms": round(until_written / tasks * 1000, 3),
        "cpu_per_task_ms": round(cpu / tasks * 1000, 3),
        "on_task_thread_per_task_ms": round(task_hooks / tasks * 1000, 3),
        # dpt's own CPU: its hooks on the task's thread and its writer thread (the flush
        # included); in dag.test()'s one process, what dpt adds to the run's CPU
        "dpt_cpu_per_task_ms": round((hooks_cpu + written_cpu) / tasks * 1000, 3),
        "writer_cpu_per_task_ms": round(written_cpu / tasks * 1000, 3),
        "writer_user_cpu_per_task_ms": round(written_user / tasks * 1000, 3),
        "in_listener_per_task_ms": round(in_hooks / tasks * 1000, 3),
        "first_task_start_ms": round(calls["on_task_instance_running"][0] * 1000, 3)
        if calls.get("on_task_instance_running")
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {','.join(MODES)} (off is always run)",
    )
    parser.add_argument(
        "--database-url", help="dpt database (default: a new SQLite file beside AIRFLOW_HOME)"
    )
    parser.add_argument(
        "--write-mode",
        choices=("background", "sync", "deferred"),
        help="DPT_WRITE for the dpt mode (default: unset, dpt's default); with deferred, a"
        " 'dpt spool drain --follow' process writes the events while the DAG runs",
    )
    parser.add_argument(
        "--no-drainer",
        action="store_true",
        help="with --write-mode deferred: no drainer while the DAG runs (one drain at the end)",
    )
    args = parser.parse_args()
    modes = ["off", *(m for m in args.modes.split(",") if m and m != "off")]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    openlineage = any(m.startswith("ol-") for m in modes)

    home = Path(tempfile.mkdtemp(prefix="dpt-bench-airflow-"))
    drainer: subprocess.Popen[bytes] | None = None
    try:
        set_up(home, args.tasks, args.database_url, openlineage, args.write_mode)
        sys.path.insert(0, str(home / "dags"))
        import dpt_bench_dag  # noqa: E402  (Airflow must see the variables above first)

        import dpt_core
        from dpt_airflow.listener import dpt_listener

        timer = HookTimer(dpt_listener)  # before the listener managers register it
        lineage = None
        if openlineage:
            lineage = OpenLineageSwitch()
            timer.add(lineage.listener)
        dag = dpt_bench_dag.bench
        if args.write_mode == "deferred" and not args.no_drainer:
            drainer = start_drainer(home)
        for mode in modes:  # warm-up: Airflow's first run imports a lot
            run_once(dag, mode, args.tasks, timer, lineage)
        from dpt_core.store import plugin as store_plugin

        store = store_plugin._store  # the store the warm-up's dpt run wrote through
        write_mode = None
        if store is not None:
            writer = "running" if store.writer.thread is not None else "not started"
            write_mode = f"{store.mode} (background writer thread {writer})"

        results: list[dict[str, Any]] = []
        for round_no in range(args.rounds):
            shift = round_no % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                result = run_once(dag, mode, args.tasks, timer, lineage)
                result["round"] = round_no
                results.append(result)
                print(json.dumps(result), flush=True)

        cold = None
        if "dpt" in modes:
            # A fresh tracker and store: what the first task of a new worker process pays.
            dpt_core.plugin_api.reset()
            cold = run_once(dag, "dpt", args.tasks, timer, lineage)
            cold["round"] = "cold-store"
            print(json.dumps(cold), flush=True)

        drainer_cpu = stop_drainer(drainer) if drainer is not None else None
        if args.write_mode == "deferred":  # (what the drainer had not written yet)
            dpt = Path(sys.executable).with_name("dpt")
            subprocess.run([str(dpt), "spool", "drain"], check=True, capture_output=True)
        recorded = _count_rows(os.environ["DPT_DATABASE_URL"])
        summary = _summarise(results, modes, cold, recorded)
        summary["dpt_write_mode"] = write_mode
        if drainer_cpu is not None:
            tries = sum(1 for r in results if r["mode"] == "dpt") + 2  # (warm-up, cold store)
            summary["drainer_cpu_per_task_ms"] = round(drainer_cpu / tries / args.tasks * 1000, 2)
        if openlineage:
            events = home / "openlineage.jsonl"
            summary["openlineage_events"] = (
                len(events.read_text().splitlines()) if events.exists() else 0
            )
        if "dpt" in modes:
            summary["fresh_process_dpt_ms"] = round(fresh_process_ms(home), 1)
        print(json.dumps({"summary": summary}), flush=True)
        _print_table(summary)
        bad = [r for r in results if r["state"] != "success"]
        return 1 if bad else 0
    finally:
        if drainer is not None and drainer.poll() is None:
            drainer.kill()
        shutil.rmtree(home, ignore_errors=True)


def start_drainer(home: Path) -> subprocess.Popen[bytes]:
    """``dpt spool drain --follow`` (its default interval), writing the deferred events
    while the DAG runs, as a drainer beside real workers does; its log in ``home``."""
    dpt = Path(sys.executable).with_name("dpt")
    log = (home / "drainer.log").open("wb")
    return subprocess.Popen(
        [str(dpt), "spool", "drain", "--follow"], stdout=log, stderr=subprocess.STDOUT
    )


def stop_drainer(drainer: subprocess.Popen[bytes]) -> float:
    """Stop the drainer as a service manager would (SIGTERM); the CPU seconds it used."""
    from benchmarks._common import cpu_seconds

    cpu = cpu_seconds(drainer.pid) or 0.0
    drainer.terminate()
    drainer.wait(timeout=60)
    return cpu


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
    results: list[dict[str, Any]],
    modes: list[str],
    cold: dict[str, Any] | None,
    recorded: dict[str, int],
) -> dict[str, Any]:
    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["mode"] == mode)

    by_round: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        by_round[r["round"]][r["mode"]] = r

    def differences(mode: str, key: str, base_key: str | None = None) -> list[float]:
        """Per round, mode - off: both runs of a round saw about the same load."""
        return [v[mode][key] - v["off"][base_key or key] for v in by_round.values()]

    def paired(mode: str, key: str, base_key: str | None = None) -> float:
        return statistics.median(differences(mode, key, base_key))

    def interval(mode: str) -> list[float] | None:
        """The mean added wall a task try and its 95 % confidence interval (normal
        approximation over the rounds' differences): how finely the run can tell."""
        diffs = differences(mode, "per_task_ms")
        if len(diffs) < 3:
            return None
        mean = statistics.fmean(diffs)
        half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
        return [round(mean, 2), round(mean - half, 2), round(mean + half, 2)]

    off = median("off", "per_task_ms")
    rows = {}
    for mode in modes:
        per_task = median(mode, "per_task_ms")
        rows[mode] = {
            "per_task_ms": round(per_task, 2),
            "added_per_task_ms": round(paired(mode, "per_task_ms"), 2),
            "added_mean_ci95_ms": interval(mode),
            "added_cpu_per_task_ms": round(paired(mode, "cpu_per_task_ms"), 2),
            "ratio": round(per_task / off, 3),
            "on_task_thread_per_task_ms": round(median(mode, "on_task_thread_per_task_ms"), 2),
            "in_listener_per_task_ms": round(median(mode, "in_listener_per_task_ms"), 2),
            "dpt_cpu_per_task_ms": round(median(mode, "dpt_cpu_per_task_ms"), 2),
            "writer_cpu_per_task_ms": round(median(mode, "writer_cpu_per_task_ms"), 2),
        }
        if mode == "dpt":
            rows[mode]["added_until_written_per_task_ms"] = round(
                paired(mode, "until_written_per_task_ms", "per_task_ms"), 2
            )
            # Bounds free of Airflow's drift: the hooks run on Airflow's thread and it
            # waits for them (their time less the disabled plugin's in off), and the
            # writer can take the GIL from it for at most its user CPU time.
            hooks = paired(mode, "in_listener_per_task_ms")
            writer = median(mode, "writer_user_cpu_per_task_ms")
            rows[mode]["writer_user_cpu_per_task_ms"] = round(writer, 2)
            rows[mode]["added_bounds_ms"] = [round(hooks, 2), round(hooks + writer, 2)]
    return {
        "tasks_per_run": results[0]["tasks"],
        "rounds": len(results) // len(modes),
        "modes": rows,
        "cold_first_task_start_ms": cold["first_task_start_ms"] if cold else None,
        "target_added_ms": 2,
        "recorded_rows": recorded,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _print_table(s: dict[str, Any]) -> None:
    print()
    print(
        f"{s['tasks_per_run']} tasks x {s['rounds']} rounds, per task try; added: median over"
        f" rounds of (mode - off); load {s['load_average']}"
    )
    header = (
        f"{'mode':<10} {'wall ms':>8} {'added ms':>9} {'added CPU ms':>13} {'ratio':>6}"
        f" {'task thread ms':>15} {'added until written ms':>23} {'dpt CPU ms':>11}"
    )
    print(header)
    for mode, row in s["modes"].items():
        written = row.get("added_until_written_per_task_ms")
        print(
            f"{mode:<10} {row['per_task_ms']:>8.2f} {row['added_per_task_ms']:>9.2f}"
            f" {row['added_cpu_per_task_ms']:>13.2f} {row['ratio']:>6.3f}"
            f" {row['on_task_thread_per_task_ms']:>15.2f}"
            f" {'' if written is None else f'{written:.2f}':>23}"
            f" {row['dpt_cpu_per_task_ms'] if mode == 'dpt' else '':>11}"
        )
    for mode, row in s["modes"].items():
        if mode != "off" and row.get("added_mean_ci95_ms"):
            mean, low, high = row["added_mean_ci95_ms"]
            print(
                f"{mode}: added wall, mean over rounds {mean:+.2f} ms, 95 % interval [{low:+.2f}, {high:+.2f}]"
            )
    bounds = s["modes"].get("dpt", {}).get("added_bounds_ms")
    if bounds:
        print(
            f"dpt: added wall, bounded: [{bounds[0]:.2f}, {bounds[1]:.2f}] ms: its hooks on the"
            " task's thread, which Airflow waits for (less off's), up to that plus its writer's"
            " user CPU, all the GIL it can take (not counted: what dpt's code evicts from the"
            " CPU's caches for Airflow's)"
        )
    print(f"target: dpt added <= {s['target_added_ms']} ms per task try")
    print(
        "dpt CPU: its hooks' CPU on the task's thread plus its writer thread's (flush"
        " included): what dpt adds to dag.test()'s one process, without the drift of"
        " Airflow's own time"
    )
    if s.get("dpt_write_mode"):
        print(f"dpt write mode in dag.test(): {s['dpt_write_mode']}")
    if s.get("cold_first_task_start_ms") is not None:
        print(f"dpt start hook, store just reset: {s['cold_first_task_start_ms']:.1f} ms")
    if s.get("drainer_cpu_per_task_ms") is not None:
        print(
            f"the drainer process's CPU (dpt spool drain --follow): {s['drainer_cpu_per_task_ms']:.2f} ms a task try"
        )
    if s.get("fresh_process_dpt_ms") is not None:
        print(f"dpt set-up + one task, new process: {s['fresh_process_dpt_ms']:.1f} ms")
    if "openlineage_events" in s:
        print(f"OpenLineage events written to the file: {s['openlineage_events']}")
    print(f"dpt recorded: {s['recorded_rows']}")


if __name__ == "__main__":
    sys.exit(main())
