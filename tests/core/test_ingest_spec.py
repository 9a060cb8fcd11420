"""OpenLineage ingest: the naming-spec table and the field-named validation errors."""

from __future__ import annotations

import copy
import datetime as dt
import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dpt_core
from dpt_core.errors import DptError, InvalidTarget
from dpt_core.export.openlineage import dataset_name, run_event
from dpt_core.ingest import (
    NAMING_TABLE,
    InvalidEvent,
    dataset_identifier,
    ingest,
    parse_events,
    product_uri,
)
from dpt_core.ingest.naming import SQL_SCHEMES

PRODUCER = "https://github.com/example/producer/tree/v1"
FACET = {"_producer": PRODUCER, "_schemaURL": "https://openlineage.io/spec/facets/x.json"}


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("system", "namespace", "name", "uri"), NAMING_TABLE, ids=[row[0] for row in NAMING_TABLE]
)
def test_the_naming_spec_both_ways(system, namespace, name, uri):
    assert product_uri(namespace, name) == uri
    assert dataset_identifier(uri) == (namespace, name)
    # what dpt's own export says of the product names the same product again
    assert product_uri(*dataset_name(uri)) == uri


@pytest.mark.parametrize(
    ("namespace", "name", "uri"),
    [
        ("file", "/data/../data/./x.csv", "file:///data/x.csv"),
        ("file", "//data//x.csv", "file:///data/x.csv"),
        ("file", "/a b/100%/é.txt", "file:///a%20b/100%25/%C3%A9.txt"),
        ("file", "/q?/h#", "file:///q%3F/h%23"),
        ("file://localhost", "/srv/x", "file:///srv/x"),
        ("file://LOCALHOST", "/srv/x", "file:///srv/x"),
        (f"file://{socket.gethostname()}", "/srv/x", "file:///srv/x"),
        ("file://Incoming", "team_a.csv", "file://incoming/team_a.csv"),
        ("file://incoming", "/a/../team_a.csv", "file://incoming/team_a.csv"),
        ("s3://bucket", "/key", "s3://bucket/key"),
        ("s3://bucket/", "key", "s3://bucket/key"),
        ("S3://bucket", "key", "s3://bucket/key"),
        ("s3://bucket", "/", "s3://bucket"),
        ("postgres://u:secret@db:5432", "d.s.t", "postgres://u@db:5432/d/s.t"),
        ("postgres://db:5432", "single", "postgres://db:5432/single"),
        ("mysql://db:3306", "d/t", "mysql://db:3306/d/t"),
        (
            "my-datasource-namespace",
            "instance.schema.table",
            "my-datasource-namespace://instance.schema.table",
        ),
    ],
)
def test_naming_edge_cases(namespace, name, uri):
    assert product_uri(namespace, name) == uri


@pytest.mark.parametrize(
    ("namespace", "name", "why"),
    [
        ("file", "relative/x.csv", "absolute path"),
        ("file", "C:\\data\\x.csv", "absolute path"),
        ("not a scheme!", "x", "neither"),
        ("1s3://bucket", "x", "not a URI scheme"),
        ("s3://bucket", "a\0b", "NUL"),
        ("", "x", "non-empty"),
    ],
)
def test_datasets_that_name_no_product(namespace, name, why):
    with pytest.raises(InvalidTarget, match=why):
        product_uri(namespace, name)


@given(
    scheme=st.sampled_from(["s3", "gs", "hdfs", "kafka", "snowflake", *sorted(SQL_SCHEMES)]),
    authority=st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}(:[0-9]{2,5})?", fullmatch=True),
    parts=st.lists(st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True), min_size=1, max_size=4),
)
def test_dataset_names_round_trip_through_dpt_uris(scheme, authority, parts):
    separator = "." if scheme in SQL_SCHEMES | {"snowflake"} else "/"
    namespace, name = f"{scheme}://{authority}", separator.join(parts)
    uri = product_uri(namespace, name)
    assert dpt_core.uri.normalize_uri(uri) == uri  # a normalised product URI
    assert product_uri(*dataset_identifier(uri)) == uri
    assert product_uri(*dataset_name(uri)) == uri


# --------------------------------------------------------------------------- validation


def good_event() -> dict[str, Any]:
    return {
        "eventType": "COMPLETE",
        "eventTime": "2026-03-01T12:00:00.123456Z",
        "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {
            "runId": str(uuid.uuid4()),
            "facets": {
                "parent": {
                    **FACET,
                    "run": {"runId": str(uuid.uuid4())},
                    "job": {"namespace": "airflow", "name": "dag"},
                },
                "errorMessage": {**FACET, "message": "m", "programmingLanguage": "python"},
                "environmentVariables": {
                    **FACET,
                    "environmentVariables": [{"name": "A", "value": "1"}],
                },
                "nominalTime": {**FACET, "nominalStartTime": "2026-03-01T00:00:00Z"},
            },
        },
        "job": {
            "namespace": "spark",
            "name": "etl",
            "facets": {
                "jobType": {**FACET, "processingType": "BATCH", "integration": "SPARK"},
                "sourceCodeLocation": {
                    **FACET,
                    "type": "git",
                    "url": "https://git/x",
                    "version": "abc",
                },
            },
        },
        "inputs": [{"namespace": "s3://b", "name": "in", "facets": {}}],
        "outputs": [
            {
                "namespace": "s3://b",
                "name": "out",
                "facets": {"version": {**FACET, "datasetVersion": "7"}},
                "outputFacets": {"outputStatistics": {**FACET, "rowCount": 3, "size": 10}},
            },
            {"namespace": "s3://b", "name": "out2"},
        ],
    }


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting (or with value ... deleting) the member at ``path``."""

    def mutate(event: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
        target: Any = event
        for key in keys[:-1]:
            target = target[key]
        if value is ...:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return mutate


CASES = [
    # (mutation, field named, a phrase of the fix)
    (setter("eventTime", ...), "eventTime", "missing"),
    (setter("eventTime", "2026-03-01T12:00:00"), "eventTime", "UTC offset"),
    (setter("eventTime", "yesterday"), "eventTime", "2024-05-10T12:00:00Z"),
    (setter("eventTime", "2026-03-01"), "eventTime", "date, time and"),
    (setter("eventTime", 1700000000), "eventTime", "must be a string"),
    (setter("producer", ...), "producer", "missing"),
    (setter("producer", "my etl"), "producer", "absolute URI"),
    (setter("schemaURL", ...), "schemaURL", "OpenLineage.json"),
    (setter("eventType", "DONE"), "eventType", "START, RUNNING, COMPLETE, ABORT, FAIL, OTHER"),
    (setter("run", ...), "run", "missing"),
    (setter("run", []), "run", "must be an object"),
    (setter("run/runId", "run-1"), "run.runId", "is not a UUID"),
    (setter("run/runId", ...), "run.runId", "missing"),
    (setter("job/namespace", ""), "job.namespace", "must not be empty"),
    (setter("job/name", ...), "job.name", "missing"),
    (setter("job/name", 3), "job.name", "must be a string"),
    (setter("inputs", {}), "inputs", "array of datasets"),
    (setter("inputs/0/namespace", ...), "inputs[0].namespace", "e.g. 's3://bucket'"),
    (setter("outputs/1/name", 5), "outputs[1].name", "must be a string"),
    (
        setter("outputs/0/facets/version/datasetVersion", 7),
        "outputs[0].facets.version.datasetVersion",
        "string",
    ),
    (
        setter("outputs/0/outputFacets/outputStatistics/rowCount", "3"),
        "outputs[0].outputFacets.outputStatistics.rowCount",
        "integer",
    ),
    (setter("run/facets/parent/_producer", ...), "run.facets.parent._producer", "every facet"),
    (setter("run/facets/parent/run/runId", "p"), "run.facets.parent.run.runId", "is not a UUID"),
    (setter("run/facets/parent/job/name", ...), "run.facets.parent.job.name", "missing"),
    (
        setter("run/facets/errorMessage/message", ...),
        "run.facets.errorMessage.message",
        "needs 'message'",
    ),
    (
        setter("run/facets/environmentVariables/environmentVariables/0/value", ...),
        "run.facets.environmentVariables.environmentVariables[0].value",
        "missing",
    ),
    (
        setter("run/facets/nominalTime/nominalStartTime", "noon"),
        "run.facets.nominalTime.nominalStartTime",
        "ISO 8601",
    ),
    (
        setter("job/facets/jobType/integration", ...),
        "job.facets.jobType.integration",
        "needs 'integration'",
    ),
    (
        setter("job/facets/sourceCodeLocation/url", "not a url"),
        "job.facets.sourceCodeLocation.url",
        "absolute URI",
    ),
    (
        setter(
            "run/facets/dpt_environment",
            {
                **FACET,
                "fingerprint": "x",
                "python": "3",
                "implementation": "C",
                "platform": "p",
                "host": "h",
                "user": "u",
            },
        ),
        "run.facets.dpt_environment.fingerprint",
        "64 lower-case hex",
    ),
    (setter("run/facets/x", "text"), "run.facets.x", "must be an object"),
]


@pytest.mark.parametrize(("mutate", "field", "fix"), CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_an_event_that_breaks_the_spec_names_the_field_and_the_fix(dpt_env, mutate, field, fix):
    event = good_event()
    mutate(event)
    batch = [good_event(), event, good_event()]
    with pytest.raises(InvalidEvent) as raised:
        parse_events(json.loads(json.dumps(batch)))
    error = raised.value
    assert isinstance(error, DptError)
    assert error.field == f"[1].{field}"
    assert str(error).startswith(f"[1].{field}: ")
    assert fix in str(error)
    with pytest.raises(InvalidEvent) as single:
        parse_events(json.loads(json.dumps(event)))
    assert single.value.field == field
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 0


@pytest.mark.parametrize(
    ("doc", "field", "fix"),
    [
        ("an event", "$", "must be an object"),
        ([1], "[0]", "must be an object"),
        (
            {
                "eventTime": "2026-03-01T12:00:00Z",
                "producer": PRODUCER,
                "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
            },
            "dataset",
            "missing",
        ),
        (
            {
                "eventTime": "2026-03-01T12:00:00Z",
                "producer": PRODUCER,
                "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
                "job": {"namespace": "dbt"},
            },
            "job.name",
            "missing",
        ),
        (
            {
                "eventTime": "2026-03-01T12:00:00Z",
                "producer": PRODUCER,
                "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                "job": {"namespace": "n", "name": "j"},
            },
            "run",
            "missing",
        ),
    ],
)
def test_documents_that_are_no_events(dpt_env, doc, field, fix):
    with pytest.raises(InvalidEvent) as raised:
        parse_events(doc)
    assert raised.value.field == field and fix in str(raised.value)


def test_a_valid_event_in_every_shape_parses(dpt_env):
    events = parse_events([good_event()])
    assert len(events) == 1
    (mapped,) = events
    assert mapped.code_version == "abc" and mapped.orchestrator == "spark"
    assert mapped.time == dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert [d.uri for d in mapped.outputs] == ["s3://b/out", "s3://b/out2"]
    assert mapped.outputs[0].size == 10
    assert parse_events([]) == []


def test_dpts_own_export_validates(dpt_env, tmp_path):
    """Events of every shape dpt's export makes pass the validation unchanged."""
    from dpt_core.export.openlineage import Dataset, RunRef

    event = run_event(
        "FAIL",
        time=dt.datetime.now(dt.UTC),
        run=RunRef(str(uuid.uuid4()), "nightly", "calibrate"),
        orchestrator="python",
        parent=RunRef(str(uuid.uuid4()), "nightly"),
        root=RunRef(str(uuid.uuid4()), "nightly"),
        error="ZeroDivisionError: division by zero",
        inputs=[Dataset("s3://b/k", str(uuid.uuid4()))],
        outputs=[Dataset((tmp_path / "x").as_uri(), str(uuid.uuid4()), "xxh3_128:00ff")],
    )
    before = copy.deepcopy(event)
    (mapped,) = parse_events(event)
    assert event == before
    assert (mapped.job, mapped.task, mapped.status if hasattr(mapped, "status") else None) == (
        "nightly",
        "calibrate",
        None,
    )
    assert mapped.outputs[0].content_hash == "xxh3_128:00ff"
    assert mapped.inputs[0].content_hash is None  # a version uuid, not a hash
    assert ingest([mapped]).outcome == "recorded"
