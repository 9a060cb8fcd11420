"""Tags on runs and product versions: recorded, queried, changed afterwards, exported and
ingested back, on SQLite, PostgreSQL and MariaDB (``dpt_backend``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

import dpt_core
from dpt_core.events import (
    InvocationStarted,
    ProductObservation,
    ProductsWritten,
    event_from_dict,
    event_to_dict,
)
from dpt_core.store import migrations
from dpt_core.store.bulk import BulkRecorder
from dpt_core.store.plugin import current_store

REPO = Path(__file__).resolve().parents[2]


def engine() -> Any:
    return current_store().engine


def stored(sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine().connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def run_tags() -> list[tuple[str, str, str]]:
    return sorted(
        stored(
            "SELECT i.job, t.key, t.value FROM invocation_tags t "
            "JOIN invocations i ON i.id = t.invocation_id"
        )
    )


def version_tags() -> list[tuple[str, str, str]]:
    return sorted(
        stored(
            "SELECT p.uri, t.key, t.value FROM version_tags t "
            "JOIN data_product_versions v ON v.id = t.version_id "
            "JOIN data_products p ON p.id = v.product_id"
        )
    )


def dpt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def tagged(dpt_backend, dpt_env, tmp_path):
    """Three runs: two TESS sectors and a Kepler one; each writes a file with a quality tag."""
    made = {}
    for job, survey, sector in (("s41", "tess", 41), ("s42", "tess", 42), ("k1", "kepler", 1)):
        out = tmp_path / f"{job}.fits"
        with dpt_core.invocation(job, tags={"survey": survey, "sector": sector}) as inv:
            out.write_text(job)
            inv.write(out, tags={"quality": "good" if sector != 41 else "bad"})
        made[job] = (inv.uuid, out)
    dpt_core.flush()  # (the CLI reads in another process)
    return made


# --------------------------------------------------------------------------- recording


def test_tags_are_recorded_on_runs_and_versions_in_their_text_form(tagged):
    assert run_tags() == [
        ("k1", "sector", "1"),
        ("k1", "survey", "kepler"),
        ("s41", "sector", "41"),
        ("s41", "survey", "tess"),
        ("s42", "sector", "42"),
        ("s42", "survey", "tess"),
    ]
    assert [(Path(uri).name, k, v) for uri, k, v in version_tags()] == [
        ("k1.fits", "quality", "good"),
        ("s41.fits", "quality", "bad"),
        ("s42.fits", "quality", "good"),
    ]


def test_runs_filter_on_every_tag_given_values_compared_as_text(tagged):
    def jobs(**kwargs: Any) -> list[str]:
        return sorted(r.job for r in dpt_core.runs(**kwargs))

    assert jobs(tags={"survey": "tess"}) == ["s41", "s42"]
    assert jobs(tags={"survey": "tess", "sector": 42}) == ["s42"]  # AND; 42 is "42"
    assert jobs(tags={"survey": "tess", "sector": "1"}) == []
    assert jobs(tags={"survey": "TESS"}) == []  # case-sensitive on every backend
    assert jobs(tags={"sector": 42.0}) == []  # a float's text is 42.0
    assert jobs(tags={"survey": "kepler"}, status="success") == ["k1"]
    run = dpt_core.runs(tags={"sector": 41})[0]
    assert run.tags == {"sector": "41", "survey": "tess"}
    assert run.to_dict()["tags"] == {"sector": "41", "survey": "tess"}


def test_a_filter_of_many_tags_is_one_query_that_matches_only_runs_with_them_all(tagged):
    # One nested subquery per tag made SQLite refuse 1 000 tags ("Expression tree is too
    # large"), which dpt serve answered 503 as if the database were away.
    many = {f"k{i}": f"v{i}" for i in range(300)}
    with dpt_core.invocation("many", tags={"survey": "tess", **many}):
        pass
    with dpt_core.invocation("most", tags={"survey": "tess", **dict(list(many.items())[:-1])}):
        pass

    def jobs(tags: dict[str, Any]) -> list[str]:
        return sorted(r.job for r in dpt_core.runs(tags=tags))

    assert jobs({"survey": "tess", **many}) == ["many"]
    assert jobs(many) == ["many"]
    assert jobs(dict(list(many.items())[:-1])) == ["many", "most"]
    assert jobs({**many, "k299": "other"}) == []  # one value off
    assert jobs({f"x{i}": "v" for i in range(1000)}) == []
    assert jobs({"survey": "tess", "sector": "42"}) == ["s42"]  # (grouped on PostgreSQL)


def test_show_carries_tags_of_versions_and_of_their_runs(tagged):
    product = dpt_core.show(tagged["s42"][1])
    assert isinstance(product, dpt_core.Product)
    (version,) = product.versions
    assert version.tags == {"quality": "good"}
    assert version.produced_by is not None
    assert version.produced_by.tags == {"sector": "42", "survey": "tess"}
    run = dpt_core.show(tagged["k1"][0])
    assert isinstance(run, dpt_core.Run) and run.tags == {"sector": "1", "survey": "kepler"}


def test_track_async_write_and_tracked_take_tags(dpt_env, tmp_path):
    one, two, three = tmp_path / "one.txt", tmp_path / "two.txt", tmp_path / "three.txt"
    one.write_text("1")
    dpt_core.track(one, tags={"kind": "one-off"})  # a one-off run: the version is tagged

    async def main() -> None:
        async with dpt_core.invocation("async-job", tags={"mode": "async"}) as inv:
            two.write_text("2")
            await inv.write(two, tags={"kind": "async"})

    asyncio.run(main())

    @dpt_core.tracked(outputs="path", name="make", tags={"mode": "decorated", "n": 3})
    def make(path: Path) -> None:
        path.write_text("3")

    make(three)
    make(three)
    assert [(Path(u).name, k, v) for u, k, v in version_tags()] == [
        ("one.txt", "kind", "one-off"),
        ("two.txt", "kind", "async"),
    ]
    assert run_tags() == [
        ("async-job", "mode", "async"),
        ("make", "mode", "decorated"),
        ("make", "mode", "decorated"),
        ("make", "n", "3"),
        ("make", "n", "3"),
    ]


def test_a_product_ref_s_own_tags_win_over_the_write_s(dpt_env, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a")
    b.write_text("b")
    with dpt_core.invocation("refs") as inv:
        inv.write(a, dpt_core.ProductRef(b, tags={"q": "own"}), tags={"q": "all", "x": 1})
    assert [(Path(u).name, k, v) for u, k, v in version_tags()] == [
        ("a.txt", "q", "all"),
        ("a.txt", "x", "1"),
        ("b.txt", "q", "own"),
        ("b.txt", "x", "1"),
    ]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"bad key": 1}, "tag key 'bad key' is not valid"),
        ({"": 1}, "tag key '' is not valid"),
        ({"k=v": 1}, "tag key 'k=v' is not valid"),
        ({"x" * 129: 1}, "is not valid: a tag key is 1 to 128 characters"),
        ({"survey": None}, "tag 'survey' has no value (None)"),
        ({"survey": ["tess"]}, "tag 'survey': a value is a string, number or boolean, not list"),
        ({"big": "x" * 513}, "tag 'big': the value is 513 characters, more than 512"),
        ({"n": float("nan")}, "tag 'n': nan is not a finite number"),
        ({1: "one"}, "tag key 1 is not a string"),
    ],
)
def test_a_bad_tag_is_refused_before_anything_is_recorded(dpt_env, tmp_path, tags, message):
    out = tmp_path / "out.txt"
    out.write_text("x")
    with pytest.raises(dpt_core.InvalidTag) as caught:
        dpt_core.invocation("never", tags=tags)  # refused when called, before the block
    assert message in str(caught.value)
    with dpt_core.invocation("writes") as inv, pytest.raises(dpt_core.InvalidTag, match="tag"):
        inv.write(out, tags=tags)
    with pytest.raises(dpt_core.InvalidTag):
        dpt_core.track(out, tags=tags)
    with pytest.raises(dpt_core.InvalidTag):  # at decoration
        dpt_core.tracked(tags=tags)(print)
    assert [r.job for r in dpt_core.runs()] == ["writes"]  # no "never", no one-off track run
    assert stored("SELECT COUNT(*) FROM data_product_versions") == [(0,)]
    assert isinstance(caught.value, ValueError)  # (and a DptError: the CLI's exit 2)


def test_the_cli_names_a_bad_tag_in_one_line_with_exit_2(dpt_env, tagged):
    result = dpt("tag", tagged["s42"][0], "bad key=1")
    assert result.returncode == 2
    assert "tag key 'bad key' is not valid" in one_line_error(result)
    result = dpt("runs", "--tag", "survey")
    assert result.returncode == 2
    assert "--tag: tag 'survey' has no '=': write KEY=VALUE" in one_line_error(result)
    result = dpt("runs", "--tag", "survey=tess", "--tag", "survey=kepler")
    assert result.returncode == 2
    assert "--tag gives 'survey' twice ('tess' and 'kepler')" in one_line_error(result)
    result = dpt("tag", "no-such-thing", "a=1")
    assert result.returncode == 2
    assert "is neither a recorded product nor a run id" in one_line_error(result)
    assert run_tags()[0] == ("k1", "sector", "1") and len(run_tags()) == 6  # nothing changed


# --------------------------------------------------------------------------- afterwards


def test_tag_sets_changes_and_removes_tags_of_a_run_and_of_a_version(tagged):
    run_uuid, path = tagged["s41"]
    done = dpt_core.tag(run_uuid, {"reviewed": True, "survey": "TESS"}, remove=["sector"])
    assert [(t.kind, t.uuid, t.tags) for t in done] == [
        ("run", run_uuid, {"reviewed": "true", "survey": "TESS"})
    ]
    assert dpt_core.runs(tags={"survey": "TESS"})[0].uuid == run_uuid
    assert [r.job for r in dpt_core.runs(tags={"survey": "tess"})] == ["s42"]
    (version,) = dpt_core.tag(path, {"quality": "good"}, remove=["not-there"])
    assert version.kind == "version" and version.uri == dpt_core.show(path).uri
    assert version.tags == {"quality": "good"}
    # a Run, an invocation handle and a run id name the run too
    run = dpt_core.runs(tags={"survey": "kepler"})[0]
    assert dpt_core.tag(run, {"a": 1})[0].tags["a"] == "1"
    assert dpt_core.tag(run.id, remove=["a"])[0].tags == {"sector": "1", "survey": "kepler"}
    with pytest.raises(dpt_core.InvalidTag, match="both set and removed"):
        dpt_core.tag(run, {"a": 1}, remove=["a"])
    with pytest.raises(dpt_core.NotFound):
        dpt_core.tag("never-recorded.fits", {"a": 1}, version="abcdef")


def test_tag_names_a_version_by_uuid_prefix_or_content_hash(dpt_env, tmp_path):
    out = tmp_path / "lc.fits"
    versions = []
    for content in ("v1", "v2", "v1"):
        with dpt_core.invocation("make") as inv:
            out.write_text(content)
            inv.write(out)
        versions.append(dpt_core.show(out).versions[0])  # type: ignore[union-attr]
    newest = dpt_core.tag(out, {"newest": 1})
    assert [t.uuid for t in newest] == [versions[2].version]
    by_prefix = dpt_core.tag(out, {"second": 1}, version=versions[1].version[:8])
    assert [t.uuid for t in by_prefix] == [versions[1].version]
    by_hash = dpt_core.tag(out, {"v1": "yes"}, version=versions[0].content_hash)
    assert sorted(t.uuid for t in by_hash) == sorted([versions[0].version, versions[2].version])
    shown = {v.version: dict(v.tags) for v in dpt_core.show(out).versions}  # type: ignore[union-attr]
    assert shown == {
        versions[0].version: {"v1": "yes"},
        versions[1].version: {"second": "1"},
        versions[2].version: {"newest": "1", "v1": "yes"},
    }


def test_the_cli_tags_and_filters_like_the_python_api(tagged, tmp_path):
    run_uuid, path = tagged["s42"]
    result = dpt("tag", run_uuid[:8], "reviewed=yes", "--remove", "sector", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "kind": "run",
            "uuid": run_uuid,
            "uri": None,
            "tags": {"reviewed": "yes", "survey": "tess"},
        }
    ]
    result = dpt("tag", str(path), "quality=checked", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("quality=checked")
    listed = json.loads(
        dpt("runs", "--tag", "survey=tess", "--tag", "reviewed=yes", "--json").stdout
    )
    assert [(r["job"], r["tags"]) for r in listed] == [
        ("s42", {"reviewed": "yes", "survey": "tess"})
    ]
    assert listed == [r.to_dict() for r in dpt_core.runs(tags={"reviewed": "yes"})]
    shown = json.loads(dpt("show", str(path), "--json").stdout)
    assert shown["versions"][0]["tags"] == {"quality": "checked"}
    assert shown["versions"][0]["produced_by"]["tags"] == {"reviewed": "yes", "survey": "tess"}
    table = dpt("runs", "--tag", "survey=tess", "--wide").stdout
    assert "reviewed=yes survey=tess" in table and "sector=41 survey=tess" in table
    text_show = dpt("show", str(path)).stdout
    assert "tags: quality=checked" in text_show
    # no KEY=VALUE and no --remove: the tags as they are, nothing changed
    assert dpt("tag", run_uuid).stdout.strip() == f"run {run_uuid}: reviewed=yes survey=tess"


# --------------------------------------------------------------------------- idempotence


def test_recording_again_never_overwrites_a_tag_and_adds_the_missing_ones(dpt_backend, dpt_env):
    run = str(uuid.uuid4())
    version = str(uuid.uuid4())
    start = InvocationStarted(uuid=run, orchestrator="python", job="j", tags={"a": "1"})
    write = ProductsWritten(
        run, (ProductObservation("s3://b/k", version, "sha256:01", tags={"q": "good"}),)
    )
    recorder = BulkRecorder(engine())
    recorder.record([start, write])
    dpt_core.tag(run, {"a": "changed"})
    dpt_core.tag("s3://b/k", {"q": "reviewed"})
    # a replay (spool, retry), one event at a time and as one batch, with one more key
    again = InvocationStarted(uuid=run, orchestrator="python", job="j", tags={"a": "1", "b": "2"})
    recorder.record([again])
    recorder.record([write])
    recorder.record([start, again, write, write])
    assert run_tags() == [("j", "a", "changed"), ("j", "b", "2")]
    assert version_tags() == [("s3://b/k", "q", "reviewed")]


def test_tags_survive_the_spool_and_old_spooled_events_still_load(dpt_env):
    start = InvocationStarted(
        uuid=str(uuid.uuid4()), orchestrator="python", job="j", tags={"a": "1"}
    )
    obs = ProductObservation("s3://b/k", str(uuid.uuid4()), tags={"q": "good"})
    write = ProductsWritten(start.uuid, (obs,))
    for event in (start, write):
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event
    old_start = {k: v for k, v in event_to_dict(start).items() if k != "tags"}
    old_write = event_to_dict(write)
    del old_write["outputs"][0]["tags"]
    assert event_from_dict(old_start).tags == {}  # type: ignore[union-attr]
    assert event_from_dict(old_write).outputs[0].tags == {}  # type: ignore[union-attr]


def test_a_spooled_run_keeps_its_tags_and_a_replay_twice_records_them_once(
    dpt_env, monkeypatch, tmp_path
):
    """The database away: the run and its tags go to the spool; replayed (twice, as after
    a crash between recording and deleting the file) they are recorded once."""
    from dpt_core.spool import Spool

    dead = "postgresql://postgres@127.0.0.1:9/unreachable"
    good = dpt_env.url
    monkeypatch.setenv("DPT_DATABASE_URL", dead)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    out = tmp_path / "out.txt"
    out.write_text("x")
    with dpt_core.invocation("offline", tags={"survey": "tess"}) as inv:
        inv.write(out, tags={"quality": "good"})
    monkeypatch.setenv("DPT_DATABASE_URL", good)
    dpt_core.plugin_api.reset()  # (this process stops trying the dead database)
    spool = Spool(tmp_path / "spool", dead)
    files = {path: path.read_bytes() for path in spool.directory.glob("*.jsonl")}
    assert b'"survey"' in b"".join(files.values())  # the tags are in the spooled events

    assert spool.replay(current_store().record) == 3
    assert run_tags() == [("offline", "survey", "tess")]
    for path, content in files.items():  # the same events once more
        path.write_bytes(content)
    assert spool.replay(current_store().record) == 3
    assert run_tags() == [("offline", "survey", "tess")]
    assert [(Path(u).name, k, v) for u, k, v in version_tags()] == [("out.txt", "quality", "good")]


# --------------------------------------------------------------------------- OpenLineage


def test_openlineage_export_carries_tags_as_facets_and_ingest_reads_them_back(
    dpt_backend, dpt_env, tmp_path, monkeypatch
):
    from openlineage.client.serde import Serde

    from dpt_core.export.openlineage import as_client_event, iter_events
    from dpt_core.ingest import ingest, parse_events

    target = dpt_env.url
    monkeypatch.setenv("DPT_DATABASE_URL", f"sqlite:///{tmp_path / 'source.sqlite3'}")
    dpt_core.plugin_api.reset()
    out = tmp_path / "cal.fits"
    with dpt_core.invocation("calibrate", task="ccd", tags={"survey": "tess", "sector": 42}) as inv:
        out.write_text("cal")
        inv.write(out, tags={"quality": "good"})
    dpt_core.tag(out, {"reviewed": "yes"})
    events = json.loads(json.dumps(list(iter_events(engine())), default=str))
    start, complete = sorted(events, key=lambda e: e["eventType"] != "START")
    expected_run = {
        "_producer": start["producer"],
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/TagsRunFacet.json#/$defs/TagsRunFacet",
        "tags": [
            {"key": "sector", "value": "42", "source": "DPT"},
            {"key": "survey", "value": "tess", "source": "DPT"},
        ],
    }
    assert start["run"]["facets"]["tags"] == expected_run
    assert complete["run"]["facets"]["tags"] == expected_run
    (output,) = complete["outputs"]
    assert output["facets"]["tags"]["tags"] == [
        {"key": "quality", "value": "good", "source": "DPT"},
        {"key": "reviewed", "value": "yes", "source": "DPT"},
    ]
    assert output["facets"]["tags"]["_schemaURL"].endswith("TagsDatasetFacet")
    for event in events:  # the client's own models take them, nothing lost
        model = Serde.to_dict(as_client_event(event))
        assert model["run"]["facets"]["tags"]["tags"] == event["run"]["facets"]["tags"]["tags"]

    monkeypatch.setenv("DPT_DATABASE_URL", target)
    dpt_core.plugin_api.reset()
    result = ingest(parse_events(events))
    assert result.outcome == "recorded" and result.warnings == []
    (run,) = dpt_core.runs(tags={"survey": "tess", "sector": 42})
    assert (run.job, run.task) == ("calibrate", "ccd")
    version = dpt_core.show(out).versions[0]  # type: ignore[union-attr]
    assert version.tags == {"quality": "good", "reviewed": "yes"}
    assert "tags" not in json.dumps(version.metadata or {})  # a facet of its own, not metadata
    # the copy exports the same facets
    again = json.loads(json.dumps(list(iter_events(engine())), default=str))
    assert [e["run"]["facets"]["tags"] for e in again] == [
        e["run"]["facets"]["tags"] for e in sorted(events, key=lambda e: e["eventType"] != "START")
    ]


def test_ingest_keeps_the_tags_it_can_and_says_which_it_left_out(dpt_env):
    from dpt_core.ingest import ingest, parse_events

    facet = {"_producer": "https://example.com/p", "_schemaURL": "https://example.com/s"}
    event = {
        "eventType": "COMPLETE",
        "eventTime": "2026-01-02T03:04:05.000Z",
        "producer": "https://example.com/producer",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {
            "runId": str(uuid.uuid4()),
            "facets": {
                "tags": {
                    **facet,
                    "tags": [
                        {"key": "env", "value": "production", "source": "USER"},
                        {"key": "has space", "value": "x"},
                        {"key": "env", "value": "second"},
                        "not a tag",
                    ],
                }
            },
        },
        "job": {"namespace": "spark", "name": "job"},
        "inputs": [],
        "outputs": [
            {
                "namespace": "s3://bucket",
                "name": "table",
                "facets": {
                    "tags": {
                        **facet,
                        "tags": [
                            {"key": "pii", "value": "true"},
                            {"key": "pii", "value": "true", "field": "email"},
                        ],
                    }
                },
            }
        ],
    }
    result = ingest(parse_events(event))
    assert result.outcome == "recorded"
    assert len(result.warnings) == 3
    assert any("tag key 'has space' is not valid" in w for w in result.warnings)
    assert any("a tag of field 'email'" in w for w in result.warnings)
    assert run_tags() == [("job", "env", "production")]
    assert version_tags() == [("s3://bucket/table", "pii", "true")]


# --------------------------------------------------------------------------- migration


def test_migration_0004_up_and_down_with_data(dpt_backend, dpt_env, tagged):
    eng = engine()
    runs_before = stored("SELECT COUNT(*) FROM invocations")
    migrations.downgrade(eng, "0003")
    assert migrations.current(eng) == "0003"
    tables = set(inspect(eng).get_table_names())
    assert "invocation_tags" not in tables and "version_tags" not in tables
    assert stored("SELECT COUNT(*) FROM invocations") == runs_before  # only the tags went
    migrations.upgrade(eng)
    assert migrations.current(eng) == migrations.HEAD
    assert migrations.diff(eng) == []
    assert run_tags() == [] and version_tags() == []
    dpt_core.tag(tagged["s42"][0], {"back": "yes"})
    assert run_tags() == [("s42", "back", "yes")]
