"""dpt in a real Prefect deployment: a server, a process work pool, a worker running three
flow runs in its subprocesses (completed, cancelled, crashed by ``kill -9``).

Everything is asserted from dpt's database, which the worker's processes write and
this test reads (a fresh one). Measured here: about two minutes, most of it Prefect's
server start and the worker's subprocesses (figures in docs/prefect.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deployment import deployment, run_all
from lineage_checks import assert_chain_through_the_producer

pytestmark = pytest.mark.slow


def test_a_real_deployment(tmp_path: Path, dpt_env: Any, recorded: Any) -> None:
    with deployment(tmp_path / "deployment", database_url=dpt_env.url) as d:
        outcome = run_all(d)
        api = {
            run_id: (d.flow_run(run_id), d.task_runs(run_id))
            for run_id in (outcome.completed, outcome.cancelled, outcome.crashed)
        }
    print(outcome.figures)  # shown with -s
    assert outcome.states == {
        outcome.completed: "COMPLETED",
        outcome.cancelled: "CANCELLED",
        outcome.crashed: "CRASHED",
    }

    flows = {r["external_id"]: r for r in recorded.invocations(task=None)}
    assert set(flows) == set(outcome.states)
    expected_status = {
        outcome.completed: "success",
        outcome.cancelled: "cancelled",
        outcome.crashed: "crashed",
    }
    for run_id, (flow_run, task_runs) in api.items():
        row = flows[run_id]
        assert row["status"] == expected_status[run_id]
        assert row["ended_at"] is not None
        assert row["job"] == ("clean-and-summarize" if run_id == outcome.completed else "waits")
        # Every task run the Prefect API knows is recorded under its flow run, as Prefect
        # ended it (a task the engine's kill interrupted is Crashed there too).
        children = recorded.invocations(parent_id=row["id"])
        assert {c["external_id"] for c in children} == {str(t.id) for t in task_runs}
        for child in children:
            (task_run,) = [t for t in task_runs if str(t.id) == child["external_id"]]
            assert (
                child["status"]
                == {
                    "COMPLETED": "success",
                    "CRASHED": "crashed",
                    "CANCELLED": "cancelled",
                    "RUNNING": expected_status[run_id],
                }[task_run.state_type.value]
            ), (child, task_run.state)
        # Item 5: run ids are context, kept in clear on the flow run's invocation.
        variables = _variables(dpt_env, row["id"])
        assert variables["PREFECT__FLOW_RUN_ID"] == run_id
        assert variables["PREFECT__FLOW_ID"] == str(flow_run.flow_id)
        assert variables["PREFECT__DEPLOYMENT_ID"] == str(flow_run.deployment_id)

    assert flows[outcome.cancelled]["error"] == "Flow run was cancelled."
    assert "SIGKILL" in flows[outcome.crashed]["error"]
    # Item 14, in the worker: one clean.csv version, lineage through its producer.
    assert_chain_through_the_producer(recorded, d.data)
    # No run of any kind is left running.
    assert [r for r in recorded.invocations() if r["status"] == "running"] == []


def _variables(dpt_env: Any, invocation_id: int) -> dict[str, str]:
    import json

    value = dpt_env.scalar("SELECT variables FROM invocations WHERE id = :i", i=invocation_id)
    return dict(json.loads(value) if isinstance(value, str) else value or {})
