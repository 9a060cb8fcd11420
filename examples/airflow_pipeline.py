"""Run a small Airflow pipeline and let dpt record it: runs, file versions and lineage.

The DAG (examples/airflow_dags/dpt_example_pipeline.py) ingests a frame table,
calibrates it once per chip and summarises the result; every file it writes is
a ``file://`` Asset, which the dpt plugin records with its content hash.

How to run, from the repository root::

    pip install '.[airflow]'      # installs the plugin: nothing else to set up
    export AIRFLOW_HOME=/tmp/dpt-airflow-home
    export AIRFLOW__CORE__DAGS_FOLDER=$PWD/examples/airflow_dags
    export AIRFLOW__CORE__LOAD_EXAMPLES=False
    airflow db migrate
    python examples/airflow_pipeline.py /tmp/dpt-airflow-example

How to see what dpt recorded (the default database is a SQLite file in your data
directory; set DPT_DATABASE_URL to use another)::

    dpt runs --orchestrator airflow
    dpt lineage /tmp/dpt-airflow-example/summary.json --upstream
    dpt lineage /tmp/dpt-airflow-example/frames.csv --downstream
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

DAG_FILE = Path(__file__).resolve().parent / "airflow_dags" / "dpt_example_pipeline.py"


def run(data_dir: str | os.PathLike[str]) -> Any:
    """Run the example DAG once with ``dag.test()``, writing under ``data_dir``; returns the DagRun."""
    os.environ["AIRFLOW_DPT_EXAMPLE_DIR"] = str(Path(data_dir).resolve())
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAG_FILE.parent))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    spec = importlib.util.spec_from_file_location("dpt_example_pipeline_dag", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pipeline.test()


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1] if len(argv) > 1 else "/tmp/dpt-airflow-example")
    dag_run = run(data_dir)
    print(f"dag run {dag_run.run_id}: {dag_run.state}")
    print(f"see the lineage with: dpt lineage {data_dir.resolve() / 'summary.json'} --upstream")
    return 0 if str(dag_run.state) in ("success", "DagRunState.SUCCESS") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
