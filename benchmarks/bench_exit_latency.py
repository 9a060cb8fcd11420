"""How soon a fresh process that recorded exits, once its events are written (issue 19).

    python -m benchmarks.bench_exit_latency [--runs 15] [--backends sqlite,postgresql]

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

from benchmarks._common import database, emit, machine, table

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
        base = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = run(args.runs, [b for b in args.backends.split(",") if b])
    for row in rows:
        emit("exit_latency", **row, runs=args.runs, **machine())
    table(rows)


if __name__ == "__main__":
    main()
