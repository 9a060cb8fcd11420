"""examples/cross_orchestrator.py on a fresh user: Airflow writes a file, Dagster reads it, one graph.

The example runs once per session (``conftest.py``, ``example_run.py``), in a
subprocess, as a newcomer would run it: no DPT_* variables, its own XDG directories
(so dpt records into the default SQLite file in the user's data directory), no
Airflow or Dagster configuration. Every test then reads what was recorded.
"""

from __future__ import annotations

import json
import re
import sqlite3

import dagster as dg

import dpt_core
import dpt_dagster
from tests.examples.example_run import DAG_ID, TASK_ID, ExampleRun


def airflow_run_id(example: ExampleRun) -> str:
    found = re.search(r"^airflow: dag run (\S+): success$", example.stdout, re.MULTILINE)
    assert found, example.stdout
    return found.group(1)


def invocations(example: ExampleRun) -> dict[tuple[str, str | None], sqlite3.Row]:
    rows = example.rows("SELECT * FROM invocations ORDER BY id")
    by_key = {(r["orchestrator"], r["task"]): r for r in rows}
    assert len(by_key) == len(rows) == 4, [dict(r) for r in rows]
    return by_key


def version(example: ExampleRun, name: str) -> sqlite3.Row:
    """The one recorded version of WORKDIR/name."""
    rows = example.rows(
        """
        SELECT v.*, i.uuid AS producer FROM data_product_versions v
        JOIN data_products p ON p.id = v.product_id
        LEFT JOIN invocations i ON i.id = v.produced_by_id
        WHERE p.uri = :uri
        """,
        uri=example.uri(name),
    )
    assert len(rows) == 1, f"{name}: {[dict(r) for r in rows]}"
    return rows[0]


def test_the_files_are_written_and_dpt_uses_its_default_sqlite_database(
    example: ExampleRun,
) -> None:
    assert example.database.is_file(), "dpt records into the user's data directory by default"
    catalog = json.loads(example.file("catalog.json").read_text())
    observations = example.file("observations.csv").read_text().splitlines()
    assert sum(entry["exposures"] for entry in catalog.values()) == len(observations) - 1
    assert set(catalog) == {"3C 273", "M 87", "NGC 1275"}
    # Only products: the Airflow and Dagster homes were temporary.
    assert sorted(p.name for p in example.workdir.iterdir()) == [
        "catalog.json",
        "exposures.csv",
        "observations.csv",
    ]


def test_airflow_records_the_dag_run_and_the_task_try(example: ExampleRun) -> None:
    run_id = airflow_run_id(example)
    found = invocations(example)
    dag_run, task = found[("airflow", None)], found[("airflow", TASK_ID)]

    assert dag_run["uuid"] == dpt_core.invocation_uuid("airflow", "dag_run", DAG_ID, run_id)
    assert (dag_run["job"], dag_run["status"], dag_run["external_id"]) == (
        DAG_ID,
        "success",
        run_id,
    )
    assert dag_run["parent_id"] is None

    assert task["uuid"] == dpt_core.invocation_uuid(
        "airflow", "task", DAG_ID, run_id, TASK_ID, -1, 1
    )
    assert (task["job"], task["status"], task["parent_id"]) == (DAG_ID, "success", dag_run["id"])
    assert task["environment_id"] is not None
    parameters = json.loads(task["parameters"])
    assert (parameters["run_id"], parameters["try_number"]) == (run_id, 1)
    assert parameters["params"] == {"max_seeing": 1.2}


def test_dagster_records_the_run_and_the_materialisation(example: ExampleRun) -> None:
    found = invocations(example)
    run, materialisation = found[("dagster", None)], found[("dagster", "catalog")]
    run_id = materialisation["external_id"]

    assert run["uuid"] == dpt_dagster.run_invocation_uuid(run_id)
    assert (run["status"], run["external_id"], run["parent_id"]) == ("success", run_id, None)
    assert materialisation["uuid"] == dpt_dagster.materialization_invocation_uuid(
        run_id, dg.AssetKey("catalog"), None
    )
    assert (materialisation["status"], materialisation["parent_id"]) == ("success", run["id"])
    assert materialisation["code_version"] == "1"
    # Opened from inside the asset (dpt_core.invocation()), so it has the asset's environment.
    assert materialisation["environment_id"] is not None
    assert materialisation["ended_at"] is not None


def test_each_file_has_one_version_with_its_content_hash_and_producer(example: ExampleRun) -> None:
    found = invocations(example)
    exposures, observations, catalog = (
        version(example, name) for name in ("exposures.csv", "observations.csv", "catalog.json")
    )
    for name, row in (
        ("exposures.csv", exposures),
        ("observations.csv", observations),
        ("catalog.json", catalog),
    ):
        assert row["content_hash"] == dpt_core.hash_file(example.file(name)), name
    assert exposures["producer"] is None  # delivered from outside: read, never written
    # The version Dagster read is the one Airflow wrote: one version, Airflow's task made it.
    assert observations["producer"] == found[("airflow", TASK_ID)]["uuid"]
    kept = len(example.file("observations.csv").read_text().splitlines()) - 1
    assert json.loads(observations["metadata"]) == {"kept": kept, "of": 12}
    assert catalog["producer"] == found[("dagster", "catalog")]["uuid"]
    metadata = json.loads(catalog["metadata"])
    assert metadata["dpt/path"] == str(example.file("catalog.json"))
    assert metadata["targets"] == 3


def test_inputs_and_lineage_edges_join_the_two_orchestrators(example: ExampleRun) -> None:
    inputs = example.rows(
        """
        SELECT i.orchestrator, i.task, p.uri FROM invocation_inputs x
        JOIN invocations i ON i.id = x.invocation_id
        JOIN data_product_versions v ON v.id = x.version_id
        JOIN data_products p ON p.id = v.product_id
        ORDER BY i.id
        """
    )
    assert [tuple(r) for r in inputs] == [
        ("airflow", TASK_ID, example.uri("exposures.csv")),
        ("dagster", "catalog", example.uri("observations.csv")),
    ]
    edges = example.rows(
        """
        SELECT pp.uri AS parent, cp.uri AS child, i.orchestrator, i.task FROM lineage_edges e
        JOIN data_product_versions pv ON pv.id = e.parent_version_id
        JOIN data_products pp ON pp.id = pv.product_id
        JOIN data_product_versions cv ON cv.id = e.child_version_id
        JOIN data_products cp ON cp.id = cv.product_id
        JOIN invocations i ON i.id = e.invocation_id
        ORDER BY e.id
        """
    )
    assert [tuple(r) for r in edges] == [
        (example.uri("exposures.csv"), example.uri("observations.csv"), "airflow", TASK_ID),
        (example.uri("observations.csv"), example.uri("catalog.json"), "dagster", "catalog"),
    ]


def test_the_cli_shows_the_whole_upstream_graph(example: ExampleRun) -> None:
    found = invocations(example)
    task, materialisation = found[("airflow", TASK_ID)], found[("dagster", "catalog")]
    graph = example.dpt(
        "lineage", str(example.file("catalog.json")), "--upstream", "--format", "json"
    )

    assert graph["root"] == example.uri("catalog.json")
    nodes = {n["uri"]: n for n in graph["nodes"]}
    assert {uri: n["depth"] for uri, n in nodes.items()} == {
        example.uri("catalog.json"): 0,
        example.uri("observations.csv"): 1,
        example.uri("exposures.csv"): 2,
    }
    assert nodes[example.uri("catalog.json")]["produced_by"] == materialisation["uuid"]
    assert nodes[example.uri("observations.csv")]["produced_by"] == task["uuid"]
    assert (
        nodes[example.uri("observations.csv")]["job"],
        nodes[example.uri("observations.csv")]["task"],
    ) == (DAG_ID, TASK_ID)
    assert nodes[example.uri("exposures.csv")]["produced_by"] is None
    for name in ("catalog.json", "observations.csv", "exposures.csv"):
        assert nodes[example.uri(name)]["content_hash"] == dpt_core.hash_file(example.file(name))

    assert [(e["parent"], e["child"], e["invocation"], e["task"]) for e in graph["edges"]] == [
        (
            example.uri("observations.csv"),
            example.uri("catalog.json"),
            materialisation["uuid"],
            "catalog",
        ),
        (example.uri("exposures.csv"), example.uri("observations.csv"), task["uuid"], TASK_ID),
    ]


def test_the_example_prints_the_lineage_it_promises(example: ExampleRun) -> None:
    found = invocations(example)
    task, materialisation = found[("airflow", TASK_ID)], found[("dagster", "catalog")]
    assert f"upstream lineage of {example.file('catalog.json')}:" in example.stdout
    assert (
        f"catalog.json <- observations.csv  made by {materialisation['job']}/catalog "
        f"(run {materialisation['uuid'][:8]})"
    ) in example.stdout
    assert (
        f"observations.csv <- exposures.csv  made by {DAG_ID}/{TASK_ID} (run {task['uuid'][:8]})"
    ) in example.stdout
    assert "exposures.csv: read as found, no producer recorded" in example.stdout
    assert "dpt recorded 1 materialisation(s), 1 finished run(s)" in example.stdout


def test_dagster_records_the_job_name_without_a_tracking_error(example: ExampleRun) -> None:
    found = invocations(example)
    for key in (("dagster", None), ("dagster", "catalog")):
        assert found[key]["job"] == "__ephemeral_asset_job__", key
    assert "RecursionError" not in example.stderr
    assert "maximum recursion depth" not in example.stderr
