"""Which part of dpt's hooks takes the task's thread: the work, or the event path.

Usage::

    .tox/airflow/bin/python -m benchmarks.bench_airflow_parts [--tasks 40] [--rounds 8]
        [--variants dpt,no-hashing,...]

The DAG and set-up of :mod:`benchmarks.bench_airflow` (40 chained tasks under
``dag.test()``, each reading one file and writing one), dpt on, in its default write
mode. Each variant replaces named parts of dpt's work with no-ops for its runs, the
variants alternating within a round, and reports the time dpt's task-instance hooks
take on the task's thread, per try (median over the rounds), and its ratio to the
unchanged plugin (``dpt``) of the same rounds:

- ``no-config``: the listener reads no Airflow config (``[dpt] enabled`` taken as on,
  the default translator; it reads them once a dag run since 2026-12-07's twelfth
  round);
- ``no-openlineage``: the live OpenLineage emitter skips its configuration check;
- ``no-context-variables``: no ``AIRFLOW_CTX_*`` computed for the try;
- ``no-volatile-variables``: the process's volatile variables not read;
- ``no-redaction``: parameters, command and error neither redacted nor masked by
  Airflow's secrets masker;
- ``no-symlinks``: paths made absolute, symlinks not resolved;
- ``no-hashing``: files stat'ed, not hashed (one made-up digest);
- ``none-of-these``: all of the above at once: what is left is the event path itself
  (listener, translator, tracker, plugin hooks, store, the spool appends).

A diagnostic, not a mode: the variants record wrong things (no hashes, secrets kept)
into the benchmark's throwaway database. See docs/performance.md, "Eleventh round".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_airflow import HookTimer, run_once, set_up

PARTS = (
    "no-config",
    "no-openlineage",
    "no-context-variables",
    "no-volatile-variables",
    "no-redaction",
    "no-symlinks",
    "no-hashing",
)
VARIANTS = ("dpt", *PARTS, "none-of-these")


class Patches:
    """Module and class attributes replaced for one run, put back after it."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []
        #: Calls of each part's no-ops in the run: a part never called measured nothing.
        self.calls: dict[str, int] = {}

    def counted(self, part: str, function: Any) -> Any:
        """``function``, counting its calls under ``part``."""
        self.calls.setdefault(part, 0)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[part] += 1
            return function(*args, **kwargs)

        return call

    def set(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, value)

    def undo(self) -> None:
        while self._saved:
            owner, name, value = self._saved.pop()
            setattr(owner, name, value)


def _no_op_parts(patches: Patches, parts: tuple[str, ...]) -> None:
    """Replace ``parts`` (names from :data:`PARTS`) with no-ops until ``patches.undo()``."""
    import dpt_core.environment as environment
    import dpt_core.hashing as hashing
    import dpt_core.uri as uri
    from dpt_airflow import compat, listener, translator
    from dpt_core.export import openlineage_live

    if "no-config" in parts:
        options = patches.counted("no-config", lambda self, dag_run: (True, ""))
        patches.set(listener.DptListener, "_options", options)
    if "no-openlineage" in parts:
        patches.set(openlineage_live, "client", patches.counted("no-openlineage", lambda: None))
    if "no-context-variables" in parts:
        none = patches.counted("no-context-variables", lambda *a: {})
        patches.set(translator.AirflowTranslator, "get_context_variables", none)
    if "no-volatile-variables" in parts:
        none = patches.counted("no-volatile-variables", lambda *a, **k: {})
        patches.set(environment, "volatile_variables", none)
    if "no-redaction" in parts:
        kept_as_is = patches.counted("no-redaction", lambda value, *a, **k: value)
        patches.set(environment, "redact_parameters", kept_as_is)
        patches.set(environment, "redact_text", kept_as_is)
        patches.set(compat, "mask_airflow_secrets", kept_as_is)
    if "no-symlinks" in parts:
        patches.set(uri, "_realpath", patches.counted("no-symlinks", os.path.abspath))
    if "no-hashing" in parts:
        digest = "xxh3_128:" + "0" * 32

        def stat_only(paths: Any, algorithm: Any = None, cache: Any = None) -> list[Any]:
            return [hashing._facts(os.stat(p), digest) for p in paths]

        patches.set(hashing, "observe_many", patches.counted("no-hashing", stat_only))


def variant_parts(variant: str) -> tuple[str, ...]:
    if variant == "dpt":
        return ()
    if variant == "none-of-these":
        return PARTS
    return (variant,)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (dpt is always run)",
    )
    args = parser.parse_args()
    variants = ["dpt", *(v for v in args.variants.split(",") if v and v != "dpt")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    home = Path(tempfile.mkdtemp(prefix="dpt-bench-airflow-parts-"))
    try:
        set_up(home, args.tasks)
        sys.path.insert(0, str(home / "dags"))
        import dpt_bench_dag  # noqa: E402  (Airflow must see the variables above first)

        from dpt_airflow.listener import dpt_listener

        timer = HookTimer(dpt_listener)
        dag = dpt_bench_dag.bench
        for _ in range(2):  # warm-up: Airflow's first runs import a lot
            run_once(dag, "dpt", args.tasks, timer, None)
        on_thread: dict[str, list[float]] = {v: [] for v in variants}
        for round_no in range(args.rounds):
            shift = round_no % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                patches = Patches()
                _no_op_parts(patches, variant_parts(variant))
                try:
                    result = run_once(dag, "dpt", args.tasks, timer, None)
                finally:
                    patches.undo()
                unreached = [part for part, n in patches.calls.items() if n < args.tasks]
                if result["state"] != "success" or unreached:
                    # (a part replaced but called less than once a try measured nothing)
                    print(json.dumps({"failed": variant, "unreached": unreached, **result}))
                    return 1
                on_thread[variant].append(result["on_task_thread_per_task_ms"])
                print(json.dumps({"variant": variant, "round": round_no, **result}), flush=True)
        _print_table(on_thread)
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _print_table(on_thread: dict[str, list[float]]) -> None:
    base = statistics.median(on_thread["dpt"])
    summary: dict[str, Any] = {}
    print(f"\n{'variant':24s} {'on the task thread, ms a try':>30s} {'ratio to dpt':>13s}  runs")
    for variant, values in on_thread.items():
        median = statistics.median(values)
        low, high = min(values), max(values)
        summary[variant] = {"median_ms": round(median, 3), "ratio": round(median / base, 3)}
        print(
            f"{variant:24s} {median:17.3f} ({low:.2f} - {high:.2f}) {median / base:13.2f}"
            f"  {len(values)}"
        )
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
