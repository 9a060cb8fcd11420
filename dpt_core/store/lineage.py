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
    and the traversed edges come back from a single statement:
    ``WITH RECURSIVE reach ..., nodes ... SELECT <node rows> UNION ALL SELECT
    <edge rows>``, so each fact crosses the wire once. An edge row is three
    integers (near end, far end, id of the run that made it): that run is
    nearly always the producer of the edge's child, which is a node whose row
    already names it, so runs are not joined per edge (one index probe per
    edge saved). A run no node row names (a version recorded again by another
    run, say) costs one follow-up lookup by primary key, only then. The
    statements for the common seeds (all versions of one product, a list of
    version ids) are built once and reused, so SQLAlchemy reuses their compiled
    form. Seeding by product needs no separate root lookup; a given ``version``
    costs one small indexed lookup first.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dpt_core.config import Settings
from dpt_core.errors import NotFound
from dpt_core.store.models import DataProduct, DataProductVersion, Invocation, LineageEdge
from dpt_core.store.recorder import uri_digest

__all__ = [
    "Closure",
    "Edge",
    "LineageGraph",
    "Node",
    "Selection",
    "Start",
    "closure",
    "downstream_products",
    "lineage",
    "resolve_versions",
    "version_ids_select",
    "version_on_disk",
]

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")

P = DataProduct.__table__
V = DataProductVersion.__table__
I = Invocation.__table__  # noqa: E741
E = LineageEdge.__table__

#: Recursion bound set on MariaDB/MySQL sessions (their defaults, 1000, would cut long chains).
_MYSQL_RECURSION_LIMIT = 4_294_967_295

#: Where, in a row of the closure statement, an edge row puts the far end's version id
#: (None on node rows) and, next to it, the id of the invocation that made the edge.
_EDGE_COLUMN = 14


def _aware(value: Any) -> Any:
    """A datetime read from the database, timezone-aware (naive ones are UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _iso(value: Any) -> Any:
    """ISO 8601 text of a datetime, in UTC."""
    if isinstance(value, dt.datetime):
        return _aware(value).astimezone(dt.UTC).isoformat()
    return value


class Node(NamedTuple):
    """One version of a product in a lineage graph.

    :param uri: the product.
    :param depth: edges between this version and the nearest root version.
    :param version: the version's UUID.
    :param recorded_at: when the version was recorded (UTC; ISO 8601 text in :meth:`to_dict`).
    :param produced_by: UUID of the invocation that wrote it (None when it was only read).
    """

    uri: str
    depth: int
    version: str
    content_hash: str | None = None
    size: int | None = None
    recorded_at: dt.datetime | None = None
    produced_by: str | None = None
    job: str | None = None
    task: str | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data["recorded_at"] = _iso(self.recorded_at)
        return data


def made_up_job(job: str | None) -> bool:
    """Whether ``job`` is a name the orchestrator made up for runs nobody named.

    Dagster reserves job names that start with ``__`` for its own: ``dg.materialize()``
    and a launch of selected assets from the UI run in ``__ephemeral_asset_job__``, the
    implicit job of all assets is ``__ASSET_JOB``. Such a name says nothing about what
    ran; the task (the asset) does.
    """
    return job is not None and job.startswith("__")


def run_label(job: str | None, task: str | None) -> str | None:
    """One name for the run that made a version, as lineage pictures label their edges:
    its job (a DAG, a flow, a Dagster job, a ``dpt run`` name), or its task when the job
    is :func:`made up <made_up_job>` (``__ephemeral_asset_job__`` -> the asset key)."""
    return task if task and made_up_job(job) else job


class Edge(NamedTuple):
    """``child`` was derived from ``parent`` by ``invocation`` (a run UUID)."""

    parent: str
    child: str
    invocation: str | None
    parent_version: str
    child_version: str
    job: str | None = None
    task: str | None = None

    @property
    def label(self) -> str | None:
        """What a picture writes on the edge: :func:`run_label` of its run."""
        return run_label(self.job, self.task)

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


#: Which versions of the root a lineage query starts from (see :func:`lineage`).
Selection = Literal["on_disk", "newest", "all_versions", "version"]


@dataclass(frozen=True)
class LineageGraph:
    """What :func:`lineage` returns; :meth:`to_dict` is the JSON shape of ``dpt lineage --format json``.

    :param selection: which versions of the root the graph starts from: ``on_disk`` (the
        newest version whose content is the file's now), ``newest`` (the file is not on
        this host, is missing, or matches no recorded version: :attr:`note` says which),
        ``all_versions`` or ``version`` (the ones asked for).
    :param versions: how many versions of the root are recorded.
    :param note: why ``newest`` was chosen when there was a file to compare, else None.
    """

    root: str
    direction: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    depth: int | None = None
    selection: Selection = "all_versions"
    versions: int | None = None
    note: str | None = None

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


#: ``(uuid, job, task)`` of a run; what an edge made by no recorded run carries.
Run = tuple[str | None, str | None, str | None]
_NO_RUN: Run = (None, None, None)


@dataclass
class Closure:
    """The raw result of :func:`closure`, keyed by version id.

    :param depths: breadth-first distance of each reached version from the seeds.
    :param details: per version, a row with attributes ``uri``, ``product_id``, ``uuid``,
        ``content_hash``, ``size``, ``mtime``, ``recorded_at``, ``produced_by`` (run uuid),
        ``job``, ``task``, ``status``, ``produced_by_id``.
    :param steps: the traversed edges as ``(near vid, far vid, invocation id)``, near
        being the end the walk came from (the child upstream, the parent downstream).
    :param runs: ``invocation id -> (uuid, job, task)`` for every invocation in ``steps``.
    """

    seeds: list[int]
    direction: Direction
    depths: dict[int, int]
    details: dict[int, Any]
    steps: list[tuple[int, int, int | None]]
    runs: dict[int | None, Run]

    @functools.cached_property
    def edges(self) -> list[tuple[int, int, str | None, str | None, str | None]]:
        """``(parent_vid, child_vid, invocation uuid, job, task)`` per traversed edge."""
        runs, upstream = self.runs, self.direction == "upstream"
        return [
            (far, near, *runs.get(invocation, _NO_RUN))
            if upstream
            else (near, far, *runs.get(invocation, _NO_RUN))
            for near, far, invocation in self.steps
        ]


# --------------------------------------------------------------------------- the query


class _NaiveUTC(FunctionElement[dt.datetime]):
    """A stored timestamp as naive UTC, read with the plain ``DateTime`` type.

    Stored naive (in UTC) on SQLite and MariaDB, so rendered as is. PostgreSQL stores
    ``timestamp with time zone``, which psycopg loads converting every value to the
    session's time zone (about 2 µs each, 1 ms for a 500-node closure); its plain
    ``timestamp`` loader costs a fraction of that. Either way :func:`_aware` marks the
    value as UTC, and no UTC-normalising decorator runs per row in Python.
    """

    type = DateTime()
    inherit_cache = True


@compiles(_NaiveUTC)
def _naive_utc(element: _NaiveUTC, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_NaiveUTC, "postgresql")
def _naive_utc_postgresql(element: _NaiveUTC, compiler: SQLCompiler, **kw: Any) -> str:
    return f"timezone('UTC', {compiler.process(element.clauses, **kw)})"


def version_ids_select(ids: Sequence[int]) -> Select[Any]:
    """``SELECT id FROM data_product_versions WHERE id IN (ids)``, usable as a closure seed."""
    # Inlined at execution time: bound parameters are capped (SQLite: 32766), integers are safe.
    return select(V.c.id).where(
        V.c.id.in_(bindparam("seed_ids", sorted(set(ids)), expanding=True, literal_execute=True))
    )


def _closure_statement(
    seeds: Select[Any], direction: Direction, limited: bool, lateral: bool = False
) -> Any:
    """The closure as one statement: a row per node (with its details), a row per traversed edge.

    With ``limited``, the depth limit is the bound parameter ``depth_limit``. With
    ``lateral`` (PostgreSQL), edges are looked up node by node (see :func:`_probe`).
    """
    seed = seeds.subquery("seed")
    depth = bindparam("depth_limit", type_=Integer())

    def ends(table: Any) -> tuple[Any, Any]:
        """(column matched against the current node, column of the next node)."""
        if direction == "upstream":
            return table.c.child_version_id, table.c.parent_version_id
        return table.c.parent_version_id, table.c.child_version_id

    reach = select(seed.c[0].label("vid"), literal_column("0").label("depth")).cte(
        "reach", recursive=True
    )
    # Depth 1 stands for "reached" when unlimited: with UNION each version then enters the
    # queue at most twice (as a seed and as reached), so cycles cannot keep it going.
    next_depth = reach.c.depth + 1 if limited else literal_column("1")
    walk_from, walk_to = ends(E)
    if lateral:
        probe = _probe(select(walk_to.label("vid")).where(walk_from == reach.c.vid), "walk")
        step = select(probe.c.vid, next_depth).select_from(reach).join(probe, true())
    else:
        step = select(walk_to, next_depth).join(reach, walk_from == reach.c.vid)
    if limited:
        step = step.where(reach.c.depth < depth)
    reach = reach.union(step)
    nodes = (
        select(reach.c.vid, func.min(reach.c.depth).label("depth"))
        .group_by(reach.c.vid)
        .cte("nodes")
    )
    producer = I.alias("producer")
    # Node rows carry the node's details, edge rows the traversed edge: each fact once.
    node_rows = (
        select(
            nodes.c.vid,
            nodes.c.depth,
            P.c.uri,
            V.c.product_id,
            V.c.uuid,
            V.c.content_hash,
            V.c.size,
            V.c.mtime,
            _NaiveUTC(V.c.recorded_at).label("recorded_at"),
            producer.c.uuid.label("produced_by"),
            producer.c.job,
            producer.c.task,
            producer.c.status,
            V.c.produced_by_id,
            null().label("other_vid"),
            null().label("edge_invocation_id"),
        )
        .select_from(nodes)
        .join(V, V.c.id == nodes.c.vid)
        .join(P, P.c.id == V.c.product_id)
        .outerjoin(producer, producer.c.id == V.c.produced_by_id)
    )
    edge = E.alias("edge")
    edge_from, edge_to = ends(edge)
    blanks = [null() for _ in range(_EDGE_COLUMN - 1)]
    if lateral:
        far = _probe(
            select(edge_to.label("far"), edge.c.invocation_id).where(edge_from == nodes.c.vid),
            "far",
        )
        edge_rows = (
            select(nodes.c.vid, *blanks, far.c.far, far.c.invocation_id)
            .select_from(nodes)
            .join(far, true())
        )
    else:
        edge_rows = (
            select(nodes.c.vid, *blanks, edge_to, edge.c.invocation_id)
            .select_from(nodes)
            .join(edge, edge_from == nodes.c.vid)
        )
    if limited:
        edge_rows = edge_rows.where(nodes.c.depth < depth)
    return union_all(node_rows, edge_rows)


def _probe(query: Select[Any], name: str) -> Any:
    """``LATERAL (query OFFSET 0)``: the edges of one node, looked up once per node.

    PostgreSQL plans a join by its statistics. Without them (a bulk load on a server with
    autovacuum off, before any ANALYZE) it assumes 200 distinct values per column, so
    that each node has ~0.5 % of all edges, and hashes the whole edge table once per level
    of the recursion (300-900 ms for a 30-deep closure over 200 000 edges instead of
    4 ms). A lateral subquery that cannot be pulled up into the join (``OFFSET 0``) can
    only run as an index probe per node, which is the right plan with or without them.
    """
    return query.offset(literal_column("0")).lateral(name)


_IDS_SEED = select(V.c.id).where(
    V.c.id.in_(bindparam("seed_ids", expanding=True, literal_execute=True))
)
_PRODUCT_SEED = (
    select(V.c.id)
    .join(P, P.c.id == V.c.product_id)
    .where(P.c.uri_digest == bindparam("seed_digest"))
)


@functools.cache
def _cached_statement(seed_kind: str, direction: Direction, limited: bool, lateral: bool) -> Any:
    """Statements for the common seeds, built once (SQLAlchemy then reuses their compiled SQL)."""
    seeds = _IDS_SEED if seed_kind == "ids" else _PRODUCT_SEED
    return _closure_statement(seeds, direction, limited, lateral)


def _lateral(conn: Connection) -> bool:
    """Whether the closure probes edges node by node (PostgreSQL; see :func:`_probe`)."""
    return conn.dialect.name == "postgresql"


def _prepare_session(conn: Connection, jit_off: bool = False) -> None:
    """Session settings the closure needs, sent before it.

    MariaDB/MySQL: lift the recursion bound (once per connection: it is a session
    setting). PostgreSQL: no JIT compilation for the rest of this transaction (unless
    ``jit_off`` says a query already did that). Without statistics the closure's
    estimated cost passes ``jit_above_cost`` (its probes are estimated at ~0.5 % of the
    edges each), and compiling a query that runs in a few milliseconds costs
    ~100-200 ms; with statistics JIT is never chosen for it anyway.
    """
    if conn.dialect.name in ("mysql", "mariadb"):
        info = conn.connection.info
        if not info.get("dpt_deep_recursion"):
            variable = (
                "max_recursive_iterations"
                if getattr(conn.dialect, "is_mariadb", False)
                else "cte_max_recursion_depth"
            )
            conn.exec_driver_sql(f"SET SESSION {variable} = {_MYSQL_RECURSION_LIMIT}")
            info["dpt_deep_recursion"] = True
    elif conn.dialect.name == "postgresql" and not jit_off:
        conn.exec_driver_sql("SET LOCAL jit = off")


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
    if isinstance(seeds, Select):
        return _closure(conn, direction, depth, seeds=seeds)
    return _closure(conn, direction, depth, ids=seeds)


#: A depth limit past this is no limit: the same closure, without a number the databases'
#: integers cannot hold (a ``--depth`` of twenty digits was an OverflowError on SQLite).
MAX_DEPTH = 2**31 - 1


def _closure(
    conn: Connection,
    direction: Direction,
    depth: int | None,
    *,
    seeds: Select[Any] | None = None,
    ids: Sequence[int] | None = None,
    digest: str | None = None,
    jit_off: bool = False,
) -> Closure:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'upstream' or 'downstream'")
    if depth is not None and depth < 0:
        raise ValueError(f"depth {depth} is negative: use 0 or more, or None for no limit")
    if depth is not None and depth > MAX_DEPTH:
        depth = None  # (no chain is that long; SQLite takes no larger number as a parameter)
    limited = depth is not None
    lateral = _lateral(conn)
    params: dict[str, Any] = {"depth_limit": depth} if limited else {}
    if seeds is not None:
        statement = _closure_statement(seeds, direction, limited, lateral)
    elif digest is not None:
        statement = _cached_statement("product", direction, limited, lateral)
        params["seed_digest"] = digest
    else:
        statement = _cached_statement("ids", direction, limited, lateral)
        params["seed_ids"] = sorted(set(ids or ()))
    _prepare_session(conn, jit_off)
    details: dict[int, Any] = {}
    seed_ids: list[int] = []
    steps: list[tuple[int, int, int | None]] = []  # (near end, far end, invocation id)
    adjacency: dict[int, list[int]] = {}
    for row in conn.execute(statement, params).all():
        vid, far = row[0], row[_EDGE_COLUMN]
        if far is None:
            if row[1] == 0:
                seed_ids.append(vid)
            details[vid] = row  # the node's details, by attribute (see Closure)
        else:
            steps.append((vid, far, row[_EDGE_COLUMN + 1]))
            adjacency.setdefault(vid, []).append(far)
    depths = _bfs(seed_ids, adjacency)
    return Closure(seed_ids, direction, depths, details, steps, _runs(conn, details, steps))


def _runs(
    conn: Connection, details: dict[int, Any], steps: list[tuple[int, int, int | None]]
) -> dict[int | None, Run]:
    """``invocation id -> (uuid, job, task)`` for the invocations that made the traversed edges.

    The invocation that made an edge is nearly always the one that produced its child,
    and the child is a node of the closure, whose row already names its producer; only
    the others (a version re-recorded by another run, say) cost a query, by primary key.
    """
    # Positions in a node row (see _closure_statement): 13 produced_by_id, 9-11 its uuid,
    # job and task.
    runs: dict[int | None, Run] = {
        row[13]: (row[9], row[10], row[11]) for row in details.values() if row[13] is not None
    }
    missing = {invocation for _, _, invocation in steps if invocation not in runs}
    missing.discard(None)
    if missing:
        found = conn.execute(
            select(I.c.id, I.c.uuid, I.c.job, I.c.task).where(
                I.c.id.in_(bindparam("ids", sorted(missing), expanding=True, literal_execute=True))
            )
        )
        runs.update((row[0], (row[1], row[2], row[3])) for row in found)
    return runs


# --------------------------------------------------------------------------- roots


def _engine(engine: Engine | None) -> Engine:
    if engine is not None:
        return engine
    from dpt_core.config import get_settings
    from dpt_core.store.plugin import current_store

    return current_store(get_settings()).engine


#: How a caller turns a target into a URI (``Tracker.resolve``, which asks the
#: ``dpt_resolve_uri`` plugins first). The store never calls up into the tracker to find
#: one: a caller with targets other than paths and URIs passes it in.
Resolve = Callable[[Any], str]


def resolve_target(target: Any, resolve: Resolve | None = None) -> str:
    """The normalised URI of ``target``: ``resolve(target)`` when the caller gives
    ``resolve``, else ``target`` read as a path or URI (:func:`dpt_core.uri.normalize_uri`).

    :raises InvalidTarget: without ``resolve``, ``target`` is not a path or URI string.
    """
    if resolve is not None:
        return resolve(target)
    from dpt_core.uri import normalize_uri

    return normalize_uri(target)


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


class Start(NamedTuple):
    """The versions a lineage query starts from, and why (see :class:`LineageGraph`)."""

    ids: list[int]
    selection: Selection
    versions: int
    note: str | None = None


_OTHER = V.alias("other")
_NEWEST = (
    select(
        P.c.id.label("pid"),
        V.c.id.label("vid"),
        V.c.content_hash,
        V.c.size,
        V.c.mtime,
        select(func.count())
        .where(_OTHER.c.product_id == P.c.id)
        .scalar_subquery()
        .label("versions"),
    )
    .select_from(P)
    .outerjoin(V, V.c.product_id == P.c.id)
    .where(P.c.uri_digest == bindparam("digest"))
    .order_by(V.c.id.desc())
    .limit(1)
)
_NEWEST_WITH_CONTENT = select(func.max(V.c.id)).where(
    V.c.product_id == bindparam("pid"), V.c.content_hash == bindparam("content_hash")
)


def _algorithm(content_hash: str | None) -> str | None:
    """The hash algorithm a stored content hash was made with (None: no usable hash)."""
    from dpt_core.config import HASH_ALGORITHMS

    name = content_hash.split(":", 1)[0] if content_hash and ":" in content_hash else None
    return name if name in HASH_ALGORITHMS and name != "none" else None


def version_on_disk(conn: Connection, uri: str, settings: Settings | None = None) -> Start:
    """The version of product ``uri`` that is on disk now, else its newest version.

    "On disk" is the newest version whose content hash is the file's: when the newest
    version's size and mtime are the file's, it is taken without reading the file;
    otherwise the file is hashed through the stat cache (so an unchanged file is read
    once, not on every query) with the algorithm of the newest version's hash. The
    newest version (the highest id, as ``dpt stale`` counts) stands in when the product
    is not a file on this host, the file is missing or unreadable, no hash was
    recorded to compare with, or the file matches no recorded version (``note`` says
    which). Two queries at most, both by index. On PostgreSQL JIT is turned off for the
    transaction first (:func:`_prepare_session`), for the lookup and the closure after it.

    :raises NotFound: the product is not recorded.
    """
    from dpt_core.errors import HashError
    from dpt_core.hashing import StatCache, observe
    from dpt_core.uri import uri_to_path

    if conn.dialect.name == "postgresql":
        # Before the lookup, not in it: set_config() in a select list only applies to
        # the statements after it, and without statistics on a 10 000 000-product
        # graph the lookup's own estimate passes jit_above_cost (38 ms of JIT, 0.1 ms
        # of work).
        _prepare_session(conn)
    row = conn.execute(_NEWEST, {"digest": uri_digest(uri)}).first()
    if row is None:
        raise NotFound(f"no product {uri} is recorded: check the path, or see 'dpt runs'")
    if row.vid is None:
        return Start([], "newest", 0)
    newest = functools.partial(Start, [row.vid], "newest", row.versions)
    path = uri_to_path(uri)
    if path is None:
        return newest()
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return newest("the file is missing")
    except OSError as exc:
        return newest(f"the file cannot be read ({exc.strerror or exc})")
    if (
        stat.S_ISREG(info.st_mode)
        and row.size == info.st_size
        and row.mtime is not None
        and abs(row.mtime - info.st_mtime) < 1e-6
    ):
        return Start([row.vid], "on_disk", row.versions)
    algorithm = _algorithm(row.content_hash)
    if algorithm is None:
        return newest("no content hash was recorded to compare the file with")
    if settings is None:
        from dpt_core.config import get_settings

        settings = get_settings()
    try:
        with StatCache(settings.cache_dir / "statcache.sqlite3") as cache:
            content_hash = observe(path, algorithm, cache=cache).content_hash
    except HashError as exc:
        return newest(f"the file cannot be hashed ({exc})")
    if content_hash == row.content_hash:
        return Start([row.vid], "on_disk", row.versions)
    vid = conn.execute(
        _NEWEST_WITH_CONTENT, {"pid": row.pid, "content_hash": content_hash}
    ).scalar()
    if vid is None:
        return newest("the file on disk differs from every recorded version")
    return Start([vid], "on_disk", row.versions)


# --------------------------------------------------------------------------- public API


#: ``Node`` / ``Edge`` from a tuple of all their fields, skipping the generated Python-level
#: ``__new__``: a noticeable share of building the ~1 500 of them a large closure has.
_new_node: Callable[[tuple[Any, ...]], Node] = functools.partial(tuple.__new__, Node)
_new_edge: Callable[[tuple[Any, ...]], Edge] = functools.partial(tuple.__new__, Edge)


def _graph(root: str, result: Closure, depth: int | None, start: Start) -> LineageGraph:
    """Nodes nearest first (then by URI); edges in the order of their far, then near, end."""
    details = result.details
    # Positions in a node row: see _closure_statement. Sorting plain tuples, not by a key
    # function, and (below) edges by their ends' ranks keeps Python calls per item low.
    keys = sorted([(distance, details[vid][2], vid) for vid, distance in result.depths.items()])
    rank: dict[int, int] = {}
    nodes: list[Node] = []
    for position, (distance, uri, vid) in enumerate(keys):
        d = details[vid]
        rank[vid] = position
        nodes.append(
            _new_node((uri, distance, d[4], d[5], d[6], _aware(d[8]), d[9], d[10], d[11], d[12]))
        )
    ends = [(node.uri, node.version) for node in nodes]  # by rank
    # (far, near) is unique (UNIQUE(parent, child)), so invocation ids are never compared.
    order = sorted([(rank[far], rank[near], invocation) for near, far, invocation in result.steps])
    upstream, runs = result.direction == "upstream", result.runs
    edges: list[Edge] = []
    for far, near, invocation in order:
        (parent, parent_version), (child, child_version) = (
            (ends[far], ends[near]) if upstream else (ends[near], ends[far])
        )
        run, job, task = runs.get(invocation, _NO_RUN)
        edges.append(_new_edge((parent, child, run, parent_version, child_version, job, task)))
    return LineageGraph(
        root=root,
        direction=result.direction,
        nodes=nodes,
        edges=edges,
        depth=depth,
        selection=start.selection,
        versions=start.versions,
        note=start.note,
    )


def lineage(
    target: Any,
    direction: str = "upstream",
    depth: int | None = None,
    *,
    version: str | None = None,
    all_versions: bool = False,
    engine: Engine | None = None,
    settings: Settings | None = None,
    resolve: Resolve | None = None,
) -> LineageGraph:
    """The lineage graph of ``target`` (a path or URI; anything else needs ``resolve``).

    By default the graph starts from one version of ``target``: the one on disk (the
    newest version whose content is the file's now), else the newest (see
    :func:`version_on_disk`); ``graph.selection`` says which.

    :param direction: ``"upstream"`` (what it came from) or ``"downstream"`` (what depends on it).
    :param depth: at most this many edges away; None for the whole closure.
    :param version: start from these versions instead (UUID, UUID prefix or content hash:
        every version with that content).
    :param all_versions: start from every recorded version of the product.
    :param settings: where the stat cache is (default: the current settings).
    :param resolve: turns ``target`` into a URI (see :func:`resolve_target`);
        :func:`dpt_core.lineage` passes the tracker's, so plugins resolve objects.
    :returns: a :class:`LineageGraph`; the root's versions are the nodes at depth 0.
    :raises NotFound: the product (or version) is not recorded.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'upstream' or 'downstream'")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth {depth!r} must be an integer >= 0, or None for no limit")
    if version is not None and all_versions:
        raise ValueError("give version or all_versions, not both")
    uri = resolve_target(target, resolve)
    with _engine(engine).connect() as conn:
        if all_versions:
            result = _closure(conn, direction, depth, digest=uri_digest(uri))
            start = Start(sorted(result.seeds), "all_versions", len(result.seeds))
            if not result.depths:
                resolve_versions(conn, uri)  # raises NotFound naming the product
        elif version is not None:
            ids = resolve_versions(conn, uri, version)
            result = _closure(conn, direction, depth, ids=ids)
            start = Start(ids, "version", len(ids))
        else:
            start = version_on_disk(conn, uri, settings)  # (also turns JIT off: see there)
            result = _closure(conn, direction, depth, ids=start.ids, jit_off=True)
    return _graph(uri, result, depth, start)


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
            info.product_id,
            {"uri": info.uri, "depth": result.depths[vid], "versions": [], "runs": []},
        )
        item["depth"] = min(item["depth"], result.depths[vid])
        item["versions"].append(info.uuid)
        if info.produced_by and info.produced_by not in item["runs"]:
            item["runs"].append(info.produced_by)
    return sorted(by_product.values(), key=lambda item: (item["depth"], item["uri"]))
