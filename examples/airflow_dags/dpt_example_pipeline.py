"""The DAG of examples/airflow_pipeline.py: ingest -> calibrate (one task per chip) -> summarise.

Every task declares the files it reads and writes as ``file://`` Assets; the dpt
plugin records them as inputs and outputs, with lineage. Files live under
``$AIRFLOW_DPT_EXAMPLE_DIR`` (default ``/tmp/dpt-airflow-example``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.sdk import Asset, dag, get_current_context, task

import dpt_core

DATA = Path(os.environ.get("AIRFLOW_DPT_EXAMPLE_DIR", "/tmp/dpt-airflow-example"))
CHIPS = (1, 2, 3)

FRAMES = Asset((DATA / "frames.csv").as_uri())
CALIBRATED = [Asset((DATA / f"calibrated_{chip}.csv").as_uri()) for chip in CHIPS]
SUMMARY = Asset((DATA / "summary.json").as_uri())


@dag(dag_id="dpt_example_pipeline", schedule=None, params={"gain": 1.5})
def dpt_example_pipeline() -> None:
    @task(outlets=[FRAMES])
    def ingest() -> None:
        DATA.mkdir(parents=True, exist_ok=True)
        rows = [f"{chip},{frame},{100 + 10 * chip + frame}" for chip in CHIPS for frame in range(4)]
        (DATA / "frames.csv").write_text("chip,frame,counts\n" + "\n".join(rows) + "\n")
        # Asset event extras become metadata of the recorded file version.
        get_current_context()["outlet_events"][FRAMES].extra = {"frames": len(rows)}

    def calibrate_task(chip: int, outlet: Asset) -> object:
        @task(task_id=f"calibrate_{chip}", inlets=[FRAMES], outlets=[outlet])
        def calibrate() -> None:
            gain = float(get_current_context()["params"]["gain"])
            lines = (DATA / "frames.csv").read_text().splitlines()[1:]
            out = [
                f"{frame},{int(counts) * gain:.1f}"
                for c, frame, counts in (line.split(",") for line in lines)
                if int(c) == chip
            ]
            (DATA / f"calibrated_{chip}.csv").write_text("frame,flux\n" + "\n".join(out) + "\n")

        return calibrate()

    @task(inlets=CALIBRATED, outlets=[SUMMARY])
    def summarise() -> None:
        totals = {}
        for chip in CHIPS:
            lines = (DATA / f"calibrated_{chip}.csv").read_text().splitlines()[1:]
            totals[str(chip)] = sum(float(line.split(",")[1]) for line in lines)
        (DATA / "summary.json").write_text(json.dumps(totals, indent=2) + "\n")
        # Files a task writes without declaring them can be recorded from the task code:
        # dpt_core.track() joins this task's invocation (and derives from its inlets).
        (DATA / "summary.log").write_text(f"summarised {len(totals)} chips\n")
        dpt_core.track(DATA / "summary.log")

    calibrated = [
        calibrate_task(chip, outlet) for chip, outlet in zip(CHIPS, CALIBRATED, strict=True)
    ]
    ingest() >> calibrated >> summarise()


pipeline = dpt_example_pipeline()
