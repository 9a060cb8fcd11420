"""OpenLineage, PROV-JSON and graph exports, and the live OpenLineage plugin."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import sys
import uuid
from pathlib import Path

import pytest
from openlineage.client.event_v2 import RunEvent
from openlineage.client.serde import Serde

import dpt_core
from dpt_core.export import BadSince, parse_since
from dpt_core.export import openlineage_live as live
from dpt_core.export.graph import to_dot, to_mermaid
from dpt_core.export.openlineage import (
    ENVIRONMENT_FACET,
    as_client_event,
    dataset_name,
    iter_events,
    write_events,
)
from dpt_core.export.prov import prov_document
from dpt_core.store.lineage import lineage
from dpt_core.uri import normalize_uri


@pytest.fixture
def strict(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_STRICT", "1")
    monkeypatch.delenv("OPENLINEAGE_NAMESPACE", raising=False)
    dpt_core.plugin_api.reset()
    return dpt_env


def engine():
    from dpt_core.store.plugin import current_store

    return current_store().engine


@pytest.fixture
def flow(strict, tmp_path, monkeypatch):
    """A parent run with a child that reads raw and writes cal, a failed run, a cancelled one."""
    monkeypatch.setenv("PIPELINE_API_TOKEN", "do-not-export-me")
    dpt_core.plugin_api.reset()
    raw, cal = tmp_path / "raw.fits", tmp_path / "cal.fits"
    raw.write_text("raw")
    with (
        dpt_core.invocation("nightly") as parent,
        dpt_core.invocation("nightly", task="calibrate") as child,
    ):
        child.read(raw, "s3://survey-bucket/flats/flat.fits")
        cal.write_text("cal")
        child.write(cal)
    with pytest.raises(ZeroDivisionError), dpt_core.invocation("broken"):
        1 / 0  # noqa: B018
    stopped = dpt_core.get_tracker().start("stopped")
    stopped.finish("cancelled", error="operator stopped it")
    return {
        "parent": parent.uuid,
        "child": child.uuid,
        "stopped": stopped.uuid,
        "raw": raw,
        "cal": cal,
    }


def uri(path) -> str:
    return normalize_uri(path)


# --------------------------------------------------------------------------- OpenLineage


def test_openlineage_events_validate_against_the_client_models(dpt_backend, flow):
    events = list(iter_events(engine()))
    assert len(events) == 8  # START + terminal for 4 runs
    for data in events:
        model = as_client_event(data)
        assert isinstance(model, RunEvent)
        assert_same(data, Serde.to_dict(model))  # nothing lost or changed through the models


def assert_same(ours, theirs, path="event"):
    """Equal, except that the client adds empty ``facets`` maps our events leave out."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in ours.keys() | theirs.keys():
            if key not in ours and theirs[key] == {}:
                continue
            assert key in ours and key in theirs, f"{path}.{key}"
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(ours, list) and isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{index}]")
    else:
        assert ours == theirs, path


def test_openlineage_event_content(dpt_backend, flow):
    events = list(iter_events(engine()))
    by_run: dict[str, list[dict]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"], []).append(e)
    assert [e["eventType"] for e in by_run[flow["parent"]]] == ["START", "COMPLETE"]
    start, complete = by_run[flow["child"]]
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["job"] == complete["job"]
    assert start["job"]["namespace"] == "dpt" and start["job"]["name"] == "nightly.calibrate"
    assert start["job"]["facets"]["jobType"]["integration"] == "PYTHON"
    parent_facet = complete["run"]["facets"]["parent"]
    assert parent_facet["run"]["runId"] == flow["parent"]
    assert parent_facet["job"] == {"namespace": "dpt", "name": "nightly"}
    assert parent_facet["root"]["run"]["runId"] == flow["parent"]
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        ("file", str(Path(flow["raw"]).resolve())),
        ("s3://survey-bucket", "flats/flat.fits"),
    ]
    assert complete["inputs"][0]["facets"]["version"]["datasetVersion"] == dpt_core.hash_file(
        flow["raw"]
    )
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(Path(flow["cal"]).resolve()))
    assert output["facets"]["version"]["datasetVersion"] == dpt_core.hash_file(flow["cal"])
    assert start["inputs"] == [] and start["outputs"] == []

    environment = start["run"]["facets"][ENVIRONMENT_FACET]
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["_producer"].startswith("https://") and environment["_schemaURL"].startswith(
        "https://"
    )
    assert environment["packages"]["pytest"]
    assert "PIPELINE_API_TOKEN" in environment["redacted"]
    assert "PIPELINE_API_TOKEN" not in environment["variables"]
    assert ENVIRONMENT_FACET not in complete["run"]["facets"]

    broken = [e for e in events if e["job"]["name"] == "broken"]
    assert [e["eventType"] for e in broken] == ["START", "FAIL"]
    error = broken[1]["run"]["facets"]["errorMessage"]
    assert (
        error["message"].startswith("ZeroDivisionError")
        and error["programmingLanguage"] == "python"
    )
    stopped_end = by_run[flow["stopped"]][1]
    assert stopped_end["eventType"] == "ABORT"
    assert stopped_end["run"]["facets"]["errorMessage"]["message"] == "operator stopped it"
    assert "do-not-export-me" not in json.dumps(events)


def test_running_invocations_only_have_a_start_and_since_filters(dpt_backend, strict, tmp_path):
    dpt_core.get_tracker().start("still-running")
    events = list(iter_events(engine()))
    assert [e["eventType"] for e in events] == ["START"]
    assert list(iter_events(engine(), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))) == []
    assert len(list(iter_events(engine(), parse_since("1h")))) == 1


def test_write_events_writes_json_lines(dpt_backend, flow):
    out = io.StringIO()
    assert write_events(engine(), out) == 8
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    parsed = [json.loads(line) for line in lines]
    assert parsed == list(iter_events(engine()))


def test_openlineage_namespace_comes_from_the_openlineage_variable(dpt_backend, flow, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "survey-prod")
    events = list(iter_events(engine()))
    assert {e["job"]["namespace"] for e in events} == {"survey-prod"}


def test_dataset_names_follow_the_openlineage_naming_spec():
    assert dataset_name("file:///data/raw%20file.fits") == ("file", "/data/raw file.fits")
    assert dataset_name("s3://bucket/a/b.parquet") == ("s3://bucket", "a/b.parquet")
    assert dataset_name("gs://bucket/x") == ("gs://bucket", "x")
    assert dataset_name("postgres://db.example:5432/survey/public.detections") == (
        "postgres://db.example:5432",
        "survey.public.detections",
    )
    assert dataset_name("dagster://asset/raw/images") == ("dagster://asset", "raw/images")


def test_parse_since():
    now = dt.datetime(2024, 5, 10, 12, tzinfo=dt.UTC)
    assert parse_since("2d", now) == dt.datetime(2024, 5, 8, 12, tzinfo=dt.UTC)
    assert parse_since("90m", now) == dt.datetime(2024, 5, 10, 10, 30, tzinfo=dt.UTC)
    assert parse_since("2024-05-01T00:00:00+02:00") == dt.datetime(2024, 4, 30, 22, tzinfo=dt.UTC)
    for bad in ("yesterday", "3 parsecs", ""):
        with pytest.raises(BadSince, match="--since"):
            parse_since(bad)
    # past the calendar: ages before year 1 (OverflowError before), dates past it in UTC
    for outside in ("99999999999d", "1000000d", "9" * 400 + "d", "9999-12-31T23:00-05:00"):
        with pytest.raises(BadSince, match=r"--since .* is outside the calendar"):
            parse_since(outside, now)
    assert parse_since("700000d", now).year == 107  # within it: still an age


# --------------------------------------------------------------------------- PROV


def test_prov_json_structure(dpt_backend, flow):
    doc = prov_document(engine())
    assert doc["prefix"] == {"dpt": "urn:dpt:"}
    for section in (
        "entity",
        "activity",
        "agent",
        "used",
        "wasGeneratedBy",
        "wasDerivedFrom",
        "wasAssociatedWith",
    ):
        assert doc[section], section
    child = f"dpt:run_{flow['child']}"
    activity = doc["activity"][child]
    assert activity["prov:label"] == "nightly.calibrate" and activity["dpt:status"] == "success"
    assert dt.datetime.fromisoformat(activity["prov:startTime"]) <= dt.datetime.fromisoformat(
        activity["prov:endTime"]
    )
    assert activity["dpt:parent"] == f"dpt:run_{flow['parent']}"
    entities = {e["dpt:uri"]: key for key, e in doc["entity"].items()}
    raw, cal = entities[uri(flow["raw"])], entities[uri(flow["cal"])]
    assert doc["entity"][cal]["dpt:content_hash"] == dpt_core.hash_file(flow["cal"])
    assert doc["entity"][raw]["prov:type"] == {
        "$": "dpt:DataProductVersion",
        "type": "prov:QUALIFIED_NAME",
    }
    assert {"prov:activity": child, "prov:entity": raw} in doc["used"].values()
    assert any(
        g["prov:entity"] == cal and g["prov:activity"] == child
        for g in doc["wasGeneratedBy"].values()
    )
    assert {"prov:generatedEntity": cal, "prov:usedEntity": raw, "prov:activity": child} in doc[
        "wasDerivedFrom"
    ].values()
    agents = {
        a["prov:agent"] for a in doc["wasAssociatedWith"].values() if a["prov:activity"] == child
    }
    kinds = sorted(doc["agent"][a]["prov:type"]["$"] for a in agents)
    assert kinds == ["prov:Person", "prov:SoftwareAgent"]
    # every relation points at something the document declares
    declared = set(doc["entity"]) | set(doc["activity"]) | set(doc["agent"])
    for section in ("used", "wasGeneratedBy", "wasDerivedFrom", "wasAssociatedWith"):
        for relation_id, relation in doc[section].items():
            assert relation_id.startswith("_:")
            for key, value in relation.items():
                if key != "prov:time":
                    assert value in declared, (section, key, value)
    assert "do-not-export-me" not in json.dumps(doc)


def test_prov_since_filters_activities(dpt_backend, flow):
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert prov_document(engine(), future) == {"prefix": {"dpt": "urn:dpt:"}}


# --------------------------------------------------------------------------- graphs


def test_dot_and_mermaid_render_every_node_and_edge(dpt_backend, strict, tmp_path):
    raw, odd, out = tmp_path / "raw", tmp_path / 'we"ird <name>.txt', tmp_path / "out"
    with dpt_core.invocation("prep") as inv:
        raw.write_text("r")
        odd.write_text("o")
        inv.write(raw, odd)
    with dpt_core.invocation("combine") as inv:
        inv.read(raw, odd)
        out.write_text("x")
        inv.write(out)
    graph = lineage(out)
    dot = to_dot(graph)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == 2 and dot.count('[label="combine"]') == 2
    assert 'we\\"ird <name>.txt' in dot and "style=bold" in dot
    mermaid = to_mermaid(graph)
    lines = mermaid.splitlines()
    assert lines[0] == "flowchart LR"
    assert sum("-->" in line for line in lines) == 2
    assert (
        "we#quot;ird #lt;name#gt;.txt" in mermaid
        and '"' not in mermaid.split("we", 1)[1].split("<br/>")[0]
    )
    assert lines[-1] == "  class n0 root;"


# --------------------------------------------------------------------------- live plugin


@pytest.fixture
def live_plugin(strict):
    from dpt_core.plugins import load_plugins

    pm = load_plugins()
    registered = pm.get_plugin("openlineage") is None
    if registered:  # the entry point is not installed when running from a source tree
        pm.register(live, name="openlineage")
    live.reset()
    yield live
    live.reset()
    if registered:
        pm.unregister(name="openlineage")


def file_transport(monkeypatch, path: Path) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")


def test_live_plugin_emits_the_exported_events_through_a_file_transport(
    dpt_backend, dpt_env, live_plugin, monkeypatch, tmp_path
):
    events_file = tmp_path / "ol-events.jsonl"
    file_transport(monkeypatch, events_file)
    monkeypatch.chdir(tmp_path)
    raw, cal = tmp_path / "raw", tmp_path / "cal"
    raw.write_text("raw")
    with (
        dpt_core.invocation("nightly") as parent,
        dpt_core.invocation("nightly", task="calibrate") as child,
    ):
        child.read(raw)
        cal.write_text("cal")
        child.write(cal)
    with pytest.raises(RuntimeError), dpt_core.invocation("boom"):
        raise RuntimeError("kaput")
    emitted = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["eventType"], e["job"]["name"]) for e in emitted] == [
        ("START", "nightly"),
        ("START", "nightly.calibrate"),
        ("COMPLETE", "nightly.calibrate"),
        ("COMPLETE", "nightly"),
        ("START", "boom"),
        ("FAIL", "boom"),
    ]
    assert emitted[2]["run"]["runId"] == child.uuid
    assert emitted[2]["run"]["facets"]["parent"]["run"]["runId"] == parent.uuid
    assert emitted[5]["run"]["facets"]["errorMessage"]["message"] == "RuntimeError: kaput"
    # The same events as the export, dataset for dataset.
    exported = {(e["run"]["runId"], e["eventType"]): e for e in iter_events(engine())}
    for event in emitted:
        twin = dict(exported[(event["run"]["runId"], event["eventType"])])
        twin["eventTime"] = event["eventTime"]  # MariaDB keeps whole seconds only
        event["run"]["facets"].pop("tags", None)  # the client tags events with its own version
        assert_same(twin, event)
    # and the store recorded everything as usual
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 3


def test_live_plugin_is_silent_without_a_transport(
    dpt_backend, dpt_env, live_plugin, monkeypatch, tmp_path, caplog
):
    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG), dpt_core.invocation("quiet"):
        pass
    assert live.client() is None
    assert not [
        r
        for r in caplog.records
        if "openlineage" in r.name.lower() or "OpenLineage" in r.getMessage()
    ]
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 1


def test_a_process_with_no_transport_configured_never_imports_openlineage(dpt_env, tmp_path):
    """openlineage-python costs a fresh process about 0.4 s of imports: only a configured
    transport pays for it (the plugin is loaded from its entry point either way)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env["HOME"] = str(tmp_path)
    code = (
        "import sys, dpt_core\n"
        "with dpt_core.invocation('fresh') as inv:\n"
        "    inv.write('s3://bucket/fresh')\n"
        "print(sorted(m for m in sys.modules if m.startswith('openlineage')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE job = 'fresh'") == 1


def test_live_plugin_is_a_no_op_without_openlineage_installed(
    dpt_backend, dpt_env, live_plugin, monkeypatch, tmp_path
):
    file_transport(monkeypatch, tmp_path / "never.jsonl")
    monkeypatch.setitem(sys.modules, "openlineage.client", None)  # import now fails
    monkeypatch.setattr(live, "_module", live._UNSET)
    with dpt_core.invocation("offline"):
        pass
    assert live._module is None and not (tmp_path / "never.jsonl").exists()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 1


def test_live_emit_errors_are_logged_once_and_do_not_stop_tracking(
    dpt_env, live_plugin, monkeypatch, tmp_path, caplog
):
    monkeypatch.delenv("DPT_STRICT")
    dpt_core.plugin_api.reset()
    file_transport(monkeypatch, tmp_path / "no-such-dir" / "events.jsonl")
    with caplog.at_level(logging.WARNING, logger="dpt"):
        for name in ("one", "two"):
            with dpt_core.invocation(name):
                pass
    warnings = [r for r in caplog.records if "OpenLineage emit failed" in r.getMessage()]
    assert len(warnings) == 1
    assert [r.status for r in dpt_env.rows("SELECT status FROM invocations ORDER BY id")] == [
        "success",
        "success",
    ]


def test_live_emit_errors_raise_in_strict_mode(dpt_env, live_plugin, monkeypatch, tmp_path):
    file_transport(monkeypatch, tmp_path / "no-such-dir" / "events.jsonl")
    with (
        pytest.raises(dpt_core.TrackingError, match="OpenLineage emit failed"),
        dpt_core.invocation("strict"),
    ):
        pass


def test_live_plugin_console_transport(dpt_env, live_plugin, monkeypatch, caplog):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    run = str(uuid.uuid4())
    with (
        caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"),
        dpt_core.invocation("printed", uuid=run),
    ):
        pass
    printed = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "openlineage.client.transport.console"
    ]
    assert [(e["eventType"], e["run"]["runId"]) for e in printed] == [
        ("START", run),
        ("COMPLETE", run),
    ]
