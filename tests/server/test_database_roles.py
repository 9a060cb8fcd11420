"""``dpt serve`` with the PostgreSQL roles of docs/security.md (set up from that page's SQL):
``--read-only`` over the reader role answers every read as the CLI does and takes no
write; a writing server over the writer role records what it is sent."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DptServer, dpt_cli, run_event
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dpt_core.testing import POSTGRES_URL, DptTestEnv

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
def roles(pg_dpt_env: DptTestEnv) -> Iterator[dict[str, str]]:
    """Owner, writer and reader roles (unique names) on a database migrated by the owner."""
    pg_url = pg_dpt_env.url
    suffix = uuid.uuid4().hex[:8]
    names = {r: f"{r}_{suffix}" for r in ("dpt_owner", "dpt_writer", "dpt_reader")}
    database = make_url(pg_url).database

    def rename(sql: str) -> str:
        for generic, unique in names.items():
            sql = sql.replace(generic, unique)
        return re.sub(r"\bDATABASE dpt\b", f"DATABASE {database}", sql)

    as_superuser = create_engine(
        make_url(pg_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    admin = create_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    urls = {
        r: make_url(pg_url).set(username=u).render_as_string(hide_password=False)
        for r, u in names.items()
    }
    environ = pg_dpt_env.environ()
    try:
        result = dpt_cli(environ | {"DPT_DATABASE_URL": pg_url}, "db", "downgrade", "base")
        assert result.returncode == 0, result.stderr
        with as_superuser.connect() as conn:  # an empty database, as a new deployment has
            conn.execute(text("DROP TABLE alembic_version"))
        with admin.connect() as conn:
            for statement in statements(rename(doc_sql("roles"))):
                if not statement.startswith("CREATE DATABASE"):
                    conn.execute(text(statement))
            conn.execute(text(f"ALTER DATABASE {database} OWNER TO {names['dpt_owner']}"))
        result = dpt_cli(environ | {"DPT_DATABASE_URL": urls["dpt_owner"]}, "db", "upgrade")
        assert result.returncode == 0, result.stderr
        with as_superuser.connect() as conn:
            for statement in statements(rename(doc_sql("grants"))):
                conn.execute(text(statement))
        yield urls
    finally:
        with as_superuser.connect() as conn:
            for name in names.values():
                conn.execute(text(f"DROP OWNED BY {name} CASCADE"))
        as_superuser.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} OWNER TO CURRENT_USER"))
            for name in names.values():
                conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def test_read_only_server_on_the_reader_role_and_writing_server_on_the_writer_role(
    roles: dict[str, str], pg_dpt_env: DptTestEnv, tmp_path: Path
) -> None:
    base = pg_dpt_env.environ()
    writer_environ = base | {"DPT_DATABASE_URL": roles["dpt_writer"], "DPT_STRICT": "1"}
    reader_environ = base | {"DPT_DATABASE_URL": roles["dpt_reader"]}
    (tmp_path / "raw.txt").write_text("raw")

    # a pipeline records as the writer, a writing server records as the writer too
    result = dpt_cli(writer_environ, "run", "-i", "raw.txt", "-o", "cal.txt", "--",
                     "cp", "raw.txt", "cal.txt", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    writing = DptServer(writer_environ, tmp_path / "writing")
    writing.directory.mkdir()
    writing.start()
    try:
        run_id = str(uuid.uuid4())
        event = run_event(run_id, job="posted", inputs=(("file", str(tmp_path / "cal.txt")),),
                          outputs=(("s3://bucket", "published/cal.txt"),))  # fmt: skip
        response = writing.post("/api/v1/lineage", event)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "recorded"
    finally:
        assert writing.stop() == 0

    reading = DptServer(reader_environ, tmp_path / "reading")
    reading.directory.mkdir()
    reading.start("--read-only")
    try:
        assert "read-only" in reading.stdout
        health = reading.get("/api/health").json()
        assert health["read_only"] is True and health["database"]["reachable"] is True
        runs = reading.cli_json("runs")
        assert {r["job"] for r in runs} == {"cp", "posted"}
        assert reading.get("/api/runs").json() == runs
        assert reading.get("/api/stats").json() == reading.cli_json("stats")
        for run in runs:
            assert reading.get(f"/api/runs/{run['id']}").json() == reading.cli_json(
                "show", str(run["id"])
            )
        published = reading.get("/api/lineage", uri="s3://bucket/published/cal.txt").json()
        assert published == reading.cli_json("lineage", "s3://bucket/published/cal.txt")
        assert {n["uri"] for n in published["nodes"]} == {
            "s3://bucket/published/cal.txt", f"file://{tmp_path}/cal.txt", f"file://{tmp_path}/raw.txt",
        }  # fmt: skip
        impact = reading.get("/api/impact", product=str(tmp_path / "raw.txt")).json()
        assert impact == reading.cli_json("impact", "--product", str(tmp_path / "raw.txt"))
        assert reading.get("/api/stale").json() == reading.cli_json("stale")
        cp_run = next(r["id"] for r in runs if r["job"] == "cp")
        diff = reading.get("/api/env/diff", a=str(cp_run), b=str(cp_run)).json()
        assert diff == reading.cli_json("env", "diff", str(cp_run), str(cp_run))

        before = reading.get("/api/stats").json()
        response = reading.post("/api/v1/lineage", run_event(str(uuid.uuid4()), job="refused"))
        assert response.status_code == 405
        assert reading.get("/api/stats").json() == before
        assert not list(Path(base["DPT_SPOOL_DIR"]).glob("**/*.jsonl"))  # nothing spooled either
    finally:
        assert reading.stop() == 0
    assert "Traceback" not in reading.stderr
