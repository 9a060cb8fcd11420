"""Prefect's assets guide, written as the guide writes it; assertions on the rows dpt recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.assets import materialize

import dpt_prefect


# The guide's "Asset dependencies through task graphs" example, as written there.
@materialize("file://my-local-directory/raw-data.csv")
def extract_data():  # type: ignore[no-untyped-def]
    raw_data = "name,age\nchris,21"
    with open("raw-data.csv", "w") as f:
        f.write(raw_data)
    return raw_data


@materialize("s3://my-bucket/clean-data.csv")
def transform_data(raw_data):  # type: ignore[no-untyped-def]
    # saves raw_data to s3
    pass


@flow(**dpt_prefect.flow_hooks())
def etl_pipeline():  # type: ignore[no-untyped-def]
    raw_data = extract_data()
    transform_data(raw_data)  # Automatically depends on raw-data.csv


def test_the_guides_file_uri_with_a_host_next_to_an_s3_asset(
    run_flow: Any, recorded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state = run_flow(etl_pipeline)
    assert state.is_completed()

    flow_row = recorded.one(task=None)
    assert flow_row["status"] == "success"
    extract = recorded.one(task="extract_data")
    transform = recorded.one(task="transform_data")
    assert extract["status"] == transform["status"] == "success"

    (raw,) = recorded.versions("file://my-local-directory/raw-data.csv")
    (clean,) = recorded.versions("s3://my-bucket/clean-data.csv")
    assert raw["produced_by_id"] == extract["id"]
    assert raw["content_hash"] is None
    assert "dpt/unhashed" in raw["metadata"]
    assert clean["produced_by_id"] == transform["id"]
    assert recorded.edges() == {
        ("file://my-local-directory/raw-data.csv", "s3://my-bucket/clean-data.csv", transform["id"])
    }
    assert all(r["status"] != "running" for r in recorded.invocations())
