"""Dialect-aware bulk primitives: insert-or-ignore under a unique constraint, chunked lookups.

Every get-or-create in dpt goes through :func:`insert_ignore` followed by a
select, so any number of concurrent writers converge on one row per identity
and none fails on a race.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, Engine, String, Table, any_, bindparam, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from dpt_core.store.engine import WRITE_OPTION

T = TypeVar("T")

#: Rows per multi-row INSERT; SQLite allows 32766 bound parameters, so keep rows * columns under it.
CHUNK = 1000
#: From this many rows on, PostgreSQL inserts go through COPY into a staging table.
COPY_THRESHOLD = 500


#: Transient conflicts worth retrying the whole transaction for (deadlocks, serialisation, busy).
RETRYABLE = ("deadlock", "serializ", "database is locked", "lock wait timeout", "try restarting")


def in_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = 5,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``work`` in one transaction, retrying it on deadlocks and lock timeouts."""
    for attempt in range(attempts):
        try:
            with engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            message = str(exc.orig).lower()
            if attempt + 1 == attempts or not any(m in message for m in RETRYABLE):
                raise
            if on_retry is not None:
                on_retry()
            time.sleep(0.05 * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """INSERT ``rows``, silently skipping any that collide on the unique ``keys``."""
    if not rows:
        return
    # The same lock order in every writer turns most would-be deadlocks into waits.
    rows = sorted(rows, key=lambda row: tuple(str(row[k]) for k in keys))
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _copy_insert_ignore(conn, table, rows, keys)
        return
    stmt: Any
    if name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif name in ("mysql", "mariadb"):
        base = mysql.insert(table)
        first_key = keys[0]
        stmt = base.on_duplicate_key_update({first_key: base.inserted[first_key]})
    else:  # pragma: no cover - validate_url rejects other dialects
        raise NotImplementedError(name)
    if name == "postgresql":
        # With RETURNING, SQLAlchemy's "insertmanyvalues" sends batches of rows as one
        # multi-row INSERT from a cached compilation; without it psycopg sends a statement
        # per row. (SQLite executemany is in-process; PyMySQL rewrites it to multi-row.)
        stmt = stmt.returning(table.c[keys[0]])
    width = max(1, len(rows[0]))
    for part in chunks(rows, max(1, min(CHUNK, 30000 // width))):
        conn.execute(stmt, list(part))


def _copy_value(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _copy_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """PostgreSQL bulk path: COPY into a temporary staging table, then one INSERT ... SELECT."""
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    quoted = ", ".join(f'"{c}"' for c in columns)
    stage = f"_dpt_stage_{table.name}"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {quoted} FROM "{table.name}" WITH NO DATA'
        )
        cursor.execute(f"TRUNCATE {stage}")
        with cursor.copy(f"COPY {stage} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([_copy_value(row[c], c in json_columns) for c in columns])
        conflict = ", ".join(f'"{k}"' for k in keys)
        cursor.execute(
            f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM {stage} '
            f"ON CONFLICT ({conflict}) DO NOTHING"
        )
        cursor.execute(f"TRUNCATE {stage}")
    finally:
        cursor.close()


def select_in(
    conn: Connection,
    columns: Sequence[Any],
    key_column: Any,
    values: Iterable[Any],
    *extra_where: Any,
) -> list[Any]:
    """``SELECT columns WHERE key_column IN values`` in chunks; returns all rows."""
    values = list(dict.fromkeys(values))
    rows: list[Any] = []
    if conn.dialect.name == "postgresql" and values:
        # One array parameter instead of thousands of placeholders.
        array_type = postgresql.ARRAY(
            key_column.type if not isinstance(key_column.type, String) else String()
        )
        param = bindparam("dpt_values", value=values, type_=array_type)
        return list(
            conn.execute(select(*columns).where(key_column == any_(param), *extra_where)).all()
        )
    for part in chunks(values):
        rows.extend(conn.execute(select(*columns).where(key_column.in_(part), *extra_where)).all())
    return rows
