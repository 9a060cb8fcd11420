"""The Prefect example pipeline, run on a fresh data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dpt_core


def test_the_example_pipeline(prefect_example: Any, recorded: Any, tmp_path: Path) -> None:
    data = tmp_path / "demo"
    means = prefect_example.run(data, frames=2, gain=2.0, seed=7)
    assert sorted(means) == ["frame_0.csv", "frame_1.csv"]

    flow_row = recorded.one(task=None)
    assert flow_row["job"] == "nightly-reduction"
    assert flow_row["status"] == "success"
    assert flow_row["parameters"] == {"gain": 2.0, "seed": 7}

    simulate = recorded.invocations(task="simulate")
    calibrate = recorded.invocations(task="calibrate")
    summarize = recorded.one(task="summarize")
    assert len(simulate) == 2 and len(calibrate) == 2
    assert sorted(r["parameters"]["index"] for r in simulate) == [0, 1]
    for row in [*simulate, *calibrate, summarize]:
        assert row["parent_id"] == flow_row["id"]
        assert row["status"] == "success"

    raws = [data / "raw" / f"frame_{i}.csv" for i in (0, 1)]
    cals = [data / "calibrated" / f"frame_{i}.csv" for i in (0, 1)]
    summary = data / "summary.json"
    by_id = {r["id"]: r for r in [*simulate, *calibrate, summarize]}
    for path in [*raws, *cals, summary]:
        (version,) = recorded.versions(path.as_uri())
        assert version["content_hash"] == dpt_core.hash_file(path)
        assert version["produced_by_id"] in by_id
    edges = recorded.edges()
    for raw, cal in zip(raws, cals, strict=True):
        assert any(e[0] == raw.as_uri() and e[1] == cal.as_uri() for e in edges)
        assert (cal.as_uri(), summary.as_uri(), summarize["id"]) in edges
    assert len(edges) == 4
