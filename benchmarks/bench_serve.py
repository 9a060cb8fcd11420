"""``dpt serve``: sustained OpenLineage ingest over HTTP, and the read API's lineage.

    python -m benchmarks.bench_serve [--backend postgresql|sqlite] [--clients 8]
        [--events 1000] [--products 100000] [--edges 200000] [--runs 25] [--no-lineage]

Ingest: ``--clients`` client processes each post ``--events`` OpenLineage RunEvents (a
START and a COMPLETE per run, two shared versioned inputs and one output of its own),
one event per request over a keep-alive connection, as the OpenLineage HTTP transport
does; bodies are serialised before the clock starts, so the clients cost little CPU on
the machine the server shares with them. Figures: events/s over the wall time from the
first request to the last answer, p50/p99 of the per-request latency, and the CPU time
the server process used per event (``server_cpu_ms_per_event``, from ``/proc``), for

* ``floor``: the same framework (Starlette on uvicorn, one process) with an endpoint
  that reads the body and answers 200, measured in the same run: no server of this
  stack answers faster on this machine;
* ``dpt serve``: the real server with its group-commit writer, into a fresh database;
  with the groups it formed (requests per transaction);
* ``in-process``: dpt's own ingest of the same events in one process, without HTTP:
  one ``ingest()`` per event (a transaction each), and one per group of the server's
  largest size (``MAX_GROUP_EVENTS``).

Targets (issue 16): >= 1000 events/s and p99 <= 50 ms on PostgreSQL with 8 clients.

Lineage: the graph of ``benchmarks.bench_lineage`` (``--products`` / ``--edges``, 31
levels) bulk-loaded and analysed, then ``GET /api/lineage?uri=<a node 30 levels
deep>`` end to end (HTTP, JSON) against ``dpt serve --read-only``, next to the same
``lineage()`` call in-process and the floor's empty GET. Target: <= 30 ms.

The machine's load average is printed before and after each phase.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from benchmarks._common import cpu_seconds, database, emit, isolated_dpt, machine, p95, table

TOKEN = "bench-token"
REPO = Path(__file__).resolve().parents[1]
SHARED_INPUTS = 50


# =========================================================================== events


def events(client: int, count: int) -> list[dict[str, Any]]:
    """``count`` RunEvents of client ``client``: START then COMPLETE per run."""
    out: list[dict[str, Any]] = []
    for i in range(count // 2):
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{client}-{i}"))
        inputs = [
            {
                "namespace": "s3://shared",
                "name": f"raw/{k}.csv",
                "facets": {
                    "version": {
                        "_producer": "https://github.com/data-product-tracker/benchmarks",
                        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/"
                        "DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                        "datasetVersion": "v1",
                    }
                },
            }
            for k in sorted({i % SHARED_INPUTS, (i * 7 + client) % SHARED_INPUTS})
        ]
        output = {"namespace": "s3://out", "name": f"client{client}/part-{i}.parquet"}
        for state, outputs in (("START", []), ("COMPLETE", [output])):
            out.append(
                {
                    "eventType": state,
                    "eventTime": f"2026-01-02T03:{(i // 60) % 60:02d}:{i % 60:02d}.000Z",
                    "run": {"runId": run_id},
                    "job": {"namespace": "bench", "name": f"ingest-{client}"},
                    "inputs": inputs,
                    "outputs": outputs,
                    "producer": "https://github.com/data-product-tracker/benchmarks",
                    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                }
            )
    return out


# =========================================================================== processes


def _python(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    environ = dict(os.environ if env is None else env)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, *args], env=environ, text=True, stdout=subprocess.PIPE, **popen
    )


def _wait_for_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if "http://" in line:
            return next(word for word in line.split() if word.startswith("http://"))
    raise SystemExit(f"the server exited ({proc.wait()}) without printing its URL")


def start_dpt_serve(environ: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = _python(
        "-m", "dpt_core.cli", "serve", "--port", "0", "--no-access-log", *args,
        env={**os.environ, **environ, "DPT_SERVER_TOKEN": TOKEN},
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, _wait_for_url(proc)


def start_floor() -> tuple[subprocess.Popen[str], str]:
    proc = _python("-m", "benchmarks.bench_serve", "--serve-floor", stderr=subprocess.DEVNULL)
    return proc, _wait_for_url(proc)


def serve_floor() -> None:
    """The floor: Starlette on uvicorn, an endpoint that reads the body and answers."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def lineage(request: Request) -> Response:
        await request.body()
        return Response(b'{"status":"recorded","events":1}', media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/api/v1/lineage", lineage, methods=["POST"]),
            Route("/api/health", health),
        ]
    )
    # proto IPPROTO_TCP, as getaddrinfo gives dpt serve's: asyncio sets TCP_NODELAY only
    # on accepted sockets of that proto (with 0, every response waits for a delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"floor: http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning"))
    server.run(sockets=[sock])


def _connect(url: str) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle off, as urllib3 (the OpenLineage client's
    requests) and httpx open theirs: http.client alone sends the headers and the body
    in two segments, and the second waits for a delayed ACK (40 ms a request)."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def run_client(url: str, client: int, count: int, start_at: float) -> None:
    """One client process: post its events one per request, print the latencies."""
    bodies = [json.dumps(e).encode() for e in events(client, count)]
    conn = _connect(url)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    conn.request("GET", "/api/health")
    conn.getresponse().read()
    latencies: list[float] = []
    codes: dict[int, int] = {}
    time.sleep(max(0.0, start_at - time.time()))
    first = time.time()
    for body in bodies:
        sent = time.perf_counter()
        conn.request("POST", "/api/v1/lineage", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - sent)
        codes[response.status] = codes.get(response.status, 0) + 1
    print(json.dumps({"first": first, "last": time.time(), "latencies": latencies, "codes": codes}))


def drive(url: str, clients: int, count: int, server: int | None = None) -> dict[str, Any]:
    """Run the clients against ``url``; with ``server`` (its pid), also the CPU time that
    process used per event over the run (HTTP, validation, mapping, recording)."""
    start_at = time.time() + 3.0  # every client connected and its bodies built by then
    cpu_before = cpu_seconds(server) if server is not None else None
    procs = [
        _python("-m", "benchmarks.bench_serve", "--client", url, str(c), str(count), str(start_at))
        for c in range(clients)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        results.append(json.loads(out.strip().splitlines()[-1]))
    latencies = sorted(x for r in results for x in r["latencies"])
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
    wall = max(r["last"] for r in results) - min(r["first"] for r in results)
    cpu_after = cpu_seconds(server) if server is not None else None
    cpu_ms = (
        (cpu_after - cpu_before) * 1000 / len(latencies)
        if cpu_before is not None and cpu_after is not None
        else None
    )
    return {
        "events": len(latencies),
        "events_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        "server_cpu_ms_per_event": cpu_ms,
        "codes": codes,
    }


# =========================================================================== phases


def bench_ingest(backend: str, clients: int, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    emit("serve.ingest.setup", backend=backend, clients=clients, events_per_client=count,
         load_average=os.getloadavg(), **machine())  # fmt: skip
    floor, floor_url = start_floor()
    try:
        figures = drive(floor_url, clients, count, floor.pid)
    finally:
        floor.terminate()
        floor.wait()
    rows.append({"what": "floor (empty endpoint)", **figures})
    with database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        environ = {
            "DPT_DATABASE_URL": url,
            "DPT_SPOOL_DIR": f"{tmp}/spool",
            "DPT_CACHE_DIR": f"{tmp}/cache",
            "DPT_REDACTION_KEY": "bench",
            "DPT_CONFIG": f"{tmp}/none.toml",
        }
        Path(f"{tmp}/none.toml").write_text("")
        server, server_url = start_dpt_serve(environ)
        try:
            figures = drive(server_url, clients, count, server.pid)
            health = json.loads(_get(server_url, "/api/health"))
            stats = json.loads(_get(server_url, "/api/stats"))
        finally:
            server.terminate()
            server.wait()
        writer = health["writer"]
        rows.append(
            {
                "what": "dpt serve",
                **figures,
                "requests_per_commit": writer["requests"] / max(1, writer["groups"]),
            }
        )
        expected_runs = clients * (count // 2)
        if figures["codes"] != {"200": clients * count}:
            raise SystemExit(f"not every request was recorded: {figures['codes']}")
        if stats["invocations"] != expected_runs or health["spool"]["events"]:
            raise SystemExit(f"the server lost or spooled events: {stats} {health}")
    emit("serve.ingest.load", load_average=os.getloadavg())
    rows += in_process(backend, clients, count)
    return rows


def in_process(backend: str, clients: int, count: int) -> list[dict[str, Any]]:
    """dpt's own ingest of the same events, no HTTP: per event, and per group."""
    from dpt_core.ingest import ingest, parse_events
    from dpt_core.server.writer import MAX_GROUP_EVENTS

    every = [e for c in range(clients) for e in events(c, count)]
    rows = []
    groups = [every[i : i + MAX_GROUP_EVENTS] for i in range(0, len(every), MAX_GROUP_EVENTS)]
    for label, batches in (
        ("in-process, one ingest() per event", [[e] for e in every]),
        (f"in-process, one ingest() per {MAX_GROUP_EVENTS} events", groups),
    ):
        with database(backend) as url, isolated_dpt(url):
            start = time.perf_counter()
            for batch in batches:
                outcome = ingest(parse_events(batch)).outcome
                if outcome != "recorded":  # (a spooled batch would time the spool)
                    raise SystemExit(f"in-process ingest: {outcome}")
            seconds = time.perf_counter() - start
        rows.append({"what": label, "events": len(every), "events_per_s": len(every) / seconds})
    return rows


def _get(url: str, path: str) -> str:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    conn.request("GET", path)
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def _timed_gets(url: str, path: str, runs: int) -> list[float]:
    conn = _connect(url)
    samples = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        samples.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
    conn.close()
    return samples[1:]  # the first warms the connection and the caches


def bench_lineage(backend: str, products: int, edges: int, runs: int) -> list[dict[str, Any]]:
    from benchmarks.bench_lineage import Shape, analyse, generate
    from dpt_core.store.engine import make_engine
    from dpt_core.store.lineage import lineage

    shape = Shape(products, 31, edges)
    emit("serve.lineage.setup", backend=backend, products=shape.products, edges=shape.edges,
         load_average=os.getloadavg())  # fmt: skip
    rows = []
    floor, floor_url = start_floor()
    try:
        empty = _timed_gets(floor_url, "/api/health", runs)
    finally:
        floor.terminate()
        floor.wait()
    rows.append({"what": "floor: empty GET", "median_ms": _ms(empty), "p95_ms": _p95(empty)})
    with database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url, statement_timeout=600)
        uris = generate(engine, shape, None)
        analyse(engine)
        deep = uris[shape.pid(shape.levels - 1, shape.width // 2)]
        with isolated_dpt(url):
            result = lineage(deep, "upstream", engine=engine)
            nodes = len(result.nodes)
            samples = []
            for _ in range(runs + 1):
                start = time.perf_counter()
                lineage(deep, "upstream", engine=engine).to_dict()
                samples.append(time.perf_counter() - start)
            samples = samples[1:]
        rows.append({"what": "in-process lineage()", "nodes": nodes, "median_ms": _ms(samples),
                     "p95_ms": _p95(samples)})  # fmt: skip
        engine.dispose()
        environ = {
            "DPT_DATABASE_URL": url,
            "DPT_SPOOL_DIR": f"{tmp}/spool",
            "DPT_CACHE_DIR": f"{tmp}/cache",
            "DPT_CONFIG": f"{tmp}/none.toml",
        }
        Path(f"{tmp}/none.toml").write_text("")
        server, server_url = start_dpt_serve(environ, "--read-only")
        try:
            path = "/api/lineage?" + urlencode({"uri": deep, "direction": "upstream"})
            samples = _timed_gets(server_url, path, runs)
            body = json.loads(_get(server_url, path))
        finally:
            server.terminate()
            server.wait()
        rows.append({"what": "GET /api/lineage (HTTP, JSON)", "nodes": len(body["nodes"]),
                     "median_ms": _ms(samples), "p95_ms": _p95(samples)})  # fmt: skip
    emit("serve.lineage.load", load_average=os.getloadavg())
    return rows


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _p95(samples: list[float]) -> float:
    return p95(samples) * 1000


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-floor":
        serve_floor()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, client, count, start_at = sys.argv[2:6]
        run_client(url, int(client), int(count), float(start_at))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--events", type=int, default=1000, help="events per client")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--no-ingest", action="store_true")
    parser.add_argument("--no-lineage", action="store_true")
    args = parser.parse_args()
    if not args.no_ingest:
        rows = bench_ingest(args.backend, args.clients, args.events)
        for row in rows:
            emit("serve.ingest", backend=args.backend, **row)
        print()
        table([{k: v for k, v in r.items() if k != "codes"} for r in rows])
        served = next(r for r in rows if r["what"] == "dpt serve")
        verdict = "meets" if served["events_per_s"] >= 1000 and served["p99_ms"] <= 50 else "MISSES"
        print(f"\ningest {verdict} the target (>= 1000 events/s, p99 <= 50 ms); "
              f"status codes {served['codes']}\n")  # fmt: skip
    if not args.no_lineage:
        rows = bench_lineage(args.backend, args.products, args.edges, args.runs)
        for row in rows:
            emit("serve.lineage", backend=args.backend, **row)
        print()
        table(rows)
        served = rows[-1]
        verdict = "meets" if served["median_ms"] <= 30 else "MISSES"
        print(f"\nlineage over HTTP {verdict} the target (<= 30 ms median)")


if __name__ == "__main__":
    main()
