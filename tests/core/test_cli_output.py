"""What ``dpt runs`` and ``dpt show`` print for people: the real CLI, at a fixed width."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import dpt_core

ROOT = Path(__file__).resolve().parents[2]


def dpt(*args: str, columns: int = 80) -> str:
    """The dpt CLI in a subprocess (stdout a pipe, not a terminal) with $COLUMNS fixed."""
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=str(ROOT))
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def table(output: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a rich table, cells stripped."""
    lines = [ln for ln in output.splitlines() if ln.startswith(("┃", "│"))]
    cells = [[c.strip() for c in ln.strip("┃│").split(ln[0])] for ln in lines]
    return cells[0], cells[1:]


def started(run: dict) -> str:
    return datetime.fromisoformat(run["started_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def made(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def python_runs(dpt_env, tmp_path):
    for name in ("observe", "calibrate", "lightcurve"):
        with dpt_core.invocation(name) as inv:
            inv.write(made(tmp_path / f"{name}.csv", name))
    dpt_core.flush()  # (written in the background: the CLI below is another process)
    return json.loads(dpt("runs", "--json"))


@pytest.fixture
def airflow_like_runs(dpt_env, tmp_path):
    """Runs with long job and task names and a parent: more than 80 columns of cells."""
    job = "nightly_photometric_reduction_of_the_survey"
    task = "calibrate_chip_with_master_flat_and_bias"
    with (
        dpt_core.invocation(job, orchestrator="airflow", task=task) as parent,
        dpt_core.invocation(job, orchestrator="airflow", task=task + "_2", parent=parent) as inv,
    ):
        inv.write(made(tmp_path / "cal.fits", "cal"))
    dpt_core.flush()
    return json.loads(dpt("runs", "--json"))


def test_runs_at_80_columns_shows_full_start_times_and_leaves_out_empty_columns(python_runs):
    output = dpt("runs", columns=80)
    assert max(len(line) for line in output.splitlines()) <= 80
    header, rows = table(output)
    assert header == ["id", "uuid", "orchestrator", "job", "status", "started (UTC)"]
    assert rows == [
        [str(r["id"]), r["uuid"][:8], "python", r["job"], "success", started(r)]
        for r in python_runs
    ]
    assert [r[3] for r in rows] == ["lightcurve", "calibrate", "observe"]
    assert "not shown" not in output  # task and parent are empty, not hidden for want of room


def test_runs_at_80_columns_gives_up_columns_in_order_and_says_which(airflow_like_runs):
    output = dpt("runs", columns=80)
    assert max(len(line) for line in output.splitlines()) <= 80
    header, rows = table(output)
    assert header == ["id", "job", "task", "status", "started (UTC)"]
    assert [r[0] for r in rows] == [str(r["id"]) for r in airflow_like_runs]
    assert [r[4] for r in rows] == [started(r) for r in airflow_like_runs]
    for row, run in zip(rows, airflow_like_runs, strict=True):  # shortened, not wrapped
        for cell, name in ((row[1], run["job"]), (row[2], run["task"])):
            assert cell.endswith("…") and len(cell) >= 12 and name.startswith(cell[:-1])
    assert output.splitlines()[-1] == (
        "not shown at this width: uuid, parent, orchestrator (--wide shows them)"
    )

    narrower = dpt("runs", columns=60)
    assert max(len(line) for line in narrower.splitlines()) <= 60
    assert table(narrower)[0] == ["id", "job", "status", "started (UTC)"]
    note = " ".join(ln.strip() for ln in narrower.split("└", 1)[1].splitlines()[1:])
    assert note == "not shown at this width: uuid, parent, orchestrator, task (--wide shows them)"

    wider = dpt("runs", columns=200)
    assert table(wider)[0] == [
        "id", "uuid", "orchestrator", "job", "task", "status", "started (UTC)", "parent",
    ]  # fmt: skip
    assert [r[3] for r in table(wider)[1]] == [r["job"] for r in airflow_like_runs]
    assert "not shown" not in wider


def test_runs_wide_shows_every_column_unshortened_whatever_the_width(airflow_like_runs):
    output = dpt("runs", "--wide", columns=80)
    header, rows = table(output)
    assert header == [
        "id", "uuid", "orchestrator", "job", "task", "status", "started (UTC)", "parent",
    ]  # fmt: skip
    assert rows == [
        [
            str(r["id"]), r["uuid"], "airflow", r["job"], r["task"], r["status"], started(r),
            str(r["parent_id"] or ""),
        ]
        for r in airflow_like_runs
    ]  # fmt: skip
    assert rows[0][7] == str(airflow_like_runs[1]["id"])  # the child names its parent
    assert "not shown" not in output


def test_show_piped_keeps_each_version_and_parent_on_one_line(dpt_env, tmp_path):
    deep = tmp_path / "a_rather_long_directory_name_for_the_survey" / "reduced_products"
    deep.mkdir(parents=True)
    raw, cal = deep / "raw_frame_0001.csv", deep / "calibrated_frame_0001.csv"
    with dpt_core.invocation("calibrate_with_a_long_job_name", task="and_a_task") as inv:
        inv.write(made(raw, "raw"))
        inv.write(made(cal, "cal"), parents=[raw])
    dpt_core.flush()
    shown = json.loads(dpt("show", str(cal), "--json"))
    version = shown["versions"][0]
    parent = version["parents"][0]

    output = dpt("show", str(cal), columns=80)
    lines = output.splitlines()
    assert lines[0] == f"{shown['uri']} — 1 version(s)"
    assert [ln for ln in lines if version["content_hash"] in ln] == [
        f"  {version['recorded_at']}  {version['content_hash']}  "
        f"run {version['produced_by']['id']} python:calibrate_with_a_long_job_name/and_a_task "
        "(success)"
    ]
    assert f"    <- {parent['uri']} ({parent['content_hash']})" in lines
    assert not any(ln.strip().startswith(("xxh3", "(xxh3", "sha256")) for ln in lines)


def test_an_interrupted_run_reads_keyboardinterrupt_without_a_dangling_colon(dpt_env, tmp_path):
    """Ctrl-C (a real SIGINT) in a Python block: the run is cancelled, its error the type alone."""
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time, dpt_core\n"
        "with dpt_core.invocation('slow_step'):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0 and b"KeyboardInterrupt" in err

    [run] = json.loads(dpt("runs", "--json"))
    assert (run["job"], run["status"], run["error"]) == (
        "slow_step",
        "cancelled",
        "KeyboardInterrupt",
    )
    assert "error: KeyboardInterrupt\n" in dpt("show", str(run["id"]))

    with pytest.raises(ValueError), dpt_core.invocation("failing_step"):
        raise ValueError("bad gain")
    # (this process's writer records it in the background: another process reading the
    # database sees it once it is flushed)
    assert dpt_core.flush() is True
    failed = json.loads(dpt("runs", "--json", "--job", "failing_step"))[0]
    assert failed["error"] == "ValueError: bad gain"  # a message still follows its type
