"""Many processes, one database: nothing fails, nothing is duplicated, nothing is missing.

Workers (``worker.py overlap``) share one environment and write overlapping
products in shuffled order, all starting at once behind a gate file, in strict
mode (``DPT_STRICT=1``) so any tracking error -- a deadlock that escaped the
retries, "database is locked", a unique violation on a race -- makes the worker
exit non-zero instead of being swallowed.
"""

from __future__ import annotations

from pathlib import Path

from conftest import HANG, direct_rows, direct_scalar, facts, table_counts, worker

from dpt_core.spool import Spool

WORKERS = 8
INVOCATIONS = 6
SHARED_INPUTS = 10
SHARED_OUTPUTS = 12
READS = 4
WRITES = 8


def run_workers(env, tmp_path: Path, workers: int) -> list[dict]:
    inputs = []
    for k in range(SHARED_INPUTS):
        path = tmp_path / "shared" / f"in{k}.dat"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"input {k}\n")
        inputs.append(str(path))
    gate = tmp_path / "go"
    settings = env.environ() | {"DPT_STRICT": "1", "DPT_LOAD_PLUGINS": ""}
    procs = [
        worker(
            "overlap",
            {
                "worker": w,
                "inputs": inputs,
                "own_dir": str(tmp_path / "own"),
                "invocations": INVOCATIONS,
                "reads": READS,
                "writes": WRITES,
                "shared_outputs": SHARED_OUTPUTS,
                "gate": str(gate),
            },
            env=settings,
            cwd=tmp_path,
        )
        for w in range(workers)
    ]
    gate.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=HANG)
        results.append({"code": proc.returncode, "stderr": err, "facts": facts(out)})
    return results


def check_database(url: str, results: list[dict], workers: int) -> dict[str, int]:
    for r in results:
        assert r["code"] == 0, r["stderr"]
        assert "Traceback" not in r["stderr"] and "database is locked" not in r["stderr"], r[
            "stderr"
        ]
        assert "deadlock" not in r["stderr"].lower(), r["stderr"]
    uuids = [f["uuid"] for r in results for f in r["facts"]]
    assert len(uuids) == workers * INVOCATIONS

    counts = table_counts(url)
    # one environment: every worker ran with the same interpreter, packages and variables
    assert counts["environments"] == 1
    assert direct_scalar(url, "SELECT COUNT(DISTINCT environment_id) FROM invocations") == 1
    # get-or-create rows exist once, whatever the race
    assert not direct_rows(
        url, "SELECT name, version FROM distributions GROUP BY name, version HAVING COUNT(*) > 1"
    )
    assert not direct_rows(
        url, "SELECT digest FROM env_variables GROUP BY digest HAVING COUNT(*) > 1"
    )
    assert not direct_rows(url, "SELECT uri FROM data_products GROUP BY uri HAVING COUNT(*) > 1")
    assert counts["data_products"] == SHARED_INPUTS + SHARED_OUTPUTS + workers * INVOCATIONS
    # the environment links every package once
    assert counts["environment_distributions"] == counts["distributions"]
    # every invocation is there, once, finished
    recorded = direct_rows(url, "SELECT uuid, status FROM invocations")
    assert sorted(u for u, _ in recorded) == sorted(uuids)
    assert {s for _, s in recorded} == {"success"}
    # every write made its versions, each with its producer and lineage from the inputs read
    written = direct_scalar(
        url, "SELECT COUNT(*) FROM data_product_versions WHERE produced_by_id IS NOT NULL"
    )
    assert written == workers * INVOCATIONS * (WRITES + 1)
    assert (
        direct_scalar(url, "SELECT COUNT(*) FROM invocation_inputs")
        == workers * INVOCATIONS * READS
    )
    assert counts["lineage_edges"] == workers * INVOCATIONS * (WRITES + 1) * READS
    # runs reading the same unchanged input at once share one observed version of it
    assert counts["data_product_versions"] == written + SHARED_INPUTS
    return counts


def test_eight_processes_on_postgresql(pg_env, tmp_path):
    deadlocks_before = direct_scalar(
        pg_env.url, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    results = run_workers(pg_env, tmp_path, WORKERS)
    counts = check_database(pg_env.url, results, WORKERS)
    assert Spool(tmp_path / "spool").status().events == 0  # nothing fell back to the spool
    deadlocks = direct_scalar(
        pg_env.url, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    print(
        f"postgresql: {WORKERS} processes, {counts}, deadlocks detected and retried: {deadlocks - deadlocks_before}"
    )


def test_six_processes_on_sqlite(dpt_env, tmp_path):
    results = run_workers(dpt_env, tmp_path, 6)
    counts = check_database(dpt_env.url, results, 6)
    assert Spool(tmp_path / "spool").status().events == 0
    print(f"sqlite: 6 processes, {counts}")
