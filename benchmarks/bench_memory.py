"""Memory of big writes and of long-lived processes.

    python -m benchmarks.bench_memory [--outputs 200000] [--million] [--runs 100000]
                                      [--backends sqlite,postgresql] [--trace]
                                      [--write-modes background,sync]

(a) **One invocation writing N outputs** (small files that exist): a fresh interpreter
creates N files and records them as one ``write()`` of a generator, inside one
invocation; next to it, the baseline, a fresh interpreter that creates the same files
without dpt. Peak RSS (``ru_maxrss``) and wall time of each; the ratio dpt / baseline.
``--million`` adds N = 1 000 000. Each ``--write-modes`` (``DPT_WRITE``) is a case.

(b) **A long-lived process** recording ``--runs`` small invocations through the public
API (start, read one file, write one file, finish), RSS (``/proc/self/statm``) sampled
every ``--sample`` (10 000) runs: the growth per sample after the first (warm-up), and the sizes of the
structures that could grow per invocation (the tracker's open runs, the recorder's id
caches, the warn-once set).

``--trace`` runs (a) once more under :mod:`tracemalloc` and prints where the memory that
is still held at the end, and the peak, went (top lines).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import database, emit, machine, table

SAMPLE_EVERY = 10_000  # (b), changed by --sample


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def _files(root: Path, n: int) -> Iterator[str]:
    """Create ``n`` small files under ``root`` (1000 per directory), yielding each path."""
    for i in range(n):
        folder = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i:07d}.dat"
        path.write_bytes(b"%d\n" % i)
        yield str(path)


# -- children (each a fresh interpreter) ---------------------------------------------------


def _child_baseline(root: Path, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    for _ in _files(root, n):
        pass
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb()}


def _child_write(root: Path, n: int, trace: bool) -> dict[str, Any]:
    import dpt_core

    if trace:
        import tracemalloc

        tracemalloc.start(5)
    start = time.perf_counter()
    with dpt_core.invocation("bench_memory") as inv:
        inv.write(_files(root, n))
    dpt_core.flush()
    result: dict[str, Any] = {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb()}
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        result["traced_mb"] = {"current": current / 1e6, "peak": peak / 1e6}
        result["top"] = [
            f"{stat.size / 1e6:7.2f} MB {stat.count:8d} blocks  {stat.traceback[0]}"
            for stat in snapshot.statistics("lineno")[:12]
        ]
    return result


def _sizes() -> dict[str, int]:
    """Entries in the structures that could grow with every invocation."""
    import dpt_core.tracker as tracker_module
    from dpt_core.store import plugin

    tracker = tracker_module.get_tracker()
    sizes = {
        "open_runs": len(tracker_module._unfinished),
        "warn_once": len(tracker._failures._logged),
    }
    store = plugin._store if hasattr(plugin, "_store") else None
    recorder = getattr(store, "recorder", None) or getattr(store, "_recorder", None)
    if recorder is not None:
        for name in ("_invocation_ids", "_product_ids", "_version_ids", "_facts", "_new_here"):
            sizes[name.strip("_")] = len(getattr(recorder, name, ()))
    return sizes


def _child_long(root: Path, runs: int) -> dict[str, Any]:
    import dpt_core

    source = root / "in.dat"
    source.write_bytes(b"input\n")
    out = root / "out"
    out.mkdir()
    samples = []
    start = time.perf_counter()
    for i in range(1, runs + 1):
        with dpt_core.invocation("bench_long", parameters={"i": i}) as inv:
            inv.read(source)
            target = out / f"o{i % 1000:03d}.dat"
            target.write_bytes(b"%d\n" % i)
            inv.write(target)
        if i % SAMPLE_EVERY == 0:
            dpt_core.flush()
            samples.append(
                {
                    "runs": i,
                    "rss_mb": _rss_mb(),
                    "seconds": time.perf_counter() - start,
                    "load": os.getloadavg()[0],
                }
            )
    return {"samples": samples, "sizes": _sizes(), "peak_mb": _peak_mb()}


def _child(argv: list[str]) -> None:
    global SAMPLE_EVERY
    mode, root, n = argv[0], Path(argv[1]), int(argv[2])
    SAMPLE_EVERY = int(argv[3])
    if mode == "baseline":
        result = _child_baseline(root, n)
    elif mode == "write":
        result = _child_write(root, n, trace=False)
    elif mode == "trace":
        result = _child_write(root, n, trace=True)
    else:
        result = _child_long(root, n)
    print(json.dumps(result))


# -- parent ----------------------------------------------------------------------------------


#: Where the files are made: in memory when it can (a slow or busy disk makes creating
#: and deleting a million files take longer than recording them; tmpfs pages are not
#: counted in the process's RSS). Changed by --dir.
FILES_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _spawn(mode: str, n: int, env: dict[str, str], sample: int = SAMPLE_EVERY) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=FILES_DIR) as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_memory",
                "--child",
                mode,
                tmp,
                str(n),
                str(sample),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _env(url: str, tmp: str) -> dict[str, str]:
    Path(f"{tmp}/none.toml").write_text("")
    return dict(
        os.environ,
        DPT_DATABASE_URL=url,
        DPT_SPOOL_DIR=f"{tmp}/spool",
        DPT_CACHE_DIR=f"{tmp}/cache",
        DPT_REDACTION_KEY="bench",
        DPT_CONFIG=f"{tmp}/none.toml",
    )


def main(argv: list[str] | None = None) -> None:
    global FILES_DIR
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--child":
        _child(args[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=200_000)
    parser.add_argument("--million", action="store_true", help="also write 1 000 000 outputs")
    parser.add_argument("--runs", type=int, default=100_000, help="invocations in (b); 0 skips")
    parser.add_argument("--sample", type=int, default=SAMPLE_EVERY, help="(b): RSS every N runs")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--write-modes", default="background", help="DPT_WRITE of (a): background,sync"
    )
    parser.add_argument("--trace", action="store_true", help="tracemalloc: where (a) holds memory")
    parser.add_argument("--skip-writes", action="store_true", help="only (b)")
    parser.add_argument("--dir", default=FILES_DIR, help="where the files are made")
    opts = parser.parse_args(args)
    FILES_DIR = opts.dir
    emit("bench_memory.machine", **machine(), load=os.getloadavg())
    sizes = [opts.outputs] + ([1_000_000] if opts.million else [])
    rows = []
    for backend in opts.backends.split(","):
        with database(backend) as url, tempfile.TemporaryDirectory() as tmp:
            env = _env(url, tmp)
            cases = [] if opts.skip_writes else sizes
            for n, mode in [(n, m) for n in cases for m in opts.write_modes.split(",")]:
                base = _spawn("baseline", n, env)
                got = _spawn("write", n, {**env, "DPT_WRITE": mode})
                row = {
                    "case": f"write {n} ({mode})",
                    "backend": backend,
                    "peak_mb": got["peak_mb"],
                    "baseline_mb": base["peak_mb"],
                    "ratio_mb": got["peak_mb"] / base["peak_mb"],
                    "seconds": got["seconds"],
                    "baseline_s": base["seconds"],
                    "ratio_s": got["seconds"] / base["seconds"],
                    "load": os.getloadavg()[0],
                }
                rows.append(row)
                emit("bench_memory.write", **row)
                if opts.trace:
                    traced = _spawn("trace", n, {**env, "DPT_WRITE": mode})
                    emit(
                        "bench_memory.trace",
                        backend=backend,
                        outputs=n,
                        write=mode,
                        **traced["traced_mb"],
                    )
                    print("\n".join(traced["top"]))
            if opts.runs:
                long = _spawn("long", opts.runs, env, opts.sample)
                samples = long["samples"]
                after = [s["rss_mb"] for s in samples]
                growth = (
                    (after[-1] - after[0]) / (len(after) - 1) if len(after) > 1 else float("nan")
                )
                emit(
                    "bench_memory.long_lived",
                    backend=backend,
                    runs=opts.runs,
                    rss_mb=after,
                    sample_every=opts.sample,
                    growth_mb_per_sample=growth,
                    load=[s["load"] for s in samples],
                    sizes=long["sizes"],
                )
                rows.append(
                    {
                        "case": f"long-lived {opts.runs} runs",
                        "backend": backend,
                        "peak_mb": long["peak_mb"],
                        "baseline_mb": after[0],
                        "ratio_mb": after[-1] / after[0],
                        "seconds": samples[-1]["seconds"],
                        "baseline_s": samples[0]["seconds"],
                        "ratio_s": samples[-1]["seconds"] / samples[0]["seconds"],
                        "load": os.getloadavg()[0],
                    }
                )
    print()
    print("baseline: (a) the same files created without dpt; (b) RSS at the first sample")
    table(rows)


if __name__ == "__main__":
    main()
