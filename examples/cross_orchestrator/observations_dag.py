"""The Airflow half of examples/cross_orchestrator.py: select the good exposures of a night.

One task reads ``exposures.csv`` (the night's exposure log) and writes
``observations.csv`` (the exposures good enough to catalogue). Both files are
``file://`` Assets, an inlet and an outlet, so the dpt plugin records them with
their content hashes, and the lineage between them, without a line of dpt code.
Files live under ``$CROSS_ORCHESTRATOR_DIR`` (default ``/tmp/dpt-cross-orchestrator``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from airflow.sdk import Asset, dag, get_current_context, task

DATA = Path(os.environ.get("CROSS_ORCHESTRATOR_DIR", "/tmp/dpt-cross-orchestrator")).resolve()

EXPOSURES = Asset((DATA / "exposures.csv").as_uri())
OBSERVATIONS = Asset((DATA / "observations.csv").as_uri())


@dag(dag_id="dpt_cross_orchestrator", schedule=None, params={"max_seeing": 1.2})
def dpt_cross_orchestrator() -> None:
    @task(inlets=[EXPOSURES], outlets=[OBSERVATIONS])
    def select_observations() -> None:
        context = get_current_context()
        max_seeing = float(context["params"]["max_seeing"])
        with (DATA / "exposures.csv").open(newline="") as handle:
            exposures = list(csv.DictReader(handle))
        good = [row for row in exposures if float(row["seeing"]) <= max_seeing]
        with (DATA / "observations.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["exposure", "target", "counts"])
            writer.writeheader()
            for row in good:
                writer.writerow({k: row[k] for k in ("exposure", "target", "counts")})
        # The asset event's extra becomes the metadata of the recorded file version.
        context["outlet_events"][OBSERVATIONS].extra = {"kept": len(good), "of": len(exposures)}

    select_observations()


pipeline = dpt_cross_orchestrator()
