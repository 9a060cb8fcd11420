"""Issue 15's classes of wrong or missing records, at the Python API, on real databases.

Each test here failed on the code before the fix it names.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

import dpt_core


def versions(env):
    return env.rows(
        "SELECT p.uri, v.content_hash, v.metadata, v.produced_by_id, v.uuid FROM data_product_versions v "
        "JOIN data_products p ON p.id = v.product_id ORDER BY v.id"
    )


def meta(row):
    value = row.metadata
    return (json.loads(value) if isinstance(value, str) else value) or {}


def variables(env, uuid):
    value = env.scalar("SELECT variables FROM invocations WHERE uuid = :u", u=uuid)
    return (json.loads(value) if isinstance(value, str) else value) or {}


# --------------------------------------------------------------------------- item 1


def test_a_file_uri_with_a_host_is_recorded_under_that_uri_without_a_hash(
    dpt_backend, dpt_env, tmp_path
):
    local = tmp_path / "local.csv"
    local.write_text("x")
    with dpt_core.invocation("example_asset_partition") as inv:
        inv.write("file://incoming/player-stats/team_a.csv", "s3://bucket/raw.csv", local)
    rows = {r.uri: r for r in versions(dpt_env)}
    assert set(rows) == {
        "file://incoming/player-stats/team_a.csv",
        "s3://bucket/raw.csv",
        local.as_uri(),
    }
    foreign = rows["file://incoming/player-stats/team_a.csv"]
    assert foreign.content_hash is None
    assert "host 'incoming'" in meta(foreign)["dpt/unhashed"]
    assert rows[local.as_uri()].content_hash == dpt_core.hash_file(local)
    assert "dpt/unhashed" not in meta(rows[local.as_uri()])


def test_a_file_uri_naming_this_host_is_the_local_file(dpt_env, tmp_path):
    local = tmp_path / "here.csv"
    local.write_text("here")
    with dpt_core.invocation("j") as inv:
        (uri,) = inv.write(f"file://{socket.gethostname()}{local}")
    assert uri == local.as_uri()
    (row,) = versions(dpt_env)
    assert row.content_hash == dpt_core.hash_file(local)


# --------------------------------------------------------------------------- item 2 (API part)


def test_one_bad_target_costs_only_itself(dpt_env, tmp_path, caplog):
    good = tmp_path / "good.csv"
    good.write_text("g")
    parent = tmp_path / "parent.csv"
    parent.write_text("p")
    with caplog.at_level(logging.WARNING, logger="dpt"), dpt_core.invocation("j") as inv:
        inv.read(object(), parent)
        written = inv.write(good, "", "s3://", parents=[parent, object()])
    assert written == [good.as_uri()]
    uris = [r.uri for r in versions(dpt_env)]
    assert sorted(uris) == sorted([parent.as_uri(), good.as_uri()])
    edges = dpt_env.rows("SELECT parent_version_id, child_version_id FROM lineage_edges")
    assert len(edges) == 1
    assert "empty path" in caplog.text and "nothing after 's3://'" in caplog.text
    assert "not a path or URI" in caplog.text
    status = dpt_env.scalar("SELECT status FROM invocations WHERE job = 'j'")
    assert status == "success"


def test_track_with_only_bad_targets_opens_no_run_and_with_some_records_the_rest(dpt_env, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("o")
    assert dpt_core.track(object()) == []
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 0
    assert dpt_core.track(object(), out) == [out.as_uri()]
    assert [r.uri for r in versions(dpt_env)] == [out.as_uri()]


# --------------------------------------------------------------------------- item 12


def test_reading_a_missing_file_warns_naming_it_and_says_so_in_the_version(
    dpt_env, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dpt"), dpt_core.invocation("j") as inv:
        inv.read("raw.fits")
    assert f"{tmp_path}/raw.fits does not exist" in caplog.text
    (row,) = versions(dpt_env)
    assert row.content_hash is None
    assert meta(row)["dpt/unhashed"] == "the file did not exist when this was recorded"


def test_reading_a_missing_file_is_an_error_in_strict_mode(dpt_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    with (
        pytest.raises(dpt_core.InvalidTarget, match="raw.fits does not exist"),
        dpt_core.invocation("j") as inv,
    ):
        inv.read("raw.fits")
    assert dpt_env.scalar("SELECT status FROM invocations") == "failed"
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 0


# --------------------------------------------------------------------------- item 3 (API part)


def test_orchestrator_variables_replace_the_process_ones_for_that_run(dpt_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "previous_task")
    monkeypatch.setenv("AIRFLOW_CTX_MAP_INDEX", "3")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "previous_task")
    tracker = dpt_core.get_tracker()
    first = tracker.start(
        "dag",
        task="this_task",
        variables={
            "AIRFLOW_CTX_TASK_ID": "this_task",
            "AIRFLOW_CTX_MAP_INDEX": None,
            "AIRFLOW_CTX_API_TOKEN": "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2,
        },
    )
    first.finish()
    got = variables(dpt_env, first.uuid)
    assert got["AIRFLOW_CTX_TASK_ID"] == "this_task"
    assert "AIRFLOW_CTX_MAP_INDEX" not in got
    assert got["AIRFLOW_CTX_API_TOKEN"].startswith("<redacted:hmac-sha256:")
    assert got["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] == "previous_task"  # volatile: on the run
    env_vars = {
        r.key
        for r in dpt_env.rows(
            "SELECT v.key FROM environment_variables ev JOIN env_variables v ON v.id = ev.variable_id"
        )
    }
    assert not any(k.startswith(("_AIRFLOW_PARSING_CONTEXT_", "AIRFLOW_CTX_")) for k in env_vars)


def test_per_task_parsing_context_does_not_split_the_environment(dpt_env, monkeypatch):
    ids = set()
    for task in ("extract", "transform", "load"):
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", task)
        dpt_core.plugin_api.reset()
        with dpt_core.invocation("dag", task=task):
            pass
        ids.add(dpt_env.scalar("SELECT environment_id FROM invocations WHERE task = :t", t=task))
    assert len(ids) == 1 and None not in ids
    assert dpt_env.scalar("SELECT COUNT(*) FROM environments") == 1


# --------------------------------------------------------------------------- item 14


def test_a_reader_first_and_the_producer_later_make_one_version_and_one_chain(
    dpt_backend, dpt_env, tmp_path
):
    raw, clean, summary = tmp_path / "raw.csv", tmp_path / "clean.csv", tmp_path / "summary.json"
    raw.write_text("1,2,3")
    clean.write_text("1,2")
    summary.write_text("{}")
    tracker = dpt_core.get_tracker()
    producer = tracker.start("flow", task="clean")  # its record arrives late (a read-back)
    with dpt_core.invocation("flow", task="summarise"):
        dpt_core.track(summary, parents=[clean])
    producer.read(raw)
    producer.write(clean)
    producer.finish()
    replayed = tracker.attach(producer.uuid)  # the same events again (spool replay)
    replayed.write(dpt_core.ProductRef(clean))

    clean_versions = [r for r in versions(dpt_env) if r.uri == clean.as_uri()]
    assert len(clean_versions) == 1
    producer_id = dpt_env.scalar("SELECT id FROM invocations WHERE uuid = :u", u=producer.uuid)
    assert clean_versions[0].produced_by_id == producer_id
    graph = dpt_core.lineage(summary, direction="upstream")
    assert {n.uri for n in graph.nodes} == {summary.as_uri(), clean.as_uri(), raw.as_uri()}


def test_a_rewrite_with_other_content_or_by_a_producer_is_a_new_version(dpt_env, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("v1")
    with dpt_core.invocation("reader") as inv:
        inv.read(data)
    data.write_text("v2")
    with dpt_core.invocation("writer") as inv:
        inv.write(data)
    with dpt_core.invocation("rewriter") as inv:  # same content, but its own producer
        inv.write(data)
    rows = [r for r in versions(dpt_env) if r.uri == data.as_uri()]
    assert len(rows) == 3
    assert [r.produced_by_id is None for r in rows] == [True, False, False]


# --------------------------------------------------------------------------- item 6


class Broken:
    """A third-party plugin that raises in every hook it implements."""

    calls = 0

    def _fail(self):
        Broken.calls += 1
        raise RuntimeError("broken plugin says no")

    @dpt_core.hookimpl
    def dpt_collect_environment(self):
        self._fail()

    @dpt_core.hookimpl
    def dpt_invocation_started(self, event):
        self._fail()

    @dpt_core.hookimpl
    def dpt_products_written(self, event):
        self._fail()

    @dpt_core.hookimpl
    def dpt_batch_started(self):
        self._fail()

    @dpt_core.hookimpl
    def dpt_batch_finished(self):
        self._fail()

    @dpt_core.hookimpl
    def dpt_resolve_uri(self, target):
        self._fail()


@pytest.fixture
def broken_plugin(dpt_env):
    pm = dpt_core.get_tracker().pm
    plugin = Broken()
    pm.register(plugin, name="acme-broken")
    yield plugin
    pm.unregister(plugin)


def test_a_plugin_that_raises_costs_only_itself(
    dpt_backend, dpt_env, broken_plugin, tmp_path, caplog
):
    out = tmp_path / "out.csv"
    out.write_text("o")
    with caplog.at_level(logging.WARNING, logger="dpt"):
        with dpt_core.invocation("calibrate", parameters={"gain": 2}) as inv:
            inv.write(out)
        tracker = dpt_core.get_tracker()
        with tracker.batch():
            for i in range(3):
                tracker.start(f"batched{i}", status="success")
    rows = dpt_env.rows("SELECT job, status, environment_id FROM invocations ORDER BY id")
    assert [(r.job, r.status) for r in rows] == [
        ("calibrate", "success"),
        ("batched0", "success"),
        ("batched1", "success"),
        ("batched2", "success"),
    ]
    assert all(r.environment_id is not None for r in rows)
    assert [r.uri for r in versions(dpt_env)] == [out.as_uri()]
    assert Broken.calls > 0
    named = [line for line in caplog.text.splitlines() if "'acme-broken'" in line]
    assert named and all("broken plugin says no" in line for line in named)
    # once per hook, not once per event
    assert len(named) == len({line.split(" in ")[1].split(" ")[0] for line in named})


def test_in_strict_mode_a_plugin_failure_raises_after_the_store_recorded(
    dpt_env, broken_plugin, monkeypatch
):
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    pm = dpt_core.get_tracker().pm
    if pm.get_plugin("acme-broken") is None:
        pm.register(broken_plugin, name="acme-broken")
    with pytest.raises(dpt_core.TrackingError, match="broken plugin says no"):
        dpt_core.get_tracker().start("strict-job", status="success")
    assert dpt_env.scalar("SELECT job FROM invocations") == "strict-job"


# --------------------------------------------------------------------------- item 10


def _spooled_events_for(root, url):
    from dpt_core.spool import Spool

    return Spool(root, url).status().events


def test_spooled_events_replay_only_into_the_database_they_were_meant_for(
    dpt_env, monkeypatch, tmp_path
):
    from dpt_core.spool import Spool

    spool_root = tmp_path / "spool"
    home_url = dpt_env.url
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where db_a's directory should be")
    db_a = f"sqlite:///{blocker}/db_a.sqlite3"  # unreachable until the file goes
    dead_pg = "postgresql://postgres:hunter2@127.0.0.1:9/db_b"
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")

    for url, job in ((db_a, "meant-for-a"), (dead_pg, "meant-for-b")):
        monkeypatch.setenv("DPT_DATABASE_URL", url)
        dpt_core.plugin_api.reset()
        with dpt_core.invocation(job):
            pass
        dpt_core.flush()  # (the background writer has tried, and left them in the spool)
        assert _spooled_events_for(spool_root, url) == 2

    monkeypatch.setenv("DPT_DATABASE_URL", home_url)
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("home"):
        pass  # a successful write: replays this database's spool, and only it
    assert [r.job for r in dpt_env.rows("SELECT job FROM invocations")] == ["home"]
    status = Spool(spool_root).status()
    waiting = {t.database: t.events for t in status.databases}
    assert waiting == {
        f"sqlite:///{blocker}/db_a.sqlite3": 2,
        "postgresql://postgres:***@127.0.0.1:9/db_b": 2,
    }
    on_disk = b"".join(p.read_bytes() for p in spool_root.rglob("*") if p.is_file())
    assert b"hunter2" not in on_disk

    blocker.unlink()  # db_a is back
    monkeypatch.setenv("DPT_DATABASE_URL", db_a)
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("later-on-a"):
        pass
    from sqlalchemy import create_engine, text

    dpt_core.flush()  # read below with an engine of the test's own
    engine = create_engine(db_a)
    with engine.connect() as conn:
        jobs = [r.job for r in conn.execute(text("SELECT job FROM invocations ORDER BY id"))]
    engine.dispose()
    assert jobs == ["meant-for-a", "later-on-a"]
    assert _spooled_events_for(spool_root, db_a) == 0
    assert _spooled_events_for(spool_root, dead_pg) == 2


def test_one_database_is_one_spool_whatever_the_url_spelling(tmp_path):
    from dpt_core.spool import target_key

    same = [
        "postgresql://u:pw@DB.example.org/survey",
        "postgresql+psycopg://u@db.example.org:5432/survey?options=-c%20x%3Dy",
        "postgres://u:other@db.example.org/survey",
    ]
    assert len({target_key(u) for u in same}) == 1
    others = [
        "postgresql://u@db.example.org/other",
        "postgresql://v@db.example.org/survey",
        "mysql://u@db.example.org/survey",
        f"sqlite:///{tmp_path}/a.sqlite3",
        f"sqlite:///{tmp_path}/b.sqlite3",
    ]
    assert len({target_key(u) for u in [same[0], *others]}) == 1 + len(others)
    assert target_key("") == "unconfigured"


# --------------------------------------------------------------------------- item 11


def _dpt_run(tmp_path, *command):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "dpt_core.cli", "run", "--name", "long", "--", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(env, sql, expected, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = env.scalar(sql)
        if value == expected:
            return value
        time.sleep(0.1)
    return env.scalar(sql)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_dpt_run_stopped_by_sigterm_or_sighup_forwards_it_and_records_the_end(
    dpt_env, tmp_path, sig
):
    import signal

    marker = tmp_path / "child-started"
    proc = _dpt_run(tmp_path, "sh", "-c", f"touch {marker}; exec sleep 60")
    assert _wait_for(dpt_env, "SELECT status FROM invocations", "running") == "running"
    while not marker.exists():
        pass
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), err
    row = dpt_env.rows("SELECT status, error FROM invocations")[0]
    assert (row.status, row.error) == ("cancelled", f"killed by {sig}")


SLOW_TO_RETURN_FROM_POPEN = """
import subprocess, time
_init = subprocess.Popen.__init__
def _slow_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    time.sleep(2)  # the command runs; 'dpt run' has not seen Popen return yet
subprocess.Popen.__init__ = _slow_init
"""


def test_a_signal_to_dpt_run_while_its_command_starts_is_forwarded_not_lost(
    dpt_env, tmp_path, monkeypatch
):
    """SIGTERM reaching 'dpt run' after its command started but before Popen returned
    (a loaded host) is passed on to the command and the end recorded: the handlers are
    in place before the command starts. Before, the signal found Python's default (dpt
    run killed, the run left running) or, under nohup, was ignored for SIGHUP."""
    import signal

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_TO_RETURN_FROM_POPEN)
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    marker = tmp_path / "child-started"
    proc = _dpt_run(tmp_path, "sh", "-c", f"touch {marker}; exec sleep 60")
    while not marker.exists():
        pass
    proc.send_signal(signal.SIGTERM)  # within the two seconds Popen takes to return
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    row = dpt_env.rows("SELECT status, error FROM invocations")[0]
    assert (row.status, row.error) == ("cancelled", "killed by SIGTERM")


def test_a_run_whose_process_was_killed_is_closed_as_crashed_at_the_next_write(
    dpt_backend, dpt_env, tmp_path
):
    import signal

    marker = tmp_path / "child-started"
    proc = _dpt_run(tmp_path, "sh", "-c", f"echo $$ > {marker}; exec sleep 60")
    assert _wait_for(dpt_env, "SELECT status FROM invocations", "running") == "running"
    while not marker.exists() or not marker.read_text().strip():
        pass
    proc.send_signal(signal.SIGKILL)  # dpt run dies without a word...
    proc.wait(timeout=60)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # ...and its orphaned command too
    proc.communicate(timeout=60)
    assert dpt_env.scalar("SELECT status FROM invocations") == "running"

    with dpt_core.invocation("next-write"):  # the next dpt process to write here
        pass
    row = dpt_env.rows("SELECT status, error, ended_at FROM invocations WHERE job = 'long'")[0]
    assert row.status == "crashed" and row.ended_at is not None
    assert "ended without recording an end" in row.error and "pid " in row.error
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'next-write'") == "success"


def test_a_dead_process_whose_events_wait_in_the_spool_is_not_closed_as_crashed(dpt_env):
    """A task process flushed its end into the spool and exited; a replay in another
    process moved its file aside and is writing it. A third process judging this host's
    dead runs meanwhile must not close that run as crashed: the end it is about to get
    would then be refused (an end closes only a running run). Seen in a real Airflow
    deployment (a mapped try recorded 'crashed' that Airflow ran to success)."""
    from dpt_core.events import InvocationFinished, utcnow
    from dpt_core.process import hostname
    from dpt_core.spool import _move_aside
    from dpt_core.store.liveness import close_dead_runs
    from dpt_core.store.plugin import current_store

    store = current_store()
    pid = os.fork()
    if pid == 0:  # the task process: its start written, its end spooled
        code = 1
        try:
            handle = dpt_core.get_tracker().start("in flight")
            current_store().spool.append([InvocationFinished(handle.uuid, "success", utcnow())])
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert dpt_env.scalar("SELECT status FROM invocations") == "running"
    [own] = [p for p in store.spool.files() if p.stem.endswith(f"-{pid}")]
    _move_aside(own, "r424242-")  # (what a replay in another process does first)
    host = hostname()
    assert store.spool.pids_waiting(host) == {str(pid)}

    assert close_dead_runs(store.engine, host, lambda: store.spool.pids_waiting(host)) == []
    assert dpt_env.scalar("SELECT status FROM invocations") == "running"
    assert store.replay() == 1  # the replay in flight ends, writing the end
    assert dpt_env.scalar("SELECT status FROM invocations") == "success"

    # without its events waiting anywhere, a dead process's run is closed as before
    gone = dpt_core.get_tracker().start("gone")
    assert dpt_core.flush()
    with dpt_env.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE invocations SET process = 'pid:999999999' WHERE uuid = '{gone.uuid}'"
        )
    assert store.spool.pids_waiting(host) == set()
    closed = close_dead_runs(store.engine, host, lambda: store.spool.pids_waiting(host))
    assert closed == [gone.uuid]


def test_a_running_run_whose_process_lives_is_left_alone(dpt_env, tmp_path):
    import signal

    proc = _dpt_run(tmp_path, "sleep", "60")
    assert _wait_for(dpt_env, "SELECT status FROM invocations", "running") == "running"
    with dpt_core.invocation("meanwhile"):
        pass
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'long'") == "running"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'long'") == "cancelled"


def test_doctor_closes_dead_local_runs_and_names_runs_of_other_hosts(dpt_env, tmp_path):
    import subprocess
    import sys

    from sqlalchemy import text

    tracker = dpt_core.get_tracker()
    gone = tracker.start("gone-process")
    elsewhere = tracker.start("other-host")
    with dpt_env.engine.begin() as conn:
        conn.execute(
            text("UPDATE invocations SET process = :p WHERE uuid = :u"),
            {"p": "pid:999999999", "u": gone.uuid},
        )
        conn.execute(
            text(
                "UPDATE invocations SET host = 'far-away-node', process = 'pid:1' WHERE uuid = :u"
            ),
            {"u": elsewhere.uuid},
        )
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    (check,) = [c for c in json.loads(result.stdout) if c["check"] == "running"]
    assert check["detail"].startswith("1 run(s) of this host closed as crashed")
    assert "1 on far-away-node" in check["advice"]
    statuses = dict(dpt_env.rows("SELECT job, status FROM invocations"))
    assert statuses == {"gone-process": "crashed", "other-host": "running"}


def test_a_process_that_exits_leaves_none_of_its_runs_running(dpt_env, tmp_path):
    import subprocess
    import sys

    script = (
        "import dpt_core\n"
        "t = dpt_core.get_tracker()\n"
        "t.start('forgotten')\n"
        "t.start('finished').finish('success')\n"
        "t.start('parent-for-others', environment=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    rows = {
        r.job: (r.status, r.error)
        for r in dpt_env.rows("SELECT job, status, error FROM invocations")
    }
    assert rows == {
        "forgotten": ("crashed", "the process exited without recording this run's end"),
        "finished": ("success", None),
        # recorded on behalf of another process: that one closes it, not this exit
        "parent-for-others": ("running", None),
    }


def test_a_late_closer_never_overwrites_the_real_end(dpt_backend, dpt_env):
    tracker = dpt_core.get_tracker()
    done = tracker.start("task", task="done")
    done.finish("success")
    tracker.attach(done.uuid).finish("crashed", error="swept", only_if_running=True)
    open_ = tracker.start("task", task="lost")
    tracker.attach(open_.uuid).finish("crashed", error="swept", only_if_running=True)
    rows = {
        r.task: (r.status, r.error)
        for r in dpt_env.rows("SELECT task, status, error FROM invocations")
    }
    assert rows == {"done": ("success", None), "lost": ("crashed", "swept")}


def test_a_detached_run_goes_on_elsewhere_and_is_not_closed_at_exit(dpt_env, tmp_path):
    import subprocess
    import sys

    script = (
        "import dpt_core\n"
        "dpt_core.get_tracker().start('deferred').detach()\n"
        "dpt_core.get_tracker().start('abandoned')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    rows = dict(dpt_env.rows("SELECT job, status FROM invocations"))
    assert rows == {"deferred": "running", "abandoned": "crashed"}
    with dpt_core.invocation("a-later-write"):  # its process is gone: still not crashed
        pass
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'deferred'") == "running"
    uuid = dpt_env.scalar("SELECT uuid FROM invocations WHERE job = 'deferred'")
    resumed = dpt_core.get_tracker().start("deferred", uuid=uuid)  # the resuming process
    own = dpt_env.scalar("SELECT process FROM invocations WHERE uuid = :u", u=uuid)
    from dpt_core.process import process_token

    assert own == process_token()
    resumed.finish("success")
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'deferred'") == "success"


def test_a_registered_secret_never_reaches_the_database(dpt_env):
    dpt_core.register_secret("s3kr1t-fetched-at-runtime")
    with (
        pytest.raises(RuntimeError),
        dpt_core.invocation(
            "login",
            command=["tool", "--as", "s3kr1t-fetched-at-runtime"],
            parameters={"note": "x s3kr1t-fetched-at-runtime"},
        ),
    ):
        raise RuntimeError("login s3kr1t-fetched-at-runtime refused")
    row = dpt_env.rows("SELECT command, parameters, error FROM invocations")[0]
    assert "s3kr1t" not in f"{row.command} {row.parameters} {row.error}"
    assert row.command.startswith("tool --as ") and row.error.startswith("RuntimeError: login ")


def test_dpt_run_records_where_it_ran_and_python_blocks_how_they_were_started(dpt_env, tmp_path):
    import subprocess
    import sys

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PWD": "/somewhere/stale"}
    subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "run", "--name", "here", "--", "true"],
        cwd=work,
        env=env,
        check=True,
        timeout=120,
    )
    script = tmp_path / "step.py"
    script.write_text("import dpt_core\nwith dpt_core.invocation('step'):\n    pass\n")
    subprocess.run(
        [sys.executable, str(script), "--night", "7"], cwd=work, env=env, check=True, timeout=120
    )
    rows = {r.job: r for r in dpt_env.rows("SELECT job, command, variables FROM invocations")}
    variables = rows["here"].variables
    variables = json.loads(variables) if isinstance(variables, str) else variables
    assert variables["PWD"] == str(work)
    assert rows["step"].command.split(" ")[1:] == [str(script), "--night", "7"]
    variables = rows["step"].variables
    variables = json.loads(variables) if isinstance(variables, str) else variables
    assert variables["PWD"] == str(work)


def test_a_run_never_takes_another_orchestrators_run_context_from_the_process(dpt_env, monkeypatch):
    """dag.test() leaves AIRFLOW_CTX_* in os.environ; a Dagster materialisation recorded
    later in the same process is not that Airflow try (the cross-orchestrator example)."""
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "left_behind")
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0000-left-behind")
    tracker = dpt_core.get_tracker()
    for orchestrator in ("dagster", "airflow", "prefect", "python"):
        tracker.start(f"job-{orchestrator}", orchestrator=orchestrator).finish("success")
    rows = {r.job: r.variables for r in dpt_env.rows("SELECT job, variables FROM invocations")}
    kept = {
        job: sorted(
            k
            for k in (json.loads(v) if isinstance(v, str) else v)
            if k in ("AIRFLOW_CTX_DAG_ID", "PREFECT__FLOW_RUN_ID")
        )
        for job, v in rows.items()
    }
    assert kept == {
        "job-dagster": [],
        "job-airflow": ["AIRFLOW_CTX_DAG_ID"],
        "job-prefect": ["PREFECT__FLOW_RUN_ID"],
        "job-python": ["AIRFLOW_CTX_DAG_ID", "PREFECT__FLOW_RUN_ID"],
    }
