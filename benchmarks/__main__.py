"""Run every benchmark: ``python -m benchmarks [--quick]``.

Core benchmarks run in this interpreter; the adapter benchmarks run in their tox
environments (``.tox/airflow``, ``.tox/prefect``, ``.tox/dagster``; create them
with ``tox -e airflow --notest`` etc.) and are skipped with a note when missing.
Each script prints JSON lines and a table; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = [
    ("bench_environment", []),
    ("bench_fork", []),
    ("bench_hashing", ["--mib", "512"]),
    ("bench_ingest", []),
    ("bench_lineage", []),
    ("bench_uri", []),
]
ADAPTERS = [
    ("bench_airflow", "airflow"),
    ("bench_prefect", "prefect"),
    ("bench_dagster", "dagster"),
]
QUICK = {
    "bench_fork": ["--forks", "40"],
    "bench_hashing": ["--mib", "128", "--files", "2000"],
    "bench_ingest": ["--outputs", "5000", "--small", "100"],
    "bench_uri": ["--files", "2000"],
}


def run(python: str, module: str, args: list[str]) -> int:
    print(f"\n== {module} ({python})", flush=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT), DPT_CONTRACTS="0")
    code = subprocess.call([python, "-m", f"benchmarks.{module}", *args], cwd=ROOT, env=env)
    print(f"== {module}: exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description="Run all dpt benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", help="comma-separated benchmark names")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    failures = 0
    for module, extra in CORE:
        if (only is None or module in only) and (ROOT / "benchmarks" / f"{module}.py").exists():
            failures += (
                run(sys.executable, module, QUICK.get(module, extra) if args.quick else extra) != 0
            )
    for module, env in ADAPTERS:
        if only is not None and module not in only:
            continue
        python = ROOT / ".tox" / env / "bin" / "python"
        if not python.exists():
            print(f"\n== {module}: skipped, no .tox/{env} (run: tox -e {env} --notest)")
            continue
        failures += run(str(python), module, []) != 0
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
