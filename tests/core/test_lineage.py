"""Lineage closures on SQLite, PostgreSQL and MariaDB, built through the public API."""

from __future__ import annotations

import itertools
import json
import uuid
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import dpt_core
from dpt_core.events import ProductRef
from dpt_core.store.lineage import LineageGraph, closure, downstream_products, lineage
from dpt_core.uri import normalize_uri


@pytest.fixture
def strict(dpt_env, monkeypatch):
    """Tracking errors raise instead of being logged, so a broken record fails the test."""
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    return dpt_env


def step(job: str, reads=(), writes: dict | None = None, parents=None) -> str:
    """One invocation: read ``reads``, write each file of ``writes`` (path -> text); its UUID."""
    with dpt_core.invocation(job) as inv:
        if reads:
            inv.read(*reads)
        for path, text in (writes or {}).items():
            Path(path).write_text(text)
        if writes:
            inv.write(*writes, parents=parents)
    return inv.uuid


def uri(path) -> str:
    return normalize_uri(path)


def by_uri(graph: LineageGraph) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for node in graph.nodes:
        out.setdefault(node.uri, []).append(node.depth)
    return out


def edge_set(graph: LineageGraph) -> set[tuple[str, str, str | None]]:
    return {(e.parent, e.child, e.invocation) for e in graph.edges}


# --------------------------------------------------------------------------- shapes


def test_diamond_upstream_and_downstream(dpt_backend, strict, tmp_path):
    raw, left, right, top = (tmp_path / n for n in ("raw", "left", "right", "top"))
    make_raw = step("ingest", writes={raw: "raw"})
    make_left = step("left", [raw], {left: "L"})
    make_right = step("right", [raw], {right: "R"})
    make_top = step("combine", [left, right], {top: "T"})

    up = lineage(top, "upstream")
    assert up.root == uri(top) and up.direction == "upstream"
    assert by_uri(up) == {uri(top): [0], uri(left): [1], uri(right): [1], uri(raw): [2]}
    assert edge_set(up) == {
        (uri(left), uri(top), make_top),
        (uri(right), uri(top), make_top),
        (uri(raw), uri(left), make_left),
        (uri(raw), uri(right), make_right),
    }
    nodes = {n.uri: n for n in up.nodes}
    assert nodes[uri(raw)].produced_by == make_raw and nodes[uri(raw)].job == "ingest"
    assert nodes[uri(top)].content_hash == dpt_core.hash_file(top)
    assert nodes[uri(top)].status == "success"

    down = lineage(raw, "downstream")
    assert by_uri(down) == {uri(raw): [0], uri(left): [1], uri(right): [1], uri(top): [2]}
    assert len(down.edges) == 4
    assert dpt_core.lineage(raw, direction="downstream", depth=1).uris == [
        uri(raw),
        *sorted([uri(left), uri(right)]),
    ]


def test_to_dict_has_the_design_shape(dpt_backend, strict, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    step("make-a", writes={a: "a"})
    run = step("make-b", [a], {b: "b"})
    data = lineage(b).to_dict()
    assert set(data) >= {"root", "direction", "nodes", "edges"}
    assert data["root"] == uri(b) and data["direction"] == "upstream"
    assert [(n["uri"], n["depth"]) for n in data["nodes"]] == [(uri(b), 0), (uri(a), 1)]
    (edge,) = data["edges"]
    assert (edge["parent"], edge["child"], edge["invocation"], edge["job"]) == (
        uri(a),
        uri(b),
        run,
        "make-b",
    )


def test_long_chain_with_depth_limits(dpt_backend, strict, tmp_path):
    files = [tmp_path / f"f{i:02d}" for i in range(41)]
    step("source", writes={files[0]: "0"})
    runs = [step(f"s{i}", [files[i - 1]], {files[i]: str(i)}) for i in range(1, 41)]

    whole = lineage(files[40])
    assert len(whole.nodes) == 41 and len(whole.edges) == 40
    assert {n.uri: n.depth for n in whole.nodes} == {uri(f): 40 - i for i, f in enumerate(files)}

    five = lineage(files[40], depth=5)
    assert [n.uri for n in five.nodes] == [uri(files[40 - d]) for d in range(6)]
    assert [n.depth for n in five.nodes] == list(range(6))
    assert {(e.parent, e.child, e.invocation) for e in five.edges} == {
        (uri(files[i - 1]), uri(files[i]), runs[i - 1]) for i in range(36, 41)
    }

    assert [n.uri for n in lineage(files[40], depth=0).nodes] == [uri(files[40])]
    assert lineage(files[40], depth=0).edges == []

    down = lineage(files[0], "downstream", depth=10)
    assert [n.depth for n in down.nodes] == list(range(11))
    assert down.nodes[-1].uri == uri(files[10])
    assert len(lineage(files[0], "downstream").nodes) == 41


def test_products_shared_across_runs(dpt_backend, strict, tmp_path):
    flat, raw1, raw2, cal1, cal2 = (tmp_path / n for n in ("flat", "raw1", "raw2", "cal1", "cal2"))
    step("flat", writes={flat: "flat"})
    step("raws", writes={raw1: "r1", raw2: "r2"})
    run1 = step("calibrate", [raw1, flat], {cal1: "c1"})
    run2 = step("calibrate", [raw2, flat], {cal2: "c2"})
    down = lineage(flat, "downstream")
    assert by_uri(down) == {uri(flat): [0], uri(cal1): [1], uri(cal2): [1]}
    assert edge_set(down) == {(uri(flat), uri(cal1), run1), (uri(flat), uri(cal2), run2)}
    # The shared input is one node in each upstream graph.
    assert by_uri(lineage(cal2)) == {uri(cal2): [0], uri(raw2): [1], uri(flat): [1]}


def test_rewritten_product_has_several_versions(dpt_backend, strict, tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    step("inputs", writes={a: "a", b: "b"})
    first = step("v1", [a], {out: "one"})
    hash_one = dpt_core.hash_file(out)
    second = step("v2", [b], {out: "two"})
    third = step("v3", [a, b], {out: "three"})

    every = lineage(out, all_versions=True)
    roots = [n for n in every.nodes if n.depth == 0]
    assert sorted(n.produced_by for n in roots) == sorted([first, second, third])
    assert by_uri(every)[uri(a)] == [1] and by_uri(every)[uri(b)] == [1]
    assert len(every.edges) == 4

    only_first = lineage(out, version=roots[[n.produced_by for n in roots].index(first)].version)
    assert [(n.uri, n.produced_by) for n in only_first.nodes if n.depth == 0] == [(uri(out), first)]
    assert edge_set(only_first) == {(uri(a), uri(out), first)}
    assert edge_set(lineage(out, version=hash_one)) == {(uri(a), uri(out), first)}
    prefix = next(n.version for n in roots if n.produced_by == second)[:8]
    assert edge_set(lineage(out, version=prefix)) == {(uri(b), uri(out), second)}

    with pytest.raises(dpt_core.NotFound, match="has no version 'xxh3_128:00'"):
        lineage(out, version="xxh3_128:00")


def test_rewriting_an_input_makes_a_product_cycle_that_terminates(dpt_backend, strict, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    step("seed", writes={a: "a0"})
    ab1 = step("a-to-b", [a], {b: "b1"})
    ba = step("b-to-a", [b], {a: "a1"})  # a re-written from b: a -> b -> a at product level
    ab2 = step("a-to-b", [a], {b: "b2"})
    up = lineage(b, all_versions=True)
    assert edge_set(up) == {(uri(a), uri(b), ab1), (uri(b), uri(a), ba), (uri(a), uri(b), ab2)}
    assert by_uri(up) == {uri(b): [0, 0], uri(a): [1, 1]}  # b1 is a root and also upstream of b2
    for limit in (1, 3, 50):
        assert by_uri(lineage(b, depth=limit, all_versions=True)) == by_uri(up)
    down = lineage(a, "downstream", all_versions=True)
    assert edge_set(down) == edge_set(up)
    # From the version on disk (b2), the loop is walked down to the first a.
    assert by_uri(lineage(b)) == {uri(b): [0, 2], uri(a): [1, 3]}
    assert edge_set(lineage(a, "downstream")) == {(uri(a), uri(b), ab2)}


def test_version_level_cycle_terminates(dpt_backend, strict, tmp_path):
    """A run that reads, after writing, something derived from its own output closes a loop."""
    p, q = tmp_path / "p", tmp_path / "q"
    tracker = dpt_core.get_tracker()
    outer = tracker.start("outer")
    p.write_text("p")
    outer.write(p)
    inner = tracker.start("inner", parent=outer)
    inner.read(p)
    q.write_text("q")
    inner.write(q)
    inner.finish()
    outer.read(q)  # implicit parents: p now derives from q, which derives from p
    outer.finish()
    loop = strict.scalar(
        "SELECT COUNT(*) FROM lineage_edges e JOIN lineage_edges f "
        "ON e.child_version_id = f.parent_version_id AND f.child_version_id = e.parent_version_id"
    )
    assert loop == 2  # the data really is cyclic
    for direction, limit in itertools.product(("upstream", "downstream"), (None, 0, 1, 2, 7)):
        graph = lineage(p, direction, limit)
        expected = {uri(p): [0]} if limit == 0 else {uri(p): [0], uri(q): [1]}
        assert by_uri(graph) == expected
        expected_edges = (
            set() if limit == 0 else {(uri(p), uri(q), inner.uuid), (uri(q), uri(p), outer.uuid)}
        )
        if limit == 1:
            # one step from p: only the edge that reaches q
            expected_edges = (
                {(uri(q), uri(p), outer.uuid)}
                if direction == "upstream"
                else {(uri(p), uri(q), inner.uuid)}
            )
        assert edge_set(graph) == expected_edges


def test_unknown_targets_raise_not_found(dpt_backend, strict, tmp_path):
    step("one", writes={tmp_path / "known": "k"})
    with pytest.raises(dpt_core.NotFound, match=r"no product file://.*/missing is recorded"):
        lineage(tmp_path / "missing")
    with pytest.raises(ValueError, match="direction"):
        lineage(tmp_path / "known", "sideways")
    with pytest.raises(ValueError, match="depth"):
        lineage(tmp_path / "known", depth=-1)


def test_downstream_products_helper(dpt_backend, strict, tmp_path):
    a, b, c, d = (tmp_path / n for n in "abcd")
    ra = step("a", writes={a: "a"})
    rb = step("b", [a], {b: "b"})
    rc = step("c", [b], {c: "c"})
    step("d", writes={d: "d"})
    seeds = [
        r.id
        for r in strict.rows(
            "SELECT v.id FROM data_product_versions v JOIN data_products p ON p.id = v.product_id WHERE p.uri = :u",
            u=uri(a),
        )
    ]
    from dpt_core.store.plugin import current_store

    with current_store().engine.connect() as conn:
        items = downstream_products(conn, seeds)
        reach = closure(conn, seeds, "downstream", depth=1)
    assert [(i["uri"], i["depth"], i["runs"]) for i in items] == [
        (uri(a), 0, [ra]),
        (uri(b), 1, [rb]),
        (uri(c), 2, [rc]),
    ]
    assert sorted(reach.details[v].uri for v in reach.depths) == sorted([uri(a), uri(b)])


def selects_during(engine, func, *args, **kwargs):
    """``func(*args, **kwargs)`` and the SELECT statements it sent through ``engine``."""
    from sqlalchemy import event

    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        return func(*args, **kwargs), sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_closure_is_one_statement_whatever_its_size(dpt_backend, strict, tmp_path):
    from dpt_core.store.plugin import current_store

    files = [tmp_path / f"c{i}" for i in range(12)]
    step("source", writes={files[0]: "0", files[1]: "1"})
    for i in range(2, 12):  # each file made from the two before it
        step(f"s{i}", [files[i - 2], files[i - 1]], {files[i]: str(i)})
    engine = current_store().engine
    for direction, target in (("upstream", files[11]), ("downstream", files[0])):
        for limit in (None, 3):
            graph, sent = selects_during(engine, lineage, target, direction, limit)
            # The version on disk (one indexed lookup), then the closure: no query per
            # node, none for the edges' runs.
            assert len(sent) == 2 and "RECURSIVE" not in sent[0].upper(), sent
            assert graph.edges and all(e.invocation and e.job for e in graph.edges)
            every, sent = selects_during(
                engine, lineage, target, direction, limit, all_versions=True
            )
            assert len(sent) == 1, sent  # every version: seeded inside the closure itself
            assert every.to_dict() == graph.to_dict()  # each product has one version here


def test_an_edge_made_by_another_run_than_its_childs_producer(dpt_backend, strict, tmp_path):
    """Two runs recording the same version: the edges carry the run that made them."""
    from dpt_core.store.plugin import current_store

    a, b = tmp_path / "a", tmp_path / "b"
    make_a = step("make-a", writes={a: "a"})
    version = str(uuid.uuid4())
    b.write_text("b")
    with dpt_core.invocation("first") as first:
        first.write(ProductRef(b, version_uuid=version))
    with dpt_core.invocation("second", task="again") as second:
        second.read(a)
        second.write(ProductRef(b, version_uuid=version))  # the same version, first's
    engine = current_store().engine

    up, sent = selects_during(engine, lineage, b, all_versions=True)
    assert len(sent) == 2  # the closure, then the one run no node row names
    assert [(n.uri, n.produced_by, n.job) for n in up.nodes] == [
        (uri(b), first.uuid, "first"),
        (uri(a), make_a, "make-a"),
    ]
    assert [(e.parent, e.child, e.invocation, e.job, e.task) for e in up.edges] == [
        (uri(a), uri(b), second.uuid, "second", "again")
    ]
    down = lineage(a, "downstream")
    assert [(e.invocation, e.job, e.task) for e in down.edges] == [(second.uuid, "second", "again")]
    with engine.connect() as conn:
        vid = conn.execute(
            text("SELECT id FROM data_product_versions WHERE uuid = :u"), {"u": version}
        ).scalar()
        (edge,) = closure(conn, [vid], "upstream").edges
    assert edge[1:] == (vid, second.uuid, "second", "again")

    # A run deleted afterwards leaves its edges without one (ON DELETE SET NULL).
    with engine.begin() as conn:
        conn.execute(text("UPDATE lineage_edges SET invocation_id = NULL"))
    (orphan,) = lineage(b).edges
    assert (orphan.parent, orphan.invocation, orphan.job, orphan.task) == (uri(a), None, None, None)


def test_recorded_at_is_the_stored_instant_in_utc(dpt_backend, strict, tmp_path):
    """Whatever the session's time zone (PostgreSQL converts timestamptz to it)."""
    import datetime as dt

    from sqlalchemy import event, select

    from dpt_core.store.models import DataProductVersion
    from dpt_core.store.plugin import current_store

    a, b = tmp_path / "a", tmp_path / "b"
    step("make-a", writes={a: "a"})
    step("make-b", [a], {b: "b"})
    engine = current_store().engine
    if strict.backend == "postgresql":

        def far_from_utc(dbapi_connection, _record):
            dbapi_connection.execute("SET TIME ZONE 'Asia/Kolkata'")  # +05:30
            dbapi_connection.commit()  # a SET inside a rolled-back transaction is undone

        event.listen(engine, "connect", far_from_utc)
        engine.dispose()
    with engine.connect() as conn:
        rows = conn.execute(select(DataProductVersion.uuid, DataProductVersion.recorded_at))
        stored = {version: recorded for version, recorded in rows}
    if strict.backend != "mysql":  # MariaDB keeps whole seconds
        assert any(t.microsecond for t in stored.values())  # a real clock, fractions too
    for direction, target in (("upstream", b), ("downstream", a)):
        for node in lineage(target, direction).nodes:
            assert node.recorded_at == stored[node.version]
            assert node.recorded_at.utcoffset() == dt.timedelta(0)
            assert node.to_dict()["recorded_at"] == stored[node.version].isoformat()


# --------------------------------------------------------------------------- properties


def reference_closure(
    parents: dict[int, set[int]], start: int, limit: int | None, upstream: bool
) -> dict[int, int]:
    following: dict[int, set[int]] = {n: set() for n in parents}
    for child, ps in parents.items():
        for p in ps:
            if upstream:
                following[child].add(p)
            else:
                following[p].add(child)
    depths = {start: 0}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if limit is not None and depths[here] >= limit:
            continue
        for there in following[here]:
            if there not in depths:
                depths[there] = depths[here] + 1
                queue.append(there)
    return depths


def random_digraphs(acyclic: bool):
    def build(n: int):
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (not acyclic or i < j)]
        return (
            st.sets(st.sampled_from(pairs), max_size=len(pairs)).map(
                lambda edges: {j: {i for i, k in edges if k == j} for j in range(n)}
            )
            if pairs
            else st.just({0: set()})
        )

    return st.integers(min_value=1, max_value=6).flatmap(build)


PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(dag=random_digraphs(acyclic=True), limit=st.one_of(st.none(), st.integers(0, 4)))
def test_random_dags_match_a_python_closure_and_rerecording_is_idempotent(
    dpt_backend, strict, tmp_path, dag, limit
):
    base = tmp_path / uuid.uuid4().hex[:8]
    base.mkdir()
    files = {i: base / f"n{i}" for i in dag}
    ids = {i: (str(uuid.uuid4()), str(uuid.uuid4())) for i in dag}  # (invocation, version)

    def record() -> None:
        for i in sorted(dag):  # i < j for every edge: topological order
            files[i].write_text(f"node {i}")
            with dpt_core.invocation(f"make{i}", uuid=ids[i][0]) as inv:
                if dag[i]:
                    inv.read(
                        *(ProductRef(files[p], version_uuid=ids[p][1]) for p in sorted(dag[i]))
                    )
                inv.write(ProductRef(files[i], version_uuid=ids[i][1]))

    record()
    counts = [
        strict.scalar(f"SELECT COUNT(*) FROM {t}")
        for t in ("invocations", "data_product_versions", "lineage_edges", "invocation_inputs")
    ]
    for node in dag:
        for upstream in (True, False):
            graph = lineage(files[node], "upstream" if upstream else "downstream", limit)
            expected = reference_closure(dag, node, limit, upstream)
            assert {n.uri: n.depth for n in graph.nodes} == {
                uri(files[k]): d for k, d in expected.items()
            }
            for e in graph.edges:
                child = int(Path(e.child).name[1:])
                assert e.invocation == ids[child][0]
    before = {node: lineage(files[node]).to_dict() for node in dag}
    record()  # the same events again: nothing new
    again = [
        strict.scalar(f"SELECT COUNT(*) FROM {t}")
        for t in ("invocations", "data_product_versions", "lineage_edges", "invocation_inputs")
    ]
    assert again == counts
    assert {node: lineage(files[node]).to_dict() for node in dag} == before


@PROPERTY_SETTINGS
@given(graph=random_digraphs(acyclic=False), limit=st.one_of(st.none(), st.integers(0, 3)))
def test_random_cyclic_graphs_terminate_and_match_a_python_closure(
    dpt_backend, strict, tmp_path, graph, limit
):
    base = tmp_path / uuid.uuid4().hex[:8]
    base.mkdir()
    files = {i: base / f"n{i}" for i in graph}
    tracker = dpt_core.get_tracker()
    handles = {}
    for i in graph:  # write every node first (implicit parents) ...
        files[i].write_text(f"node {i}")
        handles[i] = tracker.start(f"make{i}")
        handles[i].write(files[i])
    for i in graph:  # ... then read its parents: parent -> i edges, cycles included
        if graph[i]:
            handles[i].read(*(files[p] for p in sorted(graph[i])))
        handles[i].finish()
    for node in graph:
        for upstream in (True, False):
            result = lineage(files[node], "upstream" if upstream else "downstream", limit)
            expected = reference_closure(graph, node, limit, upstream)
            assert {n.uri: n.depth for n in result.nodes} == {
                uri(files[k]): d for k, d in expected.items()
            }


# --------------------------------------------------------------------------- which version


def roots(graph: LineageGraph) -> list[str | None]:
    """The runs that made the graph's root versions."""
    return sorted(n.produced_by or "" for n in graph.nodes if n.depth == 0)


def rerun(tmp_path: Path, times: int) -> list[dict[str, str]]:
    """An unchanged two-step pipeline run ``times`` times in one directory; the runs of each."""
    raw, cal = tmp_path / "raw.csv", tmp_path / "cal.csv"
    return [
        {"ingest": step("ingest", writes={raw: "raw"}), "cal": step("cal", [raw], {cal: "cal"})}
        for _ in range(times)
    ]


def test_a_rerun_pipeline_shows_the_version_on_disk_once(dpt_backend, strict, tmp_path):
    raw, cal = tmp_path / "raw.csv", tmp_path / "cal.csv"
    first, second = rerun(tmp_path, 2)
    up = lineage(cal)
    assert [(n.uri, n.depth, n.produced_by) for n in up.nodes] == [
        (uri(cal), 0, second["cal"]),
        (uri(raw), 1, second["ingest"]),
    ]
    assert edge_set(up) == {(uri(raw), uri(cal), second["cal"])}
    assert (up.selection, up.versions) == ("on_disk", 2)
    # "What depends on this file": from the version on disk as well (see docs/lineage.md).
    down = dpt_core.lineage(raw, direction="downstream")
    assert [(n.uri, n.produced_by) for n in down.nodes] == [
        (uri(raw), second["ingest"]),
        (uri(cal), second["cal"]),
    ]
    # The whole history is one argument away.
    every = dpt_core.lineage(cal, all_versions=True)
    assert roots(every) == sorted([first["cal"], second["cal"]])
    assert edge_set(every) == {(uri(raw), uri(cal), run["cal"]) for run in (first, second)}
    assert every.selection == "all_versions"
    assert len(lineage(raw, "downstream", all_versions=True).nodes) == 4


def test_the_version_on_disk_follows_the_files_content(dpt_backend, strict, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    step("src", writes={src: "s"})
    one = step("v1", [src], {out: "one"})
    two = step("v2", [src], {out: "two"})
    assert roots(lineage(out)) == [two]  # changed: the new version is on disk
    out.write_text("one")  # back to the first content, not recorded: that version is on disk
    graph = lineage(out, "upstream")
    assert roots(graph) == [one] and graph.selection == "on_disk"
    assert edge_set(graph) == {(uri(src), uri(out), one)}
    three = step("v3", [src], {out: "one"})  # the same content again: the newest such version
    assert roots(lineage(out)) == [three]
    out.write_text("never recorded")  # matches no version: the newest, and why
    graph = lineage(out)
    assert roots(graph) == [three] and graph.selection == "newest"
    assert "differs from every recorded version" in (graph.note or "")


def test_a_missing_file_shows_its_newest_version(dpt_backend, strict, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    step("src", writes={src: "s"})
    step("v1", [src], {out: "one"})
    two = step("v2", [src], {out: "two"})
    out.unlink()
    graph = lineage(out)
    assert roots(graph) == [two] and graph.selection == "newest"
    assert "missing" in (graph.note or "")
    assert len([n for n in lineage(out, all_versions=True).nodes if n.depth == 0]) == 2


def test_a_product_that_is_not_a_local_file_shows_its_newest_version(dpt_env, tmp_path):
    src = tmp_path / "src"
    step("src", writes={src: "s"})
    runs = []
    for _ in range(2):
        with dpt_core.invocation("upload") as inv:
            inv.read(src)
            inv.write("s3://bucket/key.csv")
        runs.append(inv.uuid)
    graph = lineage("s3://bucket/key.csv")
    assert roots(graph) == [runs[1]] and graph.selection == "newest"
    assert [n.uri for n in graph.nodes] == ["s3://bucket/key.csv", uri(src)]


def test_an_unchanged_file_is_not_read_to_find_its_version(dpt_env, tmp_path, monkeypatch):
    """Size and mtime first, then the stat cache: a file is hashed once, not per query."""
    import os

    from dpt_core import hashing

    reads: list[bytes] = []
    real = hashing._hash_regular
    monkeypatch.setattr(hashing, "_hash_regular", lambda p, a: (reads.append(p), real(p, a))[1])
    src, out = tmp_path / "src", tmp_path / "out"
    step("src", writes={src: "s"})
    made = step("out", [src], {out: "o"})
    reads.clear()
    assert roots(lineage(out)) == [made] and reads == []  # size and mtime match: no read
    os.utime(out, (1_000_000, 1_000_000))  # same bytes, another mtime
    assert roots(lineage(out)) == [made] and reads == [os.fsencode(out)]
    assert roots(lineage(out)) == [made] and len(reads) == 1  # the stat cache knew it


def test_version_and_all_versions_are_exclusive(dpt_env, tmp_path):
    step("one", writes={tmp_path / "one": "1"})
    with pytest.raises(ValueError, match="version or all_versions"):
        dpt_core.lineage(tmp_path / "one", version="xxh3_128:00", all_versions=True)


# --------------------------------------------------------------------------- planner statistics


def bulk_load_grid(engine, width: int, levels: int) -> None:
    """A ``levels`` x ``width`` grid made in SQL (each product from two above), no ANALYZE after.

    Product ``i`` is ``grid://p<i>``, version ``i``, made by run ``i``.
    """
    count = width * levels
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO invocations (id, uuid, orchestrator, job, status, started_at) "
            "SELECT i, gen_random_uuid()::text, 'bulk', 'level' || ((i - 1) / :w), 'success', now() "
            "FROM generate_series(1, :n) i",
            "INSERT INTO data_products (id, uri_digest, uri, created_at) "
            "SELECT i, encode(sha256(convert_to('grid://p' || i, 'UTF8')), 'hex'), 'grid://p' || i, "
            "now() FROM generate_series(1, :n) i",
            "INSERT INTO data_product_versions (id, uuid, product_id, content_hash, size, "
            "produced_by_id, explicit_parents, recorded_at) "
            "SELECT i, gen_random_uuid()::text, i, 'xxh3_128:' || lpad(to_hex(i), 32, '0'), 1, i, "
            "false, now() FROM generate_series(1, :n) i",
            "INSERT INTO lineage_edges (parent_version_id, child_version_id, invocation_id) "
            "SELECT (i - 1) / :w * :w - :w + ((i - 1) % :w + o) % :w + 1, i, i "
            "FROM generate_series(:w + 1, :n) i, (VALUES (0), (1)) AS offsets(o)",
        ):
            conn.execute(text(sql), {"w": width, "n": count})
        # Counters reach the shared statistics when the session goes idle, at most once a
        # second; this makes that the moment the commit returns (PostgreSQL 15+).
        conn.execute(text("SELECT pg_stat_force_next_flush()"))


def scans_of(plan: dict, table: str) -> list[str]:
    """``"<node type> <index>"`` of every scan of ``table`` in an EXPLAIN (FORMAT JSON) plan."""
    found = []
    if plan.get("Relation Name") == table:
        index = plan.get("Index Name") or " ".join(
            p.get("Index Name", "")
            for p in plan.get("Plans", ())  # a bitmap heap scan's
        )
        found.append(f"{plan['Node Type']} {index}".strip())
    for child in plan.get("Plans", ()):
        found.extend(scans_of(child, table))
    return found


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
def test_closures_probe_the_edge_indexes_without_planner_statistics(dpt_backend, dpt_env):
    """Right after a bulk load, before any ANALYZE (autovacuum off), the recursive step must
    not scan the whole edge table once per level (it did: 300-900 ms instead of 4 ms)."""
    from sqlalchemy import event

    from dpt_core.store.plugin import current_store

    engine = current_store().engine
    width, levels = 400, 40  # 16 000 products, 31 200 edges
    bulk_load_grid(engine, width, levels)
    with engine.connect() as conn:
        analysed = conn.execute(
            text(
                "SELECT count(*) FROM pg_stats WHERE tablename IN "
                "('lineage_edges', 'data_product_versions', 'data_products')"
            )
        ).scalar()
        assert analysed == 0  # the case at hand: no statistics at all
        autovacuum_on = conn.execute(text("SHOW autovacuum")).scalar() == "on"
    with engine.begin() as conn:
        if autovacuum_on:  # it could analyse the tables under the test's feet
            for table in ("lineage_edges", "data_product_versions", "data_products"):
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        # Every plan would be JIT-compiled (as a big graph's estimate would be) unless dpt says no.
        conn.execute(text(f"ALTER DATABASE {engine.url.database} SET jit_above_cost = 0"))
    engine.dispose()

    plans: list[tuple[dict, str, float]] = []
    lookups: list[str] = []  # JIT as the lookup of the version on disk is planned

    def explain(conn, cursor, statement, parameters, context, executemany):
        if "uri_digest" in statement and "count(" in statement.lower():
            with cursor.connection.cursor() as c:
                c.execute("SELECT current_setting('jit')")
                lookups.append(c.fetchone()[0])
        if "RECURSIVE" in statement.upper():
            with cursor.connection.cursor() as c:  # same session and transaction
                c.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                (plan,) = c.fetchone()[0]
                c.execute("SELECT current_setting('jit'), current_setting('jit_above_cost')")
                jit, above = c.fetchone()
            plans.append((plan, jit, float(above)))

    deep, top = width * (levels - 1) + width // 2, width // 2
    event.listen(engine, "before_cursor_execute", explain)
    try:
        up = lineage(f"grid://p{deep}", "upstream")
        limited = lineage(f"grid://p{deep}", "upstream", depth=5)
        down = lineage(f"grid://p{top}", "downstream", depth=10)
        every = lineage(f"grid://p{top}", "downstream", all_versions=True)
        with engine.connect() as conn:
            reached = closure(conn, [deep], "upstream", depth=3)
    finally:
        event.remove(engine, "before_cursor_execute", explain)
    # What the queries found (a product 39 levels down has ancestors up to 39 wide).
    assert len(up.nodes) == sum(min(d + 1, width) for d in range(levels))
    assert [n.depth for n in limited.nodes][-1] == 5 and len(limited.nodes) == 21
    assert len(down.nodes) == 66 and len(reached.depths) == 10
    assert len(every.nodes) == len(up.nodes)  # the grid is as wide down as up
    assert len(plans) == 5
    for plan, jit, jit_above_cost in plans:
        scans = scans_of(plan["Plan"], "lineage_edges")
        assert scans and all(
            ("Index" in scan or "Bitmap" in scan) and "lineage_edges" in scan for scan in scans
        ), scans
        # JIT-compiling a 2 ms query costs ~100 ms; without statistics its estimate passes the bar.
        assert jit_above_cost == 0 and jit == "off"
    # The lookup before the closure is planned with JIT off too (at 10 000 000 products
    # without statistics its own estimate passes the bar: 38 ms of JIT for 0.1 ms of work).
    assert lookups == ["off", "off", "off"]


def doctor_statistics(dpt_env) -> dict:
    from click.testing import CliRunner

    from dpt_core.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["doctor", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output  # advice never fails the doctor
    (check,) = [c for c in json.loads(result.stdout) if c["check"] == "statistics"]
    assert check["ok"] is True
    return check


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
def test_doctor_advises_when_nothing_refreshes_postgresql_statistics(dpt_backend, dpt_env):
    from dpt_core.store.plugin import current_store

    engine = current_store().engine
    with engine.connect() as conn:
        autovacuum = conn.execute(text("SHOW autovacuum")).scalar()
    bulk_load_grid(engine, 100, 10)
    check = doctor_statistics(dpt_env)
    if autovacuum == "off":  # this machine's server
        assert check["detail"].startswith("autovacuum is off")
        assert "ANALYZE" in check["advice"] and "autovacuum" in check["advice"]
        assert check["tables"] == {
            t: "never analysed"
            for t in ("data_product_versions", "data_products", "invocations", "lineage_edges")
        }
    else:
        assert "advice" not in check and check["detail"].startswith("autovacuum is on")
    # A table opted out of autovacuum is named whatever the server's setting.
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
        conn.execute(text("ALTER TABLE lineage_edges SET (autovacuum_enabled = off)"))
    check = doctor_statistics(dpt_env)
    assert "tables" not in check and "ANALYZE" in check["advice"]  # analysed: none due now
    if autovacuum == "on":
        assert check["detail"].startswith("autovacuum is disabled on lineage_edges")
    with engine.begin() as conn:  # more than 10 % changed since: due again
        conn.execute(text("DELETE FROM lineage_edges WHERE child_version_id > 800"))
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
    assert doctor_statistics(dpt_env)["tables"] == {
        "lineage_edges": "400 rows changed since the last ANALYZE"
    }


@pytest.mark.parametrize("dpt_backend", ["mysql"], indirect=True)
def test_doctor_advises_when_innodb_does_not_recalculate_statistics(dpt_backend, dpt_env):
    from dpt_core.store.plugin import current_store

    engine = current_store().engine
    with engine.connect() as conn:
        recalc = conn.execute(text("SELECT @@innodb_stats_auto_recalc")).scalar()
    check = doctor_statistics(dpt_env)
    assert ("advice" in check) == (not int(recalc))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE lineage_edges STATS_AUTO_RECALC=0"))
    check = doctor_statistics(dpt_env)
    assert "lineage_edges" in check["detail"] and "ANALYZE TABLE" in check["advice"]


def test_doctor_on_sqlite_has_nothing_to_advise(dpt_env):
    check = doctor_statistics(dpt_env)
    assert "advice" not in check and check["detail"].startswith("sqlite")
