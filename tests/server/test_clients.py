"""Real OpenLineage clients post to a real ``dpt serve``: the ``openlineage-python``
client's HTTP transport (sync, on requests) and its async transport (on httpx), with the
token as the client's ``api_key`` auth sends it; then 8 client processes x 250 events over
overlapping datasets. Each test asserts the rows recorded, not just the absence of errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import HANG, DptServer, subprocess_env

from dpt_core.testing import DptTestEnv

TOKEN = "client-token-0123456789"

#: Builds the events of one client: RUNS runs, each a START (reading two of the shared
#: inputs, versioned) and a COMPLETE (the same inputs, one output of its own).
EVENTS = textwrap.dedent(
    """
    import datetime as dt
    import uuid

    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import dataset_version_dataset

    SHARED_INPUTS = 10

    def events(client: int, runs: int, job: str = "ingest") -> list:
        out = []
        when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        for i in range(runs):
            run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"client-{client}-run-{i}"))
            inputs = [
                InputDataset(
                    namespace="s3://shared",
                    name=f"raw/{k}.csv",
                    facets={"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="v1")},
                )
                for k in sorted({i % SHARED_INPUTS, (i + client) % SHARED_INPUTS})
            ]
            output = OutputDataset(namespace="s3://out", name=f"client{client}/part-{i}.parquet")
            for state, outputs in ((RunState.START, []), (RunState.COMPLETE, [output])):
                out.append(
                    RunEvent(
                        eventType=state,
                        eventTime=(when + dt.timedelta(seconds=i)).isoformat(),
                        run=Run(runId=run_id),
                        job=Job(namespace="clients", name=f"{job}-{client}"),
                        producer="https://github.com/data-product-tracker/tests",
                        inputs=inputs,
                        outputs=outputs,
                    )
                )
        return out
    """
)

SYNC_CLIENT = EVENTS + textwrap.dedent(
    """
    import collections
    import json
    import sys

    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    url, token, client, runs, compression = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    config = {"url": url, "auth": {"type": "api_key", "apiKey": token}, "timeout": 120,
              "retry": {"total": 0}}  # a 5xx must show, not be retried away
    if compression != "none":
        config["compression"] = compression
    transport = HttpTransport(HttpConfig.from_dict(config))
    ol = OpenLineageClient(transport=transport)
    codes = collections.Counter()
    bodies = collections.Counter()
    for event in events(client, runs):
        response = transport.emit(event)
        codes[response.status_code] += 1
        bodies[response.json()["status"]] += 1
    print(json.dumps({"codes": codes, "bodies": bodies}))
    """
)

ASYNC_CLIENT = EVENTS + textwrap.dedent(
    """
    import json
    import sys

    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.async_http import AsyncHttpConfig, AsyncHttpTransport

    url, token, client, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    transport = AsyncHttpTransport(AsyncHttpConfig.from_dict(
        {"url": url, "auth": {"type": "api_key", "apiKey": token}, "timeout": 120,
         "retry": {"total": 0}}))
    ol = OpenLineageClient(transport=transport)
    for event in events(client, runs):
        ol.emit(event)
    done = transport.wait_for_completion(timeout=300)
    stats = dict(transport.get_stats())
    transport.close(timeout=60)
    print(json.dumps({"done": done, "stats": stats}))
    """
)


def run_client(script: str, *args: Any, environ: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True, text=True, env=subprocess_env(environ), timeout=HANG * 5,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def counts(env: DptTestEnv) -> dict[str, int]:
    return {
        table: env.scalar(f"SELECT COUNT(*) FROM {table}")
        for table in ("invocations", "data_products", "data_product_versions",
                      "lineage_edges", "invocation_inputs")
    }  # fmt: skip


def expected_counts(clients: int, runs: int) -> dict[str, int]:
    """What ``clients`` x ``runs`` runs of EVENTS record, each exactly once."""
    return {
        "invocations": clients * runs,
        "data_products": 10 + clients * runs,  # the shared inputs, one output per run
        "data_product_versions": 10 + clients * runs,  # inputs carry version v1
        "lineage_edges": sum(
            len({i % 10, (i + c) % 10}) for c in range(clients) for i in range(runs)
        ),
        "invocation_inputs": sum(
            len({i % 10, (i + c) % 10}) for c in range(clients) for i in range(runs)
        ),
    }


def assert_runs_recorded(server: DptServer, clients: int, runs: int) -> None:
    env = server.env
    assert counts(env) == expected_counts(clients, runs)
    assert env.rows("SELECT status, COUNT(*) FROM invocations GROUP BY status") == [
        ("success", clients * runs)
    ]
    assert env.scalar("SELECT COUNT(DISTINCT uuid) FROM invocations") == clients * runs
    for client in range(clients):
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"client-{client}-run-3"))
        run = server.get(f"/api/runs/{run_id}").json()
        assert (run["job"], run["status"], run["orchestrator"]) == (
            f"ingest-{client}", "success", "openlineage",
        )  # fmt: skip
        lineage = server.get("/api/lineage", uri=f"s3://out/client{client}/part-3.parquet").json()
        parents = sorted(e["parent"] for e in lineage["edges"])
        expected = sorted(f"s3://shared/raw/{k}.csv" for k in {3 % 10, (3 + client) % 10})
        assert parents == expected
        assert {e["invocation"] for e in lineage["edges"]} == {run_id}


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_sync_http_transport_with_api_key_auth(dpt_server: DptServer, compression: str) -> None:
    dpt_server.restart(token=TOKEN)
    result = run_client(SYNC_CLIENT, dpt_server.url, TOKEN, 0, 20, compression,
                        environ=dpt_server.environ)  # fmt: skip
    assert result == {"codes": {"200": 40}, "bodies": {"recorded": 40}}
    assert_runs_recorded(dpt_server, 1, 20)


def test_the_sync_transport_with_a_wrong_key_is_refused_and_nothing_is_stored(
    dpt_server: DptServer,
) -> None:
    dpt_server.restart(token=TOKEN)
    script = SYNC_CLIENT.replace(
        "response = transport.emit(event)", "response = transport.emit(event)  # noqa"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, dpt_server.url, "wrong-key", "0", "1", "none"],
        capture_output=True, text=True, env=subprocess_env(dpt_server.environ), timeout=HANG,
    )  # fmt: skip
    assert result.returncode != 0
    assert "401" in result.stderr and "Unauthorized" in result.stderr
    assert counts(dpt_server.env)["invocations"] == 0


def test_the_async_http_transport_with_api_key_auth(dpt_server: DptServer) -> None:
    dpt_server.restart(token=TOKEN)
    result = run_client(ASYNC_CLIENT, dpt_server.url, TOKEN, 0, 50, environ=dpt_server.environ)
    assert result == {"done": True, "stats": {"pending": 0, "success": 100, "failed": 0}}
    assert_runs_recorded(dpt_server, 1, 50)


def test_the_async_transport_with_a_wrong_key_fails_every_event(dpt_server: DptServer) -> None:
    dpt_server.restart(token=TOKEN)
    result = run_client(ASYNC_CLIENT, dpt_server.url, "wrong", 0, 5, environ=dpt_server.environ)
    assert result["stats"] == {"pending": 0, "success": 0, "failed": 10}
    assert counts(dpt_server.env)["invocations"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_client_processes_of_250_events_store_every_event_exactly_once(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    env = request.getfixturevalue("pg_dpt_env" if backend == "postgresql" else "dpt_env")
    server = DptServer(env.environ(), tmp_path / "server", env=env)
    server.directory.mkdir()
    server.start("--no-access-log", token=TOKEN)
    try:
        clients, runs = 8, 125  # 250 events each: a START and a COMPLETE per run
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SYNC_CLIENT, server.url, TOKEN, str(c), str(runs), "none"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=subprocess_env(server.environ),
            )  # fmt: skip
            for c in range(clients)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=HANG * 5)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        assert all(r == {"codes": {"200": 250}, "bodies": {"recorded": 250}} for r in results), (
            results
        )
        assert_runs_recorded(server, clients, runs)
        writer = server.get("/api/health").json()["writer"]
        assert writer["events"] == clients * runs * 2 and writer["requests"] == clients * runs * 2
        assert writer["groups"] <= writer["requests"]
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr
