"""examples/cross_orchestrator.py run as a newcomer would run it, and what it recorded.

Used by ``conftest.py`` (the session's ``example`` fixture) and the tests here, which
import it as ``tests.examples.example_run``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cross_orchestrator.py"
DAG_ID = "dpt_cross_orchestrator"
TASK_ID = "select_observations"


def fresh_user_env(home: Path) -> dict[str, str]:
    """This environment without dpt, XDG, Airflow or Dagster settings, and a new home."""
    prefixes = ("DPT_", "XDG_", "AIRFLOW", "DAGSTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class ExampleRun:
    env: dict[str, str]
    workdir: Path
    database: Path
    stdout: str
    stderr: str

    def rows(self, sql: str, **params: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.database) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params))

    def file(self, name: str) -> Path:
        return self.workdir / name

    def uri(self, name: str) -> str:
        return self.file(name).as_uri()

    def dpt(self, *args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def cli_error(self, *args: str) -> str:
        """The one line ``dpt ARGS`` prints on stderr when it refuses them (exit 2)."""
        done = subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
        return done.stderr.strip()


def run_example(base: Path) -> ExampleRun:
    """Run the example in a subprocess with a new home under ``base``: no DPT_* variables,
    its own XDG directories (so dpt records into the default SQLite file in the user's data
    directory), no Airflow or Dagster configuration."""
    home = base / "home"
    home.mkdir()
    workdir = (base / "work").resolve()
    env = fresh_user_env(home)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(workdir)],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return ExampleRun(
        env=env,
        workdir=workdir,
        database=home / "data" / "dpt" / "dpt.sqlite3",
        stdout=done.stdout,
        stderr=done.stderr,
    )
