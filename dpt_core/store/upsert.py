"""Dialect-aware bulk primitives: insert-or-ignore under a unique constraint, chunked lookups.

Every get-or-create in dpt goes through :func:`insert_ignore` followed by a
select, so any number of concurrent writers converge on one row per identity
and none fails on a race.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    select,
)
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
    """Run ``work`` in one transaction, retrying it on deadlocks and lock timeouts, and
    once on a fresh connection when the pooled one turns out to be dead (a restarted
    server, a dropped idle connection)."""
    fresh_connection_tried = False
    attempt = 0
    while True:
        try:
            with engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            if exc.connection_invalidated and not fresh_connection_tried:
                # The pool has discarded every connection of the dead server's generation.
                # Safe even if the commit itself was cut: recording is idempotent.
                fresh_connection_tried = True
                if on_retry is not None:
                    on_retry()
                continue
            message = str(exc.orig).lower()
            if attempt + 1 == attempts or not any(m in message for m in RETRYABLE):
                raise
            if on_retry is not None:
                on_retry()
            time.sleep(0.05 * (2**attempt) * (0.5 + random.random()))
            attempt += 1


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.lru_cache(maxsize=256)
def _insert_statement(
    dialect: str, table: Table, keys: tuple[str, ...], returning: tuple[Any, ...]
) -> Any:
    """The insert-or-ignore statement for ``table``, built once per shape.

    Building a Core statement (and its cache key) costs more than executing a small
    one on SQLite: the hot paths reuse one object per shape instead.
    """
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect in ("mysql", "mariadb"):
        base = mysql.insert(table)
        stmt = base.on_duplicate_key_update({keys[0]: base.inserted[keys[0]]})
    else:  # pragma: no cover - validate_url rejects other dialects
        raise NotImplementedError(dialect)
    return stmt.returning(*returning) if returning else stmt


def _execute_in_chunks(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> list[Any]:
    if len(rows) == 1:  # the common case: a plain execute, not the executemany machinery
        result = conn.execute(stmt, rows[0])
        return list(result.all()) if result.returns_rows else []
    width = max(1, len(rows[0]))
    returned: list[Any] = []
    for part in chunks(rows, max(1, min(CHUNK, 30000 // width))):
        result = conn.execute(stmt, list(part))
        if result.returns_rows:
            returned.extend(result.all())
    return returned


def _lock_order(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` sorted by their unique key: the same lock order in every writer turns most
    would-be deadlocks into waits. (Key columns are NOT NULL and of one type each.)"""
    return sorted(rows, key=operator.itemgetter(*keys))


def insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """INSERT ``rows``, silently skipping any that collide on the unique ``keys``."""
    if not rows:
        return
    rows = _lock_order(rows, keys)
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _copy_insert_ignore(conn, table, rows, keys)
        return
    # On PostgreSQL, with RETURNING, SQLAlchemy's "insertmanyvalues" sends batches of rows
    # as one multi-row INSERT from a cached compilation; without it psycopg sends a
    # statement per row. (SQLite executemany is in-process; PyMySQL rewrites it to multi-row.)
    returning = (table.c[keys[0]],) if name == "postgresql" else ()
    _execute_in_chunks(conn, _insert_statement(name, table, tuple(keys), returning), rows)


def insert_returning(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    columns: Sequence[Any],
) -> list[Any] | None:
    """Like :func:`insert_ignore`, returning ``columns`` of the rows it inserted.

    Rows that collided are not returned: the caller looks those up. ``None`` means this
    path cannot return rows (MySQL/MariaDB) and the caller looks everything up, as after
    :func:`insert_ignore`. Saves one round trip per get-or-create in the common case
    where the rows are new.
    """
    name = conn.dialect.name
    if not rows:
        return []
    if name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        return _copy_insert_ignore(conn, table, _lock_order(rows, keys), keys, columns)
    if name != "sqlite" and name != "postgresql":
        insert_ignore(conn, table, rows, keys)
        return None
    stmt = _insert_statement(name, table, tuple(keys), tuple(columns))
    return _execute_in_chunks(conn, stmt, _lock_order(rows, keys))


def _copy_value(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _copy_rows(
    table: Table, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> Iterator[Sequence[Any]]:
    """``rows`` as COPY rows: JSON documents dumped, naive datetimes marked UTC (COPY
    would read them in the session's time zone). Only those columns pay a call per value."""
    values: Callable[[dict[str, Any]], Sequence[Any]] = operator.itemgetter(*columns)
    if len(columns) == 1:  # itemgetter(c) gives the value, not a 1-tuple
        only = columns[0]

        def values(row: dict[str, Any]) -> Sequence[Any]:
            return (row[only],)

    converted = [
        (i, isinstance(kind, JSON))
        for i, kind in enumerate(table.c[c].type for c in columns)
        if isinstance(kind, JSON | DateTime) or isinstance(getattr(kind, "impl", None), DateTime)
    ]
    if not converted:
        yield from map(values, rows)
        return
    for row in rows:
        out = list(values(row))
        for i, is_json in converted:
            out[i] = _copy_value(out[i], is_json)
        yield out


def _copy_insert_ignore(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    returning: Sequence[Any] = (),
) -> list[Any]:
    """PostgreSQL bulk path: COPY into a temporary staging table, then one INSERT ... SELECT
    (returning ``returning`` of the inserted rows, as named tuples)."""
    from psycopg import sql
    from psycopg.rows import namedtuple_row

    columns = list(rows[0])
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    target = sql.Identifier(table.name)
    stage = sql.Identifier(f"_dpt_stage_{table.name}")
    back = [c.name for c in returning]
    insert = sql.SQL(
        "INSERT INTO {target} ({names}) SELECT {names} FROM {stage} "
        "ON CONFLICT ({conflict}) DO NOTHING"
    ).format(
        target=target,
        names=names,
        stage=stage,
        conflict=sql.SQL(", ").join(map(sql.Identifier, keys)),
    )
    if back:
        insert += sql.SQL(" RETURNING {}").format(sql.SQL(", ").join(map(sql.Identifier, back)))
    cursor = conn.connection.dbapi_connection.cursor(row_factory=namedtuple_row)  # type: ignore[union-attr]
    try:
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {names} FROM {target} "
                "WITH NO DATA"
            ).format(stage=stage, names=names, target=target)
        )
        cursor.execute(sql.SQL("TRUNCATE {}").format(stage))
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as copy:
            for row in _copy_rows(table, columns, rows):
                copy.write_row(row)
        cursor.execute(insert)
        inserted = list(cursor.fetchall()) if back else []
        cursor.execute(sql.SQL("TRUNCATE {}").format(stage))
        return inserted
    finally:
        cursor.close()


@functools.lru_cache(maxsize=64)
def _bind_processors(dialect: Any, table: Table, columns: tuple[str, ...]) -> list[Any]:
    return [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]


def copy_into(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL: COPY ``rows`` (dicts with the same keys) into ``table``, in this order.

    The rows a plain multi-row INSERT of them makes -- values bound as SQLAlchemy binds
    them (a JSON column's None is JSON ``null``, datetimes UTC), ids drawn in this order --
    for one round trip and no statement text that grows with the rows (a multi-row
    INSERT of a thousand rows is a statement psycopg parses for ~20 ms). A row that
    collides with one already there raises :class:`sqlalchemy.exc.IntegrityError`, like
    the INSERT.
    """
    if not rows:
        return
    from psycopg import sql

    columns = tuple(rows[0])
    processors = _bind_processors(conn.dialect, table, columns)
    converted = [(i, p) for i, p in enumerate(processors) if p is not None]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                values = [row[c] for c in columns]
                for i, process in converted:
                    values[i] = process(values[i])
                copy.write_row(values)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            statement.as_string(cursor), None, exc, conn.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        cursor.close()


@functools.lru_cache(maxsize=256)
def _select_in_statement(dialect: str, columns: tuple[Any, ...], key_column: Any) -> Any:
    """``SELECT columns WHERE key_column IN (:dpt_values)``, built once per shape."""
    if dialect == "postgresql":
        # One array parameter instead of thousands of placeholders.
        array_type = postgresql.ARRAY(
            key_column.type if not isinstance(key_column.type, String) else String()
        )
        return select(*columns).where(key_column == any_(bindparam("dpt_values", type_=array_type)))
    return select(*columns).where(key_column.in_(bindparam("dpt_values", expanding=True)))


def select_in(
    conn: Connection,
    columns: Sequence[Any],
    key_column: Any,
    values: Iterable[Any],
) -> list[Any]:
    """``SELECT columns WHERE key_column IN values`` in chunks; returns all rows."""
    values = list(dict.fromkeys(values))
    if not values:
        return []
    name = conn.dialect.name
    stmt = _select_in_statement(name, tuple(columns), key_column)
    if name == "postgresql":
        return list(conn.execute(stmt, {"dpt_values": values}).all())
    rows: list[Any] = []
    for part in chunks(values):
        rows.extend(conn.execute(stmt, {"dpt_values": list(part)}).all())
    return rows
