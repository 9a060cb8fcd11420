"""Benchmark: one dpt sensor tick over 1 000 new Dagster materialisations.

Workload: a job of two multi-assets (``raw_*`` and ``cal_*``, ``cal_j`` depending on
``raw_j``; half the raws write a file named by ``dpt/path``, hashed by dpt) on a
local SQLite Dagster instance; each ``cal`` materialisation carries an exact
upstream pointer. Two scenarios of 1 000 materialisations each:

- ``one-run``: one run of 1 000 assets (a sensor that keeps up);
- ``backlog``: five runs of the same 200 assets waiting for one tick;
- ``partitioned``: one single-run backfill of 500 days of a daily asset and of its
  ``TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)`` child, plus an
  unpartitioned asset reading every day (1 001 materialisations): the inputs come from
  the asset graph's partition mappings (each day's newest materialisation before the
  child's), not from the input pointers.

Measured in one process, on the same events:

- ``off``: the tick reading everything it needs (asset index, materialisations,
  run-status changes, run records, upstream pointers) without recording
  (a translator whose recording methods do nothing);
- ``on``: the real tick recording into a fresh SQLite dpt database;
- ``replay``: the same tick again from a reset cursor (idempotent: adds nothing).

Target: ``on`` <= 2 s for 1 000 materialisations. Times are medians (``best_seconds``: the
least of the repeats); ``cpu_seconds`` is the process's CPU time (every thread), which a
busy machine inflates less than wall time; the 1-minute load average is printed with
each figure. Run::

    .tox/dagster/bin/python -m benchmarks.bench_dagster [--scenario one-run|backlog|all] [--repeat 2]
        [--backend sqlite|postgresql]

Prints one JSON line per measurement and per scenario, then a small table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SECONDS = 2.0


#: Fresh PostgreSQL databases made by ``--backend postgresql``, dropped at exit.
_DATABASES = contextlib.ExitStack()
_BACKEND = "sqlite"


def _isolate_dpt(root: Path, name: str) -> None:
    import dpt_core

    if _BACKEND == "sqlite":
        os.environ["DPT_DATABASE_URL"] = f"sqlite:///{root / name}.sqlite3"
    else:
        from benchmarks._common import database

        os.environ["DPT_DATABASE_URL"] = _DATABASES.enter_context(database(_BACKEND))
    os.environ["DPT_SPOOL_DIR"] = str(root / f"{name}-spool")
    os.environ["DPT_CACHE_DIR"] = str(root / f"{name}-cache")
    # The tick's figure includes the database writes (the background writer, dpt's
    # default, would finish them after the timed tick returned).
    os.environ["DPT_WRITE"] = "sync"
    os.environ.pop("DPT_DISABLED", None)
    os.environ.pop("DPT_STRICT", None)
    dpt_core.plugin_api.reset()
    # The database exists before the tick (created by 'dpt db upgrade' or an earlier
    # tick): making its schema is not part of the measured tick.
    from dpt_core.store.plugin import current_store

    current_store().engine  # noqa: B018 - creates and migrates the SQLite file


def _definitions(width: int, data_dir: Path) -> Any:
    import dagster as dg

    @dg.multi_asset(specs=[dg.AssetSpec(f"raw_{j:03d}") for j in range(width)], name="raws")
    def raws() -> Any:
        for j in range(width):
            metadata: dict[str, Any] = {"rows": j}
            if j % 2 == 0:
                path = data_dir / f"raw_{j:03d}.txt"
                path.write_text(f"raw {j} {time.time_ns()}\n")
                metadata["dpt/path"] = str(path)
            yield dg.MaterializeResult(asset_key=f"raw_{j:03d}", metadata=metadata)

    @dg.multi_asset(
        specs=[dg.AssetSpec(f"cal_{j:03d}", deps=[f"raw_{j:03d}"]) for j in range(width)],
        name="cals",
    )
    def cals() -> Any:
        for j in range(width):
            yield dg.MaterializeResult(asset_key=f"cal_{j:03d}")

    job = dg.define_asset_job("survey", selection=dg.AssetSelection.all())
    return dg.Definitions(assets=[raws, cals], jobs=[job])


def _partitioned_definitions(days: int, data_dir: Path) -> Any:
    import datetime as dt

    import dagster as dg

    start = dt.date(2020, 1, 1)
    end = start + dt.timedelta(days=days)
    daily = dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end.isoformat())
    single = dg.BackfillPolicy.single_run()

    @dg.asset(partitions_def=daily, backfill_policy=single)
    def events(context) -> None:  # type: ignore[no-untyped-def]
        return None

    @dg.asset(
        partitions_def=daily,
        backfill_policy=single,
        deps=[
            dg.AssetDep(
                events,
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            )
        ],
    )
    def yesterday(context) -> None:  # type: ignore[no-untyped-def]
        return None

    @dg.asset(deps=[events])
    def every_day() -> None: ...

    job = dg.define_asset_job("survey", selection=[events, yesterday])
    whole = dg.define_asset_job("fan_in", selection=[every_day])
    return dg.Definitions(assets=[events, yesterday, every_day], jobs=[job, whole]), (
        start.isoformat(),
        (end - dt.timedelta(days=1)).isoformat(),
    )


def _measure(
    name: str,
    root: Path,
    runs: int,
    width: int,
    repeat: int,
    kind: str = "multi",
) -> dict[str, Any]:
    """Build one scenario's event log, then time the tick off / on / replay on it."""
    import dagster as dg

    import dpt_dagster
    from dpt_dagster.sensor import run_tick
    from dpt_dagster.translator import DagsterTranslator

    class ReadOnlyTranslator(DagsterTranslator):
        """Records nothing: the 'adapter off' baseline (same reads, same translation inputs)."""

        def start_run(self, tracker: Any, run_id: str, run_record: Any) -> str:
            return dpt_dagster.run_invocation_uuid(run_id)

        def finish_run(self, tracker: Any, record: Any, run_record: Any) -> None:
            return None

        def record_materialization(self, *args: Any, **kwargs: Any) -> None:
            return None

        def record_unmaterialized(self, *args: Any, **kwargs: Any) -> None:
            return None

    scenario_dir = root / name
    (scenario_dir / "data").mkdir(parents=True)
    (scenario_dir / "dagster_home").mkdir()
    (scenario_dir / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    _isolate_dpt(scenario_dir, "warmup")
    instance = dg.DagsterInstance.local_temp(str(scenario_dir / "dagster_home"))
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    started = time.perf_counter()
    if kind == "partitioned":
        defs, (first, last) = _partitioned_definitions(width, scenario_dir / "data")
        tags = {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
        defs.resolve_job_def("survey").execute_in_process(
            instance=instance, run_config=quiet, tags=tags
        )
        defs.resolve_job_def("fan_in").execute_in_process(instance=instance, run_config=quiet)
    else:
        defs = _definitions(width, scenario_dir / "data")
        job = defs.resolve_job_def("survey")
        for _ in range(runs):
            job.execute_in_process(instance=instance, run_config=quiet)
    setup_seconds = time.perf_counter() - started
    from dpt_dagster import compat

    expected = len(compat.materialization_summaries_after(instance, 0, 100_000))
    repository = defs.get_repository_def()

    # Warm both paths (imports, the dpt schema, Dagster storage connections).
    run_tick(instance, None, batch_size=10, repository_def=repository)
    run_tick(
        instance, None, batch_size=10, repository_def=repository, translator=ReadOnlyTranslator()
    )

    results: dict[str, list[float]] = {"off": [], "on": [], "replay": []}
    #: CPU seconds of the whole process (the PostgreSQL writes run on a watchdog thread)
    cpu: dict[str, list[float]] = {"off": [], "on": [], "replay": []}
    load_before = os.getloadavg()[0]
    recorded: dict[str, int] = {}
    errors = 0
    for index in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        off = run_tick(
            instance,
            None,
            batch_size=expected,
            repository_def=repository,
            translator=ReadOnlyTranslator(),
        )
        results["off"].append(time.perf_counter() - started)
        cpu["off"].append(time.process_time() - cpu_started)

        _isolate_dpt(scenario_dir, f"dpt-{index}")
        started, cpu_started = time.perf_counter(), time.process_time()
        on = run_tick(instance, None, batch_size=expected, repository_def=repository)
        results["on"].append(time.perf_counter() - started)
        cpu["on"].append(time.process_time() - cpu_started)

        started, cpu_started = time.perf_counter(), time.process_time()
        replay = run_tick(instance, None, batch_size=expected, repository_def=repository)
        results["replay"].append(time.perf_counter() - started)
        cpu["replay"].append(time.process_time() - cpu_started)

        recorded = {"off": off.materializations, "on": on.materializations}
        recorded["replay"] = replay.materializations
        errors += on.errors + replay.errors
        for mode in ("off", "on", "replay"):
            print(
                json.dumps(
                    {
                        "bench": "dagster_sensor_tick",
                        "scenario": name,
                        "mode": mode,
                        "repeat": index,
                        "materializations": recorded[mode],
                        "seconds": round(results[mode][-1], 4),
                        "cpu_seconds": round(cpu[mode][-1], 4),
                        "load_1min": round(os.getloadavg()[0], 2),
                    }
                )
            )
    instance.dispose()

    off_s = statistics.median(results["off"])
    on_s = statistics.median(results["on"])
    replay_s = statistics.median(results["replay"])
    summary = {
        "bench": "dagster_sensor_tick",
        "scenario": name,
        "summary": True,
        "dagster": dg.__version__,
        "materializations": expected,
        "runs": runs,
        "assets": 2 * width if kind == "multi" else 3,
        "setup_seconds": round(setup_seconds, 2),
        "off_seconds": round(off_s, 4),
        "on_seconds": round(on_s, 4),
        "replay_seconds": round(replay_s, 4),
        "ratio_on_off": round(on_s / off_s, 2) if off_s else None,
        "best_seconds": {m: round(min(v), 4) for m, v in results.items()},
        "best_cpu_seconds": {m: round(min(v), 4) for m, v in cpu.items()},
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "added_ms_per_materialization": round((on_s - off_s) * 1000 / max(expected, 1), 3),
        "target_seconds_per_1000": TARGET_SECONDS,
        "target_met": on_s <= TARGET_SECONDS * expected / 1000,
        "tracking_errors": errors,
        "complete": recorded.get("on") == expected,
    }
    print(json.dumps(summary))
    return summary


SCENARIOS = {
    # A sensor that keeps up: one run made every materialisation of the tick.
    "one-run": {"runs": 1, "width": 500},
    # A backlog: five runs of the same 200 assets wait for one tick.
    "backlog": {"runs": 5, "width": 100},
    # Partition mappings: 500 days, their previous-day child, one fan-in over every day.
    "partitioned": {"runs": 2, "width": 500, "kind": "partitioned"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", choices=[*SCENARIOS, "all"], default="all", help="workload (default all)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="measurements per mode (2)")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the dpt database the tick records into (default sqlite; postgresql uses "
        "DPT_TEST_POSTGRES_URL or 127.0.0.1:5432, a fresh database per measurement)",
    )
    args = parser.parse_args(argv)
    global _BACKEND
    _BACKEND = args.backend

    root = Path(tempfile.mkdtemp(prefix="dpt-bench-dagster-"))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    with _DATABASES:
        summaries = [_measure(n, root, repeat=args.repeat, **SCENARIOS[n]) for n in names]

    print()
    header = f"{'scenario':<11} {'runs':>4} {'mats':>5} {'off s':>7} {'on s':>7} {'replay s':>8}"
    print(
        header
        + f" {'on/off':>6} {'+ms/mat':>8} {'target':>6} {'best on s':>9} {'cpu on s':>8} load"
    )
    for s in summaries:
        print(
            f"{s['scenario']:<11} {s['runs']:>4} {s['materializations']:>5} "
            f"{s['off_seconds']:>7.3f} {s['on_seconds']:>7.3f} {s['replay_seconds']:>8.3f} "
            f"{s['ratio_on_off']:>6} {s['added_ms_per_materialization']:>8.3f} "
            f"{'met' if s['target_met'] else 'missed':>6} {s['best_seconds']['on']:>9.3f} "
            f"{s['best_cpu_seconds']['on']:>8.3f} {s['load_1min'][0]}-{s['load_1min'][1]}"
        )
    print(
        f"target: one tick over 1000 new materialisations <= {TARGET_SECONDS:.1f} s "
        f"(dpt database: {args.backend})"
    )
    return 0 if all(s["complete"] and not s["tracking_errors"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
