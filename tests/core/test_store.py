"""The store test suite: the same tests on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from dpt_core.events import (
    EnvironmentSnapshot,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.store import migrations
from dpt_core.store.bulk import BulkRecorder
from dpt_core.store.engine import make_engine
from dpt_core.store.models import Distribution
from dpt_core.store.upsert import in_transaction, insert_ignore
from dpt_core.testing import empty_tracking


def env_snapshot(fingerprint: str = "f" * 64, **changes) -> EnvironmentSnapshot:
    data = dict(
        fingerprint=fingerprint,
        python_version="3.11.7",
        implementation="CPython",
        platform="Linux",
        hostname="host1",
        user="astro",
        distributions=(("numpy", "2.1.0"), ("astropy", "7.0")),
        variables=(("HOME", "/home/astro", None), ("API_TOKEN", None, "hmac-sha256:abc")),
        facets={"git": {"commit": "abc"}},
    )
    data.update(changes)
    return EnvironmentSnapshot(**data)


def obs(uri: str, h: str | None = "xxh3_128:01", parents=None, vid=None) -> ProductObservation:
    return ProductObservation(
        uri=uri,
        version_uuid=vid or str(uuid.uuid4()),
        content_hash=h,
        size=1,
        mtime=1.0,
        parents=parents,
    )


@pytest.fixture
def recorder(dpt_backend):
    engine = make_engine(dpt_backend)
    yield BulkRecorder(engine)
    engine.dispose()


def count(engine, table: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_schema_is_at_head_and_models_agree(recorder):
    assert migrations.current(recorder.engine) == migrations.HEAD
    assert migrations.diff(recorder.engine) == []


def test_single_head_matches_code_constant():
    assert migrations.heads() == [migrations.HEAD]
    assert migrations.HEAD in migrations.KNOWN_REVISIONS


def test_invocation_lifecycle_is_recorded(recorder):
    inv = str(uuid.uuid4())
    recorder.record(
        [
            InvocationStarted(
                uuid=inv,
                orchestrator="python",
                job="calibrate",
                parameters={"gain": 1.5},
                environment=env_snapshot(),
            )
        ]
    )
    recorder.record([ProductsRead(inv, (obs("file:///data/raw.fits", "xxh3_128:aa"),))])
    recorder.record([ProductsWritten(inv, (obs("file:///data/cal.fits", "xxh3_128:bb"),))])
    recorder.record([InvocationFinished(inv, "success")])
    e = recorder.engine
    with e.connect() as conn:
        from sqlalchemy import text

        row = conn.execute(
            text("SELECT status, job, parameters, environment_id, ended_at FROM invocations")
        ).one()
        assert row.status == "success" and row.job == "calibrate" and row.ended_at is not None
        assert row.environment_id is not None
        edge = conn.execute(
            text(
                "SELECT pp.uri AS parent, cp.uri AS child FROM lineage_edges e "
                "JOIN data_product_versions pv ON pv.id = e.parent_version_id JOIN data_products pp ON pp.id = pv.product_id "
                "JOIN data_product_versions cv ON cv.id = e.child_version_id JOIN data_products cp ON cp.id = cv.product_id"
            )
        ).one()
    assert (edge.parent, edge.child) == ("file:///data/raw.fits", "file:///data/cal.fits")
    assert count(e, "environment_distributions") == 2
    assert count(e, "environment_variables") == 2


def test_recording_twice_equals_once(recorder):
    inv = str(uuid.uuid4())
    batch = [
        InvocationStarted(uuid=inv, orchestrator="python", job="j", environment=env_snapshot()),
        ProductsRead(
            inv, (obs("file:///a", "xxh3_128:aa", vid="11111111-1111-1111-1111-111111111111"),)
        ),
        ProductsWritten(
            inv, (obs("file:///b", "xxh3_128:bb", vid="22222222-2222-2222-2222-222222222222"),)
        ),
        InvocationFinished(inv, "failed", error="boom"),
    ]
    recorder.record(batch)
    before = {
        t: count(recorder.engine, t)
        for t in (
            "invocations",
            "data_products",
            "data_product_versions",
            "lineage_edges",
            "invocation_inputs",
            "environments",
            "distributions",
            "env_variables",
        )
    }
    recorder.record(batch)
    BulkRecorder(recorder.engine).record(batch)  # a fresh process: no cached environment id
    after = {t: count(recorder.engine, t) for t in before}
    assert before == after
    assert before["lineage_edges"] == 1 and before["data_product_versions"] == 2


def test_read_links_to_version_with_same_hash_and_new_hash_makes_new_version(recorder):
    writer, reader = str(uuid.uuid4()), str(uuid.uuid4())
    recorder.record([InvocationStarted(uuid=writer, orchestrator="python", job="w")])
    recorder.record([ProductsWritten(writer, (obs("file:///x", "xxh3_128:01"),))])
    recorder.record([InvocationStarted(uuid=reader, orchestrator="python", job="r")])
    recorder.record(
        [ProductsRead(reader, (obs("file:///x", "xxh3_128:01"), obs("file:///y", "xxh3_128:02")))]
    )
    assert count(recorder.engine, "data_product_versions") == 2  # x reused, y observed
    recorder.record([ProductsRead(reader, (obs("file:///x", "xxh3_128:99"),))])
    assert count(recorder.engine, "data_product_versions") == 3
    assert count(recorder.engine, "invocation_inputs") == 3


def test_reading_products_nobody_recorded_asks_for_no_versions_of_them(recorder):
    """Products the read itself creates have no versions: no lookup of their latest one
    where the insert says which rows it made (RETURNING: PostgreSQL, SQLite); a product
    already there, read in the same event, still links to its version."""
    from sqlalchemy import event

    writer, reader = str(uuid.uuid4()), str(uuid.uuid4())
    recorder.record([InvocationStarted(uuid=writer, orchestrator="python", job="w")])
    recorder.record([ProductsWritten(writer, (obs("file:///old", "xxh3_128:01"),))])
    recorder.record([InvocationStarted(uuid=reader, orchestrator="python", job="r")])
    grouped: list[str] = []
    by_uuid: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "GROUP BY" in statement.upper():
            grouped.append(statement)
        if "WHERE data_product_versions.uuid" in statement:
            by_uuid.append(statement)

    fresh = BulkRecorder(recorder.engine)  # no cached ids: everything is asked of the database
    event.listen(recorder.engine, "before_cursor_execute", record)
    try:
        fresh.record([ProductsRead(reader, tuple(obs(f"file:///new/{i}") for i in range(5)))])
        returning = recorder.engine.dialect.name != "mysql"
        assert len(grouped) == (0 if returning else 1)
        if returning:  # nor of their versions by uuid
            assert by_uuid == []
        fresh.record([ProductsRead(reader, (obs("file:///old", "xxh3_128:01"), obs("file:///n")))])
        assert len(grouped) == (1 if returning else 2)  # for the product that existed
        if returning:
            assert len(by_uuid) == 1
    finally:
        event.remove(recorder.engine, "before_cursor_execute", record)
    assert count(recorder.engine, "data_product_versions") == 7  # old reused, 6 new
    assert count(recorder.engine, "invocation_inputs") == 7


def test_implicit_parents_include_inputs_read_after_the_write(recorder):
    inv = str(uuid.uuid4())
    recorder.record([InvocationStarted(uuid=inv, orchestrator="python", job="j")])
    recorder.record(
        [
            ProductsWritten(
                inv,
                (
                    obs("file:///out", "xxh3_128:0f"),
                    obs("file:///explicit", "xxh3_128:0e", parents=()),
                ),
            )
        ]
    )
    recorder.record([ProductsRead(inv, (obs("file:///late-input", "xxh3_128:0a"),))])
    # the implicit output gets the late input; the output with explicit (empty) parents does not
    assert count(recorder.engine, "lineage_edges") == 1


def test_environment_variable_subset_is_a_different_environment(recorder):
    a = env_snapshot("a" * 64, variables=(("A", "1", None),))
    b = env_snapshot("b" * 64, variables=(("A", "1", None), ("B", "2", None)))
    for snap in (a, b):
        recorder.record(
            [
                InvocationStarted(
                    uuid=str(uuid.uuid4()), orchestrator="python", job="j", environment=snap
                )
            ]
        )
    assert count(recorder.engine, "environments") == 2
    assert count(recorder.engine, "env_variables") == 2  # A=1 shared


def test_huge_variables_and_long_uris_fit(recorder):
    huge = "x" * 70_000
    long_uri = "file:///" + "/".join(["d" * 200] * 20)
    inv = str(uuid.uuid4())
    recorder.record(
        [
            InvocationStarted(
                uuid=inv,
                orchestrator="python",
                job="j",
                environment=env_snapshot("c" * 64, variables=(("BIG", huge, None),)),
            )
        ]
    )
    recorder.record([ProductsWritten(inv, (obs(long_uri),))])
    from sqlalchemy import text

    with recorder.engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM env_variables")).scalar_one() == huge
        assert conn.execute(text("SELECT uri FROM data_products")).scalar_one() == long_uri


def test_writer_adopts_version_a_reader_saw_first(recorder):
    vid = str(uuid.uuid4())
    producer, consumer = str(uuid.uuid4()), str(uuid.uuid4())
    recorder.record([ProductsRead(consumer, (obs("dagster://asset/a", None, vid=vid),))])
    recorder.record([InvocationStarted(uuid=producer, orchestrator="dagster", job="j")])
    written = ProductObservation(
        uri="dagster://asset/a",
        version_uuid=vid,
        content_hash="dagster:v1",
        metadata={"rows": 3},
        parents=(),
    )
    recorder.record([ProductsWritten(producer, (written,))])
    from sqlalchemy import text

    with recorder.engine.connect() as conn:
        producer_id = conn.execute(
            text("SELECT id FROM invocations WHERE uuid = :u"), {"u": producer}
        ).scalar_one()
        row = conn.execute(
            text(
                "SELECT produced_by_id, content_hash, metadata, explicit_parents FROM data_product_versions"
            )
        ).one()
    assert (
        row.produced_by_id == producer_id
        and row.content_hash == "dagster:v1"
        and bool(row.explicit_parents)
    )
    assert (json.loads(row.metadata) if isinstance(row.metadata, str) else row.metadata) == {
        "rows": 3
    }


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["numpy", "astropy", "scipy", "Numba"]),
        st.sampled_from(["1.0", "2.0", "2.1.0"]),
    ),
    max_size=30,
)


@given(rows=rows_strategy, split=st.integers(0, 30))
def test_upsert_any_multiset_from_two_connections_yields_distinct_rows(recorder, rows, split):
    table = Distribution.__table__
    with recorder.engine.begin() as conn:
        conn.execute(table.delete())
    halves = [rows[:split], rows[split:]]
    errors: list[BaseException] = []

    def worker(part):
        def work(conn):
            insert_ignore(
                conn, table, [{"name": n, "version": v} for n, v in part], ["name", "version"]
            )
            insert_ignore(
                conn,
                table,
                [{"name": n, "version": v} for n, v in reversed(part)],
                ["name", "version"],
            )

        try:
            in_transaction(recorder.engine, work)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with recorder.engine.connect() as conn:
        stored = sorted(tuple(r) for r in conn.execute(select(table.c.name, table.c.version)))
    assert stored == sorted(set(rows))


def test_migration_round_trip_with_rows_present(recorder):
    inv = str(uuid.uuid4())
    recorder.record(
        [InvocationStarted(uuid=inv, orchestrator="python", job="j", environment=env_snapshot())]
    )
    recorder.record([ProductsWritten(inv, (obs("file:///k"),))])
    migrations.downgrade(recorder.engine, "base")
    assert migrations.current(recorder.engine) is None
    migrations.upgrade(recorder.engine)
    assert migrations.current(recorder.engine) == migrations.HEAD
    assert migrations.diff(recorder.engine) == []
    recorder._environment_ids.clear()
    recorder.record(
        [InvocationStarted(uuid=inv, orchestrator="python", job="j", environment=env_snapshot())]
    )
    assert count(recorder.engine, "invocations") == 1


def test_cached_ids_of_rows_that_vanished_are_looked_up_again(recorder):
    """The recorder caches product and version ids; if the database is emptied under a
    running process, its next batch still lands whole instead of failing on a stale id."""
    from sqlalchemy import text

    def batch(tag: str) -> list:
        writer, reader = str(uuid.uuid4()), str(uuid.uuid4())
        made = "33333333-3333-3333-3333-333333333333"
        return [
            InvocationStarted(uuid=writer, orchestrator="python", job=f"make-{tag}"),
            ProductsWritten(writer, (obs("file:///made", "xxh3_128:cc", vid=made),)),
            InvocationStarted(uuid=reader, orchestrator="python", job=f"use-{tag}"),
            ProductsRead(reader, (obs("file:///made", "xxh3_128:cc", vid=made),)),
            ProductsWritten(reader, (obs("file:///used", "xxh3_128:dd"),)),
        ]

    recorder.record(batch("first"))
    assert recorder._product_ids and recorder._version_ids  # what this test is about
    empty_tracking(recorder.engine)  # as another process emptying the database would
    recorder.record(batch("second"))
    with recorder.engine.connect() as conn:
        edge = conn.execute(
            text(
                "SELECT pp.uri AS parent, cp.uri AS child, i.job FROM lineage_edges e "
                "JOIN invocations i ON i.id = e.invocation_id "
                "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
                "JOIN data_products pp ON pp.id = pv.product_id "
                "JOIN data_product_versions cv ON cv.id = e.child_version_id "
                "JOIN data_products cp ON cp.id = cv.product_id"
            )
        ).one()
    assert tuple(edge) == ("file:///made", "file:///used", "use-second")
    assert count(recorder.engine, "data_product_versions") == 2


@pytest.fixture
def pg_url(request, tmp_path):
    from dpt_core.testing import make_database

    yield from make_database("postgresql", tmp_path, request)


def test_libpq_options_in_the_url_are_kept_beside_dpts_timeout(pg_url):
    """``?options=-c synchronous_commit=off`` is how a team opts out of waiting for the
    disk on every commit (see docs/performance.md); dpt's own statement timeout stays."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    dpt_backend = pg_url
    url = make_url(dpt_backend).update_query_dict({"options": "-c synchronous_commit=off"})
    engine = make_engine(url.render_as_string(hide_password=False), statement_timeout=7)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "7s"
    finally:
        engine.dispose()
    plain = make_engine(dpt_backend, statement_timeout=7)
    try:
        with plain.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        plain.dispose()


def edge_uris(engine) -> set[tuple[str, str]]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return {
            (r.parent, r.child)
            for r in conn.execute(
                text(
                    "SELECT pp.uri AS parent, cp.uri AS child FROM lineage_edges e "
                    "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
                    "JOIN data_products pp ON pp.id = pv.product_id "
                    "JOIN data_product_versions cv ON cv.id = e.child_version_id "
                    "JOIN data_products cp ON cp.id = cv.product_id"
                )
            )
        }


def test_reads_and_writes_of_a_new_invocation_in_one_batch_link_like_separate_batches(recorder):
    """Inside the transaction that inserts an invocation, its inputs and outputs are known
    without asking the database; the lineage must be the same as batch by batch."""
    uri = "file:///{}/{}".format

    def events(tag: str) -> list:
        inv = str(uuid.uuid4())
        return [
            InvocationStarted(uuid=inv, orchestrator="python", job=tag),
            ProductsRead(inv, (obs(uri(tag, "a"), "xxh3_128:a"),)),
            ProductsWritten(inv, (obs(uri(tag, "b"), "xxh3_128:b"),)),  # implicit parents
            ProductsRead(inv, (obs(uri(tag, "c"), "xxh3_128:c"),)),  # joins b's parents
            ProductsWritten(inv, (obs(uri(tag, "d"), "xxh3_128:d", parents=(uri(tag, "a"),)),)),
            InvocationFinished(inv, "success"),
        ]

    recorder.record(events("one"))
    for event in events("many"):
        recorder.record([event])
    expected = {("a", "b"), ("c", "b"), ("a", "d")}
    edges = edge_uris(recorder.engine)
    for tag in ("one", "many"):
        assert {(p[-1], c[-1]) for p, c in edges if f"/{tag}/" in c} == expected


def test_an_invocation_another_process_gave_inputs_still_links_them(recorder):
    inv = str(uuid.uuid4())
    recorder.record([InvocationStarted(uuid=inv, orchestrator="python", job="j")])
    BulkRecorder(recorder.engine).record([ProductsRead(inv, (obs("file:///x", "xxh3_128:x"),))])
    recorder.record([ProductsWritten(inv, (obs("file:///y", "xxh3_128:y"),))])
    assert edge_uris(recorder.engine) == {("file:///x", "file:///y")}


def test_a_pooled_connection_the_server_dropped_is_replaced_without_losing_the_batch(pg_url):
    """The store's engine does not ping connections at checkout (a round trip per
    transaction); a dead pooled connection costs one retry on a fresh connection."""
    from sqlalchemy import text

    engine = make_engine(pg_url, pool_pre_ping=False)
    recorder = BulkRecorder(engine)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    recorder.record([InvocationStarted(uuid=first, orchestrator="python", job="before")])
    admin = make_engine(pg_url)
    with admin.connect() as conn:  # the server drops dpt's idle pooled connection
        killed = conn.execute(
            text(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert killed >= 1
    recorder.record(
        [
            InvocationStarted(uuid=second, orchestrator="python", job="after"),
            ProductsWritten(second, (obs("file:///after", "xxh3_128:af"),)),
        ]
    )
    with admin.connect() as conn:
        jobs = conn.execute(text("SELECT job FROM invocations ORDER BY id")).scalars().all()
        versions = conn.execute(text("SELECT COUNT(*) FROM data_product_versions")).scalar()
    assert (jobs, versions) == (["before", "after"], 1)
    admin.dispose()
    engine.dispose()


def test_big_batches_take_the_bulk_path_and_replay_to_the_same_rows(recorder):
    """600 outputs x 2 parents: PostgreSQL's COPY path (from 500 rows) returns what it
    inserted; a replay, where every row collides, must find the same rows."""
    from dpt_core.store.upsert import COPY_THRESHOLD

    n = COPY_THRESHOLD + 100
    inv = str(uuid.uuid4())
    raw = [obs(f"s3://bulk/raw/{i}", f"xxh3_128:r{i}") for i in range(n + 1)]
    cal = [
        obs(f"s3://bulk/cal/{i}", f"xxh3_128:c{i}", parents=(raw[i].uri, raw[i + 1].uri)).replace(
            metadata={"band": "g", "index": i}
        )
        for i in range(n)
    ]
    batch = [
        InvocationStarted(uuid=inv, orchestrator="python", job="bulk"),
        ProductsRead(inv, tuple(raw)),
        ProductsWritten(inv, tuple(cal)),
    ]
    recorder.record(batch)
    BulkRecorder(recorder.engine).record(batch)  # a replay from another process
    edges = edge_uris(recorder.engine)
    assert len(edges) == 2 * n
    assert {("s3://bulk/raw/7", "s3://bulk/cal/7"), ("s3://bulk/raw/8", "s3://bulk/cal/7")} <= edges
    assert all(
        p.rsplit("/", 1)[1] in {c.rsplit("/", 1)[1], str(int(c.rsplit("/", 1)[1]) + 1)}
        for p, c in edges
    )
    assert count(recorder.engine, "data_product_versions") == 2 * n + 1
    assert count(recorder.engine, "invocation_inputs") == n + 1
    from dpt_core.store.models import DataProduct, DataProductVersion

    with recorder.engine.connect() as conn:  # JSON documents go through COPY as JSON
        metadata = conn.execute(
            select(DataProductVersion.metadata_)
            .join(DataProduct, DataProduct.id == DataProductVersion.product_id)
            .where(DataProduct.uri == "s3://bulk/cal/7")
        ).scalar_one()
    assert metadata == {"band": "g", "index": 7}


@pytest.mark.parametrize("rows", [3, 600], ids=["statement", "bulk"])
def test_naive_times_are_stored_as_utc_by_both_insert_paths(recorder, monkeypatch, rows):
    """A naive datetime means UTC (UTCDateTime), also on PostgreSQL's COPY path (from 500
    rows), in a session whose time zone is not UTC, and when the first row has no value."""
    from dpt_core.store.models import Invocation

    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # libpq sets the session's time zone from it
    recorder.engine.dispose()
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    table = Invocation.__table__
    batch = [
        {
            "uuid": f"tz-{i}",
            "orchestrator": "python",
            "job": "tz",
            "status": "success",
            "started_at": naive,
            "ended_at": None if i == 0 else naive + dt.timedelta(seconds=i),
        }
        for i in range(rows)
    ]
    in_transaction(recorder.engine, lambda conn: insert_ignore(conn, table, batch, ["uuid"]))
    with recorder.engine.connect() as conn:
        stored = dict(conn.execute(select(table.c.uuid, table.c.ended_at)).all())
        started = set(conn.execute(select(table.c.started_at)).scalars())
    utc = naive.replace(tzinfo=dt.UTC)
    assert started == {utc}
    assert stored["tz-0"] is None
    assert stored[f"tz-{rows - 1}"] == utc + dt.timedelta(seconds=rows - 1)
