"""The set-based recording path (dpt_core.store.bulk) against the per-event path.

The per-event recorder is the reference: for the same batches of the same events, in
any order and with duplicates, the set-based path must leave every tracking table
exactly as the per-event path does (rows compared by their stable identities, and the
order of each product's versions, which says which one is the newest). The events are
drawn from a small universe so that they collide: runs named before they start,
parents, placeholders, replays, reads of versions that do and do not exist, writes
with and without parents, conditional and unconditional ends, starts that close or
hand over their run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, select

from dpt_core.events import (
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.store import bulk
from dpt_core.store.bulk import BulkRecorder
from dpt_core.store.models import (
    DataProduct,
    DataProductVersion,
    Environment,
    Invocation,
    InvocationInput,
    InvocationTag,
    LineageEdge,
    VersionTag,
)
from dpt_core.store.plugin import current_store
from dpt_core.testing import empty_tracking

NS = uuid.UUID("6c1c4a4e-8f0e-4d57-9a43-0d8f5a1b2c3d")
T0 = dt.datetime(2020, 5, 1, 12, 0, tzinfo=dt.UTC)
RUNS = [str(uuid.uuid5(NS, f"run-{i}")) for i in range(4)]
URIS = [f"s3://bucket/p{i}" for i in range(4)]


def version(product: int, k: int) -> tuple[str, str | None]:
    """The uuid of version ``k`` of product ``product`` and its content hash (k=2: none)."""
    return str(uuid.uuid5(NS, f"v-{product}-{k}")), (f"sha256:{product}{k}" if k < 2 else None)


# --------------------------------------------------------------------------- events


@st.composite
def observations(draw: Any, *, write: bool) -> tuple[ProductObservation, ...]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        product = draw(st.integers(0, len(URIS) - 1))
        k = draw(st.integers(0, 2))
        version_uuid, content_hash = version(product, k)
        if draw(st.integers(0, 2 if write else 1)) == 0:
            # a process that hashed the file itself: a version uuid of its own, with the
            # content hash of version k (a read finds the version by its content; a
            # write is a new version of the same content, or that version again)
            version_uuid = str(uuid.uuid5(NS, f"seen-{product}-{k}-{draw(st.integers(0, 1))}"))
        parents = None
        if write and draw(st.integers(0, 3)) == 0:
            parents = tuple(draw(st.lists(st.sampled_from(URIS), max_size=2)))
        out.append(
            ProductObservation(
                uri=URIS[product],
                version_uuid=version_uuid,
                content_hash=content_hash,
                size=draw(st.sampled_from([None, 10 * (k + 1)])),
                metadata=draw(st.sampled_from([{}, {"k": k}])),
                parents=parents,
                tags=draw(st.sampled_from([{}, {}, {"q": "good"}, {"q": "bad", "n": str(k)}])),
            )
        )
    return tuple(out)


@st.composite
def dpt_events(draw: Any) -> Event:
    run = draw(st.sampled_from(RUNS))
    kind = draw(st.sampled_from(["start", "start", "end", "read", "write", "write"]))
    minute = dt.timedelta(minutes=draw(st.integers(0, 5)))
    if kind == "start":
        # (mostly what the set-based path takes, so that it takes long stretches)
        closed = draw(st.integers(0, 9)) == 0
        return InvocationStarted(
            uuid=run,
            orchestrator=draw(st.sampled_from(["airflow", "unknown"])),
            job=draw(st.sampled_from(["nightly", "unknown"])),
            task=draw(st.sampled_from([None, "t"])),
            parent_uuid=draw(st.sampled_from([None, *[r for r in RUNS if r != run]])),
            started_at=T0 + minute,
            host=draw(st.sampled_from([None, "h1"])),
            parameters=draw(st.sampled_from([{}, {"a": 1}, {"a": 2, "b": 3}])),
            variables=draw(st.sampled_from([{}, {"X": "1"}])),
            status="success" if closed else "running",
            ended_at=T0 + minute if closed else None,
            process=draw(st.sampled_from([None] * 5 + ["host:123"])),
            tags=draw(
                st.sampled_from([{}, {}, {"survey": "tess"}, {"survey": "kepler", "sector": "42"}])
            ),
        )
    if kind == "end":
        return InvocationFinished(
            uuid=run,
            status=draw(st.sampled_from(["success", "failed", "success", "failed", "running"])),
            ended_at=T0 + minute,
            error=draw(st.sampled_from([None, "boom"])),
            only_if_running=draw(st.booleans()),
        )
    if kind == "read":
        return ProductsRead(run, draw(observations(write=False)))
    return ProductsWritten(run, draw(observations(write=True)))


# --------------------------------------------------------------------------- snapshot


def _now_or(value: Any) -> Any:
    """Times the recorder takes from the clock (a placeholder's start) as one marker."""
    if isinstance(value, dt.datetime) and value.replace(tzinfo=dt.UTC) > T0 + dt.timedelta(
        days=365
    ):
        return "<now>"
    return value


def _doc(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every tracking table, row ids replaced by what they identify."""
    inv, P, V = Invocation.__table__, DataProduct.__table__, DataProductVersion.__table__
    IN, E, ENV = InvocationInput.__table__, LineageEdge.__table__, Environment.__table__
    with engine.connect() as conn:
        run_uuid = {r.id: r.uuid for r in conn.execute(select(inv.c.id, inv.c.uuid))}
        run_order = [run_uuid[i] for i in sorted(run_uuid)]  # (ids say which run came first)
        env = {r.id: r.fingerprint for r in conn.execute(select(ENV.c.id, ENV.c.fingerprint))}
        uri = {r.id: r.uri for r in conn.execute(select(P.c.id, P.c.uri))}
        runs = {}
        for r in conn.execute(select(inv)):
            row = dict(r._mapping)
            row.pop("id")
            row["parent_id"] = run_uuid.get(row["parent_id"])
            row["environment_id"] = env.get(row["environment_id"])
            row["started_at"] = _now_or(row["started_at"])
            row["parameters"], row["variables"] = _doc(row["parameters"]), _doc(row["variables"])
            runs[row["uuid"]] = row
        versions = {}
        newest_first: dict[str, list[str]] = {}
        for r in conn.execute(select(V).order_by(V.c.id)):
            row = dict(r._mapping)
            row.pop("id")
            row.pop("recorded_at")
            row["product_id"] = uri[row["product_id"]]
            row["produced_by_id"] = run_uuid.get(row["produced_by_id"])
            row["metadata"] = _doc(row["metadata"])
            row["explicit_parents"] = bool(row["explicit_parents"])
            versions[row["uuid"]] = row
            newest_first.setdefault(row["product_id"], []).insert(0, row["uuid"])
        vuuid = {r.id: r.uuid for r in conn.execute(select(V.c.id, V.c.uuid))}
        inputs = sorted(
            (run_uuid[r.invocation_id], vuuid[r.version_id]) for r in conn.execute(select(IN))
        )
        edges = sorted(
            (vuuid[r.parent_version_id], vuuid[r.child_version_id], run_uuid.get(r.invocation_id))
            for r in conn.execute(select(E))
        )
        RT, VT = InvocationTag.__table__, VersionTag.__table__
        run_tags = sorted(
            (run_uuid[r.invocation_id], r.key, r.value) for r in conn.execute(select(RT))
        )
        version_tags = sorted(
            (vuuid[r.version_id], r.key, r.value) for r in conn.execute(select(VT))
        )
        # SQL NULL and JSON null read back alike: told apart here (COPY and INSERT bind
        # a None differently unless told).
        sql_nulls = sorted(
            (r.uuid, column)
            for table, columns in ((inv, ("parameters", "variables")), (V, ("metadata",)))
            for column in columns
            for r in conn.execute(select(table.c.uuid).where(table.c[column].is_(None)))
        )
    return {
        "sql_nulls": sql_nulls,
        "runs": runs,
        "run_order": run_order,
        "products": sorted(uri.values()),
        "versions": versions,
        "version_order": newest_first,
        "inputs": inputs,
        "edges": edges,
        "run_tags": run_tags,
        "version_tags": version_tags,
    }


def record_with(engine: Engine, batches: list[list[Event]], *, bulk: bool) -> dict[str, Any]:
    empty_tracking(engine)
    recorder = BulkRecorder(engine)
    recorder.bulk = bulk
    for batch in batches:
        recorder.record(batch)
    return snapshot(engine)


def assert_same_rows(engine: Engine, batches: list[list[Event]]) -> dict[str, Any]:
    reference = record_with(engine, batches, bulk=False)
    assert record_with(engine, batches, bulk=True) == reference
    return reference


def sensor_head() -> list[Event]:
    """The run the sensor's steps belong to, and the version they all read."""
    source, source_hash = version(0, 0)
    return [
        InvocationStarted(uuid=RUNS[0], orchestrator="dagster", job="survey", started_at=T0),
        ProductsWritten(RUNS[0], (ProductObservation(URIS[0], source, source_hash),)),
    ]


def sensor_steps(n: int, offset: int) -> list[Event]:
    """What the Dagster sensor records per materialisation: a start carrying its outcome,
    the read of the upstream version, the write of a new product's version."""
    source, source_hash = version(0, 0)
    events: list[Event] = []
    for i in range(offset, offset + n):
        run = str(uuid.uuid5(NS, f"step-{i}"))
        events += [
            InvocationStarted(
                uuid=run,
                orchestrator="dagster",
                job="survey",
                task=f"cal_{i}",
                parent_uuid=RUNS[0],
                started_at=T0,
                status="success",
                ended_at=T0 + dt.timedelta(seconds=i),
                parameters={"partition": None} if i % 2 else {},
            ),
            ProductsRead(run, (ProductObservation(URIS[0], source, source_hash),)),
            ProductsWritten(
                run,
                (
                    ProductObservation(
                        f"s3://cal/{i}",
                        str(uuid.uuid5(NS, f"cal-{i}")),
                        content_hash=f"sha256:{i}" if i % 4 == 0 else None,
                        size=i if i % 4 == 0 else None,
                        metadata={"rows": i, "note": "é"} if i % 3 else {},
                        tags={"q": "good"} if i % 2 else {},
                    ),
                ),
            ),
        ]
    return events


# --------------------------------------------------------------------------- tests


@settings(max_examples=300)
@given(
    events=st.lists(dpt_events(), min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 30), max_size=3),
    replay=st.booleans(),
)
def test_the_set_based_path_records_what_the_per_event_path_does(
    dpt_backend, dpt_env, events, cuts, replay
):
    """Any events, cut into any batches, some replayed: the same rows either way."""
    engine = current_store().engine
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    batches = [events[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if replay:  # a spool replay, or the same events posted twice
        batches.append(events + events[: len(events) // 2])
    assert_same_rows(engine, batches)


def _reports_reordered(event: Event, rng: Any) -> Event:
    """``event`` with the reports of each version (one version uuid named twice or more)
    shuffled among the places they hold."""
    if not isinstance(event, ProductsRead | ProductsWritten):
        return event
    reports = list(event.inputs if isinstance(event, ProductsRead) else event.outputs)
    places: dict[str, list[int]] = {}
    for i, o in enumerate(reports):
        places.setdefault(o.version_uuid, []).append(i)
    for where in places.values():
        moved = [reports[i] for i in where]
        rng.shuffle(moved)
        for i, o in zip(where, moved, strict=True):
            reports[i] = o
    if isinstance(event, ProductsRead):
        return event.replace(inputs=tuple(reports))
    return event.replace(outputs=tuple(reports))


@st.composite
def twice_reported(draw: Any) -> Event:
    """A read or write naming one version two or three times, saying different things."""
    run = draw(st.sampled_from(RUNS))
    write = draw(st.booleans())
    reports = list(draw(observations(write=write)))
    product = draw(st.integers(0, len(URIS) - 1))
    version_uuid, content_hash = version(product, draw(st.integers(0, 2)))
    for _ in range(draw(st.integers(2, 3))):
        reports.insert(
            draw(st.integers(0, len(reports))),
            ProductObservation(
                uri=URIS[product],
                version_uuid=version_uuid,
                content_hash=draw(st.sampled_from([None, content_hash])),
                size=draw(st.sampled_from([None, 10, 20])),
                mtime=draw(st.sampled_from([None, 1.0e9])),
                metadata=draw(st.sampled_from([{}, {"k": 1}, {"k": 2, "j": 0}])),
                parents=(
                    draw(st.sampled_from([None, (), (URIS[0],), (URIS[1], URIS[2])]))
                    if write
                    else None
                ),
                tags=draw(st.sampled_from([{}, {"q": "good"}, {"q": "bad", "n": "1"}])),
            ),
        )
    if write:
        return ProductsWritten(run, tuple(reports))
    return ProductsRead(run, tuple(reports))


@settings(max_examples=150)
@given(
    events=st.lists(st.one_of(dpt_events(), twice_reported()), min_size=1, max_size=12),
    rng=st.randoms(use_true_random=False),
)
def test_a_version_reported_twice_in_an_event_is_recorded_whatever_the_reports_order(
    dpt_backend, dpt_env, events, rng
):
    """The reports of one version within one event are one report, merged the same way in
    any order: the same rows on both paths, event by event and in one batch."""
    engine = current_store().engine
    for batches in ([[e] for e in events], [events]):
        reference = record_with(engine, batches, bulk=False)
        again = [[_reports_reordered(e, rng) for e in batch] for batch in batches]
        assert record_with(engine, again, bulk=False) == reference
        assert record_with(engine, again, bulk=True) == reference


ENDS = [
    InvocationFinished(RUNS[1], status, T0 + dt.timedelta(minutes=m), error, only_if_running=c)
    for status, m, error, c in (
        ("success", 1, None, True),
        ("failed", 2, "boom", True),
        ("success", 3, None, False),
        ("cancelled", 4, "stop", False),
    )
]


def test_every_sequence_of_ends_after_any_state_of_the_run(dpt_backend, dpt_env):
    """Up to three ends (conditional or not) of a run, after a start in the same batch,
    or on a run already recorded running or already ended: the end that prevails is the
    per-event path's."""
    import itertools

    engine = current_store().engine
    start = InvocationStarted(uuid=RUNS[1], orchestrator="spark", job="j", started_at=T0)
    befores: list[list[list[Event]]] = [
        [],
        [[start]],
        [[start, InvocationFinished(RUNS[1], "skipped", T0, only_if_running=False)]],
    ]
    sequences = [
        list(s) for n in (1, 2, 3) for s in itertools.product(ENDS, repeat=n) if len(set(s)) == n
    ]
    if dpt_env.backend != "sqlite":
        sequences = sequences[::5]
    statuses = set()
    for before in befores:
        for ends in sequences:
            rows = assert_same_rows(engine, [*before, [start, *ends] if not before else ends])
            statuses.add(rows["runs"][RUNS[1]]["status"])
    assert {"success", "cancelled", "skipped"} <= statuses


def _seen(k: int, **fields: Any) -> ProductObservation:
    version_uuid, content_hash = version(0, k)
    return ProductObservation(URIS[0], version_uuid, content_hash, **fields)


def _again(k: int) -> ProductObservation:
    """Version ``k`` of product 0 observed again under another uuid (same content)."""
    _, content_hash = version(0, k)
    return ProductObservation(URIS[0], str(uuid.uuid5(NS, f"again-{k}")), content_hash)


#: Events that meet a version another event of the same batch made, of a new product.
SAME_PRODUCT = {
    "a read without hash finds the version written before": [
        ProductsWritten(RUNS[1], (_seen(0),)),
        ProductsRead(RUNS[2], (_seen(2),)),
    ],
    "a write of the same content again is that version": [
        ProductsWritten(RUNS[1], (_seen(0, size=10),)),
        ProductsWritten(RUNS[1], (_again(0),)),
    ],
    "a run writes what it read first (the version is claimed)": [
        ProductsRead(RUNS[1], (_seen(0),)),
        ProductsWritten(RUNS[1], (_again(0),)),
    ],
    "another run read it first (the version is claimed)": [
        ProductsRead(RUNS[2], (_seen(1),)),
        ProductsWritten(RUNS[1], (_again(1),)),
    ],
    "a hashless read, then the hashed write": [
        ProductsRead(RUNS[1], (_seen(2),)),
        ProductsWritten(RUNS[1], (_seen(0),)),
        ProductsRead(RUNS[2], (_seen(0),)),
    ],
}


@pytest.mark.parametrize("case", sorted(SAME_PRODUCT))
def test_versions_made_earlier_in_the_same_batch(dpt_backend, dpt_env, case):
    """Every order of events that meet a version made by another event of the batch."""
    import itertools

    engine = current_store().engine
    start = InvocationStarted(uuid=RUNS[1], orchestrator="spark", job="j", started_at=T0)
    for order in itertools.permutations(SAME_PRODUCT[case]):
        assert_same_rows(engine, [[start, *order]])


def _hashed_by_reader(k: int, n: int = 0) -> ProductObservation:
    """Version ``k`` of product 0 as a reader that hashed the file saw it: a version uuid
    of its own (``n``-th reader), the content hash of version ``k`` (k=2: no hash)."""
    _, content_hash = version(0, k)
    return ProductObservation(URIS[0], str(uuid.uuid5(NS, f"reader-{k}-{n}")), content_hash)


#: Reads that name no version that exists, of a product with versions before the batch:
#: (what is recorded before, the batch).
FOUND_BY_CONTENT = {
    "the newest version with the content read, not the newest at all": (
        [ProductsWritten(RUNS[0], (_seen(0),)), ProductsWritten(RUNS[3], (_seen(1),))],
        [ProductsRead(RUNS[2], (_hashed_by_reader(0),))],
    ),
    "a version of that content made in the batch is the newer one": (
        [ProductsWritten(RUNS[0], (_seen(0),))],
        [ProductsWritten(RUNS[1], (_again(0),)), ProductsRead(RUNS[2], (_hashed_by_reader(0),))],
    ),
    "a read without hash finds the newest version, made in the batch or not": (
        [ProductsWritten(RUNS[0], (_seen(0),))],
        [ProductsWritten(RUNS[1], (_seen(1),)), ProductsRead(RUNS[2], (_hashed_by_reader(2),))],
    ),
    "content nobody wrote: an observed version": (
        [ProductsWritten(RUNS[0], (_seen(0),))],
        [ProductsRead(RUNS[2], (_hashed_by_reader(1),))],
    ),
    "a run's second read of the product keeps its first read's version": (
        [ProductsWritten(RUNS[0], (_seen(0),))],
        [
            ProductsRead(RUNS[2], (_hashed_by_reader(0),)),
            ProductsWritten(RUNS[1], (_again(0),)),
            ProductsRead(RUNS[2], (_hashed_by_reader(0, 1),)),
        ],
    ),
    "a run that read the product in an earlier batch keeps that version": (
        [ProductsWritten(RUNS[0], (_seen(0),)), ProductsRead(RUNS[2], (_hashed_by_reader(0),))],
        [ProductsWritten(RUNS[1], (_again(0),)), ProductsRead(RUNS[2], (_hashed_by_reader(0, 1),))],
    ),
}


@pytest.mark.parametrize("case", sorted(FOUND_BY_CONTENT))
def test_reads_found_by_content_of_a_product_with_versions(dpt_backend, dpt_env, case):
    """Every order of a batch whose reads name their own version uuid, of a product that
    has versions: the version found by content hash is the one the per-event path finds."""
    import itertools

    engine = current_store().engine
    before, batch = FOUND_BY_CONTENT[case]
    start = InvocationStarted(uuid=RUNS[1], orchestrator="spark", job="j", started_at=T0)
    for order in itertools.permutations(batch):
        assert_same_rows(engine, [before, [start, *order]])


def _life(run: str, parent: str, n: int) -> list[Event]:
    """What ingest makes of an OpenLineage run: its parent's placeholder start, then the
    START (start, read) and COMPLETE (start, read, write, conditional end)."""
    source, _ = version(0, 0)
    output = ProductObservation(
        uri=f"s3://out/{n}", version_uuid=str(uuid.uuid5(NS, run)), tags={"q": "good"}
    )
    read = ProductsRead(run, (ProductObservation(URIS[0], source, "sha256:00"),))
    start = InvocationStarted(
        uuid=run,
        orchestrator="spark",
        job=f"job-{n}",
        parent_uuid=parent,
        started_at=T0,
        tags={"survey": "tess"},
    )
    return [
        InvocationStarted(uuid=parent, orchestrator="airflow", job="dag", started_at=T0),
        start,
        read,
        InvocationStarted(
            uuid=run,
            orchestrator="spark",
            job=f"job-{n}",
            parent_uuid=parent,
            started_at=T0 + dt.timedelta(minutes=1),
            parameters={"late": True},
            tags={"survey": "kepler", "late": "true"},
        ),
        read,
        ProductsWritten(run, (output,)),
        InvocationFinished(run, "success", T0 + dt.timedelta(minutes=2), only_if_running=True),
    ]


def test_every_order_of_a_runs_events_in_one_batch(dpt_backend, dpt_env):
    """All 120 orders of a run's five own events (after its parent's start), each as one
    batch on top of a database that already holds another run: the same rows as the
    per-event path, and the run complete (no event dropped)."""
    import itertools

    engine = current_store().engine
    parent = RUNS[0]
    before = _life(RUNS[3], parent, 3)
    events = _life(RUNS[1], parent, 1)
    head, own = events[:1], [events[1], events[2], events[3], events[5], events[6]]
    orders = list(itertools.permutations(own))
    if dpt_env.backend != "sqlite":
        orders = orders[::10]  # every 10th order on the servers (12 of 120)
    for order in orders:
        rows = assert_same_rows(engine, [before, head + list(order)])
        run = rows["runs"][RUNS[1]]
        assert run["parent_id"] == parent and run["orchestrator"] == "spark"
        assert run["parameters"] == {"late": True}
        # (an end before any record of its run has no row to end)
        ended = order.index(events[6]) > 0
        assert run["status"] == ("success" if ended else "running")
        assert (RUNS[1], version(0, 0)[0]) in rows["inputs"]
        assert (RUNS[1], "late", "true") in rows["run_tags"]
        first = "tess" if order.index(events[1]) < order.index(events[3]) else "kepler"
        assert (RUNS[1], "survey", first) in rows["run_tags"]  # a record never overwrites
        assert (str(uuid.uuid5(NS, RUNS[1])), "q", "good") in rows["version_tags"]
        assert [e for e in rows["edges"] if e[2] == RUNS[1]] == [
            (version(0, 0)[0], str(uuid.uuid5(NS, RUNS[1])), RUNS[1])
        ]


def test_a_batch_costs_a_constant_number_of_statements(dpt_backend, dpt_env):
    """8 or 64 runs' STARTs, then their COMPLETEs: the same number of statements per
    batch (the per-event path's grows with the batch), and every run, input, version
    and edge recorded once."""
    engine = current_store().engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def batches(n: int, offset: int) -> tuple[list[Event], list[Event]]:
        starts: list[Event] = []
        completes: list[Event] = []
        for i in range(offset, offset + n):
            life = _life(str(uuid.uuid5(NS, f"many-{i}")), RUNS[0], i)
            starts += life[:3]
            completes += life[3:]
        return starts, completes

    recorder = BulkRecorder(engine)
    for batch in batches(1, 1000):  # the parent, the shared input
        recorder.record(batch)
    costs = {}
    event.listen(engine, "before_cursor_execute", count)
    try:
        for n, offset in ((8, 0), (64, 100)):
            for phase, batch in zip(("start", "complete"), batches(n, offset), strict=True):
                statements.clear()
                recorder.record(batch)
                costs[(phase, n)] = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert costs[("start", 8)] == costs[("start", 64)], costs
    assert costs[("complete", 8)] == costs[("complete", 64)], costs
    assert costs[("complete", 8)] < 8 * 2, costs  # (per event: about 8 per COMPLETE)
    rows = snapshot(engine)
    runs = [u for u, r in rows["runs"].items() if r["job"].startswith("job-")]
    assert len(runs) == 1 + 8 + 64
    assert all(rows["runs"][u]["status"] == "success" for u in runs)
    assert len(rows["inputs"]) == len(runs)
    assert len(rows["edges"]) == len(runs)
    assert len(rows["versions"]) == 1 + len(runs)


def _chain(n: int, offset: int, round_: int) -> list[Event]:
    """A DAG run of ``n`` tasks in a chain, as Airflow's listener records it: each try's
    start names its process; task i reads file i-1 (hashed by the reader: a version uuid
    of its own) and writes file i."""

    def uri(i: int) -> str:
        return f"file:///chain/{offset + i}"

    def content(i: int, r: int) -> str:
        return f"sha256:chain-{offset + i}-{r}"

    events: list[Event] = []
    for i in range(1, n + 1):
        task = str(uuid.uuid5(NS, f"chain-{offset}-{round_}-{i}"))
        seen = str(uuid.uuid5(NS, f"chain-read-{offset}-{round_}-{i}"))
        made = str(uuid.uuid5(NS, f"chain-write-{offset}-{round_}-{i}"))
        events += [
            InvocationStarted(
                uuid=task, orchestrator="airflow", job="chain", started_at=T0, process="h:1"
            ),
            ProductsRead(task, (ProductObservation(uri(i - 1), seen, content(i - 1, round_)),)),
            ProductsWritten(task, (ProductObservation(uri(i), made, content(i, round_)),)),
            InvocationFinished(uuid=task, status="success", ended_at=T0),
        ]
    return events


def test_a_chain_of_tries_reading_files_by_their_content_costs_a_constant_number_of_statements(
    dpt_backend, dpt_env
):
    """Tries that read the file the try before wrote, hashed by the reader (its own version
    uuid), in one batch: the version read is found by content set-wise, so 4 or 32 tries
    cost the same statements; and the rows are the per-event path's."""
    engine = current_store().engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def first_file(offset: int) -> list[Event]:
        writer = str(uuid.uuid5(NS, f"chain-source-{offset}"))
        source = ProductObservation(
            f"file:///chain/{offset}",
            str(uuid.uuid5(NS, f"chain-v-{offset}")),
            f"sha256:chain-{offset}-1",
        )
        return [
            InvocationStarted(uuid=writer, orchestrator="airflow", job="chain", started_at=T0),
            ProductsWritten(writer, (source,)),
        ]

    costs = {}
    recorder = BulkRecorder(engine)
    for n, offset in ((4, 0), (32, 100)):
        recorder.record(first_file(offset))
        recorder.record(_chain(n, offset, 0))  # an earlier run: every file has a version
        event.listen(engine, "before_cursor_execute", count)
        try:
            statements.clear()
            recorder.record(_chain(n, offset, 1))
            costs[n] = len(statements)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert costs[4] == costs[32], costs
    rows = snapshot(engine)
    # each try of the second run read the version the try before it wrote in that run
    for i in range(2, 33):
        task = str(uuid.uuid5(NS, f"chain-100-1-{i}"))
        before = str(uuid.uuid5(NS, f"chain-write-100-1-{i - 1}"))
        assert rows["runs"][task]["status"] == "success"
        assert any(r == (task, before) for r in rows["inputs"]), (task, rows["inputs"][:3])
    assert_same_rows(engine, [first_file(7), _chain(5, 7, 0), _chain(5, 7, 1)])


def test_a_sensor_batch_of_finished_steps_costs_a_constant_number_of_statements(
    dpt_backend, dpt_env
):
    """What the Dagster sensor records per tick: for each materialisation one start that
    carries its outcome (a new run), its read of the upstream version, its write. 8 or 64
    such steps cost the same statements (they went event by event before: ~10 per
    step), and the rows are the per-event path's."""
    engine = current_store().engine
    head, steps = sensor_head(), sensor_steps
    assert_same_rows(engine, [head, steps(5, 500), steps(3, 500)])  # (a replay among them)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    empty_tracking(engine)
    recorder = BulkRecorder(engine)
    recorder.record(head)
    recorder.record(steps(1, 900))  # (warm: the parent run's id is cached from now on)
    costs = {}
    event.listen(engine, "before_cursor_execute", count)
    try:
        for n, offset in ((8, 0), (64, 100)):
            statements.clear()
            recorder.record(steps(n, offset))
            costs[n] = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert costs[8] == costs[64] < 20, costs
    rows = snapshot(engine)
    steps_recorded = [r for r in rows["runs"].values() if r["job"] == "survey" and r["task"]]
    assert len(steps_recorded) == 1 + 8 + 64
    assert all(r["status"] == "success" for r in steps_recorded)


@contextlib.contextmanager
def copy_from(rows: int) -> Iterator[None]:
    """The set-based path COPYs new rows from ``rows`` rows of one shape on."""
    before = bulk.COPY_ROWS
    bulk.COPY_ROWS = rows
    try:
        yield
    finally:
        bulk.COPY_ROWS = before


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
@settings(max_examples=150)
@given(
    events=st.lists(dpt_events(), min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 30), max_size=3),
    replay=st.booleans(),
)
def test_rows_copied_are_the_rows_the_per_event_path_inserts(
    dpt_backend, dpt_env, events, cuts, replay
):
    """PostgreSQL, every new row by COPY: any events, cut into any batches, some
    replayed, leave the per-event path's rows (JSON nulls and version order included)."""
    engine = current_store().engine
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    batches = [events[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if replay:
        batches.append(events + events[: len(events) // 2])
    with copy_from(1):
        assert_same_rows(engine, batches)


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
def test_a_big_batch_of_new_rows_sends_no_statement_that_grows_with_it(dpt_backend, dpt_env):
    """PostgreSQL: a sensor batch's new invocations and versions go by COPY, not by a
    multi-row INSERT whose text grows with the batch (psycopg parses such a statement
    for ~20 ms per thousand rows: most of a 1 000-materialisation tick's recording).
    The rows are the per-event path's."""
    engine = current_store().engine
    big = bulk.COPY_ROWS + 14
    rows = assert_same_rows(engine, [sensor_head(), sensor_steps(big, 0)])
    assert len(rows["versions"]) == 1 + big

    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO"):
            inserts.append(statement.split("(")[0].split()[-1])

    empty_tracking(engine)
    recorder = BulkRecorder(engine)
    recorder.record(sensor_head())
    event.listen(engine, "before_cursor_execute", count)
    try:
        recorder.record(sensor_steps(big, 0))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert "invocations" not in inserts and "data_product_versions" not in inserts, inserts
    assert snapshot(engine) == rows


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
def test_a_copy_that_meets_a_concurrent_writers_row_records_event_by_event(dpt_backend, dpt_env):
    """A run another writer inserted between the batch's lookup and its COPY: the COPY
    fails as the INSERT would (a unique violation), the transaction is recorded again
    event by event, and the rows are what the per-event path makes of the other
    writer's row (it fills it in)."""
    engine = current_store().engine
    steps = sensor_steps(bulk.COPY_ROWS + 1, 0)
    first = steps[0]
    assert isinstance(first, InvocationStarted)
    theirs = {
        "uuid": first.uuid,
        "orchestrator": "dagster",
        "job": "survey",
        "status": "running",
        "started_at": T0,
        "parameters": {"by": "another writer"},
    }

    def other_writer() -> None:
        with engine.begin() as other:
            other.execute(Invocation.__table__.insert().values(theirs))

    empty_tracking(engine)
    recorder = BulkRecorder(engine)
    recorder.bulk = False
    recorder.record(sensor_head())
    other_writer()
    recorder.record(steps)
    expected = snapshot(engine)

    empty_tracking(engine)
    recorder = BulkRecorder(engine)
    recorder.record(sensor_head())
    inserted: list[str] = []
    rollbacks: list[Any] = []

    def between_lookup_and_copy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Right after the batch looked its runs up (and found none), once.
        if not inserted and statement.lstrip().startswith("SELECT invocations.uuid"):
            inserted.append(statement)
            other_writer()

    event.listen(engine, "after_cursor_execute", between_lookup_and_copy)
    rolled_back = rollbacks.append
    event.listen(engine, "rollback", rolled_back)
    try:
        recorder.record(steps)
    finally:
        event.remove(engine, "after_cursor_execute", between_lookup_and_copy)
        event.remove(engine, "rollback", rolled_back)
    assert len(inserted) == 1
    assert len(rollbacks) == 1  # the set-wise attempt, then event by event
    assert snapshot(engine) == expected


@pytest.mark.parametrize("dpt_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_replayed_sensor_batch_is_recorded_set_wise(dpt_backend, dpt_env):
    """The same finished steps recorded again (a spool replay, a sensor re-reading the
    event log from a reset cursor) by a process that knows nothing of them: the
    statements do not grow with the batch (they went event by event: ~10 per step), and
    no row changes."""
    engine = current_store().engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    costs = {}
    for n in (8, 64):
        steps = sensor_steps(n, 100 * n)
        rows = assert_same_rows(engine, [sensor_head(), steps, steps])
        empty_tracking(engine)
        BulkRecorder(engine).record([*sensor_head(), *steps])
        event.listen(engine, "before_cursor_execute", count)
        try:
            statements.clear()
            BulkRecorder(engine).record(steps)  # (a fresh process: nothing cached)
            costs[n] = len(statements)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert snapshot(engine) == rows
    assert costs[8] == costs[64] < 20, costs


@pytest.mark.parametrize(
    "change",
    [
        "nothing",
        "metadata",
        "size",
        "hash",
        "explicit parents",
        "read first",
        "newer version",
        "reported twice",
    ],
)
def test_a_replayed_write_changes_what_the_per_event_path_changes(dpt_env, change):
    """A write recorded again, as is or saying something else of its version: the rows
    are the per-event path's (the set-wise path takes only what changes nothing)."""
    engine = current_store().engine
    run, other = RUNS[1], RUNS[2]
    v_uuid, v_hash = version(1, 0)
    start = InvocationStarted(uuid=run, orchestrator="dagster", job="j", started_at=T0)
    written = ProductObservation(URIS[1], v_uuid, v_hash, size=10, metadata={"rows": 1})
    first: list[Event] = [start, ProductsWritten(run, (written,))]
    again = {
        "nothing": written,
        "metadata": ProductObservation(URIS[1], v_uuid, v_hash, size=10, metadata={"rows": 2}),
        "size": ProductObservation(URIS[1], v_uuid, None, size=11),
        "hash": ProductObservation(URIS[1], v_uuid, None, metadata={"rows": 1}),
        "explicit parents": written,
        "read first": written,
        "newer version": written,
        "reported twice": written,
    }[change]
    replay: list[Event] = [start, ProductsWritten(run, (again,))]
    if change == "reported twice":
        # One event names the version twice, the second time saying something else of it
        # (hypothesis found it, in a replayed batch): the per-event path takes the first
        # as the version's observation, then updates the version with each in turn.
        other_report = ProductObservation(URIS[1], v_uuid, v_hash, size=11, metadata={"n": 2})
        replay[1] = ProductsWritten(run, (written, other_report))
    if change == "explicit parents":
        first[1] = ProductsWritten(
            run, (ProductObservation(URIS[1], v_uuid, v_hash, size=10, parents=(URIS[0],)),)
        )
    if change == "read first":
        replay.insert(1, ProductsRead(run, (ProductObservation(URIS[1], v_uuid, v_hash),)))
    if change == "newer version":
        newer, newer_hash = version(1, 1)
        first += [
            InvocationStarted(uuid=other, orchestrator="dagster", job="j", started_at=T0),
            ProductsWritten(other, (ProductObservation(URIS[1], newer, v_hash, size=10),)),
        ]
    assert_same_rows(engine, [first, replay])


@pytest.mark.parametrize("dpt_backend", ["sqlite", "postgresql"], indirect=True)
def test_spooled_batches_recorded_together_cost_what_one_batch_costs(dpt_backend, dpt_env):
    """A spool of one-event batches (a process recording without a batch), replayed:
    together in one transaction they cost the statements of one set-wise batch, not
    ~5 per event, and leave the rows recording them one by one leaves."""
    engine = current_store().engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    costs = {}
    for n in (8, 64):
        spooled = [[e] for e in [*sensor_head(), *sensor_steps(n, 1000 * n)]]
        rows = record_with(engine, spooled, bulk=False)
        empty_tracking(engine)
        event.listen(engine, "before_cursor_execute", count)
        try:
            statements.clear()
            BulkRecorder(engine).record_many(spooled)
            costs[n] = len(statements)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert snapshot(engine) == rows
    assert costs[8] == costs[64] < 30, costs
