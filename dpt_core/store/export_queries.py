"""The reads behind the exports (:mod:`dpt_core.export`): runs, their parents, the
versions they read and wrote, and their environments.

The exports turn records into OpenLineage events and PROV-JSON; how the records
are found (tables, joins, batches) stays here, in the store, so an export never
queries the models itself. Every read is a handful of queries per batch of runs,
never one per run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Select, func, select

from dpt_core.store.models import (
    DataProduct,
    DataProductVersion,
    Environment,
    Invocation,
    InvocationInput,
    LineageEdge,
)

__all__ = [
    "ProvRecords",
    "RunBatch",
    "RunReader",
    "VersionRef",
    "count_runs",
    "prov_records",
    "run_ids",
]

I = Invocation.__table__  # noqa: E741
V = DataProductVersion.__table__
P = DataProduct.__table__
IN = InvocationInput.__table__
EDGE = LineageEdge.__table__
ENV = Environment.__table__


class VersionRef(NamedTuple):
    """A product version a run read or wrote."""

    uri: str
    uuid: str
    content_hash: str | None


def _started_since(query: Select[Any], since: dt.datetime | None) -> Select[Any]:
    return query if since is None else query.where(I.c.started_at >= since)


def count_runs(engine: Engine, since: dt.datetime | None = None) -> int:
    """How many invocations started at or after ``since`` (all when None)."""
    with engine.connect() as conn:
        query = _started_since(select(func.count()).select_from(I), since)
        return int(conn.execute(query).scalar_one())


def run_ids(engine: Engine, since: dt.datetime | None = None) -> list[int]:
    """Row ids of the invocations started at or after ``since``, oldest first."""
    with engine.connect() as conn:
        query = _started_since(select(I.c.id).order_by(I.c.started_at, I.c.id), since)
        return list(conn.execute(query).scalars())


@dataclass
class RunBatch:
    """One batch of runs as :meth:`RunReader.read` returns it.

    :param runs: the invocation rows (every column), by row id.
    :param inputs: the versions each run read, by run id.
    :param outputs: the versions each run wrote, by run id.
    """

    runs: dict[int, Any]
    inputs: dict[int, list[VersionRef]] = field(default_factory=dict)
    outputs: dict[int, list[VersionRef]] = field(default_factory=dict)


class RunReader:
    """Reads runs batch by batch, with what an export needs around them.

    Parents (up to the root) and environments are cached across batches: each is
    read once per export. A short connection per batch, so writing the export out
    never holds the database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: ``id, uuid, job, task, parent_id`` of every run met as an ancestor.
        self.ancestors: dict[int, Any] = {}
        self._environments: dict[int, dict[str, Any]] = {}

    def read(self, ids: Sequence[int]) -> RunBatch:
        """The runs ``ids``, their versions read and written; loads their ancestors
        (:meth:`parent`, :meth:`root`) and environments (:meth:`environment`)."""
        with self.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(I).where(I.c.id.in_(ids)))}
            self._load_ancestors(
                conn, {r.parent_id for r in rows.values() if r.parent_id is not None}
            )
            inputs, outputs = _versions_by_run(conn, ids)
            for row in rows.values():
                self._load_environment(conn, row.environment_id)
        return RunBatch(rows, inputs, outputs)

    def parent(self, row: Any) -> Any | None:
        """The parent run's ``id, uuid, job, task, parent_id`` of ``row``, or None."""
        return self.ancestors.get(row.parent_id) if row.parent_id is not None else None

    def root(self, run_id: int) -> Any | None:
        """The outermost ancestor of run ``run_id`` (itself when it has no parent)."""
        seen = set()
        row = self.ancestors.get(run_id)
        while row is not None and row.parent_id is not None and row.parent_id not in seen:
            seen.add(row.id)
            parent = self.ancestors.get(row.parent_id)
            if parent is None:
                break
            row = parent
        return row

    def environment(self, environment_id: int | None) -> dict[str, Any] | None:
        """The environment (``dpt env show --json`` shape) of a run in a batch read."""
        return None if environment_id is None else self._environments.get(environment_id)

    def _load_ancestors(self, conn: Connection, parent_ids: set[int]) -> None:
        missing = parent_ids - self.ancestors.keys()
        if not missing:
            return
        chain = (
            select(I.c.id, I.c.parent_id)
            .where(I.c.id.in_(sorted(missing)))
            .cte("chain", recursive=True)
        )
        chain = chain.union(select(I.c.id, I.c.parent_id).join(chain, I.c.id == chain.c.parent_id))
        query = select(I.c.id, I.c.uuid, I.c.job, I.c.task, I.c.parent_id).where(
            I.c.id.in_(select(chain.c.id))
        )
        for row in conn.execute(query):
            self.ancestors[row.id] = row

    def _load_environment(self, conn: Connection, environment_id: int | None) -> None:
        if environment_id is None or environment_id in self._environments:
            return
        from dpt_core.store.analysis import _environment

        env = _environment(conn, environment_id)
        env.pop("_digests", None)
        self._environments[environment_id] = env


def _versions_by_run(
    conn: Connection, ids: Sequence[int]
) -> tuple[dict[int, list[VersionRef]], dict[int, list[VersionRef]]]:
    inputs: dict[int, list[VersionRef]] = {}
    outputs: dict[int, list[VersionRef]] = {}
    for r in conn.execute(
        select(IN.c.invocation_id, P.c.uri, V.c.uuid, V.c.content_hash)
        .join(V, V.c.id == IN.c.version_id)
        .join(P, P.c.id == V.c.product_id)
        .where(IN.c.invocation_id.in_(ids))
    ):
        inputs.setdefault(r.invocation_id, []).append(VersionRef(r.uri, r.uuid, r.content_hash))
    for r in conn.execute(
        select(V.c.produced_by_id, P.c.uri, V.c.uuid, V.c.content_hash)
        .join(P, P.c.id == V.c.product_id)
        .where(V.c.produced_by_id.in_(ids))
    ):
        outputs.setdefault(r.produced_by_id, []).append(VersionRef(r.uri, r.uuid, r.content_hash))
    return inputs, outputs


@dataclass
class ProvRecords:
    """What a PROV document is made of, for the runs started since a time.

    :param runs: invocation rows (every column) with their environment's
        ``fingerprint, python_version, platform, hostname``, oldest first.
    :param parents: UUID of each parent run, by its row id.
    :param used: ``(invocation_id, version_id)`` of every read.
    :param generated: ``(id, produced_by_id)`` of every version written.
    :param derived: ``(parent_version_id, child_version_id, invocation_id)`` of every
        lineage edge the runs made.
    :param versions: ``id, uuid, content_hash, size, recorded_at, uri`` of every version
        named above, by row id.
    """

    runs: list[Any]
    parents: dict[int, str]
    used: list[Any]
    generated: list[Any]
    derived: list[Any]
    versions: dict[int, Any]


def prov_records(engine: Engine, since: dt.datetime | None = None) -> ProvRecords:
    """The records of every invocation started at or after ``since`` (all when None)."""
    runs = _started_since(select(I.c.id), since)
    with engine.connect() as conn:
        run_rows = conn.execute(
            select(I, ENV.c.fingerprint, ENV.c.python_version, ENV.c.platform, ENV.c.hostname)
            .outerjoin(ENV, ENV.c.id == I.c.environment_id)
            .where(I.c.id.in_(runs))
            .order_by(I.c.started_at, I.c.id)
        ).all()
        parents = {
            r.id: r.uuid
            for r in conn.execute(
                select(I.c.id, I.c.uuid).where(
                    I.c.id.in_(select(I.c.parent_id).where(I.c.id.in_(runs)))
                )
            )
        }
        used = conn.execute(
            select(IN.c.invocation_id, IN.c.version_id).where(IN.c.invocation_id.in_(runs))
        ).all()
        generated = conn.execute(
            select(V.c.id, V.c.produced_by_id).where(V.c.produced_by_id.in_(runs))
        ).all()
        derived = conn.execute(
            select(EDGE.c.parent_version_id, EDGE.c.child_version_id, EDGE.c.invocation_id).where(
                EDGE.c.invocation_id.in_(runs)
            )
        ).all()
        version_ids = (
            {r.version_id for r in used}
            | {r.id for r in generated}
            | {r.parent_version_id for r in derived}
            | {r.child_version_id for r in derived}
        )
        versions = {
            r.id: r
            for r in conn.execute(
                select(V.c.id, V.c.uuid, V.c.content_hash, V.c.size, V.c.recorded_at, P.c.uri)
                .join(P, P.c.id == V.c.product_id)
                .where(V.c.id.in_(sorted(version_ids)))
            )
        }
    return ProvRecords(
        list(run_rows), parents, list(used), list(generated), list(derived), versions
    )
