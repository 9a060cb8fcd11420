"""Ingest: one invocation writing N outputs with 2 inputs each, vs a per-row-commit baseline.

Also: many small invocations (one write each) with a warm environment.

    python -m benchmarks.bench_ingest [--outputs 20000] [--small 300] [--repeat 1]
        [--backends sqlite,postgresql]

Targets (issue 3/9): >= 50x the baseline and >= 20 000 versions/s on PostgreSQL;
small invocations <= 5 ms on PostgreSQL, <= 3 ms on SQLite.

On PostgreSQL it also reports ``server_floor_versions_per_s``: the same rows (products,
versions, inputs, edges, with the real schema's indexes and foreign keys) written by the
server itself from ``generate_series`` in one transaction, no client involved. No client
can ingest faster than that on the same server and disk, so it tells whether a miss is
dpt's or the machine's. ``copy_floor_versions_per_s`` is a client writing the same rows
with COPY (ids reserved from the sequences, no tracking logic), and ``copy_floor_ratio``
dpt's time over it (issue 19's target: within 4x). ``small_synchronous_commit_off_ms`` repeats the small
invocations with ``?options=-c synchronous_commit=off`` in the URL (docs/database.md).
"""

from __future__ import annotations

import argparse
import time
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks._common import database, emit, isolated_dpt, median_ms, table


def dpt_ingest(n: int, run: int = 0) -> float:
    import dpt_core

    parents = [f"s3://survey/{run}/raw/{i}.fits" for i in range(n + 1)]
    tracker = dpt_core.get_tracker()
    tracker.environment()  # warm: capture is once per process, not part of ingest
    start = time.perf_counter()
    with tracker.invocation("ingest") as inv:
        inv.read(*parents)
        inv.write(
            *[
                dpt_core.ProductRef(
                    f"s3://survey/{run}/cal/{i}.fits", parents=(parents[i], parents[i + 1])
                )
                for i in range(n)
            ]
        )
    return time.perf_counter() - start


def baseline_ingest(url: str, n: int) -> float:
    """The naive way: ORM get-or-create and a commit for every row."""
    from dpt_core.events import utcnow
    from dpt_core.store.engine import make_engine
    from dpt_core.store.models import DataProduct, DataProductVersion, Invocation, LineageEdge
    from dpt_core.store.recorder import uri_digest

    engine = make_engine(url)
    start = time.perf_counter()
    with Session(engine) as s:
        inv = Invocation(
            uuid=str(uuid.uuid4()),
            orchestrator="bench",
            job="baseline",
            status="running",
            started_at=utcnow(),
        )
        s.add(inv)
        s.commit()

        def version_of(uri: str) -> DataProductVersion:
            product = s.scalar(select(DataProduct).where(DataProduct.uri_digest == uri_digest(uri)))
            if product is None:
                product = DataProduct(uri=uri, uri_digest=uri_digest(uri), created_at=utcnow())
                s.add(product)
                s.commit()
            version = DataProductVersion(
                uuid=str(uuid.uuid4()),
                product_id=product.id,
                produced_by_id=inv.id,
                recorded_at=utcnow(),
            )
            s.add(version)
            s.commit()
            return version

        parents = [version_of(f"s3://base/raw/{i}.fits") for i in range(n + 1)]
        for i in range(n):
            child = version_of(f"s3://base/cal/{i}.fits")
            for p in (parents[i], parents[i + 1]):
                s.add(
                    LineageEdge(
                        parent_version_id=p.id, child_version_id=child.id, invocation_id=inv.id
                    )
                )
                s.commit()
    engine.dispose()
    return time.perf_counter() - start


FLOOR_SQL = [
    # The same rows a dpt ingest of N outputs x 2 inputs writes, made by the server itself
    # from generate_series: no client, no parameters, one transaction. :n is N.
    "INSERT INTO invocations (uuid, orchestrator, job, status, started_at) "
    "VALUES ('floor', 'bench', 'floor', 'running', now())",
    "INSERT INTO data_products (uri, uri_digest, created_at) "
    "SELECT u, encode(sha256(convert_to(u, 'UTF8')), 'hex'), now() FROM ("
    "  SELECT 0 AS side, g, 's3://floor/raw/' || g || '.fits' AS u FROM generate_series(0, :n) g"
    "  UNION ALL SELECT 1, g, 's3://floor/cal/' || g || '.fits' FROM generate_series(0, :n - 1) g"
    ") s ORDER BY side, g",
    "INSERT INTO data_product_versions (uuid, product_id, produced_by_id, explicit_parents, "
    "recorded_at) SELECT gen_random_uuid()::text, p.id, CASE WHEN p.uri LIKE 's3://floor/cal/%' "
    "THEN i.id END, p.uri LIKE 's3://floor/cal/%', now() FROM data_products p, invocations i "
    "WHERE p.uri LIKE 's3://floor/%' AND i.uuid = 'floor' ORDER BY p.id",
    "INSERT INTO invocation_inputs (invocation_id, version_id) SELECT i.id, v.id "
    "FROM data_product_versions v JOIN data_products p ON p.id = v.product_id "
    "JOIN invocations i ON i.uuid = 'floor' WHERE p.uri LIKE 's3://floor/raw/%'",
    # raw versions are base .. base+n, calibrated ones base+n+1 .. base+2n (inserted in order)
    "INSERT INTO lineage_edges (parent_version_id, child_version_id, invocation_id) "
    "SELECT b.base + g + k, b.base + :n + 1 + g, b.inv FROM ("
    "  SELECT min(v.id) AS base, (SELECT id FROM invocations WHERE uuid = 'floor') AS inv"
    "  FROM data_product_versions v JOIN data_products p ON p.id = v.product_id"
    "  WHERE p.uri LIKE 's3://floor/%') b, generate_series(0, :n - 1) g, generate_series(0, 1) k",
]


def server_floor(url: str, n: int) -> float:
    """Seconds PostgreSQL itself needs to insert the rows of an ingest of ``n`` outputs.

    Not a dpt figure: the lower bound any client could reach on this server, schema
    (indexes, foreign keys) and disk, measured in the same run.
    """
    from sqlalchemy import text

    from dpt_core.store.engine import make_engine

    engine = make_engine(url)
    start = time.perf_counter()
    with engine.begin() as conn:
        for sql in FLOOR_SQL:
            conn.execute(text(sql), {"n": n})
    seconds = time.perf_counter() - start
    with engine.connect() as conn:  # the rows are the intended ones: cal/i <- raw/i, raw/i+1
        wrong = conn.execute(
            text(
                "SELECT COUNT(*) FROM lineage_edges e JOIN invocations i ON i.id = e.invocation_id "
                "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
                "JOIN data_products pp ON pp.id = pv.product_id "
                "JOIN data_product_versions cv ON cv.id = e.child_version_id "
                "JOIN data_products cp ON cp.id = cv.product_id WHERE i.uuid = 'floor' AND "
                "replace(cp.uri, 's3://floor/cal/', '')::text NOT IN ("
                "replace(pp.uri, 's3://floor/raw/', ''), "
                # (CASE: the planner may test rows of other invocations before the uuid)
                "CASE WHEN pp.uri LIKE 's3://floor/raw/%' THEN "
                "(split_part(replace(pp.uri, 's3://floor/raw/', ''), '.', 1)::int - 1) || '.fits' "
                "END)"
            )
        ).scalar()
        edges = conn.execute(
            text(
                "SELECT COUNT(*) FROM lineage_edges e JOIN invocations i "
                "ON i.id = e.invocation_id WHERE i.uuid = 'floor'"
            )
        ).scalar()
    engine.dispose()
    assert edges == 2 * n and wrong == 0, f"server floor: {edges} edges, {wrong} misplaced"
    return seconds


def copy_floor(url: str, n: int, run: int = 0) -> float:
    """Seconds a client needs to COPY the rows of an ingest of ``n`` outputs.

    The same rows as dpt's ingest (an invocation, ``2n + 1`` products, their versions,
    ``n + 1`` inputs, ``2n`` edges) into the real schema (keys, indexes, foreign keys),
    with no tracking logic: ids reserved from the tables' sequences, then one COPY per
    table, in one transaction. The floor issue 19 compares dpt's ingest with.
    """
    from dpt_core.events import utcnow
    from dpt_core.store.engine import make_engine
    from dpt_core.store.recorder import uri_digest

    engine = make_engine(url)
    raw_conn = engine.raw_connection()
    try:
        start = time.perf_counter()
        with raw_conn.cursor() as cur:  # type: ignore[attr-defined]
            now = utcnow()

            def ids(table: str, k: int) -> list[int]:
                cur.execute(
                    f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                    "FROM generate_series(1, %s)",
                    (k,),
                )
                return [r[0] for r in cur.fetchall()]

            cur.execute(
                "INSERT INTO invocations (uuid, orchestrator, job, status, started_at) "
                "VALUES (%s, 'bench', 'copy', 'running', %s) RETURNING id",
                (str(uuid.uuid4()), now),
            )
            inv = cur.fetchone()[0]
            uris = [f"s3://copy/{run}/raw/{i}.fits" for i in range(n + 1)]
            uris += [f"s3://copy/{run}/cal/{i}.fits" for i in range(n)]
            product_ids = ids("data_products", len(uris))
            with cur.copy("COPY data_products (id, uri, uri_digest, created_at) FROM STDIN") as cp:
                for pid, uri in zip(product_ids, uris, strict=True):
                    cp.write_row((pid, uri, uri_digest(uri), now))
            version_ids = ids("data_product_versions", len(uris))
            with cur.copy(
                "COPY data_product_versions (id, uuid, product_id, produced_by_id, "
                "explicit_parents, recorded_at) FROM STDIN"
            ) as cp:
                for k, (vid, pid) in enumerate(zip(version_ids, product_ids, strict=True)):
                    cal = k > n
                    cp.write_row((vid, str(uuid.uuid4()), pid, inv if cal else None, cal, now))
            with cur.copy("COPY invocation_inputs (invocation_id, version_id) FROM STDIN") as cp:
                for vid in version_ids[: n + 1]:
                    cp.write_row((inv, vid))
            with cur.copy(
                "COPY lineage_edges (parent_version_id, child_version_id, invocation_id) FROM STDIN"
            ) as cp:
                for i in range(n):
                    child = version_ids[n + 1 + i]
                    cp.write_row((version_ids[i], child, inv))
                    cp.write_row((version_ids[i + 1], child, inv))
        raw_conn.commit()
        return time.perf_counter() - start
    finally:
        raw_conn.close()
        engine.dispose()


def _with_libpq_options(url: str, options: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).update_query_dict({"options": options}).render_as_string(False)


def small_invocations(count: int) -> list[float]:
    import dpt_core

    tracker = dpt_core.get_tracker()
    with tracker.invocation("warm-up") as inv:
        inv.write("s3://survey/warm")
    samples = []
    for i in range(count):
        start = time.perf_counter()
        with tracker.invocation("small") as inv:
            inv.write(f"s3://survey/small/{i}")
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=20_000)
    parser.add_argument(
        "--baseline-outputs",
        type=int,
        default=2_000,
        help="rows for the (slow) baseline; rate is compared",
    )
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="ingests per side, best taken")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        with database(backend) as url, isolated_dpt(url):
            # best of --repeat on both sides (each in its own part of the database)
            seconds = min(dpt_ingest(args.outputs, run) for run in range(args.repeat))
            base_n = min(args.baseline_outputs, args.outputs)
            base_seconds = baseline_ingest(url, base_n)
            rate, base_rate = args.outputs / seconds, base_n / base_seconds
            small = small_invocations(args.small)
            floor = server_floor(url, args.outputs) if backend == "postgresql" else None
            copied = (
                min(copy_floor(url, args.outputs, run) for run in range(args.repeat))
                if backend == "postgresql"
                else None
            )
            unsynced = None
            if backend == "postgresql":  # the documented opt-out of waiting for the disk
                with isolated_dpt(_with_libpq_options(url, "-c synchronous_commit=off")):
                    unsynced = small_invocations(args.small)
            row = {
                "backend": backend,
                "outputs": args.outputs,
                "seconds": round(seconds, 3),
                "versions_per_s": round(rate),
                "baseline_versions_per_s": round(base_rate),
                "ratio": round(rate / base_rate, 1),
                # the server alone writing the same rows (no client): the ceiling here
                "server_floor_versions_per_s": round(args.outputs / floor) if floor else None,
                # a client COPYing the same rows, no tracking logic (issue 19: within 4x)
                "copy_floor_versions_per_s": round(args.outputs / copied) if copied else None,
                "copy_floor_ratio": round(seconds / copied, 1) if copied else None,
                "small_invocation_median_ms": round(median_ms(small), 2),
                "small_synchronous_commit_off_ms": (
                    round(median_ms(unsynced), 2) if unsynced else None
                ),
            }
            emit("ingest", **row)
            rows.append(row)
    table(rows)


if __name__ == "__main__":
    main()
