"""Record a batch of events set-wise: a few statements per batch, not several per event.

The per-event recorder (:class:`~dpt_core.store.recorder.Recorder`) issues about five
statements per OpenLineage event, one round trip each. This module records the same
batch with a number of statements that does not grow with the batch: one lookup of
the invocations it names, one get-or-create of its products, one multi-row INSERT per
table, one SELECT each for what earlier transactions gave its runs as inputs and
outputs, one executemany for the ends.

It reaches the same rows as recording the events one by one, in order, because it
*simulates* that order in Python: the batch is walked event by event against what the
database held before it (fetched once) plus what the earlier events of the batch
added, and only the outcome is written. It decides only what it can decide that way --
the common case of an ingest:

* starts of runs that are still running (no outcome, no process hand-over);
* starts that carry their outcome (a sensor reporting a finished step in one event):
  a new run is inserted with it, a known one filled in and ended;
* ends of any final status;
* reads of versions that exist, or of products created by this batch (no versions
  before it);
* reads that name a version uuid of their own (a reader that hashed the file) of a
  product with versions, by a run that had not read that product: the newest version
  with the content hash read (without a hash, the newest at all), made earlier in the
  batch or before it -- what a chain of tasks reading each other's files records;
* writes, without named parents, of new versions: of products created by this batch,
  or of known products whose newest version another run produced and which the writer
  did not read (the common case of a pipeline run again);
* writes replayed (a spooled batch, a tick re-read): of a version that exists, made by
  the same run, when the per-event path would change none of its row.

Anything else (a write that says something new of an existing version, or names one
twice saying different things, a read of content no version of its product has, a second read of a product by a run, a start
that hands its run to another process, explicit parents, ...) ends the set-based part there: the events before it are written
set-wise, that event goes through the per-event code in the same transaction, and the
walk starts again after it. So an unusual event costs what it cost before, and never
changes what is recorded.

Ids are not known before the rows are inserted: the walk names rows it creates by
their uuid (:class:`_NewRun`, :class:`_NewVersion`) and resolves those after the
INSERTs. New rows are inserted in the order the per-event path would have inserted
them, so ids (which say which version of a product is the newest) come out in the
same order; on PostgreSQL many new rows go by COPY (see :data:`COPY_ROWS`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from dpt_core.events import (
    FINAL_STATUSES,
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductsRead,
    ProductsWritten,
    utcnow,
)
from dpt_core.store.recorder import (
    _FILL_IN,
    _FINISH,
    _FINISH_IF_RUNNING,
    _LATEST_VERSIONS,
    EDGES,
    INPUTS,
    MTIME_TOLERANCE,
    PLACEHOLDER,
    RUN_TAGS,
    VERSION_TAGS,
    BulkConflict,
    I,
    P,
    Recorder,
    V,
    _remember,
    fill_changes,
    insert_tags,
    start_row,
    uri_digest,
)
from dpt_core.store.recorder import (
    _NEWEST_VERSIONS as _RECORDER_NEWEST_VERSIONS,
)
from dpt_core.store.upsert import copy_into, insert_ignore, select_in

#: From this many new rows of one shape on, PostgreSQL gets them by COPY (then one lookup
#: of their ids) rather than by a multi-row INSERT ... RETURNING, whose statement text
#: grows with the rows and costs psycopg more to parse than the database to run.
COPY_ROWS = 50


#: The newest version of each product, with all a replayed write's outcome depends on.
_NEWEST_VERSIONS = _RECORDER_NEWEST_VERSIONS.add_columns(
    V.c.explicit_parents, V.c["metadata"].label("known_metadata")
)
#: After a walk stopped at an event it could not take, the next one looks this many events
#: ahead at first (doubling while it takes them all): a batch of many such events costs
#: a prefetch per stop, not one over the rest of the batch per stop.
WALK_AFTER_A_STOP = 64


@dataclass(frozen=True)
class _NewRun:
    """An invocation this batch inserts, by uuid, until its id is known."""

    uuid: str


@dataclass(frozen=True)
class _NewVersion:
    """A version this batch inserts, by uuid, until its id is known."""

    uuid: str


def _statically_bulk(event: Event) -> bool:
    """True for the kinds of events the set-based path may take (it still checks each
    against the database before taking it)."""
    if isinstance(event, InvocationStarted):
        if event.status in FINAL_STATUSES:
            return True
        return event.status == "running" and event.ended_at is None and event.error is None
    if isinstance(event, InvocationFinished):
        return event.status in FINAL_STATUSES
    if isinstance(event, ProductsRead):
        return True
    if isinstance(event, ProductsWritten):
        return all(o.parents is None for o in event.outputs)
    return False  # pragma: no cover


class BulkRecorder(Recorder):
    """The store's recorder: batches of several events are recorded set-wise
    (:func:`record_bulk`); ``bulk = False`` records them event by event, the reference
    the set-based path is tested against."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.bulk = True

    def record_many(self, batches: Sequence[Sequence[Event]]) -> None:
        """Record several batches (a spool file's, in order) in one transaction, set-wise
        over all their events: the rows recording them one by one makes (the set-based
        path is tested against any cut of a sequence into batches), for the statements of
        one batch. All or nothing: on a failure nothing of them is recorded and the error
        is raised; a caller that must tell which batch the database refuses then records
        them one by one (:meth:`record`)."""
        events = [event for batch in batches for event in batch]
        if events:
            self.record(events)

    def _apply_batch(self, conn: Connection, events: Sequence[Event]) -> None:
        if self.bulk:
            record_bulk(self, conn, events)
        else:
            super()._apply_batch(conn, events)


def record_bulk(recorder: Recorder, conn: Connection, events: Sequence[Event]) -> None:
    """Record ``events`` in ``conn``'s transaction: set-wise where it can, event by event
    where it cannot (see the module docstring). The same rows as
    ``for e in events: recorder._apply(conn, e)``."""
    start = 0
    window = len(events)
    while start < len(events):
        end, limit = start, min(len(events), start + window)
        while end < limit and _statically_bulk(events[end]):
            end += 1
        taken = _Segment(recorder, conn, events[start:end]).run() if end > start else 0
        start += taken
        if start < len(events) and (taken == 0 or start < end):
            recorder._apply(conn, events[start])
            start += 1
            window = max(WALK_AFTER_A_STOP, 2 * taken)
        else:
            window *= 2


@functools.lru_cache(maxsize=64)
def _insert_returning(dialect: str, table: Any, keys: tuple[str, ...]) -> Any:
    stmt = insert(table)
    if dialect in ("postgresql", "sqlite"):
        return stmt.returning(table.c.uuid, table.c.id)
    return stmt


@functools.lru_cache(maxsize=64)
def _update_by_uuid(table: Any, keys: tuple[str, ...]) -> Any:
    return (
        update(table)
        .where(table.c.uuid == bindparam("b_uuid"))
        .values({k: bindparam(f"b_{k}") for k in keys})
    )


def _unhashed(metadata: Any) -> bool:
    return isinstance(metadata, dict) and "dpt/unhashed" in metadata


def _same_observation(newest: Any, o: Any, producer: int) -> bool:
    """True when the per-event path takes output ``o`` of run ``producer`` as an
    observation of ``newest``, its product's newest version, rather than as a version of
    its own (``Recorder._same_observations``, for a run that wrote before)."""
    if o.content_hash is None and _unhashed(o.metadata):
        return False
    if newest.size is not None and o.size is not None and newest.size != o.size:
        return False
    if (
        newest.mtime is not None
        and o.mtime is not None
        and abs(newest.mtime - o.mtime) > MTIME_TOLERANCE
    ):
        return False
    if o.content_hash is not None and newest.content_hash == o.content_hash:
        return newest.produced_by_id in (None, producer)
    return (
        newest.produced_by_id == producer
        and (o.content_hash is None or newest.content_hash is None)
        and not _unhashed(o.metadata)
        and not _unhashed(newest.known_metadata)
    )


def _consecutive_shapes(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` cut into runs of the same keys (one executemany each), order kept."""
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if groups and groups[-1][0].keys() == row.keys():
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


class _Segment:
    """One walk of consecutive events the set-based path may take (see the module)."""

    def __init__(self, recorder: Recorder, conn: Connection, events: Sequence[Event]) -> None:
        self.rec = recorder
        self.conn = conn
        self.events = events
        #: invocation uuid -> its id (in the database before) or _NewRun (made here)
        self.runs: dict[str, int | _NewRun] = {}
        #: rows of invocations made here, in the order the per-event path inserts them
        self.new_runs: dict[str, dict[str, Any]] = {}
        #: starts of invocations that existed before, to merge into their rows
        self.later_starts: dict[str, list[dict[str, Any]]] = {}
        #: uuid -> (only_if_running, status, ended_at, error): the end that prevails
        self.ends: dict[str, tuple[bool, str, Any, Any]] = {}
        #: uuid -> kinds of product events applied here ("read", "write")
        self.kinds: dict[str, set[str]] = {}
        self.products: dict[str, int] = {}
        self.created_products: set[int] = set()
        #: products that have a version made by an earlier event of this walk
        self.versioned_here: set[int] = set()
        #: version uuid -> id, for versions that existed before (reads only)
        self.known_versions: dict[str, int] = {}
        #: product -> its newest version before this walk, for products written here
        #: that existed before; and the written version uuids that existed before
        self.newest_before: dict[int, Any] = {}
        #: written version uuid -> (id, uuid, produced_by_id), of versions that existed
        self.written_before: dict[str, Any] = {}
        self.new_versions: dict[str, dict[str, Any]] = {}
        #: (product, content hash) and product -> the uuid of its newest version made here
        self.newest_here_by_hash: dict[tuple[int, str | None], str] = {}
        self.newest_here: dict[int, str] = {}
        #: (product, content hash) and product -> the id of its newest version before this
        #: walk, for products read here by a version uuid that does not exist
        self.latest_by_hash: dict[tuple[int, str | None], int] = {}
        self.latest: dict[int, int] = {}
        #: invocation uuid -> versions it read here: (version, its product)
        self.read_here: dict[str, list[tuple[int | _NewVersion, int]]] = {}
        self.written_here: dict[str, list[_NewVersion]] = {}
        #: what earlier transactions recorded of the invocations that existed before
        self.inputs_before: dict[int, list[Any]] = {}
        self.outputs_before: dict[int, list[Any]] = {}
        self.input_rows: dict[tuple[Any, Any], None] = {}
        #: (parent, child) -> invocation: the first event to link them wins, as in SQL
        self.edges: dict[tuple[Any, Any], Any] = {}
        #: (run, key) and (version, key) -> value: the first record of a key wins, as in SQL
        self.run_tags: dict[tuple[Any, str], str] = {}
        self.version_tags: dict[tuple[Any, str], str] = {}

    # -- the walk ----------------------------------------------------------------------

    def run(self) -> int:
        """Prefetch, walk, write: how many leading events were recorded set-wise."""
        self._prefetch()
        taken = 0
        for event in self.events:
            if not self._take(event):
                break
            taken += 1
        if taken:
            self._write()
        return taken

    def _prefetch(self) -> None:

        rec, conn = self.rec, self.conn
        uuids: dict[str, None] = {}
        uris: dict[str, None] = {}
        read_versions: dict[str, str] = {}  # version uuid -> uri, of the reads
        product_runs: set[str] = set()
        readers: set[str] = set()
        written: dict[str, str] = {}  # version uuid -> uri, of the writes
        writes = False
        for event in self.events:
            if isinstance(event, InvocationStarted):
                uuids[event.uuid] = None
                if event.parent_uuid:
                    uuids[event.parent_uuid] = None
            elif isinstance(event, InvocationFinished):
                uuids[event.uuid] = None
            elif isinstance(event, ProductsRead):
                uuids[event.invocation_uuid] = None
                product_runs.add(event.invocation_uuid)
                readers.add(event.invocation_uuid)
                for o in event.inputs:
                    uris[o.uri] = None
                    read_versions[o.version_uuid] = o.uri
            else:
                assert isinstance(event, ProductsWritten)
                uuids[event.invocation_uuid] = None
                product_runs.add(event.invocation_uuid)
                writes = True
                for o in event.outputs:
                    uris[o.uri] = None
                    written[o.version_uuid] = o.uri
        cached = rec._invocation_ids
        missing = [u for u in uuids if u not in cached]
        self.runs = {u: cached[u] for u in uuids if u in cached}
        if missing:
            found = {r.uuid: r.id for r in select_in(conn, [I.c.uuid, I.c.id], I.c.uuid, missing)}
            self.runs.update(found)
            cached.update(found)
        if uris and conn.dialect.name in ("postgresql", "sqlite"):
            self.products = rec.product_ids(
                conn, list(uris), likely_new=writes, created=self.created_products
            )
        elif uris:
            self.products = self._products_without_returning(list(uris))
        if read_versions:
            self.known_versions = rec._version_ids_of(conn, list(read_versions))
            # Reads naming a version that does not exist, of products that existed: the
            # version each saw is found by content hash, as the per-event path does
            # (Recorder._read): their products' newest versions, by hash and at all.
            to_find = {
                self.products[uri]
                for u, uri in read_versions.items()
                if u not in self.known_versions
            } - self.created_products
            for r in rec._rows_in(conn, _LATEST_VERSIONS, sorted(to_find)):
                self.latest_by_hash[(r.product_id, r.content_hash)] = r.vid
                self.latest[r.product_id] = max(self.latest.get(r.product_id, 0), r.vid)
        # Writes to products that had versions before: their newest version and the
        # written version uuids that exist (see _fresh_version).
        known = {u: self.products[uri] for u, uri in written.items()}
        known = {u: p for u, p in known.items() if p not in self.created_products}
        if known:
            self.newest_before = {
                r.product_id: r
                for r in rec._rows_in(conn, _NEWEST_VERSIONS, sorted(set(known.values())))
            }
            self.written_before = rec._version_rows(conn, list(known))
        # What earlier transactions (or earlier events of this one) recorded for the
        # runs this walk reads or writes for: inputs and outputs, to draw the edges.
        # (None for a run inserted by this transaction that had no such events yet.)
        ids: dict[str, int] = {}
        for u in product_runs:
            ref = self.runs.get(u)
            if isinstance(ref, int):
                ids[u] = ref
        want_inputs = [
            i for u, i in ids.items() if "read" in rec._new_here.get(u, {"read", "write"})
        ]
        # Outputs only of the runs that read here: a write needs them only to tell the
        # run's own outputs among what it read here, so a run writing a million outputs,
        # a chunk a batch, does not fetch every earlier one again at each chunk.
        want_outputs = [
            i
            for u, i in ids.items()
            if u in readers and "write" in rec._new_here.get(u, {"read", "write"})
        ]
        if want_inputs:
            for r in conn.execute(
                select(
                    INPUTS.c.invocation_id,
                    INPUTS.c.version_id,
                    V.c.produced_by_id,
                    V.c.product_id,
                )
                .join(V, V.c.id == INPUTS.c.version_id)
                .where(INPUTS.c.invocation_id.in_(sorted(want_inputs)))
            ):
                self.inputs_before.setdefault(r.invocation_id, []).append(r)
        if want_outputs:
            for out in conn.execute(
                select(V.c.id, V.c.produced_by_id, V.c.explicit_parents).where(
                    V.c.produced_by_id.in_(sorted(want_outputs))
                )
            ):
                self.outputs_before.setdefault(out.produced_by_id, []).append(out)

    def _products_without_returning(self, uris: list[str]) -> dict[str, int]:
        """Get-or-create of products where INSERT cannot say what it inserted (MySQL):
        a lookup, then a plain INSERT of the missing ones, which are then known to be new
        (a concurrent writer's row makes it fail, and the batch is recorded per event)."""
        cache = self.rec._product_ids
        digests = {uri: uri_digest(uri) for uri in uris}
        by_digest = {d: cache[d] for d in digests.values() if d in cache}
        rest = sorted({d for d in digests.values() if d not in by_digest})
        if rest:
            by_digest.update(self.rec._products_by_digest(self.conn, rest))
        missing = sorted({(d, u) for u, d in digests.items() if d not in by_digest})
        if missing:
            now = utcnow()
            self.conn.execute(
                insert(P), [{"uri_digest": d, "uri": u, "created_at": now} for d, u in missing]
            )
            made = self.rec._products_by_digest(self.conn, [d for d, _ in missing])
            self.created_products.update(made.values())
            by_digest.update(made)
        _remember(cache, by_digest)
        return {uri: by_digest[d] for uri, d in digests.items()}

    def _take(self, event: Event) -> bool:
        if isinstance(event, InvocationStarted):
            if event.process is not None and event.status == "running" and event.uuid in self.runs:
                # Started again by another process, or handed over: the per-event path
                # gives it to that process (Recorder._start). A new run's process is
                # just a column of its row.
                return False
            closes = event.status != "running" and event.uuid in self.runs
            self._start(event)
            if closes:  # a run recorded before: the start fills it in and closes it
                self._end(
                    InvocationFinished(
                        uuid=event.uuid,
                        status=event.status,
                        ended_at=event.ended_at or event.started_at,
                        error=event.error,
                    )
                )
            return True
        if isinstance(event, InvocationFinished):
            self._end(event)
            return True
        if isinstance(event, ProductsRead):
            return self._read(event)
        assert isinstance(event, ProductsWritten)
        return self._write_products(event)

    def _start(self, event: InvocationStarted) -> None:

        env_id = (
            self.rec.environment_id(self.conn, event.environment) if event.environment else None
        )
        parent = self.runs.get(event.parent_uuid) if event.parent_uuid else None
        row = start_row(event, env_id, parent)
        if event.uuid not in self.runs:
            self.runs[event.uuid] = _NewRun(event.uuid)
            self.new_runs[event.uuid] = row
            self.kinds[event.uuid] = set()
        elif event.uuid in self.new_runs:
            self.new_runs[event.uuid].update(fill_changes(self.new_runs[event.uuid], row))
        else:
            self.later_starts.setdefault(event.uuid, []).append(row)
        ref = self.runs[event.uuid]
        for key, value in event.tags.items():
            self.run_tags.setdefault((ref, key), value)

    def _end(self, event: InvocationFinished) -> None:
        if event.uuid not in self.runs:
            return  # no row yet: the per-event UPDATE would match nothing
        end = (event.only_if_running, event.status, event.ended_at, event.error)
        if not event.only_if_running or event.uuid not in self.ends:
            # An unconditional end overrides any before it; a conditional one only
            # applies to a run still running, so after any end of this walk (all
            # final) it does nothing.
            self.ends[event.uuid] = end

    def _run_ref(self, uuid: str) -> int | _NewRun:
        """The invocation products are recorded for, a placeholder if it is new."""

        ref = self.runs.get(uuid)
        if ref is None:
            ref = self.runs[uuid] = _NewRun(uuid)
            self.new_runs[uuid] = {
                "uuid": uuid,
                "orchestrator": PLACEHOLDER,
                "job": PLACEHOLDER,
                "status": "running",
                "started_at": utcnow(),
            }
            self.kinds[uuid] = set()
        return ref

    def _outputs(self, uuid: str, ref: int | _NewRun) -> tuple[set[Any], list[Any]]:
        """(every output of the run so far, those that derive from all its inputs)."""
        before = self.outputs_before.get(ref, []) if isinstance(ref, int) else []
        here = self.written_here.get(uuid, [])
        own: set[Any] = {r.id for r in before}
        own.update(here)
        implicit: list[Any] = [r.id for r in before if not r.explicit_parents]
        implicit.extend(here)
        return own, implicit

    def _read(self, event: ProductsRead) -> bool:
        chosen: dict[str, int | _NewVersion] = {}
        new: list[tuple[str, Any]] = []
        for o in event.inputs:
            pid = self.products[o.uri]
            if o.version_uuid in chosen:
                continue
            if o.version_uuid in self.new_versions:
                chosen[o.version_uuid] = _NewVersion(o.version_uuid)
            elif o.version_uuid in self.known_versions:
                chosen[o.version_uuid] = self.known_versions[o.version_uuid]
            elif pid in self.created_products and pid not in self.versioned_here:
                chosen[o.version_uuid] = _NewVersion(o.version_uuid)
                new.append((o.version_uuid, o))
            else:
                found = self._version_seen(event.invocation_uuid, pid, o)
                if found is None:
                    return False  # a version to make or to fill in: the per-event path
                chosen[o.version_uuid] = found
        uuid = event.invocation_uuid
        ref = self._run_ref(uuid)
        self.kinds.setdefault(uuid, set()).add("read")
        now = utcnow()
        for _, o in sorted(new, key=lambda item: item[0]):
            self._made(self._version_row(o, None, now))
        read = self.read_here.setdefault(uuid, [])
        for o in event.inputs:
            version = chosen[o.version_uuid]
            read.append((version, self.products[o.uri]))
        self.versioned_here.update(self.products[o.uri] for _, o in new)
        inputs = list(dict.fromkeys(chosen.values()))
        for version in inputs:
            self.input_rows[(ref, version)] = None
        own, implicit = self._outputs(uuid, ref)
        for child in implicit:
            for parent in inputs:
                if parent not in own:
                    self.edges.setdefault((parent, child), ref)
        return True

    def _write_products(self, event: ProductsWritten) -> bool:
        uuid = event.invocation_uuid
        replayed: dict[str, int] = {}
        for o in event.outputs:  # (one report a version: Recorder.record merged them)
            pid = self.products[o.uri]
            again = self._replayed(uuid, pid, o)
            if again is not None:
                replayed[o.version_uuid] = again
            elif (
                pid in self.versioned_here
                or o.version_uuid in self.new_versions
                or o.version_uuid in self.rec._version_ids
                or (pid not in self.created_products and not self._fresh_version(uuid, pid, o))
            ):
                # A version of the product made in this walk, or a version uuid seen
                # before, or what may be a version recorded before (see _fresh_version).
                return False
        ref = self._run_ref(uuid)
        self.kinds.setdefault(uuid, set()).add("write")
        now = utcnow()
        made: list[_NewVersion] = []
        for o in sorted(event.outputs, key=lambda o: o.version_uuid):
            if o.version_uuid not in self.new_versions and o.version_uuid not in replayed:
                self._made(self._version_row(o, ref, now))
                made.append(_NewVersion(o.version_uuid))
        # An invocation's own outputs are never its parents.
        own_before, _ = self._outputs(uuid, ref)
        inputs: list[Any] = []
        if isinstance(ref, int):
            inputs.extend(
                r.version_id for r in self.inputs_before.get(ref, []) if r.produced_by_id != ref
            )
        inputs.extend(v for v, _ in self.read_here.get(uuid, []) if v not in own_before)
        self.written_here.setdefault(uuid, []).extend(made)
        children: list[Any] = [
            replayed.get(o.version_uuid) or _NewVersion(o.version_uuid) for o in event.outputs
        ]
        for o, child in zip(event.outputs, children, strict=True):
            for key, value in o.tags.items():
                self.version_tags.setdefault((child, key), value)
        own = set(children)
        for child in dict.fromkeys(children):
            for parent in dict.fromkeys(inputs):
                if parent not in own:
                    self.edges.setdefault((parent, child), ref)
        # (a replayed version is no new version of its product)
        self.versioned_here.update(
            self.products[o.uri] for o in event.outputs if o.version_uuid not in replayed
        )
        return True

    def _replayed(self, uuid: str, pid: int, o: Any) -> int | None:
        """The id of the version ``o`` names when run ``uuid`` writing it again changes no
        row on the per-event path (a replayed batch, a re-read event log): the version
        exists, this run (recorded before this transaction) produced it, and either it is
        not the product's newest version's observation or it is that version with the
        very values the write would set. None: not such a replay (it may be fresh)."""
        row = self.written_before.get(o.version_uuid)
        ref = self.runs.get(uuid)
        if (
            row is None
            or not isinstance(ref, int)
            or row.produced_by_id != ref
            or uuid in self.rec._new_here
            or pid in self.versioned_here
            or pid in self.created_products
        ):
            return None
        # A read of the product by the run may make the write claim that version instead.
        if self._has_read(uuid, pid):
            return None
        newest = self.newest_before.get(pid)
        if newest is None:  # pragma: no cover - the product has this version at least
            return None
        if not _same_observation(newest, o, ref):
            return int(row.id)  # a new observation on the per-event path: finds the version
        if newest.id != row.id:
            return None  # the write would be taken as the newest version's observation
        # It is the newest version, which the per-event path updates with what the write
        # says: only a replay when that changes nothing.
        metadata = o.metadata or None
        if not (o.content_hash is not None and newest.content_hash == o.content_hash):
            metadata = {**(o.metadata or {}), **(newest.known_metadata or {})} or None
        elif newest.explicit_parents:
            return None
        unchanged = (
            metadata == newest.known_metadata
            and (o.content_hash is None or o.content_hash == newest.content_hash)
            and (o.size is None or o.size == newest.size)
            and (o.mtime is None or o.mtime == newest.mtime)
        )
        return int(row.id) if unchanged else None

    def _fresh_version(self, uuid: str, pid: int, o: Any) -> bool:
        """True when run ``uuid`` writing ``o`` to product ``pid``, which had versions
        before this walk, makes a new version on the per-event path too: not a replay
        (its version uuid is new), not a claim of a version the run read (it read no
        version of the product), not the same observation as the newest version (that
        one was produced by another run: the per-event path only merges an observation
        into a version nobody produced or this run did)."""
        if o.version_uuid in self.written_before:
            return False
        ref = self.runs.get(uuid)
        newest = self.newest_before.get(pid)
        if newest is not None and (newest.produced_by_id is None or newest.produced_by_id == ref):
            return False
        return not self._has_read(uuid, pid)

    def _has_read(self, uuid: str, pid: int) -> bool:
        """True when run ``uuid`` read a version of product ``pid``: recorded before this
        walk, or by an earlier event of it."""
        ref = self.runs.get(uuid)
        if isinstance(ref, int) and any(
            r.product_id == pid for r in self.inputs_before.get(ref, [])
        ):
            return True
        return any(p == pid for _, p in self.read_here.get(uuid, []))

    def _made(self, row: dict[str, Any]) -> None:
        """A new version of this walk: inserted after every version before it, so the
        newest of its product (and of its content hash) from now on."""
        self.new_versions[row["uuid"]] = row
        self.newest_here[row["product_id"]] = row["uuid"]
        self.newest_here_by_hash[(row["product_id"], row["content_hash"])] = row["uuid"]

    def _version_seen(self, uuid: str, pid: int, o: Any) -> int | _NewVersion | None:
        """The version run ``uuid`` read when it names one that does not exist, of product
        ``pid`` which has versions: the newest with its content hash (without a hash, the
        newest at all), of this walk or from before it, as ``Recorder._read`` picks it.
        None where the per-event path does more than pick one: the run read the product
        before (that read's version prevails, or is filled in), or no version matches
        (an observed version is made)."""
        if self._has_read(uuid, pid):
            return None
        if o.content_hash is not None:
            made = self.newest_here_by_hash.get((pid, o.content_hash))
            before = self.latest_by_hash.get((pid, o.content_hash))
        else:
            made = self.newest_here.get(pid)
            before = self.latest.get(pid)
        if made is not None:
            return _NewVersion(made)
        return before

    def _version_row(self, o: Any, producer: Any, now: Any) -> dict[str, Any]:
        return {
            "uuid": o.version_uuid,
            "product_id": self.products[o.uri],
            "content_hash": o.content_hash,
            "size": o.size,
            "mtime": o.mtime,
            "produced_by_id": producer,
            "explicit_parents": False,
            "metadata": o.metadata or None,
            "recorded_at": now,
        }

    # -- writing the outcome -------------------------------------------------------------

    def _insert(self, table: Any, rows: list[dict[str, Any]]) -> dict[str, int]:
        """INSERT ``rows`` in order (plain INSERT: the walk found none of them); uuid -> id."""
        if not rows:
            return {}
        dialect = self.conn.dialect.name
        ids: dict[str, int] = {}
        copied: list[str] = []
        for group in _consecutive_shapes(rows):
            if dialect == "postgresql" and len(group) >= COPY_ROWS:
                copy_into(self.conn, table, group)
                copied.extend(r["uuid"] for r in group)
                continue
            stmt = _insert_returning(dialect, table, tuple(group[0]))
            result = self.conn.execute(stmt, group)
            if result.returns_rows:
                ids.update((r.uuid, r.id) for r in result.all())
        if copied:
            ids.update(
                (r.uuid, r.id)
                for r in select_in(self.conn, [table.c.uuid, table.c.id], table.c.uuid, copied)
            )
        if dialect not in ("postgresql", "sqlite"):
            ids = {
                r.uuid: r.id
                for r in select_in(
                    self.conn, [table.c.uuid, table.c.id], table.c.uuid, [r["uuid"] for r in rows]
                )
            }
        if len(ids) != len(rows):  # pragma: no cover - a plain INSERT raises first
            raise BulkConflict(table.name)
        return ids

    def _write(self) -> None:

        rec, conn = self.rec, self.conn
        run_ids: dict[str, int] = {u: r for u, r in self.runs.items() if isinstance(r, int)}

        def run_id(ref: Any) -> Any:
            return run_ids[ref.uuid] if isinstance(ref, _NewRun) else ref

        # Invocations made here, in the order the per-event path inserts them (their ids
        # say which run came first): one INSERT for each stretch of rows whose parents
        # have ids already, a child's parent_id needing its parent's.
        pending = list(self.new_runs.values())
        while pending:
            ready = list(
                itertools.takewhile(
                    lambda r: (
                        not isinstance(r.get("parent_id"), _NewRun)
                        or r["parent_id"].uuid in run_ids
                    ),
                    pending,
                )
            )
            if not ready:  # pragma: no cover - a start names its parent only once it exists
                raise BulkConflict("invocations: a parent after its child")
            rows = [
                {**r, "parent_id": run_id(r["parent_id"])} if "parent_id" in r else r for r in ready
            ]
            run_ids.update(self._insert(I, rows))
            pending = pending[len(ready) :]
        for uuid, row in self.new_runs.items():
            rec._invocation_ids[uuid] = run_ids[uuid]
            rec._new_here[uuid] = set(self.kinds.get(uuid, ()))
            rec._know({**row, "parent_id": run_id(row.get("parent_id"))})
        for uuid, kinds in self.kinds.items():  # (runs this transaction inserted before)
            if uuid not in self.new_runs and uuid in rec._new_here:
                rec._new_here[uuid].update(kinds)

        # Invocations that existed: a later start fills in what their row lacks.
        uncovered: dict[str, list[dict[str, Any]]] = {}
        for uuid, starts in self.later_starts.items():
            facts = rec._facts.get(uuid)
            resolved = [{**s, "parent_id": run_id(s["parent_id"])} for s in starts]
            if facts is None or not all(facts.covers(s) for s in resolved):
                uncovered[uuid] = resolved
        if uncovered:
            query = select(I.c.uuid, *_FILL_IN.selected_columns).where(
                I.c.uuid.in_(sorted(uncovered))
            )
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            current = {r.uuid: r._asdict() for r in conn.execute(query)}
            updates: list[dict[str, Any]] = []
            for uuid, starts in uncovered.items():
                row = current[uuid]
                changes: dict[str, Any] = {}
                for start in starts:
                    step = fill_changes({**row, **changes}, start)
                    changes.update(step)
                if changes:
                    updates.append({"b_uuid": uuid, **{f"b_{k}": v for k, v in changes.items()}})
                rec._know({**row, **changes})
            for group in _consecutive_shapes(sorted(updates, key=lambda u: sorted(u))):
                keys = tuple(k[2:] for k in group[0] if k != "b_uuid")
                conn.execute(_update_by_uuid(I, keys), group)

        # Versions made here, in the order the per-event path inserts them.
        version_rows = [
            {**r, "produced_by_id": run_id(r["produced_by_id"])} for r in self.new_versions.values()
        ]
        version_ids = self._insert(V, version_rows)
        _remember(rec._version_ids, version_ids)

        def version_id(ref: Any) -> int:
            return version_ids[ref.uuid] if isinstance(ref, _NewVersion) else ref

        insert_ignore(
            conn,
            INPUTS,
            [{"invocation_id": run_id(r), "version_id": version_id(v)} for r, v in self.input_rows],
            ["invocation_id", "version_id"],
        )
        insert_ignore(
            conn,
            EDGES,
            [
                {
                    "parent_version_id": version_id(p),
                    "child_version_id": version_id(c),
                    "invocation_id": run_id(r),
                }
                for (p, c), r in self.edges.items()
            ],
            ["parent_version_id", "child_version_id"],
        )
        insert_tags(
            conn,
            RUN_TAGS,
            "invocation_id",
            {(run_id(r), k): v for (r, k), v in self.run_tags.items()},
        )
        insert_tags(
            conn,
            VERSION_TAGS,
            "version_id",
            {(version_id(v), k): value for (v, k), value in self.version_tags.items()},
        )

        for only_if_running in (False, True):
            ends = [
                {"b_uuid": uuid, "b_status": status, "b_ended_at": ended, "b_error": error}
                for uuid, (conditional, status, ended, error) in self.ends.items()
                if conditional == only_if_running
            ]
            if ends:
                conn.execute(_FINISH_IF_RUNNING if only_if_running else _FINISH, ends)
