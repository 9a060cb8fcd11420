"""The durability contract of spool-first writes (DPT_WRITE=background, the default).

A process killed with SIGKILL right after its invocation returned -- before its
background writer wrote anything, or after the writer committed and before it removed
the spool file -- loses nothing and duplicates nothing: the next dpt process (here
``dpt spool drain``, or any process that records) replays its spool exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import HANG, dpt, subprocess_env, table_counts

from dpt_core.spool import Spool

#: The child records one invocation (one input, one output), says so, and waits to be
#: killed. ``stall`` holds its writer (on a server database: the writer's watchdog thread,
#: ``dpt-recorder``) before the write (``before``) or after the commit
#: (``after``), so the kill lands where the test wants it.
CHILD = """
import sys, threading, time
import dpt_core
from dpt_core.store.recorder import Recorder

stall, raw, out = sys.argv[1], sys.argv[2], sys.argv[3]
original = Recorder.record

def record(self, events):
    if stall == "before":
        time.sleep(600)
    result = original(self, events)
    if stall == "after" and threading.current_thread().name in ("dpt-writer", "dpt-recorder"):
        print("committed", flush=True)
        time.sleep(600)
    return result

Recorder.record = record
with dpt_core.invocation("killed", parameters={"n": 1}) as inv:
    inv.read(raw)
    inv.write(out)
print("returned", flush=True)
time.sleep(600)
"""


def _run_and_kill(env, tmp_path, stall: str, wait_for: set[str]) -> None:
    raw, out = tmp_path / "raw.txt", tmp_path / "out.txt"
    raw.write_text("raw")
    out.write_text("out")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, stall, str(raw), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        seen: list[str] = []
        for line in child.stdout:
            seen.append(line.strip())
            if wait_for <= set(seen):
                break
        assert wait_for <= set(seen), (
            seen,
            child.stderr.read() if child.poll() is not None else "",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=HANG)
    assert child.returncode == -signal.SIGKILL


def _spool_files(spool: Any) -> list[str]:
    """What the spool holds, file by file (name, size, the kinds of its events), to tell a
    file a replay left behind from one it never took."""
    import json

    files = []
    for path in sorted(spool.rglob("*.jsonl")):
        kinds = [e["kind"] for line in path.read_text().splitlines() for e in json.loads(line)]
        files.append(f"{path.name} ({path.stat().st_size} B): {kinds}")
    return files


def _expected(counts: dict[str, int]) -> None:
    assert counts["invocations"] == 1
    assert counts["data_products"] == 2
    assert counts["data_product_versions"] == 2
    assert counts["invocation_inputs"] == 1
    assert counts["lineage_edges"] == 1


@pytest.mark.parametrize("replayer", ["drain", "next process"])
def test_sigkill_right_after_the_task_returns_is_replayed_exactly_once(any_env, tmp_path, replayer):
    _run_and_kill(any_env, tmp_path, "before", {"returned"})
    assert table_counts(any_env.url)["invocations"] == 0  # the writer never wrote
    assert Spool(tmp_path / "spool").status().events == 4  # start, read, write, end
    if replayer == "drain":
        dpt("spool", "drain", check=0)
    else:
        subprocess.run(
            [sys.executable, "-c", "import dpt_core\nwith dpt_core.invocation('next'): pass"],
            env=subprocess_env(),
            check=True,
            timeout=HANG,
        )
    counts = table_counts(any_env.url)
    if replayer == "next process":
        counts["invocations"] -= 1
    _expected(counts)
    assert Spool(tmp_path / "spool").status().events == 0, _spool_files(tmp_path / "spool")
    dpt("spool", "drain", check=0)  # nothing left: nothing more
    assert table_counts(any_env.url)["invocations"] == (2 if replayer == "next process" else 1)


def test_sigkill_after_the_commit_before_the_spool_is_emptied_counts_once(any_env, tmp_path):
    _run_and_kill(any_env, tmp_path, "after", {"committed", "returned"})
    # the writer had committed its first claim (at least the start) and was killed
    assert table_counts(any_env.url)["invocations"] == 1
    assert Spool(tmp_path / "spool").status().events >= 1
    dpt("spool", "drain", check=0)
    _expected(table_counts(any_env.url))
    from conftest import direct_rows

    assert [tuple(r) for r in direct_rows(any_env.url, "SELECT job, status FROM invocations")] == [
        ("killed", "success")
    ]
    assert Spool(tmp_path / "spool").status().events == 0
