"""Read-side queries behind ``dpt runs``, ``dpt show`` and ``dpt stats``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, or_, select

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
from dpt_core.store.recorder import uri_digest

I = Invocation.__table__  # noqa: E741
V = DataProductVersion.__table__
P = DataProduct.__table__
E = Environment.__table__

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


def list_runs(
    engine: Engine,
    *,
    orchestrator: str | None = None,
    status: str | None = None,
    job: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    query = select(I).order_by(I.c.started_at.desc(), I.c.id.desc()).limit(limit)
    if orchestrator:
        query = query.where(I.c.orchestrator == orchestrator)
    if status:
        query = query.where(I.c.status == status)
    if job:
        query = query.where(I.c.job == job)
    with engine.connect() as conn:
        return [run_dict(r) for r in conn.execute(query)]


def get_run(engine: Engine, run: str | int) -> dict[str, Any]:
    """A run by numeric id, full UUID or unique UUID prefix (>= 6 characters)."""
    text = str(run).strip()
    with engine.connect() as conn:
        row = None
        if text.isdigit():
            row = conn.execute(select(I).where(or_(I.c.id == int(text), I.c.uuid == text))).first()
        if row is None and len(text) >= 6:  # also a UUID prefix that happens to be all digits
            rows = conn.execute(select(I).where(I.c.uuid.startswith(text)).limit(2)).all()
            if len(rows) > 1:
                raise NotFound(f"run {text!r} is ambiguous: give more of its UUID")
            row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"no run {text!r} is recorded: see 'dpt runs' for run ids")
    return run_dict(row)


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
                "produced_by": run_dict(producer) if producer else None,
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
