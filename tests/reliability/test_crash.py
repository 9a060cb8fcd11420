"""A process killed with SIGKILL inside an invocation leaves the database consistent.

The worker (``worker.py batches``) opens an invocation, reads one file, then
writes batch after batch of 2 000 products (each batch one ``write`` call, so
one transaction) until the test kills it -- while a batch is being written.
Afterwards the run shows as running, every batch is there completely or not at
all, and the next writer is not blocked by anything the dead one held.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest
from conftest import HANG, direct_rows, direct_scalar, dpt, facts, worker
from sqlalchemy.engine import make_url

from dpt_core.spool import Spool

BATCH = 2000


def wait_for_line(proc, predicate, seen):
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        fact = json.loads(line)
        seen.append(fact)
        if predicate(fact):
            return fact
    pytest.fail(
        f"worker never got there; saw {seen[-3:]}: {proc.stderr.read() if proc.poll() is not None else ''}"
    )


def writer_in_transaction(env) -> bool:
    """True while the worker holds an open write transaction on the database."""
    if env.backend == "sqlite":
        probe = sqlite3.connect(make_url(env.url).database, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once while another writer holds the lock
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        else:
            probe.rollback()
            return False
        finally:
            probe.close()
    url = env.url
    return bool(
        direct_scalar(
            url,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'dpt' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
        )
    )


def test_sigkill_during_a_batch_leaves_whole_batches_and_a_running_run(any_env, tmp_path):
    env = any_env
    source = tmp_path / "source.dat"
    source.write_text("source")
    proc = worker(
        "batches",
        {"batch_size": BATCH, "input": str(source)},
        env=env.environ() | {"DPT_STRICT": "1"},
    )
    seen: list[dict] = []
    uuid = wait_for_line(proc, lambda f: "uuid" in f, seen)["uuid"]
    wait_for_line(proc, lambda f: f.get("batch_done") == 1, seen)
    wait_for_line(proc, lambda f: "batch_start" in f, seen)
    deadline = time.monotonic() + HANG
    while not writer_in_transaction(env) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=HANG)
    seen.extend(facts(out))
    assert proc.returncode == -signal.SIGKILL
    done = {f["batch_done"] for f in seen if "batch_done" in f}
    killed_in = max(f["batch_start"] for f in seen if "batch_start" in f)
    assert killed_in not in done, "the kill landed after the batch returned: not a mid-batch kill"
    if env.backend == "postgresql":  # the server notices the dead client and rolls back
        deadline = time.monotonic() + HANG
        while writer_in_transaction(env) and time.monotonic() < deadline:
            time.sleep(0.01)

    # the run shows as running: its start was committed, its end never came
    assert direct_rows(env.url, "SELECT uuid, status, ended_at FROM invocations") == [
        (uuid, "running", None)
    ]
    # never half a batch: each batch's products and versions are all there or not at all
    per_batch = direct_rows(
        env.url,
        "SELECT substr(p.uri, 1, 22) AS batch, COUNT(*) FROM data_product_versions v "
        "JOIN data_products p ON p.id = v.product_id WHERE p.uri LIKE 's3://bucket/batch%' "
        "GROUP BY substr(p.uri, 1, 22)",
    )
    assert per_batch and all(count == BATCH for _, count in per_batch), per_batch
    complete = len(per_batch)
    assert len(done) <= complete <= len(done) + 1  # + the killed batch, if it had just committed
    assert not direct_rows(
        env.url,
        "SELECT p.id FROM data_products p LEFT JOIN data_product_versions v ON v.product_id = p.id "
        "WHERE v.id IS NULL",
    ), "products without any version: a batch was half written"
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocation_inputs") == 1
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM lineage_edges") == complete * BATCH
    if env.backend == "sqlite":
        assert direct_scalar(env.url, "PRAGMA integrity_check") == "ok"
    assert Spool(tmp_path / "spool").status().events == 0

    # the database is not left locked: the CLI reads it and the next writer writes at once
    running = json.loads(dpt("runs", "--status", "running", "--json", check=0).stdout)
    assert [r["uuid"] for r in running] == [uuid]
    dpt("track", str(source), env={"DPT_STRICT": "1"}, check=0)
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 1
    print(
        f"{env.backend}: killed in batch {killed_in}, {complete} complete batches of {BATCH}, "
        f"no partial batch"
    )
