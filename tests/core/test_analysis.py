"""Staleness, impact and environment diffs on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from pathlib import Path

import pytest

import dpt_core
from dpt_core.environment import clear_environment_cache
from dpt_core.store.analysis import (
    diff_environments,
    environment_of_run,
    impact_of_package,
    impact_of_product,
    parse_package,
    stale,
)
from dpt_core.uri import normalize_uri

DAY = 86_400


@pytest.fixture
def strict(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    return dpt_env


def uri(path) -> str:
    return normalize_uri(path)


def settle(path: Path) -> None:
    """Give ``path`` an mtime in the past, as files have in real pipelines.

    The stat cache trusts a hash only once the file is older than the hash by a
    couple of seconds (the "racy" window); old files are the common case.
    """
    old = time.time() - DAY
    os.utime(path, (old, old))


def step(job: str, reads=(), writes: dict | None = None) -> str:
    with dpt_core.invocation(job) as inv:
        if reads:
            inv.read(*reads)
        for path, text in (writes or {}).items():
            Path(path).write_text(text)
            settle(Path(path))
        if writes:
            inv.write(*writes)
    return inv.uuid


@pytest.fixture
def chain(strict, tmp_path):
    """raw -> cal -> lc, plus an unrelated product."""
    raw, cal, lc, other = (tmp_path / n for n in ("raw.fits", "cal.fits", "lc.fits", "other.fits"))
    step("ingest", writes={raw: "raw data"})
    step("calibrate", [raw], {cal: "calibrated"})
    step("lightcurve", [cal], {lc: "light curve"})
    step("other", writes={other: "unrelated"})
    return raw, cal, lc, other


def kinds(found, path) -> list[tuple[str, str]]:
    (item,) = [i for i in found if i["uri"] == uri(path)]
    return [(r["kind"], r["input"]) for r in item["reasons"]]


# --------------------------------------------------------------------------- staleness


def test_nothing_is_stale_and_nothing_is_hashed_when_inputs_are_unchanged(dpt_backend, chain):
    stats: dict[str, int] = {}
    assert stale(stats=stats) == []
    assert stats == {"products": 2, "inputs": 2, "files_checked": 2, "files_hashed": 0, "stale": 0}


def test_content_change_makes_the_product_stale_and_propagates(dpt_backend, chain):
    raw, cal, lc, _ = chain
    raw.write_text("new raw data!")
    stats: dict[str, int] = {}
    found = stale(stats=stats)
    assert [i["uri"] for i in found] == sorted([uri(cal), uri(lc)])
    assert kinds(found, cal) == [("changed", uri(raw))]
    (reason,) = next(i for i in found if i["uri"] == uri(cal))["reasons"]
    assert reason["current_hash"] == dpt_core.hash_file(raw) != reason["used_hash"]
    assert uri(raw) in reason["message"]
    (upstream,) = next(i for i in found if i["uri"] == uri(lc))["reasons"]
    assert (upstream["kind"], upstream["input"], upstream["cause"], upstream["via"]) == (
        "upstream",
        uri(raw),
        "changed",
        uri(cal),
    )
    assert stats["files_hashed"] == 1 and stats["stale"] == 2


def test_touched_but_identical_input_is_not_stale(dpt_backend, chain):
    raw = chain[0]
    os.utime(raw, None)  # new mtime, same bytes
    stats: dict[str, int] = {}
    assert stale(stats=stats) == []
    assert stats["files_hashed"] == 1


def test_newer_recorded_version_makes_consumers_stale(dpt_backend, chain):
    raw, cal, lc, _ = chain
    step("ingest", writes={raw: "second delivery"})
    found = stale()
    assert kinds(found, cal) == [("newer_version", uri(raw))]
    reason = next(i for i in found if i["uri"] == uri(cal))["reasons"][0]
    assert reason["latest_hash"] == dpt_core.hash_file(raw)
    assert [
        (r["kind"], r["cause"], r["via"])
        for r in next(i for i in found if i["uri"] == uri(lc))["reasons"]
    ] == [("upstream", "newer_version", uri(cal))]
    # Re-running the step that consumed it makes cal current again, and lc still stale.
    step("calibrate", [raw], {cal: "recalibrated"})
    found = stale()
    assert [i["uri"] for i in found] == [uri(lc)]
    assert kinds(found, lc) == [("newer_version", uri(cal))]


def test_deleted_input_is_a_reason(dpt_backend, chain):
    raw, cal, lc, _ = chain
    raw.unlink()
    found = stale()
    assert kinds(found, cal) == [("missing", uri(raw))]
    assert [
        (r["kind"], r["cause"]) for r in next(i for i in found if i["uri"] == uri(lc))["reasons"]
    ] == [("upstream", "missing")]


def test_targets_limit_the_answer(dpt_backend, chain):
    raw, cal, lc, other = chain
    raw.write_text("changed again")
    found = stale([lc])
    assert [i["uri"] for i in found] == [uri(lc)]
    assert [(r["kind"], r["input"], r["via"]) for r in found[0]["reasons"]] == [
        ("upstream", uri(raw), uri(cal))
    ]
    assert stale([other]) == []
    assert stale([raw]) == []  # raw has no recorded inputs
    with pytest.raises(dpt_core.NotFound, match="never-made"):
        stale([Path(raw).parent / "never-made"])


def test_rewriting_a_product_from_its_previous_version_is_not_stale(dpt_backend, strict, tmp_path):
    log = tmp_path / "log.txt"
    step("start", writes={log: "1"})
    step("append", [log], {log: "1 2"})
    assert stale() == []


def test_second_pass_over_many_unchanged_products_is_stat_only(dpt_backend, strict, tmp_path):
    sources = [tmp_path / f"in{i}" for i in range(25)]
    for i, src in enumerate(sources):
        step(f"src{i}", writes={src: f"input {i}"})
        step(f"use{i}", [src], {tmp_path / f"out{i}": f"output {i}"})
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    assert stale(stats=first) == []
    assert stale(stats=second) == []
    assert first["files_checked"] == second["files_checked"] == 25
    assert second["files_hashed"] == 0 and second["products"] == 25


def test_changed_files_are_hashed_in_batches_and_one_that_fails_is_named(
    dpt_backend, strict, tmp_path, monkeypatch
):
    """Re-timestamped inputs are re-hashed a batch per cache transaction; a file that
    cannot be hashed is reported as unreadable, every other file of its batch still
    counts (the fault is injected: as root every file is readable)."""
    from dpt_core import hashing
    from dpt_core.errors import HashError
    from dpt_core.store import analysis

    monkeypatch.setattr(analysis, "_HASH_BATCH", 4)
    sources = [tmp_path / f"in{i}" for i in range(10)]
    for i, src in enumerate(sources):
        step(f"src{i}", writes={src: f"input {i}"})
        step(f"use{i}", [src], {tmp_path / f"out{i}": f"output {i}"})
    for src in sources:  # the same bytes, a new mtime: each must be re-hashed
        later = time.time() - DAY / 2
        os.utime(src, (later, later))
    sources[3].write_text("changed")
    settle(sources[3])
    broken = os.fsencode(sources[6])
    real = hashing._hash_regular

    def failing(path, algorithm):
        if path == broken:
            raise HashError(f"cannot hash {os.fsdecode(path)!r}: injected fault")
        return real(path, algorithm)

    monkeypatch.setattr(hashing, "_hash_regular", failing)
    calls: list[tuple[int, int]] = []
    stats: dict[str, int] = {}
    found = stale(stats=stats, progress=lambda done, total: calls.append((done, total)))
    assert stats["files_hashed"] == 9  # all but the broken one
    assert kinds(found, tmp_path / "out3") == [("changed", uri(sources[3]))]
    assert kinds(found, tmp_path / "out6") == [("unreadable", uri(sources[6]))]
    assert {i["uri"] for i in found} == {uri(tmp_path / "out3"), uri(tmp_path / "out6")}
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]  # a call per batch, then done


# --------------------------------------------------------------------------- impact


def test_impact_of_a_product_is_everything_downstream(dpt_backend, chain, strict):
    raw, cal, lc, _ = chain
    items = impact_of_product(raw)
    assert [(i["uri"], i["depth"]) for i in items] == [(uri(cal), 1), (uri(lc), 2)]
    runs = {r.job: r.uuid for r in strict.rows("SELECT job, uuid FROM invocations")}
    assert items[0]["runs"] == [runs["calibrate"]] and items[1]["runs"] == [runs["lightcurve"]]
    assert impact_of_product(lc) == []


def fake_distribution(site: Path, name: str, version: str) -> Path:
    path = site / f"{name}-{version}.dist-info"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def two_environments(strict, tmp_path, monkeypatch):
    """Run A (fakepkg 1.0) makes x; run B (fakepkg 2.0, extra otherpkg) makes y from x."""
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(tmp_path)  # outside any git work tree: no git facet that could move
    x, y = tmp_path / "x.dat", tmp_path / "y.dat"

    facets = {"gpu": {"cuda": "12.1"}, "site": "lab"}

    class FacetPlugin:
        @dpt_core.hookimpl
        def dpt_collect_environment(self):
            return json.loads(json.dumps(facets))

    from dpt_core.plugins import load_plugins

    pm = load_plugins()
    plugin = FacetPlugin()
    pm.register(plugin, name="test-facets")

    def environment(**variables: str | None) -> None:
        for key, value in variables.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        clear_environment_cache()
        dpt_core.plugin_api.reset()

    try:
        first = fake_distribution(site, "fakepkg", "1.0")
        environment(
            PIPELINE_COLOR="red", MY_API_TOKEN="secret-one", ONLY_IN_A="1", SAME_SECRET_KEY="s"
        )
        run_a = step("make-x", writes={x: "x"})
        first.rename(site / "fakepkg-2.0.dist-info")
        fake_distribution(site, "otherpkg", "0.1")
        facets["gpu"]["cuda"] = "12.4"
        environment(PIPELINE_COLOR="blue", MY_API_TOKEN="secret-two", ONLY_IN_A=None, ONLY_IN_B="2")
        run_b = step("make-y", [x], {y: "y"})
        yield run_a, run_b, x, y
    finally:
        pm.unregister(plugin)
        clear_environment_cache()


def test_impact_of_a_package_version(dpt_backend, two_environments):
    run_a, run_b, x, y = two_environments
    old = impact_of_package("fakepkg", "1.0")
    assert [(i["uri"], i["depth"], i["direct"], i["runs"]) for i in old] == [
        (uri(x), 0, True, [run_a]),
        (uri(y), 1, False, [run_b]),
    ]
    new = impact_of_package("FakePkg==2.0")
    assert [(i["uri"], i["direct"]) for i in new] == [(uri(y), True)]
    assert [(i["uri"], i["direct"]) for i in impact_of_package("fakepkg")] == [
        (uri(x), True),
        (uri(y), True),
    ]
    assert impact_of_package("fakepkg", "3.0") == []
    assert impact_of_package("surely-not-installed-anywhere") == []


def test_impact_of_an_installed_package(dpt_backend, chain):
    raw, cal, lc, other = chain
    pinned = importlib.metadata.version("pytest")
    items = impact_of_package("pytest", pinned)
    assert {i["uri"] for i in items} == {uri(raw), uri(cal), uri(lc), uri(other)}
    assert all(i["direct"] for i in items)
    assert impact_of_package("pytest", pinned + ".post999") == []


def test_parse_package():
    assert parse_package("NumPy==2.1.0") == ("numpy", "2.1.0")
    assert parse_package("zope.interface") == ("zope-interface", None)
    for bad in ("", "==1", "numpy==", "num py"):
        with pytest.raises(ValueError, match="NAME==VERSION"):
            parse_package(bad)


# --------------------------------------------------------------------------- environments


def test_env_diff_reports_packages_variables_and_facets(dpt_backend, two_environments):
    run_a, run_b, _, _ = two_environments
    diff = diff_environments(run_a, run_b)
    assert diff["same"] is False and diff["a"]["uuid"] == run_a and diff["b"]["uuid"] == run_b
    assert diff["a"]["fingerprint"] != diff["b"]["fingerprint"]
    assert diff["fields"] == {}
    assert diff["packages"] == {
        "added": {"otherpkg": "0.1"},
        "removed": {},
        "changed": {"fakepkg": {"a": "1.0", "b": "2.0"}},
    }
    variables = diff["variables"]
    assert variables["added"] == {"ONLY_IN_B": "2"}
    assert variables["removed"] == {"ONLY_IN_A": "1"}
    assert variables["changed"] == {
        "MY_API_TOKEN": {"redacted": True},
        "PIPELINE_COLOR": {"a": "red", "b": "blue"},
    }
    assert diff["facets"]["changed"] == {"gpu.cuda": {"a": "12.1", "b": "12.4"}}
    text = json.dumps(diff)
    assert "secret-one" not in text and "secret-two" not in text
    same = diff_environments(run_a, run_a)
    assert (
        same["same"] is True
        and same["variables"]["changed"] == {}
        and same["packages"]["changed"] == {}
    )


def test_env_show(dpt_backend, two_environments):
    run_a, _, _, _ = two_environments
    shown = environment_of_run(run_a[:13])  # a UUID prefix (with its dash: never all digits)
    assert shown["run"]["uuid"] == run_a and shown["run"]["job"] == "make-x"
    env = shown["environment"]
    assert env["packages"]["fakepkg"] == "1.0" and "otherpkg" not in env["packages"]
    assert env["packages"]["pytest"] == importlib.metadata.version("pytest")
    assert env["variables"]["PIPELINE_COLOR"] == "red"
    assert "MY_API_TOKEN" in env["redacted"] and env["variables"]["MY_API_TOKEN"] is None
    assert env["facets"]["gpu"] == {"cuda": "12.1"}
    assert "secret-one" not in json.dumps(shown)


def test_env_errors_name_the_run(dpt_backend, strict):
    with pytest.raises(dpt_core.NotFound, match="no run '999999' is recorded"):
        environment_of_run("999999")
    handle = dpt_core.get_tracker().start("elsewhere", environment=False)
    handle.finish()
    with pytest.raises(dpt_core.NotFound, match="has no recorded environment"):
        environment_of_run(handle.uuid)
    with pytest.raises(dpt_core.NotFound, match="has no recorded environment"):
        diff_environments(handle.uuid, handle.uuid)
