"""A small Prefect pipeline whose runs, environments and file lineage dpt records.

How to run it (Python 3.11+), from the root of a clone of the dpt repository (dpt is
not on PyPI)::

    pip install '.[prefect]'
    python examples/prefect_pipeline.py --data-dir /tmp/dpt-prefect-demo

Prefect needs an API. With ``PREFECT_API_URL`` unset, Prefect starts a temporary
server for the run (15-30 s the first time); to keep one running instead::

    PREFECT_SERVER_ANALYTICS_ENABLED=false prefect server start &
    export PREFECT_API_URL=http://127.0.0.1:4200/api    # in the shell that runs the pipeline

The script turns Prefect's own telemetry off (``PREFECT_SERVER_ANALYTICS_ENABLED=false``
for the server's heartbeat, ``DO_NOT_TRACK=1`` for the client's usage events) unless
you set them: the temporary server's heartbeat writes to its SQLite database while the
flow does, and when the two collide it logs a ``database is locked`` traceback that
has nothing to do with the pipeline.

dpt records into ``DPT_DATABASE_URL`` (default: a SQLite file in your user data
directory). See what it recorded::

    dpt runs --orchestrator prefect
    dpt lineage /tmp/dpt-prefect-demo/summary.json --upstream
    dpt show /tmp/dpt-prefect-demo/calibrated/frame_0.csv

The pipeline ("nightly-reduction"): ``simulate`` writes raw frames (recorded
with ``dpt_core.track`` from a task with the task hooks, so its arguments and
environment are kept), ``calibrate`` derives a calibrated frame from each raw one
(``dpt_core.track(..., parents=[...])`` inside a plain task), and ``summarize`` is
a Prefect ``@materialize`` asset whose dependencies are the calibrated frames.
The one line that turns tracking on is ``@flow(**dpt_prefect.flow_hooks())``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

# Before Prefect reads its settings (see the docstring): no telemetry heartbeat traceback.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, task, unmapped  # noqa: E402
from prefect.assets import materialize  # noqa: E402

import dpt_core  # noqa: E402
import dpt_prefect  # noqa: E402


def build_pipeline(data_dir: Path, frames: int = 3) -> Any:
    """The pipeline's flow, writing under ``data_dir`` (asset keys name the files)."""
    raw_dir = data_dir / "raw"
    cal_dir = data_dir / "calibrated"
    summary = data_dir / "summary.json"
    calibrated = [cal_dir / f"frame_{i}.csv" for i in range(frames)]

    @task(**dpt_prefect.task_hooks())
    def simulate(index: int, seed: int) -> str:
        """Write one raw frame of pseudo-random counts."""
        rng = random.Random(seed * 1000 + index)
        path = raw_dir / f"frame_{index}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(str(rng.randint(0, 1000)) for _ in range(100)) + "\n")
        dpt_core.track(path)
        return str(path)

    @task
    def calibrate(raw_path: str, gain: float) -> str:
        """Apply a gain to a raw frame."""
        raw = Path(raw_path)
        path = cal_dir / raw.name
        path.parent.mkdir(parents=True, exist_ok=True)
        values = [int(line) * gain for line in raw.read_text().split()]
        path.write_text("\n".join(f"{v:.1f}" for v in values) + "\n")
        dpt_core.track(path, parents=[raw])
        return str(path)

    @materialize(summary.as_uri(), asset_deps=[p.as_uri() for p in calibrated])
    def summarize(paths: list[str]) -> dict[str, float]:
        """Mean of every calibrated frame, as one JSON document."""
        means = {}
        for p in paths:
            values = [float(v) for v in Path(p).read_text().split()]
            means[Path(p).name] = sum(values) / len(values)
        summary.write_text(json.dumps(means, indent=2, sort_keys=True) + "\n")
        return means

    @flow(name="nightly-reduction", **dpt_prefect.flow_hooks())
    def nightly(gain: float = 1.5, seed: int = 42) -> dict[str, float]:
        raws = simulate.map(range(frames), unmapped(seed))
        cals = calibrate.map(raws, unmapped(gain))
        return summarize([c.result() for c in cals])

    return nightly


def run(data_dir: Path, frames: int = 3, gain: float = 1.5, seed: int = 42) -> dict[str, float]:
    """Run the pipeline once and wait until dpt has recorded all of it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, float] = build_pipeline(data_dir, frames)(gain=gain, seed=seed)
    dpt_prefect.flush()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Prefect pipeline recorded by dpt.")
    parser.add_argument("--data-dir", type=Path, default=Path("dpt-prefect-demo"))
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--gain", type=float, default=1.5)
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    means = run(data_dir, args.frames, args.gain)
    print(f"wrote {len(means)} calibrated frames and {data_dir / 'summary.json'}")
    print(f"see its lineage: dpt lineage {data_dir / 'summary.json'} --upstream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
