"""Several processes share one spool: a drainer (``dpt serve``, ``dpt spool drain``) may
take a process's spool file before that process's own background writer does. The
process's flush, and so its reads, must still see what it recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dpt_core
from dpt_core.spool import Spool
from dpt_core.store.plugin import collecting, current_store

REPO = Path(__file__).resolve().parents[2]

#: Another process replaying this spool, each batch written only after a pause: the file
#: it took stays locked by it meanwhile, as a drainer under load holds it.
SLOW_DRAINER = """
import sys, time
from dpt_core.config import get_settings
from dpt_core.store.plugin import current_store

store = current_store(get_settings())
store.engine  # connected and the schema checked before the file is taken

def record(batch):
    time.sleep(float(sys.argv[1]))
    store.record(batch)

store.spool.replay(record)
"""


def test_a_flush_waits_for_a_drainer_that_took_this_processs_file(dpt_env, tmp_path):
    out = tmp_path / "product.txt"
    out.write_text("made here\n")
    store = current_store()
    assert store.engine is not None  # (the schema made before the drainer starts)
    assert store.mode == "background"
    # The events in this process's spool file, as the writer's submit appends them, but the
    # writer not told: the drainer takes the file first, as it can under load.
    with collecting() as recorded, dpt_core.invocation("shared") as inv:
        inv.write(out)
    store.spool.append(recorded)
    own = store.spool.own_file
    assert own.exists()
    drainer = subprocess.Popen(
        [sys.executable, "-c", SLOW_DRAINER, "1.5"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while own.exists():  # the drainer moves it aside under its lock, then writes slowly
            assert time.monotonic() < deadline and drainer.poll() is None
            time.sleep(0.01)
        assert list(store.spool.directory.glob(f"{own.stem}.r{drainer.pid}-*.jsonl"))
        assert store.flush(timeout=60) is True
        runs = dpt_env.scalar("SELECT count(*) FROM invocations WHERE job = 'shared'")
        assert runs == 1  # before the fix: 0, the drainer still sleeping on its first batch
        assert dpt_core.lineage(out, direction="upstream").nodes
    finally:
        drainer.wait(60)
    assert drainer.returncode == 0
    assert Spool(dpt_env.path / "spool").status().events == 0
