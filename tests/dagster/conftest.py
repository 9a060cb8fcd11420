"""Fixtures: a real Dagster instance in tmp_path (DAGSTER_HOME) and the survey pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

pytest.register_assert_rewrite("dagster_corpus", "dagster_survey_assets")

from dagster_corpus import Corpus  # noqa: E402
from dagster_survey_assets import ASSETS, NIGHTLY_JOB, DataDir, Pipeline  # noqa: E402

import dpt_dagster  # noqa: E402


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def pipeline(dpt_env: Any, dagster_home: Path, tmp_path: Path) -> Iterator[Pipeline]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[NIGHTLY_JOB],
        sensors=[dpt_dagster.dpt_asset_sensor()],
        resources={"data": DataDir(path=str(data_dir))},
    )
    instance = dg.DagsterInstance.local_temp(str(dagster_home))
    try:
        yield Pipeline(instance=instance, defs=defs, data_dir=data_dir, db=dpt_env)
    finally:
        instance.dispose()


@pytest.fixture
def corpus(
    dpt_env: Any, dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Corpus]:
    """A real Dagster instance for documentation patterns; files go to ``tmp_path/data``."""
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.local_temp(str(dagster_home))
    try:
        yield Corpus(instance=instance, db=dpt_env)
    finally:
        instance.dispose()
