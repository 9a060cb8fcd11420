"""The Tracker facade: what users and adapters call.

A :class:`Tracker` turns calls (start an invocation, read, write, finish)
into events, hands them to every plugin through the hooks (the built-in store
writes them to the database), and never lets a tracking failure escape into
the user's code unless strict mode is on.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import hashlib
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

import pluggy

from dpt_core.config import Settings, get_settings, unconfigured_settings
from dpt_core.errors import DptError, InvalidTarget
from dpt_core.events import (
    FINAL_STATUSES,
    STATUSES,
    CurrentContext,
    EnvironmentSnapshot,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductRef,
    ProductsRead,
    ProductsWritten,
    clean_text,
    error_text,
    utcnow,
)
from dpt_core.guard import Guard
from dpt_core.log import log
from dpt_core.tags import Tags, normalize_tags

#: Most targets of one write observed and recorded together (one ``ProductsWritten``
#: event): a write of a million files holds one chunk's observations at a time.
WRITE_CHUNK = 5_000

_DPT_NAMESPACE = "6f1d1c8e-3b0e-5f5a-9c57-2d1b7e0c4a11"
_NAMESPACE_BYTES = bytes.fromhex(_DPT_NAMESPACE.replace("-", ""))

if TYPE_CHECKING:
    import uuid as uuidlib

    #: Namespace for deterministic invocation UUIDs derived from orchestrator run ids.
    DPT_NAMESPACE: uuidlib.UUID
else:

    def __getattr__(name: str) -> Any:
        # The uuid module (and platform, which it imports) only when a UUID object is
        # wanted: a process that records makes its UUIDs with new_uuid().
        if name == "DPT_NAMESPACE":
            import uuid as uuidlib

            value = uuidlib.UUID(_DPT_NAMESPACE)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_uuid() -> str:
    """A random (version 4) UUID as text, the same as ``str(uuid.uuid4())``."""
    value = bytearray(os.urandom(16))
    value[6] = (value[6] & 0x0F) | 0x40  # version 4
    value[8] = (value[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = value.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class WrittenURIs(Sequence[str]):
    """The URIs a write given one iterator of targets recorded, in order, kept compressed.

    What :meth:`InvocationHandle.write`, :meth:`AsyncInvocationHandle.write` and
    :func:`dpt_core.track` return when given one generator (or other iterator) of
    targets: a read-only sequence that holds each chunk's URIs compressed (a few bytes a
    URI, where a list costs ~100), so a write of a million files does not grow with the
    URIs it returns. It has a length, indexes (a slice is a list), iterates a chunk at a
    time, tests membership, and compares equal to a list of the same URIs; ``list(uris)``
    makes a list. Given anything else (targets, or one list, tuple or set), they return a
    list.
    """

    __slots__ = ("_chunks", "_ends", "_decoded")

    def __init__(self, uris: Iterable[str] = ()) -> None:
        #: One entry per chunk: the URIs joined by NUL and zlib-compressed, or a tuple
        #: when a URI holds a NUL itself.
        self._chunks: list[bytes | tuple[str, ...]] = []
        #: How many URIs the chunks up to each hold (for indexing).
        self._ends: list[int] = []
        #: The last chunk decoded: (its position, its URIs).
        self._decoded: tuple[int, list[str]] | None = None
        uris = list(uris)
        if uris:
            self._append(uris)

    def _append(self, uris: list[str]) -> None:
        """Add one chunk's URIs (called by the write that builds this)."""
        import zlib

        if not uris:
            return
        joined = "\0".join(uris)
        if joined.count("\0") == len(uris) - 1:
            self._chunks.append(zlib.compress(joined.encode("utf-8", "surrogatepass"), 1))
        else:
            self._chunks.append(tuple(uris))
        self._ends.append(len(self) + len(uris))

    def _chunk(self, position: int) -> list[str]:
        import zlib

        decoded = self._decoded
        if decoded is not None and decoded[0] == position:
            return decoded[1]
        stored = self._chunks[position]
        if isinstance(stored, tuple):
            uris = list(stored)
        else:
            uris = zlib.decompress(stored).decode("utf-8", "surrogatepass").split("\0")
        self._decoded = (position, uris)
        return uris

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        import bisect

        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("WrittenURIs index out of range")
        position = bisect.bisect_right(self._ends, index)
        start = self._ends[position - 1] if position else 0
        return self._chunk(position)[index - start]

    def __iter__(self) -> Iterator[str]:
        for position in range(len(self._chunks)):
            yield from self._chunk(position)

    def __contains__(self, value: object) -> bool:
        return any(uri == value for uri in self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, WrittenURIs)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # (mutable while its write runs, like a list)

    def __add__(self, other: Iterable[str]) -> list[str]:
        return [*self, *other]

    def __radd__(self, other: Iterable[str]) -> list[str]:
        return [*other, *self]

    def __repr__(self) -> str:
        if not self:
            return "WrittenURIs([])"
        more = f", ... {len(self) - 2} more, {self[-1]!r}" if len(self) > 2 else ""
        if len(self) == 2:
            more = f", {self[-1]!r}"
        return f"WrittenURIs([{self[0]!r}{more}])"


def invocation_uuid(*parts: object) -> str:
    """A UUID that is the same every time for the same parts (uuid5).

    Adapters derive invocation ids from orchestrator ids with it, so a task
    recorded twice (a retry of the listener, a re-read event log) is one row.
    """
    # uuid.uuid5 without its two UUID objects (a third of the time, on every task try):
    # SHA-1 of the namespace's bytes and the name, the version and variant bits set
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(str(p) for p in parts).encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON-able data: non-JSON values become their ``repr``; NaN/inf become text."""
    if isinstance(value, str):
        return clean_text(value, keep_nul=True)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth > 20:
        return repr(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(v, _depth + 1) for v in items]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return clean_text(text)


_current: contextvars.ContextVar[tuple[InvocationHandle, ...]] = contextvars.ContextVar(
    "dpt_current_invocations", default=()
)


_batch_depth: contextvars.ContextVar[int] = contextvars.ContextVar("dpt_batch_depth", default=0)

#: The process token of a run handed over to a process not known yet (see ``detach``).
DETACHED_PROCESS = "detached"

#: Invocations this process started (with its environment) and has not finished yet.
_unfinished: dict[str, InvocationHandle] = {}


@atexit.register
def _close_unfinished_at_exit() -> None:
    """A process that exits leaves none of its runs ``running``: those it never finished
    are closed as ``crashed`` (the outcome is unknown). A process killed outright cannot
    do this; the next dpt process on its host does (:mod:`dpt_core.store.liveness`)."""
    for handle in list(_unfinished.values()):
        with contextlib.suppress(Exception):
            handle.finish("crashed", error="the process exited without recording this run's end")
    _unfinished.clear()


class InvocationHandle:
    """One open invocation. Obtained from :meth:`Tracker.start` or :meth:`Tracker.attach`."""

    def __init__(
        self, tracker: Tracker, uuid: str, job: str | None = None, task: str | None = None
    ) -> None:
        self.tracker = tracker
        self.uuid = uuid
        self.job = job
        self.task = task
        self.status = "running"
        self._read_uris: set[str] = set()
        self._finished = False
        #: The start event this handle recorded (None for attached handles).
        self._started: InvocationStarted | None = None

    def __repr__(self) -> str:
        return f"<Invocation {self.uuid} {self.job or ''}{'/' + self.task if self.task else ''} {self.status}>"

    def read(self, *targets: Any, metadata: dict[str, Any] | None = None) -> list[str]:
        """Record that this invocation read ``targets``; returns their URIs. One batch."""
        uris: list[str] = self.tracker._guard(
            "read", lambda: self._read(targets, metadata), default=[]
        )
        return uris

    @overload
    def write(
        self,
        targets: Iterator[Any],
        /,
        *,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> WrittenURIs: ...

    @overload
    def write(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str]: ...

    def write(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str] | WrittenURIs:
        """Record that this invocation wrote ``targets``; returns their URIs.

        ``targets`` may also be one list, tuple, set or generator of targets. Many targets
        are observed and recorded :data:`WRITE_CHUNK` at a time (the same records as one
        ``write()`` per chunk), so memory stays flat however many there are. Given one
        generator (or other iterator), the URIs come back as a :class:`WrittenURIs`, a
        compact read-only sequence (a list of a million URIs would cost ~100 MB);
        otherwise as a list.

        :param parents: what every target derives from; default: every input of the invocation.
            Parents not yet read are recorded as inputs first.
        :param metadata: JSON-able facts kept on each new version.
        :param tags: ``{key: value}`` labels of each version written (see docs/tags.md).
        :raises InvalidTag: a tag key or value cannot be recorded (checked before anything is).
        """
        given = normalize_tags(tags)
        items = _targets(targets)
        streamed = isinstance(items, Iterator)
        uris: list[str] | WrittenURIs = self.tracker._guard(
            "write",
            lambda: self._write(items, parents, metadata, given, streamed),
            default=None,
        )
        if uris is None:
            return WrittenURIs() if streamed else []
        return uris

    def finish(
        self,
        status: str = "success",
        error: str | BaseException | None = None,
        ended_at: dt.datetime | None = None,
        *,
        only_if_running: bool = False,
    ) -> None:
        """Close the invocation with a final ``status`` (success, failed, crashed, cancelled, skipped).

        :param only_if_running: close it only if no end was recorded yet: for a closer
            that may come after the real end (a scheduler sweeping a finished DAG run's
            tries), so it never overwrites what the run's own process recorded.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"status {status!r} is not final: use one of {', '.join(FINAL_STATUSES)}"
            )
        if isinstance(error, BaseException):
            error = error_text(error)
        if error is not None:
            from dpt_core.environment import redact_text

            error = redact_text(clean_text(error))
        self.status = status
        self._finished = True
        _unfinished.pop(self.uuid, None)
        event = InvocationFinished(
            self.uuid, status, ended_at or utcnow(), error, only_if_running=only_if_running
        )
        self.tracker._emit("dpt_invocation_finished", event)

    def detach(self) -> None:
        """Hand the run over: it goes on in another process (an Airflow task that deferred
        or is rescheduled, say). Neither this process's exit nor a later dpt process on
        this host closes it as crashed; the process that resumes it (starting it again
        with the same uuid) owns it from then on."""
        _unfinished.pop(self.uuid, None)
        started = self._started
        if started is not None and not self._finished:
            released = started.replace(process=DETACHED_PROCESS)
            self.tracker._emit("dpt_invocation_started", released)

    # -- internals ------------------------------------------------------------------------

    def _read(self, targets: Sequence[Any], metadata: dict[str, Any] | None) -> list[str]:
        if not self.tracker.enabled or not targets:
            return []
        observations = self.tracker.observe(targets, metadata=metadata)
        self._read_uris.update(o.uri for o in observations)
        if observations:
            self.tracker._emit("dpt_products_read", ProductsRead(self.uuid, tuple(observations)))
        return [o.uri for o in observations]

    def _write(
        self,
        targets: Iterable[Any],
        parents: Sequence[Any] | None,
        metadata: dict[str, Any] | None,
        tags: dict[str, str] | None = None,
        streamed: bool = False,
    ) -> list[str] | WrittenURIs:
        """Record ``targets`` a chunk at a time; their URIs as a list, or (``streamed``)
        compressed a chunk at a time, so they do not grow with a write of millions."""
        if not self.tracker.enabled:
            return WrittenURIs() if streamed else []
        explicit = list(parents) if parents is not None else None
        uris: list[str] = []
        written = WrittenURIs()
        items = iter(targets)
        while chunk := list(itertools.islice(items, WRITE_CHUNK)):
            done = self._write_chunk(chunk, explicit, metadata, tags)
            if streamed:
                written._append(done)
            else:
                uris.extend(done)
        return written if streamed else uris

    def _write_chunk(
        self,
        targets: Sequence[Any],
        explicit: list[Any] | None,
        metadata: dict[str, Any] | None,
        tags: dict[str, str] | None,
    ) -> list[str]:
        """Observe and record one chunk of a write (one ``ProductsWritten`` event)."""
        own = [
            list(t.parents) if isinstance(t, ProductRef) and t.parents is not None else None
            for t in targets
        ]
        uris = self._ensure_read((explicit or []) + [p for ps in own if ps for p in ps])
        # A parent that names nothing was reported and is left out; the rest still count.
        default = (
            tuple(u for u in uris[: len(explicit)] if u is not None)
            if explicit is not None
            else None
        )
        per_target: list[tuple[str, ...] | None] = []
        position = len(explicit or [])
        for ps in own:
            if ps is None:
                per_target.append(default)
            else:
                chosen = uris[position : position + len(ps)]
                per_target.append(tuple(u for u in chosen if u is not None))
                position += len(ps)
        observations = self.tracker.observe(
            targets, metadata=metadata, parents=per_target, tags=tags
        )
        if observations:
            self.tracker._emit(
                "dpt_products_written", ProductsWritten(self.uuid, tuple(observations))
            )
        return [o.uri for o in observations]

    def _ensure_read(self, parents: Sequence[Any]) -> list[str | None]:
        """Resolve ``parents`` (None for one that names nothing); record the ones this
        invocation has not read yet as inputs."""
        uris = [self.tracker.resolve_or_skip(p) for p in parents]
        unread: list[Any] = []
        seen: set[str] = set()
        for parent, uri in zip(parents, uris, strict=True):
            if uri is not None and uri not in self._read_uris and uri not in seen:
                seen.add(uri)
                unread.append(parent)
        if unread:
            self._read(unread, None)
        return uris


class Tracker:
    """Records invocations and products through the plugin hooks.

    :param settings: defaults to the process settings (``DPT_*`` variables, config file).
    :param plugin_manager: defaults to the process plugin manager with all plugins loaded.
    """

    def __init__(
        self, settings: Settings | None = None, plugin_manager: pluggy.PluginManager | None = None
    ) -> None:
        self._settings = settings
        self._pm = plugin_manager
        self._environment: EnvironmentSnapshot | None = None
        self._stat_cache: Any = None
        self._failures = Guard("tracking continues without it")
        #: Strict mode: plugin failures met while an event was being made, raised once
        #: the event is recorded (a plugin's failure never costs the record itself).
        self._deferred: list[tuple[str, BaseException]] = []

    @property
    def settings(self) -> Settings:
        if self._settings is not None:
            return self._settings
        try:
            return get_settings()
        except DptError as exc:
            # A broken config must not break the user's code: record nowhere but the spool
            # (replayed once the config is fixed), say so once; strict mode raises.
            if os.environ.get("DPT_STRICT", "").strip().lower() in ("1", "true", "yes", "on"):
                raise
            self._warn_once("settings", f"dpt: {exc}; events go to the spool until it is fixed")
            return unconfigured_settings()

    @property
    def enabled(self) -> bool:
        return not self.settings.disabled

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            from dpt_core.plugins import load_plugins

            self._pm = load_plugins(self.settings.load_plugins)
        return self._pm

    # -- guard ----------------------------------------------------------------------------

    def _guard(self, what: str, call: Callable[[], Any], default: Any = None) -> Any:
        """Run ``call``; a failure is logged once and swallowed unless strict mode is on."""
        return self._failures.run(what, call, default=default, strict=self.settings.strict)

    def _hook(
        self, name: str, *, firstresult: bool = False, defer: bool = False, **kwargs: Any
    ) -> list[Any]:
        """Call every plugin's ``name`` hook, each under its own guard (see
        :func:`dpt_core.plugins.call_each`): a plugin's failure is its own, logged once
        with its name; the others, the built-in store included, still run. In strict
        mode the first failure is raised once every plugin has been called (with
        ``defer``, once the next event has been recorded: see :meth:`_emit`)."""
        from dpt_core.plugins import call_each

        failures: list[tuple[str, BaseException]] = []

        def failed(plugin: str, exc: BaseException) -> None:
            failures.append((f"the dpt plugin {plugin!r} in {name}", exc))
            if not self.settings.strict:
                self._failures.failed(
                    f"the dpt plugin {plugin!r} in {name}",
                    exc,
                    strict=False,
                    key=f"plugin:{plugin}:{name}",
                )

        results = call_each(getattr(self.pm.hook, name), kwargs, failed, firstresult=firstresult)
        if failures and self.settings.strict:
            if defer:
                self._deferred.extend(failures)
            else:
                self._raise_failure(failures[0])
        return results

    def _raise_failure(self, failure: tuple[str, BaseException]) -> None:
        what, exc = failure
        self._failures.failed(what, exc, strict=True)

    def _emit(self, hook: str, event: Any) -> None:
        if not self.enabled:
            return
        self._guard(hook, lambda: self._hook(hook, event=event))
        if self._deferred:  # strict mode: a plugin failed while this event was being made
            failure, self._deferred = self._deferred[0], []
            self._raise_failure(failure)

    # -- environment -----------------------------------------------------------------------

    def environment(self) -> EnvironmentSnapshot:
        """This process's environment, captured once (facets from every plugin)."""
        if self._environment is None:
            from dpt_core.environment import capture_environment

            facets: dict[str, Any] = {}
            for contribution in reversed(self._hook("dpt_collect_environment", defer=True)):
                if contribution:
                    facets.update(contribution)
            self._environment = capture_environment(
                self.settings, jsonable(facets), plugin_redact=self._plugin_redact
            )
        return self._environment

    def _plugin_redact(self, key: str, value: str) -> str | None:
        results = self._hook("dpt_redact", firstresult=True, defer=True, key=key, value=value)
        return str(results[0]) if results else None

    # -- products -------------------------------------------------------------------------

    def resolve(self, target: Any) -> str:
        """The normalised URI of ``target`` (plugins first, then paths and URI strings)."""
        from dpt_core.uri import normalize_uri

        if isinstance(target, ProductRef):
            target = target.target
        if not isinstance(target, str | bytes | PurePath):
            # Plugins first: an orchestrator's asset object may also be path-like.
            resolved = self._hook("dpt_resolve_uri", firstresult=True, target=target)
            if resolved:
                target = resolved[0]
            elif not isinstance(target, os.PathLike):
                raise InvalidTarget(
                    f"{target!r} ({type(target).__name__}) is not a path or URI and no plugin resolves it: "
                    "pass a path or a URI string"
                )
        return normalize_uri(target)

    def resolve_or_skip(self, target: Any) -> str | None:
        """:meth:`resolve`, or None after a warning naming ``target`` when it names no
        product (raised in strict mode): one bad target costs only itself."""
        try:
            return self.resolve(target)
        except Exception as exc:  # InvalidTarget, or a plugin's resolver failing on it
            if self.settings.strict:
                raise
            reason = str(exc) if isinstance(exc, DptError) else f"{type(exc).__name__}: {exc}"
            self._warn_once(
                f"target:{reason}", f"dpt: {reason}; not recorded, the other targets are"
            )
            return None

    def observe(
        self,
        targets: Sequence[Any],
        *,
        metadata: dict[str, Any] | None = None,
        parents: Sequence[tuple[str, ...] | None] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[ProductObservation]:
        """Resolve, stat and hash ``targets`` (stat cache first, one cache transaction).

        ``tags`` (already normalised) go on every observation, with a
        :class:`ProductRef`'s own ``tags`` over them.

        A target that names no product is left out with a warning naming it (raised in
        strict mode); so is nothing else: a local file that does not exist, or a file
        on another host, is observed without a content hash and says why in its
        metadata (``dpt/unhashed``); a missing local file is also warned about.
        """
        from dpt_core.uri import file_uri_host, uri_to_path

        kept: list[tuple[Any, str, tuple[str, ...] | None]] = []
        for index, target in enumerate(targets):
            uri = self.resolve_or_skip(target)
            if uri is not None:
                kept.append((target, uri, parents[index] if parents is not None else None))
        refs = [t if isinstance(t, ProductRef) else None for t, _, _ in kept]
        uris = [uri for _, uri, _ in kept]
        paths = [uri_to_path(u) for u in uris]
        hashes: list[str | None] = [ref.content_hash if ref else None for ref in refs]
        if self.pm.hook.dpt_hash.get_hookimpls():  # (a call per target costs even with none)
            for index, (uri, path) in enumerate(zip(uris, paths, strict=True)):
                hashes[index] = hashes[index] or self._plugin_hash(uri, path)
        to_hash = [i for i, p in enumerate(paths) if p is not None and hashes[i] is None]
        facts = dict(zip(to_hash, self._observe_files([paths[i] for i in to_hash]), strict=True))  # type: ignore[misc]
        observations = []
        for index, uri in enumerate(uris):
            ref = refs[index]
            size = mtime = None
            unhashed: str | None = None
            path = paths[index]
            if index in facts:
                hashes[index] = facts[index].content_hash
                size, mtime = facts[index].size, facts[index].mtime
                if not facts[index].exists:
                    unhashed = self._missing_file(path)  # type: ignore[arg-type]
            elif path is not None:
                stat = _stat_only(path)
                size, mtime = stat.size, stat.mtime
                if not stat.exists and hashes[index] is None:
                    unhashed = self._missing_file(path)
            elif hashes[index] is None and file_uri_host(uri) is not None:
                unhashed = f"a file on host {file_uri_host(uri)!r}, not this machine: not read here"
            meta = {**(metadata or {}), **((ref.metadata or {}) if ref else {})}
            if unhashed is not None:
                meta.setdefault("dpt/unhashed", unhashed)
            observations.append(
                ProductObservation(
                    uri=uri,
                    version_uuid=(ref.version_uuid if ref and ref.version_uuid else new_uuid()),
                    content_hash=hashes[index],
                    size=size,
                    mtime=mtime,
                    metadata=jsonable(meta) if meta else {},
                    parents=kept[index][2],
                    tags=(
                        {**(tags or {}), **normalize_tags(ref.tags)}
                        if ref is not None and ref.tags
                        else dict(tags or {})
                    ),
                )
            )
        return observations

    def _plugin_hash(self, uri: str, path: str | None) -> str | None:
        """The ``dpt_hash`` hook's answer; a plugin that fails costs only this hash."""
        results = self._hook("dpt_hash", firstresult=True, uri=uri, path=path)
        return str(results[0]) if results else None

    def _missing_file(self, path: str) -> str:
        """Report a local file that does not exist (an error in strict mode); the reason kept."""
        if self.settings.strict:
            raise InvalidTarget(
                f"{path} does not exist: create it first, or name the file that was read or written"
            )
        self._warn_once(
            f"missing:{path}",
            f"dpt: {path} does not exist; recorded without a content hash",
        )
        return "the file did not exist when this was recorded"

    def _observe_files(self, paths: list[str]) -> list[Any]:
        """Hash local files through the stat cache; a file that cannot be hashed is kept without a hash."""
        from dpt_core.errors import HashError
        from dpt_core.hashing import StatCache, observe, observe_many

        if not paths:
            return []
        algorithm = self.settings.hash_algorithm
        if algorithm == "none":
            return [_stat_only(p) for p in paths]
        if self._stat_cache is None:
            self._stat_cache = StatCache(self.settings.cache_dir / "statcache.sqlite3")
        try:
            return observe_many(paths, algorithm, cache=self._stat_cache)
        except HashError:
            pass
        results = []
        for path in paths:
            try:
                results.append(observe(path, algorithm, cache=self._stat_cache))
            except HashError as exc:
                if self.settings.strict:
                    raise
                self._warn_once(f"hash:{path}", f"dpt: {exc}; recorded without a content hash")
                results.append(_stat_only(path))
        return results

    def _warn_once(self, key: str, message: str) -> None:
        if self._failures.first_time(key):
            log.warning("%s", message)

    # -- invocations ----------------------------------------------------------------------

    def current(self) -> InvocationHandle | None:
        """The innermost open invocation here, or what an orchestrator says is running."""
        stack = _current.get()
        if stack:
            return stack[-1]
        if not self.enabled:
            return None
        found = self._guard(
            "dpt_current_context", lambda: self._hook("dpt_current_context", firstresult=True)
        )
        if not found:
            return None
        context: CurrentContext = found[0]
        return InvocationHandle(self, context.invocation_uuid, context.job, context.task)

    def start(
        self,
        job: str,
        *,
        task: str | None = None,
        orchestrator: str = "python",
        uuid: str | None = None,
        parent: InvocationHandle | str | Literal[False] | None = None,
        external_id: str | None = None,
        parameters: dict[str, Any] | None = None,
        command: str | Sequence[str] | None = None,
        code_version: str | None = None,
        started_at: dt.datetime | None = None,
        status: str = "running",
        environment: bool = True,
        ended_at: dt.datetime | None = None,
        error: str | BaseException | None = None,
        variables: Mapping[str, str | None] | None = None,
        tags: Tags | None = None,
    ) -> InvocationHandle:
        """Open an invocation (recorded at once, so a crash leaves it visible as running).

        :param uuid: a stable id (see :func:`invocation_uuid`) makes the call idempotent.
        :param parent: the enclosing invocation (a handle or a UUID); default (None): the
            current one, if any; False: no parent, even inside another invocation.
        :param environment: False for invocations recorded on behalf of another process
            (the environment captured here would be the wrong one).
        :param status: ``running`` (then call :meth:`InvocationHandle.finish`), or a final
            status to record an invocation that already ended, in one event, together
            with ``ended_at`` and ``error``.
        :param variables: per-run variables the orchestrator knows for this invocation
            (``AIRFLOW_CTX_TASK_ID`` of this task try, say). They replace the process's
            volatile variables of the same names, where a process runs many tasks or
            sets them only later; a None value removes a name. Redacted like the rest.
        :param tags: ``{key: value}`` labels of the run (see docs/tags.md); a start
            recorded again adds the keys the run lacks and changes no value.
        :raises InvalidTag: a tag key or value cannot be recorded.
        """
        run_tags = normalize_tags(tags)
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is unknown: use one of {', '.join(STATUSES)}")
        if not job:
            raise ValueError("job must be a non-empty name")
        handle = InvocationHandle(self, uuid or new_uuid(), job, task)
        if status != "running":
            handle.status = status
            handle._finished = True
            ended_at = ended_at or utcnow()
        if isinstance(error, BaseException):
            error = error_text(error)
        if error is not None:
            from dpt_core.environment import redact_text

            error = redact_text(clean_text(error))
        job = clean_text(job)
        task = clean_text(task) if task is not None else None
        external_id = clean_text(external_id) if external_id is not None else None
        if not self.enabled:
            return handle
        parent_uuid: str | None
        if parent is None:
            enclosing = self.current()
            parent_uuid = enclosing.uuid if enclosing else None
        elif parent is False or parent == "":
            parent_uuid = None
        else:
            parent_uuid = parent.uuid if isinstance(parent, InvocationHandle) else str(parent)
        command_line: str | None = None
        if command is not None:
            import shlex

            from dpt_core.environment import redact_text

            text = command if isinstance(command, str) else shlex.join(command)
            command_line = redact_text(clean_text(text))

        def build() -> InvocationStarted:
            env = self.environment() if environment else None
            from dpt_core.environment import redact_parameters
            from dpt_core.process import process_token

            return InvocationStarted(
                uuid=handle.uuid,
                orchestrator=orchestrator,
                job=job,
                task=task,
                external_id=external_id,
                parent_uuid=parent_uuid,
                status=status,
                started_at=started_at or utcnow(),
                user=env.user if env else None,
                host=env.hostname if env else None,
                command=command_line,
                parameters=redact_parameters(jsonable(parameters or {}), self.settings),
                code_version=code_version,
                environment=env,
                variables=self._variables(environment, variables, orchestrator),
                process=process_token() if environment and status == "running" else None,
                ended_at=ended_at,
                error=error,
                tags=run_tags,
            )

        event = self._guard("start", build)
        if event is not None:
            self._emit("dpt_invocation_started", event)
            handle._started = event
            if status == "running" and environment:
                _unfinished[handle.uuid] = handle
        return handle

    def _variables(
        self,
        environment: bool,
        given: Mapping[str, str | None] | None,
        orchestrator: str = "python",
    ) -> dict[str, str]:
        """The invocation's volatile variables: this process's, then the orchestrator's.

        A run of one orchestrator never takes another orchestrator's run context from the
        process (``AIRFLOW_CTX_*`` that ``dag.test()`` leaves behind, read by a Dagster
        materialisation later in the same process, say).
        """
        from dpt_core.environment import rendered_variable, volatile_variables

        own = volatile_variables(self.settings) if environment else {}
        foreign = tuple(
            prefix
            for name, prefixes in _RUN_CONTEXT_PREFIXES.items()
            if name != orchestrator and orchestrator in _RUN_CONTEXT_PREFIXES
            for prefix in prefixes
        )
        if foreign:
            own = {k: v for k, v in own.items() if not k.startswith(foreign)}
        if not given:
            return own
        names = {clean_text(str(k)): v for k, v in given.items()}
        merged = {k: v for k, v in own.items() if k not in names}
        for key, value in names.items():
            if value is not None:
                merged[key] = rendered_variable(key, clean_text(str(value)), self.settings)
        return dict(sorted(merged.items()))

    def attach(
        self, uuid: str, job: str | None = None, task: str | None = None
    ) -> InvocationHandle:
        """A handle on an invocation started elsewhere (another hook call, another process)."""
        return InvocationHandle(self, uuid, job, task)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hand every event of the block to the plugins as one batch.

        The built-in store then records the block in one transaction (one spool
        append if the database is away) instead of one transaction per event:
        what a sensor recording a thousand past runs in one tick needs. Nested
        ``batch()`` blocks join the outermost one.
        """
        depth = _batch_depth.get()
        announce = depth == 0 and self.enabled
        if announce:
            self._guard("batch", lambda: self._hook("dpt_batch_started"))
        token = _batch_depth.set(depth + 1)
        try:
            yield
        finally:
            _batch_depth.reset(token)
            if announce:
                self._guard("batch", lambda: self._hook("dpt_batch_finished"))

    @contextlib.contextmanager
    def activate(self, handle: InvocationHandle) -> Iterator[InvocationHandle]:
        """Make ``handle`` the current invocation inside the block (no start or finish)."""
        token = _current.set((*_current.get(), handle))
        try:
            yield handle
        finally:
            _current.reset(token)

    def invocation(
        self,
        job: str | None = None,
        *,
        task: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        orchestrator: str = "python",
        command: str | Sequence[str] | None = None,
        code_version: str | None = None,
        uuid: str | None = None,
        parent: InvocationHandle | str | Literal[False] | None = None,
        external_id: str | None = None,
        started_at: dt.datetime | None = None,
        environment: bool = True,
        variables: Mapping[str, str | None] | None = None,
        tags: Tags | None = None,
    ) -> InvocationBlock:
        """An invocation for a ``with`` (or ``async with``) block: success when the block
        ends, failed (with the error) when it raises, cancelled on ``KeyboardInterrupt``
        or asyncio cancellation. The parameters are :func:`dpt_core.invocation`'s.
        """
        if job is not None and not isinstance(job, str):
            raise TypeError(
                f"invocation() takes a job name, not {type(job).__name__}: to record each call "
                "of a function as an invocation, decorate it with @dpt_core.tracked(...)"
            )
        options: dict[str, Any] = {
            "task": task,
            "parameters": dict(parameters) if parameters is not None else None,
            "orchestrator": orchestrator,
            "command": command,
            "code_version": code_version,
            "uuid": uuid,
            "parent": parent,
            "external_id": external_id,
            "started_at": started_at,
            "environment": environment,
            "variables": variables,
            "tags": normalize_tags(tags) or None,
        }
        return InvocationBlock(self, job, options)

    def read(self, *targets: Any, metadata: dict[str, Any] | None = None) -> list[str]:
        """Record ``targets`` as read by the current invocation, or by a new one-off invocation."""
        current = self.current()
        if current is not None:
            return current.read(*targets, metadata=metadata)
        if not self._resolvable(targets):
            return []
        with self.invocation(_script_name(), task="read") as handle:
            return handle.read(*targets, metadata=metadata)

    def _resolvable(self, targets: Sequence[Any]) -> bool:
        """True when some target names a product: a one-off run is opened only then."""
        found = self._guard(
            "track", lambda: [u for u in map(self.resolve_or_skip, targets) if u is not None]
        )
        return bool(found)

    @overload
    def track(
        self,
        targets: Iterator[Any],
        /,
        *,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> WrittenURIs: ...

    @overload
    def track(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str]: ...

    def track(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str] | WrittenURIs:
        """Record ``targets`` as written by the current invocation, or by a new one-off
        invocation. ``tags`` label the versions written (not the run). ``targets`` may be
        one list or generator: many are recorded in chunks, and a generator's URIs come
        back as a :class:`WrittenURIs` (see :meth:`InvocationHandle.write`)."""
        normalize_tags(tags)  # a bad tag is the caller's error, before anything is recorded
        given = _targets(targets)
        streamed = isinstance(given, Iterator)
        current = self.current()
        if current is not None:
            return current.write(given, parents=parents, metadata=metadata, tags=tags)
        # Resolve first: targets that name no product must not leave an empty one-off run.
        found: Iterator[Any] | None = self._guard("track", lambda: self._first_resolvable(given))
        if not found:
            return WrittenURIs() if streamed else []
        with self.invocation(_script_name(), task="track") as handle:
            if streamed:
                written: WrittenURIs = handle.write(
                    found, parents=parents, metadata=metadata, tags=tags
                )
                return written
            return handle.write(list(found), parents=parents, metadata=metadata, tags=tags)

    def _first_resolvable(self, targets: Iterable[Any]) -> Iterator[Any] | None:
        """None when no target names a product; else all of ``targets`` again (read up to
        the first one that does, so a generator is walked once and not held)."""
        items = iter(targets)
        seen: list[Any] = []
        for target in items:
            seen.append(target)
            if self.resolve_or_skip(target) is not None:
                return itertools.chain(seen, items)
        return None


def _targets(given: tuple[Any, ...]) -> Iterable[Any]:
    """The targets of ``write(a, b)``, ``write([a, b])`` or ``write(generator)``. Exact
    types only: a tuple subclass is one target (a Dagster ``AssetKey`` is a tuple)."""
    if len(given) == 1 and (
        type(given[0]) in (list, tuple, set, frozenset) or isinstance(given[0], Iterator)
    ):
        return given[0]  # type: ignore[no-any-return]
    return given


def _cancelled(exc: BaseException) -> bool:
    """A run stopped from outside (Ctrl-C, an asyncio task cancelled), not one that failed."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    asyncio = sys.modules.get("asyncio")  # not loaded: nothing can be an asyncio cancellation
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


class InvocationBlock:
    """What :meth:`Tracker.invocation` returns: enter it once, with ``with`` (giving an
    :class:`InvocationHandle`) or ``async with`` (giving an :class:`AsyncInvocationHandle`).

    Inside the block the invocation is the current one (a context variable, so it
    follows the block into the tasks and threads it starts with the context copied,
    as asyncio does): ``dpt_core.track()``, ``dpt_core.read()`` and nested blocks
    attach to it.
    """

    def __init__(self, tracker: Tracker, job: str | None, options: dict[str, Any]) -> None:
        self._tracker = tracker
        self._job = job
        self._options = options
        self._handle: InvocationHandle | None = None
        self._owned = False
        self._token: contextvars.Token[tuple[InvocationHandle, ...]] | None = None
        self._entered = False

    def __repr__(self) -> str:
        return f"<InvocationBlock {self._job or '(joins the current invocation)'}>"

    def __call__(self, func: object) -> NoReturn:
        raise TypeError(
            "dpt_core.invocation(...) is a context manager, not a decorator: to record each "
            "call of a function as an invocation, decorate it with @dpt_core.tracked(...)"
        )

    # -- sync -------------------------------------------------------------------------------

    def __enter__(self) -> InvocationHandle:
        joined, job, options = self._prepare()
        handle = joined if joined is not None else self._tracker.start(job, **options)
        return self._activate(handle, owned=joined is None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        handle = self._close()
        if handle is None:
            return
        if exc is not None:
            handle.finish("cancelled" if _cancelled(exc) else "failed", error=exc)
        elif not handle._finished:
            handle.finish("success")

    # -- async ------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncInvocationHandle:
        import asyncio

        joined, job, options = self._prepare()
        if joined is not None:
            handle = joined
        else:  # the environment capture and the database write run in a worker thread
            handle = await asyncio.to_thread(self._tracker.start, job, **options)
        return AsyncInvocationHandle(self._activate(handle, owned=joined is None))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        import asyncio

        handle = self._close()
        if handle is None:
            return
        if exc is not None:
            status = "cancelled" if _cancelled(exc) else "failed"
            await asyncio.to_thread(handle.finish, status, error=exc)
        elif not handle._finished:
            await asyncio.to_thread(handle.finish, "success")

    # -- internals --------------------------------------------------------------------------

    def _prepare(self) -> tuple[InvocationHandle | None, str, dict[str, Any]]:
        """``(the invocation to join, or None; job; options for Tracker.start)``. Everything
        that depends on where the block runs is settled here, on the caller's thread."""
        if self._entered:
            raise RuntimeError(
                "an invocation block is entered once: call dpt_core.invocation(...) again"
            )
        self._entered = True
        tracker = self._tracker
        job = self._job
        if job is None:
            joined = tracker.current()
            if joined is not None:
                if self._options.get("tags"):
                    tracker._warn_once(
                        f"join-tags:{joined.uuid}",
                        f"dpt: invocation(tags=...) joins the current run {joined.uuid}, "
                        "which was opened elsewhere: its tags are not changed (name a job "
                        "to open a run of its own, or use dpt_core.tag(run, ...) to tag it)",
                    )
                return joined, joined.job or "", {}
            job = _script_name()
        options = dict(self._options)
        if options["orchestrator"] == "python" and options["environment"]:
            # How the script was started and where (an inherited PWD may be stale): what
            # `dpt reproduce` needs to run it again.
            if options["command"] is None:
                options["command"] = _script_command()
            options["variables"] = {"PWD": os.getcwd(), **(options["variables"] or {})}
        if options["parent"] is None and tracker.enabled:
            # Settled here: in a worker thread the orchestrator's "what runs now" may differ.
            enclosing = tracker.current()
            options["parent"] = enclosing if enclosing is not None else False
        return None, job, options

    def _activate(self, handle: InvocationHandle, *, owned: bool) -> InvocationHandle:
        self._handle, self._owned = handle, owned
        self._token = _current.set((*_current.get(), handle))
        return handle

    def _close(self) -> InvocationHandle | None:
        """Leave the block; the handle to finish (None when the block joined another run)."""
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        return self._handle if self._owned else None


class AsyncInvocationHandle:
    """An open invocation in ``async with dpt_core.invocation(...) as inv``.

    ``await inv.read(...)`` / ``await inv.write(...)`` record like
    :class:`InvocationHandle`'s methods, with the hashing and the database work in a
    worker thread (``asyncio.to_thread``), so other coroutines run meanwhile.
    :attr:`handle` is the synchronous handle, for code that is not async.
    """

    def __init__(self, handle: InvocationHandle) -> None:
        self.handle = handle

    def __repr__(self) -> str:
        return f"<Async{self.handle!r}>"

    @property
    def uuid(self) -> str:
        return self.handle.uuid

    @property
    def job(self) -> str | None:
        return self.handle.job

    @property
    def task(self) -> str | None:
        return self.handle.task

    @property
    def status(self) -> str:
        return self.handle.status

    async def read(self, *targets: Any, metadata: dict[str, Any] | None = None) -> list[str]:
        """Record that this invocation read ``targets``; returns their URIs."""
        import asyncio

        return await asyncio.to_thread(self.handle.read, *targets, metadata=metadata)

    @overload
    async def write(
        self,
        targets: Iterator[Any],
        /,
        *,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> WrittenURIs: ...

    @overload
    async def write(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str]: ...

    async def write(
        self,
        *targets: Any,
        parents: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> list[str] | WrittenURIs:
        """Record that this invocation wrote ``targets`` (see :meth:`InvocationHandle.write`)."""
        import asyncio

        normalize_tags(tags)  # a bad tag raises here, in the caller's task
        return await asyncio.to_thread(
            self.handle.write, *targets, parents=parents, metadata=metadata, tags=tags
        )

    async def finish(
        self,
        status: str = "success",
        error: str | BaseException | None = None,
        ended_at: dt.datetime | None = None,
    ) -> None:
        """Close the invocation now (see :meth:`InvocationHandle.finish`)."""
        import asyncio

        await asyncio.to_thread(self.handle.finish, status, error, ended_at)


def _stat_only(path: str) -> Any:
    from dpt_core.hashing import FileFacts

    try:
        st = os.stat(path)
    except OSError:
        return FileFacts(None, None, None, False)
    return FileFacts(None, st.st_size, st.st_mtime, True)


#: The variables an orchestrator sets to describe the run in progress, by orchestrator.
_RUN_CONTEXT_PREFIXES: dict[str, tuple[str, ...]] = {
    "airflow": ("AIRFLOW_CTX_",),
    "prefect": ("PREFECT__",),
    "dagster": ("DAGSTER_RUN",),
}


def _script_command() -> list[str] | None:
    """How this Python process was started (``python script.py args``), for a block of the
    Python API to record as its command: what ``dpt reproduce`` re-runs. None for
    ``python -c`` and the interactive interpreter, which cannot be run again as they were."""
    if not sys.argv or sys.argv[0] in ("", "-c"):
        return None
    interpreter = os.path.basename(sys.executable) or "python"
    return [interpreter, *sys.argv]


def _script_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    name = os.path.basename(argv0)
    return name if name not in ("-c", "") else "python"


_default: Tracker | None = None


def get_tracker() -> Tracker:
    """The process-wide tracker."""
    global _default
    if _default is None:
        _default = Tracker()
    return _default


def reset() -> None:
    """Forget cached settings, store, environment and tracker (after changing ``DPT_*``)."""
    global _default
    from dpt_core import config
    from dpt_core.store.plugin import reset_store

    config.reset_settings()
    reset_store()
    _unfinished.clear()
    _default = None
