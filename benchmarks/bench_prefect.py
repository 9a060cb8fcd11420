"""Added wall time per Prefect task run with the dpt hooks on vs off.

Runs the same flow (N tasks, each writing a small file) three ways in one
process, interleaved round by round so drift hits all of them alike:

- ``off``: plain ``@flow`` / ``@task``;
- ``flow``: ``@flow(**dpt_prefect.flow_hooks())`` (task runs read back from the
  API in a background thread when the flow run ends);
- ``flow-blocking``: ``flow_hooks(background=False)`` (the read-back runs in the
  completion hook, before the flow returns);
- ``flow+task``: the flow hooks plus ``@task(**dpt_prefect.task_hooks())``.

It prints one JSON line per measurement, then a table with, per variant, the
median wall time of the flow call and of "flow call + ``dpt_prefect.flush()``"
(until every task run is recorded), per task run, the added milliseconds per task
run against ``off`` (target: <= 20 ms), and the wall and CPU time spent inside
dpt's hooks and background read-back threads. dpt records into a temporary SQLite database. Prefect talks
to ``PREFECT_API_URL`` if it is set, else to a temporary server this script
starts (and stops)::

    .tox/prefect/bin/python benchmarks/bench_prefect.py [--tasks 40] [--rounds 5] [--processes 5]

Then, as a Prefect worker does, it runs a one-task flow in ``--processes`` new Python
processes per variant (``off``; ``disabled``: the flow hooks with ``DPT_DISABLED=1``;
``on``: the flow hooks) and prints, per variant, the median wall time of the flow call,
of the ``on_running`` hook alone, of importing ``dpt_prefect``'s hooks, and the ratio of
the flow call to ``off`` measured in the same run. The new processes keep the bytecode
they compile (after one untimed run of each variant), as installed packages have it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path) -> subprocess.Popen[bytes]:
    """A temporary Prefect API server (no UI, analytics off) on a free localhost port."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_UI_ENABLED": "false",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    log = open(home.parent / "prefect-server.log", "wb")  # noqa: SIM115 - the server's lifetime
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_HOME"] = str(home)
    return process


def wait_for_server(process: subprocess.Popen[bytes] | None, timeout: float = 180.0) -> None:
    import httpx

    url = os.environ["PREFECT_API_URL"] + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the Prefect server at {url} did not answer in {timeout:.0f} s")


def build_flows(data: Path, n_tasks: int) -> dict[str, Any]:
    from prefect import flow, task

    import dpt_prefect

    def work(i: int) -> int:
        (data / f"out{i}.txt").write_text(f"{i}\n")
        return i

    plain_task = task(name="work")(work)
    hooked_task = task(name="work", **dpt_prefect.task_hooks())(work)

    def body(t: Any) -> Any:
        def run(n: int = n_tasks) -> int:
            return sum(t(i) for i in range(n))

        return run

    return {
        "off": flow(name="bench-off")(body(plain_task)),
        "flow": flow(name="bench-flow", **dpt_prefect.flow_hooks())(body(plain_task)),
        "flow-blocking": flow(
            name="bench-flow-blocking", **dpt_prefect.flow_hooks(background=False)
        )(body(plain_task)),
        "flow+task": flow(name="bench-flow-task", **dpt_prefect.flow_hooks())(body(hooked_task)),
    }


class HookTimer:
    """Wall time spent inside the dpt hooks (wraps the hook methods; benchmark only)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.lock = threading.Lock()
        self.depth = threading.local()  # a read-back inside a hook is counted once

    def reset(self) -> None:
        with self.lock:
            self.seconds = self.cpu_seconds = 0.0

    def install(self) -> None:
        from dpt_prefect import hooks

        for cls, names in (
            # (FlowHooks / TaskHooks before the recorders moved out of the host glue)
            (
                getattr(hooks, "FlowRecorder", None) or hooks.FlowHooks,
                ("dpt_flow_running", "dpt_flow_finished", "_readback"),
            ),
            (
                getattr(hooks, "TaskRecorder", None) or hooks.TaskHooks,
                ("dpt_task_running", "dpt_task_finished", "dpt_task_commit"),
            ),
        ):
            for name in names:
                setattr(cls, name, self._timed(getattr(cls, name)))

    def _timed(self, method: Any) -> Any:
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(timer.depth, "value", 0)
            timer.depth.value = depth + 1
            start, cpu_start = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                timer.depth.value = depth
                if depth == 0:
                    elapsed = time.perf_counter() - start
                    cpu = time.thread_time() - cpu_start
                    with timer.lock:
                        timer.seconds += elapsed
                        timer.cpu_seconds += cpu

        timed.__name__ = method.__name__
        return timed


#: The flow run in a new process (as a Prefect worker starts one per flow run).
CHILD = r"""
import json, os, sys, time
start = time.perf_counter()
from prefect import flow, task
variant = sys.argv[1]
spent = {"hook": 0.0}
hooks = {}
imported = 0.0
if variant != "off":
    before = time.perf_counter()
    import dpt_prefect
    hooks = dpt_prefect.flow_hooks()
    imported = time.perf_counter() - before
    def timed(hook):
        def run(*args):
            t = time.perf_counter()
            try:
                return hook(*args)
            finally:
                spent["hook"] += time.perf_counter() - t
        run.__name__ = hook.__name__
        return run
    hooks["on_running"] = [timed(h) for h in hooks["on_running"]]
@task
def one(i):
    return i
@flow(name="bench-process-" + variant, **hooks)
def f():
    return one(1)
t = time.perf_counter()
f()
call = time.perf_counter() - t
if variant != "off":
    dpt_prefect.flush()
print(json.dumps({"variant": variant, "call_s": call, "hook_s": spent["hook"],
                  "import_hooks_s": imported, "process_s": time.perf_counter() - start,
                  "sqlalchemy_loaded": "sqlalchemy" in sys.modules}))
"""


def bench_processes(n: int, bytecode: Path) -> None:
    """The flow-running hook's cost in a new process, DPT_DISABLED=1 and on, against none.

    The processes keep their compiled bytecode in ``bytecode`` (see
    :func:`benchmarks._common.bytecode_cached`), written by one untimed run of each
    variant first: else, here, every one compiles Prefect and dpt from source."""
    from benchmarks._common import bytecode_cached

    variants = {"off": {}, "disabled": {"DPT_DISABLED": "1"}, "on": {}}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for round_no in range(-1, n):  # (round -1: the warm-up, not counted)
        for name, extra in variants.items():
            env = bytecode_cached({**os.environ, **extra}, bytecode)
            if name != "disabled":
                env.pop("DPT_DISABLED", None)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, name],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            if round_no < 0:
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["round"] = round_no
            print(json.dumps(row), flush=True)
            rows[name].append(row)
    base = statistics.median(r["call_s"] for r in rows["off"])
    print()
    print(
        f"{'new process':<12} {'flow call s':>12} {'ratio':>6} {'on_running hook s':>18} "
        f"{'import hooks s':>15} {'sqlalchemy loaded':>18}"
    )
    for name, values in rows.items():
        call = statistics.median(r["call_s"] for r in values)
        hook = statistics.median(r["hook_s"] for r in values)
        imported = statistics.median(r["import_hooks_s"] for r in values)
        loaded = sum(r["sqlalchemy_loaded"] for r in values)
        print(
            f"{name:<12} {call:>12.3f} {call / base:>6.2f} {hook:>18.3f} {imported:>15.3f} "
            f"{loaded:>12}/{len(values)}"
        )
    print(f"median of {n} new processes per variant, one task each; ratio: to 'off'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="task runs per flow run")
    parser.add_argument(
        "--rounds", type=int, default=5, help="flow runs per variant (0: new processes only)"
    )
    parser.add_argument(
        "--processes", type=int, default=5, help="new processes per variant (0: skip)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds to let the API server catch up between flow runs",
    )
    args = parser.parse_args()

    work_dir = Path(tempfile.mkdtemp(prefix="dpt-bench-prefect-"))
    os.environ.update(
        DPT_DATABASE_URL=f"sqlite:///{work_dir / 'dpt.sqlite3'}",
        DPT_SPOOL_DIR=str(work_dir / "spool"),
        DPT_CACHE_DIR=str(work_dir / "cache"),
        DPT_CONFIG=str(work_dir / "none.toml"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    (work_dir / "none.toml").write_text("")
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = start_server(work_dir / "prefect-home")
    try:
        wait_for_server(server)
        if args.rounds == 0:  # new processes only
            bench_processes(args.processes, work_dir / "pycache")
            return 0
        data = work_dir / "data"
        data.mkdir()
        timer = HookTimer()
        timer.install()
        flows = build_flows(data, args.tasks)
        import dpt_prefect

        for fl in flows.values():  # warm-up: imports, first API calls, dpt schema
            fl(2)
        dpt_prefect.flush()
        times: dict[str, list[float]] = {name: [] for name in flows}
        recorded: dict[str, list[float]] = {name: [] for name in flows}
        in_hooks: dict[str, list[float]] = {name: [] for name in flows}
        cpu_in_hooks: dict[str, list[float]] = {name: [] for name in flows}
        for round_no in range(args.rounds):
            for name, fl in flows.items():
                time.sleep(args.settle)
                timer.reset()
                start = time.perf_counter()
                fl(args.tasks)
                elapsed = time.perf_counter() - start
                dpt_prefect.flush()
                until_recorded = time.perf_counter() - start
                times[name].append(elapsed)
                recorded[name].append(until_recorded)
                in_hooks[name].append(timer.seconds)
                cpu_in_hooks[name].append(timer.cpu_seconds)
                print(
                    json.dumps(
                        {
                            "variant": name,
                            "round": round_no,
                            "tasks": args.tasks,
                            "seconds": round(elapsed, 4),
                            "seconds_until_recorded": round(until_recorded, 4),
                            "ms_per_task": round(1000 * elapsed / args.tasks, 2),
                            "dpt_ms_per_task": round(1000 * timer.seconds / args.tasks, 2),
                            "dpt_cpu_ms_per_task": round(1000 * timer.cpu_seconds / args.tasks, 2),
                        }
                    ),
                    flush=True,
                )
        base = statistics.median(times["off"])
        summary = []
        for name, values in times.items():
            median = statistics.median(values)
            median_recorded = statistics.median(recorded[name])
            summary.append(
                {
                    "variant": name,
                    "median_s": round(median, 3),
                    "ms_per_task": round(1000 * median / args.tasks, 2),
                    "added_ms_per_task": round(1000 * (median - base) / args.tasks, 2),
                    "ratio": round(median / base, 3),
                    "added_ms_per_task_until_recorded": round(
                        1000 * (median_recorded - base) / args.tasks, 2
                    ),
                    "dpt_ms_per_task": round(
                        1000 * statistics.median(in_hooks[name]) / args.tasks, 2
                    ),
                    "dpt_cpu_ms_per_task": round(
                        1000 * statistics.median(cpu_in_hooks[name]) / args.tasks, 2
                    ),
                }
            )
        for row in summary:
            print(json.dumps({"summary": row}))
        print()
        print(
            f"{'variant':<14} {'median s':>9} {'ms/task':>8} {'added ms/task':>14} "
            f"{'ratio':>6} {'added, until recorded':>22} {'dpt wall ms':>12} {'dpt CPU ms':>11}"
        )
        for row in summary:
            print(
                f"{row['variant']:<14} {row['median_s']:>9.3f} {row['ms_per_task']:>8.2f} "
                f"{row['added_ms_per_task']:>14.2f} {row['ratio']:>6.3f} "
                f"{row['added_ms_per_task_until_recorded']:>22.2f} "
                f"{row['dpt_ms_per_task']:>12.2f} {row['dpt_cpu_ms_per_task']:>11.2f}"
            )
        print(
            "dpt wall/CPU ms: per task run, inside dpt's hooks and read-back threads (wall "
            "includes waiting for the Prefect API to ingest the task runs)"
        )
        print(f"target: added ms per task run <= 20 ({args.tasks} tasks, {args.rounds} rounds)")
        if args.processes:
            print()
            bench_processes(args.processes, work_dir / "pycache")
    finally:
        try:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
            EventsWorker.drain_all(timeout=5)
        except Exception:
            pass
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
