"""OpenLineage events -> dpt records (dpt_core.ingest), on real databases.

The round trip runs real pipelines into one database, exports them with dpt's own
OpenLineage export, ingests the events into a fresh database of each backend and
compares the two graphs; the other tests check idempotence, order-freedom, the
recorder's merging of two reporters of one run, redaction and the static events.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

import dpt_core
from dpt_core.export.openlineage import _without_nulls, iter_events
from dpt_core.ingest import IngestResult, ingest, parse_events
from dpt_core.store.models import (
    DataProduct,
    DataProductVersion,
    Distribution,
    Environment,
    EnvironmentDistribution,
    EnvironmentVariable,
    EnvVariable,
    Invocation,
    InvocationInput,
    LineageEdge,
)
from dpt_core.store.plugin import current_store
from dpt_core.testing import empty_tracking

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))

import quickstart  # noqa: E402

PRODUCER = "https://github.com/example/producer/tree/v1"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACET = {"_producer": PRODUCER, "_schemaURL": "https://openlineage.io/spec/facets/x.json"}
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def engine() -> Engine:
    return current_store().engine


def receive(doc: Any) -> IngestResult:
    """What dpt serve does with a request body: parse (everything), then record."""
    return ingest(parse_events(json.loads(json.dumps(doc))))


# --------------------------------------------------------------------------- snapshots


def _second(value: dt.datetime | None) -> Any:
    """MariaDB keeps whole seconds (truncated): compare there at that precision."""
    if value is None:
        return None
    return int(value.timestamp() // 1)


def _time(value: dt.datetime | None, coarse: bool) -> Any:
    return _second(value) if coarse else value


def graph(eng: Engine, *, coarse: bool = False) -> dict[str, Any]:
    """Everything a run's record holds, keyed by stable identities (never row ids)."""
    inv = Invocation.__table__
    parent = inv.alias("parent")
    env = Environment.__table__
    P, V, IN, E = (
        DataProduct.__table__,
        DataProductVersion.__table__,
        InvocationInput.__table__,
        LineageEdge.__table__,
    )
    with eng.connect() as conn:
        runs = {
            r.uuid: (
                r.orchestrator,
                r.job,
                r.task,
                r.status,
                _time(r.started_at, coarse),
                _time(r.ended_at, coarse),
                r.error,
                r.parent,
                r.fingerprint,
                r.user,
                r.host,
            )
            for r in conn.execute(
                select(
                    inv.c.uuid,
                    inv.c.orchestrator,
                    inv.c.job,
                    inv.c.task,
                    inv.c.status,
                    inv.c.started_at,
                    inv.c.ended_at,
                    inv.c.error,
                    parent.c.uuid.label("parent"),
                    env.c.fingerprint,
                    inv.c.user,
                    inv.c.host,
                )
                .outerjoin(parent, parent.c.id == inv.c.parent_id)
                .outerjoin(env, env.c.id == inv.c.environment_id)
            )
        }
        producer = inv.alias("producer")
        versions = sorted(
            (r.uri, r.content_hash or "", r.producer or "", "" if r.content_hash else r.uuid)
            for r in conn.execute(
                select(P.c.uri, V.c.content_hash, V.c.uuid, producer.c.uuid.label("producer"))
                .join(P, P.c.id == V.c.product_id)
                .outerjoin(producer, producer.c.id == V.c.produced_by_id)
            )
        )
        inputs = sorted(
            (r.run, r.uri, r.content_hash or "", "" if r.content_hash else r.vuuid)
            for r in conn.execute(
                select(
                    inv.c.uuid.label("run"),
                    P.c.uri,
                    V.c.content_hash,
                    V.c.uuid.label("vuuid"),
                )
                .select_from(IN)
                .join(inv, inv.c.id == IN.c.invocation_id)
                .join(V, V.c.id == IN.c.version_id)
                .join(P, P.c.id == V.c.product_id)
            )
        )
        pv, cv = V.alias("pv"), V.alias("cv")
        pp, cp = P.alias("pp"), P.alias("cp")
        edges = sorted(
            (r.pu, r.ph or "", r.cu, r.ch or "", r.run or "")
            for r in conn.execute(
                select(
                    pp.c.uri.label("pu"),
                    pv.c.content_hash.label("ph"),
                    cp.c.uri.label("cu"),
                    cv.c.content_hash.label("ch"),
                    inv.c.uuid.label("run"),
                )
                .select_from(E)
                .join(pv, pv.c.id == E.c.parent_version_id)
                .join(pp, pp.c.id == pv.c.product_id)
                .join(cv, cv.c.id == E.c.child_version_id)
                .join(cp, cp.c.id == cv.c.product_id)
                .outerjoin(inv, inv.c.id == E.c.invocation_id)
            )
        )
        products = sorted(r.uri for r in conn.execute(select(P.c.uri)))
    return {
        "runs": runs,
        "products": products,
        "versions": versions,
        "inputs": inputs,
        "edges": edges,
        "environments": environments(eng),
    }


def environments(eng: Engine) -> dict[str, Any]:
    E, D, ED = Environment.__table__, Distribution.__table__, EnvironmentDistribution.__table__
    VAR, EV = EnvVariable.__table__, EnvironmentVariable.__table__
    found: dict[str, Any] = {}
    with eng.connect() as conn:
        for e in conn.execute(select(E)):
            packages = dict(
                conn.execute(
                    select(D.c.name, D.c.version)
                    .join(ED, ED.c.distribution_id == D.c.id)
                    .where(ED.c.environment_id == e.id)
                ).all()
            )
            variables = {
                r.key: ("<redacted>" if r.redacted_digest else r.value)
                for r in conn.execute(
                    select(VAR.c.key, VAR.c.value, VAR.c.redacted_digest)
                    .join(EV, EV.c.variable_id == VAR.c.id)
                    .where(EV.c.environment_id == e.id)
                )
            }
            found[e.fingerprint] = {
                "python": e.python_version,
                "implementation": e.implementation,
                "platform": e.platform,
                "host": e.hostname,
                "user": e.user,
                "facets": e.facets,
                "packages": packages,
                "variables": variables,
            }
    return found


def table_dump(eng: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tracking tables, ids and all (for 'stores once' and 'same rows')."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with eng.connect() as conn:
        for model in (
            Invocation,
            DataProduct,
            DataProductVersion,
            InvocationInput,
            LineageEdge,
            Environment,
            EnvVariable,
        ):
            table = model.__table__
            rows = conn.execute(select(table)).all()
            dump[table.name] = sorted(
                tuple(json.dumps(v, sort_keys=True, default=str) for v in row) for row in rows
            )
    return dump


# --------------------------------------------------------------------------- round trip


def run_pipelines(work: Path) -> dict[str, str]:
    """The quickstart through the Python API, plus what it does not have: a parent and
    child, an input dpt cannot hash, a failed run, a cancelled run, a one-off track(),
    a run still going and a 'dpt run' shell command (another process, another
    environment)."""
    quickstart.main(work)
    raw, cal = work / "raw.csv", work / "nightly-cal.csv"
    with (
        dpt_core.invocation("nightly") as parent,
        dpt_core.invocation("nightly", task="calibrate") as child,
    ):
        child.read(raw, "s3://survey-bucket/flats/flat.fits")
        cal.write_text("calibrated\n")
        child.write(cal)
    with pytest.raises(ZeroDivisionError), dpt_core.invocation("broken") as broken:
        broken.read(cal)
        1 / 0  # noqa: B018
    stopped = dpt_core.get_tracker().start("stopped")
    stopped.finish("cancelled", error="operator stopped it")
    (work / "note.txt").write_text("a note\n")
    dpt_core.track(work / "note.txt", parents=[cal])
    going = dpt_core.get_tracker().start("still-going", environment=False)
    (work / "in.txt").write_text("shout\n")
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dpt")),
            "run",
            "--name",
            "upper",
            "-i",
            str(work / "in.txt"),
            "-o",
            str(work / "out.txt"),
            "--",
            "sh",
            "-c",
            f"tr a-z A-Z < {work / 'in.txt'} > {work / 'out.txt'}",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {"parent": parent.uuid, "child": child.uuid, "going": going.uuid}


def exported(eng: Engine, *, coarse: bool) -> list[dict[str, Any]]:
    """dpt's OpenLineage export, in a stable order (times in seconds where coarse)."""
    events = json.loads(json.dumps(list(iter_events(eng)), default=str))
    if coarse:
        for event in events:
            event["eventTime"] = _second(dt.datetime.fromisoformat(event["eventTime"]))
    return sorted(events, key=lambda e: (e["run"]["runId"], e["eventType"]))


def test_round_trip_export_then_ingest_into_a_fresh_database_gives_the_same_graph(
    dpt_backend, dpt_env, tmp_path, monkeypatch
):
    target = dpt_env.url
    source = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    monkeypatch.setenv("DPT_DATABASE_URL", source)
    monkeypatch.setenv("PIPELINE_API_TOKEN", "do-not-export-me-3f9a")
    dpt_core.plugin_api.reset()
    ids = run_pipelines(tmp_path / "work")
    source_engine = engine()
    events = list(iter_events(source_engine))
    assert {e["eventType"] for e in events} == {"START", "COMPLETE", "FAIL", "ABORT"}
    before = graph(source_engine)
    assert len(before["runs"]) == 10 and before["edges"] and before["inputs"]

    monkeypatch.setenv("DPT_DATABASE_URL", target)
    dpt_core.plugin_api.reset()
    result = receive(events)
    assert result.outcome == "recorded" and result.warnings == []
    assert result.events == len(events) and result.runs == 10

    coarse = dpt_env.backend == "mysql"
    after = graph(engine(), coarse=coarse)
    expected = graph(source_engine, coarse=coarse)
    assert after["runs"] == expected["runs"]
    assert after["runs"][ids["child"]][7] == ids["parent"]
    assert after["runs"][ids["going"]][3] == "running"
    for key in ("products", "versions", "inputs", "edges"):
        assert after[key] == expected[key], key
    # (the export drops null members of facets, as OpenLineage serialisers do)
    for env in expected["environments"].values():
        env["facets"] = _without_nulls(env["facets"])
    assert after["environments"] == expected["environments"]
    # dpt's own facets come back exactly: the export of the copy is the export of the original
    assert exported(engine(), coarse=coarse) == exported(source_engine, coarse=coarse)
    assert "do-not-export-me-3f9a" not in json.dumps(table_dump(engine()))


def test_statuses_the_export_folds_together(dpt_env, tmp_path, monkeypatch):
    """OpenLineage has one COMPLETE and one FAIL: dpt's skipped and crashed come back as
    success and failed (docs/openlineage-mapping.md says so)."""
    tracker = dpt_core.get_tracker()
    skipped = tracker.start("maybe", environment=False)
    skipped.finish("skipped")
    crashed = tracker.start("killed", environment=False)
    crashed.finish("crashed", error="the process exited")
    events = list(iter_events(engine()))
    monkeypatch.setenv("DPT_DATABASE_URL", f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    dpt_core.plugin_api.reset()
    receive(events)
    runs = graph(engine())["runs"]
    assert runs[skipped.uuid][3] == "success"
    assert (runs[crashed.uuid][3], runs[crashed.uuid][6]) == ("failed", "the process exited")


# --------------------------------------------------------------------------- synthetic events


def run_event(
    event_type: str | None,
    run_id: str,
    *,
    time: dt.datetime = T0,
    job: str = "ingest-job",
    namespace: str = "spark-prod",
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    run_facets: dict[str, Any] | None = None,
    job_facets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventTime": time.isoformat(),
        "producer": PRODUCER,
        "schemaURL": SCHEMA,
        "run": {"runId": run_id, "facets": run_facets or {}},
        "job": {"namespace": namespace, "name": job, "facets": job_facets or {}},
        "inputs": inputs or [],
        "outputs": outputs or [],
    }
    if event_type is not None:
        event["eventType"] = event_type
    return event


def dataset(namespace: str, name: str, version: str | None = None, **facets: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"namespace": namespace, "name": name, "facets": {}}
    if version is not None:
        found["facets"]["version"] = {**FACET, "datasetVersion": version}
    for key, value in facets.items():
        found["facets"][key] = {**FACET, **value}
    return found


def parent_facet(run_id: str, name: str, namespace: str = "airflow-prod") -> dict[str, Any]:
    return {
        "parent": {
            **FACET,
            "run": {"runId": run_id},
            "job": {"namespace": namespace, "name": name},
        }
    }


def job_type(integration: str, kind: str = "JOB") -> dict[str, Any]:
    return {
        "jobType": {**FACET, "processingType": "BATCH", "integration": integration, "jobType": kind}
    }


def life_of_a_run(run_id: str, parent_id: str) -> list[dict[str, Any]]:
    """A Spark-like child run under an orchestrator's run: its parent's START and
    COMPLETE, its own START, RUNNING (an input), OTHER (an output with a version) and
    COMPLETE (both again, with facets); times one second apart."""
    raw = dataset("s3://lake", "raw/day=1", "v7")
    out = dataset(
        "s3://lake",
        "clean/day=1",
        "v3",
        schema={"fields": [{"name": "flux", "type": "double"}]},
    )
    child_facets = {
        **parent_facet(parent_id, "nightly"),
        "processing_engine": {**FACET, "version": "3.5.1", "name": "Spark"},
        "environmentVariables": {
            **FACET,
            "environmentVariables": [{"name": "SPARK_HOME", "value": "/opt/spark"}],
        },
    }
    at = [T0 + dt.timedelta(seconds=s) for s in range(6)]
    parent_jobs = job_type("AIRFLOW", "DAG")
    return [
        run_event("START", parent_id, time=at[0], job="nightly", job_facets=parent_jobs),
        run_event("START", run_id, time=at[1], run_facets=child_facets),
        run_event("RUNNING", run_id, time=at[2], inputs=[raw], run_facets=child_facets),
        run_event("OTHER", run_id, time=at[3], outputs=[out], run_facets=child_facets),
        run_event(
            "COMPLETE", run_id, time=at[4], inputs=[raw], outputs=[out], run_facets=child_facets
        ),
        run_event("COMPLETE", parent_id, time=at[5], job="nightly", job_facets=parent_jobs),
    ]


def fresh_state() -> None:
    empty_tracking(engine())
    dpt_core.plugin_api.reset()


def test_every_event_twice_stores_once(dpt_backend, dpt_env, tmp_path):
    run_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = life_of_a_run(run_id, parent_id)
    receive(events)
    once = table_dump(engine())
    assert len(once["invocations"]) == 2
    for event in events:
        receive(event)
    receive(events + events)
    assert table_dump(engine()) == once


def test_the_mapped_run(dpt_env):
    run_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    receive(life_of_a_run(run_id, parent_id))
    (row,) = dpt_env.rows("SELECT * FROM invocations WHERE uuid = :u", u=run_id)
    assert (row.orchestrator, row.job, row.task, row.status) == (
        "spark",
        "ingest-job",
        None,
        "success",
    )
    parameters = json.loads(row.parameters) if isinstance(row.parameters, str) else row.parameters
    assert parameters == {"openlineage/job_namespace": "spark-prod"}
    variables = json.loads(row.variables) if isinstance(row.variables, str) else row.variables
    assert variables == {"SPARK_HOME": "/opt/spark"}
    (parent,) = dpt_env.rows("SELECT * FROM invocations WHERE uuid = :u", u=parent_id)
    assert (parent.orchestrator, parent.job, parent.status) == ("airflow", "nightly", "success")
    assert row.parent_id == parent.id
    g = graph(engine())
    assert g["versions"] == [
        ("s3://lake/clean/day=1", "v3", run_id, ""),
        ("s3://lake/raw/day=1", "v7", "", ""),
    ]
    assert g["edges"] == [("s3://lake/raw/day=1", "v7", "s3://lake/clean/day=1", "v3", run_id)]
    meta = dpt_env.scalar(
        "SELECT v.metadata FROM data_product_versions v JOIN data_products p "
        "ON p.id = v.product_id WHERE p.uri = 's3://lake/clean/day=1'"
    )
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert meta == {
        "openlineage/facets": {"schema": {"fields": [{"name": "flux", "type": "double"}]}},
        "openlineage/version": "v3",
    }


def _reference_rows(events: list[dict[str, Any]]) -> dict[str, Any]:
    fresh_state()
    receive(events)
    return graph(engine()) | {"dump": table_dump_without_ids(engine())}


def table_dump_without_ids(eng: Engine) -> dict[str, Any]:
    """The rows of every tracking table, row ids replaced by what they point at."""
    g = graph(eng)
    inv = Invocation.__table__
    with eng.connect() as conn:
        rows = sorted(
            json.dumps(
                {
                    k: v
                    for k, v in r._mapping.items()
                    if k not in ("id", "parent_id", "environment_id")
                },
                sort_keys=True,
                default=str,
            )
            for r in conn.execute(select(inv))
        )
        V = DataProductVersion.__table__
        versions = sorted(
            json.dumps(
                {
                    k: v
                    for k, v in r._mapping.items()
                    if k not in ("id", "product_id", "produced_by_id", "recorded_at")
                },
                sort_keys=True,
                default=str,
            )
            for r in conn.execute(select(V))
        )
    return {"invocations": rows, "versions": versions, "graph": g}


@given(order=st.permutations(range(6)))
def test_the_events_of_a_run_give_the_same_rows_in_any_order(dpt_env, order):
    run_id = "0b6c3b3e-55a7-4c8e-9c39-6d1f3f3b2a10"
    parent_id = "5f0f3a0e-3f6e-4e77-9a4e-1c2b3d4e5f60"
    events = life_of_a_run(run_id, parent_id)
    reference = _reference_rows(events)
    fresh_state()
    for index in order:
        receive(events[index])
    assert graph(engine()) | {"dump": table_dump_without_ids(engine())} == reference


def test_the_order_of_start_running_and_end_never_matters(dpt_backend, dpt_env):
    run_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = life_of_a_run(run_id, parent_id)[1:5]  # the child's own four events
    reference = _reference_rows(events)
    for order in itertools.permutations(events):
        fresh_state()
        for event in order:
            receive(event)
        assert graph(engine()) | {"dump": table_dump_without_ids(engine())} == reference


def test_a_late_start_never_reopens_a_finished_run(dpt_env):
    run_id = str(uuid.uuid4())
    receive(
        run_event(
            "FAIL",
            run_id,
            time=T0 + dt.timedelta(minutes=5),
            run_facets={
                "errorMessage": {**FACET, "message": "boom", "programmingLanguage": "python"}
            },
        )
    )
    receive(run_event("START", run_id, time=T0))
    receive(run_event("RUNNING", run_id, time=T0 + dt.timedelta(minutes=1)))
    receive(run_event("COMPLETE", run_id, time=T0 + dt.timedelta(minutes=6)))
    (row,) = dpt_env.rows("SELECT status, error, started_at, ended_at FROM invocations")
    assert (row.status, row.error) == (
        "failed",
        "boom",
    )  # the first end wins; a START never reopens
    g = graph(engine())["runs"][run_id]
    assert (g[4], g[5]) == (T0, T0 + dt.timedelta(minutes=5))


def test_an_end_recorded_by_dpt_is_not_overwritten_by_an_openlineage_end(dpt_env):
    handle = dpt_core.get_tracker().start("etl", task="load", environment=False)
    handle.finish("skipped")
    receive(run_event("COMPLETE", handle.uuid, job="etl.load"))
    assert dpt_env.scalar("SELECT status FROM invocations") == "skipped"
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 1


def test_outputs_a_run_only_declared_are_not_versions(dpt_env):
    run_id, failed_id = str(uuid.uuid4()), str(uuid.uuid4())
    target = dataset("s3://lake", "out/a")
    receive(run_event("START", run_id, outputs=[target]))
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 0
    receive(run_event("COMPLETE", run_id, outputs=[target]))
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 1
    # a failed run: declared outputs were not made; a version facet says one was
    receive(
        run_event(
            "FAIL",
            failed_id,
            outputs=[dataset("s3://lake", "out/b"), dataset("s3://lake", "out/c", "v1")],
        )
    )
    assert sorted(graph(engine())["products"]) == ["s3://lake/out/a", "s3://lake/out/c"]


def test_the_same_dataset_version_reported_by_two_runs(dpt_env):
    """Read by one run, written by another, reported in either order: one version."""
    writer, reader = str(uuid.uuid4()), str(uuid.uuid4())
    table = dataset("postgres://db.example:5432", "survey.public.detections", "42")
    receive(run_event("COMPLETE", reader, inputs=[table], time=T0 + dt.timedelta(hours=1)))
    receive(run_event("COMPLETE", writer, outputs=[table]))
    g = graph(engine())
    uri = "postgres://db.example:5432/survey/public.detections"
    assert g["versions"] == [(uri, "42", writer, "")]
    assert g["inputs"] == [(reader, uri, "42", "")]


# --------------------------------------------------------------------------- two reporters


@pytest.mark.parametrize("dpt_first", [True, False])
def test_a_run_reported_by_dpt_and_by_openlineage_is_one_run_with_one_version_per_file(
    dpt_backend, dpt_env, tmp_path, dpt_first
):
    """dpt's adapter hashes the files; an OpenLineage producer names the same files
    without a version: one run, one version per file (hashed), in either order."""
    raw, out = tmp_path / "raw.csv", tmp_path / "out.csv"
    raw.write_text("1,2\n")
    out.write_text("2,4\n")
    tracker = dpt_core.get_tracker()
    run_id = dpt_core.invocation_uuid("example", "try", 1)

    def by_dpt() -> None:
        handle = tracker.start("etl", task="double", uuid=run_id, parameters={"factor": 2})
        handle.read(raw)
        handle.write(out)
        handle.finish("success")

    def by_openlineage() -> None:
        files = {"inputs": [dataset("file", str(raw))], "outputs": [dataset("file", str(out))]}
        receive(
            run_event(
                "START", run_id, job="etl.double", job_facets=job_type("PYTHON", "TASK"), **files
            )
        )
        receive(
            run_event(
                "COMPLETE", run_id, job="etl.double", job_facets=job_type("PYTHON", "TASK"), **files
            )
        )

    for step in (by_dpt, by_openlineage) if dpt_first else (by_openlineage, by_dpt):
        step()
    g = graph(engine())
    assert list(g["runs"]) == [run_id]
    assert g["runs"][run_id][1:4] == ("etl", "double", "success")
    raw_hash, out_hash = dpt_core.hash_file(raw), dpt_core.hash_file(out)
    assert g["versions"] == [
        (
            dpt_core.normalize_uri(out) if hasattr(dpt_core, "normalize_uri") else out.as_uri(),
            out_hash,
            run_id,
            "",
        ),
        (raw.as_uri(), raw_hash, "", ""),
    ]
    assert g["inputs"] == [(run_id, raw.as_uri(), raw_hash, "")]
    assert g["edges"] == [(raw.as_uri(), raw_hash, out.as_uri(), out_hash, run_id)]
    parameters = dpt_env.scalar("SELECT parameters FROM invocations")
    parameters = json.loads(parameters) if isinstance(parameters, str) else parameters
    assert parameters == {"factor": 2, "openlineage/job_namespace": "spark-prod"}
    assert dpt_env.scalar("SELECT environment_id FROM invocations") is not None


def test_products_recorded_before_their_run_started_get_the_runs_names(
    dpt_backend, dpt_env, tmp_path
):
    """A start after the run's products (a lost or late start event) fills in the
    placeholder run: job, task, orchestrator, environment, earliest start."""
    tracker = dpt_core.get_tracker()
    run_id = str(uuid.uuid4())
    data = tmp_path / "early.txt"
    data.write_text("early\n")
    tracker.attach(run_id).write(data)
    assert dpt_env.scalar("SELECT job FROM invocations") == "unknown"
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    tracker.start("late", task="start", uuid=run_id, orchestrator="python", started_at=started)
    (row,) = dpt_env.rows("SELECT orchestrator, job, task, environment_id, status FROM invocations")
    assert (row.orchestrator, row.job, row.task, row.status) == (
        "python",
        "late",
        "start",
        "running",
    )
    assert row.environment_id is not None
    assert graph(engine())["runs"][run_id][4] == started


# --------------------------------------------------------------------------- Airflow provider


def airflow_task_event(
    event_type: str, *, try_number: int = 1, map_index: int = -1
) -> dict[str, Any]:
    """An event of the shape Airflow's OpenLineage provider sends for a task try."""
    facets = {
        **parent_facet("01980000-0000-7000-8000-000000000001", "survey"),
        "airflow": {
            **FACET,
            "dag": {"dag_id": "survey"},
            "dagRun": {"dag_id": "survey", "run_id": "manual__2026-03-01T12:00:00+00:00"},
            "task": {"task_id": "calibrate"},
            "taskInstance": {
                "try_number": try_number,
                "map_index": None if map_index < 0 else map_index,
            },
            "taskUuid": "01980000-0000-7000-8000-0000000000aa",
        },
        "processing_engine": {**FACET, "version": "3.3.2", "name": "Airflow"},
    }
    return run_event(
        event_type,
        "01980000-0000-7000-8000-0000000000aa",
        job="survey.calibrate",
        namespace="default",
        run_facets=facets,
        job_facets=job_type("AIRFLOW", "TASK"),
    )


def test_airflow_provider_events_land_on_dpts_own_airflow_ids(dpt_env):
    receive([airflow_task_event("START"), airflow_task_event("COMPLETE")])
    run_id = "manual__2026-03-01T12:00:00+00:00"
    task_uuid = dpt_core.invocation_uuid("airflow", "task", "survey", run_id, "calibrate", -1, 1)
    dag_run_uuid = dpt_core.invocation_uuid("airflow", "dag_run", "survey", run_id)
    runs = graph(engine())["runs"]
    assert set(runs) == {task_uuid, dag_run_uuid}
    assert runs[task_uuid][:4] == ("airflow", "survey", "calibrate", "success")
    assert runs[task_uuid][7] == dag_run_uuid
    assert runs[dag_run_uuid][:3] == ("airflow", "survey", None)
    params = dpt_env.scalar("SELECT parameters FROM invocations WHERE uuid = :u", u=task_uuid)
    params = json.loads(params) if isinstance(params, str) else params
    assert params["openlineage/run_id"] == "01980000-0000-7000-8000-0000000000aa"
    assert (
        dpt_env.scalar("SELECT external_id FROM invocations WHERE uuid = :u", u=dag_run_uuid)
        == run_id
    )


# --------------------------------------------------------------------------- redaction

SECRETS = (
    "AKIAQWERTYUIOPASDFGH",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "hunter2-db-password",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "s3cr3t-jvm-pass",
    "tok-9f8e7d6c5b4a",
)


def test_secrets_in_environment_facets_are_never_stored(dpt_backend, dpt_env):
    run_id = str(uuid.uuid4())
    env_facet = {
        **FACET,
        "fingerprint": "a" * 64,
        "python": "3.11.9",
        "implementation": "CPython",
        "platform": "Linux",
        "host": "worker-1",
        "user": "etl",
        "packages": {"numpy": "2.1.0"},
        "variables": {
            "AWS_SECRET_ACCESS_KEY": SECRETS[1],
            "LANG": "C.UTF-8",
            "PLAIN_LOOKING": SECRETS[3],
        },
        "redacted": ["DB_PASSWORD"],
        "facets": {},
    }
    facets = {
        "environmentVariables": {
            **FACET,
            "environmentVariables": [
                {"name": "AWS_ACCESS_KEY_ID", "value": SECRETS[0]},
                {"name": "DATABASE_URL", "value": f"postgresql://etl:{SECRETS[2]}@db/survey"},
                {
                    "name": "JAVA_OPTS",
                    "value": f"-Xmx2g -Djavax.net.ssl.trustStorePassword={SECRETS[4]}",
                },
                {"name": "SPARK_HOME", "value": "/opt/spark"},
            ],
        },
        "dpt_environment": env_facet,
        "errorMessage": {
            **FACET,
            "message": f"curl --token {SECRETS[5]} failed",
            "programmingLanguage": "python",
        },
        "executionParameters": {**FACET, "parameters": [{"key": "api_token", "value": SECRETS[5]}]},
    }
    source = dataset(
        "s3://lake",
        "in",
        dataSource={"name": "warehouse", "uri": f"postgresql://etl:{SECRETS[2]}@db/survey"},
    )
    receive(run_event("FAIL", run_id, run_facets=facets, inputs=[source]))
    stored = json.dumps(table_dump(engine()))
    for secret in SECRETS:
        assert secret not in stored, secret
    variables = dpt_env.scalar("SELECT variables FROM invocations")
    variables = json.loads(variables) if isinstance(variables, str) else variables
    assert variables["SPARK_HOME"] == "/opt/spark"
    assert variables["AWS_ACCESS_KEY_ID"].startswith("<redacted:")
    assert variables["DATABASE_URL"] == "postgresql://etl:***@db/survey"
    env = environments(engine())
    (fingerprint,) = env
    assert fingerprint != "a" * 64  # what the sender claimed is not what is stored
    assert env[fingerprint]["variables"] == {
        "AWS_SECRET_ACCESS_KEY": "<redacted>",
        "DB_PASSWORD": "<redacted>",
        "LANG": "C.UTF-8",
        "PLAIN_LOOKING": "<redacted>",
    }


# --------------------------------------------------------------------------- other events


def test_static_events_are_accepted_and_record_nothing(dpt_env):
    static = [
        {
            "eventTime": T0.isoformat(),
            "producer": PRODUCER,
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
            "dataset": dataset("s3://lake", "raw"),
        },
        {
            "eventTime": T0.isoformat(),
            "producer": PRODUCER,
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
            "job": {"namespace": "dbt", "name": "model.x"},
            "inputs": [dataset("s3://lake", "raw")],
        },
    ]
    result = receive(static)
    assert (result.outcome, result.events, result.static, result.runs) == ("recorded", 2, 2, 0)
    assert table_dump(engine())["invocations"] == []


def test_a_dataset_that_names_no_product_costs_only_itself(dpt_env):
    run_id = str(uuid.uuid4())
    result = receive(
        run_event(
            "COMPLETE",
            run_id,
            inputs=[dataset("file", "relative/path.csv"), dataset("s3://lake", "ok")],
        )
    )
    assert len(result.warnings) == 1 and result.warnings[0].startswith("inputs[0]: ")
    assert "absolute path" in result.warnings[0]
    assert graph(engine())["products"] == ["s3://lake/ok"]


def test_events_that_cannot_be_recorded_now_are_spooled_then_replayed(
    dpt_env, monkeypatch, tmp_path
):
    from dpt_core.spool import Spool

    dead = "postgresql://postgres@127.0.0.1:9/unreachable"
    good = dpt_env.url
    run_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = life_of_a_run(run_id, parent_id)
    monkeypatch.setenv("DPT_DATABASE_URL", dead)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    assert receive(events).outcome == "spooled"
    monkeypatch.setenv("DPT_DATABASE_URL", good)
    dpt_core.plugin_api.reset()
    assert Spool(tmp_path / "spool", dead).replay(current_store().record) > 0
    spooled = graph(engine())
    fresh_state()
    receive(events)
    assert graph(engine()) == spooled


def test_a_disabled_tracker_records_nothing(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_DISABLED", "1")
    dpt_core.plugin_api.reset()
    assert receive(run_event("START", str(uuid.uuid4()))).outcome == "disabled"
    monkeypatch.delenv("DPT_DISABLED")
    dpt_core.plugin_api.reset()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 0


def test_task_names_come_back_from_dpts_job_names(dpt_env):
    """``job.task`` with jobType TASK: the parent's job name says where the task begins
    (task ids with dots), else the last dot does (jobs with dots)."""
    parent = str(uuid.uuid4())
    child, lone = str(uuid.uuid4()), str(uuid.uuid4())
    receive(
        [
            run_event(
                "START",
                child,
                job="survey.group.task",
                job_facets=job_type("AIRFLOW", "TASK"),
                run_facets=parent_facet(parent, "survey", namespace="dpt"),
            ),
            run_event("START", lone, job="run.py.track", job_facets=job_type("PYTHON", "TASK")),
        ]
    )
    runs = graph(engine())["runs"]
    assert runs[child][:3] == ("airflow", "survey", "group.task")
    assert runs[lone][:3] == ("python", "run.py", "track")
    assert runs[parent][:4] == ("unknown", "survey", None, "running")  # a placeholder
    receive(run_event("START", parent, job="survey", job_facets=job_type("AIRFLOW", "DAG")))
    assert graph(engine())["runs"][parent][:3] == ("airflow", "survey", None)


def test_copy_is_not_changed_by_parsing():
    event = run_event("START", str(uuid.uuid4()), inputs=[dataset("s3://b", "k", "1")])
    before = copy.deepcopy(event)
    parse_events(event)
    assert event == before
