"""Issue 15 under a real Airflow: each try's own context, no try left running, secrets and
error names in commands and errors, assets on other hosts, one active translator.

Each test runs DAGs of tests/airflow/dags/adapter_dags.py with ``dag.test()`` and
asserts the rows dpt recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SELECT_RUNS = """
    SELECT id, uuid, job, task, status, error, command, parameters, variables,
           environment_id, parent_id
    FROM invocations ORDER BY id
"""


def runs(dpt_env: Any) -> list[Any]:
    return dpt_env.rows(SELECT_RUNS)


def as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)


def task_runs(dpt_env: Any) -> list[Any]:
    return [r for r in runs(dpt_env) if r.task is not None]


def products_of(dpt_env: Any, task: str, table: str) -> dict[str, Any]:
    """URI -> version metadata of what ``task`` read (``inputs``) or wrote (``outputs``)."""
    if table == "inputs":
        sql = """
            SELECT p.uri, v.metadata FROM invocation_inputs ii
            JOIN invocations i ON i.id = ii.invocation_id
            JOIN data_product_versions v ON v.id = ii.version_id
            JOIN data_products p ON p.id = v.product_id WHERE i.task = :task
        """
    else:
        sql = """
            SELECT p.uri, v.metadata FROM data_product_versions v
            JOIN invocations i ON i.id = v.produced_by_id
            JOIN data_products p ON p.id = v.product_id WHERE i.task = :task
        """
    return {r.uri: as_dict(r.metadata) for r in dpt_env.rows(sql, task=task)}


# -- item 3: each try records its own context ---------------------------------------------------


def test_each_try_records_its_own_airflow_context(
    dpt_env: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a process that ran other tasks before holds: a name this try does not set,
    # and the parsing context of another task.
    monkeypatch.setenv("AIRFLOW_CTX_LEFT_OVER", "from-an-earlier-task")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "some_other_dag")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "some_other_task")
    result = run_dag("dpt_chain")
    assert result.state == "success"
    assert run_dag("dpt_retry").task_states[("flaky", -1)] == "success"

    tries = task_runs(dpt_env)
    by_run = {r.job: r for r in runs(dpt_env) if r.task is None}
    assert sorted((r.job, r.task) for r in tries) == [
        ("dpt_chain", "first"),
        ("dpt_chain", "second"),
        ("dpt_chain", "third"),
        ("dpt_chain", "third"),
        ("dpt_retry", "flaky"),
        ("dpt_retry", "flaky"),
    ]
    for row in tries:
        variables = as_dict(row.variables)
        parameters = as_dict(row.parameters)
        context = {k: v for k, v in variables.items() if k.startswith("AIRFLOW_CTX_")}
        assert context["AIRFLOW_CTX_DAG_ID"] == row.job, row.task
        assert context["AIRFLOW_CTX_TASK_ID"] == row.task
        assert context["AIRFLOW_CTX_TRY_NUMBER"] == str(parameters["try_number"])
        assert context["AIRFLOW_CTX_DAG_RUN_ID"] == parameters["run_id"]
        assert context["AIRFLOW_CTX_LOGICAL_DATE"] == parameters["logical_date"]
        assert context["AIRFLOW_CTX_DAG_OWNER"] == "airflow"
        assert "AIRFLOW_CTX_LEFT_OVER" not in variables
        assert "_AIRFLOW_PARSING_CONTEXT_DAG_ID" not in variables
        assert "_AIRFLOW_PARSING_CONTEXT_TASK_ID" not in variables
        assert row.parent_id == by_run[row.job].id
    assert sorted(
        as_dict(r.variables)["AIRFLOW_CTX_TRY_NUMBER"] for r in tries if r.task == "flaky"
    ) == ["1", "2"]
    # Per-try values stay out of the environment: one process, one environment row.
    assert {r.environment_id for r in tries} != {None}
    assert len({r.environment_id for r in tries}) == 1
    assert dpt_env.scalar("SELECT count(*) FROM environments") == 1
    keys = {r.key for r in dpt_env.rows("SELECT key FROM env_variables")}
    assert not {k for k in keys if k.startswith(("AIRFLOW_CTX_", "_AIRFLOW_PARSING_CONTEXT_"))}


def test_own_parsing_context_is_kept(
    dpt_env: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is told which DAG and task to parse: those values are the try's own."""
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "dpt_skip")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "nothing_to_do")
    run_dag("dpt_skip")
    [row] = task_runs(dpt_env)
    variables = as_dict(row.variables)
    assert variables["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] == "dpt_skip"
    assert variables["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] == "nothing_to_do"


# -- item 2: a record that cannot be made costs only itself; nothing stays running -------------


class _SwallowsEndEvents:
    """A third-party listener that fails before dpt's runs (pluggy calls the last registered
    first, and stops at the first error): dpt never hears that the try ended."""

    from airflow.listeners import hookimpl

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        raise RuntimeError("another listener failed")

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        raise RuntimeError("another listener failed")


@pytest.fixture
def end_events_lost() -> Iterator[None]:
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    thief = _SwallowsEndEvents()
    manager.add_listener(thief)
    yield
    manager.pm.unregister(thief)


def test_try_whose_end_event_never_came_is_closed_with_the_dag_run(
    dpt_env: Any, run_dag: Any, end_events_lost: None
) -> None:
    success = run_dag("dpt_success")
    failure = run_dag("dpt_failure")
    assert success.state == "success" and failure.state == "failed"

    statuses = {(r.job, r.task): r.status for r in runs(dpt_env)}
    assert statuses == {
        ("dpt_success", None): "success",
        ("dpt_success", "extract"): "success",  # as Airflow says the try ended
        ("dpt_success", "summarise"): "success",
        ("dpt_failure", None): "failed",
        ("dpt_failure", "explode"): "failed",
    }
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE ended_at IS NULL") == 0


def test_tries_opened_elsewhere_whose_end_never_came_are_closed_with_the_dag_run(
    dpt_env: Any, run_dag: Any, end_events_lost: None
) -> None:
    """The scheduler ends the dag run; the tries were opened by workers (other processes)
    and their ends were lost: each is closed as Airflow says it ended."""
    assert run_dag("dpt_opened_elsewhere").state == "failed"
    statuses = {(r.job, r.task): r.status for r in runs(dpt_env)}
    assert statuses == {
        ("dpt_opened_elsewhere", None): "failed",
        ("dpt_opened_elsewhere", "work"): "success",
        ("dpt_opened_elsewhere", "fail"): "failed",
    }


def test_a_sweep_never_overwrites_what_a_worker_recorded(dpt_env: Any, run_dag: Any) -> None:
    """Ends heard (no listener swallows them): the dag-run sweep finds every try closed,
    and the status and error each try recorded stay as they were."""
    assert run_dag("dpt_opened_elsewhere").state == "failed"
    rows = {r.task: r for r in runs(dpt_env) if r.task}
    assert rows["fail"].status == "failed"
    assert rows["fail"].error == "ValueError: failed in a worker"
    assert rows["work"].status == "success" and rows["work"].error is None


def test_translator_failures_cost_only_their_own_field(
    dpt_env: Any, run_dag: Any, airflow_config: Any, data_dir: Path
) -> None:
    airflow_config("translator", "adapter_translators.BrokenEverywhereTranslator")
    assert run_dag("dpt_success").state == "success"
    assert run_dag("dpt_failure").state == "failed"

    rows = {(r.job, r.task): r for r in runs(dpt_env)}
    assert {k: r.status for k, r in rows.items()} == {
        ("dpt_success", None): "success",
        ("dpt_success", "extract"): "success",
        ("dpt_success", "summarise"): "success",
        ("dpt_failure", None): "failed",
        ("dpt_failure", "explode"): "failed",
    }
    extract = rows[("dpt_success", "extract")]
    assert as_dict(extract.parameters)["try_number"] == 1  # the default parameters
    assert as_dict(extract.variables)["AIRFLOW_CTX_TASK_ID"] == "extract"
    assert rows[("dpt_failure", "explode")].error == "ValueError: boom"  # the default text
    # the inlet and the outlet are recorded
    assert set(products_of(dpt_env, "extract", "inputs")) == {(data_dir / "raw.csv").as_uri()}
    assert set(products_of(dpt_env, "extract", "outputs")) == {(data_dir / "clean.csv").as_uri()}


def test_an_inlet_that_names_no_product_costs_only_itself(
    dpt_env: Any,
    run_dag: Any,
    test_dags: dict[str, Any],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = test_dags["dpt_consumer"].get_task("consume")
    monkeypatch.setattr(task, "inlets", [object(), *task.inlets])
    assert run_dag("dpt_producer").state == "success"
    assert run_dag("dpt_consumer").state == "success"
    assert set(products_of(dpt_env, "consume", "inputs")) == {(data_dir / "shared.csv").as_uri()}
    assert set(products_of(dpt_env, "consume", "outputs")) == {(data_dir / "derived.csv").as_uri()}


def test_assets_on_other_hosts_are_recorded_as_declared(dpt_env: Any, run_dag: Any) -> None:
    assert run_dag("dpt_host_assets").state == "success"
    inputs = products_of(dpt_env, "combine", "inputs")
    outputs = products_of(dpt_env, "combine", "outputs")
    assert set(inputs) == {"file://incoming/dpt-tests/team_a.csv"}
    assert set(outputs) == {
        "file://curated/dpt-tests/combined.csv",
        "s3://dpt-tests/combined.csv",
    }
    assert "incoming" in inputs["file://incoming/dpt-tests/team_a.csv"]["dpt/unhashed"]
    assert "curated" in outputs["file://curated/dpt-tests/combined.csv"]["dpt/unhashed"]
    [combine] = task_runs(dpt_env)
    assert combine.status == "success"


# -- item 5: commands and errors ---------------------------------------------------------------


def test_bash_command_is_recorded_rendered_with_its_secrets_redacted(
    dpt_env: Any, run_dag: Any
) -> None:
    assert run_dag("dpt_bash").state == "success"
    [row] = task_runs(dpt_env)
    assert row.status == "success"
    command = row.command
    assert command is not None
    assert command.startswith("echo level=3 --token ")  # rendered, flags kept readable
    assert "--api-key=" in command and "PGPASSWORD=" in command and "Authorization:" in command
    for secret in ("hunter3", "hunter4", "hunter5", "hunter6abcdef"):
        assert secret not in command, f"{secret} stored in clear: {command}"


def test_secrets_airflow_masks_are_masked_in_commands_and_errors(
    dpt_env: Any, run_dag: Any
) -> None:
    from airflow.models import Variable

    secret = "vAr1able-s3cret-7781"
    Variable.set("dpt_api_secret", secret)
    try:
        result = run_dag("dpt_airflow_secret")
    finally:
        Variable.delete("dpt_api_secret")
    assert result.task_states == {("sync", -1): "success", ("log_in", -1): "failed"}

    rows = {r.task: r for r in task_runs(dpt_env)}
    assert rows["sync"].command.startswith("echo sync ")
    assert rows["log_in"].error.startswith("RuntimeError: could not log in as ")
    stored = json.dumps([tuple(r) for r in runs(dpt_env)], default=str)
    assert secret not in stored


def test_airflow_error_names_stay_readable(dpt_env: Any, run_dag: Any) -> None:
    result = run_dag("dpt_inactive_asset")
    assert result.task_states[("write_twice", -1)] == "failed"
    [row] = task_runs(dpt_env)
    assert row.status == "failed"
    assert row.error.startswith(
        "AirflowInactiveAssetInInletOrOutletException: Task has the following inactive assets"
    ), row.error
    assert "s3://dpt-tests/same.txt" in row.error


# -- item 7: one active translator --------------------------------------------------------------


def test_in_task_track_resolves_assets_with_the_configured_translator(
    dpt_env: Any, run_dag: Any, airflow_config: Any
) -> None:
    airflow_config("translator", "adapter_translators.WarehouseTranslator")
    assert run_dag("dpt_track_asset").state == "success"
    [row] = task_runs(dpt_env)
    assert set(products_of(dpt_env, "publish", "outputs")) == {
        "s3://warehouse/nightly_catalogue",  # the task's outlet, by the listener
        "s3://warehouse/weekly_catalogue",  # dpt_core.track(Asset(...)) in the task's code
    }
    assert row.status == "success"


def test_assets_resolve_with_the_configured_translator_outside_tasks(
    dpt_env: Any, test_dags: Any
) -> None:
    """A script that imports Airflow but runs no task: the configured translator still names
    its assets (the listener's, not a second default one)."""
    code = (
        "import dpt_core\n"
        "from airflow.sdk import Asset\n"
        "print(dpt_core.get_tracker().resolve(Asset(name='nightly_catalogue')))\n"
    )
    dags_folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    env = {
        **os.environ,
        "AIRFLOW__DPT__TRANSLATOR": "adapter_translators.WarehouseTranslator",
        "PYTHONPATH": os.pathsep.join([dags_folder, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "s3://warehouse/nightly_catalogue"


def test_no_run_is_left_running(dpt_env: Any, run_dag: Any) -> None:
    for dag_id in ("dpt_success", "dpt_failure", "dpt_skip", "dpt_inactive_asset"):
        run_dag(dag_id)
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'running'") == 0


def test_an_error_without_a_message_is_its_type_alone() -> None:
    """``KeyboardInterrupt``, not ``KeyboardInterrupt: `` (a dangling colon)."""
    from dpt_airflow.translator import AirflowTranslator

    translator = AirflowTranslator()
    assert translator.get_error(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert translator.get_error(ValueError("bad gain")) == "ValueError: bad gain"
    assert translator.get_error("given as text") == "given as text"
