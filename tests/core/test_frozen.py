"""The frozen values of the recording path behave as the frozen dataclasses they replace."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from pathlib import Path

import pytest

from dpt_core.config import Settings
from dpt_core.events import (
    CurrentContext,
    EnvironmentSnapshot,
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductRef,
    ProductsRead,
    ProductsWritten,
    event_from_dict,
    event_to_dict,
    event_to_json,
    events_from_json,
)
from dpt_core.frozen import FrozenInstanceError
from dpt_core.hashing import FileFacts
from dpt_core.spool import SpoolStatus, TargetStatus, _line

WHEN = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


def written() -> ProductsWritten:
    return ProductsWritten(
        "run-1",
        (
            ProductObservation("file:///a", "v-a", "xxh3_128:aa", 3, 1.5, {"k": 1}, ("file:///b",)),
            ProductObservation("file:///c", "v-c", tags={"band": "g"}),
        ),
    )


def test_equal_by_fields_and_class_hashable_when_the_fields_are() -> None:
    assert written() == written()
    assert written() != written().replace(invocation_uuid="run-2")
    assert CurrentContext("run-1", "job") == CurrentContext("run-1", "job", None)
    assert CurrentContext("run-1") != ProductRef("run-1")  # same first field, other class
    assert len({FileFacts("h", 1, 2.0, True), FileFacts("h", 1, 2.0, True)}) == 1
    assert hash(CurrentContext("run-1", "job")) == hash(CurrentContext("run-1", "job"))
    with pytest.raises(TypeError):  # a dict field (metadata), as with a frozen dataclass
        hash(written())


def test_fields_cannot_be_assigned_or_deleted() -> None:
    finished = InvocationFinished("run-1", "success", WHEN)
    with pytest.raises(FrozenInstanceError, match="'status'"):
        finished.status = "failed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del finished.status  # type: ignore[misc]
    with pytest.raises(AttributeError):  # no __dict__: no new attributes either
        object.__setattr__(finished, "other", 1)
    assert finished.status == "success"


def test_defaults_are_fresh_per_value_and_times_default_to_now() -> None:
    before = dt.datetime.now(dt.UTC)
    one = InvocationStarted("u1", "python", "job")
    two = InvocationStarted("u2", "python", "job")
    assert one.parameters == {} and one.parameters is not two.parameters
    assert one.tags == {} and one.variables == {} and one.status == "running"
    assert before <= one.started_at <= dt.datetime.now(dt.UTC)
    assert InvocationFinished("u1", "success").ended_at >= before
    assert ProductObservation("file:///a", "v").metadata == {}


def test_replace_keeps_the_other_fields_and_refuses_unknown_ones() -> None:
    started = InvocationStarted("u1", "python", "job", started_at=WHEN, tags={"a": "1"})
    moved = started.replace(process="detached")
    assert moved.process == "detached" and started.process is None
    assert moved.replace(process=None) == started
    with pytest.raises(TypeError, match="nope"):
        started.replace(nope=1)


def test_repr_names_every_field() -> None:
    assert repr(CurrentContext("run-1", "job")) == (
        "CurrentContext(invocation_uuid='run-1', job='job', task=None)"
    )


def test_copy_pickle_and_to_dict() -> None:
    event = written()
    assert copy.copy(event) == event
    assert copy.deepcopy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event
    status = SpoolStatus("/s", 1, 1, 2, 10, 0, [TargetStatus("k", None, "/s/k", 1, 1, 2, 10, 0)])
    assert status.to_dict() == {
        "directory": "/s",
        "files": 1,
        "batches": 1,
        "events": 2,
        "bytes": 10,
        "bad_files": 0,
        "databases": [
            {
                "key": "k",
                "database": None,
                "directory": "/s/k",
                "files": 1,
                "batches": 1,
                "events": 2,
                "bytes": 10,
                "bad_files": 0,
            }
        ],
    }
    assert status.to_dict(recurse=False)["databases"][0] is status.databases[0]


def test_events_round_trip_through_the_spools_encoding() -> None:
    snapshot = EnvironmentSnapshot(
        "fp", "3.11.7", "CPython", "Linux", "host", "me", (("dpt", "1"),), (("A", "1", None),)
    )
    events = [
        InvocationStarted("u1", "python", "job", started_at=WHEN, environment=snapshot),
        InvocationFinished("u1", "failed", WHEN, "ValueError: x", only_if_running=True),
        written(),
    ]
    for event in events:
        assert event_from_dict(event_to_dict(event)) == event


def test_a_spool_line_reads_back_as_its_events_datetimes_nested_or_not() -> None:
    """The writer parses a line with its datetimes decoded on the way (events_from_json):
    the same events as event_from_dict gives, at any depth; a line that is not an array
    of event objects is refused with ValueError (the spool quarantines it)."""
    snapshot = EnvironmentSnapshot(
        "fp", "3.11.7", "CPython", "Linux", "host", "me", (("dpt", "1"),), (("A", "1", None),)
    )
    nested = {"when": WHEN, "runs": [{"at": WHEN, "n": [1, {"deep": WHEN}]}], "__dt__x": 1}
    events = [
        InvocationStarted(
            "u1", "python", "job", started_at=WHEN, environment=snapshot, parameters=nested
        ),
        ProductsRead("u1", (ProductObservation("file:///a", "v-a", metadata={"seen": [WHEN]}),)),
        written(),
        InvocationFinished("u1", "failed", WHEN, "ValueError: x", only_if_running=True),
    ]
    text = _line(events).decode("utf-8", "surrogateescape")
    assert events_from_json(text) == events
    assert events_from_json(text) == [event_from_dict(d) for d in json.loads(text)]
    started = events_from_json(text)[0]
    assert isinstance(started, InvocationStarted)
    assert started.parameters["runs"][0]["n"][1]["deep"] == WHEN
    for bad in ('{"kind": "invocation_finished"}', "[1, 2]", '[{"kind": "nonsense"}]', "[{"):
        with pytest.raises(ValueError):
            events_from_json(bad)


def test_the_spool_s_json_of_an_event_is_its_dict_s_whatever_the_snapshot() -> None:
    """event_to_json keeps the last snapshot's JSON text: another snapshot (even one
    equal to it) is written as its own, and the text reads back as the event."""

    def snapshot(fingerprint: str, python: str) -> EnvironmentSnapshot:
        variables = (("A", "1", None), ("B", None, "hmac-sha256:00"))
        return EnvironmentSnapshot(
            fingerprint, python, "CPython", "Linux", "h", "ü", (("dpt", "1"),), variables
        )

    one, two = snapshot("fp-1", "3.11"), snapshot("fp-2", "3.12")
    for env in (one, one, two, snapshot("fp-1", "3.11"), None, one):
        event = InvocationStarted("u1", "python", "jöb", started_at=WHEN, environment=env)
        text = event_to_json(event)
        assert json.loads(text) == json.loads(json.dumps(event_to_dict(event)))
        assert event_from_dict(json.loads(text)) == event
    for event in (InvocationFinished("u1", "failed", WHEN, "x"), written()):
        assert json.loads(event_to_json(event)) == json.loads(json.dumps(event_to_dict(event)))


def test_settings_defaults_and_explicit_empty_url(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, spool_dir=tmp_path / "spool")
    assert settings.database_url.startswith("sqlite:///")  # the user's default database
    assert Settings(database_url="", cache_dir=tmp_path).database_url == ""  # unconfigured
    assert settings.replace(strict=True).strict and not settings.strict
    assert settings.replace(strict=True).replace(strict=False) == settings


def test_a_snapshot_read_back_again_is_the_one_decoded_before() -> None:
    """The environment of a process's starts is decoded once; another one (another
    fingerprint) is decoded in full, and a malformed one is refused as before."""
    one = EnvironmentSnapshot("fp-1", "3.11", "CPython", "Linux", "h", "u", (("a", "1"),), ())
    two = EnvironmentSnapshot("fp-2", "3.12", "CPython", "Linux", "h", "u", (("b", "2"),), ())

    def started(snapshot: EnvironmentSnapshot, uuid: str) -> InvocationStarted:
        return InvocationStarted(uuid, "python", "job", started_at=WHEN, environment=snapshot)

    first = event_from_dict(event_to_dict(started(one, "u1")))
    second = event_from_dict(event_to_dict(started(one, "u2")))
    other = event_from_dict(event_to_dict(started(two, "u3")))
    assert first.environment == one and second.environment is first.environment
    assert other.environment == two and second.uuid == "u2"
    # the same fingerprint, other content (an ingested copy whose facets lost their nulls)
    copy = EnvironmentSnapshot(
        "fp-2", "3.12", "CPython", "Linux", "h", "u", (("b", "2"),), (), {"git": {}}
    )
    again = event_from_dict(event_to_dict(started(copy, "u5")))
    assert again.environment == copy and again.environment.facets == {"git": {}}
    broken = event_to_dict(started(one, "u4"))
    broken["environment"] = ["not", "an", "object"]
    with pytest.raises(TypeError):
        event_from_dict(broken)
