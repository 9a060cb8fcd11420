"""How soon a fresh process that recorded exits, once its events are written (issue 19).

    python -m benchmarks.bench_exit_latency [--runs 15] [--backends sqlite,postgresql]
    python -m benchmarks.bench_exit_latency --fork-race 40

Each run is a new interpreter (``python -c ...``) that records one invocation with one
output and ends. The child stamps (wall clock, same host) the moment its last line ran,
the end of each background-writer pass, and the end of its last exit handler; the parent
stamps the moment ``wait`` returned. Per case, medians and maxima of:

- ``exit_after_last_line_ms``: last line -> process gone (what an orchestrator waiting
  for the process sees; with the background writer it includes the write itself);
- ``exit_after_written_ms``: last writer pass done -> process gone (background only):
  anything dpt would add *idle* at exit (a flush that waits on nothing, a thread that
  keeps the interpreter alive) shows here;
- ``finalization_ms``: last exit handler done -> process gone (the interpreter's own
  teardown).

``--fork-race N`` instead measures the race behind an Airflow worker finishing up to
``[workers] min_heartbeat_interval`` after its task (see docs/performance.md): a forked
child exits (``os._exit``) holding one end of a socket pair; the parent waits for the
EOF, then checks once with ``waitpid(WNOHANG)`` whether the child can be reaped, as
Airflow's supervisor does. Printed: in how many of N tries it could not, for a child
holding nothing else, two PostgreSQL connections, 20 open files, and both.

The baseline is ``pass``: a process that imports nothing of dpt, measured the same way
in the same run; ``ratio_to_pass`` divides ``exit_after_written_ms`` (background) or
``exit_after_last_line_ms`` (the other cases) by its ``exit_after_last_line_ms``. The
load average is printed with every row: on a shared machine compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import bytecode_cached, database, emit, machine, table

#: Stamps, one per line on stderr: "<what> <time.time()>".
STAMP_EXIT = (
    "import atexit, sys, time\n"
    "atexit.register(lambda: sys.stderr.write('handlers_done %r\\n' % time.time()))\n"
)
PASS = STAMP_EXIT + "sys.stderr.write('last_line %r\\n' % time.time())\n"
IMPORT = STAMP_EXIT + "import dpt_core\nsys.stderr.write('last_line %r\\n' % time.time())\n"
RECORD = STAMP_EXIT + (
    "import dpt_core\n"
    "from dpt_core.store.writer import BackgroundWriter\n"
    "_drain = BackgroundWriter._drain\n"
    "def drain(self):\n"
    "    _drain(self)\n"
    "    sys.stderr.write('written %r\\n' % time.time())\n"
    "BackgroundWriter._drain = drain\n"
    "with dpt_core.invocation('bench') as inv:\n"
    "    inv.write({out!r})\n"
    "sys.stderr.write('last_line %r\\n' % time.time())\n"
)


def _one(code: str, env: dict[str, str], cwd: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
    )
    gone = time.time()
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    stamps: dict[str, float] = {}
    for line in done.stderr.splitlines():
        what, _, value = line.partition(" ")
        if what in ("last_line", "written", "handlers_done"):
            stamps[what] = float(value)  # (the last pass of the writer wins)
    figures = {
        "exit_after_last_line": gone - stamps["last_line"],
        "finalization": gone - stamps["handlers_done"],
    }
    if "written" in stamps:
        figures["exit_after_written"] = gone - stamps["written"]
    return figures


def _case(code: str, env: dict[str, str], runs: int, cwd: Path) -> dict[str, float]:
    _one(code, env, cwd)  # warm-up (bytecode caches)
    samples = [_one(code, env, cwd) for _ in range(runs)]
    row: dict[str, float] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        row[f"{key}_ms"] = statistics.median(values) * 1000
        row[f"{key}_max_ms"] = max(values) * 1000
    return row


def run(runs: int, backends: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "product.txt"
        out.write_text("one output\n")
        (work / "none.toml").write_text("")
        base = bytecode_cached(
            {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}, work / "pycache"
        )
        root = str(Path(__file__).resolve().parents[1])
        base["PYTHONPATH"] = root + os.pathsep + base.get("PYTHONPATH", "")
        baseline = _case(PASS, base, runs, work)
        rows.append({"backend": "-", "case": "pass", **baseline, "load": os.getloadavg()[0]})
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
                figures = _case(IMPORT, env, runs, work)
                rows.append(
                    {"backend": backend, "case": "import", **figures, "load": os.getloadavg()[0]}
                )
                for mode in ("background", "sync"):
                    code = RECORD.format(out=str(out))
                    figures = _case(code, {**env, "DPT_WRITE": mode}, runs, work)
                    rows.append(
                        {"backend": backend, "case": mode, **figures, "load": os.getloadavg()[0]}
                    )
    for row in rows:
        key = "exit_after_written_ms" if row["case"] == "background" else "exit_after_last_line_ms"
        row["ratio_to_pass"] = float(row[key]) / baseline["exit_after_last_line_ms"]  # type: ignore[arg-type]
    return rows


def _not_reapable_at_eof(connections: int, files: int, work: Path) -> bool:
    """Fork a child that opens ``connections`` and ``files`` and exits; True when the
    parent, woken by the EOF of the child's socket, cannot reap it yet."""
    import select
    import socket

    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: hold things open, then exit as Airflow's task runner does
        parent.close()
        held: list[object] = []
        if connections:
            import psycopg

            url = os.environ.get(
                "DPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            )
            held += [psycopg.connect(url) for _ in range(connections)]
        for i in range(files):
            path = work / f"held-{os.getpid()}-{i}"
            held.append(path.open("w"))
            path.unlink()
        os._exit(0)
    child.close()
    while True:
        select.select([parent], [], [])
        if not parent.recv(4096):
            break
    reaped, _ = os.waitpid(pid, os.WNOHANG)
    if not reaped:
        os.waitpid(pid, 0)
    parent.close()
    return not reaped


def fork_race(tries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for connections, files in ((0, 0), (2, 0), (0, 20), (2, 20)):
            late = sum(_not_reapable_at_eof(connections, files, Path(tmp)) for _ in range(tries))
            print(
                f"child holding {connections} PostgreSQL connections, {files} files: "
                f"not reapable at the EOF in {late} of {tries} (load {os.getloadavg()[0]:.1f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--fork-race",
        type=int,
        metavar="N",
        help="only the fork/exit race behind Airflow's late workers, N tries a case",
    )
    args = parser.parse_args()
    if args.fork_race:
        fork_race(args.fork_race)
        return
    rows = run(args.runs, [b for b in args.backends.split(",") if b])
    for row in rows:
        emit("exit_latency", **row, runs=args.runs, **machine())
    table(rows)


if __name__ == "__main__":
    main()
