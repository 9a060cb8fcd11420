"""A task that names an upstream ``@materialize`` output as its parent continues its chain.

The in-process half of issue 15's item 14 (``deployment/test_deployment.py`` runs the
same flow in a Prefect worker): one version of clean.csv, made by its producer, and
the summary's upstream lineage reaches raw.csv through it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _flows() -> Any:
    """``deployment/flows.py``, imported once, its data directory a fresh one."""
    name = "dpt_prefect_deployment_flows"
    if name not in sys.modules:
        data = Path(tempfile.mkdtemp(prefix="dpt-prefect-item14-"))
        atexit.register(shutil.rmtree, data, ignore_errors=True)
        os.environ["DPT_TEST_PREFECT_DATA"] = str(data)
    return _load(name, HERE / "deployment" / "flows.py")


@pytest.fixture
def flows() -> Any:
    module = _flows()
    for path in (module.RAW, module.CLEAN, module.SUMMARY):
        path.unlink(missing_ok=True)
    return module


def test_a_parent_named_in_task_code_is_the_materialised_version(
    run_flow: Any, recorded: Any, flows: Any
) -> None:
    flows.RAW.write_text("a,1\n\nb,2\n")
    state = run_flow(flows.clean_and_summarize)
    assert state.is_completed()
    checks = _load("lineage_checks", HERE / "deployment" / "lineage_checks.py")
    checks.assert_chain_through_the_producer(recorded, flows.DATA)
    assert recorded.one(task=None)["status"] == "success"
    assert len(recorded.invocations()) == 3
