"""Tags: what they cost when recording, and what a tag filter costs when listing runs.

    python -m benchmarks.bench_tags [--runs 5000] [--backends sqlite,postgresql]

Recording: the same runs (start, one output, end; batches of 250 through the store's
set-wise path) without tags (the baseline, measured in the same process) and with three
run tags and one version tag each. Listing: ``list_runs(limit=50)`` (the baseline) vs
``list_runs(tags={"survey": ..., "sector": ...})`` (two indexed ``(key, value)``
lookups) over the same database; medians of 20.
"""

from __future__ import annotations

import argparse
import time
import uuid

from benchmarks._common import database, emit, median_ms, table


def _events(n: int, tagged: bool) -> list[list[object]]:
    from dpt_core.events import (
        InvocationFinished,
        InvocationStarted,
        ProductObservation,
        ProductsWritten,
    )

    batches: list[list[object]] = []
    batch: list[object] = []
    for i in range(n):
        run = str(uuid.uuid4())
        tags = {"survey": "tess" if i % 10 else "kepler", "sector": str(i % 50), "n": str(i)}
        batch.append(
            InvocationStarted(
                uuid=run, orchestrator="python", job="bench", tags=tags if tagged else {}
            )
        )
        batch.append(
            ProductsWritten(
                run,
                (
                    ProductObservation(
                        uri=f"s3://bench/{run}.fits",
                        version_uuid=str(uuid.uuid4()),
                        content_hash=f"sha256:{i:x}",
                        tags={"quality": "good"} if tagged else {},
                    ),
                ),
            )
        )
        batch.append(InvocationFinished(run, "success"))
        if len(batch) >= 750:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def measure(kind: str, n: int) -> dict[str, object]:
    from dpt_core.store.bulk import BulkRecorder
    from dpt_core.store.engine import make_engine
    from dpt_core.store.queries import list_runs

    figures: dict[str, object] = {"backend": kind, "runs": n}
    with database(kind) as url:
        engine = make_engine(url)
        recorder = BulkRecorder(engine)
        rates = {}
        for tagged in (False, True):
            batches = _events(n, tagged)
            start = time.perf_counter()
            for batch in batches:
                recorder.record(batch)  # type: ignore[arg-type]
            rates[tagged] = n / (time.perf_counter() - start)
        figures["record_runs_per_s"] = round(rates[False])
        figures["record_tagged_runs_per_s"] = round(rates[True])
        figures["record_ratio"] = round(rates[True] / rates[False], 2)

        def listing(**kwargs: object) -> float:
            samples = []
            for _ in range(20):
                start = time.perf_counter()
                found = list_runs(engine, limit=50, **kwargs)  # type: ignore[arg-type]
                samples.append(time.perf_counter() - start)
            assert found
            return median_ms(samples)

        plain = listing()
        filtered = listing(tags={"survey": "tess", "sector": "7"})
        figures["list_ms"] = round(plain, 2)
        figures["list_tag_filter_ms"] = round(filtered, 2)
        figures["list_ratio"] = round(filtered / plain, 2)
        engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    rows = []
    for kind in args.backends.split(","):
        figures = measure(kind, args.runs)
        emit("tags", **figures)
        rows.append(figures)
    table(rows)


if __name__ == "__main__":
    main()
