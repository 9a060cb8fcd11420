"""``dpt reproduce`` on tasks a real Airflow ran: the recipe names ``airflow tasks test``,
and the command it names is run here (against the session's AIRFLOW_HOME) and rebuilds
the recorded file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dpt_core
from dpt_core.reproduce import check, export, rebuild


def _airflow(argv: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> Any:
    """Run a recipe's Airflow command with this environment's ``airflow``."""
    assert argv[0] == "airflow"
    binary = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run(
        [binary, *argv[1:]],
        env=dict(os.environ, **dict(env)),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_recipe_names_airflow_tasks_test_and_the_command_rebuilds(
    dpt_env: Any, run_dag: Any, data_dir: Path, tmp_path: Path
) -> None:
    result = run_dag("dpt_success")
    assert result.state == "success"
    clean, summary = data_dir / "clean.csv", data_dir / "summary.csv"
    recorded = {p: dpt_core.hash_file(p) for p in (clean, summary)}

    found = dpt_core.recipe(summary)

    extract, summarise = found.steps
    assert [(s.run.orchestrator, s.run.job, s.run.task) for s in found.steps] == [
        ("airflow", "dpt_success", "extract"),
        ("airflow", "dpt_success", "summarise"),
    ]
    assert dict(extract.details) == {
        "dag_id": "dpt_success",
        "task_id": "extract",
        "run_id": result.run_id,
        "map_index": -1,
        "logical_date": extract.details["logical_date"],
        "try_number": 1,
    }
    assert extract.details["logical_date"] == result.dag_run.logical_date.isoformat()
    assert extract.rerun.kind == "airflow"
    assert extract.rerun.argv == (
        "airflow",
        "tasks",
        "test",
        "dpt_success",
        "extract",
        result.run_id,
        "-t",
        '{"gain": 1.5}',
    )
    assert dict(extract.rerun.env) == {"AIRFLOW_HOME": os.environ["AIRFLOW_HOME"]}
    assert [(i.uri, i.made_by) for i in summarise.inputs] == [(clean.as_uri(), 1)]
    assert [s.uri for s in found.sources] == [(data_dir / "raw.csv").as_uri()]
    assert extract.environment is not None and found.environment(extract.environment)
    # (A dirty tree where the test process runs is only a note for an orchestrator's step.)
    blocking = [p for p in found.problems if p.blocks_run]
    assert [(p.kind, p.step) for p in blocking] == [
        ("orchestrator_only", 1),
        ("orchestrator_only", 2),
    ]
    assert extract.rerun.shell in blocking[0].remedy

    checked = check(found)
    assert not checked.ok
    assert {(c.kind, c.step) for c in checked.causes} >= {
        ("orchestrator_only", 1),
        ("orchestrator_only", 2),
    }
    assert [(i.uri, i.state) for i in checked.inputs] == [((data_dir / "raw.csv").as_uri(), "same")]
    refused = rebuild(found, tmp_path / "w")
    assert refused.runs == () and not refused.completed
    assert {p.kind for p in refused.problems} == {"orchestrator_only"}

    written = export(found, tmp_path / "export")
    script = (tmp_path / "export" / "steps.sh").read_text()
    assert (
        f"AIRFLOW_HOME={os.environ['AIRFLOW_HOME']} airflow tasks test dpt_success extract"
        in script
    )
    assert tmp_path / "export" / "steps.sh" in written

    # The commands the recipe names rebuild the files, one task at a time.
    clean.unlink()
    summary.unlink()
    for step, path in ((extract, clean), (summarise, summary)):
        done = _airflow(step.rerun.argv, step.rerun.env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert dpt_core.hash_file(path) == recorded[path]
    shape = json.loads(json.dumps(found.to_dict()))
    assert shape["steps"][0]["rerun"]["shell"].startswith("AIRFLOW_HOME=")


def test_a_mapped_task_is_re_run_with_its_map_index(
    dpt_env: Any, run_dag: Any, data_dir: Path
) -> None:
    result = run_dag("dpt_mapped")
    target = data_dir / "square_2.txt"
    assert target.read_text() == "4"

    (step,) = dpt_core.recipe(target).steps

    assert step.details["map_index"] == 1
    assert step.rerun.argv == (
        "airflow",
        "tasks",
        "test",
        "dpt_mapped",
        "square",
        result.run_id,
        "--map-index",
        "1",
    )
    target.unlink()
    (data_dir / "square_3.txt").unlink()
    done = _airflow(step.rerun.argv, step.rerun.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert target.read_text() == "4"
    assert not (data_dir / "square_3.txt").exists()  # only the one mapped index ran
