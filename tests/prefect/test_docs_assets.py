"""The corpus: Prefect's assets guides, written as the guides write them.

Each example of "How to use assets to track workflow outputs" and "How to customize
asset metadata" (Prefect 3 docs), with dpt's one line added to the flow
(``@flow(**dpt_prefect.flow_hooks())``) and nothing else; the tasks are the guide's.
Where two examples of the guides share a function name, the later one gets a suffix
(Prefect names the task after the function). Each test asserts exactly what dpt
recorded: the runs and their statuses, each product's versions and producer, the
lineage edges and each task run's inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize

import dpt_prefect

# -- "Basic asset materialization" ---------------------------------------------------------


@materialize("s3://my-bucket/processed-data.csv")
def process_data(data: dict):  # type: ignore[no-untyped-def,type-arg]
    # Your data processing logic here
    # save_to_s3(data, "s3://my-bucket/processed-data.csv")
    return data


@flow(**dpt_prefect.flow_hooks())
def data_pipeline(data: dict):  # type: ignore[no-untyped-def,type-arg]
    process_data(data)


# -- "Asset dependencies through task graphs" ----------------------------------------------


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


# -- "Multiple asset materialization" --------------------------------------------------------


def fetch_source_data() -> list[str]:
    return ["a", "b"]


def create_summary_report(data: list[str]) -> None:
    pass


def create_detailed_report(data: list[str]) -> None:
    pass


@materialize("s3://my-bucket/summary.csv", "s3://my-bucket/details.csv")
def generate_reports():  # type: ignore[no-untyped-def]
    data = fetch_source_data()
    create_summary_report(data)
    create_detailed_report(data)


@flow(**dpt_prefect.flow_hooks())
def reports_pipeline():  # type: ignore[no-untyped-def]
    generate_reports()


# -- "External and cross-flow asset dependencies" ----------------------------------------------


# Depends on asset from another Prefect flow
@materialize(
    "s3://my-bucket/downstream-data.csv",
    asset_deps=["s3://my-bucket/upstream-data.csv"],  # From different flow
)
def process_downstream_data():  # type: ignore[no-untyped-def]
    pass


# Depends on external system assets
@materialize(
    "s3://my-bucket/enriched-data.csv",
    asset_deps=[
        "postgres://db/users_table",  # External database
        "sftp://vendor/daily-feed.csv",  # External data feed
    ],
)
def enrich_user_data():  # type: ignore[no-untyped-def]
    pass


@flow(**dpt_prefect.flow_hooks())
def analytics_pipeline():  # type: ignore[no-untyped-def]
    process_downstream_data()
    enrich_user_data()


# -- "Using assets in materializations" (the Asset class) -------------------------------------

detailed_asset = Asset(
    key="s3://my-bucket/processed-data.csv",
    properties=AssetProperties(
        name="Processed Customer Data",
        description="Clean customer data with PII removed",
        owners=["data-team@company.com", "alice@company.com"],
        url="https://dashboard.company.com/datasets/customer-data",
    ),
)

properties = AssetProperties(
    name="Sales Analytics Dataset",
    description="This dataset contains daily sales figures by region along with customer segmentation data",
    owners=["analytics-team", "john.doe@company.com"],
    url="https://analytics.company.com/sales-dashboard",
)

sales_asset = Asset(key="snowflake://warehouse/analytics/sales_summary", properties=properties)


@materialize(detailed_asset)
def process_customer_data():  # type: ignore[no-untyped-def]
    # Your processing logic here
    pass


@materialize(sales_asset)
def generate_sales_report():  # type: ignore[no-untyped-def]
    # Your reporting logic here
    pass


@flow(**dpt_prefect.flow_hooks())
def analytics_pipeline_with_properties():  # type: ignore[no-untyped-def]
    process_customer_data()
    generate_sales_report()


# -- "Adding runtime metadata" ------------------------------------------------------------------

customer_data = Asset(
    key="s3://my-bucket/customer-data.csv",
    properties=AssetProperties(name="Customer Data", owners=["data-team@company.com"]),
)


def perform_customer_processing() -> list[int]:
    return [1, 2, 3]


def perform_processing() -> list[int]:
    return [1, 2]


@materialize(customer_data)
def process_customers():  # type: ignore[no-untyped-def]
    # Your processing logic
    result = perform_customer_processing()

    # Add runtime metadata
    customer_data.add_metadata(
        {
            "record_count": len(result),
            "processing_duration_seconds": 45.2,
            "data_quality_score": 0.95,
            "last_updated": "2024-01-15T10:30:00Z",
        }
    )

    return result


@materialize("s3://my-bucket/processed-data.csv")
def process_data_with_metadata():  # type: ignore[no-untyped-def]
    result = perform_processing()

    add_asset_metadata(
        "s3://my-bucket/processed-data.csv",
        {"rows_processed": len(result), "processing_time": "2.5s"},
    )

    return result


@flow(**dpt_prefect.flow_hooks())
def runtime_metadata():  # type: ignore[no-untyped-def]
    process_customers()
    process_data_with_metadata()


# -- "Explicit asset dependencies" ----------------------------------------------------------

# Define your assets
raw_data_asset = Asset(key="s3://my-bucket/raw-data.csv")
config_asset = Asset(key="s3://my-bucket/processing-config.json")
processed_asset = Asset(key="s3://my-bucket/processed-data.csv")


@materialize(raw_data_asset)
def extract_raw_data():  # type: ignore[no-untyped-def]
    pass


@materialize(
    processed_asset,
    asset_deps=[raw_data_asset, config_asset],  # Explicit dependencies
)
def process_data_explicit():  # type: ignore[no-untyped-def]
    # This function depends on both raw data and config
    # even if they're not directly passed as parameters
    pass


@flow(**dpt_prefect.flow_hooks())
def explicit_dependencies_flow():  # type: ignore[no-untyped-def]
    extract_raw_data()
    process_data_explicit()  # Explicitly depends on raw_data_asset and config_asset


# -- "Mixing inferred and explicit dependencies" --------------------------------------------

upstream_asset = Asset(key="s3://my-bucket/upstream.csv")
mixed_config_asset = Asset(key="s3://my-bucket/config.json")
downstream_asset = Asset(key="s3://my-bucket/downstream.csv")


@materialize(upstream_asset)
def create_upstream():  # type: ignore[no-untyped-def]
    return "upstream_data"


@materialize(
    downstream_asset,
    asset_deps=[mixed_config_asset],  # Explicit dependency on config
)
def create_downstream(upstream_data):  # type: ignore[no-untyped-def]
    # This asset depends on:
    # 1. upstream_asset (inferred from task graph)
    # 2. config_asset (explicit via asset_deps)
    pass


@flow(**dpt_prefect.flow_hooks())
def mixed_dependencies():  # type: ignore[no-untyped-def]
    data = create_upstream()
    create_downstream(data)


# -- helpers ------------------------------------------------------------------------------------


def assert_runs(recorded: Any, flow_job: str, tasks: dict[str, str]) -> dict[str, Any]:
    """The flow run succeeded; exactly ``tasks`` (name -> status) ran under it. Rows by task."""
    flow_row = recorded.one(task=None)
    assert flow_row["job"] == flow_job
    assert flow_row["status"] == "success"
    rows = {r["task"]: r for r in recorded.invocations() if r["task"] is not None}
    assert {name: r["status"] for name, r in rows.items()} == tasks
    assert all(r["parent_id"] == flow_row["id"] for r in rows.values())
    assert len(recorded.invocations()) == 1 + len(tasks)
    return {None: flow_row, **rows}


def products(recorded: Any) -> dict[str, list[Any]]:
    """Every product's URI -> (producer task, metadata) of each of its versions."""
    names = {r["id"]: r["task"] for r in recorded.invocations()}
    uris = [r.uri for r in recorded.env.rows("SELECT uri FROM data_products ORDER BY uri")]
    return {
        uri: [(names.get(v["produced_by_id"]), v["metadata"]) for v in recorded.versions(uri)]
        for uri in uris
    }


def edges(recorded: Any) -> set[tuple[str, str, str]]:
    names = {r["id"]: r["task"] for r in recorded.invocations()}
    return {(parent, child, names[inv]) for parent, child, inv in recorded.edges()}


def key(uri: str, **properties: Any) -> dict[str, Any]:
    return {"prefect_asset": {"key": uri, **properties}}


# -- the tests ------------------------------------------------------------------------------


def test_basic_asset_materialization(run_flow: Any, recorded: Any) -> None:
    assert run_flow(data_pipeline, {"rows": 2}).is_completed()
    rows = assert_runs(recorded, "data-pipeline", {"process_data": "success"})
    assert rows[None]["parameters"] == {"data": {"rows": 2}}
    # Recorded as it committed, in the task: its arguments are known.
    assert rows["process_data"]["parameters"] == {"data": {"rows": 2}}
    uri = "s3://my-bucket/processed-data.csv"
    assert products(recorded) == {uri: [("process_data", key(uri))]}
    assert edges(recorded) == set()
    assert recorded.inputs(rows["process_data"]["id"]) == set()


def test_dependencies_through_task_graphs(
    run_flow: Any, recorded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_flow(etl_pipeline).is_completed()
    rows = assert_runs(
        recorded, "etl-pipeline", {"extract_data": "success", "transform_data": "success"}
    )
    raw, clean = "file://my-local-directory/raw-data.csv", "s3://my-bucket/clean-data.csv"
    # A file on another host (the URI's host part): recorded as declared, not hashed here.
    unhashed = {
        "dpt/unhashed": "a file on host 'my-local-directory', not this machine: not read here"
    }
    assert products(recorded) == {
        raw: [("extract_data", {**key(raw), **unhashed})],
        clean: [("transform_data", key(clean))],
    }
    (raw_version,) = recorded.versions(raw)
    assert raw_version["content_hash"] is None
    assert edges(recorded) == {(raw, clean, "transform_data")}
    assert recorded.inputs(rows["transform_data"]["id"]) == {raw}
    assert recorded.inputs(rows["extract_data"]["id"]) == set()


def test_multiple_asset_materialization(run_flow: Any, recorded: Any) -> None:
    assert run_flow(reports_pipeline).is_completed()
    assert_runs(recorded, "reports-pipeline", {"generate_reports": "success"})
    summary, details = "s3://my-bucket/summary.csv", "s3://my-bucket/details.csv"
    assert products(recorded) == {
        details: [("generate_reports", key(details))],
        summary: [("generate_reports", key(summary))],
    }
    assert edges(recorded) == set()


def test_external_and_cross_flow_dependencies(run_flow: Any, recorded: Any) -> None:
    assert run_flow(analytics_pipeline).is_completed()
    rows = assert_runs(
        recorded,
        "analytics-pipeline",
        {"process_downstream_data": "success", "enrich_user_data": "success"},
    )
    upstream, downstream = "s3://my-bucket/upstream-data.csv", "s3://my-bucket/downstream-data.csv"
    users, feed = "postgres://db/users_table", "sftp://vendor/daily-feed.csv"
    enriched = "s3://my-bucket/enriched-data.csv"
    assert products(recorded) == {
        feed: [(None, None)],
        users: [(None, None)],
        downstream: [("process_downstream_data", key(downstream))],
        enriched: [("enrich_user_data", key(enriched))],
        upstream: [(None, None)],
    }
    assert edges(recorded) == {
        (upstream, downstream, "process_downstream_data"),
        (users, enriched, "enrich_user_data"),
        (feed, enriched, "enrich_user_data"),
    }
    assert recorded.inputs(rows["process_downstream_data"]["id"]) == {upstream}
    assert recorded.inputs(rows["enrich_user_data"]["id"]) == {users, feed}


def test_the_asset_class_with_properties(run_flow: Any, recorded: Any) -> None:
    assert run_flow(analytics_pipeline_with_properties).is_completed()
    assert_runs(
        recorded,
        "analytics-pipeline-with-properties",
        {"process_customer_data": "success", "generate_sales_report": "success"},
    )
    processed = "s3://my-bucket/processed-data.csv"
    sales = "snowflake://warehouse/analytics/sales_summary"
    assert products(recorded) == {
        processed: [
            (
                "process_customer_data",
                key(
                    processed,
                    name="Processed Customer Data",
                    description="Clean customer data with PII removed",
                    owners=["data-team@company.com", "alice@company.com"],
                    url="https://dashboard.company.com/datasets/customer-data",
                ),
            )
        ],
        sales: [
            (
                "generate_sales_report",
                key(
                    sales,
                    name="Sales Analytics Dataset",
                    description=properties.description,
                    owners=["analytics-team", "john.doe@company.com"],
                    url="https://analytics.company.com/sales-dashboard",
                ),
            )
        ],
    }
    assert edges(recorded) == set()


def test_runtime_metadata(run_flow: Any, recorded: Any) -> None:
    assert run_flow(runtime_metadata).is_completed()
    assert_runs(
        recorded,
        "runtime-metadata",
        {"process_customers": "success", "process_data_with_metadata": "success"},
    )
    customers, processed = "s3://my-bucket/customer-data.csv", "s3://my-bucket/processed-data.csv"
    assert products(recorded) == {
        customers: [
            (
                "process_customers",
                {
                    **key(customers, name="Customer Data", owners=["data-team@company.com"]),
                    "record_count": 3,
                    "processing_duration_seconds": 45.2,
                    "data_quality_score": 0.95,
                    "last_updated": "2024-01-15T10:30:00Z",
                },
            )
        ],
        processed: [
            (
                "process_data_with_metadata",
                {**key(processed), "rows_processed": 2, "processing_time": "2.5s"},
            )
        ],
    }


def test_explicit_dependencies(run_flow: Any, recorded: Any) -> None:
    assert run_flow(explicit_dependencies_flow).is_completed()
    rows = assert_runs(
        recorded,
        "explicit-dependencies-flow",
        {"extract_raw_data": "success", "process_data_explicit": "success"},
    )
    raw, config = "s3://my-bucket/raw-data.csv", "s3://my-bucket/processing-config.json"
    processed = "s3://my-bucket/processed-data.csv"
    assert products(recorded) == {
        processed: [("process_data_explicit", key(processed))],
        config: [(None, None)],
        raw: [("extract_raw_data", key(raw))],
    }
    # raw-data.csv is the version extract_raw_data made (recorded first, in this flow run).
    assert edges(recorded) == {
        (raw, processed, "process_data_explicit"),
        (config, processed, "process_data_explicit"),
    }
    assert recorded.inputs(rows["process_data_explicit"]["id"]) == {raw, config}


def test_mixing_inferred_and_explicit_dependencies(run_flow: Any, recorded: Any) -> None:
    assert run_flow(mixed_dependencies).is_completed()
    rows = assert_runs(
        recorded,
        "mixed-dependencies",
        {"create_upstream": "success", "create_downstream": "success"},
    )
    upstream, config = "s3://my-bucket/upstream.csv", "s3://my-bucket/config.json"
    downstream = "s3://my-bucket/downstream.csv"
    assert products(recorded) == {
        config: [(None, None)],
        downstream: [("create_downstream", key(downstream))],
        upstream: [("create_upstream", key(upstream))],
    }
    assert edges(recorded) == {
        (upstream, downstream, "create_downstream"),
        (config, downstream, "create_downstream"),
    }
    assert recorded.inputs(rows["create_downstream"]["id"]) == {upstream, config}
    assert rows["create_downstream"]["parameters"] == {"upstream_data": "upstream_data"}
