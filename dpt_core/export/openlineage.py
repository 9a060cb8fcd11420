"""OpenLineage RunEvents built from the record (and, by the live plugin, from dpt events).

Every invocation becomes a START event and, once it has ended, one COMPLETE,
FAIL or ABORT event (success and skipped -> COMPLETE; failed and crashed ->
FAIL; cancelled -> ABORT). Events are plain dicts in the OpenLineage 2-0-2
JSON shape, so exporting needs no extra package;
:func:`as_client_event` turns one into the OpenLineage Python client's model
(extra ``openlineage``), which the live plugin emits and the tests validate.

* ``run.runId`` is the invocation UUID.
* ``job.namespace`` is ``$OPENLINEAGE_NAMESPACE`` (else ``"dpt"``), ``job.name``
  is ``job`` or ``job.task`` — the names Airflow's OpenLineage provider uses for
  ``dag_id.task_id``, so both views of a task meet in Marquez. The orchestrator
  is in the ``jobType`` job facet (``integration``).
* Run facets: ``parent`` (the parent invocation, with the root one),
  ``errorMessage`` (FAIL/ABORT with an error), ``dpt_environment`` on START:
  a custom facet with the environment (python, platform, host, user,
  fingerprint, packages, variables in clear, the names of redacted ones, facets),
  and ``tags`` (OpenLineage's own TagsRunFacet: ``[{key, value, source}]``) on
  every event of a run with tags.
* The terminal event carries the inputs (versions read) and outputs (versions
  written) as datasets; a dataset's namespace/name follow the OpenLineage
  naming spec (``file`` + absolute path, ``s3://bucket`` + key,
  ``postgres://host:port`` + ``db.schema.table``); its ``version`` facet is
  the content hash (else the version UUID); a version with tags has a ``tags``
  dataset facet (TagsDatasetFacet).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the live plugin never reads the database: SQLAlchemy only for exports
    from sqlalchemy import Engine

from dpt_core import __version__

__all__ = [
    "ENVIRONMENT_FACET",
    "ENVIRONMENT_FACET_SCHEMA_URL",
    "PRODUCER",
    "Dataset",
    "as_client_event",
    "dataset_name",
    "environment_facet",
    "iter_events",
    "job_name",
    "run_event",
    "write_events",
]

PRODUCER = f"https://pypi.org/project/data-product-tracker/{__version__}/"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PARENT_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
)
ERROR_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
JOB_TYPE_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
)
VERSION_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json"
    "#/$defs/DatasetVersionDatasetFacet"
)
TAGS_RUN_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-0-0/TagsRunFacet.json#/$defs/TagsRunFacet"
)
TAGS_DATASET_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-0-0/TagsDatasetFacet.json#/$defs/TagsDatasetFacet"
)
#: The ``source`` of the tags dpt exports (OpenLineage: "INTEGRATION|USER|DBT CORE|SPARK|etc.").
TAGS_SOURCE = "DPT"
#: Name of dpt's custom run facet (OpenLineage asks custom facets for a prefix).
ENVIRONMENT_FACET = "dpt_environment"
#: Where the custom facet's JSON schema is documented (docs/lineage.md, "Environment run facet").
ENVIRONMENT_FACET_SCHEMA_URL = (
    f"https://pypi.org/project/data-product-tracker/{__version__}/#/$defs/DptEnvironmentRunFacet"
)

EVENT_TYPES = {
    "success": "COMPLETE",
    "skipped": "COMPLETE",
    "failed": "FAIL",
    "crashed": "FAIL",
    "cancelled": "ABORT",
}


@dataclass(frozen=True)
class Dataset:
    """One product version as an input or output of a run."""

    uri: str
    version: str | None = None
    content_hash: str | None = None
    tags: Mapping[str, str] | None = None


def job_namespace() -> str:
    return os.environ.get("OPENLINEAGE_NAMESPACE") or "dpt"


def job_name(job: str, task: str | None) -> str:
    return f"{job}.{task}" if task else job


def _iso(value: dt.datetime | str | None) -> str:
    if value is None:
        return dt.datetime.now(dt.UTC).isoformat()
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a dpt URI (see the naming spec)."""
    from dpt_core.uri import uri_to_path

    path = uri_to_path(uri) if uri.startswith("file://") else None
    if path is not None:
        return "file", path
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "file", uri
    authority, slash, tail = rest.partition("/")
    namespace = f"{scheme}://{authority}"
    name = tail if slash else ""
    if scheme in ("postgres", "postgresql", "mysql", "mariadb", "redshift", "trino"):
        name = name.replace("/", ".")
    return namespace, name or "/"


def _facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


def _without_nulls(value: Any) -> Any:
    """``value`` without null members (OpenLineage serialisers drop them anyway)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def environment_facet(env: dict[str, Any]) -> dict[str, Any]:
    """The ``dpt_environment`` run facet from an environment dict (see ``dpt env show --json``)."""
    redacted = sorted(set(env.get("redacted") or ()))
    variables = {k: v for k, v in sorted((env.get("variables") or {}).items()) if k not in redacted}
    return _facet(
        ENVIRONMENT_FACET_SCHEMA_URL,
        fingerprint=env["fingerprint"],
        python=env["python"],
        implementation=env["implementation"],
        platform=env["platform"],
        host=env["host"],
        user=env["user"],
        packages=dict(sorted((env.get("packages") or {}).items())),
        variables=variables,
        redacted=redacted,
        facets=_without_nulls(env.get("facets") or {}),
    )


def tags_facet(schema_url: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """OpenLineage's ``tags`` facet (run or dataset) of ``{key: value}``, sorted by key."""
    return _facet(
        schema_url,
        tags=[{"key": k, "value": v, "source": TAGS_SOURCE} for k, v in sorted(tags.items())],
    )


def _datasets(items: Sequence[Dataset], kind: str) -> list[dict[str, Any]]:
    out = []
    for item in sorted(items, key=lambda d: (d.uri, d.version or "")):
        namespace, name = dataset_name(item.uri)
        data: dict[str, Any] = {"namespace": namespace, "name": name, "facets": {}, kind: {}}
        label = item.content_hash or item.version
        if label:
            data["facets"]["version"] = _facet(VERSION_SCHEMA_URL, datasetVersion=label)
        if item.tags:
            data["facets"]["tags"] = tags_facet(TAGS_DATASET_SCHEMA_URL, item.tags)
        out.append(data)
    return out


@dataclass(frozen=True)
class RunRef:
    uuid: str
    job: str
    task: str | None = None


def run_event(
    event_type: str,
    *,
    time: dt.datetime | str | None,
    run: RunRef,
    orchestrator: str,
    parent: RunRef | None = None,
    root: RunRef | None = None,
    environment: dict[str, Any] | None = None,
    error: str | None = None,
    inputs: Sequence[Dataset] = (),
    outputs: Sequence[Dataset] = (),
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One OpenLineage RunEvent as a JSON-able dict (no None values)."""
    namespace = job_namespace()
    run_facets: dict[str, Any] = {}
    if parent is not None:
        parent_facet = _facet(
            PARENT_SCHEMA_URL,
            run={"runId": parent.uuid},
            job={"namespace": namespace, "name": job_name(parent.job, parent.task)},
        )
        if root is not None:
            parent_facet["root"] = {
                "run": {"runId": root.uuid},
                "job": {"namespace": namespace, "name": job_name(root.job, root.task)},
            }
        run_facets["parent"] = parent_facet
    if environment is not None:
        run_facets[ENVIRONMENT_FACET] = environment_facet(environment)
    if error:
        run_facets["errorMessage"] = _facet(
            ERROR_SCHEMA_URL, message=error, programmingLanguage="python"
        )
    if tags:
        run_facets["tags"] = tags_facet(TAGS_RUN_SCHEMA_URL, tags)
    return {
        "eventType": event_type,
        "eventTime": _iso(time),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": {"runId": run.uuid, "facets": run_facets},
        "job": {
            "namespace": namespace,
            "name": job_name(run.job, run.task),
            "facets": {
                "jobType": _facet(
                    JOB_TYPE_SCHEMA_URL,
                    processingType="BATCH",
                    integration=orchestrator.upper(),
                    jobType="TASK" if run.task else "JOB",
                )
            },
        },
        "inputs": _datasets(inputs, "inputFacets"),
        "outputs": _datasets(outputs, "outputFacets"),
    }


# --------------------------------------------------------------------------- from the database


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ref(row: Any) -> RunRef:
    return RunRef(row.uuid, row.job, row.task)


def _dataset(version: Any, tags: Mapping[str, Mapping[str, str]] | None = None) -> Dataset:
    return Dataset(version.uri, version.uuid, version.content_hash, (tags or {}).get(version.uuid))


def count_runs(engine: Engine, since: dt.datetime | None = None) -> int:
    """How many invocations :func:`iter_events` exports (each gives one or two events)."""
    from dpt_core.store.export_queries import count_runs as _count_runs

    return _count_runs(engine, since)


def iter_events(
    engine: Engine,
    since: dt.datetime | None = None,
    *,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """RunEvents of every invocation started at or after ``since``, oldest first.

    The records are read through :mod:`dpt_core.store.export_queries`, a few queries
    per batch of ``batch`` runs.

    :param progress: called with the number of invocations done after each batch.
    """
    from dpt_core.store.export_queries import RunReader, run_ids
    from dpt_core.store.queries import tags_for_export

    reader = RunReader(engine)
    done = 0
    for part in _chunks(run_ids(engine, since), batch):
        found = reader.read(part)
        run_tags, version_tags = tags_for_export(
            engine,
            part,
            [
                v.uuid
                for group in (found.inputs, found.outputs)
                for vs in group.values()
                for v in vs
            ],
        )
        events: list[dict[str, Any]] = []
        for run_id in part:
            row = found.runs[run_id]
            parent = reader.parent(row)
            root = reader.root(parent.id) if parent is not None else None
            common: dict[str, Any] = {
                "run": _ref(row),
                "orchestrator": row.orchestrator,
                "parent": _ref(parent) if parent is not None else None,
                "root": _ref(root) if root is not None else None,
                "tags": run_tags.get(run_id),
            }
            events.append(
                run_event(
                    "START",
                    time=row.started_at,
                    environment=reader.environment(row.environment_id),
                    **common,
                )
            )
            if row.status in EVENT_TYPES:
                events.append(
                    run_event(
                        EVENT_TYPES[row.status],
                        time=row.ended_at or row.started_at,
                        error=row.error,
                        inputs=[_dataset(v, version_tags) for v in found.inputs.get(run_id, [])],
                        outputs=[_dataset(v, version_tags) for v in found.outputs.get(run_id, [])],
                        **common,
                    )
                )
        yield from events
        done += len(part)
        if progress is not None:
            progress(done)


def write_events(
    engine: Engine,
    out: IO[str],
    since: dt.datetime | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write :func:`iter_events` to ``out`` as JSON lines; returns the number of events."""
    count = 0
    for event in iter_events(engine, since, progress=progress):
        out.write(json.dumps(event, ensure_ascii=False, sort_keys=True, default=str))
        out.write("\n")
        count += 1
    return count


# --------------------------------------------------------------------------- client models


_environment_facet_class: Any = None


def _environment_facet_type() -> Any:
    """The custom facet as an attrs class of the OpenLineage client (built once, lazily)."""
    global _environment_facet_class
    if _environment_facet_class is None:
        import attr
        from openlineage.client.generated.base import RunFacet

        @attr.define
        class DptEnvironmentRunFacet(RunFacet):
            """dpt's record of where a run ran."""

            fingerprint: str
            python: str
            implementation: str
            platform: str
            host: str
            user: str
            packages: dict[str, str] = attr.field(factory=dict)
            variables: dict[str, str] = attr.field(factory=dict)
            redacted: list[str] = attr.field(factory=list)
            facets: dict[str, Any] = attr.field(factory=dict)

            @staticmethod
            def _get_schema() -> str:
                return ENVIRONMENT_FACET_SCHEMA_URL

        _environment_facet_class = DptEnvironmentRunFacet
    return _environment_facet_class


def as_client_event(data: dict[str, Any]) -> Any:
    """``data`` (from :func:`run_event`) as an ``openlineage.client.event_v2.RunEvent``.

    Builds it through the client's attrs models, so their validators (UUID run ids,
    ISO times, known event types) check it.

    :raises ImportError: openlineage-python is not installed.
    """
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        job_type_job,
        parent_run,
        tags_dataset,
        tags_run,
    )

    def producer(facet: dict[str, Any]) -> str:
        return str(facet.get("_producer") or PRODUCER)

    run_facets: dict[str, Any] = {}
    for name, facet in data["run"].get("facets", {}).items():
        if name == "parent":
            root = None
            if "root" in facet:
                root = parent_run.Root(
                    run=parent_run.RootRun(runId=facet["root"]["run"]["runId"]),
                    job=parent_run.RootJob(**facet["root"]["job"]),
                )
            run_facets[name] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=facet["run"]["runId"]),
                job=parent_run.Job(**facet["job"]),
                root=root,
                producer=producer(facet),
            )
        elif name == "errorMessage":
            run_facets[name] = error_message_run.ErrorMessageRunFacet(
                message=facet["message"],
                programmingLanguage=facet["programmingLanguage"],
                stackTrace=facet.get("stackTrace"),
                producer=producer(facet),
            )
        elif name == ENVIRONMENT_FACET:
            fields = {k: v for k, v in facet.items() if not k.startswith("_")}
            run_facets[name] = _environment_facet_type()(**fields, producer=producer(facet))
        elif name == "tags":
            run_facets[name] = tags_run.TagsRunFacet(
                tags=[tags_run.TagsRunFacetFields(**t) for t in facet["tags"]],
                producer=producer(facet),
            )
        else:  # pragma: no cover - run_event makes no other facets
            raise ValueError(f"unknown run facet {name!r}")
    job_facets: dict[str, Any] = {}
    for name, facet in data["job"].get("facets", {}).items():
        fields = {k: v for k, v in facet.items() if not k.startswith("_")}
        job_facets[name] = job_type_job.JobTypeJobFacet(**fields, producer=producer(facet))

    def dataset_facets(item: dict[str, Any]) -> dict[str, Any]:
        facets: dict[str, Any] = {}
        for name, facet in item.get("facets", {}).items():
            if name == "tags":
                facets[name] = tags_dataset.TagsDatasetFacet(
                    tags=[tags_dataset.TagsDatasetFacetFields(**t) for t in facet["tags"]],
                    producer=producer(facet),
                )
                continue
            facets[name] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=facet["datasetVersion"], producer=producer(facet)
            )
        return facets

    return RunEvent(
        eventType=RunState(data["eventType"]),
        eventTime=data["eventTime"],
        producer=data.get("producer", PRODUCER),
        run=Run(runId=data["run"]["runId"], facets=run_facets),
        job=Job(namespace=data["job"]["namespace"], name=data["job"]["name"], facets=job_facets),
        inputs=[
            InputDataset(namespace=i["namespace"], name=i["name"], facets=dataset_facets(i))
            for i in data.get("inputs", [])
        ],
        outputs=[
            OutputDataset(namespace=o["namespace"], name=o["name"], facets=dataset_facets(o))
            for o in data.get("outputs", [])
        ],
    )
