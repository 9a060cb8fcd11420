"""DAGs the Airflow adapter tests run with ``dag.test()``.

Data files live under ``$DPT_TEST_AIRFLOW_DATA`` (set by tests/airflow/conftest.py
before Airflow parses this file).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

import dpt_core

DATA = Path(os.environ.get("DPT_TEST_AIRFLOW_DATA", "/tmp/dpt-airflow-test-data"))


def asset(name: str) -> Asset:
    return Asset((DATA / name).as_uri())


RAW = asset("raw.csv")
CLEAN = asset("clean.csv")
SUMMARY = asset("summary.csv")
SHARED = asset("shared.csv")
DERIVED = asset("derived.csv")
NEVER = asset("never.csv")
NOTES = asset("notes.txt")


@dag(dag_id="dpt_success", schedule=None, params={"gain": 1.5})
def success_dag() -> None:
    @task(inlets=[RAW], outlets=[CLEAN])
    def extract() -> None:
        rows = (DATA / "raw.csv").read_text().splitlines()
        (DATA / "clean.csv").write_text("\n".join(r.strip() for r in rows) + "\n")
        get_current_context()["outlet_events"][CLEAN].extra = {"rows": len(rows)}

    @task(inlets=[CLEAN], outlets=[SUMMARY])
    def summarise() -> None:
        count = len((DATA / "clean.csv").read_text().splitlines())
        (DATA / "summary.csv").write_text(f"rows,{count}\n")

    extract() >> summarise()


@dag(dag_id="dpt_failure", schedule=None)
def failure_dag() -> None:
    @task(outlets=[NEVER])
    def explode() -> None:
        raise ValueError("boom")

    explode()


@dag(dag_id="dpt_mapped", schedule=None)
def mapped_dag() -> None:
    @task
    def square(x: int) -> int:
        (DATA / f"square_{x}.txt").write_text(str(x * x))
        dpt_core.track(DATA / f"square_{x}.txt")
        return x * x

    square.expand(x=[1, 2, 3])


@dag(dag_id="dpt_retry", schedule=None)
def retry_dag() -> None:
    @task(retries=1, retry_delay=dt.timedelta(0), outlets=[NOTES])
    def flaky() -> None:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("first try fails")
        (DATA / "notes.txt").write_text("second try\n")

    flaky()


@dag(dag_id="dpt_producer", schedule=None)
def producer_dag() -> None:
    @task(outlets=[SHARED])
    def produce() -> None:
        (DATA / "shared.csv").write_text("a,b\n1,2\n")

    produce()


@dag(dag_id="dpt_consumer", schedule=None)
def consumer_dag() -> None:
    @task(inlets=[SHARED], outlets=[DERIVED])
    def consume() -> None:
        text = (DATA / "shared.csv").read_text()
        (DATA / "derived.csv").write_text(text.upper())

    consume()


@dag(dag_id="dpt_in_task", schedule=None)
def in_task_dag() -> None:
    @task(inlets=[RAW])
    def work() -> None:
        (DATA / "side.txt").write_text("side output\n")
        dpt_core.track(DATA / "side.txt")
        (DATA / "calib.txt").write_text("calibration\n")
        (DATA / "calibrated.txt").write_text("calibrated\n")
        with dpt_core.invocation() as joined:
            joined.write(DATA / "calibrated.txt", parents=[DATA / "calib.txt"])
        (DATA / "sub.txt").write_text("sub\n")
        with dpt_core.invocation("sub-step") as sub:
            sub.write(DATA / "sub.txt")

    work()


@dag(dag_id="dpt_outlet_parent", schedule=None)
def outlet_parent_dag() -> None:
    @task(outlets=[SUMMARY])
    def report() -> None:
        (DATA / "summary.csv").write_text("rows,3\n")
        (DATA / "report.log").write_text("reported\n")
        dpt_core.track(DATA / "report.log", parents=[DATA / "summary.csv"])

    report()


@dag(dag_id="dpt_switched_off", schedule=None)
def switched_off_dag() -> None:
    @task(outlets=[NOTES])
    def switch_off() -> None:
        (DATA / "notes.txt").write_text("written while dpt was still on\n")
        os.environ["AIRFLOW__DPT__ENABLED"] = "False"  # dpt turned off mid-run

    switch_off()


@dag(dag_id="dpt_skip", schedule=None)
def skip_dag() -> None:
    @task
    def nothing_to_do() -> None:
        raise AirflowSkipException("no new data")

    nothing_to_do()


@dag(dag_id="dpt_bash", schedule=None, params={"level": 3})
def bash_dag() -> None:
    """A BashOperator whose command carries secrets in every shape a command line can."""
    BashOperator(
        task_id="call_service",
        bash_command=(
            "echo level={{ params.level }} --token hunter3 --api-key=hunter4 PGPASSWORD=hunter5"
            ' "Authorization: Bearer hunter6abcdef" > /dev/null'
        ),
    )


@dag(dag_id="dpt_inactive_asset", schedule=None)
def inactive_asset_dag() -> None:
    """Two assets with one URI: Airflow activates one, and fails the try for the other."""

    @task(
        outlets=[
            Asset(name="dpt_first_name", uri="s3://dpt-tests/same.txt"),
            Asset(name="dpt_second_name", uri="s3://dpt-tests/same.txt"),
        ]
    )
    def write_twice() -> None:
        pass

    write_twice()


@dag(dag_id="dpt_host_assets", schedule=None)
def host_assets_dag() -> None:
    """Asset URIs in the shape of Airflow's own examples: files on other hosts, a bucket
    (not the examples' own URIs: two names for one URI would make Airflow fail the try)."""

    @task(
        inlets=[Asset("file://incoming/dpt-tests/team_a.csv")],
        outlets=[
            Asset("file://curated/dpt-tests/combined.csv"),
            Asset("s3://dpt-tests/combined.csv"),
        ],
    )
    def combine() -> None:
        pass

    combine()


@dag(dag_id="dpt_chain", schedule=None)
def chain_dag() -> None:
    """Three tasks in a row and a mapped one: a process that runs many tries in turn."""

    @task
    def first() -> int:
        return 1

    @task
    def second(value: int) -> list[int]:
        return [value, value + 1]

    @task
    def third(value: int) -> int:
        return value * 2

    third.expand(value=second(first()))


@dag(dag_id="dpt_track_asset", schedule=None)
def track_asset_dag() -> None:
    """An outlet and an in-task ``dpt_core.track()``, both name-only assets."""

    @task(outlets=[Asset(name="nightly_catalogue")])
    def publish() -> None:
        dpt_core.track(Asset(name="weekly_catalogue"))

    publish()


@dag(dag_id="dpt_airflow_secret", schedule=None)
def airflow_secret_dag() -> None:
    """A secret only Airflow knows (a Variable with a sensitive name, in its database)
    reaches a command line and an error message, in places no name or shape gives away."""
    BashOperator(
        task_id="sync",
        bash_command="echo sync {{ var.value.dpt_api_secret }} > /dev/null",
    )

    @task
    def log_in() -> None:
        from airflow.sdk import Variable

        raise RuntimeError(f"could not log in as {Variable.get('dpt_api_secret')}")

    log_in()


@dag(dag_id="dpt_opened_elsewhere", schedule=None)
def opened_elsewhere_dag() -> None:
    """Its tries look, to the process that ends the dag run, as if another process (a
    worker) had opened them: each empties the listener's own registry of open tries."""

    @task
    def work() -> None:
        from dpt_airflow.listener import dpt_listener

        dpt_listener.running.clear()

    @task
    def fail() -> None:
        from dpt_airflow.listener import dpt_listener

        dpt_listener.running.clear()
        raise ValueError("failed in a worker")

    work()
    fail()


DAGS = {
    d.dag_id: d
    for d in (
        success_dag(),
        failure_dag(),
        mapped_dag(),
        retry_dag(),
        producer_dag(),
        consumer_dag(),
        in_task_dag(),
        outlet_parent_dag(),
        switched_off_dag(),
        skip_dag(),
        bash_dag(),
        inactive_asset_dag(),
        host_assets_dag(),
        chain_dag(),
        track_asset_dag(),
        airflow_secret_dag(),
        opened_elsewhere_dag(),
    )
}
