"""Validation of OpenLineage 2-0-x events (RunEvent, DatasetEvent, JobEvent).

Written from the spec's JSON Schemas (``spec/OpenLineage.json`` 2-0-2 and the facet
schemas under ``spec/facets/``), without a JSON Schema library: a receiver needs one
error that names the field and says how to fix it, and the checks are few.

What is checked (everything the schemas require, and the facets dpt reads):

* the event is an object; ``eventTime`` (an RFC 3339 date-time with a UTC offset),
  ``producer`` and ``schemaURL`` (absolute URIs) are present;
* RunEvent: ``eventType`` (when present) is one of START, RUNNING, COMPLETE, ABORT,
  FAIL, OTHER; ``run.runId`` is a UUID; ``job.namespace`` and ``job.name`` are
  non-empty strings; ``inputs``/``outputs`` are arrays of datasets;
* DatasetEvent: ``dataset``; JobEvent: ``job`` (+ ``inputs``/``outputs``);
* a dataset has a non-empty ``namespace`` and ``name``;
* every facet is an object with ``_producer`` and ``_schemaURL`` (URIs); the facets
  dpt maps (``parent``, ``errorMessage``, ``jobType``, ``processing_engine``,
  ``environmentVariables``, ``nominalTime``, ``sourceCodeLocation``, ``sourceCode``,
  ``executionParameters``, ``version``, ``outputStatistics``, ``dpt_environment``)
  have the fields and types their schemas give.

The kind of event is told by its ``schemaURL`` fragment (``#/$defs/DatasetEvent``,
``#/$defs/JobEvent``), else by its shape (``dataset`` without ``run``): an event
meant as a RunEvent that lacks ``run`` is an error, not a JobEvent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Final

from dpt_core.errors import DptError

__all__ = [
    "EVENT_TYPES",
    "InvalidEvent",
    "check_event",
    "checked_event",
    "event_kind",
    "parse_time",
]

EVENT_TYPES: Final = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")

_UUID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_ABSOLUTE_URI: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f]*$")
_TIME_EXAMPLE: Final = "2024-05-10T12:00:00Z"
_DATE_T_TIME: Final = re.compile(r"\d[T t]\d")
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")


class InvalidEvent(DptError):
    """An OpenLineage event that breaks the spec: ``field`` is the JSON path of the
    culprit (``run.runId``, ``inputs[2].namespace``; ``[3].run.runId`` in a list of
    events), and the message names it and says what to send instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


def _path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value: Any, field: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidEvent(field, f"must be an object ({what}), not {_kind(value)}")
    return value


def _required(data: Mapping[str, Any], base: str, key: str, what: str) -> Any:
    if key not in data or data[key] is None:
        raise InvalidEvent(_path(base, key), f"missing: {what}")
    return data[key]


def _string(value: Any, field: str, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(field, f"must be a string ({what}), not {_kind(value)}")
    if not empty and not value.strip():
        raise InvalidEvent(field, f"must not be empty ({what})")
    return value


def _optional_string(data: Mapping[str, Any], base: str, key: str, what: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return _string(value, _path(base, key), what, empty=True)


def _uri(value: Any, field: str, what: str) -> str:
    text = _string(value, field, what)
    if not _ABSOLUTE_URI.match(text):
        raise InvalidEvent(
            field,
            f"{text[:80]!r} is not an absolute URI ({what}); send a URI with a scheme, "
            "e.g. 'https://github.com/my-org/my-pipeline/tree/v1.2'",
        )
    return text


def uuid_text(value: Any, field: str) -> str:
    """A UUID in its canonical, lower-case form; raises :class:`InvalidEvent` otherwise."""
    text = _string(value, field, "a run id")
    if not _UUID.match(text):
        raise InvalidEvent(
            field,
            f"{text[:80]!r} is not a UUID: OpenLineage run ids are UUIDs such as "
            "'0190b7f2-6b5a-7c3e-9a1d-2f4e5d6c7b8a' (uuid4 or uuid7)",
        )
    return text.lower()


def parse_time(value: Any, field: str) -> dt.datetime:
    """An RFC 3339 date-time with a UTC offset, as an aware datetime."""
    text = _string(value, field, f"a date-time such as {_TIME_EXAMPLE}")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or not _DATE_T_TIME.search(text):
        raise InvalidEvent(
            field,
            f"{text[:80]!r} is not an ISO 8601 date-time: send one with date, time and "
            f"UTC offset, e.g. {_TIME_EXAMPLE}",
        )
    if parsed.tzinfo is None:
        raise InvalidEvent(
            field,
            f"{text[:80]!r} has no UTC offset: add one ('Z' or '+02:00'), e.g. {_TIME_EXAMPLE}",
        )
    return parsed


def event_kind(event: Mapping[str, Any]) -> str:
    """``"run"``, ``"dataset"`` or ``"job"``: what the event is meant to be."""
    schema = event.get("schemaURL")
    fragment = schema.rpartition("/")[2] if isinstance(schema, str) else ""
    if fragment == "DatasetEvent":
        return "dataset"
    if fragment == "JobEvent":
        return "job"
    if fragment == "RunEvent" or "run" in event or "eventType" in event:
        return "run"
    if "dataset" in event:
        return "dataset"
    return "run"


# --------------------------------------------------------------------------- facets

#: Facet name -> {field: (required, kind)}; kind: "str", "int", "uri", "time", "list",
#: "object", "bool". Only the facets dpt maps are looked into.
_FACET_FIELDS: Final[dict[str, dict[str, tuple[bool, str]]]] = {
    "parent": {"run": (True, "object"), "job": (True, "object"), "root": (False, "object")},
    "errorMessage": {
        "message": (True, "str"),
        "programmingLanguage": (True, "str"),
        "stackTrace": (False, "str"),
    },
    "jobType": {
        "processingType": (True, "str"),
        "integration": (True, "str"),
        "jobType": (False, "str"),
    },
    "processing_engine": {
        "version": (True, "str"),
        "name": (False, "str"),
        "openlineageAdapterVersion": (False, "str"),
    },
    "environmentVariables": {"environmentVariables": (True, "list")},
    "nominalTime": {"nominalStartTime": (True, "time"), "nominalEndTime": (False, "time")},
    "sourceCodeLocation": {
        "type": (True, "str"),
        "url": (True, "uri"),
        "repoUrl": (False, "str"),
        "path": (False, "str"),
        "version": (False, "str"),
        "tag": (False, "str"),
        "branch": (False, "str"),
    },
    "sourceCode": {"language": (True, "str"), "sourceCode": (True, "str")},
    "executionParameters": {"parameters": (False, "list")},
    "version": {"datasetVersion": (True, "str")},
    "outputStatistics": {"rowCount": (False, "int"), "size": (False, "int")},
    "dpt_environment": {
        "fingerprint": (True, "str"),
        "python": (True, "str"),
        "implementation": (True, "str"),
        "platform": (True, "str"),
        "host": (True, "str"),
        "user": (True, "str"),
        "packages": (False, "object"),
        "variables": (False, "object"),
        "redacted": (False, "list"),
        "facets": (False, "object"),
    },
}

_KIND_NAMES: Final = {
    "str": "a string",
    "int": "an integer",
    "uri": "a URI",
    "time": f"a date-time such as {_TIME_EXAMPLE}",
    "list": "an array",
    "object": "an object",
    "bool": "a boolean",
}


def _check_value(value: Any, field: str, kind: str) -> None:
    if kind == "uri":
        _uri(value, field, "a URI")
    elif kind == "time":
        parse_time(value, field)
    elif kind == "str":
        _string(value, field, "text", empty=True)
    elif kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEvent(field, f"must be an integer, not {_kind(value)}")
    elif kind == "list":
        if not isinstance(value, list):
            raise InvalidEvent(field, f"must be an array, not {_kind(value)}")
    elif kind == "object":
        _object(value, field, "see the facet's schema")
    elif kind == "bool" and not isinstance(value, bool):
        raise InvalidEvent(field, f"must be true or false, not {_kind(value)}")


def _check_facet(name: str, facet: Any, field: str) -> None:
    data = _object(facet, field, f"the {name!r} facet")
    for key in ("_producer", "_schemaURL"):
        _uri(
            _required(data, field, key, f"every facet names its {key[1:]} (a URI)"),
            _path(field, key),
            f"the facet's {key[1:]}",
        )
    if "_deleted" in data and data["_deleted"] is not None:
        _check_value(data["_deleted"], _path(field, "_deleted"), "bool")
    if data.get("_deleted") is True:
        return
    for key, (required, kind) in _FACET_FIELDS.get(name, {}).items():
        value = data.get(key)
        if value is None:
            if required:
                raise InvalidEvent(
                    _path(field, key),
                    f"missing: the {name!r} facet needs {key!r} ({_KIND_NAMES[kind]})",
                )
            continue
        _check_value(value, _path(field, key), kind)
    if name == "parent":
        run = data["run"]
        uuid_text(
            _required(run, _path(field, "run"), "runId", "the parent's run id"),
            _path(field, "run.runId"),
        )
        job = data["job"]
        for key in ("namespace", "name"):
            _string(
                _required(job, _path(field, "job"), key, f"the parent job's {key}"),
                _path(field, f"job.{key}"),
                f"the parent job's {key}",
            )
        root = data.get("root")
        if isinstance(root, dict):
            root_run = _object(
                _required(root, _path(field, "root"), "run", "the root run"),
                _path(field, "root.run"),
                "the root run",
            )
            uuid_text(
                _required(root_run, _path(field, "root.run"), "runId", "the root run id"),
                _path(field, "root.run.runId"),
            )
    elif name == "environmentVariables":
        for index, item in enumerate(data["environmentVariables"]):
            where = _path(_path(field, "environmentVariables"), index)
            entry = _object(item, where, "a variable: {name, value}")
            _string(
                _required(entry, where, "name", "the variable's name"),
                _path(where, "name"),
                "a name",
            )
            _string(
                _required(entry, where, "value", "the variable's value"),
                _path(where, "value"),
                "a value",
                empty=True,
            )
    elif name == "executionParameters":
        for index, item in enumerate(data.get("parameters") or ()):
            where = _path(_path(field, "parameters"), index)
            entry = _object(item, where, "a parameter: {key, value}")
            _string(
                _required(entry, where, "key", "the parameter's key"), _path(where, "key"), "a key"
            )
            if entry.get("value") is not None:
                _string(entry["value"], _path(where, "value"), "a value", empty=True)
    elif name == "dpt_environment":
        if not _FINGERPRINT.fullmatch(data["fingerprint"]):
            raise InvalidEvent(
                _path(field, "fingerprint"),
                "must be the environment's fingerprint: 64 lower-case hex digits",
            )
        for key in ("packages", "variables"):
            for item_key, item in (data.get(key) or {}).items():
                _string(item, _path(_path(field, key), item_key), "text", empty=True)
        for index, item in enumerate(data.get("redacted") or ()):
            _string(item, _path(_path(field, "redacted"), index), "a variable name")


def _check_facets(value: Any, field: str) -> None:
    if value is None:
        return
    facets = _object(value, field, "facet name -> facet")
    for name, facet in facets.items():
        _check_facet(name, facet, _path(field, name))


def _check_dataset(value: Any, field: str, facets_key: str | None) -> None:
    data = _object(value, field, "a dataset: {namespace, name, facets}")
    for key, what in (
        (
            "namespace",
            "the dataset's datasource, e.g. 's3://bucket', 'file', 'postgres://host:5432'",
        ),
        ("name", "the dataset's name in its namespace, e.g. a path or 'db.schema.table'"),
    ):
        _string(_required(data, field, key, what), _path(field, key), what)
    _check_facets(data.get("facets"), _path(field, "facets"))
    if facets_key is not None:
        _check_facets(data.get(facets_key), _path(field, facets_key))


def _check_datasets(event: Mapping[str, Any], base: str, key: str, facets_key: str) -> None:
    value = event.get(key)
    if value is None:
        return
    if not isinstance(value, list):
        raise InvalidEvent(_path(base, key), f"must be an array of datasets, not {_kind(value)}")
    for index, item in enumerate(value):
        _check_dataset(item, _path(_path(base, key), index), facets_key)


def _check_job(event: Mapping[str, Any], base: str) -> None:
    job = _object(
        _required(event, base, "job", "the job this event is about: {namespace, name}"),
        _path(base, "job"),
        "{namespace, name, facets}",
    )
    for key, what in (
        ("namespace", "the job's namespace, e.g. the scheduler instance"),
        ("name", "the job's name in its namespace"),
    ):
        _string(_required(job, _path(base, "job"), key, what), _path(base, f"job.{key}"), what)
    _check_facets(job.get("facets"), _path(base, "job.facets"))


def check_event(event: Any, base: str = "") -> str:
    """Validate one event; returns its kind (``"run"``, ``"dataset"``, ``"job"``).

    :raises InvalidEvent: naming the first field that breaks the spec.
    """
    return checked_event(event, base)[0]


def checked_event(event: Any, base: str = "") -> tuple[str, dt.datetime]:
    """:func:`check_event`, and the event's ``eventTime`` as parsed on the way (so the
    mapping does not parse it again)."""
    data = _object(event, base or "$", "an OpenLineage event")
    time = parse_time(
        _required(data, base, "eventTime", f"when it happened, e.g. {_TIME_EXAMPLE}"),
        _path(base, "eventTime"),
    )
    _uri(
        _required(data, base, "producer", "a URI naming the software that sent the event"),
        _path(base, "producer"),
        "the producer",
    )
    _uri(
        _required(
            data,
            base,
            "schemaURL",
            "the spec the event follows, e.g. "
            "'https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent'",
        ),
        _path(base, "schemaURL"),
        "the spec's URL",
    )
    kind = event_kind(data)
    if kind == "dataset":
        _check_dataset(
            _required(data, base, "dataset", "the dataset this static event describes"),
            _path(base, "dataset"),
            None,
        )
        return kind, time
    if kind == "run":
        event_type = data.get("eventType")
        if event_type is not None and event_type not in EVENT_TYPES:
            raise InvalidEvent(
                _path(base, "eventType"),
                f"{str(event_type)[:40]!r} is not an OpenLineage event type: use one of "
                + ", ".join(EVENT_TYPES),
            )
        run = _object(
            _required(data, base, "run", "the run this event is about: {runId, facets}"),
            _path(base, "run"),
            "{runId, facets}",
        )
        uuid_text(
            _required(run, _path(base, "run"), "runId", "the run's UUID"), _path(base, "run.runId")
        )
        _check_facets(run.get("facets"), _path(base, "run.facets"))
    _check_job(data, base)
    _check_datasets(data, base, "inputs", "inputFacets")
    _check_datasets(data, base, "outputs", "outputFacets")
    return kind, time
