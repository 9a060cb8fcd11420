"""The README's main job works for a newcomer: the quickstart on the SQLite default."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh_user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPT_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
    )
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_quickstart_records_on_the_default_sqlite_and_prints_lineage(tmp_path):
    env = fresh_user_env(tmp_path / "home")
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lc, cal, raw, flat = (
        work / n for n in ("lightcurve.csv", "calibrated.csv", "raw.csv", "flat.txt")
    )
    assert f"upstream lineage of {lc}" in result.stdout
    for product in (lc, cal, raw, flat):
        assert product.as_uri() in result.stdout

    database = tmp_path / "home" / "data" / "dpt" / "dpt.sqlite3"
    assert database.exists(), "the default database lives in the user's data directory"
    with sqlite3.connect(database) as conn:
        jobs = [r[0] for r in conn.execute("SELECT job FROM invocations ORDER BY id")]
        statuses = {r[0] for r in conn.execute("SELECT status FROM invocations")}
    assert jobs == ["observe", "calibrate", "lightcurve"] and statuses == {"success"}

    runs = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [r["job"] for r in json.loads(runs.stdout)] == ["lightcurve", "calibrate", "observe"]
    lineage = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpt_core.cli",
            "lineage",
            str(lc),
            "--upstream",
            "--format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lineage.returncode == 0, lineage.stderr
    uris = {n["uri"] for n in json.loads(lineage.stdout)["nodes"]}
    assert {lc.as_uri(), cal.as_uri(), raw.as_uri(), flat.as_uri()} <= uris
