"""Planner statistics of dpt's tables: what ``dpt doctor`` checks and advises.

PostgreSQL plans every query from statistics that ``ANALYZE`` gathers, and only
autovacuum runs it on its own. With autovacuum off (common on test and batch
hosts) a bulk load leaves the tables with none, and the planner falls back to
guesses (200 distinct values per column) that make joins look like they touch
half a percent of a table per key. dpt's lineage closures are written not to
depend on them (see :mod:`dpt_core.store.lineage`), but other queries, and other
tools reading the same database, still do.

MariaDB/MySQL's InnoDB keeps its own statistics and refreshes them after 10 % of
a table changed, unless ``innodb_stats_auto_recalc`` (or a table's
``STATS_AUTO_RECALC``) is off; then they stay as they were (a table created empty
reports 0 rows) until ``ANALYZE TABLE``. The lineage closure's plan was measured
not to change with them (``benchmarks/bench_lineage.py``). SQLite has statistics
only after an explicit ``ANALYZE`` and plans without them by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from dpt_core.store.models import DataProduct, DataProductVersion, Invocation, LineageEdge

__all__ = ["StatisticsCheck", "check_statistics"]

#: The tables a lineage, staleness or impact query reads, biggest first.
TABLES: tuple[str, ...] = (
    LineageEdge.__tablename__,
    DataProductVersion.__tablename__,
    "invocation_inputs",
    DataProduct.__tablename__,
    Invocation.__tablename__,
)


@dataclass
class StatisticsCheck:
    """What ``dpt doctor`` reports as its ``statistics`` check (advice: it never fails on it).

    :param detail: one line on what was found.
    :param advice: what to do, or None when nothing is needed.
    :param tables: the tables that need ``ANALYZE`` now, each with why.
    """

    detail: str
    advice: str | None = None
    tables: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"check": "statistics", "ok": True, "detail": self.detail}
        if self.advice:
            data["advice"] = self.advice
        if self.tables:
            data["tables"] = self.tables
        return data


def check_statistics(engine: Engine) -> StatisticsCheck:
    """Whether the planner has (and will keep) statistics on dpt's tables."""
    with engine.connect() as conn:
        name = conn.dialect.name
        if name == "postgresql":
            return _postgresql(conn)
        if name in ("mysql", "mariadb"):
            return _mysql(conn)
    return StatisticsCheck(f"{name} plans without statistics unless asked to: nothing to do")


# Statistics are out of date when more rows changed since the last ANALYZE than autovacuum
# would let pass with its defaults (autovacuum_analyze_threshold 50, scale factor 0.1).
_POSTGRESQL_TABLES = text(
    """
    SELECT c.relname,
           c.reltuples,
           pg_relation_size(c.oid) AS bytes,
           s.n_mod_since_analyze,
           COALESCE(s.last_analyze, s.last_autoanalyze) AS analysed,
           EXISTS (SELECT 1 FROM unnest(c.reloptions) AS o(option)
                   WHERE o.option ~* '^autovacuum_enabled=(false|off|no|0)$') AS opted_out
    FROM unnest(CAST(:tables AS text[])) AS t(name)
    JOIN pg_class c ON c.oid = to_regclass(t.name)
    LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    """
)


#: Without row counters (track_counts off), a never-analysed table bigger than this is named.
_SMALL_TABLE_BYTES = 64 * 1024


def _postgresql(conn: Connection) -> StatisticsCheck:
    autovacuum = conn.execute(text("SELECT current_setting('autovacuum')")).scalar() == "on"
    counting = conn.execute(text("SELECT current_setting('track_counts')")).scalar() == "on"
    rows = conn.execute(_POSTGRESQL_TABLES, {"tables": list(TABLES)}).all()
    needing: dict[str, str] = {}
    opted_out = []
    for row in rows:
        if row.opted_out:
            opted_out.append(row.relname)
        never = row.analysed is None and row.reltuples <= 0
        changed = row.n_mod_since_analyze or 0
        if changed > 50 + 0.1 * max(row.reltuples, 0) or (
            never and not counting and row.bytes > _SMALL_TABLE_BYTES
        ):
            needing[row.relname] = (
                "never analysed" if never else f"{changed} rows changed since the last ANALYZE"
            )
    if autovacuum and counting and not opted_out:
        detail = "autovacuum is on: PostgreSQL keeps the statistics of dpt's tables up to date"
        if needing:
            detail += f" (due soon: {', '.join(sorted(needing))})"
        return StatisticsCheck(detail)
    if not autovacuum:
        why = "autovacuum is off"
    elif not counting:
        why = "track_counts is off, so autovacuum never runs"
    else:
        why = f"autovacuum is disabled on {', '.join(sorted(opted_out))}"
    detail = f"{why}: nothing refreshes the planner statistics of dpt's tables"
    if needing:
        detail += "; missing or out of date: " + ", ".join(
            f"{table} ({reason})" for table, reason in sorted(needing.items())
        )
    database = conn.execute(text("SELECT current_database()")).scalar()
    advice = (
        f"run ANALYZE after large loads (psql -c 'ANALYZE' {database}, or vacuumdb "
        f"--analyze-only {database}), or turn autovacuum on; dpt's lineage queries do not "
        "depend on statistics, other queries and tools do"
    )
    return StatisticsCheck(detail, advice, needing)


def _mysql(conn: Connection) -> StatisticsCheck:
    persistent, recalc = conn.execute(
        text("SELECT @@innodb_stats_persistent, @@innodb_stats_auto_recalc")
    ).one()
    tables = conn.execute(
        text(
            "SELECT table_name, create_options FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        )
    ).all()
    mine = {str(name).lower(): str(options or "").lower() for name, options in tables}
    off = sorted(
        t
        for t in TABLES
        if "stats_auto_recalc=0" in mine.get(t, "")
        or (not int(recalc) and "stats_auto_recalc=1" not in mine.get(t, ""))
    )
    if not int(persistent) or not off:
        return StatisticsCheck(
            "InnoDB refreshes the statistics of dpt's tables after 10 % of a table changed"
        )
    return StatisticsCheck(
        f"InnoDB does not refresh the statistics of {', '.join(off)} "
        "(innodb_stats_auto_recalc or STATS_AUTO_RECALC is off)",
        "run ANALYZE TABLE on them after large loads; dpt's lineage queries do not depend "
        "on statistics, other queries and tools do",
    )
