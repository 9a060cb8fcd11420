"""A process forked while dpt's background writer works gets a child that can run.

A child forked while another thread of its parent holds a lock finds it held for good.
Forked while dpt's writer thread was inside its first write's ``import sqlalchemy``, the
child waited forever on its own ``import sqlalchemy`` (a bare fork: 6 times of 6).
Airflow's OpenLineage provider forks its process pool as a dag run starts, when dpt's
listener hands its writer that start. A fork now waits until dpt's threads are between
two pieces of work (:mod:`dpt_core.forksafe`).

The race is made certain, not left to chance: an import hook holds the writer thread
inside ``import sqlalchemy`` for half a second, and the main thread forks then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpt_core.testing import DptTestEnv
from dpt_core.uri import normalize_uri

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")

FORK_DURING_THE_WRITERS_IMPORT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, os, sys, threading, time
    import dpt_core

    inside = threading.Event()

    class SlowLoader(importlib.abc.Loader):
        def __init__(self, loader):
            self.loader = loader
        def create_module(self, spec):
            return self.loader.create_module(spec)
        def exec_module(self, module):
            if threading.current_thread() is not threading.main_thread():
                inside.set()  # the writer thread holds sqlalchemy's import lock from here
                time.sleep(0.5)
            self.loader.exec_module(module)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "sqlalchemy":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            spec.loader = SlowLoader(spec.loader)
            return spec

    assert "sqlalchemy" not in sys.modules
    sys.meta_path.insert(0, Finder())
    out = sys.argv[1]
    with open(out, "w") as f:
        f.write("made before the fork")
    dpt_core.track(out)  # the background writer's first write imports SQLAlchemy
    if not inside.wait(60):
        sys.exit("the writer thread never imported sqlalchemy")
    pid = os.fork()
    if pid == 0:
        import sqlalchemy  # a pool worker's first use of the ORM
        sqlalchemy.create_engine("sqlite://").connect().close()
        os._exit(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit code", os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child still waiting after 60 s, killed")
    dpt_core.flush()
    """
)


def test_a_child_forked_while_the_writer_imports_the_database_stack_runs(
    dpt_env: DptTestEnv, tmp_path: Path
) -> None:
    out = tmp_path / "catalog.fits"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    done = subprocess.run(
        [sys.executable, "-c", FORK_DURING_THE_WRITERS_IMPORT, str(out)],
        env={
            **clean,
            **dpt_env.environ(),
            "DPT_WRITE": "background",
            "PYTHONPATH": str(ROOT) + os.pathsep + clean.get("PYTHONPATH", ""),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "child exit code 0", done.stdout
    # and what the parent recorded while the fork waited for its writer is in the database
    recorded = dpt_env.rows(
        "SELECT p.uri FROM data_product_versions v JOIN data_products p ON p.id = v.product_id"
    )
    assert [r.uri for r in recorded] == [normalize_uri(out)]
