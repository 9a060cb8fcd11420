"""``dpt serve`` as a process and its request rules: startup, refusals, graceful stop,
read-only, the token, body limits, malformed and invalid events, errors without traces.

Every test talks to a real ``dpt serve`` over real sockets and checks what was stored
(or that nothing was).
"""

from __future__ import annotations

import gzip
import json
import signal
import socket
import time
import uuid

import pytest
from conftest import DptServer, dpt_cli, raw_http, read_response, run_event

from dpt_core.server.api import INLINE_PARSE_EVENTS
from dpt_core.testing import DptTestEnv

TOKEN = "s3cr3t-token-for-tests"


def counts(env: DptTestEnv) -> tuple[int, int, int]:
    return (
        env.scalar("SELECT COUNT(*) FROM invocations"),
        env.scalar("SELECT COUNT(*) FROM data_product_versions"),
        env.scalar("SELECT COUNT(*) FROM lineage_edges"),
    )


def one_event(job: str = "job") -> dict[str, object]:
    return run_event(
        str(uuid.uuid4()),
        job=job,
        inputs=(("s3://bucket", "raw/a.csv"),),
        outputs=(("s3://bucket", "cal/a.csv"),),
    )


def assert_no_trace(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


# =========================================================================== the process


def test_prints_its_url_and_port_zero_picks_a_free_port(dpt_server: DptServer) -> None:
    other = DptServer(dpt_server.environ, dpt_server.directory / "other")
    other.directory.mkdir()
    other.start()
    try:
        assert dpt_server.port != other.port and 0 not in (dpt_server.port, other.port)
        for server in (dpt_server, other):
            assert server.url == f"http://127.0.0.1:{server.port}/"
            assert server.get("/api/health").json()["database"]["reachable"] is True
            assert "open writes" in server.stdout
    finally:
        other.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_writes_on_a_non_loopback_address_need_a_token(dpt_env: DptTestEnv, host: str) -> None:
    result = dpt_cli(dpt_env.environ(), "serve", "--host", host, "--port", "0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "DPT_SERVER_TOKEN" in lines[0] and host in lines[0]
    assert "http://" not in result.stdout  # it never listened


def test_a_non_loopback_address_is_served_with_a_token_or_read_only(
    dpt_env: DptTestEnv, tmp_path
) -> None:
    server = DptServer(dpt_env.environ(), tmp_path)
    for args, token in (
        (("--host", "0.0.0.0"), TOKEN),
        (("--host", "0.0.0.0", "--read-only"), None),
    ):
        server.start(*args, token=token)
        try:
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                status, _, body = read_response(sock)
            assert status == 200 and json.loads(body)["read_only"] == ("--read-only" in args)
        finally:
            assert server.stop() == 0


def test_dpt_disabled_refuses_to_take_writes(dpt_env: DptTestEnv) -> None:
    result = dpt_cli(dpt_env.environ(), "serve", "--port", "0", extra={"DPT_DISABLED": "1"})
    assert result.returncode == 2
    assert "DPT_DISABLED" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_request_in_flight_is_answered_after_the_stop_signal(
    dpt_server: DptServer, sig: int
) -> None:
    event = one_event("in-flight")
    body = json.dumps(event).encode()
    head = (
        f"POST /api/v1/lineage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", dpt_server.port)) as sock:
        sock.sendall(head + body[:40])  # the request is in flight: half its body is sent
        time.sleep(0.5)
        dpt_server.proc.send_signal(sig)
        time.sleep(1.0)
        assert dpt_server.proc.poll() is None, "the server quit with a request in flight"
        # a new connection is no longer accepted once the stop began
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", dpt_server.port)) as s2:
            s2.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if not s2.recv(1):
                raise ConnectionResetError
        sock.sendall(body[40:])
        status, _, answer = read_response(sock)
    assert status == 200, answer
    assert json.loads(answer) == {"status": "recorded", "events": 1}
    assert dpt_server.wait() == 0
    assert dpt_server.env.scalar("SELECT COUNT(*) FROM invocations WHERE job = 'in-flight'") == 1
    assert "Traceback" not in dpt_server.stderr


# =========================================================================== read-only


def test_read_only_takes_no_writes_and_answers_reads(dpt_server: DptServer) -> None:
    dpt_server.restart("--read-only", token=TOKEN)
    before = counts(dpt_server.env)
    for token in (None, TOKEN):
        response = dpt_server.post("/api/v1/lineage", one_event(), token=token)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "GET, HEAD"
        assert "read-only" in response.json()["error"]
    assert dpt_server.get("/api/stats").json()["invocations"] == before[0]
    assert dpt_server.get("/api/health").json()["read_only"] is True
    assert counts(dpt_server.env) == before


# =========================================================================== the token


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
def test_a_write_without_the_token_is_401_and_stores_nothing(
    dpt_server: DptServer, authorization: str | None
) -> None:
    dpt_server.restart(token=TOKEN)
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = dpt_server.post(
        "/api/v1/lineage", content=json.dumps(one_event()).encode(), headers=headers
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text
    assert counts(dpt_server.env) == (0, 0, 0)


def test_the_token_lets_writes_in_and_reads_need_none(dpt_server: DptServer) -> None:
    dpt_server.restart(token=TOKEN)
    for scheme in ("Bearer", "bearer"):
        response = dpt_server.post(
            "/api/v1/lineage",
            content=json.dumps(one_event(f"with-{scheme}")).encode(),
            headers={"Authorization": f"{scheme} {TOKEN}"},
        )
        assert response.status_code == 200, response.text
    assert dpt_server.get("/api/runs").status_code == 200
    jobs = {r["job"] for r in dpt_server.get("/api/runs").json()}
    assert jobs == {"with-Bearer", "with-bearer"}
    assert TOKEN not in dpt_server.stderr and TOKEN not in dpt_server.stdout


# =========================================================================== bodies


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(dpt_server: DptServer) -> None:
    dpt_server.restart("--max-body", "2000")
    head = (
        b"POST /api/v1/lineage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    status, headers, body = raw_http(dpt_server.port, head)  # not one byte of the body sent
    assert status == 413
    assert "2000 bytes" in json.loads(body)["error"]
    assert counts(dpt_server.env) == (0, 0, 0)


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(dpt_server: DptServer) -> None:
    dpt_server.restart("--max-body", "2000")
    head = (
        b"POST /api/v1/lineage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" + b" " * 999
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)]  # 5000 bytes, never ended
    status, _, body = raw_http(dpt_server.port, head, parts)
    assert status == 413, body
    assert counts(dpt_server.env) == (0, 0, 0)


def test_a_lying_content_length_reads_only_what_it_declared(dpt_server: DptServer) -> None:
    dpt_server.restart("--max-body", "2000")
    body = json.dumps([one_event()] * 10).encode()  # > 2000 bytes, declared as 100
    head = (
        b"POST /api/v1/lineage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    status, _, answer = raw_http(dpt_server.port, head, [body])
    assert status == 400, answer  # the first 100 bytes are not a JSON document
    assert "not JSON" in json.loads(answer)["error"]
    assert counts(dpt_server.env) == (0, 0, 0)


def test_a_gzip_body_is_taken_and_a_gzip_bomb_is_413(dpt_server: DptServer) -> None:
    dpt_server.restart("--max-body", "4000")
    small = gzip.compress(json.dumps(one_event("zipped")).encode())
    response = dpt_server.post(
        "/api/v1/lineage", content=small, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    bomb = gzip.compress(b"[" + b" " * 3_000_000 + b"]")
    assert len(bomb) < 4000
    response = dpt_server.post(
        "/api/v1/lineage", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413, response.text
    response = dpt_server.post(
        "/api/v1/lineage", content=b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400 and "gzip" in response.json()["error"]
    response = dpt_server.post("/api/v1/lineage", content=small, headers={"Content-Encoding": "br"})
    assert response.status_code == 415
    assert [r["job"] for r in dpt_server.get("/api/runs").json()] == ["zipped"]


def test_a_body_at_the_limit_is_taken(dpt_server: DptServer) -> None:
    event = json.dumps(one_event("at-the-limit")).encode()
    dpt_server.restart("--max-body", str(len(event)))
    assert dpt_server.post("/api/v1/lineage", content=event).status_code == 200
    assert dpt_server.post("/api/v1/lineage", content=event + b" ").status_code == 413
    assert dpt_server.env.scalar("SELECT COUNT(*) FROM invocations") == 1


# =========================================================================== bad events


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{", "not JSON"),
        (b"", "not JSON"),
        (b'{"eventType": "START",}', "not JSON"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_malformed_json_is_400(dpt_server: DptServer, content: bytes, says: str) -> None:
    response = dpt_server.post("/api/v1/lineage", content=content)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]
    assert_no_trace(response.text)
    assert counts(dpt_server.env) == (0, 0, 0)


def test_an_invalid_event_is_422_naming_the_field_and_stores_nothing(
    dpt_server: DptServer,
) -> None:
    good = one_event("good")
    bad = one_event("bad")
    bad["run"] = {"runId": "not-a-uuid"}
    response = dpt_server.post("/api/v1/lineage", [good, bad])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "[1].run.runId"
    assert "run.runId" in body["error"]
    assert_no_trace(response.text)
    missing = one_event()
    del missing["eventTime"]
    response = dpt_server.post("/api/v1/lineage", missing)
    assert response.status_code == 422 and response.json()["field"] == "eventTime"
    assert counts(dpt_server.env) == (0, 0, 0)  # not even the good event of the first request


@pytest.mark.parametrize("size", [1, INLINE_PARSE_EVENTS, INLINE_PARSE_EVENTS + 4])
def test_lists_checked_in_the_event_loop_or_a_worker_thread_answer_alike(
    dpt_server: DptServer, size: int
) -> None:
    """Up to INLINE_PARSE_EVENTS events are validated in the event loop, more in a worker
    thread: either way the last event's bad field is named and nothing is stored, and the
    same list without it is recorded whole."""
    events = [one_event(f"list-{size}-{i}") for i in range(size)]
    bad = json.loads(json.dumps(events))
    bad[-1]["inputs"][0]["namespace"] = ""
    response = dpt_server.post("/api/v1/lineage", bad)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"[{size - 1}].inputs[0].namespace"
    assert counts(dpt_server.env) == (0, 0, 0)
    response = dpt_server.post("/api/v1/lineage", events)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "recorded", "events": size}
    assert counts(dpt_server.env)[0] == size


def test_a_batch_is_a_json_array(dpt_server: DptServer) -> None:
    run_id = str(uuid.uuid4())
    start = run_event(run_id, "START", job="batched", inputs=(("s3://b", "in.csv"),))
    complete = run_event(run_id, "COMPLETE", job="batched", outputs=(("s3://b", "out.csv"),))
    response = dpt_server.post("/api/v1/lineage", [complete, start])
    assert response.status_code == 200 and response.json() == {"status": "recorded", "events": 2}
    run = dpt_server.get("/api/runs").json()
    assert [(r["job"], r["status"]) for r in run] == [("batched", "success")]
    lineage = dpt_server.get("/api/lineage", uri="s3://b/out.csv").json()
    assert [(e["parent"], e["child"]) for e in lineage["edges"]] == [
        ("s3://b/in.csv", "s3://b/out.csv")
    ]


def test_unknown_paths_and_methods(dpt_server: DptServer) -> None:
    assert dpt_server.get("/api/nothing-here").status_code == 404
    with dpt_server.client() as client:
        assert client.get("/api/v1/lineage").status_code == 405
        assert client.delete("/api/runs").status_code == 405
    assert counts(dpt_server.env) == (0, 0, 0)


# =========================================================================== 500


def test_an_internal_error_is_one_json_line_with_an_id_and_the_trace_goes_to_the_log(
    dpt_server: DptServer,
) -> None:
    assert dpt_server.post("/api/v1/lineage", one_event("corrupted")).status_code == 200
    run_id = dpt_server.get("/api/runs").json()[0]["id"]
    # another tool wrote a row dpt cannot read: its parameters are not JSON
    with dpt_server.env.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text("UPDATE invocations SET parameters = '{not json' WHERE id = :i"), {"i": run_id}
        )
    response = dpt_server.get(f"/api/runs/{run_id}")
    assert response.status_code == 500
    assert response.text.count("\n") == 1 and response.text.endswith("\n")
    body = response.json()
    assert set(body) == {"error", "id"} and body["id"] in body["error"]
    assert_no_trace(response.text)
    deadline = time.monotonic() + 30
    while body["id"] not in dpt_server.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    log = dpt_server.stderr
    assert f"internal error {body['id']}" in log and "Traceback" in log
    # the server goes on serving
    assert dpt_server.get("/api/stats").status_code == 200


def test_events_received_are_not_forwarded_back_by_dpts_openlineage_plugin(
    dpt_env: DptTestEnv, tmp_path
) -> None:
    """A server whose own environment names an OpenLineage URL (a shared container
    environment, an openlineage.yml in its directory) must not re-emit what it receives:
    pointed at itself, that would loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = DptServer(dpt_env.environ(), tmp_path)
    server.start("--port", str(port), extra_env={"OPENLINEAGE_URL": f"http://127.0.0.1:{port}"})
    try:
        assert server.port == port
        assert "forwarding" in server.stderr
        response = server.post("/api/v1/lineage", [
            run_event(str(uuid.uuid4()), "START", job="once"),
            run_event(str(uuid.uuid4()), "COMPLETE", job="twice"),
        ])  # fmt: skip
        assert response.status_code == 200, response.text
        time.sleep(3)  # what a forwarding plugin would send back would have come by now
        writer = server.get("/api/health").json()["writer"]
        assert (writer["requests"], writer["events"]) == (1, 2)
        assert dpt_server_runs(server) == ["once", "twice"]
    finally:
        server.close()
    # nothing tried to send the events on (it stalls the writer for minutes, then loops)
    assert "Retrying" not in server.stderr and "not forwarded" not in server.stderr


def dpt_server_runs(server: DptServer) -> list[str]:
    return sorted(r["job"] for r in server.get("/api/runs").json())


def test_events_the_database_refuses_are_422_and_cost_no_other_request(
    pg_server: DptServer,
) -> None:
    """An event can pass the spec and still not fit a column (a size beyond bigint): the
    database refuses it for good. It must be answered 422, and neither stored nor spooled
    (a spooled batch that can never be replayed would be an acknowledged event lost); the
    requests recorded in the same group must not pay for it."""
    import concurrent.futures

    bad = one_event("too-big")
    bad["outputs"][0]["outputFacets"] = {
        "outputStatistics": {
            "_producer": "https://github.com/data-product-tracker/tests",
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/"
            "OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
            "rowCount": 1,
            "size": 10**30,
        }
    }
    good = [one_event(f"good-{i}") for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # many requests, one group or few
        answers = list(
            pool.map(lambda e: pg_server.post("/api/v1/lineage", e), [*good[:15], bad, *good[15:]])
        )
    refused = answers[15]
    assert refused.status_code == 422, refused.text
    assert "bigint" in refused.json()["error"] or "range" in refused.json()["error"]
    assert_no_trace(refused.text)
    assert [a.status_code for a in answers[:15] + answers[16:]] == [200] * 30
    assert dpt_server_runs(pg_server) == sorted(f"good-{i}" for i in range(30))
    health = pg_server.get("/api/health").json()
    assert health["spool"] == {"events": 0, "bad_files": 0}
    assert pg_server.env.scalar("SELECT COUNT(*) FROM invocations WHERE job = 'too-big'") == 0


# =========================================================================== web pages


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_write_a_web_page_could_send_is_415(dpt_server: DptServer, content_type: str) -> None:
    """A browser sends these cross-origin without asking (simple requests): a page the
    user visits must not be able to write lineage into the server on their loopback."""
    response = dpt_server.post(
        "/api/v1/lineage",
        content=json.dumps(one_event()).encode(),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 415, response.text
    assert counts(dpt_server.env) == (0, 0, 0)
    for accepted in ("application/json", "application/json; charset=utf-8", None):
        headers = {"Content-Type": accepted} if accepted else {}  # (httpx adds none itself)
        response = dpt_server.post(
            "/api/v1/lineage", content=json.dumps(one_event("json")).encode(), headers=headers
        )
        assert response.status_code == 200, (accepted, response.text)
    assert dpt_server.env.scalar("SELECT COUNT(*) FROM invocations") == 3


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:80", 400),
        ("10.0.0.1:8765", 400),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("app.localhost", 200),
        ("127.0.0.1", 200),
        ("127.1.2.3:99", 200),
        ("[::1]:8765", 200),
    ],
)
def test_a_loopback_server_answers_only_loopback_host_names(
    dpt_server: DptServer, host: str, status: int
) -> None:
    """DNS rebinding: a page whose domain now resolves to 127.0.0.1 sends its own name."""
    for request in (
        b"GET /api/runs HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode(),
        b"POST /api/v1/lineage HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n[]" % host.encode(),
    ):
        got, _, body = raw_http(dpt_server.port, request)
        assert got == status, body
    assert counts(dpt_server.env) == (0, 0, 0)
