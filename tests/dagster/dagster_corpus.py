"""Helpers for the corpus of Dagster documentation patterns: run, tick, read back what dpt recorded.

A test builds the assets as Dagster's documentation writes them, materialises them on a
real instance (each run under a label), ticks the real dpt sensor until it is up to date,
and compares :meth:`Corpus.recorded` with the exact records it expects::

    {("yesterday_event_stats", "2023-01-22", "stats"): Step(
        status="success",
        inputs=["dagster://asset/events/2023-01-21 @ day21"],
        outputs=["dagster://asset/yesterday_event_stats/2023-01-22"],
    )}

Inputs name the product and the label of the run whose materialisation is the version
read (``@ -`` for a version no run produced: a source asset). Set
``DPT_TEST_CORPUS_REPORT=<file>`` to append one JSON line per pattern (runs and
materialisations expected vs recorded): the corpus table of the closing note.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

import dpt_dagster

TERMINAL = ("success", "failed", "cancelled", "skipped", "crashed")


@dataclass(frozen=True)
class Step:
    """What dpt recorded for one asset (partition) of one run."""

    status: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Corpus:
    """A Dagster instance, the definitions under test (with the dpt sensor) and dpt's database."""

    instance: dg.DagsterInstance
    db: Any
    defs: dg.Definitions | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ticks: int = 0

    # -- running ----------------------------------------------------------------------------

    def use(self, *assets: Any, jobs: Sequence[Any] = (), **kwargs: Any) -> dg.Definitions:
        """Definitions of ``assets`` with the one-line dpt sensor (what a user writes)."""
        sensor = kwargs.pop("sensor", None) or dpt_dagster.dpt_asset_sensor()
        self.defs = dg.Definitions(assets=list(assets), jobs=list(jobs), sensors=[sensor], **kwargs)
        return self.defs

    def materialize(
        self, label: str, assets: Sequence[Any], **kwargs: Any
    ) -> dg.ExecuteInProcessResult:
        """``dg.materialize(assets, instance=..., raise_on_error=False, **kwargs)`` under a label."""
        result = dg.materialize(
            list(assets), instance=self.instance, raise_on_error=False, **kwargs
        )
        self.name(label, result.run_id)
        return result

    def run_job(self, label: str, name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        """A job of the definitions, executed in process under a label."""
        assert self.defs is not None
        job = self.defs.resolve_job_def(name)
        result = job.execute_in_process(instance=self.instance, raise_on_error=False, **kwargs)
        self.name(label, result.run_id)
        return result

    def name(self, label: str, run_id: str) -> None:
        assert label not in self.labels.values(), f"label {label} used twice"
        self.labels[run_id] = label

    def tick(self, sensor_name: str = "dpt_tracker") -> list[str]:
        """Tick the dpt sensor until it is up to date; the tick messages."""
        assert self.defs is not None
        sensor = self.defs.resolve_sensor_def(sensor_name)
        cursor = None
        messages: list[str] = []
        for _ in range(50):
            ctx = dg.build_sensor_context(
                instance=self.instance, cursor=cursor, definitions=self.defs
            )
            result = sensor.evaluate_tick(ctx)
            self.ticks += 1
            cursor = result.cursor
            messages.append(result.skip_message or "")
            if not json.loads(cursor)["behind"]:
                return messages
        raise AssertionError(f"the sensor never caught up: {messages[-3:]}")

    # -- reading what dpt recorded --------------------------------------------------------

    def label_of(self, run_id: str | None) -> str:
        if not run_id:
            return "-"
        return self.labels.get(run_id, run_id)

    def runs(self) -> dict[str, str]:
        """Status of each run invocation, by label."""
        rows = self.db.rows(
            "SELECT external_id, status FROM invocations WHERE task IS NULL AND orchestrator = 'dagster'"
        )
        return {self.label_of(r.external_id): r.status for r in rows}

    def recorded(self) -> dict[tuple[str, str | None, str], Step]:
        """Every materialisation invocation: (asset, partition, run label) -> status, inputs, outputs.

        Also checks the lineage invariant the corpus relies on: every output derives from
        exactly the invocation's inputs, by edges labelled with the invocation.
        """
        invocations = self.db.rows(
            "SELECT id, task, external_id, status, parameters FROM invocations "
            "WHERE task IS NOT NULL AND orchestrator = 'dagster'"
        )
        found: dict[tuple[str, str | None, str], Step] = {}
        for inv in invocations:
            params = _json(inv.parameters)
            inputs = self.db.rows(
                "SELECT p.uri, v.id, v.metadata, pi.external_id FROM invocation_inputs i "
                "JOIN data_product_versions v ON v.id = i.version_id "
                "JOIN data_products p ON p.id = v.product_id "
                "LEFT JOIN invocations pi ON pi.id = v.produced_by_id "
                "WHERE i.invocation_id = :i",
                i=inv.id,
            )
            outputs = self.db.rows(
                "SELECT p.uri, v.id FROM data_product_versions v "
                "JOIN data_products p ON p.id = v.product_id WHERE v.produced_by_id = :i",
                i=inv.id,
            )
            for out in outputs:
                parents = self.db.rows(
                    "SELECT parent_version_id, invocation_id FROM lineage_edges "
                    "WHERE child_version_id = :c",
                    c=out.id,
                )
                assert sorted(p.parent_version_id for p in parents) == sorted(
                    i.id for i in inputs
                ), (inv.task, out.uri)
                assert {p.invocation_id for p in parents} <= {inv.id}
            key = (inv.task, params.get("partition"), self.label_of(inv.external_id))
            assert key not in found, f"{key} recorded twice"
            found[key] = Step(
                status=inv.status,
                inputs=sorted(
                    f"{_short(i.uri)} @ {self.label_of(_json(i.metadata).get('dagster/run_id') or i.external_id)}"
                    for i in inputs
                ),
                outputs=sorted(_short(o.uri) for o in outputs),
            )
        return found

    def running(self) -> list[tuple[str | None, str | None]]:
        """(task, run label) of every invocation still ``running``."""
        rows = self.db.rows("SELECT task, external_id FROM invocations WHERE status = 'running'")
        return [(r.task, self.label_of(r.external_id)) for r in rows]

    # -- the corpus table -----------------------------------------------------------------

    def report(
        self,
        pattern: str,
        expected: Mapping[tuple[str, str | None, str], Step],
        expected_runs: Mapping[str, str],
    ) -> None:
        """Assert the exact records, nothing running, and log the pattern's line of the table."""
        recorded = self.recorded()
        runs = self.runs()
        line = {
            "pattern": pattern,
            "runs_expected": len(expected_runs),
            "runs_recorded": len(runs),
            "materialisations_expected": sum(1 for s in expected.values() if s.outputs),
            "materialisations_recorded": sum(1 for s in recorded.values() if s.outputs),
            "steps_expected": len(expected),
            "steps_recorded": len(recorded),
            "inputs_expected": sum(len(s.inputs) for s in expected.values()),
            "inputs_recorded": sum(len(s.inputs) for s in recorded.values()),
            "exact": recorded == dict(expected) and runs == dict(expected_runs),
            "running": len(self.running()),
        }
        target = os.environ.get("DPT_TEST_CORPUS_REPORT")
        if target:
            with Path(target).open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        assert runs == dict(expected_runs)
        differences = {
            key: {"expected": expected.get(key), "recorded": recorded.get(key)}
            for key in sorted({*expected, *recorded}, key=repr)
            if expected.get(key) != recorded.get(key)
        }
        assert not differences, "records differ:\n" + "\n".join(
            f"{key}:\n  expected {d['expected']}\n  recorded {d['recorded']}"
            for key, d in differences.items()
        )
        assert self.running() == []


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def _short(uri: str) -> str:
    """``file:///tmp/.../data/x.csv`` -> ``file:data/x.csv``; other URIs unchanged."""
    if uri.startswith("file:///") and "/data/" in uri:
        return "file:data/" + uri.split("/data/", 1)[1]
    return uri
