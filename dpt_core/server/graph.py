"""The lineage picture: collapse sibling fan-out, lay the graph out in layers, place it.

What the explorer's lineage page draws, computed on the server and handed to the
template as plain geometry (the template writes the SVG, escaping every name):

1. :func:`collapse` folds large sibling fan-outs into one node each. Working outwards
   from the root level by level, the versions at one distance from the root that hang
   off the same nearer nodes and were made by the same job (or were observed, made by
   no recorded run) are siblings; a set of more than ``threshold`` siblings keeps its
   first ``keep`` (by URI) and the rest become one :class:`Group` ("480 more outputs of
   run 3f2a9c1d"). Siblings hanging only off a group are folded whole, so what lies
   behind a fan-out stays behind it.
2. :func:`layout` places the folded graph with python-igraph's layered (Sugiyama)
   layout (``Graph.layout_sugiyama``: cycles broken by a feedback arc set, longest-path
   layering, barycentre crossing reduction, dummy vertices on long edges), turned on
   its side: parents left, children right, an edge running through the slots its
   dummy vertices took.

Nodes are versions (a product appears once per version in the graph); an edge is
"child derived from parent", labelled with the run that made it, as in
:class:`dpt_core.store.lineage.LineageGraph`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A fan-out of more siblings than this is collapsed ...
THRESHOLD = 12
#: ... keeping this many of them drawn.
KEEP = 6
#: At most this many boxes are drawn; farther levels are cut (and listed in the table).
MAX_DRAWN = 2500

#: Geometry of the picture (SVG user units, i.e. CSS pixels at zoom 1).
NODE_W = 232
NODE_H = 46
LAYER_GAP = 84
ROW_GAP = 16
MARGIN = 16


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One version in the picture.

    :param key: the version's UUID.
    :param depth: edges from the nearest root version; negative upstream of it.
    """

    key: str
    uri: str
    depth: int
    content_hash: str | None = None
    size: int | None = None
    recorded_at: str | None = None
    produced_by: str | None = None
    job: str | None = None
    task: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """``child`` (a version key) was derived from ``parent`` by run ``run`` (a UUID)."""

    parent: str
    child: str
    run: str | None = None
    job: str | None = None
    task: str | None = None


@dataclass(slots=True)
class Group:
    """Siblings folded into one box.

    :param key: ``"group-N"``, N counting from 1 in the order groups were made.
    :param members: the folded versions, by URI.
    :param run: the one run that made them all, if there is one.
    """

    key: str
    depth: int
    members: list[GraphNode]
    run: str | None
    job: str | None
    task: str | None

    @property
    def runs(self) -> int:
        return len({m.produced_by for m in self.members if m.produced_by})

    @property
    def label(self) -> str:
        """What the box says: ``480 more outputs of run 3f2a9c1d``."""
        count = len(self.members)
        if self.run is not None:
            return f"{count} more outputs of run {self.run[:8]}"
        if self.job is not None:
            return f"{count} more made by {self.job} ({self.runs} runs)"
        return f"{count} more {'inputs' if self.depth < 0 else 'versions'}, no producer"


@dataclass(slots=True)
class Folded:
    """:func:`collapse`'s result: what stays drawn, the groups, and where each version went."""

    nodes: list[GraphNode]
    groups: list[Group]
    #: version key -> the key drawn for it (its own, or its group's).
    shown_as: dict[str, str]
    #: ``(parent key, child key) -> number of version edges it stands for``, between drawn keys.
    edges: dict[tuple[str, str], int]
    #: ``(parent key, child key) -> {(run, job, task)}``: the runs that made those edges.
    makers: dict[tuple[str, str], set[tuple[str | None, str | None, str | None]]] = field(
        default_factory=dict
    )
    #: Versions not drawn because the picture reached ``max_drawn`` (their levels were cut).
    cut: list[GraphNode] = field(default_factory=list)
    #: The farthest level still drawn when levels were cut, else None.
    cut_after: int | None = None


def _nearer(nodes: dict[str, GraphNode], edges: Iterable[GraphEdge]) -> dict[str, list[str]]:
    """For each version, its neighbours one level closer to the root (the way it was reached)."""
    nearer: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        parent, child = nodes.get(edge.parent), nodes.get(edge.child)
        if parent is None or child is None:
            continue
        if child.depth > 0 and parent.depth == child.depth - 1:
            nearer[child.key].append(parent.key)
        if parent.depth < 0 and child.depth == parent.depth + 1:
            nearer[parent.key].append(child.key)
    return nearer


def collapse(
    nodes: Sequence[GraphNode],
    edges: Sequence[GraphEdge],
    *,
    threshold: int = THRESHOLD,
    keep: int = KEEP,
    max_drawn: int = MAX_DRAWN,
) -> Folded:
    """Fold sibling fan-outs of more than ``threshold`` versions (see the module docstring)."""
    by_key = {n.key: n for n in nodes}
    nearer = _nearer(by_key, edges)
    levels: dict[int, list[GraphNode]] = defaultdict(list)
    for node in nodes:
        levels[node.depth].append(node)
    shown_as: dict[str, str] = {n.key: n.key for n in levels.get(0, [])}
    groups: list[Group] = []
    group_keys: set[str] = set()
    farthest = max((abs(d) for d in levels), default=0)
    for distance in range(1, farthest + 1):
        for depth in (-distance, distance):
            siblings: dict[tuple[Any, ...], list[GraphNode]] = defaultdict(list)
            for node in levels.get(depth, ()):
                anchors = frozenset(shown_as.get(k, k) for k in nearer.get(node.key, ()))
                siblings[(node.job, node.task, anchors)].append(node)
            for (job, task, anchors), members in sorted(
                siblings.items(), key=lambda item: min(m.uri for m in item[1])
            ):
                members.sort(key=lambda m: (m.uri, m.key))
                if len(members) <= threshold:
                    for m in members:
                        shown_as[m.key] = m.key
                    continue
                behind_group = bool(anchors) and anchors <= group_keys
                kept = [] if behind_group else members[:keep]
                folded = members[len(kept) :]
                for m in kept:
                    shown_as[m.key] = m.key
                runs = {m.produced_by for m in folded}
                group = Group(
                    key=f"group-{len(groups) + 1}",
                    depth=depth,
                    members=folded,
                    run=next(iter(runs)) if len(runs) == 1 else None,
                    job=job,
                    task=task,
                )
                groups.append(group)
                group_keys.add(group.key)
                for m in folded:
                    shown_as[m.key] = group.key
    for node in nodes:  # unreachable from the roots through the edges given: drawn as is
        shown_as.setdefault(node.key, node.key)
    drawn = [n for n in nodes if shown_as[n.key] == n.key]
    folded_edges: dict[tuple[str, str], int] = defaultdict(int)
    makers: dict[tuple[str, str], set[tuple[str | None, str | None, str | None]]] = defaultdict(set)
    for edge in edges:
        if edge.parent not in by_key or edge.child not in by_key:
            continue
        ends = (shown_as[edge.parent], shown_as[edge.child])
        if ends[0] != ends[1]:
            folded_edges[ends] += 1
            makers[ends].add((edge.run, edge.job, edge.task))
    result = Folded(drawn, groups, shown_as, dict(folded_edges), dict(makers))
    _cut(result, max_drawn)
    return result


def _cut(folded: Folded, max_drawn: int) -> None:
    """Keep the levels nearest the root while the picture has at most ``max_drawn`` boxes."""
    sizes: dict[int, int] = defaultdict(int)
    for node in folded.nodes:
        sizes[abs(node.depth)] += 1
    for group in folded.groups:
        sizes[abs(group.depth)] += 1
    if sum(sizes.values()) <= max_drawn:
        return
    total, last = 0, 0
    for distance in sorted(sizes):
        if total + sizes[distance] > max_drawn and distance > 0:
            break
        total += sizes[distance]
        last = distance
    folded.cut_after = last
    folded.cut = [n for n in folded.nodes if abs(n.depth) > last]
    for group in folded.groups:
        if abs(group.depth) > last:
            folded.cut.extend(group.members)
    folded.nodes = [n for n in folded.nodes if abs(n.depth) <= last]
    folded.groups = [g for g in folded.groups if abs(g.depth) <= last]
    kept = {n.key for n in folded.nodes} | {g.key for g in folded.groups}
    folded.edges = {e: c for e, c in folded.edges.items() if e[0] in kept and e[1] in kept}


@dataclass(frozen=True, slots=True)
class Box:
    """A drawn node at ``(x, y)`` (its top-left corner): a version or a :class:`Group`."""

    key: str
    x: float
    y: float
    node: GraphNode | None
    group: Group | None


@dataclass(frozen=True, slots=True)
class Line:
    """A drawn edge: an SVG path through the layers, standing for ``count`` version edges."""

    parent: str
    child: str
    path: str
    count: int
    backwards: bool


@dataclass(frozen=True, slots=True)
class Picture:
    width: float
    height: float
    boxes: list[Box]
    lines: list[Line]
    layers: int


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _path(points: Sequence[tuple[float, float]]) -> str:
    """A path through ``points``: straight across a slot, a horizontal-tangent curve between layers."""
    parts = [f"M{_fmt(points[0][0])} {_fmt(points[0][1])}"]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if y0 == y1:
            parts.append(f"L{_fmt(x1)} {_fmt(y1)}")
            continue
        mid = (x0 + x1) / 2
        parts.append(f"C{_fmt(mid)} {_fmt(y0)} {_fmt(mid)} {_fmt(y1)} {_fmt(x1)} {_fmt(y1)}")
    return " ".join(parts)


def layout(folded: Folded, *, maxiter: int | None = None) -> Picture:
    """Place ``folded`` with igraph's Sugiyama layout, parents left of children.

    :param maxiter: crossing-reduction sweeps (default: 100 for small graphs, fewer for
        large ones, where each sweep costs more than it gains).
    """
    import igraph

    keys = [n.key for n in folded.nodes] + [g.key for g in folded.groups]
    index = {k: i for i, k in enumerate(keys)}
    pairs = sorted(folded.edges)
    graph = igraph.Graph(n=len(keys), edges=[(index[p], index[c]) for p, c in pairs], directed=True)
    if maxiter is None:
        maxiter = 100 if len(keys) <= 300 else 20
    placed = graph.layout_sugiyama(hgap=1, vgap=1, maxiter=maxiter) if keys else None
    coords: list[list[float]] = [list(c) for c in placed.coords] if placed is not None else []
    routes: list[Any] = list(getattr(placed, "edge_routing", None) or [[] for _ in pairs])
    if coords:
        low = min(c[0] for c in coords)
        for c in coords:
            c[0] -= low
        for route in routes:
            for point in route:
                point[0] -= low
    step_x, step_y = NODE_W + LAYER_GAP, NODE_H + ROW_GAP

    def corner(position: float, layer: float) -> tuple[float, float]:
        return MARGIN + layer * step_x, MARGIN + position * step_y

    nodes = {n.key: n for n in folded.nodes}
    groups = {g.key: g for g in folded.groups}
    boxes = []
    for key, (position, layer) in zip(keys, coords, strict=True):
        x, y = corner(position, layer)
        boxes.append(Box(key, x, y, nodes.get(key), groups.get(key)))
    lines = []
    for (parent, child), route in zip(pairs, routes, strict=True):
        (pp, pl), (cp, cl) = coords[index[parent]], coords[index[child]]
        px, py = corner(pp, pl)
        cx, cy = corner(cp, cl)
        backwards = cl <= pl
        middle = sorted(
            (corner(position, layer) for position, layer in route),
            key=lambda point: point[0],
            reverse=backwards,
        )
        if (
            backwards
        ):  # a cycle (or a re-written input): from the parent's left to the child's right
            points = [(px, py + NODE_H / 2)]
            for x, y in middle:
                points += [(x + NODE_W, y + NODE_H / 2), (x, y + NODE_H / 2)]
            points.append((cx + NODE_W, cy + NODE_H / 2))
        else:
            points = [(px + NODE_W, py + NODE_H / 2)]
            for x, y in middle:
                points += [(x, y + NODE_H / 2), (x + NODE_W, y + NODE_H / 2)]
            points.append((cx, cy + NODE_H / 2))
        lines.append(Line(parent, child, _path(points), folded.edges[(parent, child)], backwards))
    width = max((b.x for b in boxes), default=0) + NODE_W + MARGIN
    height = max((b.y for b in boxes), default=0) + NODE_H + MARGIN
    layers = int(max((c[1] for c in coords), default=-1)) + 1
    return Picture(width, height, boxes, lines, layers)
