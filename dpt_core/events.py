"""Plain, serialisable records that flow from the Tracker through the hooks.

Every event carries UUIDs so that recording it twice (a retry, a spool replay,
two sensors reading the same Dagster event) is the same as recording it once.
Events are dataclasses of JSON-able values only: the spool writes them as JSON
lines and reads them back with :func:`event_from_dict`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("running", "success", "failed", "crashed", "cancelled", "skipped")
FINAL_STATUSES = STATUSES[1:]


def error_text(error: BaseException) -> str:
    """How a run's error is recorded: ``ValueError: bad gain``, or the type alone when the
    exception says nothing more (``KeyboardInterrupt``, not ``KeyboardInterrupt: ``)."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def clean_text(text: str, *, keep_nul: bool = False) -> str:
    """``text`` as storable, printable Unicode.

    Undecodable bytes that Python carries as lone surrogates (a non-UTF-8 file name in
    ``argv``, a Latin-1 environment variable) become ``\\xNN`` escapes, and NUL (which
    PostgreSQL text cannot hold) becomes ``\\x00``: every database and the spool's JSON
    can store the result, and nothing fails to encode later, at replay.
    ``keep_nul`` keeps NUL for strings that go into JSON, where it is ``\\u0000``.
    """
    if "\x00" in text and not keep_nul:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class EnvironmentSnapshot:
    """Where code ran, after redaction. ``fingerprint`` identifies it."""

    fingerprint: str
    python_version: str
    implementation: str
    platform: str
    hostname: str
    user: str
    distributions: tuple[tuple[str, str], ...]
    #: (key, value or None when redacted, keyed digest when redacted else None), sorted by key.
    #: Volatile variables are not here: they vary per run and ride on the invocation.
    variables: tuple[tuple[str, str | None, str | None], ...]
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InvocationStarted:
    """An invocation began (or, with a final ``status``, began and ended): its job, where it
    ran and with what. Recording it again adds nothing."""

    uuid: str
    orchestrator: str
    job: str
    task: str | None = None
    external_id: str | None = None
    parent_uuid: str | None = None
    status: str = "running"
    started_at: dt.datetime = field(default_factory=utcnow)
    user: str | None = None
    host: str | None = None
    command: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    environment: EnvironmentSnapshot | None = None
    #: Volatile environment variables of this run (already redacted).
    variables: dict[str, str] = field(default_factory=dict)
    #: Set when an already-finished invocation is recorded in one event.
    ended_at: dt.datetime | None = None
    error: str | None = None
    #: The process recording it (:func:`dpt_core.process.process_token`), when it runs here.
    process: str | None = None
    #: Tags of the run, ``{key: text}`` (validated by :func:`dpt_core.tags.normalize_tags`).
    tags: dict[str, str] = field(default_factory=dict)
    kind: str = "invocation_started"


@dataclass(frozen=True)
class InvocationFinished:
    """An invocation ended with ``status`` (one of :data:`FINAL_STATUSES`)."""

    uuid: str
    status: str
    ended_at: dt.datetime = field(default_factory=utcnow)
    error: str | None = None
    #: Close it only if it is still ``running`` (a closer that may come after the real end).
    only_if_running: bool = False
    kind: str = "invocation_finished"


@dataclass(frozen=True)
class ProductObservation:
    """One observed state of a product: what a read saw or a write made."""

    uri: str
    version_uuid: str
    content_hash: str | None = None
    size: int | None = None
    mtime: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: For writes: URIs this output derives from; None means "every input of the invocation".
    parents: tuple[str, ...] | None = None
    #: Tags of the version, ``{key: text}`` (recorded for writes).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProductsRead:
    """An invocation read these product versions."""

    invocation_uuid: str
    inputs: tuple[ProductObservation, ...]
    kind: str = "products_read"


@dataclass(frozen=True)
class ProductsWritten:
    """An invocation wrote these product versions."""

    invocation_uuid: str
    outputs: tuple[ProductObservation, ...]
    kind: str = "products_written"


Event = InvocationStarted | InvocationFinished | ProductsRead | ProductsWritten


#: Field names of each event class, in order (``dataclasses.fields`` builds them anew at
#: every call, and events are encoded on the task's thread).
_field_names: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _field_names.get(cls)
    if names is None:
        names = _field_names[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


#: The last environment snapshot encoded, and its encoding: a process's runs share one
#: snapshot (hundreds of packages and variables), encoded once rather than at every start.
_last_snapshot: tuple[EnvironmentSnapshot, dict[str, Any]] | None = None


def _encode(value: Any) -> Any:
    global _last_snapshot
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, dt.datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, EnvironmentSnapshot):  # (frozen; its encoding only read)
        last = _last_snapshot
        if last is not None and last[0] is value:
            return last[1]
        encoded = {name: _encode(getattr(value, name)) for name in _names(EnvironmentSnapshot)}
        _last_snapshot = (value, encoded)
        return encoded
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _encode(getattr(value, name)) for name in _names(type(value))}
    return value


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-able dict of ``event`` (datetimes tagged so they come back as datetimes)."""
    return {name: _encode(getattr(event, name)) for name in _names(type(event))}


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__dt__"}:
            return dt.datetime.fromisoformat(value["__dt__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _observation(data: dict[str, Any]) -> ProductObservation:
    data = dict(data)
    if data.get("parents") is not None:
        data["parents"] = tuple(data["parents"])
    return ProductObservation(**data)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_dict`."""
    data = _decode(data)
    kind = data.get("kind")
    if kind == "invocation_started":
        env = data.get("environment")
        if env is not None:
            env = dict(env)
            env["distributions"] = _tuples(env["distributions"])
            env["variables"] = _tuples(env["variables"])
            data["environment"] = EnvironmentSnapshot(**env)
        return InvocationStarted(**data)
    if kind == "invocation_finished":
        return InvocationFinished(**data)
    if kind == "products_read":
        data["inputs"] = tuple(_observation(o) for o in data["inputs"])
        return ProductsRead(**data)
    if kind == "products_written":
        data["outputs"] = tuple(_observation(o) for o in data["outputs"])
        return ProductsWritten(**data)
    raise ValueError(f"unknown event kind {kind!r}")


@dataclass(frozen=True)
class ProductRef:
    """A product named with more than a path: what adapters hand to ``read``/``write``.

    :param target: a path, URI, or any object a ``dpt_resolve_uri`` plugin knows.
    :param metadata: JSON-able facts kept on the version (asset event extras, ...).
    :param content_hash: a hash the caller already knows (a Dagster data version);
        the core then does not hash the file.
    :param version_uuid: a stable identity for this exact version, so recording it
        again (a re-read event log) adds nothing; when reading, names the exact
        version consumed.
    :param parents: for writes, the products this one derives from (overrides the
        ``parents`` argument of ``write``).
    :param tags: for writes, tags of this version (with the ``tags`` argument of
        ``write``; this one wins for a key in both; see :mod:`dpt_core.tags`).
    """

    target: Any
    metadata: dict[str, Any] | None = None
    content_hash: str | None = None
    version_uuid: str | None = None
    parents: tuple[Any, ...] | None = None
    tags: dict[str, Any] | None = None


@dataclass(frozen=True)
class CurrentContext:
    """What an orchestrator says is running now (see the ``dpt_current_context`` hook).

    :param invocation_uuid: the UUID of the running invocation (already started by the adapter).
    :param job: its job, for display.
    :param task: its task, for display.
    """

    invocation_uuid: str
    job: str | None = None
    task: str | None = None
