"""Read-side queries behind ``dpt runs``, ``dpt show`` and ``dpt stats``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, or_, select, tuple_

from dpt_core.errors import NotFound
from dpt_core.store.models import (
    DataProduct,
    DataProductVersion,
    Environment,
    EnvironmentDistribution,
    Invocation,
    InvocationInput,
    LineageEdge,
)
from dpt_core.store.recorder import RUN_TAGS, VERSION_TAGS, uri_digest

I = Invocation.__table__  # noqa: E741
V = DataProductVersion.__table__
P = DataProduct.__table__
E = Environment.__table__
RT = RUN_TAGS
VT = VERSION_TAGS

RUN_COLUMNS = (
    "id",
    "uuid",
    "orchestrator",
    "job",
    "task",
    "status",
    "parent_id",
    "started_at",
    "ended_at",
    "environment_id",
    "parameters",
    "error",
)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def run_dict(row: Any) -> dict[str, Any]:
    data = {c: _iso(getattr(row, c)) for c in RUN_COLUMNS}
    for extra in ("external_id", "host", "user", "command", "code_version", "variables"):
        if hasattr(row, extra):
            data[extra] = getattr(row, extra)
    return data


# --------------------------------------------------------------------------- tags


def _tags_of(
    conn: Connection, table: Any, owner: str, ids: Iterable[int]
) -> dict[int, dict[str, str]]:
    wanted = sorted(set(ids))
    found: dict[int, dict[str, str]] = {i: {} for i in wanted}
    for start in range(0, len(wanted), 1000):
        part = wanted[start : start + 1000]
        for r in conn.execute(
            select(table.c[owner], table.c.key, table.c.value)
            .where(table.c[owner].in_(part))
            .order_by(table.c[owner], table.c.key)
        ):
            found[r[0]][r.key] = r.value
    return found


def run_tags(conn: Connection, run_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """``{run id: {key: value}}`` (every id given, {} for a run without tags), one query."""
    return _tags_of(conn, RT, "invocation_id", run_ids)


def version_tags(conn: Connection, version_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """``{version id: {key: value}}``, like :func:`run_tags`."""
    return _tags_of(conn, VT, "version_id", version_ids)


def with_tags(conn: Connection, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` (from :func:`run_dict`), each given its ``tags``."""
    tags = run_tags(conn, [r["id"] for r in runs])
    for r in runs:
        r["tags"] = tags[r["id"]]
    return runs


#: Most tags a filter looks up one nested subquery each (beyond: one grouped lookup).
NESTED_TAGS = 8


def tag_filter(query: Any, tags: Mapping[str, str] | None, dialect: str) -> Any:
    """``query`` of invocations narrowed to runs carrying every ``key=value`` of ``tags``.

    Each tag can be an indexed ``(key, value)`` lookup of its own, nested; or all of
    them one grouped lookup: the runs with as many matching tag rows as tags given (a
    run has one value per key). Nested is what SQLite does best for a few tags (two
    tags over 20 000 runs: 10.8 ms nested, 13.5 – 14.8 grouped) and PostgreSQL worst
    (50 ms nested, 12 grouped; ``benchmarks/bench_tags.py``), and one nested subquery
    per tag made SQLite refuse 1 000 tags ("Expression tree is too large") and
    PostgreSQL run out of its statement timeout, which a server answered 503. So:
    grouped on PostgreSQL, and anywhere beyond :data:`NESTED_TAGS` tags.

    :param dialect: the database's (``engine.dialect.name``).
    """
    items = list((tags or {}).items())
    if len(items) > NESTED_TAGS or (len(items) > 1 and dialect == "postgresql"):
        matching = (
            select(RT.c.invocation_id)
            .where(tuple_(RT.c.key, RT.c.value).in_(items))
            .group_by(RT.c.invocation_id)
            .having(func.count() == len(items))
        )
        return query.where(I.c.id.in_(matching))
    for key, value in items:
        query = query.where(
            I.c.id.in_(select(RT.c.invocation_id).where(RT.c.key == key, RT.c.value == value))
        )
    return query


def set_tags(
    conn: Connection,
    kind: str,
    ids: Sequence[int],
    tags: Mapping[str, str],
    remove: Sequence[str] = (),
) -> dict[int, dict[str, str]]:
    """Set ``tags`` (a key's value replaced) and remove the keys ``remove`` on runs
    (``kind`` ``run``) or versions (``version``) ``ids``, in ``conn``'s transaction;
    their tags afterwards. What ``dpt tag`` and :func:`dpt_core.tag` do."""
    table, owner = (RT, "invocation_id") if kind == "run" else (VT, "version_id")
    keys = sorted(set(tags) | set(remove))
    if ids and keys:
        conn.execute(delete(table).where(table.c[owner].in_(list(ids)), table.c.key.in_(keys)))
    rows = [{owner: i, "key": k, "value": v} for i in ids for k, v in tags.items()]
    if rows:
        conn.execute(table.insert(), rows)
    return _tags_of(conn, table, owner, ids)


def tag_target(
    conn: Connection, target: str, *, version: str | None = None, uri: str | None = None
) -> tuple[str, list[tuple[int, str, str | None]]]:
    """What ``dpt tag TARGET`` labels: ``("version", [(id, version uuid, uri)])`` for a
    product (``uri``, normalised by the caller; its newest version, or those matching
    ``version``), else ``("run", [(id, run uuid, None)])`` for a run id, UUID or prefix.

    :raises NotFound: neither, or the product has no (such) version.
    """
    from dpt_core.store.lineage import resolve_versions

    if uri is not None:
        try:
            ids = resolve_versions(conn, uri, version)
        except NotFound:
            if version is not None:
                raise
        else:
            if not ids:
                raise NotFound(f"{uri} has no recorded version to tag: see 'dpt show {uri}'")
            if version is None:
                ids = ids[-1:]  # the newest
            rows = conn.execute(select(V.c.id, V.c.uuid).where(V.c.id.in_(ids))).all()
            return "version", [(r.id, r.uuid, uri) for r in sorted(rows)]
    if version is not None:
        raise NotFound(f"no product {target!r} is recorded: --version goes with a product")
    run = _find_run(conn, target)
    if run is None:
        raise NotFound(f"{target!r} is neither a recorded product nor a run id: see 'dpt runs'")
    return "run", [(run.id, run.uuid, None)]


#: The largest run id: the databases' 64-bit integers (SQLite cannot even take a larger
#: number as a parameter, so a longer string of digits names no run by its id).
MAX_RUN_ID = 2**63 - 1


def _find_run(conn: Connection, run: str | int) -> Any:
    text = str(run).strip()
    row = None
    # (ASCII digits only: str.isdigit() is also true of "²", which int() refuses; and
    # few of them: int() refuses more than 4 300 digits, and 20 already pass MAX_RUN_ID)
    if text.isascii() and text.isdigit() and len(text) < 20 and int(text) <= MAX_RUN_ID:
        row = conn.execute(select(I).where(or_(I.c.id == int(text), I.c.uuid == text))).first()
    if row is None and len(text) >= 6:  # also a UUID prefix that happens to be all digits
        rows = conn.execute(select(I).where(I.c.uuid.startswith(text)).limit(2)).all()
        if len(rows) > 1:
            raise NotFound(f"run {text!r} is ambiguous: give more of its UUID")
        row = rows[0] if rows else None
    return row


def tags_for_export(
    engine: Engine, run_ids: Sequence[int], version_uuids: Iterable[str]
) -> tuple[dict[int, dict[str, str]], dict[str, dict[str, str]]]:
    """Tags of runs (by id) and of versions (by UUID, only those with tags), two queries
    per thousand: what an export of a batch of runs adds to its events."""
    uuids = sorted(set(version_uuids))
    by_uuid: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        runs = run_tags(conn, run_ids)
        for start in range(0, len(uuids), 1000):
            for r in conn.execute(
                select(V.c.uuid, VT.c.key, VT.c.value)
                .join(VT, VT.c.version_id == V.c.id)
                .where(V.c.uuid.in_(uuids[start : start + 1000]))
                .order_by(V.c.uuid, VT.c.key)
            ):
                by_uuid.setdefault(r.uuid, {})[r.key] = r.value
    return runs, by_uuid


# --------------------------------------------------------------------------- runs


def list_runs(
    engine: Engine,
    *,
    orchestrator: str | None = None,
    status: str | None = None,
    job: str | None = None,
    limit: int = 50,
    tags: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first, each with its ``tags``; ``tags`` keeps those carrying all of them."""
    query = select(I).order_by(I.c.started_at.desc(), I.c.id.desc()).limit(limit)
    if orchestrator:
        query = query.where(I.c.orchestrator == orchestrator)
    if status:
        query = query.where(I.c.status == status)
    if job:
        query = query.where(I.c.job == job)
    query = tag_filter(query, tags, engine.dialect.name)
    with engine.connect() as conn:
        return with_tags(conn, [run_dict(r) for r in conn.execute(query)])


def get_run(engine: Engine, run: str | int) -> dict[str, Any]:
    """A run by numeric id, full UUID or unique UUID prefix (>= 6 characters)."""
    text = str(run).strip()
    with engine.connect() as conn:
        row = _find_run(conn, text)
        if row is None:
            raise NotFound(f"no run {text!r} is recorded: see 'dpt runs' for run ids")
        return with_tags(conn, [run_dict(row)])[0]


def product_id(engine: Engine, uri: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(select(P.c.id).where(P.c.uri_digest == uri_digest(uri))).scalar()
    if found is None:
        raise NotFound(f"no product {uri} is recorded: check the path, or see 'dpt runs'")
    return int(found)


def show_product(engine: Engine, uri: str) -> dict[str, Any]:
    """Versions of a product, each with its producer run, parents and environment summary."""
    pid = product_id(engine, uri)
    with engine.connect() as conn:
        versions = conn.execute(
            select(V).where(V.c.product_id == pid).order_by(V.c.id.desc())
        ).all()
        producers = {
            r.id: r
            for r in conn.execute(
                select(I, E.c.python_version, E.c.hostname, E.c.fingerprint)
                .outerjoin(E, E.c.id == I.c.environment_id)
                .where(I.c.id.in_([v.produced_by_id for v in versions if v.produced_by_id]))
            )
        }
        Edge = LineageEdge.__table__
        parent_rows = conn.execute(
            select(Edge.c.child_version_id, P.c.uri, V.c.uuid, V.c.content_hash)
            .join(V, V.c.id == Edge.c.parent_version_id)
            .join(P, P.c.id == V.c.product_id)
            .where(Edge.c.child_version_id.in_([v.id for v in versions]))
        ).all()
        tags = version_tags(conn, [v.id for v in versions])
        producer_tags = run_tags(conn, producers)
    parents: dict[int, list[dict[str, Any]]] = {}
    for r in parent_rows:
        parents.setdefault(r.child_version_id, []).append(
            {"uri": r.uri, "version": r.uuid, "content_hash": r.content_hash}
        )
    out = []
    for v in versions:
        producer = producers.get(v.produced_by_id) if v.produced_by_id else None
        out.append(
            {
                "version": v.uuid,
                "content_hash": v.content_hash,
                "size": v.size,
                "mtime": v.mtime,
                "recorded_at": _iso(v.recorded_at),
                "metadata": v.metadata,
                "tags": tags[v.id],
                "produced_by": (
                    {**run_dict(producer), "tags": producer_tags[producer.id]} if producer else None
                ),
                "environment": (
                    {
                        "python": producer.python_version,
                        "host": producer.hostname,
                        "fingerprint": producer.fingerprint,
                    }
                    if producer is not None and producer.fingerprint
                    else None
                ),
                "parents": sorted(parents.get(v.id, []), key=lambda p: p["uri"]),
            }
        )
    return {"uri": uri, "versions": out}


def stats(engine: Engine) -> dict[str, int]:
    tables = {
        "invocations": I,
        "environments": E,
        "products": P,
        "versions": V,
        "edges": LineageEdge.__table__,
        "inputs": InvocationInput.__table__,
        "environment_distributions": EnvironmentDistribution.__table__,
    }
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for name, t in tables.items()
        }
