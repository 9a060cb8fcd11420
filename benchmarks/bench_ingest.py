"""Ingest: one invocation writing N outputs with 2 inputs each, vs a per-row-commit baseline.

Also: many small invocations (one write each) with a warm environment.

    python -m benchmarks.bench_ingest [--outputs 20000] [--small 300] [--backends sqlite,postgresql]

Targets (issue 3/9): >= 50x the baseline and >= 20 000 versions/s on PostgreSQL;
small invocations <= 5 ms on PostgreSQL, <= 3 ms on SQLite.
"""

from __future__ import annotations

import argparse
import time
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks._common import database, emit, isolated_dpt, median_ms, table


def dpt_ingest(n: int) -> float:
    import dpt_core

    parents = [f"s3://survey/raw/{i}.fits" for i in range(n + 1)]
    tracker = dpt_core.get_tracker()
    tracker.environment()  # warm: capture is once per process, not part of ingest
    start = time.perf_counter()
    with tracker.invocation("ingest") as inv:
        inv.read(*parents)
        inv.write(
            *[
                dpt_core.ProductRef(
                    f"s3://survey/cal/{i}.fits", parents=(parents[i], parents[i + 1])
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
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        with database(backend) as url, isolated_dpt(url):
            seconds = dpt_ingest(args.outputs)
            base_n = min(args.baseline_outputs, args.outputs)
            base_seconds = baseline_ingest(url, base_n)
            rate, base_rate = args.outputs / seconds, base_n / base_seconds
            small = small_invocations(args.small)
            row = {
                "backend": backend,
                "outputs": args.outputs,
                "seconds": round(seconds, 3),
                "versions_per_s": round(rate),
                "baseline_versions_per_s": round(base_rate),
                "ratio": round(rate / base_rate, 1),
                "small_invocation_median_ms": round(median_ms(small), 2),
            }
            emit("ingest", **row)
            rows.append(row)
    table(rows)


if __name__ == "__main__":
    main()
