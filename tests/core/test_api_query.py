"""``dpt_core.runs|show|stale|impact|env_diff``: typed results equal to the CLI's ``--json``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import dpt_core
from dpt_core.cli import build_cli
from dpt_core.environment import clear_environment_cache
from dpt_core.query import (
    EnvironmentDiff,
    ImpactedProduct,
    Product,
    ProductVersion,
    Run,
    StaleProduct,
)


def cli_json(*args: str):
    result = CliRunner().invoke(build_cli(), [*args, "--json"], catch_exceptions=False)
    assert result.exit_code in (0, 1), (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def as_json(value):
    """What ``--json`` would print for ``value`` (a result, or a list of results)."""
    data = [v.to_dict() for v in value] if isinstance(value, list) else value.to_dict()
    return json.loads(json.dumps(data, default=str))


def aged(path: Path, text: str) -> Path:
    path.write_text(text)
    old = time.time() - 86_400
    os.utime(path, (old, old))
    return path


@pytest.fixture
def pipeline(dpt_env, tmp_path, monkeypatch):
    """raw -> cal -> lc over two environments (a variable and a secret differ), then raw edited."""

    def environment(**variables: str) -> None:
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        clear_environment_cache()
        dpt_core.plugin_api.reset()

    raw, cal, lc = tmp_path / "raw.fits", tmp_path / "cal.fits", tmp_path / "lc.fits"
    environment(PIPELINE_COLOR="red", MY_API_TOKEN="first-secret")
    with dpt_core.invocation("observe", parameters={"seed": 1}) as first:
        first.write(aged(raw, "raw v1"))
    with dpt_core.invocation("calibrate", task="ccd", parameters={"gain": 1.5}) as second:
        second.read(raw)
        second.write(aged(cal, "cal"))
    environment(PIPELINE_COLOR="blue", MY_API_TOKEN="second-secret")
    with dpt_core.invocation("lightcurve") as third:
        third.read(cal)
        third.write(aged(lc, "lc"))
    with pytest.raises(RuntimeError), dpt_core.invocation("broken"):
        raise RuntimeError("boom")
    raw.write_text("raw v2, edited by hand")  # cal and lc are stale now
    yield {"raw": raw, "cal": cal, "lc": lc, "runs": (first, second, third)}
    clear_environment_cache()


SQLITE_AND_POSTGRES = pytest.mark.parametrize(
    "dpt_backend", ["sqlite", "postgresql"], indirect=True
)


@SQLITE_AND_POSTGRES
def test_every_query_equals_the_cli_json(dpt_backend, pipeline):
    first, second, third = pipeline["runs"]
    raw, cal, lc = pipeline["raw"], pipeline["cal"], pipeline["lc"]

    listed = dpt_core.runs()
    assert all(isinstance(r, Run) for r in listed)
    assert [r.job for r in listed] == ["broken", "lightcurve", "calibrate", "observe"]
    assert as_json(listed) == cli_json("runs")
    failed = dpt_core.runs(status="failed", limit=5)
    assert [(r.job, r.error) for r in failed] == [("broken", "RuntimeError: boom")]
    assert as_json(failed) == cli_json("runs", "--status", "failed", "--limit", "5")
    assert as_json(dpt_core.runs(job="calibrate", orchestrator="python")) == cli_json(
        "runs", "--job", "calibrate", "--orchestrator", "python"
    )

    product = dpt_core.show(cal)
    assert isinstance(product, Product)
    (version,) = product.versions
    assert isinstance(version, ProductVersion) and version.produced_by is not None
    assert (version.produced_by.uuid, version.produced_by.task) == (second.uuid, "ccd")
    assert version.produced_by.parameters == {"gain": 1.5}
    assert [p.uri for p in version.parents] == [raw.as_uri()]
    assert version.environment is not None and version.environment.python
    assert as_json(product) == cli_json("show", str(cal))
    run = dpt_core.show(second.uuid[:10])
    assert isinstance(run, Run) and run.job == "calibrate"
    assert as_json(run) == cli_json("show", second.uuid[:10])

    found = dpt_core.stale()
    assert all(isinstance(s, StaleProduct) for s in found)
    assert [s.uri for s in found] == sorted([cal.as_uri(), lc.as_uri()])
    by_uri = {s.uri: s for s in found}
    assert [r["kind"] for r in by_uri[cal.as_uri()].reasons] == ["changed"]
    assert [r["kind"] for r in by_uri[lc.as_uri()].reasons] == ["upstream"]
    assert by_uri[lc.as_uri()].reasons[0]["via"] == cal.as_uri()
    assert as_json(found) == cli_json("stale")
    assert as_json(dpt_core.stale(lc)) == cli_json("stale", str(lc))

    downstream = dpt_core.impact(raw)
    assert all(isinstance(i, ImpactedProduct) for i in downstream)
    assert [(i.uri, i.depth, i.direct) for i in downstream] == [
        (cal.as_uri(), 1, None),
        (lc.as_uri(), 2, None),
    ]
    assert as_json(downstream) == cli_json("impact", "--product", str(raw))
    by_package = dpt_core.impact(package="pytest")
    assert {i.uri for i in by_package if i.direct} == {raw.as_uri(), cal.as_uri(), lc.as_uri()}
    assert as_json(by_package) == cli_json("impact", "--package", "pytest")

    diff = dpt_core.env_diff(second.uuid, third.uuid)
    assert isinstance(diff, EnvironmentDiff) and not diff.same
    assert diff.variables.changed["PIPELINE_COLOR"] == {"a": "red", "b": "blue"}
    assert diff.variables.changed["MY_API_TOKEN"] == {"redacted": True}
    assert as_json(diff) == cli_json("env", "diff", second.uuid, third.uuid)
    by_objects = dpt_core.env_diff(listed[2], third)  # a Run and a handle name runs too
    assert as_json(by_objects) == as_json(diff)
    assert "first-secret" not in json.dumps(as_json(diff))


def test_results_are_frozen_and_asdict_matches_to_dict(pipeline):
    (run, *_) = dpt_core.runs(limit=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "success"  # type: ignore[misc]
    product = dpt_core.show(pipeline["lc"])
    assert json.loads(json.dumps(dataclasses.asdict(product))) == product.to_dict()


def test_bad_query_arguments_are_clear_errors(pipeline, tmp_path):
    with pytest.raises(ValueError, match="status 'done' is unknown: use one of running"):
        dpt_core.runs(status="done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be a whole number from 1 to 100000"):
        dpt_core.runs(limit=0)
    with pytest.raises(ValueError, match="one of the two"):
        dpt_core.impact()
    with pytest.raises(ValueError, match="not a package"):
        dpt_core.impact(package="numpy>=2")
    with pytest.raises(dpt_core.NotFound, match="neither a recorded product nor a run id"):
        dpt_core.show(tmp_path / "never-made.fits")
    with pytest.raises(dpt_core.NotFound, match="no run"):
        dpt_core.env_diff("feedbeef", 1)
