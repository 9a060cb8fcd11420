"""The code location `dagster dev` serves in the deployment test (see dagster_deployment.py).

The partition-mapping guide's assets (``events`` and ``yesterday_event_stats`` with
``TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)``, dates from 2023-01-21),
an unpartitioned ``reference`` both read, a static-partitioned asset that fails for one
partition, and the dpt sensor in one line, ticking every 2 seconds, with a translator
that names every asset in a lake. ``yesterday_event_stats`` also calls dpt itself, from
the run worker: it must name the same products the sensor names in the daemon.

Files go under ``$DPT_DEPLOYMENT_DATA`` (the test's temporary directory).
"""

import json
import os
from pathlib import Path

import dagster as dg

import dpt_core
import dpt_dagster

DATA = Path(os.environ.get("DPT_DEPLOYMENT_DATA", "/tmp/dpt-dagster-deployment"))
partitions_def = dg.DailyPartitionsDefinition(start_date="2023-01-21", end_date="2023-01-24")
regions = dg.StaticPartitionsDefinition(["us", "eu", "jp"])


class LakeTranslator(dpt_dagster.DagsterTranslator):
    """Every asset that names no file is a product of the team's lake."""

    def get_asset_uri(self, asset_key, partition):
        uri = "lake://deployment/" + "/".join(asset_key.path)
        return f"{uri}/{partition}" if partition is not None else uri


def _write(name: str, content: dict) -> str:
    path = DATA / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return str(path)


@dg.asset
def reference() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dpt/path": _write("reference.json", {"gain": 1.5})})


@dg.asset(partitions_def=partitions_def)
def events(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    path = _write(f"events/{context.partition_key}.json", {"day": context.partition_key})
    return dg.MaterializeResult(metadata={"dpt/path": path})


@dg.asset(
    partitions_def=partitions_def,
    deps=[
        dg.AssetDep(
            events,
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
        ),
        reference,
    ],
)
def yesterday_event_stats(context: dg.AssetExecutionContext) -> None:
    window = context.asset_partition_key_range_for_input("events")
    context.log.info(f"stats of {window.start}")
    with dpt_core.invocation() as inv:  # this materialisation's invocation, from the worker
        inv.read(dg.AssetKey("reference"))


@dg.asset(partitions_def=regions)
def regional_sales(context: dg.AssetExecutionContext) -> None:
    if context.partition_key == "jp":
        raise ValueError("no sales feed for jp")


@dg.asset(partitions_def=regions, deps=[regional_sales])
def regional_summary(context: dg.AssetExecutionContext) -> None: ...


regional_job = dg.define_asset_job("regional_job", selection=[regional_sales, regional_summary])

defs = dg.Definitions(
    assets=[reference, events, yesterday_event_stats, regional_sales, regional_summary],
    jobs=[regional_job],
    sensors=[dpt_dagster.dpt_asset_sensor(minimum_interval_seconds=2, translator=LakeTranslator())],
)
