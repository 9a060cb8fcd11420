"""The lineage picture's folding and layout (dpt_core.server.graph), without a server."""

from __future__ import annotations

import itertools
import re

import pytest

pytest.importorskip("igraph")

from dpt_core.server.graph import (  # noqa: E402
    NODE_H,
    NODE_W,
    GraphEdge,
    GraphNode,
    collapse,
    layout,
)

ROOT = GraphNode(
    "root", "file:///data/root.csv", 0, "xxh3_128:aa", produced_by="r0" * 18, job="make"
)


def outputs_of_one_run(count: int, depth: int = 1) -> tuple[list[GraphNode], list[GraphEdge]]:
    run = "3f2a9c1d-0000-0000-0000-000000000000"
    nodes = [
        GraphNode(
            f"out{i:03d}", f"file:///data/out/{i:03d}.fits", depth, produced_by=run, job="cut"
        )
        for i in range(count)
    ]
    edges = [GraphEdge("root", n.key, run, "cut") for n in nodes]
    return nodes, edges


def test_a_fan_out_over_the_threshold_becomes_one_box_naming_the_run() -> None:
    nodes, edges = outputs_of_one_run(486)
    folded = collapse([ROOT, *nodes], edges)
    assert [n.key for n in folded.nodes] == [
        "root",
        "out000",
        "out001",
        "out002",
        "out003",
        "out004",
        "out005",
    ]
    (group,) = folded.groups
    assert group.label == "480 more outputs of run 3f2a9c1d"
    assert [m.key for m in group.members] == [f"out{i:03d}" for i in range(6, 486)]
    assert all(folded.shown_as[f"out{i:03d}"] == group.key for i in range(6, 486))
    assert folded.edges[("root", group.key)] == 480  # one drawn edge standing for 480
    assert len(folded.edges) == 7


@pytest.mark.parametrize(("count", "groups"), [(12, 0), (13, 1)])
def test_the_threshold_is_more_than_twelve_siblings(count: int, groups: int) -> None:
    nodes, edges = outputs_of_one_run(count)
    folded = collapse([ROOT, *nodes], edges)
    assert len(folded.groups) == groups
    assert len(folded.nodes) + sum(len(g.members) for g in folded.groups) == count + 1


def test_siblings_are_grouped_by_job_and_by_what_they_hang_off() -> None:
    a = [GraphNode(f"a{i}", f"file:///a/{i}", 1, produced_by=f"ra{i}", job="A") for i in range(10)]
    b = [GraphNode(f"b{i}", f"file:///b/{i}", 1, produced_by=f"rb{i}", job="B") for i in range(10)]
    edges = [GraphEdge("root", n.key, n.produced_by, n.job) for n in a + b]
    folded = collapse([ROOT, *a, *b], edges)
    assert folded.groups == []  # 20 siblings, but two jobs of 10 each
    assert len(folded.nodes) == 21


def test_what_hangs_behind_a_folded_fan_out_is_folded_whole() -> None:
    cal = [
        GraphNode(
            f"c{i:02d}", f"file:///cal/{i:02d}", 1, produced_by=f"run-c{i:02d}", job="calibrate"
        )
        for i in range(30)
    ]
    lc = [
        GraphNode(
            f"l{i:02d}", f"file:///lc/{i:02d}", 2, produced_by=f"run-l{i:02d}", job="lightcurve"
        )
        for i in range(30)
    ]
    edges = [GraphEdge("root", c.key, c.produced_by, c.job) for c in cal]
    edges += [GraphEdge(c.key, o.key, o.produced_by, o.job) for c, o in zip(cal, lc, strict=True)]
    folded = collapse([ROOT, *cal, *lc], edges)
    first, second = folded.groups
    assert first.label == "24 more made by calibrate (24 runs)"
    assert second.label == "24 more made by lightcurve (24 runs)"
    assert {m.key for m in second.members} == {f"l{i:02d}" for i in range(6, 30)}
    # the six calibrations kept each keep their own light curve, drawn
    assert {n.key for n in folded.nodes} == {"root"} | {f"c{i:02d}" for i in range(6)} | {
        f"l{i:02d}" for i in range(6)
    }
    assert folded.edges[(first.key, second.key)] == 24


def test_inputs_with_no_producer_fold_upstream() -> None:
    raws = [GraphNode(f"raw{i:02d}", f"s3://survey/raw/{i:02d}.fits", -1) for i in range(20)]
    edges = [GraphEdge(r.key, "root", "r0" * 18, "make") for r in raws]
    folded = collapse([ROOT, *raws], edges)
    (group,) = folded.groups
    assert group.label == "14 more inputs, no producer"
    assert folded.edges[(group.key, "root")] == 14


def test_levels_beyond_the_drawing_limit_are_cut_and_kept_for_the_table() -> None:
    chain = [
        GraphNode(f"n{i:02d}", f"file:///chain/{i:02d}", i, produced_by=f"r{i}", job="step")
        for i in range(1, 50)
    ]
    edges = [GraphEdge(a.key, b.key) for a, b in itertools.pairwise([ROOT, *chain])]
    folded = collapse([ROOT, *chain], edges, max_drawn=10)
    assert folded.cut_after == 9
    assert [n.key for n in folded.nodes] == ["root"] + [f"n{i:02d}" for i in range(1, 10)]
    assert [n.key for n in folded.cut] == [f"n{i:02d}" for i in range(10, 50)]
    assert all(p in {n.key for n in folded.nodes} for p, _ in folded.edges)


def _boxes_by_key(picture):  # type: ignore[no-untyped-def]
    return {b.key: b for b in picture.boxes}


def test_layout_puts_parents_left_of_children_without_overlaps() -> None:
    # a diamond, a long edge (root -> d skips a layer) and a fan-in
    nodes = [ROOT] + [GraphNode(k, f"file:///{k}", 1) for k in "abcd"]
    edges = [
        GraphEdge("root", "a"),
        GraphEdge("root", "b"),
        GraphEdge("a", "c"),
        GraphEdge("b", "c"),
        GraphEdge("c", "d"),
        GraphEdge("root", "d"),
    ]
    picture = layout(collapse(nodes, edges))
    boxes = _boxes_by_key(picture)
    for edge in edges:
        assert boxes[edge.parent].x < boxes[edge.child].x, edge
    for one, other in itertools.combinations(picture.boxes, 2):
        overlap_x = abs(one.x - other.x) < NODE_W
        overlap_y = abs(one.y - other.y) < NODE_H
        assert not (overlap_x and overlap_y), (one.key, other.key)
    assert picture.layers == 4
    assert picture.width >= boxes["d"].x + NODE_W
    long_edge = next(line for line in picture.lines if (line.parent, line.child) == ("root", "d"))
    # routed through the slots of the two layers it crosses (straight across them and
    # between them, both dummies sharing a row), curving only out of root and into d
    assert long_edge.path.count("L") == 3
    assert long_edge.path.count("C") == 2
    assert all(line.path.startswith("M") for line in picture.lines)


def test_a_cycle_is_drawn_with_one_edge_going_back() -> None:
    nodes = [ROOT, GraphNode("x", "file:///x", 1)]
    edges = [GraphEdge("root", "x"), GraphEdge("x", "root")]
    picture = layout(collapse(nodes, edges))
    assert sorted(line.backwards for line in picture.lines) == [False, True]
    numbers = [
        float(v) for line in picture.lines for v in re.findall(r"-?\d+(?:\.\d+)?", line.path)
    ]
    assert all(v >= 0 for v in numbers)


def test_an_empty_graph_is_an_empty_picture() -> None:
    picture = layout(collapse([], []))
    assert picture.boxes == [] and picture.lines == [] and picture.layers == 0
