"""A fresh process that records one invocation with one output, against ``python -c pass``.

    python -m benchmarks.bench_fresh_process [--runs 20] [--backends sqlite,postgresql]

Each case is a new interpreter (``python -c ...``), timed from outside, median of
``--runs`` (after one warm-up run that also writes the bytecode caches, kept in a
temporary ``PYTHONPYCACHEPREFIX`` so a ``PYTHONDONTWRITEBYTECODE`` environment does not
make every run compile dpt and SQLAlchemy again). Cases, per backend:

- ``pass``: ``python -c pass``, the baseline;
- ``import``: ``import dpt_core``;
- ``background``: record one invocation + one output, default write mode (spool, then
  the background writer; flushed at exit);
- ``sync``: the same with ``DPT_WRITE=sync`` (written on the caller's thread);
- ``deferred``: the same with ``DPT_WRITE=deferred`` (spooled only; a drainer writes);
- ``deferred, no plugins``: and ``DPT_LOAD_PLUGINS=""`` (no entry-point plugins: the
  adapters' own dpt plugins and the live OpenLineage emitter are not imported);
- ``dpt run, deferred``: ``dpt run -o OUT -- true`` (the command line, deferred mode);
- ``preload`` and ``deferred, preloaded``: ``python -c`` importing the standard library
  modules every orchestrator's process has loaded before its tasks run (:data:`PRELOAD`:
  typing, inspect, dataclasses, logging, pathlib, json, ...), then the same plus the
  deferred recording, interleaved: the difference (``cpu_over_preload_ms``) is what dpt
  adds to an Airflow, Prefect or Dagster task process, Python's own modules left out;
- ``openlineage``: the openlineage-python client emitting START + COMPLETE to a file
  (when it is installed: it is in ``.tox/server``).

The added cost is ``median - median(pass)``; the target for ``deferred`` is <= 60 ms.
Run it with ``.tox/server/bin/python`` for the OpenLineage row and PostgreSQL.

``--against DIR`` also times the ``deferred`` case with another checkout of dpt on
``PYTHONPATH`` (an older commit, say ``git worktree add /tmp/old <commit>``), in the same
run and interleaved run by run with this tree's, so the two share the host's load: its
rows are ``deferred (DIR)`` and, for this tree, ``deferred (here)``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import bytecode_cached, database, emit, machine, table

DPT_RUN = (
    "from dpt_core.cli import main\n"
    "try:\n"
    "    main(['run', '--name', 'bench', '-o', {out!r}, '--', 'true'])\n"
    "except SystemExit as exit:\n"
    "    assert exit.code == 0, exit.code\n"
)
#: Standard library modules Airflow, Prefect and Dagster all import before a task runs.
PRELOAD = (
    "import typing, inspect, dataclasses, logging, pathlib, json, re, hashlib, datetime, "
    "contextlib, threading, socket, sqlite3, urllib.parse\n"
)
RECORD = "import dpt_core\nwith dpt_core.invocation('bench') as inv:\n    inv.write({out!r})\n"
OPENLINEAGE = (
    "import uuid, datetime\n"
    "from openlineage.client import OpenLineageClient\n"
    "from openlineage.client.transport.file import FileConfig, FileTransport\n"
    "from openlineage.client.event_v2 import RunEvent, RunState, Run, Job, OutputDataset\n"
    "client = OpenLineageClient(transport=FileTransport(FileConfig(log_file_path={log!r})))\n"
    "run = Run(runId=str(uuid.uuid4())); job = Job(namespace='bench', name='bench')\n"
    "now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()\n"
    "client.emit(RunEvent(eventType=RunState.START, eventTime=now(), run=run, job=job, producer='bench'))\n"
    "client.emit(RunEvent(eventType=RunState.COMPLETE, eventTime=now(), run=run, job=job,\n"
    "    producer='bench', outputs=[OutputDataset(namespace='file', name={out!r})]))\n"
)


def _interleaved(
    cases: list[tuple[str, dict[str, str]]], runs: int, cwd: Path
) -> list[tuple[list[float], float]]:
    """``(wall samples, median CPU)`` per ``(code, environment)``, the cases' runs alternating."""
    for code, env in cases:  # warm-up
        subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
    walls: list[list[float]] = [[] for _ in cases]
    cpus: list[list[float]] = [[] for _ in cases]
    for _ in range(runs):
        for index, (code, env) in enumerate(cases):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
            walls[index].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[index].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return [(wall, statistics.median(cpu)) for wall, cpu in zip(walls, cpus, strict=True)]


def _drain(env: dict[str, str], cwd: Path) -> None:
    """``dpt spool drain``: the drainer writes what deferred runs spooled."""
    subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "spool", "drain"],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _row(
    backend: str, case: str, median: float, baseline: float, **extra: object
) -> dict[str, object]:
    """One table row: the median wall time and what it adds to ``python -c pass``."""
    return {
        "backend": backend,
        "case": case,
        "median_ms": median * 1000,
        "added_ms": (median - baseline) * 1000,
        **extra,
    }


def _time(code: str, env: dict[str, str], runs: int, cwd: Path) -> list[float]:
    subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)  # warm-up
    samples, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
        samples.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    global _last_cpu
    _last_cpu = statistics.median(cpu)
    return samples


#: Median CPU seconds (user + system) of the children of the last :func:`_time`: steadier
#: than wall time on a busy machine (printed as ``cpu_ms``).
_last_cpu = 0.0


def _has_openlineage() -> bool:
    try:
        import openlineage.client  # noqa: F401
    except ImportError:
        return False
    return True


def _rows_recorded(url: str) -> int:
    from sqlalchemy import text

    from dpt_core.store.engine import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM invocations")).scalar_one()
    engine.dispose()
    return int(count)


def run(runs: int, backends: list[str], against: Path | None = None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "product.txt"
        out.write_text("one output\n")
        base = bytecode_cached(
            {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}, work / "pycache"
        )
        root = str(Path(__file__).resolve().parents[1])
        base["PYTHONPATH"] = root + os.pathsep + base.get("PYTHONPATH", "")
        baseline = statistics.median(_time("pass", base, runs, work))
        baseline_cpu = _last_cpu
        rows.append(_row("-", "pass", baseline, baseline, cpu_s=baseline_cpu))
        if _has_openlineage():
            log = work / "openlineage.jsonl"
            med = statistics.median(
                _time(OPENLINEAGE.format(log=str(log), out=str(out)), base, runs, work)
            )
            rows.append(_row("file", "openlineage", med, baseline, cpu_s=_last_cpu))
        for backend in backends:
            with database(backend) as url:
                env = {
                    **base,
                    "DPT_DATABASE_URL": url,
                    "DPT_SPOOL_DIR": str(work / f"spool-{backend}"),
                    "DPT_CACHE_DIR": str(work / "cache"),
                    "DPT_REDACTION_KEY": "bench",
                    "DPT_CONFIG": str(work / "none.toml"),
                }
                (work / "none.toml").write_text("")
                med = statistics.median(_time("import dpt_core", env, runs, work))
                rows.append(_row(backend, "import", med, baseline, cpu_s=_last_cpu))
                for mode in ("background", "sync", "deferred", "deferred, no plugins"):
                    before = _rows_recorded(url)
                    code = RECORD.format(out=str(out))
                    settings = {"DPT_WRITE": mode.split(",")[0]}
                    if mode.endswith("no plugins"):  # no entry-point plugins (adapters, OL)
                        settings["DPT_LOAD_PLUGINS"] = ""
                    med = statistics.median(_time(code, {**env, **settings}, runs, work))
                    if mode.startswith("deferred"):  # the drainer writes what the runs spooled
                        _drain(env, work)
                    recorded = _rows_recorded(url) - before
                    rows.append(
                        _row(backend, mode, med, baseline, cpu_s=_last_cpu, recorded=recorded)
                    )
                before = _rows_recorded(url)
                deferred = {**env, "DPT_WRITE": "deferred"}
                med = statistics.median(_time(DPT_RUN.format(out=str(out)), deferred, runs, work))
                _drain(env, work)
                recorded = _rows_recorded(url) - before
                rows.append(
                    _row(
                        backend,
                        "dpt run, deferred",
                        med,
                        baseline,
                        cpu_s=_last_cpu,
                        recorded=recorded,
                    )
                )
                rows += _preloaded(backend, env, runs, work, baseline, out)
                if against is not None:
                    rows += _against(against, backend, env, runs, work, baseline, out, root)
        for row in rows:
            cpu = float(row.pop("cpu_s"))  # type: ignore[arg-type]
            row["cpu_ms"] = cpu * 1000
            row["cpu_added_ms"] = (cpu - baseline_cpu) * 1000
    for row in rows:
        row["ratio_to_pass"] = row["median_ms"] / (baseline * 1000)  # type: ignore[operator]
    return rows


def _preloaded(
    backend: str, env: dict[str, str], runs: int, work: Path, baseline: float, out: Path
) -> list[dict[str, object]]:
    """:data:`PRELOAD` alone and :data:`PRELOAD` + the deferred recording, interleaved."""
    deferred = {**env, "DPT_WRITE": "deferred"}
    (preload_wall, preload_cpu), (record_wall, record_cpu) = _interleaved(
        [(PRELOAD, deferred), (PRELOAD + RECORD.format(out=str(out)), deferred)], runs, work
    )
    rows: list[dict[str, object]] = []
    for case, wall, cpu in (
        ("preload", preload_wall, preload_cpu),
        ("deferred, preloaded", record_wall, record_cpu),
    ):
        med = statistics.median(wall)
        rows.append(
            _row(
                backend,
                case,
                med,
                baseline,
                cpu_s=cpu,
                cpu_over_preload_ms=(cpu - preload_cpu) * 1000,
            )
        )
    return rows


def _against(
    other: Path,
    backend: str,
    env: dict[str, str],
    runs: int,
    work: Path,
    baseline: float,
    out: Path,
    root: str,
) -> list[dict[str, object]]:
    """The deferred case with ``other`` on PYTHONPATH and with this tree, interleaved."""
    rest = env["PYTHONPATH"].split(os.pathsep, 1)[1]
    envs = []
    for tree, cache in ((root, "cache"), (str(other.resolve()), "cache-against")):
        envs.append(
            {
                **env,
                "PYTHONPATH": tree + os.pathsep + rest,
                "DPT_WRITE": "deferred",
                "DPT_CACHE_DIR": str(work / cache),  # each its own entry-point cache
            }
        )
    before = _rows_recorded(env["DPT_DATABASE_URL"])
    code = RECORD.format(out=str(out))
    timed = _interleaved([(code, e) for e in envs], runs, work)
    _drain(env, work)
    recorded = _rows_recorded(env["DPT_DATABASE_URL"]) - before  # both trees' runs
    rows: list[dict[str, object]] = []
    for name, (wall, cpu) in zip(("deferred (here)", f"deferred ({other})"), timed, strict=True):
        med = statistics.median(wall)
        rows.append(_row(backend, name, med, baseline, cpu_s=cpu, recorded=recorded))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--against", type=Path, help="another dpt checkout to time the deferred case with"
    )
    args = parser.parse_args()
    rows = run(args.runs, [b for b in args.backends.split(",") if b], args.against)
    for row in rows:
        emit("fresh_process", **row, runs=args.runs, **machine())
    table(rows)


if __name__ == "__main__":
    main()
