"""Fixtures and helpers shared by the reliability and security suite.

Everything here talks to real things: a PostgreSQL server (``DPT_TEST_POSTGRES_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``), SQLite files, the
``dpt`` command run as a subprocess, and :class:`faultproxy.FaultProxy` between
dpt and the server when a test needs the network to fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import dpt_core
from dpt_core.testing import POSTGRES_URL, DptTestEnv, isolate, make_database, require_server

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
#: A hang is a failure, not a slow test: generous next to the 1-2 s timeouts the tests set.
HANG = 90


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def dpt(
    *args: str | bytes,
    env: dict[str, str] | None = None,
    cwd: Any = None,
    check: int | None = None,
    timeout: float = HANG,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dpt_core.cli ARGS`` with the test's ``DPT_*`` settings."""
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=subprocess_env(env),
        cwd=cwd,
        timeout=timeout,
    )
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stderr, result.stdout)
    return result


def dpt_json(*args: str, env: dict[str, str] | None = None, cwd: Any = None) -> Any:
    return json.loads(dpt(*args, "--json", env=env, cwd=cwd, check=0).stdout)


def cli(*args: str, env: dict[str, str | None] | None = None, check: int | None = None) -> Any:
    """Run the ``dpt`` command in this process (click's CliRunner): fast, same code path.

    Settings are re-read for the call (``env`` applies only during it). An exception
    escaping the command -- a traceback for a user -- fails the test with that traceback.
    """
    import traceback

    from click.testing import CliRunner

    from dpt_core.cli import build_cli
    from dpt_core.store.engine import forget_schema_checks

    dpt_core.plugin_api.reset()
    forget_schema_checks()  # a real dpt command is a new process: it checks the schema again
    try:
        result = CliRunner().invoke(build_cli(), list(args), env=env, catch_exceptions=True)
    finally:
        dpt_core.plugin_api.reset()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"dpt {' '.join(args)[:200]} raised (a traceback for a user):\n"
            + "".join(traceback.format_exception(*result.exc_info))
        )
    if check is not None:
        assert result.exit_code == check, (result.exit_code, result.stderr, result.stdout)
    return result


def cli_json(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return json.loads(cli(*args, "--json", env=env, check=0).stdout)


def one_line_error(result: Any) -> str:
    """The single non-empty stderr line of a command (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def worker(
    mode: str, spec: dict[str, Any], env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``worker.py MODE SPEC`` (see that module) with the test's settings."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(env),
        **popen,
    )


def facts(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def pg_admin() -> Any:
    return create_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (skipped when the server is down, failed under CI)."""
    require_server(POSTGRES_URL)
    yield from make_database("postgresql", tmp_path, request)


@pytest.fixture
def pg_env(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DptTestEnv]:
    """dpt isolated in ``tmp_path``, recording into a fresh PostgreSQL database."""
    isolate(monkeypatch, tmp_path, pg_url)
    yield DptTestEnv(url=pg_url, backend="postgresql", path=tmp_path)
    dpt_core.plugin_api.reset()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[DptTestEnv]:
    """dpt isolated in ``tmp_path`` on SQLite, then on PostgreSQL."""
    if request.param == "postgresql":
        require_server(POSTGRES_URL)
    database = make_database(request.param, tmp_path, request)
    url = next(database)
    isolate(monkeypatch, tmp_path, url)
    yield DptTestEnv(url=url, backend=request.param, path=tmp_path)
    dpt_core.plugin_api.reset()
    database.close()


@pytest.fixture
def proxy() -> Iterator[Any]:
    """A :class:`faultproxy.FaultProxy` in front of the PostgreSQL server."""
    from faultproxy import FaultProxy

    require_server(POSTGRES_URL)
    url = make_url(POSTGRES_URL)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def direct_rows(url: str, sql: str, **params: Any) -> list[Any]:
    """Rows read over a connection of the test's own (not dpt's engine)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def direct_scalar(url: str, sql: str, **params: Any) -> Any:
    rows = direct_rows(url, sql, **params)
    return rows[0][0] if rows else None


COUNTED_TABLES = (
    "environments",
    "distributions",
    "env_variables",
    "environment_distributions",
    "environment_variables",
    "invocations",
    "data_products",
    "data_product_versions",
    "invocation_inputs",
    "lineage_edges",
)


def table_counts(url: str) -> dict[str, int]:
    return {t: direct_scalar(url, f"SELECT COUNT(*) FROM {t}") for t in COUNTED_TABLES}
