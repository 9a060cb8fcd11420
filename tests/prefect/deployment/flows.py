"""Flows the deployment test runs in a Prefect worker (and the in-process tests run here).

The worker loads this file from its directory (``flow.from_source``), so it imports
only Prefect, dpt and the standard library. Asset keys are fixed when a module is
imported, so the data directory comes from ``DPT_TEST_PREFECT_DATA`` (the test sets
it for itself and for the worker).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, task
from prefect.assets import materialize

import dpt_core
import dpt_prefect

#: Where the flows read and write: fixed when the module is imported, as asset keys are.
DATA = Path(os.environ.get("DPT_TEST_PREFECT_DATA") or Path.cwd() / "dpt-prefect-data")
RAW = DATA / "raw.csv"
CLEAN = DATA / "clean.csv"
SUMMARY = DATA / "summary.json"


@materialize(CLEAN.as_uri(), asset_deps=[RAW.as_uri()])
def make_clean_csv(source: str) -> str:
    """clean.csv from raw.csv: a ``@materialize`` task whose asset is the file."""
    rows = [line for line in Path(source).read_text().splitlines() if line.strip()]
    CLEAN.write_text("\n".join(rows) + "\n")
    return str(CLEAN)


@task
def summarize(clean_path: str) -> str:
    """``summary.json`` from clean.csv, recorded from inside the task with clean.csv as parent."""
    rows = Path(clean_path).read_text().splitlines()
    SUMMARY.write_text(f'{{"rows": {len(rows)}}}\n')
    dpt_core.track(SUMMARY, parents=[clean_path])
    return str(SUMMARY)


@flow(name="clean-and-summarize", **dpt_prefect.flow_hooks())
def clean_and_summarize() -> str:
    clean_path = make_clean_csv(str(RAW))
    return summarize(clean_path)


@task
def wait_for_file(path: str, pid_file: str) -> str:
    """Write this process's pid, then wait (bounded) until ``path`` exists."""
    Path(pid_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path


@flow(name="waits", **dpt_prefect.flow_hooks())
def waits(path: str, pid_file: str) -> str:
    return wait_for_file(path, pid_file)
