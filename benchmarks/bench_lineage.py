"""Lineage closure vs a query-per-node walk, with and without planner statistics; ``dpt stale``.

    python -m benchmarks.bench_lineage [--backend postgresql|mysql|sqlite]
        [--products 100000] [--edges 200000] [--runs 25] [--big | --huge]

The graph is generated straight into the tables of a database this script
creates (and drops) — COPY on PostgreSQL, multi-row INSERTs elsewhere, the way a
bulk load arrives: ``--levels`` levels (31: the deepest node is 30 levels down)
of ``products / levels`` products each; every product below the top level
derives from its two neighbours above (``k`` and ``k+1``), and the first products
of each level from a third (``k+2``) until ``--edges`` is reached. Every product
is one version made by its own invocation, and (unless ``--no-files``) a real
file, so ``dpt stale`` has something to stat.

Figures, each phase timed interleaved with the baseline in the same process:

* ``as loaded``: right after the bulk load, before any ANALYZE (what a server with
  autovacuum off, or one whose autovacuum has not come round yet, plans with).
  ``lineage(node, "upstream")`` for a node 30 levels deep (the version on disk,
  then one recursive statement), the same with ``all_versions=True`` (the
  statement alone), and on PostgreSQL the statement as planned before issue 15
  item 9 (a plain join on the edges, no JIT setting: ``--slow-runs`` runs, it is
  slow there); the baseline is a Python walk issuing one query per node
  (``--slow-runs`` runs in this phase: its queries are slow without statistics too).
* ``as loaded, settled`` (PostgreSQL): the same after a ``CHECKPOINT``, still without
  statistics or a visibility map. Right after a bulk load of gigabytes the server is
  still writing the loaded pages back, and the first phase measures that write-back
  as much as the missing statistics; this one measures the missing statistics alone.
* ``analysed``: after ``VACUUM ANALYZE`` / ``ANALYZE TABLE`` / ``ANALYZE``, the same,
  plus ``--depth 5`` upstream and ``--depth 10`` downstream of a source.
  Targets: <= 20 ms median, >= 10x faster than the walk, in both phases.
* ``stale``: ``stale()`` over every product, twice, then after re-timestamping 1%
  of the files (same bytes), then after changing 10 sources. Target: the passes
  over unchanged files hash nothing (``files_hashed == 0``).

``--big`` generates 1 000 000 products / 2 000 000 edges, ``--huge`` 10 000 000 /
20 000 000 (both without files unless ``--files`` is given, so without stale passes).
Rows are streamed into COPY in text chunks, never held in memory. On PostgreSQL
``--huge`` (or ``--late-indexes``) drops the indexes and constraints of the four
tables before the load and re-creates them, by their own definitions, after it;
the script then checks the schema is again the one the migrations made, so the
figures are those of the real schema. ``--huge`` also leaves out the pre-item-9
statement before ANALYZE (31 sequential scans of 20 000 000 edges a run) unless
``--before`` is given. Each closure row carries its median and p95.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from benchmarks._common import database, emit, machine, table

T0 = "2024-01-01 00:00:00+00"
T0_NAIVE = "2024-01-01 00:00:00"
NULL = "\\N"  # COPY text format


class Shape:
    """Where product ``pid`` sits: level ``(pid - 1) // width``, position ``(pid - 1) % width``."""

    def __init__(self, products: int, levels: int, edges: int) -> None:
        self.levels = levels
        self.width = products // levels
        self.products = self.width * levels
        two = 2 * (self.products - self.width)
        self.third = max(0, min(edges - two, self.products - self.width))
        self.edges = two + self.third

    def pid(self, level: int, k: int) -> int:
        return level * self.width + (k % self.width) + 1

    def parents(self, pid: int) -> list[int]:
        level, k = divmod(pid - 1, self.width)
        if level == 0:
            return []
        found = [self.pid(level - 1, k), self.pid(level - 1, k + 1)]
        if (pid - self.width - 1) < self.third:
            found.append(self.pid(level - 1, k + 2))
        return found


def _insert(conn: Any, table_name: str, columns: list[str], rows: Any, chunk: int = 5_000) -> None:
    """Multi-row INSERTs through the driver (PyMySQL and sqlite3 batch ``executemany``)."""
    sql = f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    if conn.__class__.__module__.startswith("sqlite3"):
        sql = sql.replace("%s", "?")
    batch: list[tuple[Any, ...]] = []
    with contextlib.closing(conn.cursor()) as cursor:
        for row in rows:
            batch.append(tuple(row))
            if len(batch) >= chunk:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)


class Uris:
    """Product id -> URI, computed rather than stored (10 000 000 of them at ``--huge``)."""

    def __init__(self, files: Path | None) -> None:
        from dpt_core.uri import normalize_uri

        self.files = files
        self._normalize = normalize_uri

    def __getitem__(self, pid: int) -> str:
        if self.files is None:
            return f"bench://graph/p{pid:07d}"
        return self._normalize(self.files / f"p{pid:07d}.dat")


def _chunks(lines: Any, size: int = 20_000) -> Any:
    """Join text-format COPY lines into chunks of ``size`` rows."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


def _copy_text(conn: Any, table_name: str, columns: list[str], lines: Any) -> None:
    """COPY from a generator of text-format lines (no per-value adaptation, no list in memory)."""
    with (
        conn.cursor() as cursor,
        cursor.copy(f"COPY {table_name} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for chunk in _chunks(lines):
            copy.write(chunk)


def _fake_uuid(prefix: str, n: int) -> str:
    return f"{prefix}-{n:012x}"


SCHEMA_TABLES = ("invocations", "data_products", "data_product_versions", "lineage_edges")


def _schema(cursor: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """The indexes not backing a constraint, and the constraints, on or referencing SCHEMA_TABLES."""
    tables = list(SCHEMA_TABLES)
    cursor.execute(
        "SELECT c.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
        "WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid "
        "AND k.contype IN ('p', 'u', 'x')) ORDER BY 2",
        (tables,),
    )
    indexes = [tuple(r) for r in cursor.fetchall()]
    cursor.execute(
        "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_class f ON f.oid = k.confrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND k.contype IN ('p', 'u', 'f') "
        "AND (c.relname = ANY(%s) OR f.relname = ANY(%s)) ORDER BY 2",
        (tables, tables),
    )
    constraints = [tuple(r) for r in cursor.fetchall()]
    return indexes, constraints


def _drop_schema(conn: Any) -> Any:
    """Drop the indexes and constraints of SCHEMA_TABLES; returns what to re-create."""
    with conn.cursor() as cursor:
        indexes, constraints = _schema(cursor)
        for table_name, name, _kind, _ in sorted(constraints, key=lambda c: c[2] != "f"):
            cursor.execute(f'ALTER TABLE {table_name} DROP CONSTRAINT "{name}"')
        for _, name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    conn.commit()
    return indexes, constraints


def _restore_schema(conn: Any, saved: Any) -> None:
    """Re-create what ``_drop_schema`` dropped (keys, then indexes, then foreign keys) and
    check the result against the catalogue as it was."""
    indexes, constraints = saved
    with conn.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for table_name, name, kind, definition in constraints:
            if kind == "p":
                cursor.execute(f'ALTER TABLE {table_name} ADD CONSTRAINT "{name}" {definition}')
                conn.commit()
        for table_name, name, kind, definition in constraints:
            if kind == "u":
                cursor.execute(f'ALTER TABLE {table_name} ADD CONSTRAINT "{name}" {definition}')
                conn.commit()
        for _, _, definition in indexes:
            cursor.execute(definition)
            conn.commit()
        for table_name, name, kind, definition in constraints:
            if kind == "f":
                cursor.execute(f'ALTER TABLE {table_name} ADD CONSTRAINT "{name}" {definition}')
                conn.commit()
        assert _schema(cursor) == (indexes, constraints), "the schema was not restored as it was"
    conn.commit()


def generate(engine: Engine, shape: Shape, files: Path | None, late_indexes: bool = False) -> Uris:
    """Bulk-load the graph, without ANALYZE afterwards; returns product id -> URI."""
    from dpt_core.hashing import hash_file
    from dpt_core.store.recorder import uri_digest

    uris = Uris(files)
    facts: dict[int, tuple[str | None, int | None, float | None]] = {}
    if files is not None:
        for pid in range(1, shape.products + 1):
            path = files / f"p{pid:07d}.dat"
            path.write_bytes(f"product {pid}\n".encode())
            st = path.stat()
            facts[pid] = (hash_file(path, "xxh3_128"), st.st_size, st.st_mtime)

    def fact(pid: int) -> tuple[str | None, int | None, float | None]:
        return facts[pid] if files is not None else (f"xxh3_128:{pid:032x}", 10, None)

    products = range(1, shape.products + 1)
    postgresql = engine.dialect.name == "postgresql"
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        if postgresql:
            saved = _drop_schema(conn) if late_indexes else None
            inv, ver = (str(uuid.uuid4())[:23] for _ in range(2))
            _copy_text(
                conn,
                "invocations",
                ["id", "uuid", "orchestrator", "job", "task", "status", "started_at", "ended_at"],
                (
                    f"{pid}\t{_fake_uuid(inv, pid)}\tbench\tlevel{(pid - 1) // shape.width}"
                    f"\tp{pid}\tsuccess\t{T0}\t{T0}\n"
                    for pid in products
                ),
            )
            _copy_text(
                conn,
                "data_products",
                ["id", "uri_digest", "uri", "created_at"],
                (f"{pid}\t{uri_digest(u)}\t{u}\t{T0}\n" for pid in products for u in (uris[pid],)),
            )
            _copy_text(
                conn,
                "data_product_versions",
                [
                    "id",
                    "uuid",
                    "product_id",
                    "content_hash",
                    "size",
                    "mtime",
                    "produced_by_id",
                    "explicit_parents",
                    "recorded_at",
                ],
                (
                    f"{pid}\t{_fake_uuid(ver, pid)}\t{pid}\t{h}\t{size}"
                    f"\t{NULL if mtime is None else repr(mtime)}\t{pid}\tf\t{T0}\n"
                    for pid in products
                    for h, size, mtime in (fact(pid),)
                ),
            )
            edge_ids = iter(range(1, shape.edges + 1))
            _copy_text(
                conn,
                "lineage_edges",
                ["id", "parent_version_id", "child_version_id", "invocation_id"],
                (
                    f"{next(edge_ids)}\t{parent}\t{pid}\t{pid}\n"
                    for pid in products
                    for parent in shape.parents(pid)
                ),
            )
            with conn.cursor() as cursor:
                for name in SCHEMA_TABLES:
                    last = shape.edges if name == "lineage_edges" else shape.products
                    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), {last})")
            conn.commit()
            if saved is not None:
                _restore_schema(conn, saved)
            return uris
        _insert(
            conn,
            "invocations",
            ["id", "uuid", "orchestrator", "job", "task", "status", "started_at", "ended_at"],
            (
                (
                    pid,
                    str(uuid.uuid4()),
                    "bench",
                    f"level{(pid - 1) // shape.width}",
                    f"p{pid}",
                    "success",
                    T0_NAIVE,
                    T0_NAIVE,
                )
                for pid in products
            ),
        )
        _insert(
            conn,
            "data_products",
            ["id", "uri_digest", "uri", "created_at"],
            ((pid, uri_digest(uris[pid]), uris[pid], T0_NAIVE) for pid in products),
        )
        _insert(
            conn,
            "data_product_versions",
            [
                "id",
                "uuid",
                "product_id",
                "content_hash",
                "size",
                "mtime",
                "produced_by_id",
                "explicit_parents",
                "recorded_at",
            ],
            ((pid, str(uuid.uuid4()), pid, *fact(pid), pid, False, T0_NAIVE) for pid in products),
        )
        _insert(
            conn,
            "lineage_edges",
            ["parent_version_id", "child_version_id", "invocation_id"],
            ((parent, pid, pid) for pid in products for parent in shape.parents(pid)),
        )
        conn.commit()
    finally:
        raw.close()
    return uris


def database_size(engine: Engine) -> int | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as c:
        return int(c.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def checkpoint(engine: Engine) -> bool:
    """Write the loaded pages back now (PostgreSQL ``CHECKPOINT``; needs a superuser or
    ``pg_checkpoint``): the statistics and the visibility map are left as they were."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("CHECKPOINT"))
    return True


def analyse(engine: Engine) -> None:
    """What autovacuum (or a DBA) does after a load: statistics, and the visibility map."""
    tables = "invocations, data_products, data_product_versions, lineage_edges"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        if engine.dialect.name == "postgresql":
            c.execute(text("VACUUM ANALYZE"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            c.execute(text(f"ANALYZE TABLE {tables}")).all()
        else:
            c.execute(text("ANALYZE"))


@contextlib.contextmanager
def before_item_9() -> Any:
    """The closure statement as it was before issue 15 item 9: a plain join on the edges,
    and no JIT setting on PostgreSQL (the other backends were and are unchanged)."""
    from dpt_core.store import lineage as module

    saved = module._lateral, module._prepare_session

    def prepare(conn: Any, jit_off: bool = False) -> None:
        if conn.dialect.name != "postgresql":
            saved[1](conn, jit_off)

    module._lateral, module._prepare_session = (lambda conn: False), prepare  # type: ignore[assignment]
    try:
        yield
    finally:
        module._lateral, module._prepare_session = saved  # type: ignore[assignment]


WALK_SQL = text(
    "SELECT e.parent_version_id, p.uri, v.content_hash, i.uuid AS invocation "
    "FROM lineage_edges e "
    "JOIN data_product_versions v ON v.id = e.parent_version_id "
    "JOIN data_products p ON p.id = v.product_id "
    "LEFT JOIN invocations i ON i.id = e.invocation_id "
    "WHERE e.child_version_id = :vid"
)


def walk(engine: Engine, start: int) -> set[int]:
    """The baseline: breadth first, one query per node."""
    seen = {start}
    queue = deque([start])
    with engine.connect() as conn:
        while queue:
            vid = queue.popleft()
            for row in conn.execute(WALK_SQL, {"vid": vid}):
                if row.parent_version_id not in seen:
                    seen.add(row.parent_version_id)
                    queue.append(row.parent_version_id)
    return seen


def samples(func: Any, runs: int) -> list[float]:
    func()  # warm caches and the connection pool
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        out.append(time.perf_counter() - start)
    return out


def interleaved(funcs: list[Any], runs: list[int]) -> list[list[float]]:
    """Time each function ``runs[i]`` times, round robin, so all see the same load."""
    for func in funcs:
        func()
    out: list[list[float]] = [[] for _ in funcs]
    for round_ in range(max(runs)):
        for func, times, wanted in zip(funcs, out, runs, strict=True):
            if round_ < wanted:
                start = time.perf_counter()
                func()
                times.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return max(values) * 1000
    return statistics.quantiles(values, n=20, method="inclusive")[18] * 1000


def bench_closure(
    engine: Engine,
    shape: Shape,
    uris: Uris,
    runs: int,
    phase: str,
    slow_runs: int,
    before_loaded: bool = True,
) -> list[dict[str, Any]]:
    from dpt_core.store.lineage import lineage

    deep = shape.pid(shape.levels - 1, shape.width // 2)
    graph = lineage(uris[deep], "upstream", engine=engine)
    loaded = phase.startswith("as loaded")
    if loaded and slow_runs == 0:
        # --huge: the walk's 1-query-per-node join is planned with sequential scans
        # when the indexes were built after the load (reltuples set, no column
        # statistics): 8.8 s a walk at 31 000 products, hours at 10 000 000.
        funcs: list[Any] = [
            lambda: lineage(uris[deep], "upstream", engine=engine),
            lambda: lineage(uris[deep], "upstream", all_versions=True, engine=engine),
        ]
        labels = ["upstream, version on disk", "upstream, all versions (1 statement)"]
        common = {
            "phase": phase,
            "depth": max(n.depth for n in graph.nodes),
            "nodes": len(graph.nodes),
        }
        rows = [
            {"what": label, **common, "median_ms": ms(t), "p95_ms": p95(t), "vs_walk": None}
            for label, t in zip(labels, interleaved(funcs, [runs, runs]), strict=True)
        ]
        for row in rows:
            emit(
                "lineage.closure",
                backend=engine.dialect.name,
                products=shape.products,
                graph_edges=shape.edges,
                **row,
            )
        return rows
    baseline = walk(engine, deep)
    assert {n.version for n in graph.nodes} and len(graph.nodes) == len(baseline), (
        "the closure and the walk disagree"
    )

    def before() -> Any:
        with before_item_9():
            return lineage(uris[deep], "upstream", all_versions=True, engine=engine)

    funcs = [
        lambda: lineage(uris[deep], "upstream", engine=engine),
        lambda: lineage(uris[deep], "upstream", all_versions=True, engine=engine),
        lambda: walk(engine, deep),
    ]
    labels = [
        "upstream, version on disk",
        "upstream, all versions (1 statement)",
        "upstream walk, 1 query/node",
    ]
    # Without statistics the walk's own queries are slow too (a scan each on PostgreSQL).
    counts = [runs, runs, runs if phase == "analysed" else slow_runs]
    if engine.dialect.name == "postgresql" and (phase == "analysed" or before_loaded):
        assert len(before().nodes) == len(baseline)
        funcs.append(before)
        labels.append("upstream, all versions, before item 9")
        counts.append(slow_runs if loaded else runs)
    timings = interleaved(funcs, counts)
    walk_ms = ms(timings[2])
    common = {"phase": phase, "depth": max(n.depth for n in graph.nodes), "nodes": len(graph.nodes)}
    rows = [
        {
            "what": label,
            **common,
            "median_ms": ms(times),
            "p95_ms": p95(times),
            "vs_walk": walk_ms / ms(times),
        }
        for label, times in zip(labels, timings, strict=True)
    ]
    if phase == "analysed":
        limited = samples(lambda: lineage(uris[deep], "upstream", 5, engine=engine), runs)
        top = shape.pid(0, shape.width // 2)
        down = samples(lambda: lineage(uris[top], "downstream", 10, engine=engine), runs)
        rows += [
            {
                "what": "upstream, --depth 5",
                "phase": phase,
                "depth": 5,
                "nodes": len(lineage(uris[deep], "upstream", 5, engine=engine).nodes),
                "median_ms": ms(limited),
                "p95_ms": p95(limited),
                "vs_walk": None,
            },
            {
                "what": "downstream of a source, --depth 10",
                "phase": phase,
                "depth": 10,
                "nodes": len(lineage(uris[top], "downstream", 10, engine=engine).nodes),
                "median_ms": ms(down),
                "p95_ms": p95(down),
                "vs_walk": None,
            },
        ]
    for row in rows:
        emit(
            "lineage.closure",
            backend=engine.dialect.name,
            products=shape.products,
            graph_edges=shape.edges,
            **row,
        )
    return rows


def bench_stale(
    engine: Engine, url: str, shape: Shape, files: Path, cache: Path
) -> list[dict[str, Any]]:
    from dpt_core.config import Settings
    from dpt_core.store.analysis import stale

    settings = Settings(database_url=url, cache_dir=cache)
    rows = []

    def run(label: str) -> list[dict[str, Any]]:
        stats: dict[str, int] = {}
        start = time.perf_counter()
        found = stale(engine=engine, settings=settings, stats=stats)
        seconds = time.perf_counter() - start
        row = {"pass": label, "seconds": seconds, **stats}
        emit("lineage.stale", graph_products=shape.products, **row)
        rows.append(row)
        return found

    run("1: unchanged")
    run("2: unchanged again")
    paths = sorted(files.iterdir())
    touched = paths[::100]
    past = time.time() - 3600
    for path in touched:
        os.utime(path, (past, past))  # new mtime, same bytes
    run(f"3: {len(touched)} re-timestamped")
    run("4: re-timestamped again")
    for pid in range(1, 11):
        (files / f"p{pid:07d}.dat").write_bytes(b"changed source\n")
    found = run("5: 10 sources changed")
    assert found, "changing sources must make their descendants stale"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=["postgresql", "mysql", "sqlite"], default="postgresql"
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=200_000)
    parser.add_argument("--levels", type=int, default=31)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument(
        "--slow-runs",
        type=int,
        default=None,
        help="runs, before ANALYZE, of the walk and of the pre-item-9 statement (both slow "
        "there); 0 leaves both out of that phase (default 3, with --huge 0)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--big", action="store_true", help="1 000 000 products / 2 000 000 edges")
    size.add_argument(
        "--huge",
        action="store_true",
        help="10 000 000 products / 20 000 000 edges; implies --late-indexes, no files, "
        "and no pre-item-9 statement before ANALYZE unless --before",
    )
    parser.add_argument(
        "--late-indexes",
        action="store_true",
        help="PostgreSQL: drop the four tables' indexes and constraints for the load, "
        "re-create them after it (and check the schema is the migrations' again)",
    )
    parser.add_argument(
        "--before",
        action="store_true",
        help="with --huge: time the pre-item-9 statement before ANALYZE too",
    )
    parser.add_argument("--no-stale", action="store_true", help="skip the stale() passes")
    files_group = parser.add_mutually_exclusive_group()
    files_group.add_argument("--files", dest="files", action="store_true", default=None)
    files_group.add_argument("--no-files", dest="files", action="store_false")
    args = parser.parse_args()
    if args.big:
        args.products, args.edges = 1_000_000, 2_000_000
    if args.huge:
        args.products, args.edges, args.late_indexes = 10_000_000, 20_000_000, True
    with_files = args.files if args.files is not None else not (args.big or args.huge)
    before_loaded = args.before or not args.huge
    if args.slow_runs is None:
        args.slow_runs = 0 if args.huge else 3

    shape = Shape(args.products, args.levels, args.edges)
    emit(
        "lineage.setup",
        backend=args.backend,
        products=shape.products,
        edges=shape.edges,
        levels=shape.levels,
        width=shape.width,
        files=with_files,
        load_average=os.getloadavg()[0],
        **machine(),
    )
    from dpt_core.store.engine import make_engine

    with database(args.backend) as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url, statement_timeout=600)
        files = Path(tmp) / "files" if with_files else None
        if files is not None:
            files.mkdir()
        start = time.perf_counter()
        uris = generate(engine, shape, files, args.late_indexes)
        emit(
            "lineage.generate",
            seconds=time.perf_counter() - start,
            late_indexes=args.late_indexes,
            database_bytes=database_size(engine),
            load_average=os.getloadavg()[0],
        )
        rows = bench_closure(
            engine, shape, uris, args.runs, "as loaded", args.slow_runs, before_loaded
        )
        start = time.perf_counter()
        if checkpoint(engine):
            emit(
                "lineage.checkpoint",
                seconds=time.perf_counter() - start,
                load_average=os.getloadavg()[0],
            )
            rows += bench_closure(
                engine, shape, uris, args.runs, "as loaded, settled", args.slow_runs, before_loaded
            )
        start = time.perf_counter()
        analyse(engine)
        emit(
            "lineage.analyse",
            seconds=time.perf_counter() - start,
            database_bytes=database_size(engine),
            load_average=os.getloadavg()[0],
        )
        rows += bench_closure(engine, shape, uris, args.runs, "analysed", args.slow_runs)
        print()
        table(rows)
        print(f"load average (1, 5, 15 min): {os.getloadavg()}")
        if files is not None and not args.no_stale:
            stale_rows = bench_stale(engine, url, shape, files, Path(tmp) / "cache")
            print()
            table(stale_rows)
        engine.dispose()
    print()
    for phase in dict.fromkeys(r["phase"] for r in rows):
        if not any(r["phase"] == phase and r["vs_walk"] == 1.0 for r in rows):
            one = next(r["median_ms"] for r in rows if r["phase"] == phase)
            verdict = "meets" if one <= 20 else "MISSES"
            print(f"{phase}: closure {one:.2f} ms median (no walk timed): {verdict} <= 20 ms")
            continue
        one, per_node = (
            next(r["median_ms"] for r in rows if r["phase"] == phase and r["what"] == what)
            for what in ("upstream, version on disk", "upstream walk, 1 query/node")
        )
        verdict = "meets" if one <= 20 and per_node / one >= 10 else "MISSES"
        print(
            f"{phase}: closure {one:.2f} ms median, {per_node / one:.1f}x the walk: {verdict} "
            "the target (<= 20 ms, >= 10x)"
        )


if __name__ == "__main__":
    main()
