"""The PostgreSQL roles of docs/security.md, set up from the SQL in that page.

An owner migrates, a writer records (pipelines), a reader reads (people): the
reader can run every read command and cannot record; the writer records,
bulk batches included, and cannot change the schema.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from conftest import cli, cli_json, direct_scalar, one_line_error, pg_admin, table_counts, worker
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dpt_core.spool import Spool

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def doc_sql(marker: str) -> str:
    """The fenced ```sql block of docs/security.md that starts with ``-- dpt: <marker>``."""
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(f"-- dpt: {marker}"):
            return block
    raise AssertionError(f"docs/security.md has no sql block '-- dpt: {marker}'")


def statements(sql: str) -> list[str]:
    body = "\n".join(line.split("--")[0] for line in sql.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.fixture
def roles(pg_env):
    """Owner, writer and reader roles (unique names) on a database migrated by the owner."""
    pg_url = pg_env.url
    suffix = uuid.uuid4().hex[:8]
    names = {r: f"{r}_{suffix}" for r in ("dpt_owner", "dpt_writer", "dpt_reader")}
    database = make_url(pg_url).database

    def rename(sql: str) -> str:
        for generic, unique in names.items():
            sql = sql.replace(generic, unique)
        return re.sub(r"\bDATABASE dpt\b", f"DATABASE {database}", sql)

    admin = pg_admin()
    as_superuser = create_engine(
        make_url(pg_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    urls = {
        r: make_url(pg_url).set(username=u).render_as_string(hide_password=False)
        for r, u in names.items()
    }
    try:
        cli("db", "downgrade", "base", env={"DPT_DATABASE_URL": pg_url}, check=0)
        with as_superuser.connect() as conn:  # an empty database, as a new deployment has
            conn.execute(text("DROP TABLE alembic_version"))
        with admin.connect() as conn:
            for statement in statements(rename(doc_sql("roles"))):
                if not statement.startswith("CREATE DATABASE"):
                    conn.execute(text(statement))
            conn.execute(text(f"ALTER DATABASE {database} OWNER TO {names['dpt_owner']}"))
        cli("db", "upgrade", env={"DPT_DATABASE_URL": urls["dpt_owner"]}, check=0)
        with as_superuser.connect() as conn:
            for statement in statements(rename(doc_sql("grants"))):
                conn.execute(text(statement))
        yield urls
    finally:
        with as_superuser.connect() as conn:
            for name in names.values():  # one at a time: all at once trips over default ACLs
                conn.execute(text(f"DROP OWNED BY {name} CASCADE"))
        as_superuser.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} OWNER TO CURRENT_USER"))
            for name in names.values():
                conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def test_writer_records_reader_reads_and_neither_can_do_the_others_job(
    roles, pg_env, tmp_path, monkeypatch
):
    pg_url = pg_env.url
    monkeypatch.chdir(tmp_path)
    writer = {"DPT_DATABASE_URL": roles["dpt_writer"], "DPT_STRICT": "1"}
    reader = {"DPT_DATABASE_URL": roles["dpt_reader"]}
    (tmp_path / "raw.txt").write_text("raw")

    # the writer records runs, products, lineage, and a bulk batch (staged in a temp table)
    cli(
        "run",
        "-i",
        "raw.txt",
        "-o",
        "cal.txt",
        "--",
        "cp",
        "raw.txt",
        "cal.txt",
        env=writer,
        check=0,
    )
    proc = worker("batches", {"batch_size": 600, "input": str(tmp_path / "raw.txt"), "batches": 1},
                  env=writer)  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    before = table_counts(pg_url)
    assert before["invocations"] == 2 and before["data_product_versions"] >= 602

    # the reader runs every read command
    runs = cli_json("runs", env=reader)
    run_ids = [str(r["id"]) for r in runs]
    for args in (
        ("runs", "--json"), ("show", "cal.txt", "--json"), ("show", run_ids[0], "--json"),
        ("stats", "--json"), ("lineage", "cal.txt", "--upstream", "--json"),
        ("lineage", "raw.txt", "--downstream", "--format", "dot"), ("stale", "--json"),
        ("impact", "--product", "raw.txt", "--json"), ("impact", "--package", "sqlalchemy", "--json"),
        ("env", "show", run_ids[0], "--json"), ("env", "diff", run_ids[0], run_ids[1], "--json"),
        ("export", "--format", "openlineage"), ("export", "--format", "prov"),
        ("db", "current", "--json"), ("doctor", "--json"), ("spool", "status", "--json"),
    ):  # fmt: skip
        result = cli(*args, env=reader)
        ok = (1 if json.loads(result.stdout) else 0) if args[0] == "stale" else 0
        assert result.exit_code == ok, (args, result.stderr)
    assert cli_json("stats", env=reader)["invocations"] == 2

    # the reader cannot record: strict mode says so in one line ...
    result = cli("track", "raw.txt", env=reader | {"DPT_STRICT": "1"})
    assert result.exit_code == 1 and "read-only transaction" in one_line_error(result)
    # ... and without it the events wait in the reader's own spool, never in the database
    cli("track", "raw.txt", env=reader, check=0)
    assert Spool(tmp_path / "spool").status().events > 0
    assert table_counts(pg_url) == before

    # neither the reader nor the writer can change the schema
    for who in (reader, writer):
        result = cli("db", "downgrade", "base", env=who)
        line = one_line_error(result)
        assert result.exit_code in (1, 2)
        assert (
            "read-only transaction" in line
            or "must be owner" in line
            or "permission denied" in line
        )
    assert direct_scalar(pg_url, "SELECT COUNT(*) FROM invocations") == 2
    assert table_counts(pg_url) == before


@pytest.mark.parametrize("write", ["sync", "background"])
def test_the_readers_events_wait_in_its_spool_in_order_and_none_is_set_aside(
    roles, pg_env, tmp_path, monkeypatch, caplog, write
):
    """A permission error is no batch refused for good: every batch waits, whichever write
    mode, however many writes and processes follow (each replays the spool first)."""
    monkeypatch.chdir(tmp_path)
    reader = {"DPT_DATABASE_URL": roles["dpt_reader"], "DPT_WRITE": write}
    (tmp_path / "raw.txt").write_text("raw")
    before = table_counts(pg_env.url)
    spool = Spool(tmp_path / "spool")
    cli("track", "raw.txt", env=reader, check=0)
    first = spool.status()
    assert first.events > 0 and first.bad_files == 0
    cli("run", "-i", "raw.txt", "--", "true", env=reader, check=0)
    cli("track", "raw.txt", env=reader, check=0)
    after = spool.status()
    assert after.bad_files == 0, "a batch the reader may not write was set aside as refused"
    assert after.events > 2 * first.events
    assert table_counts(pg_env.url) == before
    assert "this role may not write" in caplog.text
