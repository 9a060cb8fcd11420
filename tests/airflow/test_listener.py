"""The dpt listener under a real Airflow: DAGs run with ``dag.test()``, recorded rows asserted.

``dag.test()`` returns normally even when a task fails, so every test checks the
statuses Airflow and dpt recorded rather than an exception.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import dpt_core

SELECT_INVOCATIONS = """
    SELECT id, uuid, orchestrator, job, task, external_id, parent_id, status, error,
           parameters, environment_id, host, started_at, ended_at
    FROM invocations ORDER BY id
"""


def invocations(dpt_env: Any) -> list[Any]:
    return dpt_env.rows(SELECT_INVOCATIONS)


def params(row: Any) -> dict[str, Any]:
    value = row.parameters
    return json.loads(value) if isinstance(value, str) else dict(value)


def tasks(rows: list[Any], task: str | None = None) -> list[Any]:
    return [r for r in rows if r.task is not None and (task is None or r.task == task)]


def dag_runs(rows: list[Any]) -> list[Any]:
    return [r for r in rows if r.orchestrator == "airflow" and r.task is None]


def versions(dpt_env: Any) -> dict[str, list[Any]]:
    """Versions by file name, each with the job/task that produced it and its metadata."""
    rows = dpt_env.rows(
        """
        SELECT p.uri, v.id, v.content_hash, v.metadata, i.job, i.task, i.uuid AS producer
        FROM data_product_versions v
        JOIN data_products p ON p.id = v.product_id
        LEFT JOIN invocations i ON i.id = v.produced_by_id
        ORDER BY v.id
        """
    )
    by_name: dict[str, list[Any]] = {}
    for row in rows:
        by_name.setdefault(Path(row.uri).name, []).append(row)
    return by_name


def edges(dpt_env: Any) -> set[tuple[str, str, str, str]]:
    """Lineage edges as (parent file, child file, job, task) of the invocation that made them."""
    rows = dpt_env.rows(
        """
        SELECT pp.uri AS parent, cp.uri AS child, i.job, i.task
        FROM lineage_edges e
        JOIN data_product_versions pv ON pv.id = e.parent_version_id
        JOIN data_products pp ON pp.id = pv.product_id
        JOIN data_product_versions cv ON cv.id = e.child_version_id
        JOIN data_products cp ON cp.id = cv.product_id
        JOIN invocations i ON i.id = e.invocation_id
        """
    )
    return {(Path(r.parent).name, Path(r.child).name, r.job, r.task) for r in rows}


def metadata(row: Any) -> Any:
    return json.loads(row.metadata) if isinstance(row.metadata, str) else row.metadata


# -- success, parents, parameters, assets, lineage ----------------------------------------------


def test_successful_run_records_dag_run_task_tries_and_lineage(
    dpt_env: Any, run_dag: Any, data_dir: Path
) -> None:
    result = run_dag("dpt_success")
    assert result.state == "success"

    rows = invocations(dpt_env)
    [dag_run] = dag_runs(rows)
    assert (dag_run.orchestrator, dag_run.job, dag_run.status) == (
        "airflow",
        "dpt_success",
        "success",
    )
    assert dag_run.parent_id is None
    assert dag_run.external_id == result.run_id
    assert dag_run.uuid == dpt_core.invocation_uuid(
        "airflow", "dag_run", "dpt_success", result.run_id
    )
    assert params(dag_run)["run_id"] == result.run_id
    assert params(dag_run)["run_type"] == "manual"
    assert dag_run.environment_id is None  # recorded on behalf of the run, not of one process
    assert dag_run.ended_at is not None

    assert [r.task for r in tasks(rows)] == ["extract", "summarise"]
    for row in tasks(rows):
        assert (row.orchestrator, row.job, row.status, row.error) == (
            "airflow",
            "dpt_success",
            "success",
            None,
        )
        assert row.parent_id == dag_run.id
        assert row.uuid == dpt_core.invocation_uuid(
            "airflow", "task", "dpt_success", result.run_id, row.task, -1, 1
        )
        assert row.environment_id is not None and row.host  # the worker's environment
        assert row.external_id  # Airflow's task-instance id
        assert row.ended_at is not None
        p = params(row)
        assert p["run_id"] == result.run_id
        assert (p["map_index"], p["try_number"]) == (-1, 1)
        assert p["params"] == {"gain": 1.5}
        assert p["logical_date"]

    found = versions(dpt_env)
    [clean] = found["clean.csv"]
    assert (clean.job, clean.task) == ("dpt_success", "extract")
    assert metadata(clean) == {"rows": 3}  # the asset event's extra
    assert clean.content_hash == dpt_core.hash_file(data_dir / "clean.csv")
    [summary] = found["summary.csv"]
    assert (summary.job, summary.task) == ("dpt_success", "summarise")
    assert [v.producer for v in found["raw.csv"]] == [None]  # an input nobody here produced
    assert edges(dpt_env) == {
        ("raw.csv", "clean.csv", "dpt_success", "extract"),
        ("clean.csv", "summary.csv", "dpt_success", "summarise"),
    }
    # summarise read the exact version extract wrote
    read = dpt_env.rows(
        """
        SELECT ii.version_id FROM invocation_inputs ii
        JOIN invocations i ON i.id = ii.invocation_id WHERE i.task = 'summarise'
        """
    )
    assert [r.version_id for r in read] == [clean.id]


def run_with_plugin(run_dag: Any, dag_id: str, plugin: Any) -> Any:
    """Run ``dag_id`` with ``plugin`` registered with dpt for that run only."""
    pm = dpt_core.get_tracker().pm
    pm.register(plugin, name=type(plugin).__name__)
    try:
        return run_dag(dag_id)
    finally:
        pm.unregister(plugin)


class StartCounter:
    """A dpt plugin counting the start events each invocation got."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}

    @dpt_core.hookimpl
    def dpt_invocation_started(self, event: Any) -> None:
        self.starts[event.uuid] = self.starts.get(event.uuid, 0) + 1


def test_a_dag_runs_start_is_recorded_once_a_process_not_at_every_task(
    dpt_env: Any, run_dag: Any
) -> None:
    """Every task of a run names its dag run as parent; under dag.test() (one process)
    the dag run's start is one event, and each task try's too."""
    counter = StartCounter()
    result = run_with_plugin(run_dag, "dpt_success", counter)
    assert result.state == "success"
    rows = invocations(dpt_env)
    [dag_run] = dag_runs(rows)
    assert [r.task for r in tasks(rows)] == ["extract", "summarise"]
    assert all(r.parent_id == dag_run.id for r in tasks(rows))
    assert counter.starts == {row.uuid: 1 for row in rows}


class EventLog:
    """A dpt plugin writing down the events it gets, and where batches start and end."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    @dpt_core.hookimpl
    def dpt_batch_started(self) -> None:
        self.log.append(("batch", "["))

    @dpt_core.hookimpl
    def dpt_batch_finished(self) -> None:
        self.log.append(("batch", "]"))

    @dpt_core.hookimpl
    def dpt_invocation_started(self, event: Any) -> None:
        self.log.append(("start", event.task or event.job))

    @dpt_core.hookimpl
    def dpt_products_read(self, event: Any) -> None:
        self.log.append(("read", event.invocation_uuid))

    @dpt_core.hookimpl
    def dpt_products_written(self, event: Any) -> None:
        self.log.append(("write", event.invocation_uuid))

    @dpt_core.hookimpl
    def dpt_invocation_finished(self, event: Any) -> None:
        self.log.append(("finish", event.uuid))

    def batches(self) -> list[list[str]]:
        """The events of each batch, by kind; an event outside every batch is its own."""
        out: list[list[str]] = []
        current: list[str] | None = None
        for kind, what in self.log:
            if kind == "batch":
                if what == "[":
                    current = []
                else:
                    out.append(current or [])
                    current = None
            elif current is not None:
                current.append(kind)
            else:
                out.append([kind])
        return out


def test_a_tries_start_and_inputs_are_one_batch_its_outputs_and_end_another(
    dpt_env: Any, run_dag: Any
) -> None:
    """The store writes a batch in one transaction and spools it as one line (see
    tests/core/test_writer.py's refused batch): a try costs two of each, not one an event."""
    log = EventLog()
    result = run_with_plugin(run_dag, "dpt_success", log)
    assert result.state == "success"
    # extract: the dag run's start (the first time), its own and its input; then its
    # output and its end; summarise the same without the dag run's; then the dag run's
    # own end: the sweep closing tries not closed yet has nothing to say of tries whose
    # end this process recorded (it said "finish if still running" of each)
    assert log.batches() == [
        ["start", "start", "read"],
        ["write", "finish"],
        ["start", "read"],
        ["write", "finish"],
        ["finish"],
    ]
    assert len(tasks(invocations(dpt_env))) == 2


def test_dag_test_keeps_the_background_writer_a_task_process_writes_as_it_goes(
    dpt_env: Any, run_dag: Any
) -> None:
    """dag.test() runs every try in this process, which lives on and flushes at exit: its
    writer stays in the background. Only a real task process (its own, ended with
    os._exit; see tests/airflow/deployment) is declared to dpt as ending without exit
    handlers."""
    from dpt_airflow import compat
    from dpt_core.store.plugin import current_store

    assert current_store().mode == "background"
    result = run_dag("dpt_success")
    assert result.state == "success"
    assert [r.status for r in tasks(invocations(dpt_env))] == ["success", "success"]
    assert not compat.in_task_process()
    assert current_store().mode == "background"


def test_failed_task_records_the_error_and_no_outputs(dpt_env: Any, run_dag: Any) -> None:
    result = run_dag("dpt_failure")
    assert result.task_states[("explode", -1)] == "failed"
    assert result.state == "failed"

    rows = invocations(dpt_env)
    [task] = tasks(rows, "explode")
    assert task.status == "failed"
    assert task.error == "ValueError: boom"
    [dag_run] = dag_runs(rows)
    assert dag_run.status == "failed"
    assert dag_run.error  # Airflow's message for the failed run
    assert task.parent_id == dag_run.id
    assert "never.csv" not in versions(dpt_env)  # a failed try's outlets are not products


def test_each_mapped_index_is_its_own_invocation(dpt_env: Any, run_dag: Any) -> None:
    result = run_dag("dpt_mapped")
    assert result.state == "success"

    rows = invocations(dpt_env)
    [dag_run] = dag_runs(rows)
    squares = tasks(rows, "square")
    assert sorted(params(r)["map_index"] for r in squares) == [0, 1, 2]
    assert len({r.uuid for r in squares}) == 3
    assert {(r.status, r.parent_id) for r in squares} == {("success", dag_run.id)}
    # each index's in-task track() joined its own invocation
    found = versions(dpt_env)
    by_index = {params(r)["map_index"]: r.uuid for r in squares}
    for index in range(3):
        [version] = found[f"square_{index + 1}.txt"]
        assert version.producer == by_index[index]


def test_each_retry_is_its_own_invocation(dpt_env: Any, run_dag: Any) -> None:
    result = run_dag("dpt_retry")
    assert result.task_states[("flaky", -1)] == "success"

    rows = invocations(dpt_env)
    tries = tasks(rows, "flaky")
    assert [(params(r)["try_number"], r.status, r.error) for r in tries] == [
        (1, "failed", "RuntimeError: first try fails"),
        (2, "success", None),
    ]
    [dag_run] = dag_runs(rows)
    assert dag_run.status == "success"
    assert {r.parent_id for r in tries} == {dag_run.id}
    [notes] = versions(dpt_env)["notes.txt"]
    assert notes.producer == tries[1].uuid


def test_asset_lineage_crosses_dags(dpt_env: Any, run_dag: Any, data_dir: Path) -> None:
    assert run_dag("dpt_producer").state == "success"
    assert run_dag("dpt_consumer").state == "success"

    found = versions(dpt_env)
    [shared] = found["shared.csv"]  # the consumer read the version the producer wrote
    assert (shared.job, shared.task) == ("dpt_producer", "produce")
    [derived] = found["derived.csv"]
    assert (derived.job, derived.task) == ("dpt_consumer", "consume")
    assert edges(dpt_env) == {("shared.csv", "derived.csv", "dpt_consumer", "consume")}
    graph = dpt_core.lineage(data_dir / "derived.csv", direction="upstream")
    assert any(node.uri.endswith("/shared.csv") for node in graph.nodes)
    assert len(dag_runs(invocations(dpt_env))) == 2


def test_in_task_calls_join_the_task_invocation(dpt_env: Any, run_dag: Any) -> None:
    assert run_dag("dpt_in_task").state == "success"

    rows = invocations(dpt_env)
    [dag_run] = dag_runs(rows)
    [work] = tasks(rows, "work")
    [sub_step] = [r for r in rows if r.job == "sub-step"]
    assert len(rows) == 3  # track() and invocation() without a job opened nothing new
    assert sub_step.parent_id == work.id  # a named invocation nests under the task
    assert sub_step.status == "success"
    assert work.parent_id == dag_run.id

    found = versions(dpt_env)
    [side] = found["side.txt"]
    [calibrated] = found["calibrated.txt"]
    assert side.producer == calibrated.producer == work.uuid
    assert found["sub.txt"][0].producer == sub_step.uuid
    assert edges(dpt_env) >= {
        ("raw.csv", "side.txt", "dpt_in_task", "work"),  # from the task's inlet
        ("calib.txt", "calibrated.txt", "dpt_in_task", "work"),  # explicit parents
    }
    assert ("raw.csv", "calibrated.txt", "dpt_in_task", "work") not in edges(dpt_env)


def test_outlet_named_as_parent_in_task_code_is_one_version(dpt_env: Any, run_dag: Any) -> None:
    assert run_dag("dpt_outlet_parent").state == "success"
    [report] = tasks(invocations(dpt_env), "report")
    [summary] = versions(dpt_env)["summary.csv"]
    assert summary.producer == report.uuid
    assert edges(dpt_env) == {("summary.csv", "report.log", "dpt_outlet_parent", "report")}


def test_skipped_task(dpt_env: Any, run_dag: Any) -> None:
    result = run_dag("dpt_skip")
    assert result.task_states[("nothing_to_do", -1)] == "skipped"

    [task] = tasks(invocations(dpt_env), "nothing_to_do")
    assert task.status == "skipped"


# -- switched off -------------------------------------------------------------------------------


def test_dpt_disabled_records_nothing(
    dpt_env: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPT_DISABLED", "1")
    dpt_core.plugin_api.reset()
    result = run_dag("dpt_success")
    assert result.state == "success"

    monkeypatch.delenv("DPT_DISABLED")
    dpt_core.plugin_api.reset()
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 0
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 0


def test_airflow_config_switch_records_nothing(
    dpt_env: Any, run_dag: Any, airflow_config: Any
) -> None:
    airflow_config("enabled", "False")
    result = run_dag("dpt_success")
    assert result.state == "success"
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 0
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 0


def test_a_try_and_a_dag_run_that_started_recorded_are_closed_after_dpt_is_switched_off(
    dpt_env: Any, run_dag: Any, airflow_config: Any, data_dir: Path
) -> None:
    """The switch decides what starts being recorded; what started is closed (it used
    to stay running for good: the end hooks looked at the switch first)."""
    airflow_config("enabled", "True")  # (the task turns it off; restored after the test)
    result = run_dag("dpt_switched_off")
    assert result.state == "success"
    rows = invocations(dpt_env)
    assert [(r.task, r.status) for r in tasks(rows)] == [("switch_off", "success")]
    assert [(r.job, r.status) for r in dag_runs(rows)] == [("dpt_switched_off", "success")]
    assert all(r.ended_at is not None for r in rows)
    [notes] = versions(dpt_env)["notes.txt"]  # the try's output, made while dpt was on
    assert (notes.job, notes.task) == ("dpt_switched_off", "switch_off")
    result = run_dag("dpt_switched_off")  # off from the start now: nothing more
    assert result.state == "success"
    assert len(invocations(dpt_env)) == 2


# -- errors in the listener ---------------------------------------------------------------------


def test_listener_error_does_not_fail_the_task(
    dpt_env: Any, run_dag: Any, airflow_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    airflow_config("translator", "adapter_translators.BrokenOutputsTranslator")
    with caplog.at_level(logging.WARNING, logger="dpt.airflow"):
        result = run_dag("dpt_success")

    assert result.state == "success"
    assert set(result.task_states.values()) == {"success"}
    rows = invocations(dpt_env)
    assert {(r.task, r.status) for r in tasks(rows)} == {
        ("extract", "success"),
        ("summarise", "success"),
    }
    found = versions(dpt_env)
    assert set(found) == {"raw.csv", "clean.csv"}  # inlets recorded
    assert {v.producer for vs in found.values() for v in vs} == {None}  # outlets lost to the bug
    warnings = [r.getMessage() for r in caplog.records if r.name == "dpt.airflow"]
    assert len(warnings) == 1  # logged once per process, not once per task
    assert "translator bug in get_outputs" in warnings[0]


def test_strict_mode_raises_listener_errors_to_airflow(
    dpt_env: Any,
    run_dag: Any,
    airflow_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    airflow_config("translator", "adapter_translators.BrokenOutputsTranslator")
    result = run_dag("dpt_producer")

    # Airflow catches what a listener raises: the task still succeeds, the error is in its log.
    assert result.task_states[("produce", -1)] == "success"
    log = capfd.readouterr()
    assert "error calling listener" in log.out + log.err
    assert "translator bug in get_outputs" in log.out + log.err
    [task] = tasks(invocations(dpt_env), "produce")
    assert task.status == "success"  # closed before the error was raised


def test_unresolvable_inlet_is_logged_not_raised(
    dpt_env: Any, run_dag: Any, test_dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = test_dags["dpt_consumer"].get_task("consume")
    monkeypatch.setattr(task, "inlets", [*task.inlets, object()])
    assert run_dag("dpt_producer").state == "success"
    assert run_dag("dpt_consumer").state == "success"
    [consume] = tasks(invocations(dpt_env), "consume")
    assert consume.status == "success"
    # the batch with the unknown object was dropped; the outlet is still recorded
    assert versions(dpt_env)["derived.csv"][0].producer == consume.uuid


# -- customising --------------------------------------------------------------------------------


def test_translator_subclass_from_airflow_config(
    dpt_env: Any, run_dag: Any, airflow_config: Any
) -> None:
    airflow_config("translator", "adapter_translators.IndexedTaskTranslator")
    assert run_dag("dpt_mapped").state == "success"
    squares = [r for r in tasks(invocations(dpt_env)) if r.task.startswith("square")]
    assert sorted(r.task for r in squares) == ["square[0]", "square[1]", "square[2]"]
    assert {params(r)["deployment"] for r in squares} == {"test"}


def test_the_dpt_options_are_read_once_a_dag_run_in_a_process(
    dpt_env: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dag.test() runs every try of a dag run in one process: ``[dpt] enabled`` and
    ``[dpt] translator`` are read at the dag run's first event there, not at every try's
    (two config reads were ~0.1-0.25 ms of each try on the task's thread)."""
    from dpt_airflow import compat

    reads: list[str] = []
    for name in ("conf_get", "conf_getboolean"):
        real = getattr(compat, name)

        def counted(section: str, key: str, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if section == "dpt":
                reads.append(key)
            return _real(section, key, *args, **kwargs)

        monkeypatch.setattr(compat, name, counted)
    assert run_dag("dpt_mapped").state == "success"
    assert len(tasks(invocations(dpt_env))) == 3  # (three tries, square[0..2])
    assert sorted(reads) == ["enabled", "translator"]
    assert run_dag("dpt_mapped").state == "success"  # a new dag run reads them again
    assert sorted(reads) == ["enabled", "enabled", "translator", "translator"]


def test_a_try_is_closed_by_the_translator_that_opened_it(
    dpt_env: Any, run_dag: Any, test_dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The task switches ``[dpt] translator`` to a broken one while it runs: its own end is
    # still recorded by the translator that opened it (outputs and all), the next try's by
    # the new one (its outputs lost to the bug, its end recorded).
    task = test_dags["dpt_producer"].get_task("produce")
    produce = task.python_callable

    def produce_and_switch() -> None:
        produce()
        monkeypatch.setenv(
            "AIRFLOW__DPT__TRANSLATOR", "adapter_translators.BrokenOutputsTranslator"
        )

    monkeypatch.setattr(task, "python_callable", produce_and_switch)
    assert run_dag("dpt_producer").state == "success"
    [first] = tasks(invocations(dpt_env), "produce")
    assert first.status == "success"
    assert [v.producer for v in versions(dpt_env)["shared.csv"]] == [first.uuid]

    assert run_dag("dpt_producer").state == "success"
    first_again, second = tasks(invocations(dpt_env), "produce")
    assert (first_again.uuid, second.status) == (first.uuid, "success")
    assert [v.producer for v in versions(dpt_env)["shared.csv"]] == [first.uuid]


def test_airflow_assets_resolve_to_uris(dpt_env: Any, test_dags: dict[str, Any]) -> None:
    from airflow.sdk import Asset

    hook = dpt_core.get_tracker().pm.hook.dpt_resolve_uri
    assert hook(target=Asset("s3://bucket/key.fits")) == "s3://bucket/key.fits"
    assert hook(target=Asset(name="nightly catalogue")) == "airflow://asset/nightly%20catalogue"
    assert hook(target=object()) is None
    tracker = dpt_core.get_tracker()
    assert tracker.resolve(Asset("s3://bucket/key.fits")) == "s3://bucket/key.fits"
    assert tracker.resolve(Asset("file:///data/a/../b.csv")) == "file:///data/b.csv"


def test_name_only_asset_resolves_through_the_plugin(dpt_env: Any, test_dags: Any) -> None:
    from airflow.sdk import Asset

    resolved = dpt_core.get_tracker().resolve(Asset(name="nightly catalogue"))
    assert resolved == "airflow://asset/nightly%20catalogue"
