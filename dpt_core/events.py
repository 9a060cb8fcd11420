"""Plain, serialisable records that flow from the Tracker through the hooks.

Every event carries UUIDs so that recording it twice (a retry, a spool replay,
two sensors reading the same Dagster event) is the same as recording it once.
Events are frozen values (:class:`dpt_core.frozen.Frozen`) of JSON-able values only:
the spool writes them as JSON lines and reads them back with :func:`events_from_json`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from dpt_core.frozen import Frozen, set_field

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


class EnvironmentSnapshot(Frozen):
    """Where code ran, after redaction. ``fingerprint`` identifies it."""

    __slots__ = (
        "fingerprint",
        "python_version",
        "implementation",
        "platform",
        "hostname",
        "user",
        "distributions",
        "variables",
        "facets",
    )
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
    facets: dict[str, Any]

    def __init__(
        self,
        fingerprint: str,
        python_version: str,
        implementation: str,
        platform: str,
        hostname: str,
        user: str,
        distributions: tuple[tuple[str, str], ...],
        variables: tuple[tuple[str, str | None, str | None], ...],
        facets: dict[str, Any] | None = None,
    ) -> None:
        set_field(self, "fingerprint", fingerprint)
        set_field(self, "python_version", python_version)
        set_field(self, "implementation", implementation)
        set_field(self, "platform", platform)
        set_field(self, "hostname", hostname)
        set_field(self, "user", user)
        set_field(self, "distributions", distributions)
        set_field(self, "variables", variables)
        set_field(self, "facets", {} if facets is None else facets)


class InvocationStarted(Frozen):
    """An invocation began (or, with a final ``status``, began and ended): its job, where it
    ran and with what. Recording it again adds nothing.

    ``started_at`` None is now; ``variables`` are the volatile environment variables of
    this run (already redacted); ``ended_at`` and ``error`` are set when an
    already-finished invocation is recorded in one event; ``process`` is the process
    recording it (:func:`dpt_core.process.process_token`), when it runs here; ``tags``
    are the run's, ``{key: text}`` (validated by :func:`dpt_core.tags.normalize_tags`).
    """

    __slots__ = (
        "uuid",
        "orchestrator",
        "job",
        "task",
        "external_id",
        "parent_uuid",
        "status",
        "started_at",
        "user",
        "host",
        "command",
        "parameters",
        "code_version",
        "environment",
        "variables",
        "ended_at",
        "error",
        "process",
        "tags",
        "kind",
    )
    uuid: str
    orchestrator: str
    job: str
    task: str | None
    external_id: str | None
    parent_uuid: str | None
    status: str
    started_at: dt.datetime
    user: str | None
    host: str | None
    command: str | None
    parameters: dict[str, Any]
    code_version: str | None
    environment: EnvironmentSnapshot | None
    variables: dict[str, str]
    ended_at: dt.datetime | None
    error: str | None
    process: str | None
    tags: dict[str, str]
    kind: str

    def __init__(
        self,
        uuid: str,
        orchestrator: str,
        job: str,
        task: str | None = None,
        external_id: str | None = None,
        parent_uuid: str | None = None,
        status: str = "running",
        started_at: dt.datetime | None = None,
        user: str | None = None,
        host: str | None = None,
        command: str | None = None,
        parameters: dict[str, Any] | None = None,
        code_version: str | None = None,
        environment: EnvironmentSnapshot | None = None,
        variables: dict[str, str] | None = None,
        ended_at: dt.datetime | None = None,
        error: str | None = None,
        process: str | None = None,
        tags: dict[str, str] | None = None,
        kind: str = "invocation_started",
    ) -> None:
        set_field(self, "uuid", uuid)
        set_field(self, "orchestrator", orchestrator)
        set_field(self, "job", job)
        set_field(self, "task", task)
        set_field(self, "external_id", external_id)
        set_field(self, "parent_uuid", parent_uuid)
        set_field(self, "status", status)
        set_field(self, "started_at", utcnow() if started_at is None else started_at)
        set_field(self, "user", user)
        set_field(self, "host", host)
        set_field(self, "command", command)
        set_field(self, "parameters", {} if parameters is None else parameters)
        set_field(self, "code_version", code_version)
        set_field(self, "environment", environment)
        set_field(self, "variables", {} if variables is None else variables)
        set_field(self, "ended_at", ended_at)
        set_field(self, "error", error)
        set_field(self, "process", process)
        set_field(self, "tags", {} if tags is None else tags)
        set_field(self, "kind", kind)


class InvocationFinished(Frozen):
    """An invocation ended with ``status`` (one of :data:`FINAL_STATUSES`); ``ended_at``
    None is now. ``only_if_running`` closes it only if it is still ``running`` (a closer
    that may come after the real end)."""

    __slots__ = ("uuid", "status", "ended_at", "error", "only_if_running", "kind")
    uuid: str
    status: str
    ended_at: dt.datetime
    error: str | None
    only_if_running: bool
    kind: str

    def __init__(
        self,
        uuid: str,
        status: str,
        ended_at: dt.datetime | None = None,
        error: str | None = None,
        only_if_running: bool = False,
        kind: str = "invocation_finished",
    ) -> None:
        set_field(self, "uuid", uuid)
        set_field(self, "status", status)
        set_field(self, "ended_at", utcnow() if ended_at is None else ended_at)
        set_field(self, "error", error)
        set_field(self, "only_if_running", only_if_running)
        set_field(self, "kind", kind)


class ProductObservation(Frozen):
    """One observed state of a product: what a read saw or a write made.

    ``parents`` (for writes) are the URIs this output derives from; None means "every
    input of the invocation". ``tags`` are the version's, ``{key: text}`` (recorded for
    writes).
    """

    __slots__ = (
        "uri",
        "version_uuid",
        "content_hash",
        "size",
        "mtime",
        "metadata",
        "parents",
        "tags",
    )
    uri: str
    version_uuid: str
    content_hash: str | None
    size: int | None
    mtime: float | None
    metadata: dict[str, Any]
    parents: tuple[str, ...] | None
    tags: dict[str, str]

    def __init__(
        self,
        uri: str,
        version_uuid: str,
        content_hash: str | None = None,
        size: int | None = None,
        mtime: float | None = None,
        metadata: dict[str, Any] | None = None,
        parents: tuple[str, ...] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        set_field(self, "uri", uri)
        set_field(self, "version_uuid", version_uuid)
        set_field(self, "content_hash", content_hash)
        set_field(self, "size", size)
        set_field(self, "mtime", mtime)
        set_field(self, "metadata", {} if metadata is None else metadata)
        set_field(self, "parents", parents)
        set_field(self, "tags", {} if tags is None else tags)


class ProductsRead(Frozen):
    """An invocation read these product versions."""

    __slots__ = ("invocation_uuid", "inputs", "kind")
    invocation_uuid: str
    inputs: tuple[ProductObservation, ...]
    kind: str

    def __init__(
        self,
        invocation_uuid: str,
        inputs: tuple[ProductObservation, ...],
        kind: str = "products_read",
    ) -> None:
        set_field(self, "invocation_uuid", invocation_uuid)
        set_field(self, "inputs", inputs)
        set_field(self, "kind", kind)


class ProductsWritten(Frozen):
    """An invocation wrote these product versions."""

    __slots__ = ("invocation_uuid", "outputs", "kind")
    invocation_uuid: str
    outputs: tuple[ProductObservation, ...]
    kind: str

    def __init__(
        self,
        invocation_uuid: str,
        outputs: tuple[ProductObservation, ...],
        kind: str = "products_written",
    ) -> None:
        set_field(self, "invocation_uuid", invocation_uuid)
        set_field(self, "outputs", outputs)
        set_field(self, "kind", kind)


Event = InvocationStarted | InvocationFinished | ProductsRead | ProductsWritten


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
        encoded = {name: _encode(getattr(value, name)) for name in EnvironmentSnapshot.__slots__}
        _last_snapshot = (value, encoded)
        return encoded
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, Frozen):
        return {name: _encode(getattr(value, name)) for name in value.__slots__}
    return value


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-able dict of ``event`` (datetimes tagged so they come back as datetimes)."""
    return {name: _encode(getattr(event, name)) for name in event.__slots__}


#: The last environment snapshot written as JSON, and its JSON text (as :data:`_last_snapshot`).
_last_snapshot_json: tuple[EnvironmentSnapshot, str] | None = None


def event_to_json(event: Event) -> str:
    """``event`` as one JSON object, the text of ``json.dumps(event_to_dict(event))``'s
    object up to the order of its keys.

    A run's start carries its environment (~7 KB: every package and variable), the same
    snapshot for all the runs of a process: its JSON text is made once, not at every start.
    """
    global _last_snapshot_json
    env = getattr(event, "environment", None)
    if not isinstance(env, EnvironmentSnapshot):
        return _encoder.encode(event)
    last = _last_snapshot_json
    if last is None or last[0] is not env:
        last = _last_snapshot_json = (env, _encoder.encode(env))
    rest = {name: getattr(event, name) for name in event.__slots__ if name != "environment"}
    text = _encoder.encode(rest)
    return text[:-1] + ', "environment": ' + last[1] + "}"


def _json_default(value: Any) -> Any:
    """What :func:`_encode` makes of the values JSON has no type for (the encoder walks
    the rest in C): a datetime, a record."""
    if isinstance(value, dt.datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, Frozen):
        return {name: getattr(value, name) for name in value.__slots__}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


#: The encoder of :func:`event_to_json`, made once (``json.dumps`` with arguments makes
#: one a call). Without the circular-reference check: an event is a tree (its
#: parameters and metadata went through :func:`dpt_core.tracker.jsonable`).
_encoder = json.JSONEncoder(ensure_ascii=False, check_circular=False, default=_json_default)


def _decode(value: Any) -> Any:
    """``value`` with its tagged datetimes decoded, at any depth: :func:`_datetime_hook`
    after the parse, where :func:`events_from_json` has it run during the parse."""
    if isinstance(value, dict):
        return _datetime_hook({k: _decode(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _snapshot(encoded: dict[str, Any]) -> EnvironmentSnapshot:
    global _last_decoded
    if not isinstance(encoded, dict):
        raise TypeError(f"an environment is an object, not {type(encoded).__name__}")
    last = _last_decoded
    if last is not None and last[0] == encoded:
        return last[1]
    env = _decode(encoded)
    env["distributions"] = _tuples(env["distributions"])
    env["variables"] = _tuples(env["variables"])
    snapshot = EnvironmentSnapshot(**env)
    _last_decoded = (encoded, snapshot)
    return snapshot


def _observation(data: dict[str, Any]) -> ProductObservation:
    data = dict(data)
    if data.get("parents") is not None:
        data["parents"] = tuple(data["parents"])
    return ProductObservation(**data)


#: The last environment read back, as read and as decoded: a process's starts carry one
#: snapshot (hundreds of packages and variables), compared with the last one (no new
#: objects) rather than decoded again at every start a writer reads from the spool. Not
#: by fingerprint alone: an ingested event names the fingerprint it was exported with,
#: and its facets may have lost their null members on the way.
_last_decoded: tuple[dict[str, Any], EnvironmentSnapshot] | None = None


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_dict`."""
    return _event_from(data, _decode)


def events_from_json(text: str) -> list[Event]:
    """The events of a spool line (a JSON array of :func:`event_to_json` objects).

    The datetimes are decoded while the JSON is parsed (``object_hook``), not by a walk of
    the parsed values afterwards (~17 Python calls an event, a fifth of what a writer
    thread spent reading its claims back). ValueError when it is not such a line."""
    batch = json.loads(text, object_hook=_datetime_hook)
    if not isinstance(batch, list) or not all(isinstance(d, dict) for d in batch):
        raise ValueError("a spool line is a JSON array of event objects")
    return [_event_from(data, _as_decoded) for data in batch]


def _datetime_hook(value: dict[str, Any]) -> Any:
    """A parsed JSON object, or the datetime it tags (``{"__dt__": iso}``, see
    :func:`_json_default`)."""
    if len(value) == 1 and "__dt__" in value:
        return dt.datetime.fromisoformat(value["__dt__"])
    return value


def _as_decoded(value: Any) -> Any:
    return value


def _event_from(data: dict[str, Any], decode: Callable[[Any], Any]) -> Event:
    kind = data.get("kind")
    if kind == "invocation_started":
        env = data.get("environment")
        data = decode({k: v for k, v in data.items() if k != "environment"})
        if env is not None:
            data["environment"] = _snapshot(env)
        return InvocationStarted(**data)
    data = decode(data)
    if kind == "invocation_finished":
        return InvocationFinished(**data)
    if kind == "products_read":
        data["inputs"] = tuple(_observation(o) for o in data["inputs"])
        return ProductsRead(**data)
    if kind == "products_written":
        data["outputs"] = tuple(_observation(o) for o in data["outputs"])
        return ProductsWritten(**data)
    raise ValueError(f"unknown event kind {kind!r}")


class ProductRef(Frozen):
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

    __slots__ = ("target", "metadata", "content_hash", "version_uuid", "parents", "tags")
    target: Any
    metadata: dict[str, Any] | None
    content_hash: str | None
    version_uuid: str | None
    parents: tuple[Any, ...] | None
    tags: dict[str, Any] | None

    def __init__(
        self,
        target: Any,
        metadata: dict[str, Any] | None = None,
        content_hash: str | None = None,
        version_uuid: str | None = None,
        parents: tuple[Any, ...] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        set_field(self, "target", target)
        set_field(self, "metadata", metadata)
        set_field(self, "content_hash", content_hash)
        set_field(self, "version_uuid", version_uuid)
        set_field(self, "parents", parents)
        set_field(self, "tags", tags)


class CurrentContext(Frozen):
    """What an orchestrator says is running now (see the ``dpt_current_context`` hook).

    :param invocation_uuid: the UUID of the running invocation (already started by the adapter).
    :param job: its job, for display.
    :param task: its task, for display.
    """

    __slots__ = ("invocation_uuid", "job", "task")
    invocation_uuid: str
    job: str | None
    task: str | None

    def __init__(
        self, invocation_uuid: str, job: str | None = None, task: str | None = None
    ) -> None:
        set_field(self, "invocation_uuid", invocation_uuid)
        set_field(self, "job", job)
        set_field(self, "task", task)
