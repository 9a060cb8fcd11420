"""Turn dpt events into rows: one transaction per batch, idempotent by UUID.

Recording an event twice is the same as recording it once: invocations and
versions are keyed by UUID, products by URI digest, inputs and edges by their
endpoints. That is what makes spool replay and re-reading orchestrator event
logs safe.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from dpt_core.events import (
    EnvironmentSnapshot,
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductsRead,
    ProductsWritten,
    utcnow,
)
from dpt_core.store.models import (
    DataProduct,
    DataProductVersion,
    Distribution,
    Environment,
    EnvironmentDistribution,
    EnvironmentVariable,
    EnvVariable,
    Invocation,
    InvocationInput,
    InvocationTag,
    LineageEdge,
    VersionTag,
)
from dpt_core.store.upsert import (
    COPY_THRESHOLD,
    chunks,
    in_transaction,
    insert_ignore,
    insert_returning,
    select_in,
)


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


P = _table(DataProduct)
V = _table(DataProductVersion)
I = _table(Invocation)  # noqa: E741
INPUTS = _table(InvocationInput)
EDGES = _table(LineageEdge)
RUN_TAGS = _table(InvocationTag)
VERSION_TAGS = _table(VersionTag)


def insert_tags(
    conn: Connection, table: Table, owner: str, tags: Mapping[tuple[int, str], str]
) -> None:
    """Record ``{(owner id, key): value}`` where the owner has no value for the key yet:
    a record never overwrites a tag (a replayed start keeps what ``dpt tag`` set since);
    the first record of a key wins."""
    insert_ignore(
        conn,
        table,
        [{owner: oid, "key": key, "value": value} for (oid, key), value in tags.items()],
        [owner, "key"],
    )


# Statements on the hot paths, built once (building a Core statement and its cache key
# costs about as much as running a small one on SQLite).
_INVOCATION_ID = select(I.c.id).where(I.c.uuid == bindparam("uuid"))
_FINISH = (
    update(I)
    .where(I.c.uuid == bindparam("b_uuid"))
    .values(
        status=bindparam("b_status"), ended_at=bindparam("b_ended_at"), error=bindparam("b_error")
    )
)
_FINISH_IF_RUNNING = _FINISH.where(I.c.status == "running")
_HANDOVER = (
    update(I)
    .where(I.c.uuid == bindparam("b_uuid"), I.c.status == "running")
    .values(process=bindparam("b_process"))
)
_INPUTS_OF = (
    select(INPUTS.c.version_id, V.c.product_id, V.c.content_hash, V.c.produced_by_id)
    .join(V, V.c.id == INPUTS.c.version_id)
    .where(INPUTS.c.invocation_id == bindparam("inv_id"))
)
_READ_BEFORE = (
    select(V.c.id, V.c.product_id, V.c.content_hash, V.c.produced_by_id)
    .join(INPUTS, INPUTS.c.version_id == V.c.id)
    .where(INPUTS.c.invocation_id == bindparam("inv_id"))
)
_OUTPUTS_OF = select(V.c.id, V.c.explicit_parents).where(V.c.produced_by_id == bindparam("inv_id"))
#: The newest version of each product, with what tells whether it is the same observation.
_NEWEST_VERSIONS = select(
    V.c.id, V.c.product_id, V.c.content_hash, V.c.size, V.c.mtime, V.c.produced_by_id
).where(
    V.c.id.in_(
        select(func.max(V.c.id))
        .where(V.c.product_id.in_(bindparam("product_ids", expanding=True)))
        .group_by(V.c.product_id)
        .scalar_subquery()
    )
)
#: Seconds two mtimes of one observation may differ by (float round trips in the database).
MTIME_TOLERANCE = 1e-3
_LATEST_VERSIONS = (
    select(V.c.product_id, V.c.content_hash, func.max(V.c.id).label("vid"))
    .where(V.c.product_id.in_(bindparam("product_ids", expanding=True)))
    .group_by(V.c.product_id, V.c.content_hash)
)


def _insert_then_find(
    conn: Connection,
    table: Any,
    rows: Sequence[dict[str, Any]],
    key: str,
    columns: Sequence[Any],
    find: Callable[[Connection, Sequence[Any]], dict[Any, Any]],
) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Get-or-create ``rows`` by their unique ``key``: (inserted, found).

    ``inserted``: the rows this statement inserted, by key (``columns`` of each, from
    RETURNING); ``found``: ``find(conn, keys)`` for the others (already there, or
    inserted by a concurrent writer first; on MySQL, every row).
    """
    inserted = insert_returning(conn, table, rows, [key], columns)
    made = {getattr(r, key): r for r in inserted or ()}
    rest = [row[key] for row in rows if row[key] not in made]
    return made, (find(conn, rest) if rest else {})


#: Most ids a recorder keeps per cache before starting the cache over (50 000: about
#: 8 MB a cache; at 200 000 the product and version caches alone held ~60 MB after a
#: write of 200 000 files, see benchmarks/bench_memory.py).
ID_CACHE_SIZE = 50_000

#: Most runs a recorder remembers between batches (id and known columns, ~1.5 KB a
#: run): a scheduler or sensor recording runs for ever grows to this many, then forgets
#: the oldest after each batch.
RUN_CACHE_SIZE = 10_000


def _remember(cache: dict[str, int], ids: dict[str, int]) -> None:
    """Add ``ids`` to ``cache``, which never holds more than ID_CACHE_SIZE: a batch of
    more (a set-based batch adds all its versions at once) leaves its newest ones."""
    if len(ids) > ID_CACHE_SIZE:
        ids = dict(itertools.islice(ids.items(), len(ids) - ID_CACHE_SIZE, None))
    if len(cache) + len(ids) > ID_CACHE_SIZE:
        cache.clear()
    cache.update(ids)


#: The orchestrator (and job) of a placeholder invocation: one named before its start.
PLACEHOLDER = "unknown"
#: Columns a later start of an invocation fills when they are still empty.
_FILLED = (
    I.c.task,
    I.c.external_id,
    I.c.parent_id,
    I.c.user,
    I.c.host,
    I.c.command,
    I.c.code_version,
    I.c.environment_id,
)


@dataclass(frozen=True)
class _Facts:
    """What an invocation's row is known to hold, for :meth:`Recorder._fill_in`."""

    placeholder: bool
    started_at: Any
    filled: frozenset[str]
    parameter_keys: frozenset[str]
    variable_keys: frozenset[str]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> _Facts:
        def keys(value: Any) -> frozenset[str]:
            return frozenset(value) if isinstance(value, dict) else frozenset()

        return cls(
            placeholder=row["orchestrator"] == PLACEHOLDER,
            started_at=_aware(row["started_at"]),
            filled=frozenset(c.name for c in _FILLED if row.get(c.name) is not None),
            parameter_keys=keys(row.get("parameters")),
            variable_keys=keys(row.get("variables")),
        )

    def covers(self, row: Mapping[str, Any]) -> bool:
        """True when a start with ``row`` would add nothing to the row."""
        started = _aware(row["started_at"])
        return (
            not (self.placeholder and row["orchestrator"] != PLACEHOLDER)
            and (started is None or self.started_at is None or started >= self.started_at)
            and all(row[c.name] is None or c.name in self.filled for c in _FILLED)
            and self.parameter_keys.issuperset(row["parameters"] or ())
            and self.variable_keys.issuperset(row["variables"] or ())
        )


_FILL_IN = select(I.c.orchestrator, I.c.started_at, I.c.parameters, I.c.variables, *_FILLED).where(
    I.c.uuid == bindparam("uuid")
)
_FILL_IN_LOCKED = _FILL_IN.with_for_update()


def _aware(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _merged(current: Any, given: Any) -> dict[str, Any] | None:
    """``current`` with the keys of ``given`` it lacks, or None when nothing is added."""
    if not isinstance(given, dict) or not given:
        return None
    if current is None:
        return dict(given)
    if not isinstance(current, dict):
        return None
    missing = {k: v for k, v in given.items() if k not in current}
    return {**current, **missing} if missing else None


def start_row(event: InvocationStarted, env_id: Any, parent_id: Any) -> dict[str, Any]:
    """The ``invocations`` row a start records (every column a start may set)."""
    return {
        "uuid": event.uuid,
        "orchestrator": event.orchestrator[:64],
        "job": event.job[:512],
        "task": event.task[:512] if event.task else None,
        "external_id": event.external_id[:512] if event.external_id else None,
        "parent_id": parent_id,
        "status": event.status,
        "started_at": event.started_at,
        "ended_at": event.ended_at,
        "error": event.error,
        "user": event.user,
        "host": event.host,
        "process": event.process,
        "command": event.command,
        "parameters": event.parameters,
        "variables": event.variables or None,
        "code_version": event.code_version,
        "environment_id": env_id,
    }


def fill_changes(current: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """What a later start (``row``, from :func:`start_row`) changes in an invocation's
    ``current`` row (see :meth:`Recorder._fill_in`): the placeholder's names replaced,
    empty columns filled, the earliest start, the parameter and variable keys it lacks.
    Never the status, nor anything the row already holds."""
    changes: dict[str, Any] = {}
    if current["orchestrator"] == PLACEHOLDER and row["orchestrator"] != PLACEHOLDER:
        changes.update(orchestrator=row["orchestrator"], job=row["job"], task=row["task"])
    for column in _FILLED:
        name = column.name
        if name not in changes and current.get(name) is None and row[name] is not None:
            changes[name] = row[name]
    started = _aware(row["started_at"])
    known = _aware(current["started_at"])
    if started is not None and known is not None and started < known:
        changes["started_at"] = started
    for name in ("parameters", "variables"):
        merged = _merged(current.get(name), row[name])
        if merged is not None:
            changes[name] = merged
    return changes


def uri_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode("utf-8", "surrogateescape")).hexdigest()


def variable_digest(key: str, value: str | None, redacted: str | None) -> str:
    payload = json.dumps([key, value, redacted], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def one_report_per_version(event: Event) -> Event:
    """``event`` with the reports of a version it names more than once (a task writing a
    file twice, an OpenLineage event listing a dataset twice) merged into one, at the place
    of the first: what is recorded then does not depend on the order of the reports."""
    if isinstance(event, ProductsWritten):
        reports = event.outputs
    elif isinstance(event, ProductsRead):
        reports = event.inputs
    else:
        return event
    if len(reports) < 2 or len({o.version_uuid for o in reports}) == len(reports):
        return event
    groups: dict[str, list[ProductObservation]] = {}
    for o in reports:
        groups.setdefault(o.version_uuid, []).append(o)
    merged = tuple(_merged_reports(group) for group in groups.values())
    if isinstance(event, ProductsWritten):
        return event.replace(outputs=merged)
    return event.replace(inputs=merged)


def _merged_reports(reports: list[ProductObservation]) -> ProductObservation:
    """One report of a version from several, the same for any order of them: each field
    from the first report that has it, the reports ranked by what they know (a content
    hash, then a size, then an mtime), then by their content; metadata and tags key by key
    the same way; parents: those any report names (every input if none names any)."""
    if len(reports) == 1:
        return reports[0]
    ranked = sorted(
        reports,
        key=lambda o: (
            o.content_hash is None,
            o.size is None,
            o.mtime is None,
            json.dumps(o.to_dict(), sort_keys=True, default=str),
        ),
    )
    best = ranked[0]
    metadata: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for o in reversed(ranked):  # the better-ranked report's value for a key last
        metadata.update(o.metadata)
        tags.update(o.tags)
    named = [o.parents for o in ranked if o.parents is not None]
    return ProductObservation(
        uri=best.uri,
        version_uuid=best.version_uuid,
        content_hash=best.content_hash,
        size=next((o.size for o in ranked if o.size is not None), None),
        mtime=next((o.mtime for o in ranked if o.mtime is not None), None),
        metadata=metadata,
        parents=tuple(dict.fromkeys(p for ps in named for p in ps)) if named else None,
        tags=tags,
    )


class BulkConflict(Exception):
    """A row the set-based path found absent was there when it inserted it (a
    concurrent writer's): the transaction is rolled back and recorded event by event."""


class Recorder:
    """Writes event batches to one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._environment_ids: dict[str, int] = {}
        #: uuid -> id of invocations seen by this process (ids never change once committed).
        self._invocation_ids: dict[str, int] = {}
        #: URI digest -> product id and version uuid -> version id, likewise: dpt never
        #: deletes products or versions, so a committed id stays right. Bounded by
        #: starting over when full.
        self._product_ids: dict[str, int] = {}
        self._version_ids: dict[str, int] = {}
        #: uuid -> what this process knows an invocation's row holds (see _Facts): a
        #: start that adds nothing to it is not looked up. Only ever an underestimate of
        #: the row (columns are filled, never emptied; started_at only gets earlier).
        self._facts: dict[str, _Facts] = {}
        #: Invocations inserted by the current transaction -> the kinds of events
        #: ("read", "write") applied to them since. Nobody else can have given such an
        #: invocation inputs or outputs yet, so what was not applied here is empty.
        self._new_here: dict[str, set[str]] = {}

    # -- entry point -------------------------------------------------------------------

    def record(self, events: Sequence[Event], *, attempts: int = 5) -> None:
        """Record ``events`` in one transaction, retrying transient lock conflicts.

        A version named more than once in one event is recorded as one report of it
        (:func:`one_report_per_version`). A batch of several events goes through
        :meth:`_apply_batch` (event by event here;
        set-wise in :class:`dpt_core.store.bulk.BulkRecorder`, the store's). If that
        meets a row it did not expect (a concurrent writer's: :class:`BulkConflict`), the
        transaction is rolled back and the batch recorded again event by event.
        """
        events = [one_report_per_version(event) for event in events]
        set_based = len(events) > 1

        def apply_all(conn: Connection) -> None:
            self._new_here.clear()
            if set_based:
                self._apply_batch(conn, events)
                return
            for event in events:
                self._apply(conn, event)

        def on_retry() -> None:
            # ids cached in a rolled-back transaction may not exist
            self._environment_ids.clear()
            self._invocation_ids.clear()
            self._product_ids.clear()
            self._version_ids.clear()
            self._facts.clear()

        try:
            try:
                in_transaction(self.engine, apply_all, attempts=attempts, on_retry=on_retry)
            except (IntegrityError, BulkConflict):
                # A cached id whose row is gone (the database was emptied or replaced
                # under this process), or a row the set-based path found missing that a
                # concurrent writer inserted: once more, event by event, looking
                # everything up.
                on_retry()
                set_based = False
                in_transaction(self.engine, apply_all, attempts=attempts, on_retry=on_retry)
        except BaseException:
            on_retry()
            raise
        # After the batch, not before it: a set-based batch adds all its runs at once,
        # so a check before it let a cache end a batch above its bound.
        self._cap_caches()

    def _apply_batch(self, conn: Connection, events: Sequence[Event]) -> None:
        """Apply a batch of several events in ``conn``'s transaction (here: one by one)."""
        for event in events:
            self._apply(conn, event)

    def _cap_caches(self) -> None:
        """Forget the oldest entries of a cache above RUN_CACHE_SIZE: a long-lived
        process (a scheduler, a sensor) seeing new invocations for ever keeps its memory
        flat. Called after each batch, so no cache is above its bound between batches,
        and the runs just written stay known."""
        for cache in (self._environment_ids, self._invocation_ids, self._facts):
            excess = len(cache) - RUN_CACHE_SIZE
            if excess > 0:
                for key in list(itertools.islice(cache, excess)):  # oldest first
                    del cache[key]

    def _apply(self, conn: Connection, event: Event) -> None:
        if isinstance(event, InvocationStarted):
            self._start(conn, event)
        elif isinstance(event, InvocationFinished):
            self._finish(conn, event)
        elif isinstance(event, ProductsRead):
            self._read(conn, event)
        elif isinstance(event, ProductsWritten):
            self._write(conn, event)
        else:  # pragma: no cover
            raise TypeError(f"not a dpt event: {event!r}")

    # -- environments ------------------------------------------------------------------

    def environment_id(self, conn: Connection, env: EnvironmentSnapshot) -> int:
        cached = self._environment_ids.get(env.fingerprint)
        if cached is not None:
            return cached
        E = _table(Environment)
        found = conn.execute(select(E.c.id).where(E.c.fingerprint == env.fingerprint)).scalar()
        if found is None:
            found = self._insert_environment(conn, env)
        self._environment_ids[env.fingerprint] = found
        return found

    def _insert_environment(self, conn: Connection, env: EnvironmentSnapshot) -> int:
        E = _table(Environment)
        D = _table(Distribution)
        VAR = _table(EnvVariable)
        row = {
            "fingerprint": env.fingerprint,
            "python_version": env.python_version[:64],
            "implementation": env.implementation[:64],
            "platform": env.platform[:255],
            "hostname": env.hostname[:255],
            "user": env.user[:255],
            "facets": env.facets,
            "created_at": utcnow(),
        }
        insert_ignore(conn, E, [row], ["fingerprint"])
        env_id: int = conn.execute(
            select(E.c.id).where(E.c.fingerprint == env.fingerprint)
        ).scalar_one()

        dists = sorted(set(env.distributions))
        insert_ignore(conn, D, [{"name": n, "version": v} for n, v in dists], ["name", "version"])
        wanted = set(dists)
        dist_ids = [
            r.id
            for r in select_in(
                conn, [D.c.id, D.c.name, D.c.version], D.c.name, [n for n, _ in dists]
            )
            if (r.name, r.version) in wanted
        ]
        insert_ignore(
            conn,
            _table(EnvironmentDistribution),
            [{"environment_id": env_id, "distribution_id": d} for d in dist_ids],
            ["environment_id", "distribution_id"],
        )

        var_rows = [
            {"digest": variable_digest(k, v, r), "key": k, "value": v, "redacted_digest": r}
            for k, v, r in env.variables
        ]
        insert_ignore(conn, VAR, var_rows, ["digest"])
        var_ids = [
            r.id for r in select_in(conn, [VAR.c.id], VAR.c.digest, [r["digest"] for r in var_rows])
        ]
        insert_ignore(
            conn,
            _table(EnvironmentVariable),
            [{"environment_id": env_id, "variable_id": v} for v in var_ids],
            ["environment_id", "variable_id"],
        )
        return env_id

    # -- invocations -------------------------------------------------------------------

    def invocation_id(self, conn: Connection, uuid: str) -> int | None:
        found = self._invocation_ids.get(uuid)
        if found is None:
            found = conn.execute(_INVOCATION_ID, {"uuid": uuid}).scalar()
            if found is not None:
                self._invocation_ids[uuid] = found
        return found

    def _start(self, conn: Connection, event: InvocationStarted) -> None:
        env_id = self.environment_id(conn, event.environment) if event.environment else None
        parent_id = self.invocation_id(conn, event.parent_uuid) if event.parent_uuid else None
        row = start_row(event, env_id, parent_id)
        inserted = insert_returning(conn, I, [row], ["uuid"], [I.c.id])
        if inserted:  # the next events of this invocation need not look it up
            self._invocation_ids[event.uuid] = inserted[0].id
            self._new_here[event.uuid] = set()
            self._know(row)
            if event.tags:
                self._tag_run(conn, inserted[0].id, event.tags)
            return
        if event.tags:
            inv_id = self.invocation_id(conn, event.uuid)
            if inv_id is not None:
                self._tag_run(conn, inv_id, event.tags)
        # Recorded before: this start fills in what the row does not know yet, and
        # never changes what it does (its status included).
        self._fill_in(conn, row)
        if event.status != "running":
            # Recorded before (started elsewhere, e.g. from inside the task it stands
            # for): a start that carries the outcome also closes it.
            self._finish(
                conn,
                InvocationFinished(
                    uuid=event.uuid,
                    status=event.status,
                    ended_at=event.ended_at or event.started_at,
                    error=event.error,
                ),
            )
        elif event.process is not None:
            # Started again by another process (a deferred task resumed), or handed over
            # (see InvocationHandle.detach): the run belongs to that process now.
            conn.execute(_HANDOVER, {"b_uuid": event.uuid, "b_process": event.process})

    @staticmethod
    def _tag_run(conn: Connection, inv_id: int, tags: Mapping[str, str]) -> None:
        insert_tags(conn, RUN_TAGS, "invocation_id", {(inv_id, k): v for k, v in tags.items()})

    def _fill_in(self, conn: Connection, row: dict[str, Any]) -> None:
        """Complete an existing invocation with what a later start of it knows.

        A start may come after other records of its run: products recorded first (the
        row is then a placeholder, orchestrator ``unknown``), a child naming it as its
        parent, or another reporter of the same run (an OpenLineage producer next to
        dpt's own adapter). Whatever order they come in, the row ends the same: the
        placeholder's names are replaced, empty columns filled, ``started_at`` is the
        earliest start heard of, parameters and variables gain the keys they lack.
        Nothing a record already holds is overwritten, and the status never changes.
        """
        facts = self._facts.get(row["uuid"])
        if facts is not None and facts.covers(row):
            return
        query = _FILL_IN_LOCKED if conn.dialect.name != "sqlite" else _FILL_IN
        current = conn.execute(query, {"uuid": row["uuid"]}).one_or_none()
        if current is None:  # pragma: no cover - inserted or found by the caller
            return
        changes = fill_changes(current._asdict(), row)
        if changes:
            conn.execute(update(I).where(I.c.uuid == row["uuid"]).values(changes))
        self._know({**current._asdict(), **changes, "uuid": row["uuid"]})

    def _know(self, row: dict[str, Any]) -> None:
        self._facts.pop(row["uuid"], None)  # the newest last, for _cap_caches
        self._facts[row["uuid"]] = _Facts.of(row)

    def _finish(self, conn: Connection, event: InvocationFinished) -> None:
        conn.execute(
            _FINISH_IF_RUNNING if event.only_if_running else _FINISH,
            {
                "b_uuid": event.uuid,
                "b_status": event.status,
                "b_ended_at": event.ended_at,
                "b_error": event.error,
            },
        )

    def _nothing_yet(self, uuid: str, kind: str, *, now: str) -> bool:
        """True when invocation ``uuid`` certainly has no ``kind`` rows yet (it was inserted
        by this transaction, and no such event came since); records that ``now`` came."""
        seen = self._new_here.get(uuid)
        if seen is None:
            return False
        empty = kind not in seen
        seen.add(now)
        return empty

    def _require_invocation(self, conn: Connection, uuid: str) -> int:
        inv_id = self.invocation_id(conn, uuid)
        if inv_id is None:
            # Products recorded for an invocation we never saw start (a lost start event,
            # or an adapter attaching late): keep them, under a placeholder invocation.
            insert_ignore(
                conn,
                I,
                [
                    {
                        "uuid": uuid,
                        "orchestrator": PLACEHOLDER,
                        "job": PLACEHOLDER,
                        "status": "running",
                        "started_at": utcnow(),
                    }
                ],
                ["uuid"],
            )
            inv_id = self.invocation_id(conn, uuid)
            assert inv_id is not None
        return inv_id

    # -- products ----------------------------------------------------------------------

    def product_ids(
        self,
        conn: Connection,
        uris: Sequence[str],
        *,
        likely_new: bool = False,
        created: set[int] | None = None,
    ) -> dict[str, int]:
        """Ids of the products named by ``uris``, creating the missing ones.

        Looks up first and inserts only what is missing: products are read far more
        often than they are new, and an insert that conflicts still costs an index probe
        (and on MySQL a row lock). For a few outputs (``likely_new``) on PostgreSQL and
        SQLite it inserts first instead: a new product then costs one statement, not
        two, and an existing one still two.

        :param created: receives the ids of the products this call inserted: they can
            have no versions yet, not even from a concurrent writer (nobody else sees
            them before this transaction commits).
        """
        digests = {uri: uri_digest(uri) for uri in dict.fromkeys(uris)}
        if not digests:
            return {}
        cache = self._product_ids
        by_digest = {d: cache[d] for d in digests.values() if d in cache}
        if len(by_digest) == len(digests):
            return {uri: by_digest[d] for uri, d in digests.items()}
        insert_first = (
            likely_new
            and conn.dialect.name in ("postgresql", "sqlite")
            and len(digests) < COPY_THRESHOLD  # a big re-run would COPY for nothing
        )
        if not insert_first:
            by_digest.update(
                self._products_by_digest(conn, [d for d in digests.values() if d not in by_digest])
            )
        missing = [(u, d) for u, d in digests.items() if d not in by_digest]
        if missing:
            now = utcnow()
            made, theirs = _insert_then_find(  # theirs: a concurrent writer's
                conn,
                P,
                [{"uri_digest": d, "uri": u, "created_at": now} for u, d in missing],
                "uri_digest",
                [P.c.id, P.c.uri_digest],
                self._products_by_digest,
            )
            if created is not None:
                created.update(r.id for r in made.values())
            by_digest.update((d, r.id) for d, r in made.items())
            by_digest.update(theirs)
        _remember(cache, by_digest)
        return {uri: by_digest[d] for uri, d in digests.items()}

    @staticmethod
    def _products_by_digest(conn: Connection, digests: Sequence[str]) -> dict[str, int]:
        rows = select_in(conn, [P.c.id, P.c.uri_digest], P.c.uri_digest, digests)
        return {r.uri_digest: r.id for r in rows}

    def _version_ids_of(self, conn: Connection, uuids: Sequence[str]) -> dict[str, int]:
        """Ids of the versions among ``uuids`` that exist (from the cache when known)."""
        cache = self._version_ids
        found = {u: cache[u] for u in uuids if u in cache}
        rest = [u for u in uuids if u not in found]
        if rest:
            looked_up = {u: r.id for u, r in self._version_rows(conn, rest).items()}
            _remember(cache, looked_up)
            found.update(looked_up)
        return found

    def _version_rows(self, conn: Connection, uuids: Sequence[str]) -> dict[str, Any]:
        return {
            r.uuid: r
            for r in select_in(conn, [V.c.id, V.c.uuid, V.c.produced_by_id], V.c.uuid, uuids)
        }

    def _read(self, conn: Connection, event: ProductsRead) -> None:
        inv_id = self._require_invocation(conn, event.invocation_uuid)
        observations = list(event.inputs)
        created: set[int] = set()
        products = self.product_ids(conn, [o.uri for o in observations], created=created)
        # Products this statement just created have no versions at all yet: nothing to
        # look up for them, by uuid or otherwise.
        existing = [o for o in observations if products[o.uri] not in created]
        known = self._version_ids_of(conn, [o.version_uuid for o in existing])

        # A read this invocation already recorded (a replay) keeps the version it linked
        # then, even if a newer version with the same content appeared since.
        # (Neither lookup is needed when every read names a version that exists.)
        unresolved = {products[o.uri] for o in existing if o.version_uuid not in known}
        already: dict[tuple[int, str | None], int] = {}
        #: Versions of unknown content nobody produced that this invocation read (another
        #: reporter of the run named the product without a version): a hashed read of the
        #: same product by the same run is that read, and fills the version in.
        unknown_read: dict[int, int] = {}
        for r in conn.execute(_READ_BEFORE, {"inv_id": inv_id}) if unresolved else ():
            already[(r.product_id, r.content_hash)] = r.id
            already[(r.product_id, None)] = max(already.get((r.product_id, None), 0), r.id)
            if r.content_hash is None and r.produced_by_id is None:
                unknown_read[r.product_id] = max(unknown_read.get(r.product_id, 0), r.id)

        # Otherwise the version each read saw: the exact one named, else the newest with the
        # same content hash, else (no hash) the newest at all, else a newly observed version.
        latest_by_hash: dict[tuple[int, str | None], int] = {}
        latest: dict[int, int] = {}
        for r in self._latest_versions(conn, list(unresolved)):
            latest_by_hash[(r.product_id, r.content_hash)] = r.vid
            latest[r.product_id] = max(latest.get(r.product_id, 0), r.vid)

        chosen: dict[str, int] = {}
        new_rows = []
        filled: dict[int, ProductObservation] = {}
        now = utcnow()
        for o in observations:
            pid = products[o.uri]
            if o.version_uuid in known:
                chosen[o.version_uuid] = known[o.version_uuid]
                continue
            if (pid, o.content_hash) in already:
                chosen[o.version_uuid] = already[(pid, o.content_hash)]
                continue
            vid = latest_by_hash.get((pid, o.content_hash)) if o.content_hash else latest.get(pid)
            if vid is not None:
                chosen[o.version_uuid] = vid
            elif o.content_hash is not None and pid in unknown_read and pid not in created:
                filled[unknown_read[pid]] = o
                chosen[o.version_uuid] = unknown_read[pid]
            else:
                new_rows.append(self._version_row(o, pid, None, now))
        if filled:
            self._fill_versions(conn, filled, chosen, new_rows, products, now)
        if new_rows:
            made, replayed = _insert_then_find(
                conn, V, new_rows, "uuid", [V.c.id, V.c.uuid], self._version_rows
            )
            ids = {uuid: r.id for uuid, r in (made | replayed).items()}
            _remember(self._version_ids, ids)
            chosen.update(ids)
        input_ids = sorted(set(chosen.values()))
        insert_ignore(
            conn,
            INPUTS,
            [{"invocation_id": inv_id, "version_id": v} for v in input_ids],
            ["invocation_id", "version_id"],
        )
        outputs = (
            []
            if self._nothing_yet(event.invocation_uuid, "write", now="read")
            else conn.execute(_OUTPUTS_OF, {"inv_id": inv_id}).all()
        )
        own = {r.id for r in outputs}  # an invocation's own outputs are never its parents
        implicit_outputs = [r.id for r in outputs if not r.explicit_parents]
        self._insert_edges(
            conn, [(p, c) for c in implicit_outputs for p in input_ids if p not in own], inv_id
        )

    def _fill_versions(
        self,
        conn: Connection,
        filled: dict[int, ProductObservation],
        chosen: dict[str, int],
        new_rows: list[dict[str, Any]],
        products: dict[str, int],
        now: Any,
    ) -> None:
        """Give versions of unknown content the hash, size and mtime a read observed;
        a version that says why it has no hash (``dpt/unhashed``: the file was missing)
        is another observation, and the read gets a version of its own instead."""
        known = {
            r.id: r.known_metadata
            for r in conn.execute(
                select(V.c.id, V.c["metadata"].label("known_metadata")).where(
                    V.c.id.in_(sorted(filled))
                )
            )
        }
        for version_id, o in filled.items():
            metadata = known.get(version_id)
            if isinstance(metadata, dict) and "dpt/unhashed" in metadata:
                del chosen[o.version_uuid]
                new_rows.append(self._version_row(o, products[o.uri], None, now))
                continue
            conn.execute(
                update(V)
                .where(V.c.id == version_id, V.c.content_hash.is_(None))
                .values(
                    {
                        k: v
                        for k, v in (
                            ("content_hash", o.content_hash),
                            ("size", o.size),
                            ("mtime", o.mtime),
                        )
                        if v is not None
                    }
                )
            )

    def _latest_versions(self, conn: Connection, product_ids: Sequence[int]) -> list[Any]:
        return self._rows_in(conn, _LATEST_VERSIONS, product_ids)

    @staticmethod
    def _version_row(
        o: ProductObservation, product_id: int, producer: int | None, now: Any
    ) -> dict[str, Any]:
        return {
            "uuid": o.version_uuid,
            "product_id": product_id,
            "content_hash": o.content_hash,
            "size": o.size,
            "mtime": o.mtime,
            "produced_by_id": producer,
            "explicit_parents": o.parents is not None,
            "metadata": o.metadata or None,
            "recorded_at": now,
        }

    def _write(self, conn: Connection, event: ProductsWritten) -> None:
        inv_id = self._require_invocation(conn, event.invocation_uuid)
        outputs = list(event.outputs)
        seen = self._new_here.get(event.invocation_uuid)
        wrote_before = seen is None or "write" in seen  # (else no version is its own yet)
        created: set[int] = set()
        products = self.product_ids(
            conn, [o.uri for o in outputs], likely_new=True, created=created
        )
        inputs = (
            []
            if self._nothing_yet(event.invocation_uuid, "read", now="write")
            else conn.execute(_INPUTS_OF, {"inv_id": inv_id}).all()
        )

        # Task code may name an output as a parent before the output is written (so it
        # was read, as a version nobody produced yet): writing that same content is that
        # version, not a second one.
        claimable = {
            (r.product_id, r.content_hash): r.version_id
            for r in inputs
            if r.content_hash is not None and r.produced_by_id in (None, inv_id)
        }
        reused: dict[str, int] = {}
        for o in outputs:
            if o.content_hash is not None and (products[o.uri], o.content_hash) in claimable:
                reused[o.version_uuid] = claimable[(products[o.uri], o.content_hash)]
        # Another invocation may have seen this very file first (a reader naming it as a
        # parent before its producer's record arrived): the same content, size and mtime
        # as the product's newest version, which nobody produced, is that version.
        same, merged = self._same_observations(
            conn, inv_id, outputs, products, created, reused, wrote_before
        )
        reused.update(same)
        fresh = [o for o in outputs if o.version_uuid not in reused]
        now = utcnow()
        # Versions already there (a replay, or one a reader saw first) are looked up.
        made, known_before = _insert_then_find(
            conn,
            V,
            [self._version_row(o, products[o.uri], inv_id, now) for o in fresh],
            "uuid",
            [V.c.id, V.c.uuid, V.c.produced_by_id],
            self._version_rows,
        )
        rows = made | known_before
        # A reader saw this exact version before its producer was recorded: claim it, with
        # what the producer knows of it.
        adopted = {uuid: r.id for uuid, r in rows.items() if r.produced_by_id is None}
        claims = {**adopted, **reused}
        for o in outputs:
            if o.version_uuid in claims:
                explicit, metadata = o.parents is not None, o.metadata or None
                if o.version_uuid in merged:  # its own version, reported again: add to it
                    known_explicit, known_metadata = merged[o.version_uuid]
                    explicit = explicit or known_explicit
                    metadata = {**(o.metadata or {}), **(known_metadata or {})} or None
                conn.execute(
                    update(V)
                    .where(V.c.id == claims[o.version_uuid])
                    .values(
                        {
                            "produced_by_id": inv_id,
                            "explicit_parents": explicit,
                            "metadata": metadata,
                            **{
                                k: v
                                for k, v in (
                                    ("content_hash", o.content_hash),
                                    ("size", o.size),
                                    ("mtime", o.mtime),
                                )
                                if v is not None
                            },
                        }
                    )
                )
        own_rows = {uuid: r.id for uuid, r in rows.items()}
        _remember(self._version_ids, own_rows)  # (not the reused: their uuid is another's)
        version_of = own_rows | reused
        tags: dict[tuple[int, str], str] = {}
        for o in outputs:
            for key, value in o.tags.items():
                tags.setdefault((version_of[o.version_uuid], key), value)
        if tags:
            insert_tags(conn, VERSION_TAGS, "version_id", tags)

        # An invocation's own outputs are never its parents.
        own = set(version_of.values())
        own.update(r.version_id for r in inputs if r.produced_by_id == inv_id)
        all_inputs = [r.version_id for r in inputs if r.version_id not in own]
        input_by_product: dict[int, int] = {}
        for r in inputs:
            if r.version_id not in own:
                input_by_product[r.product_id] = max(
                    input_by_product.get(r.product_id, 0), r.version_id
                )
        parent_products = (
            self.product_ids(conn, [p for o in outputs for p in (o.parents or ())])
            if any(o.parents for o in outputs)
            else {}
        )
        missing = [pid for pid in set(parent_products.values()) if pid not in input_by_product]
        latest: dict[int, int] = {}
        for r in self._latest_versions(conn, missing):
            latest[r.product_id] = max(latest.get(r.product_id, 0), r.vid)

        edges: list[tuple[int, int]] = []
        for o in outputs:
            child = version_of[o.version_uuid]
            if o.parents is None:
                edges.extend((p, child) for p in all_inputs if p != child)
                continue
            for parent_uri in o.parents:
                pid = parent_products[parent_uri]
                parent = input_by_product.get(pid) or latest.get(pid)
                if parent is not None and parent != child:
                    edges.append((parent, child))
        self._insert_edges(conn, edges, inv_id)

    def _same_observations(
        self,
        conn: Connection,
        inv_id: int,
        outputs: Sequence[ProductObservation],
        products: dict[str, int],
        created: set[int],
        reused: dict[str, int],
        wrote_before: bool,
    ) -> tuple[dict[str, int], dict[str, tuple[bool, Any]]]:
        """Outputs (by version uuid) that are an observation already recorded: the
        product's newest version, with size and mtime the same where both sides know them,
        and

        * the same content hash, the version unproduced (a reader saw it first) or
          produced by this invocation (a replay); or
        * produced by this invocation, one side without a content hash (two reporters of
          one run, dpt's adapter and an OpenLineage producer, in either order: the one
          version gains what the other knows). Not for an observation that says why it
          has no hash (``dpt/unhashed``: a missing file is a new observation).

        :returns: ``(same, merged)``: version uuid -> the version's id, and for the second
            kind version uuid -> (explicit_parents, metadata) of the version as recorded.
        """

        def unhashed(metadata: Any) -> bool:
            return isinstance(metadata, dict) and "dpt/unhashed" in metadata

        wanted = {
            products[o.uri]
            for o in outputs
            if o.version_uuid not in reused
            and products[o.uri] not in created  # new products have no versions at all
            and (o.content_hash is not None or (wrote_before and not unhashed(o.metadata)))
        }
        if not wanted:
            return {}, {}
        newest = {r.product_id: r for r in self._rows_in(conn, _NEWEST_VERSIONS, list(wanted))}
        same: dict[str, int] = {}
        candidates: dict[str, int] = {}
        for o in outputs:
            row = newest.get(products[o.uri])
            if (
                row is None
                or o.version_uuid in reused
                or (row.size is not None and o.size is not None and row.size != o.size)
                or (
                    row.mtime is not None
                    and o.mtime is not None
                    and abs(row.mtime - o.mtime) > MTIME_TOLERANCE
                )
            ):
                continue
            if o.content_hash is not None and row.content_hash == o.content_hash:
                if row.produced_by_id in (None, inv_id):
                    same[o.version_uuid] = row.id
            elif (
                row.produced_by_id == inv_id
                and (o.content_hash is None or row.content_hash is None)
                and not unhashed(o.metadata)
            ):
                candidates[o.version_uuid] = row.id
        merged: dict[str, tuple[bool, Any]] = {}
        if candidates:
            known = {
                r.id: r
                for r in conn.execute(
                    select(
                        V.c.id, V.c.explicit_parents, V.c["metadata"].label("known_metadata")
                    ).where(V.c.id.in_(sorted(set(candidates.values()))))
                )
            }
            for version_uuid, version_id in candidates.items():
                row = known[version_id]
                if not unhashed(row.known_metadata):
                    same[version_uuid] = version_id
                    merged[version_uuid] = (bool(row.explicit_parents), row.known_metadata)
        return same, merged

    @staticmethod
    def _rows_in(conn: Connection, statement: Any, product_ids: Sequence[int]) -> list[Any]:
        rows: list[Any] = []
        for part in chunks(list(product_ids)):
            rows.extend(conn.execute(statement, {"product_ids": list(part)}).all())
        return rows

    def _insert_edges(
        self, conn: Connection, edges: Sequence[tuple[int, int]], inv_id: int
    ) -> None:
        unique = list(dict.fromkeys(edges))
        insert_ignore(
            conn,
            EDGES,
            [
                {"parent_version_id": p, "child_version_id": c, "invocation_id": inv_id}
                for p, c in unique
            ],
            ["parent_version_id", "child_version_id"],
        )
