"""Engines for SQLite, PostgreSQL and MariaDB/MySQL, and the schema gate.

Every engine is made by :func:`make_engine`: it validates the URL, picks the
project's drivers (psycopg 3, PyMySQL), applies connect and statement timeouts
and, on SQLite, WAL with a busy timeout and ``BEGIN IMMEDIATE`` so concurrent
writers queue instead of failing with "database is locked". :func:`ensure_schema`
upgrades the SQLite default in place and refuses a server database that is
behind, naming ``dpt db upgrade``.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from dpt_core.errors import ConfigError, DatabaseUnavailable, MigrationRequired

_DRIVERS = {
    "postgresql": ("postgresql+psycopg", "postgres"),
    "postgres": ("postgresql+psycopg", "postgres"),
    "mysql": ("mysql+pymysql", "mysql"),
    "mariadb": ("mariadb+pymysql", "mysql"),
}

SQLITE_BUSY_TIMEOUT_MS = 30_000


def safe_url(url: str | URL) -> str:
    """The URL as text with any password hidden: the only form dpt ever prints."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _without_password(str(url))


def _without_password(url: str) -> str:
    """``url`` with anything between ``scheme://user:`` and ``@`` masked (for unparseable URLs)."""
    import re

    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def validate_url(url: str, source: str = "DPT_DATABASE_URL") -> URL:
    """Parse ``url`` into a SQLAlchemy URL with the project's drivers, or raise ConfigError."""
    example = "sqlite:////abs/path.sqlite3 or postgresql://user@host/db or mysql://user@host/db"
    if not url or not url.strip():
        raise ConfigError(f"{source} is empty: set it to a database URL such as {example}")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        detail = f" ({exc})" if isinstance(exc, ValueError) else ""
        raise ConfigError(
            f"{source}={_without_password(url)} is not a database URL{detail}: use one such as {example}"
        ) from None
    backend = parsed.get_backend_name()
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername][0])
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(
            f"{source}={safe_url(parsed)} uses '{parsed.drivername}', which dpt does not support: "
            "use sqlite, postgresql or mysql/mariadb"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"{source}={safe_url(parsed)} names no database file: use sqlite:////abs/path.sqlite3"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        extra = "postgres" if backend == "postgresql" else "mysql"
        raise ConfigError(
            f"{source}={safe_url(parsed)} needs the '{parsed.drivername}' driver: "
            f"pip install 'data-product-tracker[{extra}]'"
        ) from None
    except ImportError as exc:
        extra = "postgres" if backend == "postgresql" else "mysql"
        raise ConfigError(
            f"{source}={safe_url(parsed)} needs a database driver ({exc.name}): "
            f"pip install 'data-product-tracker[{extra}]'"
        ) from None
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns. The spool deletes a file once its events
    # are committed; with NORMAL, WAL mode may roll back the last commits after a power
    # loss or a kernel crash, and those events would be gone from both (~0.2 ms of fsync
    # a commit here, on the writer's thread in background mode).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # A deferred transaction that later writes can fail at once with SQLITE_BUSY when
    # another writer got there first; a writer takes the write lock up front instead, and
    # waits for it (busy timeout). Readers stay deferred so they never block writers.
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


#: Execution option marking a connection whose transactions write (see :func:`_sqlite_begin`).
WRITE_OPTION = "dpt_write"


def load_driver(url: str) -> None:
    """Import the database driver ``url`` needs (what :func:`make_engine` would import),
    without connecting: a caller timing its first connection leaves the import out."""
    with contextlib.suppress(Exception):  # make_engine reports a bad URL or a missing driver
        validate_url(url).get_dialect().import_dbapi()


def make_engine(
    url: str | URL,
    *,
    connect_timeout: float = 10.0,
    statement_timeout: float = 10.0,
    source: str = "DPT_DATABASE_URL",
    **kwargs: Any,
) -> Engine:
    """An Engine for ``url`` with dpt's timeouts and per-dialect settings."""
    parsed = url if isinstance(url, URL) else validate_url(url, source)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {"pool_pre_ping": True, **kwargs}
    if backend == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
        connect_args["check_same_thread"] = False
        options.pop("pool_pre_ping")
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
        # libpq options given in the URL (``?options=-c synchronous_commit=off``) are kept,
        # after dpt's own: connect_args would otherwise replace them.
        own = f"-c statement_timeout={int(statement_timeout * 1000)}"
        given = parsed.query.get("options")
        given = given[-1] if isinstance(given, tuple) else given
        connect_args["options"] = f"{own} {given}" if given else own
        connect_args["application_name"] = "dpt"
    else:
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
        connect_args["read_timeout"] = max(1, int(statement_timeout))
        connect_args["write_timeout"] = max(1, int(statement_timeout))
        connect_args["charset"] = "utf8mb4"
    engine = create_engine(parsed, connect_args=connect_args, **options)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
            ).first()
        else:
            from sqlalchemy import inspect

            exists = inspect(conn).has_table("alembic_version")  # type: ignore[assignment]
        if not exists:
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


_checked: set[str] = set()
_check_lock = threading.Lock()


def ensure_schema(engine: Engine, *, auto_upgrade: bool | None = None) -> None:
    """Make sure the schema is at the head this code expects (once per engine URL per process).

    SQLite upgrades itself (``auto_upgrade`` defaults to True there); a server database
    that is behind raises :class:`MigrationRequired` naming ``dpt db upgrade``.
    """
    from dpt_core.store.migrations import HEAD, KNOWN_REVISIONS, upgrade

    key = engine.url.render_as_string(hide_password=False)
    if key in _checked:
        return
    with _check_lock:
        if key in _checked:
            return
        if auto_upgrade is None:
            auto_upgrade = engine.dialect.name == "sqlite"
        where = safe_url(engine.url)
        try:
            current = _current_revision(engine)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(
                f"cannot reach the database {where}: {describe_db_error(exc)}"
            ) from exc
        if current != HEAD:
            if current is not None and current not in KNOWN_REVISIONS:
                raise MigrationRequired(
                    f"the database {where} has schema revision {current}, newer than this dpt "
                    f"understands (head {HEAD}): upgrade data-product-tracker"
                )
            if not auto_upgrade:
                state = "has no dpt schema" if current is None else f"is at revision {current}"
                raise MigrationRequired(
                    f"the database {where} {state}, this dpt needs {HEAD}: run 'dpt db upgrade'"
                )
            upgrade(engine)
        _checked.add(key)


def forget_schema_checks() -> None:
    _checked.clear()


def describe_db_error(exc: BaseException) -> str:
    """One line for a database error, without SQL, parameters or passwords."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return message[:300]


def is_connectivity_error(exc: BaseException) -> bool:
    """True for errors that mean "the database is not there right now" (spool and retry)."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError | PoolTimeout | DatabaseUnavailable):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, ConnectionError | OSError)
