"""A black-holed database: what small invocations cost with and without the circuit breaker.

A local TCP relay stands between dpt and PostgreSQL. It first black-holes (accepts
connections and never answers, as a dead link or a hung proxy does), then forwards.
While it black-holes, N small invocations (one output each) run in this process with
the breaker on (the default) and then off (``DPT_RETRY_AFTER=0``, fewer invocations:
each event waits its full timeout); then the relay forwards and ``dpt spool replay``
records what was spooled, checked to be every invocation exactly once.

Then the replay itself, old way and new way interleaved in one process: ``--replay``
small invocations (start, one output, end: three one-event batches each, as a process
recording without a batch spools them) wait in the spool, and are replayed batch by
batch (one transaction each, the replay before ``record_many``) and in groups (one
transaction per group of batches, the store's replay now), into PostgreSQL and SQLite,
the database emptied and the spool file put back before each run.

    python -m benchmarks.bench_outage [--invocations 100] [--off-invocations 5]
        [--replay 2000] [--rounds 3]

Timeouts: ``DPT_CONNECT_TIMEOUT=1``, ``DPT_STATEMENT_TIMEOUT=1`` (dpt's defaults are 10).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks._common import database, emit, isolated_dpt, machine, table


class Relay:
    """Black-holes until :meth:`forward`, then relays every new connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.forwarding = False
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def forward(self) -> None:
        self.forwarding = True

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        for sock in self._held:
            sock.close()

    def _loop(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if not self.forwarding:
                self._held.append(client)  # accepted, never answered
                continue
            server = socket.create_connection(self.upstream)
            threading.Thread(target=_pipe, args=(client, server), daemon=True).start()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(a, selectors.EVENT_READ, b)
    selector.register(b, selectors.EVENT_READ, a)
    with contextlib.suppress(OSError):
        while True:
            for key, _ in selector.select():
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    a.close()
                    b.close()
                    return
                key.data.sendall(data)


@contextlib.contextmanager
def relayed(url: str) -> Iterator[tuple[Relay, str]]:
    parsed = make_url(url)
    relay = Relay((parsed.host or "127.0.0.1", parsed.port or 5432))
    try:
        yield relay, parsed.set(port=relay.port).render_as_string(hide_password=False)
    finally:
        relay.close()


_CHILD = """
import json, sys, time
import dpt_core
n = int(sys.argv[1])
start = time.perf_counter()
uuids = []
for i in range(n):
    with dpt_core.invocation("small", task=f"t{i}") as inv:
        inv.write(f"s3://bucket/small/{i}")
        uuids.append(inv.uuid)
print(json.dumps({"seconds": time.perf_counter() - start, "uuids": uuids}))
"""


def run(url: str, invocations: int, breaker: bool) -> dict[str, Any]:
    """``invocations`` in one fresh process while the database is black-holed, then
    ``dpt spool replay`` in another once it answers."""
    import json
    import subprocess
    import sys

    with (
        relayed(url) as (relay, via),
        isolated_dpt(
            via,
            DPT_CONNECT_TIMEOUT="1",
            DPT_STATEMENT_TIMEOUT="1",
            DPT_RETRY_AFTER="600" if breaker else "0",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(invocations)],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ),
        )
        child = json.loads(done.stdout)
        attempts = relay.accepted
        relay.forward()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", "spool", "replay"],
            capture_output=True,
            check=True,
            env=dict(os.environ),
        )
        replay = time.perf_counter() - start
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT uuid, status FROM invocations WHERE job = 'small'")
            ).all()
        engine.dispose()
        once = sorted(tuple(r) for r in rows) == sorted((u, "success") for u in child["uuids"])
        assert once, "not every run recorded exactly once"
    return {
        "breaker": "on" if breaker else "off",
        "invocations": invocations,
        "connection_attempts": attempts,
        "outage_s": child["seconds"],
        "per_invocation_ms": child["seconds"] / invocations * 1000,
        "replay_s": replay,
        "recorded_once": once,
    }


def replays(kind: str, invocations: int, rounds: int) -> list[dict[str, Any]]:
    """``invocations`` small invocations spooled, then replayed batch by batch and in
    groups, alternately, ``rounds`` times each (best and median reported)."""
    import statistics
    import uuid

    from sqlalchemy import event

    import dpt_core
    from dpt_core.events import (
        InvocationFinished,
        InvocationStarted,
        ProductObservation,
        ProductsWritten,
    )
    from dpt_core.store.plugin import current_store, is_transient
    from dpt_core.testing import empty_tracking

    samples: dict[str, list[tuple[float, float, int]]] = {"batch by batch": [], "grouped": []}
    with database(kind) as url, isolated_dpt(url, DPT_WRITE="deferred"):
        store = current_store()
        uuids = [str(uuid.uuid4()) for _ in range(invocations)]
        for i, run_uuid in enumerate(uuids):
            store.spool.append(
                [InvocationStarted(uuid=run_uuid, orchestrator="python", job="small", task=f"t{i}")]
            )
            output = ProductObservation(f"s3://bucket/small/{i}", str(uuid.uuid4()))
            store.spool.append([ProductsWritten(run_uuid, (output,))])
            store.spool.append([InvocationFinished(run_uuid, "success")])
        (spooled,) = store.spool.files()
        content = spooled.read_bytes()
        commits: list[int] = []
        for _ in range(rounds):
            for way in samples:
                # a fresh store each time: a recorder's id caches would name rows emptied
                dpt_core.plugin_api.reset()
                store = current_store()
                engine = store.engine
                empty_tracking(engine)
                event.listen(engine, "commit", lambda conn: commits.append(1))
                if not spooled.exists():
                    spooled.write_bytes(content)
                commits.clear()
                wall, cpu = time.perf_counter(), time.process_time()
                if way == "grouped":
                    replayed = store.replay()
                else:
                    replayed = store.spool.replay(store.record, is_transient)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert replayed == 3 * invocations and store.spool.is_empty()
                with engine.connect() as conn:
                    rows = conn.execute(
                        text("SELECT uuid FROM invocations WHERE status = 'success'")
                    ).all()
                assert sorted(r.uuid for r in rows) == sorted(uuids), "not every run once"
                samples[way].append((wall, cpu, len(commits)))
        dpt_core.plugin_api.reset()
    rows = []
    for way, runs in samples.items():
        rows.append(
            {
                "backend": kind,
                "replay": way,
                "invocations": invocations,
                "batches": 3 * invocations,
                "transactions": runs[0][2],
                "best_s": min(w for w, _, _ in runs),
                "median_s": statistics.median(w for w, _, _ in runs),
                "median_cpu_s": statistics.median(c for _, c, _ in runs),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100)
    parser.add_argument("--off-invocations", type=int, default=5)
    parser.add_argument("--replay", type=int, default=2000, help="0: skip the replay part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only-replay", action="store_true")
    args = parser.parse_args()
    if not args.only_replay:
        rows = []
        for breaker, count in ((True, args.invocations), (False, args.off_invocations)):
            with database("postgresql") as url:
                rows.append(run(url, count, breaker))
        on, off = rows
        ratio = off["per_invocation_ms"] / on["per_invocation_ms"]
        emit("outage", machine=machine(), rows=rows, off_over_on_per_invocation=ratio)
        table(rows)
        print(
            f"per invocation, breaker off / on: {ratio:.0f}x "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
    if args.replay:
        rows = []
        for kind in ("postgresql", "sqlite"):
            load = os.getloadavg()[0]
            rows.extend({**row, "load": load} for row in replays(kind, args.replay, args.rounds))
        emit("outage_replay", machine=machine(), rows=rows)
        table(rows)


if __name__ == "__main__":
    main()
