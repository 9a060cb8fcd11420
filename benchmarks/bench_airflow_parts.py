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

Four more take parts of the event path out (2026-12-08, thirteenth round):

- ``no-layers``: the listener's two task hooks make the same events, with the same
  calls for the work (the translator, ``Tracker.observe``, the redaction, the try's
  variables, the environment), and hand each try's batch straight to the store: no
  ``Tracker.start``/``read``/``write``/``finish``, no guards, no plugin dispatch, no
  ``batch()`` hooks (so no other plugin, the live OpenLineage emitter included, sees
  the try). Checked: its runs record as many invocations, versions and edges as the
  plugin's;
- ``no-spool``: the events are made but the store takes nothing (no encoding, no
  append, no wake of the writer): what the durable append costs the task's thread;
- ``floor``: ``none-of-these`` and ``no-layers`` at once: the events made from
  Airflow's task instance and appended to the spool, and nothing else: the least a
  durable record of a try costs the task's thread in this design;
- ``floor-no-spool``: and ``no-spool``: the events made, and nothing else.

A diagnostic, not a mode: the variants record wrong things (no hashes, secrets kept)
into the benchmark's throwaway database. See docs/performance.md, "Eleventh round"
and "Thirteenth round".
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

from benchmarks.bench_airflow import HookTimer, _count_rows, run_once, set_up

PARTS = (
    "no-config",
    "no-openlineage",
    "no-context-variables",
    "no-volatile-variables",
    "no-redaction",
    "no-symlinks",
    "no-hashing",
)
#: Parts of the event path (see the module docstring), not of the work.
PATH_PARTS = ("no-layers", "no-spool")
VARIANTS = ("dpt", *PARTS, "none-of-these", *PATH_PARTS, "floor", "floor-no-spool")


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
    if "no-layers" in parts:
        patches.set(
            listener.DptListener, "_task_started", patches.counted("no-layers", _direct_start)
        )
        patches.set(listener.DptListener, "_task_finished", _direct_finish)
    if "no-spool" in parts:
        from dpt_core.store import plugin

        patches.set(plugin.Store, "submit", patches.counted("no-spool", lambda self, events: None))


def _direct_start(self: Any, ti: Any) -> Any:
    """``DptListener._task_started`` without the tracker's layers: the same start and
    read events (one batch, handed to the store), the same calls for the work."""
    import shlex

    import dpt_core
    from dpt_airflow import compat
    from dpt_airflow.listener import _OpenTry
    from dpt_core.environment import redact_parameters, redact_text
    from dpt_core.events import InvocationStarted, ProductsRead, clean_text
    from dpt_core.process import process_token
    from dpt_core.store.plugin import current_store
    from dpt_core.tracker import InvocationHandle, jsonable

    key = (ti.dag_id, ti.run_id)
    if not self.enabled(key) or not compat.is_runtime_task_instance(ti):
        return None
    translator = self.translator_for(key)
    tracker = dpt_core.get_tracker()
    context = compat.template_context(ti)
    parent = self._started_dag_run(translator, context["dag_run"])
    uuid = translator.get_invocation_uuid(ti)
    env = tracker.environment()
    job, task = clean_text(translator.get_job(ti)), clean_text(translator.get_task(ti))
    command = compat.mask_airflow_secrets(translator.get_command(ti, context))
    if command is not None and not isinstance(command, str):
        command = shlex.join(command)
    parameters = compat.mask_airflow_secrets(translator.get_parameters(ti, context))
    started = InvocationStarted(
        uuid=uuid,
        orchestrator=translator.orchestrator,
        job=job,
        task=task,
        external_id=clean_text(translator.get_external_id(ti)),
        parent_uuid=parent,
        status="running",
        started_at=ti.start_date,
        user=env.user,
        host=env.hostname,
        command=redact_text(clean_text(command)) if command is not None else None,
        parameters=redact_parameters(jsonable(parameters or {}), tracker.settings),
        code_version=translator.get_code_version(ti, context),
        environment=env,
        variables=tracker._variables(
            True, translator.get_context_variables(ti, context), translator.orchestrator
        ),
        process=process_token(),
    )
    handle = InvocationHandle(tracker, uuid, job, task)
    handle._started = started
    events: list[Any] = [started]
    inputs = translator.get_inputs(ti, context)
    if inputs:
        read = tracker.observe(inputs)
        handle._read_uris.update(o.uri for o in read)
        events.append(ProductsRead(uuid, tuple(read)))
    current_store().submit(events)
    self.running.set(compat.task_key(ti), _OpenTry(handle, translator))
    return handle


def _direct_finish(self: Any, ti: Any, status: str, error: Any) -> None:
    """``DptListener._task_finished`` of a try :func:`_direct_start` opened, without the
    tracker's layers: the written and end events, one batch handed to the store."""
    from dpt_airflow import compat
    from dpt_core.events import InvocationFinished, ProductsWritten, utcnow
    from dpt_core.store.plugin import current_store

    handle, translator = self.running.pop(compat.task_key(ti))
    events: list[Any] = []
    outputs = translator.get_outputs(ti, compat.template_context(ti)) if status == "success" else []
    if outputs:  # (each derives from every input, as in write())
        written = handle.tracker.observe(outputs, parents=[None] * len(outputs))
        events.append(ProductsWritten(handle.uuid, tuple(written)))
    events.append(InvocationFinished(handle.uuid, status, utcnow(), None))
    current_store().submit(events)
    self._ended.registry().set(compat.task_key(ti), True)


def variant_parts(variant: str) -> tuple[str, ...]:
    if variant == "dpt":
        return ()
    if variant == "none-of-these":
        return PARTS
    if variant.startswith("floor"):  # (no-layers calls no plugin: no OpenLineage emitter)
        work = tuple(part for part in PARTS if part != "no-openlineage")
        return (*work, "no-layers", *(("no-spool",) if variant == "floor-no-spool" else ()))
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
        database_url = os.environ["DPT_DATABASE_URL"]
        rows = _count_rows(database_url)
        #: The rows the plugin's runs add (the first variant that records sets them).
        expected: dict[str, int] | None = None
        for round_no in range(args.rounds):
            shift = round_no % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                patches = Patches()
                _no_op_parts(patches, variant_parts(variant))
                try:
                    result = run_once(dag, "dpt", args.tasks, timer, None)
                finally:
                    patches.undo()
                before, rows = rows, _count_rows(database_url)
                added = {table: rows[table] - before[table] for table in rows}
                if "no-spool" not in variant_parts(variant):  # (those record nothing)
                    expected = expected or added
                    if added != expected:  # (a variant must record what the plugin records)
                        print(json.dumps({"failed": variant, "rows": added, "expected": expected}))
                        return 1
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
