"""Lineage closures: one recursive SQL query per call, on SQLite, PostgreSQL and MariaDB.

The graph lives at the *version* level: ``lineage_edges`` link a parent version
to a child version and carry the invocation that made the child. A closure
starts from a set of version ids (every version of a product by default, or
one given version) and follows edges upstream (towards parents) or downstream
(towards children).

Cycle safety
    Re-writing an input (``a -> b``, then ``b -> a``), an invocation that reads
    what it wrote, or explicit version ids handed in by adapters can all close
    a loop, so the traversal must terminate on cyclic data. The recursive CTE
    therefore uses ``UNION`` (never ``UNION ALL``): a row already produced is
    not produced again, on all three databases.

    * Without a depth limit the CTE rows are bare version ids. ``UNION`` then
      adds each version to the work queue at most once, so the query visits
      every reachable edge once and stops, whatever the cycles. Depths are the
      breadth-first distances, computed afterwards from the returned edges.
    * With a depth limit the rows are ``(version id, depth)`` and the recursive
      step stops at the limit. A version reached along paths of different
      lengths appears once per length (at most ``limit + 1`` times), never
      once per path, so diamonds cannot blow the work up and cycles end at the
      limit. The outer query keeps the smallest depth per version.

    A path-array check (PostgreSQL's ``CYCLE`` clause, or a path string) was
    rejected: it enumerates every path, which is exponential on chains of
    diamonds, and MariaDB has no portable form of it.

One statement
    The closure, the node details (product URI, content hash, producer run)
    and the traversed edges (with their invocation) come back from a single
    statement: one row per (node, traversed edge), a node without edges
    having one row with NULL edge columns. Finding the root is one more
    small indexed lookup.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
)

from dpt_core.errors import NotFound
from dpt_core.store.models import DataProduct, DataProductVersion, Invocation, LineageEdge
from dpt_core.store.recorder import uri_digest

__all__ = [
    "Closure",
    "Edge",
    "LineageGraph",
    "Node",
    "closure",
    "downstream_products",
    "lineage",
    "resolve_versions",
    "version_ids_select",
]

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")

P = DataProduct.__table__
V = DataProductVersion.__table__
I = Invocation.__table__  # noqa: E741
E = LineageEdge.__table__

#: Recursion bound set on MariaDB/MySQL sessions (their defaults, 1000, would cut long chains).
_MYSQL_RECURSION_LIMIT = 4_294_967_295
#: Above this many seed ids, ids are inlined in the SQL instead of bound one parameter each.
_INLINE_IDS_ABOVE = 500


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


@dataclass(frozen=True)
class Node:
    """One version of a product in a lineage graph.

    :param uri: the product.
    :param depth: edges between this version and the nearest root version.
    :param version: the version's UUID.
    :param produced_by: UUID of the invocation that wrote it (None when it was only read).
    """

    uri: str
    depth: int
    version: str
    content_hash: str | None = None
    size: int | None = None
    recorded_at: str | None = None
    produced_by: str | None = None
    job: str | None = None
    task: str | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Edge:
    """``child`` was derived from ``parent`` by ``invocation`` (a run UUID)."""

    parent: str
    child: str
    invocation: str | None
    parent_version: str
    child_version: str
    job: str | None = None
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LineageGraph:
    """What :func:`lineage` returns; :meth:`to_dict` is the JSON shape of ``dpt lineage --format json``."""

    root: str
    direction: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "depth": self.depth,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }

    @property
    def uris(self) -> list[str]:
        """Distinct product URIs in the graph, nearest first."""
        return list(dict.fromkeys(n.uri for n in self.nodes))


@dataclass
class Closure:
    """The raw result of :func:`closure`, keyed by version id.

    :param depths: breadth-first distance of each reached version from the seeds.
    :param details: per version: uri, product_id, uuid, content_hash, size, mtime,
        recorded_at, produced_by (run uuid), job, task, status.
    :param edges: ``(parent_vid, child_vid, invocation uuid, job, task)`` traversed.
    """

    seeds: list[int]
    direction: Direction
    depths: dict[int, int]
    details: dict[int, dict[str, Any]]
    edges: list[tuple[int, int, str | None, str | None, str | None]]


# --------------------------------------------------------------------------- the query


def version_ids_select(ids: Sequence[int]) -> Select[Any]:
    """``SELECT id FROM data_product_versions WHERE id IN (ids)``, usable as a closure seed."""
    ids = sorted(set(ids))
    if len(ids) > _INLINE_IDS_ABOVE:
        # Bound parameters are capped (SQLite: 32766); integers are safe to inline.
        return select(V.c.id).where(V.c.id.in_(bindparam("seed_ids", ids, literal_execute=True)))
    return select(V.c.id).where(V.c.id.in_(ids))


def _closure_statement(seeds: Select[Any], direction: Direction, depth: int | None) -> Select[Any]:
    """The closure as one statement: ``(node, node details, traversed edge)`` rows."""
    seed = seeds.subquery("seed")

    def ends(table: Any) -> tuple[Any, Any]:
        """(column matched against the current node, column of the next node)."""
        if direction == "upstream":
            return table.c.child_version_id, table.c.parent_version_id
        return table.c.parent_version_id, table.c.child_version_id

    walk_from, walk_to = ends(E)
    reach = select(seed.c[0].label("vid"), literal_column("0").label("depth")).cte(
        "reach", recursive=True
    )
    if depth is None:
        # Depth 1 stands for "reached": with UNION each version enters the queue at most
        # twice (as a seed and as reached), so cycles cannot keep the recursion going.
        step = select(walk_to, literal_column("1")).join(reach, walk_from == reach.c.vid)
    else:
        step = (
            select(walk_to, reach.c.depth + 1)
            .join(reach, walk_from == reach.c.vid)
            .where(reach.c.depth < depth)
        )
    reach = reach.union(step)
    nodes = (
        select(reach.c.vid, func.min(reach.c.depth).label("depth"))
        .group_by(reach.c.vid)
        .subquery("nodes")
    )
    producer = I.alias("producer")
    maker = I.alias("maker")
    edge = E.alias("edge")
    edge_from, edge_to = ends(edge)
    edge_on = edge_from == nodes.c.vid
    if depth is not None:
        edge_on = and_(edge_on, nodes.c.depth < depth)
    return (
        select(
            nodes.c.vid,
            nodes.c.depth,
            P.c.uri,
            V.c.product_id,
            V.c.uuid,
            V.c.content_hash,
            V.c.size,
            V.c.mtime,
            V.c.recorded_at,
            producer.c.uuid.label("produced_by"),
            producer.c.job,
            producer.c.task,
            producer.c.status,
            edge_to.label("other_vid"),
            maker.c.uuid.label("edge_invocation"),
            maker.c.job.label("edge_job"),
            maker.c.task.label("edge_task"),
        )
        .select_from(nodes)
        .join(V, V.c.id == nodes.c.vid)
        .join(P, P.c.id == V.c.product_id)
        .outerjoin(producer, producer.c.id == V.c.produced_by_id)
        .outerjoin(edge, edge_on)
        .outerjoin(maker, maker.c.id == edge.c.invocation_id)
    )


def _allow_deep_recursion(conn: Connection) -> None:
    if conn.dialect.name in ("mysql", "mariadb"):
        variable = (
            "max_recursive_iterations"
            if getattr(conn.dialect, "is_mariadb", False)
            else "cte_max_recursion_depth"
        )
        conn.exec_driver_sql(f"SET SESSION {variable} = {_MYSQL_RECURSION_LIMIT}")


def _bfs(seeds: Iterable[int], adjacency: dict[int, list[int]]) -> dict[int, int]:
    depths = {s: 0 for s in seeds}
    queue = deque(depths)
    while queue:
        here = queue.popleft()
        for there in adjacency.get(here, ()):
            if there not in depths:
                depths[there] = depths[here] + 1
                queue.append(there)
    return depths


def closure(
    conn: Connection,
    seeds: Select[Any] | Sequence[int],
    direction: Direction = "upstream",
    depth: int | None = None,
) -> Closure:
    """Every version reachable from ``seeds`` (ids, or a SELECT of ids), in one query.

    :param direction: ``upstream`` follows parents, ``downstream`` children.
    :param depth: at most this many edges from a seed; None for no limit.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'upstream' or 'downstream'")
    if depth is not None and depth < 0:
        raise ValueError(f"depth {depth} is negative: use 0 or more, or None for no limit")
    seed_select = seeds if isinstance(seeds, Select) else version_ids_select(seeds)
    _allow_deep_recursion(conn)
    rows = conn.execute(_closure_statement(seed_select, direction, depth)).all()
    details: dict[int, dict[str, Any]] = {}
    sql_depths: dict[int, int] = {}
    edges: dict[tuple[int, int], tuple[int, int, str | None, str | None, str | None]] = {}
    for r in rows:
        if r.vid not in details:
            sql_depths[r.vid] = int(r.depth)
            details[r.vid] = {
                "uri": r.uri,
                "product_id": r.product_id,
                "uuid": r.uuid,
                "content_hash": r.content_hash,
                "size": r.size,
                "mtime": r.mtime,
                "recorded_at": _iso(r.recorded_at),
                "produced_by": r.produced_by,
                "job": r.job,
                "task": r.task,
                "status": r.status,
            }
        if r.other_vid is not None:
            parent, child = (
                (r.other_vid, r.vid) if direction == "upstream" else (r.vid, r.other_vid)
            )
            edges[(parent, child)] = (parent, child, r.edge_invocation, r.edge_job, r.edge_task)
    seed_ids = [vid for vid, d in sql_depths.items() if d == 0]
    adjacency: dict[int, list[int]] = {}
    for parent, child, *_ in edges.values():
        here, there = (child, parent) if direction == "upstream" else (parent, child)
        adjacency.setdefault(here, []).append(there)
    depths = _bfs(seed_ids, adjacency)
    return Closure(seed_ids, direction, depths, details, list(edges.values()))


# --------------------------------------------------------------------------- roots


def _engine(engine: Engine | None) -> Engine:
    if engine is not None:
        return engine
    from dpt_core.store.plugin import current_store

    return current_store().engine


def _resolve_target(target: Any) -> str:
    from dpt_core.tracker import get_tracker

    return get_tracker().resolve(target)


def _version_condition(version: str) -> Any:
    text = version.strip()
    condition = or_(V.c.uuid == text, V.c.content_hash == text)
    if len(text) >= 6 and all(c in "0123456789abcdef-" for c in text.lower()):
        condition = or_(condition, V.c.uuid.startswith(text.lower(), autoescape=True))
    return condition


def resolve_versions(conn: Connection, uri: str, version: str | None = None) -> list[int]:
    """Version ids of product ``uri`` (all, or those matching ``version``), in one query.

    ``version`` is a version UUID, a unique UUID prefix (6+ characters) or a content
    hash (every version with that content).

    :raises NotFound: the product is not recorded, or has no such version.
    """
    joined = V.c.product_id == P.c.id
    if version is not None:
        joined = and_(joined, _version_condition(version))
    rows = conn.execute(
        select(P.c.id.label("pid"), V.c.id.label("vid"), V.c.uuid, V.c.content_hash)
        .select_from(P)
        .outerjoin(V, joined)
        .where(P.c.uri_digest == uri_digest(uri))
    ).all()
    if not rows:
        raise NotFound(f"no product {uri} is recorded: check the path, or see 'dpt runs'")
    found = [r for r in rows if r.vid is not None]
    if version is None:
        return sorted(r.vid for r in found)
    text = version.strip()
    exact = [r.vid for r in found if r.uuid == text or r.content_hash == text]
    if exact:
        return sorted(exact)
    if len({r.uuid for r in found}) > 1:
        raise NotFound(
            f"version {text!r} of {uri} is ambiguous: give more of its UUID (see 'dpt show {uri}')"
        )
    if not found:
        raise NotFound(
            f"{uri} has no version {text!r}: give a version UUID or content hash "
            f"from 'dpt show {uri}'"
        )
    return [found[0].vid]


# --------------------------------------------------------------------------- public API


def _graph(root: str, result: Closure, depth: int | None) -> LineageGraph:
    nodes = []
    for vid, d in result.depths.items():
        info = result.details[vid]
        nodes.append(
            (
                (d, info["uri"], vid),
                Node(
                    uri=info["uri"],
                    depth=d,
                    version=info["uuid"],
                    content_hash=info["content_hash"],
                    size=info["size"],
                    recorded_at=info["recorded_at"],
                    produced_by=info["produced_by"],
                    job=info["job"],
                    task=info["task"],
                    status=info["status"],
                ),
            )
        )
    nodes.sort(key=lambda item: item[0])
    edges = []
    for parent, child, invocation, job, task in result.edges:
        if parent not in result.depths or child not in result.depths:
            continue
        far = parent if result.direction == "upstream" else child
        p, c = result.details[parent], result.details[child]
        edges.append(
            (
                (result.depths[far], p["uri"], c["uri"], parent, child),
                Edge(
                    parent=p["uri"],
                    child=c["uri"],
                    invocation=invocation,
                    parent_version=p["uuid"],
                    child_version=c["uuid"],
                    job=job,
                    task=task,
                ),
            )
        )
    edges.sort(key=lambda item: item[0])
    return LineageGraph(
        root=root,
        direction=result.direction,
        nodes=[n for _, n in nodes],
        edges=[e for _, e in edges],
        depth=depth,
    )


def lineage(
    target: Any,
    direction: str = "upstream",
    depth: int | None = None,
    *,
    version: str | None = None,
    engine: Engine | None = None,
) -> LineageGraph:
    """The lineage graph of ``target`` (a path, URI or anything a plugin resolves).

    :param direction: ``"upstream"`` (what it came from) or ``"downstream"`` (what depends on it).
    :param depth: at most this many edges away; None for the whole closure.
    :param version: start from this version only (UUID, UUID prefix or content hash);
        default: every recorded version of the product.
    :returns: a :class:`LineageGraph`; the root's versions are the nodes at depth 0.
    :raises NotFound: the product (or version) is not recorded.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'upstream' or 'downstream'")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth {depth!r} must be an integer >= 0, or None for no limit")
    uri = _resolve_target(target)
    with _engine(engine).connect() as conn:
        if version is None:
            seeds: Select[Any] | list[int] = (
                select(V.c.id)
                .join(P, P.c.id == V.c.product_id)
                .where(P.c.uri_digest == uri_digest(uri))
            )
        else:
            seeds = resolve_versions(conn, uri, version)
        result = closure(conn, seeds, direction, depth)
        if not result.depths:
            resolve_versions(conn, uri)  # raises NotFound naming the product
    return _graph(uri, result, depth)


def downstream_products(
    conn: Connection, seeds: Select[Any] | Sequence[int]
) -> list[dict[str, Any]]:
    """Every product with a version downstream of (or among) ``seeds``, in one query.

    :returns: one dict per product, nearest first: ``uri``, ``depth`` (edges from the
        nearest seed; 0 for the seeds' own products), ``versions`` (affected version
        UUIDs, newest first) and ``runs`` (UUIDs of the runs that made them).
    """
    result = closure(conn, seeds, "downstream")
    by_product: dict[int, dict[str, Any]] = {}
    for vid in sorted(result.depths, reverse=True):
        info = result.details[vid]
        item = by_product.setdefault(
            info["product_id"],
            {"uri": info["uri"], "depth": result.depths[vid], "versions": [], "runs": []},
        )
        item["depth"] = min(item["depth"], result.depths[vid])
        item["versions"].append(info["uuid"])
        if info["produced_by"] and info["produced_by"] not in item["runs"]:
            item["runs"].append(info["produced_by"])
    return sorted(by_product.values(), key=lambda item: (item["depth"], item["uri"]))
