"""dpt quickstart: a three-step pipeline recorded on the SQLite default.

Run:   python examples/quickstart.py [WORKDIR]
Then:  dpt runs
       dpt lineage WORKDIR/lightcurve.csv --upstream

Nothing to set up: dpt writes to a SQLite file in your data directory
(``DPT_DATABASE_URL`` points it elsewhere).
"""

from __future__ import annotations

import csv
import random
import sys
import tempfile
from pathlib import Path

import dpt_core


def observe(raw: Path, seed: int) -> None:
    rng = random.Random(seed)
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "flux"])
        for t in range(100):
            writer.writerow([t, 1000 + rng.gauss(0, 5)])


def calibrate(raw: Path, flat: Path, out: Path, gain: float) -> None:
    flat_value = float(flat.read_text())
    with raw.open() as src, out.open("w", newline="") as dst:
        reader, writer = csv.DictReader(src), csv.writer(dst)
        writer.writerow(["t", "flux"])
        for row in reader:
            writer.writerow([row["t"], float(row["flux"]) * gain / flat_value])


def lightcurve(cal: Path, out: Path) -> None:
    with cal.open() as src:
        fluxes = [float(row["flux"]) for row in csv.DictReader(src)]
    mean = sum(fluxes) / len(fluxes)
    out.write_text(
        "t,relative_flux\n" + "".join(f"{t},{f / mean:.6f}\n" for t, f in enumerate(fluxes))
    )


def main(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    raw, flat = workdir / "raw.csv", workdir / "flat.txt"
    cal, lc = workdir / "calibrated.csv", workdir / "lightcurve.csv"

    with dpt_core.invocation("observe", parameters={"seed": 42}) as inv:
        observe(raw, seed=42)
        flat.write_text("1.02\n")
        inv.write(raw, flat)

    with dpt_core.invocation("calibrate", parameters={"gain": 1.5}) as inv:
        inv.read(raw, flat)
        calibrate(raw, flat, cal, gain=1.5)
        inv.write(cal)

    with dpt_core.invocation("lightcurve") as inv:
        inv.read(cal)
        lightcurve(cal, lc)
        inv.write(lc)

    graph = dpt_core.lineage(lc, direction="upstream")
    print(f"upstream lineage of {lc}:")
    for node in sorted(graph.nodes, key=lambda n: (n.depth, n.uri)):
        print(f"  {'  ' * node.depth}{node.uri}")
    return lc


if __name__ == "__main__":
    target = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="dpt-quickstart-"))
    )
    main(target.resolve())
