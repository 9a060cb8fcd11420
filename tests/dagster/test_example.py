"""examples/dagster_pipeline.py on a fresh data directory: what it recorded, and the CLI lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dagster_pipeline.py"


def _dpt(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_example_pipeline_records_its_lineage(dpt_env: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "example-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPT_", "DAGSTER_"))}
    env.update(dpt_env.environ())

    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "dpt recorded 5 materialisation(s), 5 finished run(s)" in done.stdout

    runs = dpt_env.rows(
        "SELECT job, task, status, parent_id FROM invocations ORDER BY job, task, id"
    )
    assert [(r.job, r.task, r.status) for r in runs if r.task] == [
        ("calibrate", "calibrated_chip", "success"),
        ("calibrate", "calibrated_chip", "success"),
        ("calibrate", "calibrated_chip", "success"),
        ("ingest", "raw_frames", "success"),
        ("summarise", "catalog", "success"),
    ]
    assert sum(1 for r in runs if r.task is None) == 5
    assert all(r.parent_id is not None for r in runs if r.task)
    chips = dpt_env.rows(
        "SELECT json_extract(parameters, '$.partition') AS chip FROM invocations "
        "WHERE task = 'calibrated_chip' ORDER BY chip"
    )
    assert [c.chip for c in chips] == ["chip-1", "chip-2", "chip-3"]

    catalog = data_dir.resolve() / "catalog.json"
    upstream = _dpt(env, "lineage", str(catalog), "--upstream", "--format", "json")
    found = {Path(n["uri"].removeprefix("file://")).name: n for n in upstream["nodes"]}
    assert set(found) == {"catalog.json", "chip-1.csv", "chip-2.csv", "chip-3.csv", "frames.csv"}
    assert found["frames.csv"]["depth"] == 2
    assert (found["catalog.json"]["job"], found["catalog.json"]["task"]) == ("summarise", "catalog")
    assert len(upstream["edges"]) == 6  # 3 chips -> catalog, frames -> each chip

    frames = data_dir.resolve() / "frames.csv"
    downstream = _dpt(env, "lineage", str(frames), "--downstream", "--format", "json")
    assert {Path(n["uri"]).name for n in downstream["nodes"]} == {
        "frames.csv",
        "chip-1.csv",
        "chip-2.csv",
        "chip-3.csv",
        "catalog.json",
    }
