"""The cross-orchestrator example runs once per session; every test here reads what it
recorded (none writes to it: the explorer's server over it is read-only)."""

from __future__ import annotations

import pytest

from tests.examples.example_run import ExampleRun, run_example


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> ExampleRun:
    return run_example(tmp_path_factory.mktemp("cross-orchestrator"))
