"""The Airflow internals dpt_airflow.compat relies on, one test each: they fail loudly when an
Airflow release moves or reshapes them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

from dpt_airflow import compat


def test_context_variables_are_airflows_own(airflow_db: Path) -> None:
    logical_date = dt.datetime(2026, 12, 5, 1, 2, 3, tzinfo=dt.UTC)
    context = {
        "task": SimpleNamespace(owner="survey", email=["a@example.org", "b@example.org"]),
        "task_instance": SimpleNamespace(dag_id="nightly", task_id="calibrate", try_number=2),
        "dag_run": SimpleNamespace(run_id="manual__1", logical_date=logical_date),
    }
    assert compat.context_variables(context) == {
        "AIRFLOW_CTX_DAG_OWNER": "survey",
        "AIRFLOW_CTX_DAG_EMAIL": "a@example.org,b@example.org",
        "AIRFLOW_CTX_DAG_ID": "nightly",
        "AIRFLOW_CTX_TASK_ID": "calibrate",
        "AIRFLOW_CTX_LOGICAL_DATE": "2026-12-05T01:02:03+00:00",
        "AIRFLOW_CTX_TRY_NUMBER": "2",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__1",
    }


def test_airflows_masker_masks_the_secrets_it_knows_in_string_values(airflow_db: Path) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret("zq-compat-secret-9917")
    masked = compat.mask_airflow_secrets(
        {"note": "login zq-compat-secret-9917 ok", "password": "left-to-dpt", "n": [1, "a"]}
    )
    assert masked == {"note": "login <redacted> ok", "password": "left-to-dpt", "n": [1, "a"]}
    assert compat.mask_airflow_secrets("zq-compat-secret-9917") == "<redacted>"
    assert compat.mask_airflow_secrets(None) is None


def test_a_secret_airflow_learns_later_is_masked_from_then_on(airflow_db: Path) -> None:
    """The masker's pattern is read at each call, not kept: a secret a task fetches
    mid-try (a connection's password) is masked in what is recorded after it."""
    from airflow.sdk.log import mask_secret

    text = {"command": ["run", "--token", "zq-later-secret-4471"], "n": [1, "x"]}
    assert compat.mask_airflow_secrets(text) == text
    mask_secret("zq-later-secret-4471")
    assert compat.mask_airflow_secrets(text) == {
        "command": ["run", "--token", "<redacted>"],
        "n": [1, "x"],
    }


def test_dag_run_tries_reads_the_current_tries_in_a_session_of_its_own(
    dpt_env: object, run_dag: object
) -> None:
    result = run_dag("dpt_failure")  # type: ignore[operator]
    rows = compat.dag_run_tries("dpt_failure", result.run_id)
    assert rows is not None
    assert [
        (r.dag_id, r.task_id, r.map_index, r.try_number, compat.state_text(r.state)) for r in rows
    ] == [("dpt_failure", "explode", -1, 1, "failed")]
    assert rows[0].run_id == result.run_id
