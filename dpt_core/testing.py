"""Pytest fixtures for dpt and for projects that test their own dpt plugins.

Enable with ``pytest_plugins = ["dpt_core.testing"]``. Fixtures:

- ``dpt_backend`` (parametrised: sqlite, postgresql, mysql): the URL of a fresh,
  migrated database that is dropped after the test.
- ``dpt_sqlite``: the same, SQLite only.
- ``dpt_env``: a fresh database plus ``DPT_*`` variables pointing every dpt
  directory into ``tmp_path``; yields a :class:`DptTestEnv`.

Helper: :func:`empty_tracking` deletes every recorded run, product, version and edge
(as another process emptying the database would).

Server URLs come from ``DPT_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and ``DPT_TEST_MYSQL_URL``
(default ``mysql://root@127.0.0.1:3306/test``). A missing server skips its
tests with the reason, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "DPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("DPT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mysql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unreachable(url: str) -> str | None:
    from dpt_core.store.engine import make_engine, safe_url

    if not url.startswith(("sqlite", "postgresql", "mysql", "mariadb")):  # (redis://, amqp://)
        import socket
        from urllib.parse import urlsplit

        where = urlsplit(url)
        try:
            socket.create_connection((where.hostname or "127.0.0.1", where.port or 0), 3).close()
        except OSError as exc:
            return f"{where.scheme}://{where.hostname}:{where.port} is not reachable ({exc})"
        return None
    try:
        engine = make_engine(url, connect_timeout=3)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{safe_url(url)} is not reachable ({type(exc).__name__}); set DPT_TEST_*_URL"
    return None


_reachability: dict[str, str | None] = {}


def require_server(url: str) -> None:
    """Skip (locally) or fail (under CI=true) when the server at ``url`` is down: a SQL
    database answering ``SELECT 1``, or any other server (``redis://``) taking a TCP
    connection."""
    if url not in _reachability:
        _reachability[url] = _unreachable(url)
    reason = _reachability[url]
    if reason:
        if _in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def server_url(base: str, database: str) -> str:
    return make_url(base).set(database=database).render_as_string(hide_password=False)


#: The tables a run's recording fills, children first (the order to empty them in).
TRACKING_TABLES = (
    "lineage_edges",
    "invocation_inputs",
    "data_product_versions",
    "data_products",
    "invocations",
)


def empty_tracking(engine: Engine) -> None:
    """Delete every recorded run, product, version and edge (environments stay), as
    another process emptying the database would."""
    with engine.begin() as conn:
        for table in TRACKING_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


def _upgrade(url: str) -> None:
    from dpt_core.store import migrations
    from dpt_core.store.engine import make_engine

    engine = make_engine(url)
    migrations.upgrade(engine)
    engine.dispose()


@dataclass
class DptTestEnv:
    """A dpt set-up isolated in a temporary directory."""

    url: str
    backend: str
    path: Path

    @property
    def engine(self) -> Engine:
        from dpt_core.store.plugin import current_store

        return current_store().engine

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def environ(self) -> dict[str, str]:
        """Variables a subprocess needs to record into this set-up."""
        return {k: v for k, v in os.environ.items() if k.startswith(("DPT_", "XDG_"))}


def _fresh_server_database(kind: str) -> Iterator[str]:
    base = POSTGRES_URL if kind == "postgresql" else MYSQL_URL
    require_server(base)
    name = f"dpt_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(base).set(
            drivername="postgresql+psycopg" if kind == "postgresql" else "mysql+pymysql"
        ),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(
            text(f"CREATE DATABASE {name}" + (" CHARACTER SET utf8mb4" if kind == "mysql" else ""))
        )
    url = server_url(base, name)
    try:
        _upgrade(url)
        yield url
    finally:
        from dpt_core.store.plugin import reset_store

        reset_store()
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


try:
    from pytest_postgresql import factories as _pg_factories
except ImportError:  # pragma: no cover - pytest-postgresql is in the dev extra
    _pg_factories = None  # type: ignore[assignment]
else:
    _pg = make_url(POSTGRES_URL)
    #: pytest-postgresql against the running server (its ``proc`` fixture cannot run as root).
    dpt_postgresql_noproc = _pg_factories.postgresql_noproc(
        host=_pg.host or "127.0.0.1",
        port=_pg.port or 5432,
        user=_pg.username or "postgres",
        password=_pg.password or "",
        dbname=f"dpt_test_{os.getpid()}",  # unique per session: test runs may share a server
    )
    #: A fresh PostgreSQL database per test, dropped afterwards by pytest-postgresql's janitor.
    dpt_postgresql = _pg_factories.postgresql("dpt_postgresql_noproc")


def _postgresql_database(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server(POSTGRES_URL)
    if _pg_factories is None:  # pragma: no cover
        yield from _fresh_server_database("postgresql")
        return
    connection = request.getfixturevalue("dpt_postgresql")
    url = server_url(POSTGRES_URL, connection.info.dbname)
    _upgrade(url)
    try:
        yield url
    finally:
        from dpt_core.store.plugin import reset_store

        reset_store()


def make_database(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None
) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'dpt.sqlite3'}"
        _upgrade(url)
        yield url
    elif kind == "postgresql" and request is not None:
        yield from _postgresql_database(request)
    else:
        yield from _fresh_server_database(kind)


@pytest.fixture(params=BACKENDS)
def dpt_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh migrated database on each backend (sqlite, postgresql, mysql)."""
    yield from make_database(request.param, tmp_path, request)


@pytest.fixture
def dpt_sqlite(tmp_path: Path) -> Iterator[str]:
    yield from make_database("sqlite", tmp_path)


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> None:
    """Point every dpt setting and directory at ``tmp_path`` and ``url``."""
    import dpt_core

    for key in list(os.environ):
        if key.startswith("DPT_") and not key.startswith("DPT_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DPT_DATABASE_URL", url)
    monkeypatch.setenv("DPT_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("DPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DPT_REDACTION_KEY", "dpt-test-key")
    monkeypatch.setenv("DPT_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "no-config.toml").write_text("")
    for xdg in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(xdg, str(tmp_path / xdg.lower()))
    dpt_core.plugin_api.reset()


@pytest.fixture
def dpt_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[DptTestEnv]:
    """dpt isolated in ``tmp_path`` on SQLite (or the backend of ``dpt_backend`` if the test uses it)."""
    import dpt_core

    url = (
        request.getfixturevalue("dpt_backend")
        if "dpt_backend" in request.fixturenames
        else request.getfixturevalue("dpt_sqlite")
    )
    backend = make_url(url).get_backend_name()
    isolate(monkeypatch, tmp_path, url)
    yield DptTestEnv(url=url, backend="mysql" if backend == "mariadb" else backend, path=tmp_path)
    dpt_core.plugin_api.reset()
