"""``dpt lineage|stale|impact|env|export``: JSON output, human output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import dpt_core
from dpt_core.cli import build_cli
from dpt_core.environment import clear_environment_cache
from dpt_core.uri import normalize_uri

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def strict(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_STRICT", "1")
    monkeypatch.delenv("OPENLINEAGE_NAMESPACE", raising=False)
    dpt_core.plugin_api.reset()
    return dpt_env


def dpt(*args: str, code: int = 0):
    result = CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def uri(path) -> str:
    return normalize_uri(path)


def step(job: str, reads=(), writes: dict | None = None) -> str:
    with dpt_core.invocation(job) as inv:
        if reads:
            inv.read(*reads)
        for path, text in (writes or {}).items():
            Path(path).write_text(text)
            old = time.time() - 86_400
            os.utime(path, (old, old))
        if writes:
            inv.write(*writes)
    return inv.uuid


@pytest.fixture
def chain(strict, tmp_path):
    raw, cal, lc = tmp_path / "raw.fits", tmp_path / "cal.fits", tmp_path / "lc.fits"
    runs = {
        "ingest": step("ingest", writes={raw: "raw"}),
        "calibrate": step("calibrate", [raw], {cal: "cal"}),
        "lightcurve": step("lightcurve", [cal], {lc: "lc"}),
    }
    return raw, cal, lc, runs


# --------------------------------------------------------------------------- lineage


def test_lineage_json_formats(dpt_backend, chain):
    raw, cal, lc, runs = chain
    data = json.loads(dpt("lineage", str(lc), "--upstream", "--json").stdout)
    assert (data["root"], data["direction"]) == (uri(lc), "upstream")
    assert [(n["uri"], n["depth"]) for n in data["nodes"]] == [
        (uri(lc), 0),
        (uri(cal), 1),
        (uri(raw), 2),
    ]
    assert [(e["parent"], e["child"], e["invocation"]) for e in data["edges"]] == [
        (uri(cal), uri(lc), runs["lightcurve"]),
        (uri(raw), uri(cal), runs["calibrate"]),
    ]
    assert json.loads(dpt("lineage", str(lc), "--format", "json").stdout) == data
    one = json.loads(dpt("lineage", str(lc), "--depth", "1", "--json").stdout)
    assert [n["uri"] for n in one["nodes"]] == [uri(lc), uri(cal)]
    down = json.loads(dpt("lineage", str(raw), "--downstream", "--json").stdout)
    assert down["direction"] == "downstream" and [n["depth"] for n in down["nodes"]] == [0, 1, 2]
    version = data["nodes"][1]["version"]
    pinned = json.loads(dpt("lineage", str(cal), "--version", version[:10], "--json").stdout)
    assert [n["version"] for n in pinned["nodes"] if n["depth"] == 0] == [version]


def test_lineage_tree_dot_and_mermaid(dpt_backend, chain):
    raw, cal, lc, runs = chain
    tree = dpt("lineage", str(lc)).stdout
    assert str(lc) in tree.splitlines()[0] and "made from" in tree.splitlines()[0]
    assert "cal.fits" in tree and "raw.fits" in tree and "calibrate" in tree
    assert runs["calibrate"][:8] in tree
    dot = dpt("lineage", str(lc), "--format", "dot").stdout
    assert dot.startswith("digraph lineage {") and dot.count(" -> ") == 2
    mermaid = dpt("lineage", str(raw), "--downstream", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->") == 2


def test_lineage_errors_are_one_line_and_exit_2(strict, tmp_path):
    step("one", writes={tmp_path / "known": "k"})
    missing = one_line_error(dpt("lineage", str(tmp_path / "missing"), code=2))
    assert "no product" in missing and "missing" in missing
    bad_version = one_line_error(
        dpt("lineage", str(tmp_path / "known"), "--version", "abcdef12", code=2)
    )
    assert "has no version 'abcdef12'" in bad_version
    assert (
        "Invalid value" in dpt("lineage", str(tmp_path / "known"), "--depth", "-1", code=2).stderr
    )


def quickstart(env: dict[str, str], workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_the_quickstart_run_twice_shows_one_tree(strict, tmp_path):
    """Re-running an unchanged pipeline: the version on disk once; the history one flag away."""
    env = dict(os.environ, **strict.environ(), PYTHONPATH=str(ROOT))
    work = tmp_path / "work"
    quickstart(env, work)
    quickstart(env, work)
    lc, cal, raw, flat = (
        work / n for n in ("lightcurve.csv", "calibrated.csv", "raw.csv", "flat.txt")
    )
    jobs = [r.job for r in strict.rows("SELECT job FROM invocations ORDER BY id")]
    assert jobs == ["observe", "calibrate", "lightcurve"] * 2
    newest = {r.job: r.uuid for r in strict.rows("SELECT job, uuid FROM invocations ORDER BY id")}

    tree = dpt("lineage", str(lc), "--upstream").stdout
    assert [tree.count(str(p)) for p in (lc, cal, raw, flat)] == [1, 1, 1, 1], tree
    assert "version on disk" in tree and "--all-versions" in tree
    data = json.loads(dpt("lineage", str(lc), "--upstream", "--json").stdout)
    assert sorted((n["uri"], n["depth"], n["produced_by"]) for n in data["nodes"]) == [
        (uri(cal), 1, newest["calibrate"]),
        (uri(flat), 2, newest["observe"]),
        (uri(lc), 0, newest["lightcurve"]),
        (uri(raw), 2, newest["observe"]),
    ]
    assert len(data["edges"]) == 3 and set(data) == {"root", "direction", "depth", "nodes", "edges"}
    down = dpt("lineage", str(raw), "--downstream").stdout
    assert [down.count(str(p)) for p in (raw, cal, lc)] == [1, 1, 1], down

    every = json.loads(dpt("lineage", str(lc), "--all-versions", "--json").stdout)
    assert len(every["nodes"]) == 8 and len(every["edges"]) == 6
    assert len({n["content_hash"] for n in every["nodes"] if n["depth"] == 0}) == 1
    both = dpt("lineage", str(lc), "--all-versions").stdout
    assert both.count(str(cal)) == 2 and both.count("version ") == 2, both


def test_lineage_all_versions_excludes_version(strict, tmp_path):
    step("one", writes={tmp_path / "one": "1"})
    result = dpt("lineage", str(tmp_path / "one"), "--all-versions", "--version", "abcdef", code=2)
    assert "give --version V or --all-versions, not both" in result.stderr


# --------------------------------------------------------------------------- stale


def test_stale_json_and_table(dpt_backend, chain):
    """Exit 1 when something is stale, 0 when nothing is, --json or not (git diff --exit-code)."""
    raw, cal, lc, _ = chain
    assert json.loads(dpt("stale", "--json", code=0).stdout) == []
    assert "nothing is stale" in dpt("stale", code=0).stdout
    raw.write_text("new raw")
    found = json.loads(dpt("stale", "--json", code=1).stdout)
    assert [(i["uri"], [r["kind"] for r in i["reasons"]]) for i in found] == [
        (uri(cal), ["changed"]),
        (uri(lc), ["upstream"]),
    ]
    assert found[1]["reasons"][0]["input"] == uri(raw)
    only = json.loads(dpt("stale", str(lc), "--json", code=1).stdout)
    assert [i["uri"] for i in only] == [uri(lc)]
    table = dpt("stale", code=1).stdout
    assert "2 stale product(s)" in table and "changed on disk" in table
    assert "1 re-hashed" in table
    raw.write_text("raw")  # put back: nothing is stale again
    assert json.loads(dpt("stale", "--json", code=0).stdout) == []
    assert "nothing is stale" in dpt("stale", str(lc), code=0).stdout


def test_stale_unknown_target_exits_2(strict, tmp_path):
    message = one_line_error(dpt("stale", str(tmp_path / "nope.fits"), code=2))
    assert "nope.fits" in message and "no product" in message


def test_stale_that_cannot_reach_its_database_exits_2_not_1(dpt_env, tmp_path):
    """1 means "something is stale": a check that could not be made must not look like one."""
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "stale", "--json"],
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            DPT_DATABASE_URL="postgresql://nobody@127.0.0.1:1/dpt",
            DPT_SPOOL_DIR=str(tmp_path / "spool"),
        ),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "cannot reach the database" in result.stderr


# --------------------------------------------------------------------------- impact


def test_impact_by_product_and_package(dpt_backend, chain):
    raw, cal, lc, runs = chain
    items = json.loads(dpt("impact", "--product", str(raw), "--json").stdout)
    assert [(i["uri"], i["depth"], i["runs"]) for i in items] == [
        (uri(cal), 1, [runs["calibrate"]]),
        (uri(lc), 2, [runs["lightcurve"]]),
    ]
    by_package = json.loads(dpt("impact", "--package", "pytest", "--json").stdout)
    assert {i["uri"] for i in by_package} == {uri(raw), uri(cal), uri(lc)}
    assert all(i["direct"] for i in by_package)
    result = dpt("impact", "--package", "not-a-real-package==1.0", "--json")
    assert json.loads(result.stdout) == []
    assert "no recorded environment has not-a-real-package==1.0" in result.stderr
    table = dpt("impact", "--product", str(raw)).stdout
    assert "cal.fits" in table and "lc.fits" in table


def test_impact_usage_errors(strict, tmp_path):
    assert "exactly one of" in dpt("impact", code=2).stderr
    assert "exactly one of" in dpt("impact", "--product", "a", "--package", "b", code=2).stderr
    assert "NAME==VERSION" in dpt("impact", "--package", "numpy==", code=2).stderr
    assert "no product" in one_line_error(dpt("impact", "--product", str(tmp_path / "x"), code=2))


# --------------------------------------------------------------------------- env


@pytest.fixture
def two_runs(strict, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def environment(**variables: str) -> None:
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        clear_environment_cache()
        dpt_core.plugin_api.reset()

    environment(PIPELINE_COLOR="red", MY_API_TOKEN="first-secret")
    a = step("a", writes={tmp_path / "a": "a"})
    environment(PIPELINE_COLOR="blue", MY_API_TOKEN="second-secret")
    b = step("b", writes={tmp_path / "b": "b"})
    yield a, b
    clear_environment_cache()


def test_env_show_and_diff(dpt_backend, two_runs):
    a, b = two_runs
    shown = json.loads(dpt("env", "show", a, "--json").stdout)
    assert (
        shown["run"]["uuid"] == a and shown["environment"]["variables"]["PIPELINE_COLOR"] == "red"
    )
    assert "MY_API_TOKEN" in shown["environment"]["redacted"]
    diff = json.loads(dpt("env", "diff", a[:13], b[:13], "--json").stdout)  # UUID prefixes
    assert diff["variables"]["changed"] == {
        "MY_API_TOKEN": {"redacted": True},
        "PIPELINE_COLOR": {"a": "red", "b": "blue"},
    }
    human = dpt("env", "diff", a, b).stdout
    assert "PIPELINE_COLOR" in human and "blue" in human and "<redacted, changed>" in human
    human_show = dpt("env", "show", b).stdout
    assert "pytest" in human_show and "<redacted>" in human_show
    for text in (human, human_show, json.dumps(diff), json.dumps(shown)):
        assert "first-secret" not in text and "second-secret" not in text
    assert "same environment" in dpt("env", "diff", a, a).stdout


def test_env_unknown_run_exits_2(strict):
    assert "no run 'feedbeef' is recorded" in one_line_error(dpt("env", "show", "feedbeef", code=2))
    assert "no run '424242' is recorded" in one_line_error(
        dpt("env", "diff", "424242", "424243", code=2)
    )


# --------------------------------------------------------------------------- export


def test_export_openlineage_and_prov(dpt_backend, chain, tmp_path):
    _, _, _, runs = chain
    out = tmp_path / "events.jsonl"
    result = dpt("export", "--format", "openlineage", "-o", str(out))
    assert "wrote 6 OpenLineage event(s) for 3 run(s)" in result.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["eventType"], e["run"]["runId"]) for e in events] == [
        (kind, runs[job])
        for job in ("ingest", "calibrate", "lightcurve")
        for kind in ("START", "COMPLETE")
    ]
    assert dpt("export", "--format", "openlineage", "--since", "1d").stdout.count("\n") == 6
    assert dpt("export", "--format", "openlineage", "--since", "2999-01-01").stdout == ""
    doc = json.loads(dpt("export", "--format", "prov").stdout)
    assert {f"dpt:run_{u}" for u in runs.values()} == set(doc["activity"])
    assert len(doc["wasDerivedFrom"]) == 2


def test_export_bad_since_exits_2(strict):
    message = one_line_error(dpt("export", "--format", "prov", "--since", "last tuesday", code=2))
    assert "--since 'last tuesday'" in message
    assert "Missing option '--format'" in dpt("export", code=2).stderr


# --------------------------------------------------------------------------- help, subprocess


@pytest.mark.parametrize(
    "command", [["lineage"], ["stale"], ["impact"], ["env", "show"], ["env", "diff"], ["export"]]
)
def test_help_has_examples(command):
    text = dpt(*command, "--help").stdout
    assert "Example" in text and "dpt " + command[0] in text


def test_real_process_exit_codes(strict, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "lineage", str(tmp_path / "ghost.fits"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "no product" in one_line_error(result)
    step("one", writes={tmp_path / "one": "1"})
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "lineage", str(tmp_path / "one"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["uri"] == uri(tmp_path / "one")
