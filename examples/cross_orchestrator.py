"""One lineage graph across two orchestrators: Airflow writes a file, Dagster reads it.

1. An Airflow DAG (examples/cross_orchestrator/observations_dag.py, run once with
   ``dag.test()``) reads the night's exposure log, ``WORKDIR/exposures.csv``, and
   writes the good exposures to ``WORKDIR/observations.csv``. Both are ``file://``
   Assets (an inlet and an outlet): the dpt Airflow plugin records them.
2. A Dagster asset, ``catalog``, reads ``observations.csv`` inside its code
   (``with dpt_core.invocation() as inv: inv.read(path)``) and writes
   ``WORKDIR/catalog.json``, named by its materialisation metadata ``dpt/path``.
   It is materialised with ``dagster.materialize()``, then one tick of the dpt
   sensor records the materialisation.
3. The script prints the upstream lineage of ``catalog.json``:
   catalog.json <- observations.csv (made by the Airflow task) <- exposures.csv.

Nothing links the two orchestrators but the file: both name it by the same
normalised ``file://`` URI, and the version Dagster read has the content hash of
the version Airflow wrote, so it *is* that version.

How to run, from the repository root::

    pip install '.[airflow,dagster]'
    python examples/cross_orchestrator.py /tmp/dpt-cross-orchestrator

The script runs Airflow and Dagster on throw-away metadata databases: it points
AIRFLOW_HOME and DAGSTER_HOME at a temporary directory (and runs
``airflow db migrate`` there), whatever they are set to in your shell, and
removes it at the end. dpt records into its default SQLite file in your data
directory (set DPT_DATABASE_URL to use another). Then look at what was recorded::

    dpt lineage /tmp/dpt-cross-orchestrator/catalog.json --upstream
    dpt runs --orchestrator airflow
    dpt runs --orchestrator dagster
    dpt lineage /tmp/dpt-cross-orchestrator/catalog.json --upstream --format dot | dot -Tsvg > lineage.svg
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

import dpt_core
import dpt_dagster

DAG_FOLDER = Path(__file__).resolve().parent / "cross_orchestrator"
DAG_FILE = DAG_FOLDER / "observations_dag.py"
#: Where both orchestrators read and write; the DAG file reads the same variable.
DIR_VARIABLE = "CROSS_ORCHESTRATOR_DIR"
DEFAULT_DIR = "/tmp/dpt-cross-orchestrator"

# --------------------------------------------------------------------------- the data


def _workdir() -> Path:
    return Path(os.environ.get(DIR_VARIABLE, DEFAULT_DIR)).resolve()


def write_exposures(workdir: Path) -> Path:
    """The night's exposure log: the pipeline's raw input, delivered from outside."""
    path = workdir / "exposures.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["exposure", "target", "seeing", "counts"])
        for exposure in range(12):
            target = ("NGC 1275", "M 87", "3C 273")[exposure % 3]
            seeing = 0.7 + 0.11 * ((exposure * 5) % 9)
            writer.writerow([exposure, target, f"{seeing:.2f}", 20000 + 750 * exposure])
    return path


# --------------------------------------------------------------------------- Airflow


def run_airflow(airflow_home: Path) -> Any:
    """Migrate a fresh Airflow database in ``airflow_home``, run the DAG once; returns the DagRun.

    Airflow reads its configuration when it is first imported, so this must run
    before anything imports Airflow in this process.
    """
    os.environ.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        }
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
    spec = importlib.util.spec_from_file_location("dpt_cross_orchestrator_dag", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pipeline.test()


# --------------------------------------------------------------------------- Dagster


@dg.asset(code_version="1")
def catalog() -> dg.MaterializeResult:
    """Per target: the number of good exposures and their mean counts."""
    observations = _workdir() / "observations.csv"
    # Joins this materialisation's invocation (the one the sensor completes): the
    # file is recorded as its input, the very version the Airflow task wrote.
    with dpt_core.invocation() as inv:
        inv.read(observations)
    counts: dict[str, list[int]] = {}
    with observations.open(newline="") as handle:
        for row in csv.DictReader(handle):
            counts.setdefault(row["target"], []).append(int(row["counts"]))
    summary = {
        target: {"exposures": len(values), "mean_counts": sum(values) / len(values)}
        for target, values in sorted(counts.items())
    }
    path = _workdir() / "catalog.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path), "targets": len(summary)})


defs = dg.Definitions(
    assets=[catalog],
    sensors=[dpt_dagster.dpt_asset_sensor()],  # the one line that turns dpt on
)


def run_dagster(dagster_home: Path) -> str:
    """Materialise ``catalog`` on an instance in ``dagster_home``, then one dpt sensor tick.

    Returns the tick's message.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([catalog], instance=instance, run_config=quiet)
        if not result.success:
            raise SystemExit("the Dagster run failed")
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        tick = defs.resolve_sensor_def("dpt_tracker").evaluate_tick(context)
    return str(tick.skip_message)


# --------------------------------------------------------------------------- together


def print_lineage(target: Path) -> None:
    """The upstream lineage of ``target``, one edge a line, with the run that made each file."""
    graph = dpt_core.lineage(target, direction="upstream")
    print(f"upstream lineage of {target}:")
    for edge in graph.edges:
        print(
            f"  {Path(edge.child).name} <- {Path(edge.parent).name}"
            f"  made by {edge.job}/{edge.task} (run {str(edge.invocation)[:8]})"
        )
    for node in graph.nodes:
        if node.produced_by is None:
            print(f"  {Path(node.uri).name}: read as found, no producer recorded")


def run(workdir: str | os.PathLike[str]) -> Path:
    """The whole example; returns the path of ``catalog.json``."""
    data = Path(workdir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    os.environ[DIR_VARIABLE] = str(data)
    write_exposures(data)
    with tempfile.TemporaryDirectory(
        prefix="dpt-cross-orchestrator-", ignore_cleanup_errors=True
    ) as scratch:
        dag_run = run_airflow(Path(scratch) / "airflow_home")
        state = str(getattr(dag_run.state, "value", dag_run.state))
        print(f"airflow: dag run {dag_run.run_id}: {state}")
        if state != "success":
            raise SystemExit("the Airflow run failed")
        print(f"dagster: {run_dagster(Path(scratch) / 'dagster_home')}")
    target = data / "catalog.json"
    print_lineage(target)
    print(f"see it with: dpt lineage {target} --upstream")
    return target


def main(argv: list[str]) -> int:
    run(argv[1] if len(argv) > 1 else DEFAULT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
