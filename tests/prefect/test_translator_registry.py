"""One translator per run: the hooks and an in-task ``dpt_core.track()`` name an asset alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.assets import Asset, materialize

import dpt_core
import dpt_prefect
from dpt_prefect.translator import PrefectTranslator

SALES = Asset(key="warehouse://sales")
SALES_TABLE = "postgres://db/warehouse/public.sales"


class WarehouseTranslator(PrefectTranslator):
    """Assets keyed ``warehouse://<table>`` are PostgreSQL tables (the docs' example)."""

    def get_asset_uri(self, asset: Any) -> str:
        key = super().get_asset_uri(asset)
        if key.startswith("warehouse://"):
            return "postgres://db/warehouse/public." + key.removeprefix("warehouse://")
        return key


@materialize(SALES, **dpt_prefect.task_hooks(translator=WarehouseTranslator()))
def build_sales() -> int:
    return 3


@task
def report(rows: int, path: str) -> None:
    Path(path).write_text(f"{rows} rows\n")
    dpt_core.track(path, parents=[SALES])


@task
def track_the_asset_too() -> None:
    dpt_core.track(SALES)


@flow(name="warehouse", **dpt_prefect.flow_hooks(translator=WarehouseTranslator()))
def warehouse(path: str) -> None:
    rows = build_sales()
    report(rows, path)


@flow(name="warehouse-in-flow-body", **dpt_prefect.flow_hooks(translator=WarehouseTranslator()))
def warehouse_in_flow_body() -> None:
    track_the_asset_too()
    dpt_core.track(SALES)


def test_in_task_track_uses_the_hooks_translator(
    run_flow: Any, recorded: Any, tmp_path: Path
) -> None:
    path = tmp_path / "report.txt"
    state = run_flow(warehouse, str(path))
    assert state.is_completed()

    build = recorded.one(task="build_sales")
    reporting = recorded.one(task="report")
    # One product for the asset, named by the custom translator, made by build_sales.
    assert recorded.versions("warehouse://sales") == []
    (sales,) = recorded.versions(SALES_TABLE)
    assert sales["produced_by_id"] == build["id"]
    (made,) = recorded.versions(path.as_uri())
    assert made["produced_by_id"] == reporting["id"]
    # The in-task parent is that same version: the chain goes through.
    assert recorded.edges() == {(SALES_TABLE, path.as_uri(), reporting["id"])}
    assert recorded.inputs(reporting["id"]) == {SALES_TABLE}
    upstream = dpt_core.lineage(path, direction="upstream")
    assert {n.uri for n in upstream.nodes} == {path.as_uri(), SALES_TABLE}


def test_track_in_a_task_without_hooks_and_in_the_flow_body(run_flow: Any, recorded: Any) -> None:
    state = run_flow(warehouse_in_flow_body)
    assert state.is_completed()
    flow_row = recorded.one(task=None)
    in_task = recorded.one(task="track_the_asset_too")
    versions = recorded.versions(SALES_TABLE)
    assert {v["produced_by_id"] for v in versions} == {in_task["id"], flow_row["id"]}
    assert recorded.versions("warehouse://sales") == []
