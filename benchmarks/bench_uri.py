"""Local paths to URIs: dpt's ``normalize_uri`` against ``os.path.realpath`` of the same paths.

    python -m benchmarks.bench_uri [--files 20000] [--rounds 5]

A survey tree (``<tmp>/survey/dr3/<year>/<month>/<day>/<field>/<ccd>/calexp_<i>.fits``,
in a temporary directory on this disk) and a shallow one (``<tmp>/data/part_<i>.bin``, as
``bench_airflow`` writes) hold ``--files``
files each; a third set reaches the survey files through a symlinked directory. Per
set: the median over ``--rounds`` of the time to normalise every path with
``dpt_core.uri.normalize_uri`` (the whole step a tracked local path takes: resolution,
percent-encoding), and of ``os.path.realpath`` alone over the same paths in the same
process (the resolution dpt did before), per path, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import emit, table


def make_tree(root: Path, files: int) -> dict[str, list[bytes]]:
    survey, shallow = [], []
    for i in range(files):
        day = root.joinpath(
            "survey", "dr3", "2026", f"{i % 12 + 1:02d}", f"{i % 28 + 1:02d}", f"field{i % 50}"
        )
        ccd = day / f"ccd{i % 8:02d}"
        ccd.mkdir(parents=True, exist_ok=True)
        (ccd / f"calexp_{i}.fits").write_bytes(b"")
        survey.append(os.fsencode(ccd / f"calexp_{i}.fits"))
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"part_{i}.bin").write_bytes(b"")
        shallow.append(os.fsencode(root / "data" / f"part_{i}.bin"))
    (root / "release").symlink_to(root / "survey" / "dr3")
    old, new = os.fsencode(root / "survey" / "dr3"), os.fsencode(root / "release")
    linked = [p.replace(old, new, 1) for p in survey]

    def depth(paths: list[bytes]) -> int:
        return paths[0].count(b"/")

    return {
        f"survey ({depth(survey)} deep)": survey,
        f"shallow ({depth(shallow)} deep)": shallow,
        f"survey via a symlink ({depth(linked)} deep)": linked,
    }


def per_path_us(func: object, paths: list[bytes], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for path in paths:
            func(path)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(paths) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from dpt_core.uri import normalize_uri

    rows = []
    with tempfile.TemporaryDirectory(prefix="dpt-bench-uri-") as tmp:
        root = Path(os.path.realpath(tmp))
        for name, paths in make_tree(root, args.files).items():
            assert normalize_uri(paths[0]) == normalize_uri(os.path.realpath(paths[0]))
            dpt = per_path_us(normalize_uri, paths, args.rounds)
            baseline = per_path_us(os.path.realpath, paths, args.rounds)
            row = {
                "paths": name,
                "files": len(paths),
                "normalize_uri_us": round(dpt, 2),
                "realpath_us": round(baseline, 2),
                "ratio": round(dpt / baseline, 2),
            }
            emit("uri", **row)
            rows.append(row)
    table(rows)


if __name__ == "__main__":
    main()
