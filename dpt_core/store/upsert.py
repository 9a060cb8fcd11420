"""Dialect-aware bulk primitives: insert-or-ignore under a unique constraint, chunked lookups.

Every get-or-create in dpt goes through :func:`insert_ignore` followed by a
select, so any number of concurrent writers converge on one row per identity
and none fails on a race.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

T = TypeVar("T")

#: Rows per multi-row INSERT; SQLite allows 32766 bound parameters, so keep rows * columns under it.
CHUNK = 1000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """INSERT ``rows``, silently skipping any that collide on the unique ``keys``."""
    if not rows:
        return
    name = conn.dialect.name
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
    width = max(1, len(rows[0]))
    for part in chunks(rows, max(1, min(CHUNK, 30000 // width))):
        conn.execute(stmt, list(part))


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
    for part in chunks(values):
        rows.extend(conn.execute(select(*columns).where(key_column.in_(part), *extra_where)).all())
    return rows
