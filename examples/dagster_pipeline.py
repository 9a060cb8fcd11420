"""A small Dagster pipeline recorded by dpt: raw frames -> calibrated chips -> a catalog.

Every asset writes a real file and names it in its materialisation metadata
(``dpt/path``); the dpt sensor, attached in one line to the ``Definitions``,
records each materialisation with the file's content hash and the exact
upstream versions it consumed.

From the root of a clone of the dpt repository (dpt is not on PyPI), run it as a
script (materialises everything on a local Dagster instance, then evaluates one
sensor tick so the lineage is there at once)::

    pip install '.[dagster]'
    python examples/dagster_pipeline.py /tmp/dpt-dagster-example

Or serve it, and let the Dagster daemon run the sensor every 30 s::

    DPT_DAGSTER_EXAMPLE_DIR=/tmp/dpt-dagster-example dagster dev -f examples/dagster_pipeline.py

See what dpt recorded (default database: a SQLite file in your data directory;
set DPT_DATABASE_URL to use another)::

    dpt runs --orchestrator dagster
    dpt lineage /tmp/dpt-dagster-example/catalog.json --upstream
    dpt lineage /tmp/dpt-dagster-example/frames.csv --downstream
"""

import csv
import json
import os
import sys
from pathlib import Path

import dagster as dg

import dpt_dagster

CHIPS = dg.StaticPartitionsDefinition(["chip-1", "chip-2", "chip-3"])


def _data_dir() -> Path:
    path = Path(os.environ.get("DPT_DAGSTER_EXAMPLE_DIR", "/tmp/dpt-dagster-example"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@dg.asset(code_version="1")
def raw_frames() -> dg.MaterializeResult:
    """One night of frames: an exposure table."""
    path = _data_dir() / "frames.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "chip", "counts"])
        for frame in range(6):
            writer.writerow([frame, f"chip-{frame % 3 + 1}", 1000 + 37 * frame])
    return dg.MaterializeResult(metadata={"dpt/path": str(path), "frames": 6})


@dg.asset(partitions_def=CHIPS, deps=[raw_frames], code_version="1")
def calibrated_chip(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The frames of one chip, gain-corrected."""
    chip = context.partition_key
    rows = [r for r in csv.DictReader((_data_dir() / "frames.csv").open()) if r["chip"] == chip]
    path = _data_dir() / "chips" / f"{chip}.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "flux"])
        for row in rows:
            writer.writerow([row["frame"], round(int(row["counts"]) * 1.5, 1)])
    return dg.MaterializeResult(metadata={"dpt/path": str(path), "frames": len(rows)})


@dg.asset(deps=[calibrated_chip], code_version="1")
def catalog() -> dg.MaterializeResult:
    """Every calibrated chip, summarised."""
    summary = {}
    for chip in CHIPS.get_partition_keys():
        chip_file = _data_dir() / "chips" / f"{chip}.csv"
        if chip_file.exists():
            summary[chip] = sum(float(r["flux"]) for r in csv.DictReader(chip_file.open()))
    path = _data_dir() / "catalog.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path), "chips": len(summary)})


defs = dg.Definitions(
    assets=[raw_frames, calibrated_chip, catalog],
    jobs=[
        dg.define_asset_job("ingest", selection=[raw_frames]),
        dg.define_asset_job("calibrate", selection=[calibrated_chip]),
        dg.define_asset_job("summarise", selection=[catalog]),
    ],
    sensors=[dpt_dagster.dpt_asset_sensor()],  # the one line that turns dpt on
)


def run(data_dir: str | os.PathLike[str], instance: dg.DagsterInstance | None = None) -> str:
    """Materialise everything once, then evaluate one dpt sensor tick; returns the tick message."""
    os.environ["DPT_DAGSTER_EXAMPLE_DIR"] = str(Path(data_dir).resolve())
    home = _data_dir() / "dagster_home"
    if instance is None:
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        instance = dg.DagsterInstance.local_temp(str(home))
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    runs = [("ingest", None)]
    runs += [("calibrate", chip) for chip in CHIPS.get_partition_keys()]
    runs += [("summarise", None)]
    for job_name, partition in runs:
        defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition, run_config=quiet
        )

    context = dg.build_sensor_context(instance=instance, definitions=defs)
    tick = defs.resolve_sensor_def("dpt_tracker").evaluate_tick(context)
    return str(tick.skip_message)


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1] if len(argv) > 1 else "/tmp/dpt-dagster-example")
    print(run(data_dir))
    print(f"see the lineage with: dpt lineage {data_dir.resolve() / 'catalog.json'} --upstream")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
