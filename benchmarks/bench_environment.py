"""Environment capture: cold (fresh process) and warm (cached), with 200+ distributions.

    python -m benchmarks.bench_environment [--fake 200] [--runs 5]

Targets: cold <= 50 ms, warm <= 0.1 ms. The baseline is importlib.metadata listing
the same distributions in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import emit, table

CHILD = r"""
import json, sys, time, importlib.metadata
sys.path.insert(0, sys.argv[1])
from dpt_core.environment import capture_environment
from dpt_core.config import Settings
settings = Settings(redaction_key=b"bench")
t0 = time.perf_counter(); snap = capture_environment(settings); cold = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(1000): capture_environment(settings)
warm = (time.perf_counter() - t0) / 1000
t0 = time.perf_counter(); n = len({d.metadata["Name"] for d in importlib.metadata.distributions()}); meta = time.perf_counter() - t0
print(json.dumps({"cold_ms": cold * 1000, "warm_ms": warm * 1000, "metadata_ms": meta * 1000, "distributions": len(snap.distributions)}))
"""


def fake_site(directory: Path, count: int) -> None:
    for i in range(count):
        info = directory / f"fakepkg{i:03d}-1.{i}.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakepkg{i:03d}\nVersion: 1.{i}.0\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fake", type=int, default=200, help="extra fake distributions on sys.path"
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fake_site(Path(tmp), args.fake)
        samples = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, tmp],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ, DPT_CONTRACTS="0"),
            )
            samples.append(json.loads(out.stdout))
    row = {
        "distributions": samples[0]["distributions"],
        "cold_ms_median": round(statistics.median(s["cold_ms"] for s in samples), 2),
        "warm_ms_median": round(statistics.median(s["warm_ms"] for s in samples), 4),
        "importlib_metadata_ms": round(statistics.median(s["metadata_ms"] for s in samples), 2),
    }
    row["x_faster_than_metadata"] = round(row["importlib_metadata_ms"] / row["cold_ms_median"], 1)
    emit("environment", **row)
    table([row])


if __name__ == "__main__":
    main()
