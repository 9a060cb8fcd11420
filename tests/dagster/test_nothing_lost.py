"""A target that cannot be recorded costs only itself; no invocation outlives its Dagster run."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_corpus import Corpus, Step

import dpt_core


def _version_metadata(db: Any, uri: str) -> dict[str, Any]:
    [row] = db.rows(
        "SELECT v.metadata, v.content_hash FROM data_product_versions v "
        "JOIN data_products p ON p.id = v.product_id WHERE p.uri = :u",
        u=uri,
    )
    meta = json.loads(row.metadata) if isinstance(row.metadata, str) else dict(row.metadata)
    return {**meta, "content_hash": row.content_hash}


def test_a_file_uri_of_another_host_is_recorded_as_declared(corpus: Corpus) -> None:
    @dg.asset
    def team_a_stats() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"dpt/path": "file://incoming/player-stats/team_a.csv"}
        )

    @dg.asset(deps=[team_a_stats])
    def league_table() -> None: ...

    corpus.use(team_a_stats, league_table)
    assert corpus.materialize("stats", [team_a_stats, league_table]).success
    corpus.tick()

    remote = "file://incoming/player-stats/team_a.csv"
    expected = {
        ("team_a_stats", None, "stats"): Step("success", [], [remote]),
        ("league_table", None, "stats"): Step(
            "success", [f"{remote} @ stats"], ["dagster://asset/league_table"]
        ),
    }
    corpus.report("dpt/path: a file:// URI of another host", expected, {"stats": "success"})
    meta = _version_metadata(corpus.db, remote)
    assert meta["content_hash"] is None
    assert "incoming" in meta["dpt/unhashed"]


def test_an_unusable_dpt_path_costs_only_itself(
    corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    @dg.asset
    def good() -> dg.MaterializeResult:
        os.makedirs("data", exist_ok=True)
        Path("data/good.txt").write_text("good\n")
        return dg.MaterializeResult(metadata={"dpt/path": os.path.abspath("data/good.txt")})

    @dg.asset(deps=[good])
    def bad() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dpt/path": "file:///data/bad%00name.txt"})

    @dg.asset(deps=[bad])
    def after_bad() -> None: ...

    corpus.use(good, bad, after_bad)
    assert corpus.materialize("run", [good, bad, after_bad]).success
    messages = corpus.tick()
    assert "recorded 3 materialisation(s), 1 finished run(s)" in messages[0]
    assert "tracking error" not in messages[0]

    expected = {
        ("good", None, "run"): Step("success", [], ["file:data/good.txt"]),
        # Its file cannot be a product: the asset is, under its dagster:// URI.
        ("bad", None, "run"): Step(
            "success", ["file:data/good.txt @ run"], ["dagster://asset/bad"]
        ),
        ("after_bad", None, "run"): Step(
            "success", ["dagster://asset/bad @ run"], ["dagster://asset/after_bad"]
        ),
    }
    corpus.report("dpt/path that names no product (NUL byte)", expected, {"run": "success"})
    meta = _version_metadata(corpus.db, "dagster://asset/bad")
    assert meta["dpt/path"] == "file:///data/bad%00name.txt"
    assert "NUL" in meta["dpt/unrecorded_path"]
    assert "file:///data/bad%00name.txt" in caplog.text


def test_an_unusable_dpt_path_raises_in_strict_mode(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dg.asset
    def bad() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dpt/path": "file:///data/bad%00name.txt"})

    corpus.use(bad)
    assert corpus.materialize("run", [bad]).success
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    with pytest.raises(Exception, match="NUL"):
        corpus.tick()


def test_an_asset_that_opened_its_invocation_and_made_nothing_is_closed(corpus: Corpus) -> None:
    @dg.asset(output_required=False)
    def maybe_report():
        """Reads its input, then decides there is nothing to report (no output)."""
        with dpt_core.invocation() as inv:  # joins this materialisation's invocation
            inv.read(os.path.abspath("data/input.txt"))
        yield from ()

    @dg.asset
    def fails_after_tracking(context: dg.AssetExecutionContext) -> None:
        with dpt_core.invocation() as inv:
            inv.read(os.path.abspath("data/input.txt"))
        raise RuntimeError("gave up after reading")

    os.makedirs("data", exist_ok=True)
    Path("data/input.txt").write_text("input\n")
    corpus.use(maybe_report, fails_after_tracking)
    assert corpus.materialize("quiet", [maybe_report]).success
    assert not corpus.materialize("broken", [fails_after_tracking]).success
    # Before any tick both steps are open, from their own process.
    assert set(corpus.running()) == {
        (None, "broken"),
        (None, "quiet"),
        ("fails_after_tracking", "broken"),
        ("maybe_report", "quiet"),
    }
    corpus.tick()

    expected = {
        ("maybe_report", None, "quiet"): Step("skipped", ["file:data/input.txt @ -"]),
        ("fails_after_tracking", None, "broken"): Step("failed", ["file:data/input.txt @ -"]),
    }
    corpus.report(
        "in-asset dpt calls, then no materialisation (optional output / failure)",
        expected,
        {"quiet": "success", "broken": "failed"},
    )
    [error] = corpus.db.rows("SELECT error FROM invocations WHERE task = 'maybe_report'")
    assert "without materialising" in error.error


SAME_PROCESS = """
import sys
import dagster as dg
import dpt_core
import dpt_dagster


@dg.asset
def noted() -> None:
    with dpt_core.invocation() as inv:  # opened from the asset, completed by the sensor
        inv.read(sys.argv[1])


defs = dg.Definitions(assets=[noted], sensors=[dpt_dagster.dpt_asset_sensor()])
with dg.DagsterInstance.get() as instance:
    assert dg.materialize([noted], instance=instance).success
    sensor = defs.resolve_sensor_def("dpt_tracker")
    print(sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs)).skip_message)
"""


def test_the_sensor_closes_an_in_asset_invocation_for_good(
    dpt_env: Any, dagster_home: Path, tmp_path: Path
) -> None:
    """Materialised and recorded in one process, which then exits: the sensor's outcome
    stands (the asset's process handed the invocation over to the sensor)."""
    import subprocess
    import sys

    script = tmp_path / "same_process.py"
    script.write_text(SAME_PROCESS)
    source = tmp_path / "input.txt"
    source.write_text("input\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    env.update(dpt_env.environ())
    done = subprocess.run(
        [sys.executable, str(script), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recorded 1 materialisation(s), 1 finished run(s)" in done.stdout
    rows = dpt_env.rows("SELECT task, status, error FROM invocations ORDER BY id")
    assert [(r.task, r.status, r.error) for r in rows] == [
        (None, "success", None),
        ("noted", "success", None),
    ]
