"""A real Airflow for the adapter tests: one temporary AIRFLOW_HOME, migrated once per session.

Airflow reads its configuration when it is first imported, so the variables are
set here, at import time, before any test module imports Airflow. The DAG files
(tests/airflow/dags and examples/airflow_dags) are copied into the session's dags
folder, which ``dag.test()`` parses to serialise the DAGs it runs.

The corpus (test_corpus.py, airflow_corpus.py) runs the example DAGs shipped inside
the installed Airflow: each example file is copied into a DAG bundle of its own,
configured here too, and Airflow's own example plugins (the custom timetables,
partition mappers and priority strategy those DAGs name) are registered through the
plugins folder, as ``load_examples`` would.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import airflow_corpus
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dpt-airflow-tests-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DATA = AIRFLOW_HOME / "data"
EXAMPLE_DATA = AIRFLOW_HOME / "example-data"

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(AIRFLOW_HOME / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "DPT_TEST_AIRFLOW_DATA": str(DATA),
        "AIRFLOW_DPT_EXAMPLE_DIR": str(EXAMPLE_DATA),
    }
)
for name in list(os.environ):
    if name.startswith("AIRFLOW__DPT__"):
        del os.environ[name]
DAGS_FOLDER.mkdir()
DATA.mkdir()
for source in [*(HERE / "dags").glob("*.py"), *(REPO / "examples" / "airflow_dags").glob("*.py")]:
    shutil.copy(source, DAGS_FOLDER / source.name)
sys.path.insert(0, str(DAGS_FOLDER))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)


def _example_bundles() -> dict[str, Path]:
    """One local DAG bundle per example file of the installed Airflow (with its sql/ templates)."""
    bundles: dict[str, Path] = {}
    examples = airflow_corpus.examples_folder()
    for source in airflow_corpus.example_files():
        folder = AIRFLOW_HOME / "example-bundles" / source.stem
        folder.mkdir(parents=True)
        shutil.copy(source, folder / source.name)
        if (examples / "sql").is_dir():
            shutil.copytree(examples / "sql", folder / "sql")
        bundles[airflow_corpus.bundle_name(source)] = folder
    return bundles


EXAMPLE_BUNDLES = airflow_corpus.BUNDLES
EXAMPLE_BUNDLES.update(_example_bundles())
_LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {"name": "dags-folder", "classpath": _LOCAL_BUNDLE, "kwargs": {}},
        *(
            {"name": name, "classpath": _LOCAL_BUNDLE, "kwargs": {"path": str(folder)}}
            for name, folder in EXAMPLE_BUNDLES.items()
        ),
    ]
)
(AIRFLOW_HOME / "plugins").mkdir()
(AIRFLOW_HOME / "plugins" / "airflow_example_plugins.py").write_text(
    '"""Airflow\'s example plugins that its example DAGs name (not its example listener)."""\n'
    "from airflow.example_dags.plugins.business_day_window import BusinessDayWindowPlugin\n"
    "from airflow.example_dags.plugins.custom_partition_mapper import PrefixStripMapperPlugin\n"
    "from airflow.example_dags.plugins.custom_partition_timetable import (\n"
    "    ScheduledRuntimePartitionTimetablePlugin,\n"
    ")\n"
    "from airflow.example_dags.plugins.decreasing_priority_weight_strategy import (\n"
    "    DecreasingPriorityWeightStrategyPlugin,\n"
    ")\n"
    "from airflow.example_dags.plugins.workday import WorkdayTimetablePlugin\n"
)


def airflow_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` CLI of this environment with the session's configuration."""
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run(
        [str(airflow), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="session")
def airflow_cli() -> Any:
    """``airflow_cli(*args)``: run the ``airflow`` command; returns the CompletedProcess."""
    return airflow_command


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Path:
    """``airflow db migrate`` into the session's AIRFLOW_HOME, once."""
    result = airflow_command("db", "migrate")
    assert result.returncode == 0, result.stderr[-3000:]
    return AIRFLOW_HOME


def _load_module(path: Path) -> Any:
    name = path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def test_dags(airflow_db: Path) -> dict[str, Any]:
    """The DAGs of tests/airflow/dags/adapter_dags.py, by dag_id."""
    dags: dict[str, Any] = _load_module(DAGS_FOLDER / "adapter_dags.py").DAGS
    return dags


@pytest.fixture(scope="session")
def example_data_dir() -> Path:
    """Where the example DAG writes: a directory no other test touches."""
    return EXAMPLE_DATA


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The directory the test DAGs read and write, emptied around each test."""
    for child in DATA.iterdir():
        child.unlink()
    (DATA / "raw.csv").write_text(" 1,a\n 2,b\n 3,c\n")
    yield DATA


class RunResult:
    """A finished ``dag.test()`` run: the DagRun and its task-instance states."""

    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        self.run_id: str = dag_run.run_id
        self.state = str(getattr(dag_run.state, "value", dag_run.state))
        self.task_states = {
            (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state))
            for ti in dag_run.get_task_instances()
        }


@pytest.fixture
def run_dag(test_dags: dict[str, Any], data_dir: Path) -> Any:
    """``run_dag(dag_id)``: run one test DAG with ``dag.test()``; returns a :class:`RunResult`."""

    def run(dag_id: str) -> RunResult:
        return RunResult(test_dags[dag_id].test())

    return run


@pytest.fixture
def airflow_config(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``airflow_config(key, value)``: set ``[dpt] key = value`` for this test."""

    def set_option(key: str, value: str) -> None:
        monkeypatch.setenv(f"AIRFLOW__DPT__{key.upper()}", value)

    return set_option


@pytest.fixture(scope="session")
def example_selection(airflow_db: Path) -> airflow_corpus.Selection:
    """The example DAGs that run here (synced to Airflow's database once), and those left out."""
    selection = airflow_corpus.selection()
    airflow_corpus.sync_to_airflow(selection)
    return selection


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The corpus table: task tries each example DAG ran vs what dpt recorded."""
    if not airflow_corpus.OUTCOMES:
        return
    terminalreporter.section("Airflow example DAGs: task tries run vs recorded")
    for line in airflow_corpus.table(airflow_corpus.OUTCOMES, airflow_corpus.EXCLUDED):
        terminalreporter.write_line(line)
