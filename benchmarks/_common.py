"""Helpers shared by the benchmark scripts: temporary databases, isolation, output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "DPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("DPT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def emit(benchmark: str, **figures: Any) -> None:
    print(json.dumps({"benchmark": benchmark, **figures}), flush=True)


def table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.0f}"
    return str(value)


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` used so far, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bytecode_cached(env: dict[str, str], directory: Path) -> dict[str, str]:
    """``env`` for new interpreters that keep the bytecode they compile (in ``directory``),
    as an installed package has it. This machine sets ``PYTHONDONTWRITEBYTECODE=1``,
    which makes every new process compile all it imports from source (dpt's modules
    alone ~0.1 s): time such processes after one warm-up run with this environment."""
    cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(directory)
    return cached


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def p95(samples: list[float]) -> float:
    """The 95th percentile of ``samples`` (the sample at 95 % of the sorted list), in
    their unit."""
    return sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL of ``kind`` (sqlite, postgresql, mysql), dropped afterwards."""
    from dpt_core.store import migrations
    from dpt_core.store.engine import make_engine

    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            engine = make_engine(url)
            migrations.upgrade(engine)
            engine.dispose()
            yield url
        return
    base = POSTGRES_URL if kind == "postgresql" else MYSQL_URL
    name = f"dpt_bench_{uuid.uuid4().hex[:10]}"
    driver = "postgresql+psycopg" if kind == "postgresql" else "mysql+pymysql"
    admin = create_engine(make_url(base).set(drivername=driver), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        from dpt_core.store.plugin import reset_store

        reset_store()
        with admin.connect() as conn:
            drop = f"DROP DATABASE IF EXISTS {name}" + (
                " WITH (FORCE)" if kind == "postgresql" else ""
            )
            conn.execute(text(drop))
        admin.dispose()


@contextlib.contextmanager
def isolated_dpt(url: str, **env: str) -> Iterator[Path]:
    """Point dpt at ``url`` with spool and caches in a temporary directory.

    Writes are synchronous (``DPT_WRITE=sync``) unless ``env`` says otherwise: a figure
    of recording then includes the database write, which the default background writer
    would do after the timed call returned.
    """
    import dpt_core

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            {
                "DPT_DATABASE_URL": url,
                "DPT_SPOOL_DIR": f"{tmp}/spool",
                "DPT_CACHE_DIR": f"{tmp}/cache",
                "DPT_REDACTION_KEY": "bench",
                "DPT_CONFIG": f"{tmp}/none.toml",
                "DPT_WRITE": "sync",
                **env,
            }
        )
        Path(f"{tmp}/none.toml").write_text("")
        dpt_core.plugin_api.reset()
        try:
            yield Path(tmp)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            dpt_core.plugin_api.reset()
