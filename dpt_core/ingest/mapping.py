"""OpenLineage events -> dpt records: the inverse of ``dpt_core.export.openlineage``.

:func:`parse_events` validates a request (one event or a list) and maps every
event to what dpt records, before anything is stored; :func:`ingest` records the
mapped events in one ``tracker.batch()``.

One RunEvent becomes, in this order: a placeholder start of its parent run (when it
names one), a start of its own run, the versions it read, the versions it wrote,
and, for COMPLETE/FAIL/ABORT, its end. Every id is derived from the event, so the
same event twice stores once, and the store merges what each event adds (see
``Recorder._start``, ``_same_observations``): the events of one run give the same
rows in any order.

See docs/openlineage-mapping.md for the table of what maps to what.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import field as _field  # (Dataset and OpenLineageRun have a 'field')
from typing import Any, Final

from dpt_core.errors import InvalidTarget
from dpt_core.events import (
    EnvironmentSnapshot,
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductsRead,
    ProductsWritten,
    clean_text,
)
from dpt_core.ingest.naming import product_uri
from dpt_core.ingest.spec import checked_event
from dpt_core.tracker import DPT_NAMESPACE, Tracker, invocation_uuid, jsonable

__all__ = [
    "IngestResult",
    "OpenLineageRun",
    "ParsedEvent",
    "StaticEvent",
    "ingest",
    "parse_events",
]

#: dpt's own export names itself with this prefix (``dpt_core.export.openlineage.PRODUCER``).
DPT_PRODUCER_PREFIX: Final = "https://pypi.org/project/data-product-tracker/"
ENVIRONMENT_FACET: Final = "dpt_environment"
#: The orchestrator of a run whose events say nothing about one.
UNKNOWN_ORCHESTRATOR: Final = "openlineage"
#: The orchestrator of a placeholder run (a parent named before its own events came).
PLACEHOLDER: Final = "unknown"
#: Parameter keys ingest adds (flat, so what two events add merges in any order).
RUN_ID_KEY: Final = "openlineage/run_id"
JOB_NAMESPACE_KEY: Final = "openlineage/job_namespace"
NOMINAL_START_KEY: Final = "openlineage/nominal_start_time"
NOMINAL_END_KEY: Final = "openlineage/nominal_end_time"

STATUSES: Final = {"COMPLETE": "success", "FAIL": "failed", "ABORT": "cancelled"}
_HASH: Final = re.compile(r"^(xxh3_128|blake3|sha256):[0-9a-f]+$")
_UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Longest version label kept as the version's content identity (the column's size).
MAX_LABEL: Final = 160


@functools.lru_cache(maxsize=4096)  # an input's version repeats across runs
def _version_uuid(*parts: object) -> str:
    return str(uuidlib.uuid5(DPT_NAMESPACE, "\x1f".join(("openlineage", *map(str, parts)))))


@dataclass(frozen=True)
class Dataset:
    """One dataset of a run event, as the product version dpt records."""

    field: str
    uri: str
    version_uuid: str
    content_hash: str | None
    size: int | None
    metadata: dict[str, Any]
    tags: dict[str, str] = _field(default_factory=dict)


@dataclass(frozen=True)
class RunRef:
    """A run named by another run's event (its parent), recorded as a placeholder."""

    uuid: str
    job: str
    task: str | None
    orchestrator: str
    external_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenLineageRun:
    """A RunEvent, mapped (not yet redacted: that needs the tracker's settings)."""

    field: str
    event_type: str
    time: dt.datetime
    uuid: str
    job: str
    task: str | None
    orchestrator: str
    external_id: str | None
    parent: RunRef | None
    parameters: dict[str, Any]
    variables: dict[str, str]
    code_version: str | None
    error: str | None
    environment: dict[str, Any] | None
    inputs: tuple[Dataset, ...]
    outputs: tuple[Dataset, ...]
    warnings: tuple[str, ...] = ()
    tags: dict[str, str] = _field(default_factory=dict)


@dataclass(frozen=True)
class StaticEvent:
    """A DatasetEvent or JobEvent: valid, but no run, so nothing dpt records."""

    field: str
    kind: str


ParsedEvent = OpenLineageRun | StaticEvent


@dataclass
class IngestResult:
    """What :func:`ingest` did.

    :ivar outcome: ``"recorded"`` (in the database), ``"spooled"`` (kept in the spool,
        replayed once the database is back) or ``"disabled"`` (``DPT_DISABLED=1``).
    """

    outcome: str
    events: int = 0
    runs: int = 0
    inputs: int = 0
    outputs: int = 0
    static: int = 0
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def parse_events(doc: Any) -> list[ParsedEvent]:
    """Validate ``doc`` (one event as parsed JSON, or a list of them) and map it.

    Everything is checked before anything is recorded: a request with one bad event
    stores nothing.

    :raises InvalidEvent: naming the first field that breaks the OpenLineage spec
        (``run.runId``; ``[2].run.runId`` inside a list).
    """
    if isinstance(doc, list):
        return [parse_event(item, f"[{index}]") for index, item in enumerate(doc)]
    return [parse_event(doc, "")]


def parse_event(event: Any, base: str = "") -> ParsedEvent:
    """Validate and map one event (``base``: its path in the request, for messages)."""
    kind, time = checked_event(event, base)
    if kind != "run":
        return StaticEvent(base or "$", kind)
    return _map_run(event, base, time)


def _at(base: str, rest: str) -> str:
    return f"{base}.{rest}" if base else rest


def _facets(value: Any) -> dict[str, dict[str, Any]]:
    """Facets that are not deletion markers."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, dict) and v.get("_deleted") is not True}


def _strip(facet: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facet.items() if k not in ("_producer", "_schemaURL")}


def _tags(facet: Mapping[str, Any] | None, where: str, warnings: list[str]) -> dict[str, str]:
    """The ``tags`` facet (OpenLineage's TagsRunFacet / TagsDatasetFacet:
    ``[{key, value, source, field}]``) as dpt tags. A tag dpt cannot keep (a key outside
    dpt's rule, a value too long, a dataset tag of one ``field``) is left out with a
    warning; the first value of a key given twice wins, as when recording."""
    from dpt_core.tags import InvalidTag, check_key, tag_text

    if facet is None:
        return {}
    items = facet.get("tags")
    if not isinstance(items, list):
        if items is not None:
            warnings.append(f"{where}.tags: not an array of {{key, value}}; no tag recorded")
        return {}
    found: dict[str, str] = {}
    for index, item in enumerate(items):
        at = f"{where}.tags[{index}]"
        if not isinstance(item, dict) or "key" not in item:
            warnings.append(f"{at}: not a {{key, value}} tag; left out")
            continue
        if item.get("field"):
            warnings.append(f"{at}: a tag of field {item['field']!r}, not of the dataset; left out")
            continue
        try:
            key = check_key(item["key"])
            value = tag_text(key, item.get("value"))
        except InvalidTag as exc:
            warnings.append(f"{at}: {exc}; left out")
            continue
        found.setdefault(key, value)
    return found


def _split_job(name: str, job_type: str | None, parent_job: str | None) -> tuple[str, str | None]:
    """``(job, task)`` of an OpenLineage job name: dpt's export names a task's job
    ``job.task`` and says ``jobType: TASK``; the parent's job name, when it is a
    prefix, tells where the task begins, else the task is after the last dot."""
    if job_type != "TASK":
        return name, None
    if parent_job and name.startswith(parent_job + ".") and len(name) > len(parent_job) + 1:
        return parent_job, name[len(parent_job) + 1 :]
    job, dot, task = name.rpartition(".")
    if dot and job and task:
        return job, task
    return name, None


def _airflow_task(facet: Mapping[str, Any]) -> tuple[str, str, str, int, int] | None:
    """``(dag_id, run_id, task_id, map_index, try_number)`` from the provider's
    ``airflow`` run facet, or None when it lacks one of them."""
    dag, dag_run = facet.get("dag") or {}, facet.get("dagRun") or {}
    task, ti = facet.get("task") or {}, facet.get("taskInstance") or {}
    if not all(isinstance(x, dict) for x in (dag, dag_run, task, ti)):
        return None
    dag_id = dag.get("dag_id") or dag_run.get("dag_id")
    run_id, task_id = dag_run.get("run_id"), task.get("task_id")
    try_number, map_index = ti.get("try_number"), ti.get("map_index")
    if map_index is None:
        map_index = -1
    if not (isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str)):
        return None
    if not (isinstance(try_number, int) and isinstance(map_index, int)):
        return None
    return dag_id, run_id, task_id, map_index, try_number


def _airflow_dag_run(facet: Mapping[str, Any]) -> tuple[str, str] | None:
    dag, dag_run = facet.get("dag") or {}, facet.get("dagRun") or {}
    if not (isinstance(dag, dict) and isinstance(dag_run, dict)):
        return None
    dag_id = dag_run.get("dag_id") or dag.get("dag_id")
    run_id = dag_run.get("run_id")
    if isinstance(dag_id, str) and isinstance(run_id, str):
        return dag_id, run_id
    return None


def _dataset(
    item: Mapping[str, Any],
    where: str,
    *,
    output: bool,
    run_uuid: str,
    from_dpt: bool,
    warnings: list[str],
) -> Dataset | None:
    namespace, name = item["namespace"], item["name"]
    try:
        uri = product_uri(namespace, name)
    except InvalidTarget as exc:
        warnings.append(f"{where}: {exc}; this dataset is not recorded, the rest of the event is")
        return None
    facets = _facets(item.get("facets"))
    io_facets = _facets(item.get("outputFacets" if output else "inputFacets"))
    version = facets.pop("version", None)
    label = version["datasetVersion"] if version is not None else None
    tags_facet = facets.pop("tags", None)
    # (what a run read is not labelled by it: only written versions take tags)
    tags = _tags(tags_facet, f"{where}.facets.tags", warnings) if output else {}
    metadata: dict[str, Any] = {}
    if facets:
        metadata["openlineage/facets"] = {k: _strip(v) for k, v in sorted(facets.items())}
    if io_facets:
        key = "openlineage/output_facets" if output else "openlineage/input_facets"
        metadata[key] = {k: _strip(v) for k, v in sorted(io_facets.items())}
    content_hash: str | None = None
    if label is None:
        version_uuid = _version_uuid("output" if output else "input", run_uuid, uri)
    elif from_dpt and _UUID.match(label):
        # dpt's export names a version it could not hash by its uuid: the same version.
        version_uuid = label
    else:
        if _HASH.match(label) or len(label) <= MAX_LABEL:
            content_hash = label
        if not _HASH.match(label):
            metadata["openlineage/version"] = label
        version_uuid = (
            _version_uuid("output", run_uuid, uri, label)
            if output
            else _version_uuid("input", uri, label)
        )
    statistics = io_facets.get("outputStatistics") if output else None
    size = statistics.get("size") if statistics else None
    return Dataset(where, uri, version_uuid, content_hash, size, metadata, tags)


def _map_run(event: Mapping[str, Any], base: str, time: dt.datetime) -> OpenLineageRun:
    """A RunEvent that :func:`~dpt_core.ingest.spec.checked_event` passed (``time``: its
    ``eventTime`` as parsed there)."""
    event_type = event.get("eventType") or "OTHER"
    producer: str = event["producer"]
    from_dpt = producer.startswith(DPT_PRODUCER_PREFIX)
    run, job = event["run"], event["job"]
    run_id = run["runId"].lower()
    run_facets = _facets(run.get("facets"))
    job_facets = _facets(job.get("facets"))
    warnings: list[str] = []

    job_type = job_facets.get("jobType", {})
    engine = run_facets.get("processing_engine", {})
    orchestrator = (
        job_type.get("integration") or engine.get("name") or UNKNOWN_ORCHESTRATOR
    ).lower()[:64]
    parameters: dict[str, Any] = {JOB_NAMESPACE_KEY: job["namespace"]}

    parent: RunRef | None = None
    parent_facet = run_facets.get("parent")
    parent_job = parent_facet["job"]["name"] if parent_facet else None
    uuid, external_id = run_id, None
    job_name, task = _split_job(job["name"], job_type.get("jobType"), parent_job)
    if parent_facet is not None:
        parent_uuid = parent_facet["run"]["runId"].lower()
        parent_name, parent_task = _split_job(parent_job or "", None, None)
        parent = RunRef(parent_uuid, parent_name, parent_task, PLACEHOLDER)

    # Airflow's OpenLineage provider: the same ids as dpt's own Airflow listener (one
    # run per task try, whichever reports it first), the provider's run id kept.
    airflow = run_facets.get("airflow")
    airflow_dag_run = run_facets.get("airflowDagRun")
    if airflow is not None:
        key = _airflow_task(airflow)
        if key is None:
            warnings.append(
                f"{_at(base, 'run.facets.airflow')}: lacks dag_id, run_id, task_id or "
                "try_number; recorded under the event's own run id"
            )
        else:
            dag_id, dag_run_id, task_id, map_index, try_number = key
            uuid = invocation_uuid(
                "airflow", "task", dag_id, dag_run_id, task_id, map_index, try_number
            )
            job_name, task, orchestrator = dag_id, task_id, "airflow"
            parameters[RUN_ID_KEY] = run_id
            parent = RunRef(
                invocation_uuid("airflow", "dag_run", dag_id, dag_run_id),
                dag_id,
                None,
                "airflow",
                external_id=dag_run_id,
                parameters=(
                    {RUN_ID_KEY: parent_facet["run"]["runId"].lower()} if parent_facet else {}
                ),
            )
    elif airflow_dag_run is not None:
        key2 = _airflow_dag_run(airflow_dag_run)
        if key2 is None:
            warnings.append(
                f"{_at(base, 'run.facets.airflowDagRun')}: lacks dag_id or run_id; recorded "
                "under the event's own run id"
            )
        else:
            dag_id, dag_run_id = key2
            uuid = invocation_uuid("airflow", "dag_run", dag_id, dag_run_id)
            job_name, task, orchestrator = dag_id, None, "airflow"
            external_id = dag_run_id
            parameters[RUN_ID_KEY] = run_id

    nominal = run_facets.get("nominalTime")
    if nominal is not None:
        parameters[NOMINAL_START_KEY] = nominal["nominalStartTime"]
        if nominal.get("nominalEndTime"):
            parameters[NOMINAL_END_KEY] = nominal["nominalEndTime"]
    execution = run_facets.get("executionParameters")
    for item in (execution or {}).get("parameters") or ():
        parameters.setdefault(item["key"], item.get("value"))

    variables = {
        item["name"]: item["value"]
        for item in (run_facets.get("environmentVariables") or {}).get("environmentVariables", ())
    }
    code_version: str | None = None
    location = job_facets.get("sourceCodeLocation")
    source = job_facets.get("sourceCode")
    if location is not None and location.get("version"):
        code_version = str(location["version"])[:255]
    elif source is not None:
        digest = hashlib.sha256(source["sourceCode"].encode("utf-8", "surrogatepass")).hexdigest()
        code_version = f"sha256:{digest}"
    error_facet = run_facets.get("errorMessage")
    error = error_facet["message"] if error_facet is not None else None

    def datasets(key: str, output: bool) -> tuple[Dataset, ...]:
        found: dict[tuple[str, str], Dataset] = {}
        for index, item in enumerate(event.get(key) or ()):
            where = _at(base, f"{key}[{index}]")
            has_version = "version" in _facets(item.get("facets"))
            if output and event_type in ("START", "FAIL", "ABORT") and not has_version:
                # declared, not observed: a START names what the run will write, a
                # failed run's declared outputs were not made (a version facet says one was)
                continue
            made = _dataset(
                item, where, output=output, run_uuid=uuid, from_dpt=from_dpt, warnings=warnings
            )
            if made is not None:
                found.setdefault((made.uri, made.version_uuid), made)
        return tuple(found.values())

    return OpenLineageRun(
        field=base or "$",
        event_type=event_type,
        time=time,
        uuid=uuid,
        job=job_name,
        task=task,
        orchestrator=orchestrator,
        external_id=external_id,
        parent=parent,
        parameters=parameters,
        variables=variables,
        code_version=code_version,
        error=error,
        environment=run_facets.get(ENVIRONMENT_FACET),
        inputs=datasets("inputs", False),
        outputs=datasets("outputs", True),
        tags=_tags(run_facets.get("tags"), _at(base, "run.facets.tags"), warnings),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- recording


def _environment(facet: Mapping[str, Any], settings: Any) -> EnvironmentSnapshot:
    """The environment dpt's ``dpt_environment`` facet describes, redacted here again
    (a sender's variables are not trusted to be). Its fingerprint is kept when nothing
    changed, else computed from what is stored."""
    from dpt_core.environment import fingerprint, redact

    redacted_names = sorted({clean_text(n) for n in facet.get("redacted") or ()})
    declared = facet["fingerprint"]
    variables: list[tuple[str, str | None, str | None]] = []
    changed = False
    for key, value in sorted((facet.get("variables") or {}).items()):
        name = clean_text(key)
        if name in redacted_names:
            continue
        text = clean_text(value)
        clear, digest = redact(name, text, settings)
        changed = changed or digest is not None or clear != value
        variables.append((name, clear, digest))
    # The export names redacted variables without their keyed digests: stored as a
    # digest no other environment shares, so env diff never calls them unchanged.
    variables.extend((name, None, f"unknown:{declared[:32]}") for name in redacted_names)
    variables.sort()
    fields: dict[str, Any] = {
        "python_version": clean_text(facet["python"]),
        "implementation": clean_text(facet["implementation"]),
        "platform": clean_text(facet["platform"]),
        "hostname": clean_text(facet["host"]),
        "user": clean_text(facet["user"]),
        "distributions": tuple(
            sorted((clean_text(k), clean_text(v)) for k, v in (facet.get("packages") or {}).items())
        ),
        "variables": tuple(variables),
        "facets": jsonable(facet.get("facets") or {}),
    }
    return EnvironmentSnapshot(fingerprint=fingerprint(**fields) if changed else declared, **fields)


def _observations(datasets: Sequence[Dataset], settings: Any) -> tuple[ProductObservation, ...]:
    from dpt_core.environment import redact_parameters

    return tuple(
        ProductObservation(
            uri=d.uri,
            version_uuid=d.version_uuid,
            content_hash=d.content_hash,
            size=d.size,
            metadata=redact_parameters(jsonable(d.metadata), settings) if d.metadata else {},
            tags=dict(d.tags),
        )
        for d in datasets
    )


def _placeholder(parent: RunRef, time: dt.datetime, settings: Any) -> InvocationStarted:
    """The start of a run named as a parent: what the child's event knows of it."""
    from dpt_core.environment import redact_parameters

    return InvocationStarted(
        uuid=parent.uuid,
        orchestrator=parent.orchestrator,
        job=clean_text(parent.job) or PLACEHOLDER,
        task=clean_text(parent.task) if parent.task else None,
        external_id=clean_text(parent.external_id) if parent.external_id else None,
        started_at=time,
        parameters=redact_parameters(jsonable(parent.parameters), settings),
    )


def to_dpt_events(run: OpenLineageRun, settings: Any, *, parent: bool = True) -> list[Event]:
    """The dpt events that record ``run`` (secrets redacted with ``settings``).

    :param parent: start with the placeholder start of its parent (False when the
        caller records that once for many runs).
    """
    from dpt_core.environment import redact, redact_parameters, redact_text

    events: list[Event] = []
    if parent and run.parent is not None:
        events.append(_placeholder(run.parent, run.time, settings))
    environment = _environment(run.environment, settings) if run.environment is not None else None
    variables: dict[str, str] = {}
    for key, value in sorted(run.variables.items()):
        clear, digest = redact(clean_text(key), clean_text(value), settings)
        variables[clean_text(key)] = clear if clear is not None else f"<redacted:{digest}>"
    error = redact_text(clean_text(run.error)) if run.error is not None else None
    events.append(
        InvocationStarted(
            uuid=run.uuid,
            orchestrator=run.orchestrator,
            job=clean_text(run.job),
            task=clean_text(run.task) if run.task is not None else None,
            external_id=clean_text(run.external_id) if run.external_id else None,
            parent_uuid=run.parent.uuid if run.parent is not None else None,
            started_at=run.time,
            user=environment.user if environment else None,
            host=environment.hostname if environment else None,
            parameters=redact_parameters(jsonable(run.parameters), settings),
            code_version=run.code_version,
            environment=environment,
            variables=variables,
            tags=dict(run.tags),
        )
    )
    if run.inputs:
        events.append(ProductsRead(run.uuid, _observations(run.inputs, settings)))
    if run.outputs:
        events.append(ProductsWritten(run.uuid, _observations(run.outputs, settings)))
    status = STATUSES.get(run.event_type)
    if status is not None:
        # Only if still running: an end the run's own record has (dpt's listener said
        # 'skipped', a sweep said 'crashed') is never overwritten by a later report.
        events.append(InvocationFinished(run.uuid, status, run.time, error, only_if_running=True))
    return events


_HOOKS: Final = {
    InvocationStarted: "dpt_invocation_started",
    InvocationFinished: "dpt_invocation_finished",
    ProductsRead: "dpt_products_read",
    ProductsWritten: "dpt_products_written",
}


def ingest(events: Iterable[ParsedEvent], tracker: Tracker | None = None) -> IngestResult:
    """Record ``events`` (from :func:`parse_events`) in one batch.

    Idempotent and order-free: recording an event again adds nothing, and the events
    of a run give the same rows in any order (a late START never reopens a finished
    run; RUNNING and OTHER add inputs and outputs and never change an end).
    """
    from dpt_core.store.plugin import last_outcome
    from dpt_core.tracker import get_tracker

    tracker = tracker or get_tracker()
    parsed = list(events)
    result = IngestResult(outcome="recorded", events=len(parsed))
    runs = [e for e in parsed if isinstance(e, OpenLineageRun)]
    result.static = len(parsed) - len(runs)
    result.runs = len({r.uuid for r in runs})
    result.inputs = sum(len(r.inputs) for r in runs)
    result.outputs = sum(len(r.outputs) for r in runs)
    for run in runs:
        result.warnings.extend(run.warnings)
    if not tracker.enabled:
        result.outcome = "disabled"
        return result
    if not runs:
        return result
    settings = tracker.settings
    # One placeholder start per parent (its earliest time), before every child's events:
    # the same rows as one per event (a start only adds what a run lacks), fewer writes.
    parents: dict[str, tuple[RunRef, dt.datetime]] = {}
    for run in runs:
        if run.parent is not None:
            known = parents.get(run.parent.uuid)
            if known is None or run.time < known[1]:
                parents[run.parent.uuid] = (run.parent, run.time)
    records: list[Event] = [_placeholder(p, t, settings) for p, t in parents.values()]
    records.extend(e for run in runs for e in to_dpt_events(run, settings, parent=False))
    with tracker.batch():
        for record in records:
            tracker._emit(_HOOKS[type(record)], record)
    result.outcome = last_outcome() or "recorded"
    return result
