"""Hashing: a large file vs streaming md5 (same read loop), memory growth, and the stat cache.

    python -m benchmarks.bench_hashing [--mib 512] [--files 10000]

Targets: >= 5x streaming md5 in the same run, memory growth < 64 MiB on a 512 MiB
file; 10 000 small unchanged files: the second (cached) pass >= 20x the first.
``max_speedup`` is the first pass over a bare ``os.stat`` of every file (best of 3), the
bound on that ratio: a cached pass still has to stat each file to know it is unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from pathlib import Path

from benchmarks._common import emit, table


def md5_stream(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()

    from dpt_core.hashing import StatCache, hash_file, observe_many

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        with open(big, "wb") as handle:
            block = os.urandom(1 << 20)
            for _ in range(args.mib):
                handle.write(block)
        md5_stream(big)  # warm the page cache so both sides read from memory
        rss_before = peak_rss_mib()
        results = {}
        for name, func in [("md5", lambda: md5_stream(big))] + [
            (algo, lambda a=algo: hash_file(big, a)) for algo in ("xxh3_128", "blake3", "sha256")
        ]:
            best = min(_timed(func) for _ in range(3))
            results[name] = best
        growth = peak_rss_mib() - rss_before
        for name, seconds in results.items():
            row = {
                "case": f"{args.mib} MiB {name}",
                "seconds": round(seconds, 3),
                "MiB_per_s": round(args.mib / seconds),
                "x_md5": round(results["md5"] / seconds, 1),
            }
            emit("hashing", **row, memory_growth_mib=round(growth, 1))
            rows.append(row)
        big.unlink()

        small_dir = Path(tmp) / "small"
        small_dir.mkdir()
        paths = []
        for i in range(args.files):
            p = small_dir / f"f{i:05d}.dat"
            p.write_bytes(os.urandom(2048))
            paths.append(p)
        old = time.time() - 3600  # files older than the cache's same-tick guard
        for p in paths:
            os.utime(p, (old, old))
        cache = StatCache(Path(tmp) / "statcache.sqlite3")
        first = _timed(lambda: observe_many(paths, "xxh3_128", cache=cache))
        second = _timed(lambda: observe_many(paths, "xxh3_128", cache=cache))
        stat_only = min(_timed(lambda: [os.stat(p) for p in paths]) for _ in range(3))
        row = {
            "case": f"{args.files} small files",
            "first_s": round(first, 3),
            "cached_s": round(second, 3),
            "speedup": round(first / second, 1),
            "stat_only_s": round(stat_only, 3),
            "max_speedup": round(first / stat_only, 1),
        }
        emit("stat_cache", **row)
    table(rows)
    table([row])
    print(f"memory growth while hashing {args.mib} MiB: {growth:.1f} MiB")


def _timed(func) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
