"""The DAG the real-deployment run triggers (tests/airflow/deployment/airflow_deployment.py).

Eight task tries, each in a task process of its own (LocalExecutor or Celery workers): an
extract that writes a file asset, a transform mapped over three chips, a flaky task
whose first try fails (its retry is a second try), a BashOperator with a token on
its command line, and a deferrable sensor whose one try leaves its first task process
for the triggerer and ends in another task process. The Python tasks note how dpt writes
in their process (``write-modes/``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import Asset, dag, get_current_context, task

DATA = Path(os.environ.get("DPT_DEPLOYMENT_DATA", "/tmp/dpt-airflow-deployment"))
FRAMES = Asset((DATA / "frames.csv").as_uri())
SUMMARY = Asset((DATA / "summary.csv").as_uri())


def _note_write_mode(name: str) -> None:
    """Leave how dpt writes in this task process for the deployment's report: a task
    process ends with os._exit, so it must not leave its events to a writer thread."""
    from dpt_core.store import plugin

    store = plugin._store  # (the listener's, made at the try's start; None if disabled)
    modes = DATA / "write-modes"
    modes.mkdir(parents=True, exist_ok=True)
    (modes / name).write_text("none" if store is None else store.mode)


@dag(dag_id="dpt_deployment", schedule=None, params={"chips": 3})
def dpt_deployment() -> None:
    @task(outlets=[FRAMES])
    def extract() -> list[int]:
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / "frames.csv").write_text("chip,frames\n1,4\n2,4\n3,4\n")
        _note_write_mode("extract")
        return [1, 2, 3]

    @task(inlets=[FRAMES])
    def calibrate(chip: int) -> int:
        (DATA / f"calibrated_{chip}.csv").write_text(f"chip,{chip}\n")
        _note_write_mode(f"calibrate_{chip}")
        return chip

    @task(outlets=[SUMMARY], retries=1, retry_delay=dt.timedelta(0))
    def summarise(chips: list[int]) -> None:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the first try fails on purpose")
        (DATA / "summary.csv").write_text(f"chips,{len(list(chips))}\n")

    report = BashOperator(
        task_id="report",
        bash_command="echo chips={{ params.chips }} --token hunter3 > /dev/null",
    )

    #: Deferred until this long after the run was triggered (the triggerer holds it).
    wait = TimeDeltaSensor(
        task_id="wait",
        delta=dt.timedelta(seconds=float(os.environ.get("DPT_DEPLOYMENT_DEFER_S", "30"))),
        deferrable=True,
    )

    summarise(calibrate.expand(chip=extract())) >> report
    wait >> report


dpt_deployment()
