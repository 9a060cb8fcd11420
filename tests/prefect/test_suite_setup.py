"""The suite's own set-up: without Prefect it fails under CI=true and is left out elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: A pytest plugin that makes Prefect impossible to import, as in an environment without it.
HIDE_PREFECT = """
import importlib.abc, sys

class _NoPrefect(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoPrefect())
"""


def _collect_without_prefect(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "dpt_hide_prefect.py").write_text(HIDE_PREFECT)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "CI": ci,
        "PYTHONPATH": str(tmp_path),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "dpt_hide_prefect",
            "--collect-only",
            "-q",
            str(HERE),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE.parent.parent,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true"])
def test_a_missing_prefect_fails_the_suite_under_ci(tmp_path: Path, ci: str) -> None:
    result = _collect_without_prefect(tmp_path, ci)
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert "CI=true and Prefect is not installed" in output
    assert "tox -e prefect" in output


def test_a_missing_prefect_leaves_the_suite_out_elsewhere(tmp_path: Path) -> None:
    result = _collect_without_prefect(tmp_path, "")
    output = result.stdout + result.stderr
    # Nothing collected (pytest's exit code 5); the report header says why.
    assert result.returncode == 5, output
    assert "no tests collected" in output
    assert "CI=true" not in output
