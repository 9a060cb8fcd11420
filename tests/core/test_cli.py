"""The dpt command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpt_core.spool import Spool


def dpt(*args: str, env=None, cwd=None, check=None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, **(env or {}))
    environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=120,
    )
    if check is not None:
        assert result.returncode == check, result.stderr + result.stdout
    return result


def one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_records_command_inputs_outputs_and_exit_code(dpt_env, tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    script = "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())"
    dpt(
        "run",
        "--name",
        "upper",
        "-i",
        "in.txt",
        "-o",
        "out.txt",
        "--",
        sys.executable,
        "-c",
        script,
        "in.txt",
        "out.txt",
        cwd=tmp_path,
        check=0,
    )
    assert (tmp_path / "out.txt").read_text() == "HELLO"
    runs = json.loads(dpt("runs", "--json", check=0).stdout)
    assert (
        len(runs) == 1
        and runs[0]["job"] == "upper"
        and runs[0]["status"] == "success"
        and runs[0]["orchestrator"] == "cli"
    )
    shown = json.loads(dpt("show", str(tmp_path / "out.txt"), "--json", check=0).stdout)
    (version,) = shown["versions"]
    assert version["produced_by"]["uuid"] == runs[0]["uuid"]
    assert [p["uri"] for p in version["parents"]] == [(tmp_path / "in.txt").as_uri()]
    assert version["content_hash"].startswith("xxh3_128:")


def test_run_returns_the_command_exit_code_and_records_failure(dpt_env, tmp_path):
    result = dpt("run", "--", sys.executable, "-c", "import sys; sys.exit(3)", cwd=tmp_path)
    assert result.returncode == 3
    (run,) = json.loads(dpt("runs", "--json", check=0).stdout)
    assert run["status"] == "failed" and run["error"] == "exit code 3"


def test_track_inside_run_attaches_to_the_run(dpt_env, tmp_path):
    inner = f"{sys.executable} -m dpt_core.cli track made.txt"
    dpt(
        "run",
        "--name",
        "outer",
        "--",
        "sh",
        "-c",
        f"echo x > made.txt && {inner}",
        cwd=tmp_path,
        check=0,
    )
    runs = json.loads(dpt("runs", "--json", check=0).stdout)
    assert [r["job"] for r in runs] == ["outer"]
    shown = json.loads(dpt("show", str(tmp_path / "made.txt"), "--json", check=0).stdout)
    assert shown["versions"][0]["produced_by"]["job"] == "outer"


def test_run_with_dead_database_still_runs_the_command_and_spools(dpt_env, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the database's directory should be")
    away = {"DPT_DATABASE_URL": f"sqlite:///{blocker}/away.sqlite3"}
    result = dpt(
        "run", "-o", "o.txt", "--", "sh", "-c", "echo ok > o.txt; exit 4", cwd=tmp_path, env=away
    )
    assert result.returncode == 4
    assert (tmp_path / "o.txt").read_text() == "ok\n"
    assert "spool" in result.stderr and "Traceback" not in result.stderr
    assert Spool(tmp_path / "spool").status().events == 3  # start, write, finish
    status = json.loads(dpt("spool", "status", "--json", check=0).stdout)
    assert status["events"] == 3
    assert [(t["database"], t["events"], t["current"]) for t in status["databases"]] == [
        (f"sqlite:///{blocker}/away.sqlite3", 3, False)
    ]
    # The configured database is another one: its replay leaves them where they belong.
    other = dpt("spool", "replay", "--json", check=0)
    assert json.loads(other.stdout) == {"replayed": 0}
    assert "3 event(s) wait for other databases" in other.stderr
    assert json.loads(dpt("runs", "--json", check=0).stdout) == []

    blocker.unlink()  # the database is back
    replayed = dpt("spool", "replay", "--json", check=0, env=away)
    assert json.loads(replayed.stdout) == {"replayed": 3}
    (run,) = json.loads(dpt("runs", "--json", check=0, env=away).stdout)
    assert run["status"] == "failed" and run["error"] == "exit code 4"
    assert json.loads(dpt("spool", "replay", "--json", check=0, env=away).stdout) == {"replayed": 0}


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DPT_DATABASE_URL": "not a url"}, "DPT_DATABASE_URL"),
        ({"DPT_DATABASE_URL": "oracle://x/y"}, "does not support"),
        ({"DPT_HASH": "md4"}, "DPT_HASH"),
        ({"DPT_STRICT": "perhaps"}, "DPT_STRICT"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(dpt_env, env, needle):
    result = dpt("runs", env=env)
    assert result.returncode == 2
    assert needle in one_line_error(result)


def test_corrupt_config_file_gives_one_line_and_exit_2(dpt_env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("database_url = [unclosed\n")
    result = dpt("stats", env={"DPT_CONFIG": str(bad)})
    assert result.returncode == 2 and str(bad) in one_line_error(result)
    bad.write_text('colour = "blue"\n')
    result = dpt("stats", env={"DPT_CONFIG": str(bad)})
    assert result.returncode == 2 and "unknown key" in one_line_error(result)


def test_config_file_supplies_the_database_url(dpt_env, tmp_path, monkeypatch):
    cfg = tmp_path / "dpt.toml"
    other = tmp_path / "other.sqlite3"
    cfg.write_text(f'[dpt]\ndatabase_url = "sqlite:///{other}"\n')
    monkeypatch.delenv("DPT_DATABASE_URL")
    dpt("track", "--meta", "k=v", str(cfg), env={"DPT_CONFIG": str(cfg)}, check=0)
    assert other.exists()
    assert (
        json.loads(dpt("stats", "--json", env={"DPT_CONFIG": str(cfg)}, check=0).stdout)["versions"]
        == 1
    )


def test_missing_input_and_unknown_target_are_clear_errors(dpt_env, tmp_path):
    result = dpt("run", "-i", "nope.fits", "--", "true", cwd=tmp_path)
    assert result.returncode == 2 and "nope.fits does not exist" in one_line_error(result)
    result = dpt("show", str(tmp_path / "never"))
    assert result.returncode == 2 and "neither a recorded product nor a run" in one_line_error(
        result
    )


def test_numbers_past_the_databases_integers_are_clear_errors_or_no_limit(
    dpt_backend, dpt_env, tmp_path
):
    (tmp_path / "a.txt").write_text("a")
    dpt("run", "-i", "a.txt", "-o", "b.txt", "--", "cp", "a.txt", "b.txt", cwd=tmp_path, check=0)
    huge = "9" * 20  # past 2**64: SQLite raised OverflowError, a traceback for the user
    for args, message in [
        (("show", huge), "neither a recorded product nor a run id"),
        (("env", "diff", huge, "1"), f"no run '{huge}' is recorded"),
        (("show", "\u00b2"), "neither a recorded product nor a run id"),  # a digit to isdigit()
        (("show", "9" * 5000), "neither a recorded product nor a run id"),  # past int()'s limit
    ]:
        result = dpt(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in one_line_error(result), args
    whole = json.loads(dpt("lineage", "b.txt", "--json", cwd=tmp_path, check=0).stdout)
    deep = dpt("lineage", "b.txt", "--depth", huge, "--json", cwd=tmp_path, check=0)
    assert json.loads(deep.stdout)["nodes"] == whole["nodes"] and len(whole["nodes"]) == 2


def test_an_age_past_the_calendar_is_a_one_line_error(dpt_env, tmp_path):
    result = dpt("export", "--format", "openlineage", "--since", "99999999999d", cwd=tmp_path)
    assert result.returncode == 2 and "outside the calendar" in one_line_error(result)


def test_server_database_behind_names_dpt_db_upgrade(tmp_path, dpt_env):
    from sqlalchemy import create_engine, text

    from dpt_core.testing import POSTGRES_URL, require_server, server_url

    require_server(POSTGRES_URL)
    admin = create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    name = "dpt_t_behind"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        url = server_url(POSTGRES_URL, name)
        result = dpt("runs", env={"DPT_DATABASE_URL": url})
        assert result.returncode == 2 and "dpt db upgrade" in one_line_error(result)
        assert "current:" in dpt("db", "current", env={"DPT_DATABASE_URL": url}, check=0).stdout
        dpt("db", "upgrade", env={"DPT_DATABASE_URL": url}, check=0)
        dpt("db", "check", env={"DPT_DATABASE_URL": url}, check=0)
        assert (
            json.loads(dpt("runs", "--json", env={"DPT_DATABASE_URL": url}, check=0).stdout) == []
        )
        dpt("db", "downgrade", "base", env={"DPT_DATABASE_URL": url}, check=0)
        result = dpt("db", "check", env={"DPT_DATABASE_URL": url})
        assert result.returncode == 1
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_newer_schema_is_refused(dpt_env):
    from sqlalchemy import create_engine, text

    engine = create_engine(dpt_env.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = dpt("runs")
    assert result.returncode == 2 and "newer than this dpt" in one_line_error(result)


def test_a_database_error_is_one_line_and_exit_1(dpt_env):
    # (dpt loads SQLAlchemy only for the commands that need it: the error is still told)
    from sqlalchemy import create_engine, text

    engine = create_engine(dpt_env.url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE invocation_tags"))
    engine.dispose()
    result = dpt("runs", "--tag", "a=b")
    assert result.returncode == 1, result.stderr
    line = one_line_error(result)
    assert line.startswith("Error: database error:") and "invocation_tags" in line


def test_each_built_in_command_is_loaded_from_the_module_the_cli_names():
    import click

    from dpt_core import cli

    for module in set(cli.BUILTIN_COMMANDS.values()):
        group = click.Group()
        __import__(f"dpt_core.cli.{module}", fromlist=["register"]).register(group)
        named = {name for name, where in cli.BUILTIN_COMMANDS.items() if where == module}
        assert set(group.commands) == named, module
    assert cli.cli.list_commands(click.Context(cli.cli)) == sorted(cli.BUILTIN_COMMANDS)


def test_the_progress_bar_shows_on_a_terminal_for_many_outputs(dpt_env, tmp_path):
    import pty

    from dpt_core.tracker import WRITE_CHUNK

    listing = tmp_path / "outputs.txt"
    names = [f"f{i}" for i in range(WRITE_CHUNK + 1)]
    for name in names:
        (tmp_path / name).write_text(name)
    listing.write_text("\n".join(names) + "\n")
    argv = ["run", "--name", "many", "--outputs-from", str(listing), "--", "true"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: dpt run with a terminal as stdout and stderr
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "dpt_core.cli", *argv], os.environ)
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    assert b"dpt: recording outputs" in shown
    plain = dpt(*argv, cwd=tmp_path, check=0)  # not a terminal: no bar
    assert "recording outputs" not in plain.stderr
    from sqlalchemy import create_engine, text

    engine = create_engine(dpt_env.url)
    with engine.connect() as conn:
        written = conn.execute(
            text(
                "SELECT count(DISTINCT v.product_id) FROM data_product_versions v"
                " JOIN invocations i ON i.id = v.produced_by_id WHERE i.job = 'many'"
            )
        ).scalar_one()
    engine.dispose()
    assert written == len(names)


def test_stats_json_counts(dpt_env, tmp_path):
    (tmp_path / "a").write_text("a")
    dpt("track", str(tmp_path / "a"), check=0)
    stats = json.loads(dpt("stats", "--json", check=0).stdout)
    assert {
        k: stats[k] for k in ("invocations", "environments", "products", "versions", "edges")
    } == {
        "invocations": 1,
        "environments": 1,
        "products": 1,
        "versions": 1,
        "edges": 0,
    }


def test_third_party_plugin_from_entry_point_adds_a_stored_facet(dpt_env, tmp_path):
    site = tmp_path / "site"
    (site / "telescope_facet-1.0.dist-info").mkdir(parents=True)
    (site / "telescope_facet-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: telescope-facet\nVersion: 1.0\n"
    )
    (site / "telescope_facet-1.0.dist-info" / "entry_points.txt").write_text(
        "[dpt]\ntelescope = telescope_facet\n"
    )
    (site / "telescope_facet.py").write_text(
        textwrap.dedent(
            """
            from dpt_core import hookimpl

            @hookimpl
            def dpt_collect_environment():
                return {"telescope": {"site": "Cerro Pachon", "camera": "LSSTCam"}}
            """
        )
    )
    repo = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join([str(site), repo])}
    listing = json.loads(dpt("plugins", "--json", env=env, check=0).stdout)
    names = {p["name"]: p for p in listing}
    assert "dpt_collect_environment" in names["telescope"]["hooks"]
    assert names["telescope"]["distribution"] == "telescope-facet 1.0"
    assert names["dpt.store"]["builtin"] and "dpt_invocation_started" in names["dpt.store"]["hooks"]
    (tmp_path / "x").write_text("x")
    dpt("track", str(tmp_path / "x"), env=env, check=0)
    facets = dpt_env.scalar("SELECT facets FROM environments")
    facets = json.loads(facets) if isinstance(facets, str) else facets
    assert facets["telescope"] == {"site": "Cerro Pachon", "camera": "LSSTCam"}
