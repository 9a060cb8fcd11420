"""The corpus: the example DAGs shipped inside the installed Airflow wheel, picked by rule.

Every ``airflow/example_dags/*.py`` of the installed Airflow is a candidate. Each file
gets a DAG bundle of its own (``conftest.py`` configures them before Airflow is
imported): ``dag.test()`` re-parses the whole bundle of the DAG it runs, so one file
per bundle keeps that to the one file, and an example that cannot be serialised
cannot break the others.

A DAG is left out by one of these rules, checked on the parsed DAG and its source
(:func:`select`); every exclusion is reported with its reason:

- the file does not import here (a missing optional dependency: ``kubernetes``), or
  defines no DAG without it;
- the file imports an HTTP client (``requests``, ``httpx``, ``aiohttp``,
  ``urllib.request``): it calls a service on the network, which the suite must not need;
- a task is a sensor: it waits on the clock or on an outside event;
- a task installs packages into a new virtualenv (``requirements=``): a package index;
- a task waits for a human (HITL operators);
- the DAG's params need values from the trigger form (``params.validate()`` fails);
- the DAG cannot be serialised (what ``dag.test()`` needs first).

Everything else runs, failures included: a task that fails by design
(``example_failed_dag``), on an undefined template variable, on an inactive asset,
or after its retries, is a try dpt must record as failed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Imports that mean "this example talks to a service on the network".
HTTP_CLIENTS = ("requests", "httpx", "aiohttp", "urllib.request", "urllib3")


def examples_folder() -> Path:
    """``airflow/example_dags`` of the installed Airflow (found without importing Airflow)."""
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "example_dags"


def example_files() -> list[Path]:
    return sorted(p for p in examples_folder().glob("*.py") if p.name != "__init__.py")


def bundle_name(example: Path) -> str:
    return f"example-{example.stem}"


#: What the selection left out, and why.
EXCLUDED: dict[str, str] = {}


@dataclass
class Selection:
    """The parsed example DAGs: those that run here, and those left out with the reason."""

    dags: dict[str, Any] = field(default_factory=dict)
    #: dag id -> the example file it comes from
    files: dict[str, str] = field(default_factory=dict)
    #: dag id (or ``file.py`` for a whole file) -> why it is left out
    excluded: dict[str, str] = field(default_factory=dict)
    #: bundle name -> the DagBag of its one file (to sync to Airflow's database)
    bags: dict[str, Any] = field(default_factory=dict)


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _network_reason(source: str) -> str | None:
    tree = ast.parse(source)
    clients = sorted(
        name
        for name in _imports(tree)
        if any(name == c or name.startswith(c + ".") for c in HTTP_CLIENTS)
    )
    if not clients:
        return None
    urls = sorted(
        {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and re.fullmatch(r"https?://\S+", n.value)
        }
    )
    where = f" ({', '.join(urls)})" if urls else ""
    return f"calls a network service with {', '.join(clients)}{where}"


def _task_reason(dag: Any) -> str | None:
    from airflow.sdk.bases.sensor import BaseSensorOperator

    try:
        from airflow.providers.standard.operators.hitl import HITLOperator
    except ImportError:  # pragma: no cover - an older standard provider
        HITLOperator = ()  # type: ignore[assignment,misc]  # noqa: N806
    for task in dag.tasks:
        operator = getattr(task, "operator_class", type(task))
        if isinstance(task, BaseSensorOperator) or (
            isinstance(operator, type) and issubclass(operator, BaseSensorOperator)
        ):
            return f"task {task.task_id} is a sensor ({operator.__name__}): it waits on time"
        if HITLOperator and isinstance(task, HITLOperator):
            return f"task {task.task_id} waits for a human ({type(task).__name__})"
        if getattr(task, "requirements", None):
            return (
                f"task {task.task_id} installs {', '.join(task.requirements)} into a new "
                "virtualenv from a package index"
            )
    return None


def _params_reason(dag: Any) -> str | None:
    try:
        dag.params.validate()
    except Exception as exc:
        return f"its params need values from the trigger form ({type(exc).__name__}: {exc})"
    return None


def _serialisation_reason(dag: Any) -> str | None:
    from airflow.serialization.serialized_objects import DagSerialization

    try:
        DagSerialization.to_dict(dag)
    except Exception as exc:
        return f"cannot be serialised ({type(exc).__name__}: {exc})"
    return None


def select(bundles: dict[str, Path]) -> Selection:
    """Parse each example bundle and apply the rules of this module's docstring."""
    from airflow.dag_processing.dagbag import BundleDagBag

    selection = Selection()
    path_before = list(sys.path)
    try:
        for example in example_files():
            name = bundle_name(example)
            folder = bundles[name]
            bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name=name)
            if bag.import_errors:
                error = next(iter(bag.import_errors.values())).strip().splitlines()[-1]
                selection.excluded[example.name] = f"does not import here: {error}"
                continue
            if not bag.dags:
                selection.excluded[example.name] = (
                    "defines no DAG here (its optional dependencies are not installed)"
                )
                continue
            network = _network_reason(example.read_text())
            kept = False
            for dag_id, dag in sorted(bag.dags.items()):
                reason = (
                    network
                    or _task_reason(dag)
                    or _params_reason(dag)
                    or _serialisation_reason(dag)
                )
                if reason:
                    selection.excluded[dag_id] = reason
                else:
                    selection.dags[dag_id] = dag
                    selection.files[dag_id] = example.name
                    kept = True
            if kept:
                selection.bags[name] = bag
    finally:
        sys.path[:] = path_before  # BundleDagBag appends each bundle's folder
    return selection


#: bundle name -> its folder (set by conftest.py, which creates and configures them).
BUNDLES: dict[str, Path] = {}


@functools.cache
def selection() -> Selection:
    """:func:`select` over :data:`BUNDLES`, once per session."""
    chosen = select(BUNDLES)
    EXCLUDED.update(chosen.excluded)
    return chosen


def sync_to_airflow(selection: Selection) -> None:
    """Write the selected DAGs to Airflow's database, bundle by bundle, as the dag
    processor would: ``dag.test()`` then re-parses only the bundle of the DAG it runs."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    for name, bag in selection.bags.items():
        for dag_id in [d for d in bag.dags if d not in selection.dags]:
            del bag.dags[dag_id]
        sync_bag_to_db(bag, name, None)


@dataclass
class Outcome:
    """One example DAG's run: task tries Airflow ran vs task tries dpt recorded."""

    dag_id: str
    file: str
    state: str
    expected: int
    recorded: int
    matching: int


#: Filled by the corpus tests, printed at the end of the session (conftest.py).
OUTCOMES: list[Outcome] = []


def table(outcomes: list[Outcome], excluded: dict[str, str]) -> list[str]:
    """The corpus as Markdown table lines (docs/airflow.md and the session summary)."""
    lines = [
        "| example DAG | file | DAG run | task tries run | recorded | recorded as Airflow says |",
        "|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (o.file, o.dag_id)):
        lines.append(
            f"| {o.dag_id} | {o.file} | {o.state} | {o.expected} | {o.recorded} | {o.matching} |"
        )
    total = (
        sum(o.expected for o in outcomes),
        sum(o.recorded for o in outcomes),
        sum(o.matching for o in outcomes),
    )
    lines.append(f"| **{len(outcomes)} DAGs** | | | {total[0]} | {total[1]} | {total[2]} |")
    if excluded:
        lines += ["", "| left out | why |", "|---|---|"]
        lines += [f"| {name} | {reason} |" for name, reason in sorted(excluded.items())]
    return lines
