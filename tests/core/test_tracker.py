"""The Tracker API, end to end on a real database."""

from __future__ import annotations

import json

import pytest

import dpt_core


def runs(env):
    return env.rows(
        "SELECT id, uuid, job, task, status, parent_id, error, parameters FROM invocations ORDER BY id"
    )


def edges(env):
    return sorted(
        (r.parent, r.child)
        for r in env.rows(
            "SELECT pp.uri AS parent, cp.uri AS child FROM lineage_edges e "
            "JOIN data_product_versions pv ON pv.id = e.parent_version_id JOIN data_products pp ON pp.id = pv.product_id "
            "JOIN data_product_versions cv ON cv.id = e.child_version_id JOIN data_products cp ON cp.id = cv.product_id"
        )
    )


def params(row):
    value = row.parameters
    return json.loads(value) if isinstance(value, str) else value


def test_invocation_records_inputs_outputs_and_lineage(dpt_backend, dpt_env, tmp_path):
    raw, flat, cal = tmp_path / "raw.fits", tmp_path / "flat.fits", tmp_path / "cal.fits"
    raw.write_bytes(b"raw")
    flat.write_bytes(b"flat")
    with dpt_core.invocation("calibrate", parameters={"gain": 1.5, "when": object()}) as inv:
        inv.read(raw, flat)
        cal.write_bytes(b"cal")
        inv.write(cal)
    (row,) = runs(dpt_env)
    assert (row.job, row.status, row.error) == ("calibrate", "success", None)
    assert params(row)["gain"] == 1.5 and params(row)["when"].startswith("<object object")
    assert edges(dpt_env) == sorted([(raw.as_uri(), cal.as_uri()), (flat.as_uri(), cal.as_uri())])
    h = dpt_env.scalar(
        "SELECT content_hash FROM data_product_versions v JOIN data_products p ON p.id = v.product_id WHERE p.uri = :u",
        u=cal.as_uri(),
    )
    assert h == dpt_core.hash_file(cal)


def test_failed_block_records_failed_with_error_and_reraises(dpt_env):
    with pytest.raises(ZeroDivisionError), dpt_core.invocation("divide"):
        1 / 0  # noqa: B018
    (row,) = runs(dpt_env)
    assert row.status == "failed" and "ZeroDivisionError" in row.error


def test_nested_invocations_get_a_parent_and_track_joins_the_current_one(dpt_env, tmp_path):
    out = tmp_path / "lc.fits"
    out.write_bytes(b"lc")
    with dpt_core.invocation("flow") as outer, dpt_core.invocation("step") as inner:
        dpt_core.track(out)
    flow, step = runs(dpt_env)
    assert step.parent_id == flow.id and flow.parent_id is None
    producer = dpt_env.scalar(
        "SELECT i.uuid FROM data_product_versions v JOIN invocations i ON i.id = v.produced_by_id"
    )
    assert producer == inner.uuid != outer.uuid


def test_track_outside_any_invocation_opens_a_one_off_invocation(dpt_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    dpt_core.track(b, parents=[a])
    (row,) = runs(dpt_env)
    assert row.task == "track" and row.status == "success"
    assert edges(dpt_env) == [(a.as_uri(), b.as_uri())]


def test_explicit_parents_win_and_unread_parents_become_inputs(dpt_env, tmp_path):
    a, b, x, y = (tmp_path / n for n in "abxy")
    for p in (a, b, x, y):
        p.write_text(p.name)
    with dpt_core.invocation("j") as inv:
        inv.read(a, b)
        inv.write(x, parents=[a])
        inv.write(y)  # no parents: derives from every input
    assert edges(dpt_env) == sorted(
        [(a.as_uri(), x.as_uri()), (a.as_uri(), y.as_uri()), (b.as_uri(), y.as_uri())]
    )


def test_rewrites_make_new_versions_and_reads_link_to_the_current_one(dpt_env, tmp_path):
    f = tmp_path / "f"
    f.write_text("v1")
    dpt_core.track(f)
    f.write_text("v2 longer")
    dpt_core.track(f)
    with dpt_core.invocation("reader") as inv:
        inv.read(f)
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 2
    used = dpt_env.scalar(
        "SELECT v.content_hash FROM invocation_inputs ii JOIN data_product_versions v ON v.id = ii.version_id"
    )
    assert used == dpt_core.hash_file(f)


def test_many_outputs_are_one_batch(dpt_env, tmp_path):
    files = []
    for i in range(300):
        p = tmp_path / f"o{i}"
        p.write_text(str(i))
        files.append(p)
    calls = []
    tracker = dpt_core.get_tracker()
    original = tracker._emit

    def spy(hook, event):
        calls.append(hook)
        original(hook, event)

    tracker._emit = spy  # type: ignore[method-assign]
    with tracker.invocation("batch") as inv:
        inv.write(*files)
    assert calls.count("dpt_products_written") == 1
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 300


def test_disabled_records_nothing(dpt_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DPT_DISABLED", "1")
    dpt_core.plugin_api.reset()
    f = tmp_path / "f"
    f.write_text("x")
    with dpt_core.invocation("j") as inv:
        inv.write(f)
    dpt_core.track(f)
    monkeypatch.delenv("DPT_DISABLED")
    dpt_core.plugin_api.reset()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 0


def test_unresolvable_target_is_swallowed_normally_and_raised_in_strict_mode(
    dpt_env, monkeypatch, caplog
):
    with dpt_core.invocation("j") as inv:
        assert inv.write(object()) == []
    assert "not a path or URI" in caplog.text
    assert runs(dpt_env)[0].status == "success"
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    with (
        pytest.raises(dpt_core.InvalidTarget, match="not a path or URI"),
        dpt_core.invocation("k") as inv,
    ):
        inv.write(object())


def test_idempotent_start_with_stable_uuid(dpt_env):
    tracker = dpt_core.get_tracker()
    uid = dpt_core.invocation_uuid("airflow", "dag", "run-1")
    assert uid == dpt_core.invocation_uuid("airflow", "dag", "run-1")
    tracker.start("dag", uuid=uid, orchestrator="airflow")
    tracker.start("dag", uuid=uid, orchestrator="airflow")
    tracker.attach(uid).finish("failed", error="task x failed")
    (row,) = runs(dpt_env)
    assert (row.uuid, row.status, row.error) == (uid, "failed", "task x failed")


def test_a_start_with_the_outcome_closes_the_running_invocation_with_that_uuid(
    dpt_backend, dpt_env
):
    """An adapter may record, from outside, a step that opened itself from inside."""
    import datetime as dt

    tracker = dpt_core.get_tracker()
    uid = dpt_core.invocation_uuid("dagster", "run-1", "asset")
    tracker.start("job", uuid=uid, orchestrator="dagster")  # from inside the asset
    ended = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    for _ in range(2):  # the sensor's record, then a replay of it
        tracker.start(
            "job",
            uuid=uid,
            orchestrator="dagster",
            status="success",
            ended_at=ended,
            environment=False,
        )
    (row,) = runs(dpt_env)
    assert (row.uuid, row.status, row.error) == (uid, "success", None)
    assert str(dpt_env.scalar("SELECT ended_at FROM invocations")).startswith("2026-01-01 12")
    # a plain (running) start of a known uuid changes nothing
    tracker.start("job", uuid=uid, orchestrator="dagster")
    assert dpt_env.scalar("SELECT status FROM invocations") == "success"


def test_current_context_hook_lets_plugins_name_the_running_invocation(dpt_env, tmp_path):
    tracker = dpt_core.get_tracker()
    task = tracker.start("dag", task="t1", orchestrator="airflow")

    class FakeOrchestrator:
        @dpt_core.hookimpl
        def dpt_current_context(self):
            return dpt_core.plugin_api.CurrentContext(invocation_uuid=task.uuid)

    plugin = FakeOrchestrator()
    tracker.pm.register(plugin, name="fake-orchestrator")
    try:
        f = tmp_path / "out"
        f.write_text("o")
        dpt_core.track(f)
    finally:
        tracker.pm.unregister(plugin)
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 1
    assert dpt_env.scalar("SELECT produced_by_id FROM data_product_versions") == runs(dpt_env)[0].id


def test_environment_is_one_row_for_many_invocations(dpt_env):
    for i in range(5):
        with dpt_core.invocation(f"j{i}"):
            pass
    assert dpt_env.scalar("SELECT COUNT(DISTINCT environment_id) FROM invocations") == 1
    assert dpt_env.scalar("SELECT COUNT(*) FROM environments") == 1
    assert dpt_env.scalar("SELECT COUNT(*) FROM environment_distributions") > 5


def test_an_output_named_as_a_parent_before_it_is_written_is_one_version(
    dpt_backend, dpt_env, tmp_path
):
    summary, log = tmp_path / "summary.json", tmp_path / "b.log"
    summary.write_text("{}")
    log.write_text("log")
    tracker = dpt_core.get_tracker()
    task = tracker.start("dag", task="summarise", orchestrator="airflow")
    with tracker.activate(task):
        dpt_core.track(log, parents=[summary])  # task code: the log derives from the task's outlet
    task.write(summary)  # the listener records the outlet when the task succeeds
    task.finish("success")
    rows = dpt_env.rows(
        "SELECT p.uri, v.produced_by_id FROM data_product_versions v JOIN data_products p ON p.id = v.product_id ORDER BY p.uri"
    )
    assert [(r.uri, r.produced_by_id is not None) for r in rows] == [
        (log.as_uri(), True),
        (summary.as_uri(), True),
    ]
    assert edges(dpt_env) == [(summary.as_uri(), log.as_uri())]
    # the same invocation writing the same content again is still that one version
    tracker.attach(task.uuid).write(summary)
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 2


def test_path_like_objects_are_offered_to_plugins_first(dpt_env):
    class AssetLike:
        def __fspath__(self):
            return "relative/name"

    class Resolver:
        @dpt_core.hookimpl
        def dpt_resolve_uri(self, target):
            return "airflow://asset/x" if isinstance(target, AssetLike) else None

    tracker = dpt_core.get_tracker()
    plugin = Resolver()
    tracker.pm.register(plugin, name="asset-resolver")
    try:
        assert dpt_core.track(AssetLike()) == ["airflow://asset/x"]
    finally:
        tracker.pm.unregister(plugin)


def test_a_hash_plugin_hashes_remote_objects_and_a_given_hash_wins(dpt_env, tmp_path):
    class ETags:
        @dpt_core.hookimpl
        def dpt_hash(self, uri, path):
            return "etag:" + uri.rsplit("/", 1)[1] if uri.startswith("s3://") else None

    local = tmp_path / "local.txt"
    local.write_text("x")
    tracker = dpt_core.get_tracker()
    plugin = ETags()
    tracker.pm.register(plugin, name="etags")
    try:
        with tracker.invocation("j") as inv:
            inv.read("s3://bucket/abc", local)
            inv.write(dpt_core.ProductRef("s3://bucket/out", content_hash="md5:" + "0" * 32))
    finally:
        tracker.pm.unregister(plugin)
    with tracker.invocation("k") as inv:  # no plugin: a remote object has no hash
        inv.read("s3://bucket/def")
    hashes = dict(
        dpt_env.rows(
            "SELECT p.uri, v.content_hash FROM data_product_versions v "
            "JOIN data_products p ON p.id = v.product_id"
        )
    )
    assert hashes["s3://bucket/abc"] == "etag:abc"
    assert hashes["s3://bucket/out"] == "md5:" + "0" * 32
    assert hashes["s3://bucket/def"] is None
    assert hashes[local.as_uri()].startswith("xxh3_128:")  # the core hashed the local file


def test_parent_false_means_no_parent_even_inside_an_invocation(dpt_env):
    tracker = dpt_core.get_tracker()
    with tracker.invocation("outer"):
        tracker.start("dag-run", parent=False).finish("success")
    assert {r.job: r.parent_id for r in runs(dpt_env)}["dag-run"] is None


def test_batch_records_many_invocations_in_one_transaction(dpt_backend, dpt_env, monkeypatch):
    import datetime as dt

    from dpt_core.store.recorder import Recorder

    transactions = []
    original = Recorder.record

    def counting(self, events, **kwargs):
        transactions.append(len(events))
        return original(self, events, **kwargs)

    monkeypatch.setattr(Recorder, "record", counting)
    tracker = dpt_core.get_tracker()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with tracker.batch():
        parent = tracker.start("job", orchestrator="dagster", environment=False)
        for i in range(20):
            h = tracker.start(
                "job",
                task=f"asset{i}",
                parent=parent,
                started_at=t0,
                status="success",
                ended_at=t0 + dt.timedelta(seconds=i),
                environment=False,
            )
            h.write(f"dagster://asset/a{i}")
        with tracker.batch():  # nested batches join the outer one
            tracker.start(
                "job",
                task="failed",
                parent=parent,
                status="failed",
                error=RuntimeError("boom"),
                environment=False,
            )
        parent.finish("failed", error="1 step failed")
    dpt_core.flush()  # the background writer counts on its own thread
    assert transactions == [1 + 20 * 2 + 1 + 1]
    rows = runs(dpt_env)
    assert len(rows) == 22
    assert {r.status for r in rows if r.task and r.task.startswith("asset")} == {"success"}
    failed = [r for r in rows if r.task == "failed"][0]
    assert failed.error == "RuntimeError: boom" and failed.parent_id == rows[0].id
    ended = dpt_env.scalar("SELECT ended_at FROM invocations WHERE task = 'asset3'")
    assert ended is not None and str(ended).startswith("2026-01-01")
