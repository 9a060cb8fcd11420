"""examples/airflow_pipeline.py, run on a fresh data directory, records what its comment promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import dpt_core

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "airflow_pipeline.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("dpt_airflow_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_pipeline_records_runs_versions_and_lineage(
    dpt_env: Any, example_data_dir: Path
) -> None:
    data = example_data_dir
    assert not data.exists() or not any(data.iterdir())

    dag_run = load_example().run(data)
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    assert json.loads((data / "summary.json").read_text()).keys() == {"1", "2", "3"}

    rows = dpt_env.rows(
        "SELECT id, job, task, status, parent_id FROM invocations WHERE orchestrator = 'airflow'"
    )
    [run] = [r for r in rows if r.task is None]
    assert (run.job, run.status) == ("dpt_example_pipeline", "success")
    assert sorted(r.task for r in rows if r.task) == [
        "calibrate_1",
        "calibrate_2",
        "calibrate_3",
        "ingest",
        "summarise",
    ]
    assert {(r.status, r.parent_id) for r in rows if r.task} == {("success", run.id)}

    frames = dpt_env.rows(
        """
        SELECT v.metadata, i.task FROM data_product_versions v
        JOIN data_products p ON p.id = v.product_id
        JOIN invocations i ON i.id = v.produced_by_id
        WHERE p.uri = :uri
        """,
        uri=(data / "frames.csv").resolve().as_uri(),
    )
    [(meta, task)] = frames
    assert task == "ingest"
    assert (json.loads(meta) if isinstance(meta, str) else meta) == {"frames": 12}

    upstream = dpt_core.lineage(data / "summary.json", direction="upstream")
    depths = {Path(n.uri).name: n.depth for n in upstream.nodes}
    assert depths["frames.csv"] == 2
    assert {depths[f"calibrated_{chip}.csv"] for chip in (1, 2, 3)} == {1}

    log_upstream = dpt_core.lineage(data / "summary.log", direction="upstream", depth=1)
    assert {Path(n.uri).name for n in log_upstream.nodes if n.depth == 1} == {
        f"calibrated_{chip}.csv" for chip in (1, 2, 3)
    }
    # one version per file: nothing was recorded twice
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 6
