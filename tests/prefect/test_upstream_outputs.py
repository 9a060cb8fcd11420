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

import dpt_core

HERE = Path(__file__).resolve().parent


def _flows() -> Any:
    """``deployment/flows.py``, imported once, its data directory a fresh one."""
    name = "dpt_prefect_deployment_flows"
    if name not in sys.modules:
        data = Path(tempfile.mkdtemp(prefix="dpt-prefect-item14-"))
        atexit.register(shutil.rmtree, data, ignore_errors=True)
        os.environ["DPT_TEST_PREFECT_DATA"] = str(data)
        spec = importlib.util.spec_from_file_location(name, HERE / "deployment" / "flows.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def flows() -> Any:
    module = _flows()
    for path in (module.RAW, module.CLEAN, module.SUMMARY):
        path.unlink(missing_ok=True)
    return module


def assert_chain_through_the_producer(recorded: Any, data: Path) -> None:
    """What items 14 asks, from dpt's database: one clean.csv version, and lineage through it."""
    raw, clean, summary = data / "raw.csv", data / "clean.csv", data / "summary.json"
    producer = recorded.one(task="make_clean_csv")
    summarizer = recorded.one(task="summarize")
    assert producer["status"] == summarizer["status"] == "success"

    (clean_version,) = recorded.versions(clean.as_uri())
    assert clean_version["produced_by_id"] == producer["id"]
    assert clean_version["content_hash"] == dpt_core.hash_file(clean)
    (summary_version,) = recorded.versions(summary.as_uri())
    assert summary_version["produced_by_id"] == summarizer["id"]
    (raw_version,) = recorded.versions(raw.as_uri())
    assert raw_version["produced_by_id"] is None  # an input nobody here made
    assert recorded.edges() == {
        (raw.as_uri(), clean.as_uri(), producer["id"]),
        (clean.as_uri(), summary.as_uri(), summarizer["id"]),
    }
    upstream = dpt_core.lineage(summary, direction="upstream")
    assert {(n.uri, n.depth) for n in upstream.nodes} == {
        (summary.as_uri(), 0),
        (clean.as_uri(), 1),
        (raw.as_uri(), 2),
    }


def test_a_parent_named_in_task_code_is_the_materialised_version(
    run_flow: Any, recorded: Any, flows: Any
) -> None:
    flows.RAW.write_text("a,1\n\nb,2\n")
    state = run_flow(flows.clean_and_summarize)
    assert state.is_completed()
    assert_chain_through_the_producer(recorded, flows.DATA)
    assert recorded.one(task=None)["status"] == "success"
    assert len(recorded.invocations()) == 3
