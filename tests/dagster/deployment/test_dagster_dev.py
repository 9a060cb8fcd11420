"""dpt in a real Dagster deployment: ``dagster dev`` (webserver, daemon, code server),
runs launched through the GraphQL API, the sensor ticked by the daemon (see dagster_deployment.py).

Slow (minutes: every run is a subprocess the daemon launches); needs dagster-webserver.
Under ``CI=true`` a missing webserver fails the test instead of skipping it.
"""

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dagster_deployment import run_scenario  # noqa: E402

pytestmark = pytest.mark.slow

LAKE = "lake://deployment"


def _require_webserver() -> None:
    if importlib.util.find_spec("dagster_webserver") is None:
        reason = "dagster dev needs dagster-webserver: pip install dagster-webserver"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def test_dagster_dev_records_a_backfill_with_a_partition_mapping(
    dpt_env: Any, dagster_home: Path, tmp_path: Path
) -> None:
    _require_webserver()
    data = tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPT_", "DAGSTER_"))}
    env.update(dpt_env.environ())

    figures = run_scenario(dagster_home, data, env, dpt_env.url)

    assert figures["backfill_status"] == "COMPLETED_SUCCESS"
    recorded = figures["recorded"]
    assert recorded["running"] == []
    assert sorted(recorded["runs"].values()) == ["failed"] + ["success"] * (
        len(recorded["runs"]) - 1
    )
    assert recorded["runs"] == {
        label: {"SUCCESS": "success", "FAILURE": "failed"}[status]
        for label, status in figures["runs"].items()
    }
    steps = recorded["steps"]

    def made_by(step: str) -> str:
        return str(steps[step]["run"])

    def file(name: str) -> str:
        return f"file:data/{name}"

    expected = {
        "reference[]": ("success", [], [file("reference.json")]),
        **{
            f"events[{day}]": ("success", [], [file(f"events/{day}.json")])
            for day in ("2023-01-21", "2023-01-22", "2023-01-23")
        },
        # The partition-mapping guide: each day reads the day before, not itself.
        "yesterday_event_stats[2023-01-22]": (
            "success",
            [
                f"{file('events/2023-01-21.json')} @ {made_by('events[2023-01-21]')}",
                f"{file('reference.json')} @ {made_by('reference[]')}",
            ],
            [f"{LAKE}/yesterday_event_stats/2023-01-22"],
        ),
        "yesterday_event_stats[2023-01-23]": (
            "success",
            [
                f"{file('events/2023-01-22.json')} @ {made_by('events[2023-01-22]')}",
                f"{file('reference.json')} @ {made_by('reference[]')}",
            ],
            [f"{LAKE}/yesterday_event_stats/2023-01-23"],
        ),
        "regional_sales[us]": ("success", [], [f"{LAKE}/regional_sales/us"]),
        "regional_summary[us]": (
            "success",
            [f"{LAKE}/regional_sales/us @ {made_by('regional_sales[us]')}"],
            [f"{LAKE}/regional_summary/us"],
        ),
        "regional_sales[jp]": ("failed", [], []),
        "regional_summary[jp]": ("skipped", [], []),
    }
    assert {k: (v["status"], v["inputs"], v["outputs"]) for k, v in steps.items()} == expected
    # The stats called dpt from the run worker: their invocations carry its environment,
    # and the asset key they named is the product the daemon's sensor records (one product).
    assert [k for k, v in steps.items() if v["in_worker"]] == [
        "yesterday_event_stats[2023-01-22]",
        "yesterday_event_stats[2023-01-23]",
    ]
    assert f"{LAKE}/reference" not in recorded["products"]
    # Every tick done ended SKIPPED (a tick running when they were listed is STARTED).
    assert figures["sensor_ticks"] > 0 and "SKIPPED" in figures["tick_statuses"]
    assert set(figures["tick_statuses"]) <= {"SKIPPED", "STARTED"}, figures["tick_statuses"]
