"""A DAG that Airflow's OpenLineage provider and dpt's listener both report
(tests/airflow/test_openlineage_provider.py).

``extract`` is a BashOperator and ``transform`` a ``@task``, each with Asset inlets
and outlets (the provider's Bash and Python extractors fall back to those); ``publish``
is an operator whose lineage only the provider knows, from the operator's own
``get_openlineage_facets_on_complete`` (the provider's DefaultExtractor): an input
file and an S3 object dpt's listener never sees. ``explode`` fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, BaseOperator, dag, task

DATA = Path(os.environ.get("DPT_TEST_AIRFLOW_DATA", "/tmp/dpt-airflow-test-data"))
DAG_ID = "dpt_openlineage_provider"
PUBLISHED = ("s3://survey-public", "lightcurves/ol_out.csv")


def asset(name: str) -> Asset:
    return Asset((DATA / name).as_uri())


RAW, MID, OUT = asset("ol_raw.csv"), asset("ol_mid.csv"), asset("ol_out.csv")


class PublishOperator(BaseOperator):
    """Publishes ``ol_out.csv`` (here: reads it) and says so in OpenLineage terms."""

    def execute(self, context: Any) -> None:
        (DATA / "ol_out.csv").read_text()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        return OperatorLineage(
            inputs=[Dataset(namespace="file", name=str(DATA / "ol_out.csv"))],
            outputs=[Dataset(namespace=PUBLISHED[0], name=PUBLISHED[1])],
        )


@dag(dag_id=DAG_ID, schedule=None)
def openlineage_provider_dag() -> None:
    extract = BashOperator(
        task_id="extract",
        bash_command=f"tr a-z A-Z < {DATA / 'ol_raw.csv'} > {DATA / 'ol_mid.csv'}",
        inlets=[RAW],
        outlets=[MID],
    )

    @task(inlets=[MID], outlets=[OUT])
    def transform() -> None:
        rows = (DATA / "ol_mid.csv").read_text().splitlines()
        (DATA / "ol_out.csv").write_text("".join(f"{r},{len(r)}\n" for r in rows))

    @task(retries=0)
    def explode() -> None:
        raise ValueError("boom")

    extract >> transform() >> PublishOperator(task_id="publish") >> explode()


openlineage_provider_dag()
