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

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only"),
    # (Python 3.12+ warns of a fork in a process with threads: what is tested here)
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

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


def run_recording(code: str, env: DptTestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter recording into ``env`` with the background
    writer; it must exit 0."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={
            **clean,
            **env.environ(),
            "DPT_WRITE": "background",
            "PYTHONPATH": str(ROOT) + os.pathsep + clean.get("PYTHONPATH", ""),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_child_forked_while_the_writer_imports_the_database_stack_runs(
    dpt_env: DptTestEnv, tmp_path: Path
) -> None:
    out = tmp_path / "catalog.fits"
    done = run_recording(FORK_DURING_THE_WRITERS_IMPORT, dpt_env, str(out))
    assert done.stdout.strip().splitlines()[-1] == "child exit code 0", done.stdout
    # and what the parent recorded while the fork waited for its writer is in the database
    recorded = dpt_env.rows(
        "SELECT p.uri FROM data_product_versions v JOIN data_products p ON p.id = v.product_id"
    )
    assert [r.uri for r in recorded] == [normalize_uri(out)]


FORK_BESIDE_A_WRITER_THAT_NEVER_RUNS_DRY = textwrap.dedent(
    """
    import logging, os, sys, threading, time
    import dpt_core

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    with dpt_core.invocation("warm"):
        pass
    dpt_core.flush()
    stop, made = threading.Event(), [0]

    def record():
        while not stop.is_set():
            with dpt_core.invocation("busy"):
                pass
            made[0] += 1

    recorder = threading.Thread(target=record)
    recorder.start()
    time.sleep(0.5)
    codes = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    stop.set()
    recorder.join()
    dpt_core.flush()
    print(codes, made[0])
    """
)


def test_a_fork_beside_a_writer_that_never_runs_dry_goes_in_between_two_writes(
    dpt_env: DptTestEnv,
) -> None:
    done = run_recording(FORK_BESIDE_A_WRITER_THAT_NEVER_RUNS_DRY, dpt_env)
    codes, made = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert codes == "[7, 7, 7, 7, 7]"
    # no fork gave up waiting (FORK_WAIT) for a writer that kept starting new writes
    assert "still works after" not in done.stderr, done.stderr[-3000:]
    # and the writer went on: every invocation recorded meanwhile is in the database
    recorded = dpt_env.scalar("SELECT count(*) FROM invocations WHERE job = 'busy'")
    assert recorded == int(made) > 0


def test_a_fork_is_not_kept_waiting_by_pieces_of_work_that_follow_each_other(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread whose pieces of work follow one another with no gap (a writer that never
    runs dry) lets a pending fork go first: the fork does not wait out FORK_WAIT."""
    import logging
    import threading
    import time

    from dpt_core import forksafe

    monkeypatch.setattr(forksafe, "FORK_WAIT", 3.0)
    stop, pieces = threading.Event(), [0]

    def back_to_back() -> None:
        while not stop.is_set():
            with forksafe.working():
                time.sleep(0.005)
            pieces[0] += 1

    worker = threading.Thread(target=back_to_back)
    with caplog.at_level(logging.DEBUG, logger="dpt"):
        worker.start()
        try:
            codes = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    os._exit(7)
                codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        finally:
            stop.set()
            worker.join()
    assert codes == [7, 7, 7]
    assert pieces[0] > 0
    assert not [r for r in caplog.records if "still works after" in r.getMessage()]
