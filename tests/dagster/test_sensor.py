"""The dpt sensor against a real Dagster instance: recorded rows, versions and lineage."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_survey_assets import (
    ASSETS,
    MANY,
    NIGHTLY_JOB,
    Pipeline,
    after_broken,
    broken,
    clean,
    cursor_of,
    many,
    nightly,
    pair,
    raw,
    reporter,
    season,
    summary,
)
from sqlalchemy.engine import make_url

import dpt_core
import dpt_dagster
from dpt_dagster import DagsterTranslator, version_uuid

EPHEMERAL_JOB = "__ephemeral_asset_job__"


def _params(row: object) -> dict[str, object]:
    value = row.parameters  # type: ignore[attr-defined]
    return json.loads(value) if isinstance(value, str) else dict(value)


def _metadata(row: object) -> dict[str, object]:
    value = row.metadata  # type: ignore[attr-defined]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def test_unpartitioned_chain(pipeline: Pipeline) -> None:
    run = pipeline.materialize([raw, clean, summary])
    assert run.success

    result = pipeline.tick()

    assert "recorded 3 materialisation(s), 1 finished run(s)" in result.skip_message
    assert "up to date" in result.skip_message
    state = cursor_of(result)
    assert state["materializations"] == pipeline.storage_id("summary", run.run_id)
    assert state["behind"] is False
    assert state["runs"]["RUN_SUCCESS"] > 0

    run_row = pipeline.invocation(None, run.run_id)
    assert (run_row.orchestrator, run_row.job, run_row.status) == (
        "dagster",
        EPHEMERAL_JOB,
        "success",
    )
    assert run_row.parent_id is None and run_row.error is None
    assert run_row.started_at is not None and run_row.ended_at is not None
    assert run_row.uuid == dpt_dagster.run_invocation_uuid(run.run_id)

    for task in ("raw", "clean", "summary"):
        row = pipeline.invocation(task, run.run_id)
        assert (row.orchestrator, row.job, row.status) == ("dagster", EPHEMERAL_JOB, "success")
        assert row.parent_id == run_row.id
        assert row.ended_at is not None
        assert row.environment_id is None  # recorded on behalf of the run, not by the sensor
        params = _params(row)
        assert params["asset_key"] == task and params["partition"] is None
        assert params["data_version"] and params["storage_id"] == pipeline.storage_id(
            task, run.run_id
        )
    assert pipeline.invocation("raw", run.run_id).code_version == "1"
    assert pipeline.invocation("clean", run.run_id).code_version is None

    raw_file = pipeline.data_dir / "raw.txt"
    [raw_version] = pipeline.versions("%/raw.txt")
    assert raw_version.content_hash == dpt_core.hash_file(raw_file)
    assert raw_version.uuid == version_uuid(
        run.run_id, dg.AssetKey("raw"), None, pipeline.storage_id("raw", run.run_id)
    )
    assert raw_version.produced_by_id == pipeline.invocation("raw", run.run_id).id
    meta = _metadata(raw_version)
    assert meta["rows"] == 3 and meta["dagster/run_id"] == run.run_id

    [summary_version] = pipeline.versions("dagster://asset/summary")
    assert summary_version.content_hash.startswith("dagster_data_version:")

    [clean_version] = pipeline.versions("%/clean.txt")
    clean_inv = pipeline.invocation("clean", run.run_id).id
    assert pipeline.parents_of(clean_version.uuid) == [
        (
            "dagster://asset/catalog",
            pipeline.versions("dagster://asset/catalog")[0].uuid,
            clean_inv,
        ),
        (raw_version.uri, raw_version.uuid, clean_inv),
    ]
    summary_inv = pipeline.invocation("summary", run.run_id).id
    assert pipeline.parents_of(summary_version.uuid) == [
        (clean_version.uri, clean_version.uuid, summary_inv)
    ]
    assert pipeline.parents_of(raw_version.uuid) == []


def test_partitioned_assets_map_to_the_matching_partition(pipeline: Pipeline) -> None:
    night2 = pipeline.run_job("nightly_job", partition_key="2024-01-02")
    night3 = pipeline.run_job("nightly_job", partition_key="2024-01-03")
    fan_in = pipeline.materialize([nightly, season], selection=[season])
    assert night2.success and night3.success and fan_in.success

    result = pipeline.tick()
    assert "recorded 5 materialisation(s), 3 finished run(s)" in result.skip_message

    for run, night in ((night2, "2024-01-02"), (night3, "2024-01-03")):
        run_row = pipeline.invocation(None, run.run_id)
        assert (run_row.job, run_row.status) == ("nightly_job", "success")
        assert _params(run_row)["partition"] == night
        cal = pipeline.invocation("survey/calibrated", run.run_id)
        assert cal.job == "nightly_job" and cal.parent_id == run_row.id
        params = _params(cal)
        assert params["partition"] == night
        assert params["tags"]["dagster/partition"] == night

        [night_version] = pipeline.versions(f"%/nights/{night}.txt")
        [cal_version] = pipeline.versions(f"dagster://asset/survey/calibrated/{night}")
        assert pipeline.parents_of(cal_version.uuid) == [
            (night_version.uri, night_version.uuid, cal.id)
        ]

    [season_version] = pipeline.versions("dagster://asset/survey/season")
    season_inv = pipeline.invocation("survey/season", fan_in.run_id).id
    nights = [pipeline.versions(f"%/nights/{n}.txt")[0] for n in ("2024-01-02", "2024-01-03")]
    assert pipeline.parents_of(season_version.uuid) == [(v.uri, v.uuid, season_inv) for v in nights]
    # Nights never made are not inputs.
    assert pipeline.versions("%2024-01-01%") == []


def test_failing_asset(pipeline: Pipeline) -> None:
    run = pipeline.materialize([raw, broken, after_broken])
    assert not run.success

    result = pipeline.tick()
    assert "recorded 1 materialisation(s), 1 finished run(s)" in result.skip_message
    assert "2 unmaterialised planned asset(s)" in result.skip_message

    run_row = pipeline.invocation(None, run.run_id)
    assert run_row.status == "failed"
    assert "Steps failed: ['broken']" in run_row.error
    assert "ValueError: boom: bad calibration" in run_row.error
    assert run_row.ended_at is not None

    failed = pipeline.invocation("broken", run.run_id)
    assert failed.status == "failed" and failed.parent_id == run_row.id
    assert failed.error == 'step "broken" failed: ValueError: boom: bad calibration'
    skipped = pipeline.invocation("after_broken", run.run_id)
    assert skipped.status == "skipped" and "not materialised" in skipped.error
    assert pipeline.invocation("raw", run.run_id).status == "success"
    # No product for what was not made.
    assert pipeline.versions("dagster://asset/broken") == []


def test_cancelled_run(pipeline: Pipeline) -> None:
    job = pipeline.defs.resolve_job_def("nightly_job")
    run = pipeline.instance.create_run_for_job(
        job_def=job, tags={"dagster/partition": "2024-01-04"}
    )
    pipeline.instance.report_run_canceled(run, message="stopped by the operator")

    result = pipeline.tick()

    assert "recorded 0 materialisation(s), 1 finished run(s)" in result.skip_message
    assert cursor_of(result)["runs"]["RUN_CANCELED"] > 0
    run_row = pipeline.invocation(None, run.run_id)
    assert (run_row.job, run_row.status) == ("nightly_job", "cancelled")
    assert run_row.error == "stopped by the operator"
    assert run_row.started_at is not None and run_row.ended_at is not None
    for task in ("survey/nightly", "survey/calibrated"):
        row = pipeline.invocation(task, run.run_id)
        assert (row.status, row.parent_id) == ("cancelled", run_row.id)
        assert "cancelled" in row.error


def test_multi_asset(pipeline: Pipeline) -> None:
    first = pipeline.materialize([raw])
    second = pipeline.materialize([raw, pair], selection=[pair])
    assert first.success and second.success

    result = pipeline.tick()
    assert "recorded 3 materialisation(s), 2 finished run(s)" in result.skip_message

    run_row = pipeline.invocation(None, second.run_id)
    left = pipeline.invocation("left", second.run_id)
    right = pipeline.invocation("right", second.run_id)
    assert left.uuid != right.uuid
    assert left.parent_id == right.parent_id == run_row.id
    assert _params(left)["step_key"] == _params(right)["step_key"] == "pair"

    [left_version] = pipeline.versions("%/left.txt")
    assert left_version.produced_by_id == left.id
    assert pipeline.parents_of(left_version.uuid) == []
    [right_version] = pipeline.versions("dagster://asset/right")
    [raw_version] = pipeline.versions("%/raw.txt")
    assert raw_version.uuid == version_uuid(
        first.run_id, dg.AssetKey("raw"), None, pipeline.storage_id("raw", first.run_id)
    )
    assert pipeline.parents_of(right_version.uuid) == [
        (raw_version.uri, raw_version.uuid, right.id)
    ]


def test_rematerialisation_links_the_exact_upstream_version(pipeline: Pipeline) -> None:
    first = pipeline.materialize([raw])
    consumer = pipeline.materialize([raw, clean], selection=[clean])
    second = pipeline.materialize([raw])
    assert first.success and consumer.success and second.success

    pipeline.tick()

    v1, v2 = pipeline.versions("%/raw.txt")
    assert v1.uuid == version_uuid(
        first.run_id, dg.AssetKey("raw"), None, pipeline.storage_id("raw", first.run_id)
    )
    assert v2.uuid == version_uuid(
        second.run_id, dg.AssetKey("raw"), None, pipeline.storage_id("raw", second.run_id)
    )
    # The file now holds the second content: the first version keeps its data version.
    assert v2.content_hash == dpt_core.hash_file(pipeline.data_dir / "raw.txt")
    assert v1.content_hash.startswith("dagster_data_version:")
    assert v1.produced_by_id == pipeline.invocation("raw", first.run_id).id
    assert v2.produced_by_id == pipeline.invocation("raw", second.run_id).id

    [clean_v1] = pipeline.versions("%/clean.txt")
    consumer_inv = pipeline.invocation("clean", consumer.run_id).id
    raw_parents = [p for p in pipeline.parents_of(clean_v1.uuid) if p[0].endswith("raw.txt")]
    assert raw_parents == [(v1.uri, v1.uuid, consumer_inv)]

    again = pipeline.materialize([raw, clean], selection=[clean])
    result = pipeline.tick(cursor=None)  # a reset cursor re-reads everything
    assert "recorded 4 materialisation(s), 4 finished run(s)" in result.skip_message
    clean_versions = pipeline.versions("%/clean.txt")
    assert len(clean_versions) == 2
    again_inv = pipeline.invocation("clean", again.run_id).id
    raw_parents = [
        p for p in pipeline.parents_of(clean_versions[1].uuid) if p[0].endswith("raw.txt")
    ]
    assert raw_parents == [(v2.uri, v2.uuid, again_inv)]


def test_reset_cursor_and_a_second_sensor_duplicate_nothing(pipeline: Pipeline) -> None:
    pipeline.materialize([raw, clean, summary])
    pipeline.materialize([raw, broken, after_broken])
    pipeline.run_job("nightly_job", partition_key="2024-01-05")

    first = pipeline.tick()
    counts = pipeline.counts()
    assert counts["invocations"] == 3 + 5 + 3  # runs + materialisations + unmaterialised
    edges = pipeline.db.rows("SELECT * FROM lineage_edges ORDER BY 1, 2")

    quiet = pipeline.tick(cursor=first.cursor)
    assert "recorded 0 materialisation(s), 0 finished run(s)" in quiet.skip_message
    assert cursor_of(quiet)["materializations"] == cursor_of(first)["materializations"]

    pipeline.tick(cursor=None)
    assert pipeline.counts() == counts

    other = dpt_dagster.dpt_asset_sensor(name="dpt_tracker_again", batch_size=2)
    defs = dg.Definitions(
        assets=ASSETS, jobs=[NIGHTLY_JOB], sensors=[other], resources=pipeline.resources
    )
    cursor = None
    for _ in range(10):
        result = pipeline.tick(cursor=cursor, sensor=other, defs=defs)
        cursor = result.cursor
        if not cursor_of(result)["behind"]:
            break
    assert pipeline.counts() == counts
    assert pipeline.db.rows("SELECT * FROM lineage_edges ORDER BY 1, 2") == edges


def test_a_backlog_catches_up_over_ticks(pipeline: Pipeline) -> None:
    run = pipeline.materialize([many])
    pipeline.materialize([raw])
    assert run.success
    sensor = dpt_dagster.dpt_asset_sensor(batch_size=5)

    messages, cursors = [], []
    cursor = None
    for _ in range(3):
        result = pipeline.tick(cursor=cursor, sensor=sensor)
        cursor = result.cursor
        messages.append(result.skip_message)
        cursors.append(cursor_of(result))

    assert "recorded 5 materialisation(s)" in messages[0] and "behind" in messages[0]
    assert "recorded 5 materialisation(s)" in messages[1] and "behind" in messages[1]
    assert "recorded 3 materialisation(s)" in messages[2] and "up to date" in messages[2]
    assert [c["behind"] for c in cursors] == [True, True, False]
    assert cursors[0]["lag_seconds"] >= 0 and cursors[2]["lag_seconds"] == 0
    positions = [c["materializations"] for c in cursors]
    assert positions == sorted(positions) and len(set(positions)) == 3

    tasks = pipeline.db.rows(
        "SELECT task, COUNT(*) FROM invocations WHERE task IS NOT NULL GROUP BY task ORDER BY task"
    )
    assert [tuple(t) for t in tasks] == [(f"m{i:02d}", 1) for i in range(MANY)] + [("raw", 1)]
    assert pipeline.counts()["data_product_versions"] == MANY + 1


def test_a_tick_out_of_time_stops_at_the_last_event_recorded(pipeline: Pipeline) -> None:
    run = pipeline.materialize([raw, clean, summary])
    hasty = dpt_dagster.dpt_asset_sensor(time_budget_seconds=1e-9)

    messages, positions = [], []
    cursor = None
    for _ in range(6):
        result = pipeline.tick(cursor=cursor, sensor=hasty)
        cursor = result.cursor
        messages.append(result.skip_message)
        positions.append(cursor_of(result)["materializations"])

    # One event a tick: three materialisations, then the run, then nothing left.
    assert [m.split(";")[0] for m in messages[:4]] == [
        "dpt recorded 1 materialisation(s), 0 finished run(s)",
        "dpt recorded 1 materialisation(s), 0 finished run(s)",
        "dpt recorded 1 materialisation(s), 0 finished run(s)",
        "dpt recorded 0 materialisation(s), 1 finished run(s)",
    ]
    assert "ran out of time" in messages[0] and "up to date" in messages[3]
    assert positions[:3] == [
        pipeline.storage_id(t, run.run_id) for t in ("raw", "clean", "summary")
    ]
    assert pipeline.invocation(None, run.run_id).status == "success"
    assert pipeline.counts()["invocations"] == 4
    assert len(pipeline.db.rows("SELECT * FROM lineage_edges")) == 3


def test_a_tracking_error_is_logged_and_the_sensor_moves_on(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Picky(DagsterTranslator):
        def get_task(self, asset_key):  # type: ignore[no-untyped-def]
            if asset_key == dg.AssetKey("clean"):
                raise RuntimeError("cannot translate clean")
            return super().get_task(asset_key)

    run = pipeline.materialize([raw, clean, summary])
    sensor = dpt_dagster.dpt_asset_sensor(translator=Picky())

    result = pipeline.tick(sensor=sensor)
    assert "recorded 2 materialisation(s)" in result.skip_message
    assert "1 tracking error(s) logged and skipped" in result.skip_message
    assert "cannot translate clean" in caplog.text
    assert cursor_of(result)["materializations"] == pipeline.storage_id("summary", run.run_id)
    tasks = {r.task for r in pipeline.db.rows("SELECT task FROM invocations")}
    assert tasks == {None, "raw", "summary"}

    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    with pytest.raises(Exception) as raised:
        pipeline.tick(sensor=sensor)
    chain, error = [], raised.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    assert any(isinstance(e, dpt_core.TrackingError) for e in chain)


def test_a_translator_override_that_raises_costs_only_its_field(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """A descriptive method (not one naming the product) that raises: dpt's default
    answers instead, the materialisation is recorded, the failure logged once."""

    class NoParameters(DagsterTranslator):
        def get_parameters(self, materialization, run):  # type: ignore[no-untyped-def]
            raise RuntimeError("translator bug in get_parameters")

    run = pipeline.materialize([raw, clean, summary])
    with caplog.at_level(logging.WARNING, logger="dpt.dagster"):
        result = pipeline.tick(sensor=dpt_dagster.dpt_asset_sensor(translator=NoParameters()))
    assert "recorded 3 materialisation(s)" in result.skip_message
    assert "tracking error" not in result.skip_message
    warnings = [r.getMessage() for r in caplog.records if "get_parameters" in r.getMessage()]
    assert len(warnings) == 1 and "translator bug in get_parameters" in warnings[0]
    tasks = {r.task for r in pipeline.db.rows("SELECT task FROM invocations")}
    assert tasks == {None, "raw", "clean", "summary"}
    [row] = pipeline.db.rows("SELECT parameters FROM invocations WHERE task = 'clean'")
    parameters = json.loads(row.parameters) if isinstance(row.parameters, str) else row.parameters
    # the default parameters
    assert parameters["asset_key"] == "clean"
    assert parameters["storage_id"] == pipeline.storage_id("clean", run.run_id)


@pytest.mark.postgres
def test_an_unreachable_database_spools_and_the_sensor_moves_on(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events the database refused wait for *that* database, and replay there only."""
    from dpt_core.testing import POSTGRES_URL, require_server, server_url

    require_server(POSTGRES_URL)
    # Each write on the sensor's thread, as the outage tests of the core do: the background
    # writer would leave the replay to its probe, seconds later.
    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    name = f"dpt_later_{uuid.uuid4().hex[:10]}"
    later = server_url(POSTGRES_URL, name)
    sqlite_url = pipeline.db.url
    admin = sa.create_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    try:
        first = pipeline.materialize([raw, clean])
        monkeypatch.setenv("DPT_DATABASE_URL", later)  # a database that does not exist yet
        dpt_core.plugin_api.reset()
        result = pipeline.tick()

        assert "recorded 2 materialisation(s), 1 finished run(s)" in result.skip_message
        assert cursor_of(result)["materializations"] == pipeline.storage_id("clean", first.run_id)
        assert [f for f in (pipeline.db.path / "spool").rglob("*") if f.is_file()]

        # Another database's next write does not take them.
        monkeypatch.setenv("DPT_DATABASE_URL", sqlite_url)
        dpt_core.plugin_api.reset()
        second = pipeline.materialize([raw])
        result = pipeline.tick(cursor=result.cursor)
        assert (
            pipeline.db.scalar(
                "SELECT COUNT(*) FROM invocations WHERE external_id = :r", r=first.run_id
            )
            == 0
        )
        assert pipeline.invocation(None, second.run_id).status == "success"

        # The database comes up: its first write replays the spool into it, in order.
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        env = {**os.environ, "DPT_DATABASE_URL": later}
        done = subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        monkeypatch.setenv("DPT_DATABASE_URL", later)
        dpt_core.plugin_api.reset()
        third = pipeline.materialize([raw])
        pipeline.tick(cursor=result.cursor)

        engine = sa.create_engine(make_url(later).set(drivername="postgresql+psycopg"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT external_id, task, status, parent_id, id FROM invocations "
                        "ORDER BY id"
                    )
                ).all()
                edges = conn.execute(
                    sa.text(
                        "SELECT p.uri FROM lineage_edges e "
                        "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
                        "JOIN data_products p ON p.id = pv.product_id"
                    )
                ).all()
        finally:
            engine.dispose()
        by_run = {(r.external_id, r.task): r for r in rows}
        assert set(by_run) == {
            (first.run_id, None),
            (first.run_id, "raw"),
            (first.run_id, "clean"),
            (third.run_id, None),
            (third.run_id, "raw"),
        }
        assert all(r.status == "success" for r in rows)
        assert by_run[(first.run_id, "clean")].parent_id == by_run[(first.run_id, None)].id
        assert sorted(e.uri.rsplit("/", 1)[-1] for e in edges) == ["catalog", "raw.txt"]
    finally:
        dpt_core.plugin_api.reset()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_disabled_records_nothing_and_keeps_the_cursor(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.materialize([raw])
    monkeypatch.setenv("DPT_DISABLED", "1")
    dpt_core.plugin_api.reset()

    result = pipeline.tick(cursor=None)

    assert "dpt is disabled" in result.skip_message
    assert result.cursor is None
    monkeypatch.delenv("DPT_DISABLED")
    dpt_core.plugin_api.reset()
    assert pipeline.counts()["invocations"] == 0


def test_dpt_calls_inside_an_asset_join_its_materialisation(pipeline: Pipeline) -> None:
    run = pipeline.materialize([reporter])
    assert run.success

    # Before any tick: the asset opened its invocation itself, with its environment.
    row = pipeline.invocation("reporter", run.run_id)
    assert row.status == "running" and row.environment_id is not None
    run_row = pipeline.invocation(None, run.run_id)
    assert row.parent_id == run_row.id
    assert run_row.job == "__ephemeral_asset_job__" and run_row.parent_id is None

    pipeline.tick()

    row = pipeline.invocation("reporter", run.run_id)
    assert row.status == "success" and row.ended_at is not None
    produced = pipeline.db.rows(
        "SELECT p.uri FROM data_product_versions v JOIN data_products p ON p.id = v.product_id "
        "WHERE v.produced_by_id = :i ORDER BY p.uri",
        i=row.id,
    )
    assert [r.uri.rsplit("/", 1)[-1] for r in produced] == ["report-extra.txt", "report.txt"]


def test_the_one_line_set_up() -> None:
    sensor = dpt_dagster.dpt_asset_sensor()
    defs = dg.Definitions(assets=[summary], sensors=[sensor])
    found = defs.resolve_sensor_def("dpt_tracker")
    assert found.default_status == dg.DefaultSensorStatus.RUNNING
    assert found.minimum_interval_seconds == 30
    stopped = dpt_dagster.dpt_asset_sensor(
        name="dpt_slow", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED
    )
    assert (stopped.name, stopped.minimum_interval_seconds) == ("dpt_slow", 300)
    assert stopped.default_status == dg.DefaultSensorStatus.STOPPED
    with pytest.raises(ValueError, match="batch_size"):
        dpt_dagster.dpt_asset_sensor(batch_size=0)


def test_asset_keys_resolve_to_dagster_uris(dpt_env: object) -> None:
    tracker = dpt_core.get_tracker()
    assert tracker.resolve(dg.AssetKey(["survey", "nightly"])) == "dagster://asset/survey/nightly"
    assert tracker.resolve(raw) == "dagster://asset/raw"
    translator = DagsterTranslator()
    assert (
        translator.get_asset_uri(dg.AssetKey(["a b", "c"]), "2024/01|x")
        == "dagster://asset/a%20b/c/2024%2F01%7Cx"
    )


def test_cursor_round_trip_and_an_unreadable_cursor() -> None:
    from dpt_dagster import SensorCursor

    cursor = SensorCursor(materializations=42, runs={"RUN_SUCCESS": 7}, behind=True, lag_seconds=3)
    assert SensorCursor.parse(cursor.dumps()) == cursor
    assert SensorCursor.parse("not a dpt cursor") == SensorCursor()
    assert SensorCursor.parse(None) == SensorCursor()
