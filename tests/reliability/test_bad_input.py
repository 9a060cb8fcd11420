"""Bad input gets one clear line naming it (CLI exit 2), never a traceback, never a hang,
and nothing already recorded is lost.

Every test first records something good, then feeds the bad input, then checks
that what was there is still there (:func:`conftest.table_counts`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    HANG,
    cli,
    cli_json,
    direct_rows,
    direct_scalar,
    dpt,
    one_line_error,
    subprocess_env,
    table_counts,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import dpt_core
from dpt_core.spool import Spool
from dpt_core.store.plugin import current_store


@pytest.fixture
def recorded_sqlite(dpt_env, tmp_path):
    """``dpt_env`` (SQLite) with one good run already recorded; yields (env, counts before)."""
    (tmp_path / "good.dat").write_text("good")
    cli("track", str(tmp_path / "good.dat"), check=0)
    return dpt_env, table_counts(dpt_env.url)


@pytest.fixture
def recorded(any_env, tmp_path):
    """``any_env`` with one good run already recorded; yields (env, counts before)."""
    good = tmp_path / "good.dat"
    good.write_text("good")
    cli("track", str(good), check=0)
    counts = table_counts(any_env.url)
    assert counts["invocations"] == 1 and counts["data_product_versions"] == 1
    return any_env, counts


def assert_nothing_lost(env, before):
    after = table_counts(env.url)
    for table, count in before.items():
        assert after[table] >= count, f"{table} lost rows: {count} -> {after[table]}"


# --------------------------------------------------------------------------- files


def test_missing_files_and_symlink_loops_are_named_and_nothing_is_recorded(
    recorded_sqlite, tmp_path, monkeypatch
):
    env, before = recorded_sqlite
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    too_long = "x/" * 2100 + "f"  # 4 201 characters: longer than PATH_MAX
    cases = [
        (("track", "missing.dat"), "missing.dat"),
        (("track", str(tmp_path / "good.dat"), "--parent", "gone.dat"), "gone.dat"),
        (("run", "-i", "absent.fits", "--", "true"), "absent.fits"),
        (("track", "loop1"), "loop1"),
        (("track", "dangling"), "dangling"),
        (("run", "-i", "loop2", "--", "true"), "loop2"),
        (("track", too_long), too_long[:40]),
    ]
    for args, needle in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert needle in one_line_error(result), args
    assert table_counts(env.url) == before


def test_directories_fifos_and_4000_character_paths_are_recorded_without_hanging(
    recorded, tmp_path
):
    env, before = recorded
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("a")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    deep = tmp_path / "deep"
    while len(str(deep)) < 3700:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    long_file = deep / ("f" * (4000 - len(str(deep)) - 1))
    long_file.write_text("long")
    assert len(str(long_file)) == 4000

    assert cli("track", str(tree), check=0).stdout.strip() == tree.as_uri()
    result = dpt("track", str(fifo))  # subprocess timeout: a hang fails the test
    assert (
        result.returncode == 0
        and "named pipe" in one_line_error(result)
        and "pipe" in result.stderr
    )
    cli("track", str(long_file), check=0)
    cli("run", "-i", str(long_file), "-o", str(tree), "--", "true", check=0)

    shown = cli_json("show", str(long_file))
    assert shown["uri"] == long_file.as_uri() and len(shown["uri"]) == 4000 + len("file://")
    assert shown["versions"][0]["content_hash"].startswith("xxh3_128:")
    tree_versions = cli_json("show", str(tree))["versions"]
    assert len(tree_versions) == 2 and all(v["content_hash"] for v in tree_versions)
    fifo_version = cli_json("show", str(fifo))["versions"][0]
    assert fifo_version["content_hash"] is None  # kept, without a hash
    assert_nothing_lost(env, before)


def test_unreadable_file_is_named_with_the_fix_and_never_a_traceback(dpt_env, tmp_path):
    """Root reads everything, so the check drops CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH
    with setpriv; as an ordinary user a plain ``chmod 000`` does the same."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    locked = Path(tempfile.mkdtemp(prefix="dpt-unreadable-"))
    try:
        secret = locked / "unreadable.dat"
        secret.write_text("cannot read me")
        secret.chmod(0)
        prefix = (
            [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        )

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, sys.executable, "-m", "dpt_core.cli", *args],
                capture_output=True,
                text=True,
                env=subprocess_env(),
                timeout=HANG,
            )

        probe = subprocess.run([*prefix, "cat", str(secret)], capture_output=True)
        assert probe.returncode != 0, "the file is still readable: the check proves nothing"
        result = run("track", str(secret))
        line = one_line_error(result)
        assert str(secret) in line and "permission denied" in line and "readable" in line
        assert result.returncode in (0, 2)
        if result.returncode == 0:  # recorded, honestly, without a content hash
            assert direct_rows(dpt_env.url, "SELECT content_hash FROM data_product_versions") == [
                (None,)
            ]
        else:
            assert direct_scalar(dpt_env.url, "SELECT COUNT(*) FROM data_product_versions") == 0
    finally:
        shutil.rmtree(locked)


def test_non_utf8_file_names_round_trip(any_env, tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9-\xff.fits"
    with open(name, "wb") as handle:
        handle.write(b"latin-1 name")
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", "track", name],
        capture_output=True,
        env=subprocess_env(),
        timeout=HANG,
    )
    assert result.returncode == 0, result.stderr
    uri = result.stdout.decode().strip()
    assert uri.endswith("/caf%E9-%FF.fits")
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", "show", name, "--json"],
            capture_output=True,
            env=subprocess_env(),
            timeout=HANG,
            check=True,
        ).stdout
    )
    assert shown["uri"] == uri and shown["versions"][0]["content_hash"]
    assert dpt_core.track(os.fsdecode(name)) == [uri]  # str (surrogate-escaped) and bytes agree


def test_non_utf8_command_arguments_and_environment_values_are_recorded(any_env, tmp_path):
    out = tmp_path / "out.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpt_core.cli",
            "run",
            "-p",
            b"label=\xff",
            "-o",
            str(out),
            "--",
            "sh",
            "-c",
            b"echo caf\xe9 > out.txt",
        ],
        capture_output=True,
        env=subprocess_env({"LEGACY_LATIN1": os.fsdecode(b"caf\xe9")}),
        cwd=tmp_path,
        timeout=HANG,
    )
    assert result.returncode == 0, result.stderr
    assert Spool(tmp_path / "spool").status().events == 0, result.stderr.decode(errors="replace")
    (run,) = cli_json("runs")
    assert run["status"] == "success"


REJECT_EDGES = {
    "postgresql": [
        "CREATE FUNCTION dpt_test_reject() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'rejected for good'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER dpt_test_reject BEFORE INSERT ON lineage_edges "
        "FOR EACH ROW EXECUTE FUNCTION dpt_test_reject()",
    ],
    "sqlite": [
        "CREATE TRIGGER dpt_test_reject BEFORE INSERT ON lineage_edges "
        "BEGIN SELECT RAISE(ABORT, 'rejected for good'); END"
    ],
}


@pytest.mark.parametrize("write", ["sync", "background"])
def test_a_batch_the_database_rejects_for_good_is_kept_aside_whole_and_blocks_nothing(
    any_env, tmp_path, caplog, monkeypatch, write
):
    monkeypatch.setenv("DPT_WRITE", write)
    dpt_core.plugin_api.reset()
    (tmp_path / "raw").write_text("raw")
    store = current_store()
    assert store.mode == write
    dpt_core.track(tmp_path / "raw")
    dpt_core.flush()  # (background: the writer's first pass, which replays the whole spool)
    engine = create_engine(any_env.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for statement in REJECT_EDGES[any_env.backend]:
            conn.exec_driver_sql(statement)
    engine.dispose()
    # background: the writer claims the next batch(es), then waits for the store's lock
    store._lock.acquire()
    try:
        dpt_core.track(tmp_path / "raw")
        while write == "background" and not any(".w" in f.name for f in store.spool.files()):
            time.sleep(0.001)  # not claimed yet
        # background: every batch from here on is in the writer's second claim, the refused
        # one with the good ones behind it
        went_on = False
        with dpt_core.invocation("rejected") as inv:
            inv.read(tmp_path / "raw")
            inv.write("s3://bucket/rejected-output")  # product and version in, then edges fail
            went_on = True
        for i in range(3):
            with dpt_core.invocation(f"fine{i}") as inv:
                inv.write(f"s3://bucket/fine{i}")  # no inputs, no edges: the database takes it
        assert went_on
    finally:
        store._lock.release()
    dpt_core.flush()  # read below with an engine of the test's own
    jobs = {j for (j,) in direct_rows(any_env.url, "SELECT job FROM invocations")}
    assert {"fine0", "fine1", "fine2"} <= jobs, f"later events were blocked: {jobs}"
    uris = {u for (u,) in direct_rows(any_env.url, "SELECT uri FROM data_products")}
    assert "s3://bucket/rejected-output" not in uris, "half of the rejected batch was kept"
    assert Spool(any_env.path / "spool").status().events == 0
    kept = b"".join(p.read_bytes() for p in (any_env.path / "spool").rglob("*.bad"))
    assert b"s3://bucket/rejected-output" in kept and b"rejected for good" in kept
    assert "rejected by the database" in caplog.text


UNREJECT_EDGES = {
    "postgresql": [
        "DROP TRIGGER dpt_test_reject ON lineage_edges",
        "DROP FUNCTION dpt_test_reject()",
    ],
    "sqlite": ["DROP TRIGGER dpt_test_reject"],
}


def test_rejected_batches_are_recorded_by_replay_bad_once_their_cause_is_fixed(any_env, tmp_path):
    (tmp_path / "raw").write_text("raw")
    dpt_core.track(tmp_path / "raw")
    engine = create_engine(any_env.url.replace("postgresql://", "postgresql+psycopg://", 1))

    def run_sql(statements: list[str]) -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    run_sql(REJECT_EDGES[any_env.backend])
    with dpt_core.invocation("rejected") as inv:
        inv.read(tmp_path / "raw")
        inv.write("s3://bucket/rejected-output")
    dpt_core.plugin_api.reset()
    # and a line nobody can read, quarantined by a replay
    spool = Spool(any_env.path / "spool", any_env.url)
    with open(spool.own_file, "ab") as handle:
        handle.write(b'[{"kind": "invocation_started", "uuid": "cut sho\n')
    cli("spool", "replay", check=0)
    (bad_file,) = (any_env.path / "spool").rglob("*.bad")
    before, kept = table_counts(any_env.url), bad_file.read_bytes()

    dry = cli_json("spool", "replay", "--bad", "--dry-run")
    assert dry["dry_run"] is True
    outcomes = sorted((b["outcome"], b["events"]) for b in dry["batches"])
    assert [o for o, _ in outcomes] == ["unreadable", "would_record"]
    (batch,) = [b for b in dry["batches"] if b["outcome"] == "would_record"]
    (rejected_uuid,) = direct_rows(
        any_env.url, "SELECT uuid FROM invocations WHERE job = 'rejected'"
    )
    assert [uuid for uuid, _job in batch["runs"]] == [rejected_uuid[0]]
    assert "s3://bucket/rejected-output" in batch["products"]
    assert "rejected for good" in batch["error"]
    assert table_counts(any_env.url) == before and bad_file.read_bytes() == kept

    # The cause is still there: rejected again, kept with the new error, nothing half-written.
    again = cli("spool", "replay", "--bad", check=1)
    assert "rejected again" in again.stdout
    assert table_counts(any_env.url) == before
    assert b"s3://bucket/rejected-output" in bad_file.read_bytes()

    run_sql(UNREJECT_EDGES[any_env.backend])
    engine.dispose()
    done = cli("spool", "replay", "--bad", check=0)
    assert "recorded" in done.stdout
    rows = direct_rows(
        any_env.url,
        "SELECT i.job, i.status, p.uri FROM invocations i "
        "JOIN data_product_versions v ON v.produced_by_id = i.id "
        "JOIN data_products p ON p.id = v.product_id WHERE i.job = 'rejected'",
    )
    assert [tuple(r) for r in rows] == [("rejected", "success", "s3://bucket/rejected-output")]
    edges = direct_scalar(any_env.url, "SELECT COUNT(*) FROM lineage_edges")
    assert edges == 1
    # Only the unreadable line is left; a second replay records nothing twice.
    assert bad_file.read_bytes().strip() == b'[{"kind": "invocation_started", "uuid": "cut sho'
    after = table_counts(any_env.url)
    cli("spool", "replay", "--bad", check=0)
    assert table_counts(any_env.url) == after


# --------------------------------------------------------------------------- URIs


@pytest.mark.parametrize("target", ["s3://", "file://", "file:///a?b#c"])
def test_unusable_uris_exit_2_and_record_nothing(recorded, target):
    env, before = recorded
    result = cli("track", target)
    assert result.exit_code == 2 and target in one_line_error(result)
    assert table_counts(env.url) == before


def test_odd_but_valid_uri_schemes_are_kept_lowercased(recorded, tmp_path, monkeypatch):
    env, before = recorded
    targets = {
        "HTTP://Host/Path/x.fits": "http://Host/Path/x.fits",
        "foo+bar.baz://bucket/key with space": "foo+bar.baz://bucket/key with space",
        "dagster://asset/a/b": "dagster://asset/a/b",
        "FILE://OtherHost/x/../y": "file://otherhost/y",  # a file on another host, as declared
        "postgres://user:hunter2@db/schema.table": "postgres://user@db/schema.table",
        "s3://bucket/" + "k" * 5000: "s3://bucket/" + "k" * 5000,
    }
    for target, expected in targets.items():
        assert cli("track", target, check=0).stdout.strip() == expected
        assert cli_json("show", target)["uri"] == expected
    assert "hunter2" not in json.dumps(
        direct_rows(env.url, "SELECT uri FROM data_products"), default=str
    )
    monkeypatch.chdir(tmp_path)
    result = cli("track", "urn:isbn:0451450523")  # no "//": a relative path
    assert result.exit_code == 2 and "does not exist" in one_line_error(result)
    assert_nothing_lost(env, before)


# --------------------------------------------------------------------------- environments


def test_tens_of_kilobytes_in_variables_fit_on_every_backend(recorded, tmp_path):
    env, before = recorded
    big = " ".join(f"word{i}" for i in range(8000))  # ~70 kB, not secret
    huge_name = "VAR_" + "N" * 5000
    extra = {"BIG_PLAIN": big, huge_name: "x", "BIG_PASSWORD": "p" * 40000}
    cli("track", str(tmp_path / "good.dat"), env=extra, check=0)
    rows = dict(
        direct_rows(
            env.url,
            "SELECT key, value FROM env_variables WHERE key IN ('BIG_PLAIN', 'BIG_PASSWORD') "
            "OR key LIKE 'VAR_NNNN%'",
        )
    )
    assert rows["BIG_PLAIN"] == big
    assert rows[huge_name] == "x"
    assert rows["BIG_PASSWORD"] is None
    assert_nothing_lost(env, before)


def test_an_environment_whose_variables_are_a_subset_of_another_is_a_different_one(
    recorded, tmp_path
):
    env, before = recorded
    good = str(tmp_path / "good.dat")
    base = {"DPT_SUBSET_A": "1"}
    superset = {"DPT_SUBSET_A": "1", "DPT_SUBSET_B": "2"}
    for variables in (superset, base, superset, base):
        cli("track", good, env=variables, check=0)
    per_env = direct_rows(
        env.url,
        "SELECT e.id, COUNT(v.id) FROM environments e "
        "JOIN environment_variables ev ON ev.environment_id = e.id "
        "JOIN env_variables v ON v.id = ev.variable_id AND v.key LIKE 'DPT_SUBSET_%' "
        "GROUP BY e.id ORDER BY 2",
    )
    assert [count for _, count in per_env] == [1, 2]  # two environments, each found again
    runs = cli_json("runs")
    assert len({r["environment_id"] for r in runs if r["environment_id"] in dict(per_env)}) == 2
    ids = {r["environment_id"]: r["id"] for r in runs}
    small, large = (ids[e] for e, _ in per_env)
    diff = cli_json("env", "diff", str(small), str(large))
    assert not diff["same"] and "DPT_SUBSET_B" in diff["variables"]["added"]
    assert_nothing_lost(env, before)


def test_json_unfriendly_parameters_are_kept_as_strict_json(any_env):
    looped: list = []
    looped.append(looped)
    parameters = {
        "nan": math.nan,
        "inf": -math.inf,
        "bytes": b"\xff\x00",
        "set": {3, 1, 2},
        "object": object(),
        7: ("tuple", "key"),
        "path": Path("/data/x"),
        "huge": 2**100,
        "nul": "a\x00b",
        "loop": looped,
        "nested": {"deeper": [{"x": {1, 2}}]},
    }
    with dpt_core.invocation("params", parameters=parameters) as inv:
        inv.write("s3://bucket/params")
    (run,) = [r for r in cli_json("runs") if r["job"] == "params"]

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    text_out = cli("show", run["uuid"], "--json", check=0).stdout
    stored = json.loads(text_out, parse_constant=no_constants)["parameters"]
    assert stored["nan"] == "nan" and stored["inf"] == "-inf"
    assert stored["set"] == [1, 2, 3] and stored["7"] == ["tuple", "key"]
    assert stored["huge"] == 2**100 and stored["nul"].startswith("a")
    assert run["status"] == "success"


# --------------------------------------------------------------------------- settings


MALFORMED_URLS = [
    "not a url",
    "oracle://scott:tiger@db/orcl",
    "postgresql+nodriver://u:hunter2@h/db",
    "sqlite:///:memory:",
    "",
    "postgresql://u:hunter2@h:notaport/db",
    "postgresql://u:hunter2@[::1/db",
    "mysql+mysqldb://u:hunter2@h/db",
    "sqlite://admin:hunter2@/",
]


READS = (("runs",), ("stats", "--json"), ("show", "s3://bucket/x"), ("lineage", "s3://bucket/x"))


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_database_urls_give_one_line_and_exit_2(recorded_sqlite, url):
    env, before = recorded_sqlite
    for args in READS:
        result = cli(*args, env={"DPT_DATABASE_URL": url})
        assert result.exit_code == 2, (args, result.stderr)
        assert "DPT_DATABASE_URL" in one_line_error(result)
        assert "hunter2" not in result.stderr + result.stdout
    assert table_counts(env.url) == before


CORRUPT_CONFIGS = {
    "binary": b"\x00\xff\xfe garbage \x80",
    "invalid toml": b"database_url = [unclosed\n",
    "unknown key": b'colour = "blue"\n',
    "wrong type": b'connect_timeout = "soon"\n',
    "negative timeout": b"statement_timeout = -1\n",
    "bad hash": b'hash = "md5"\n',
    "bad url": b"database_url = 3\n",
    "table soup": b"[dpt]\n[dpt.database_url]\nx = 1\n",
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_CONFIGS))
def test_corrupt_config_files_give_one_line_naming_the_file_and_exit_2(
    recorded_sqlite, tmp_path, kind
):
    env, before = recorded_sqlite
    config = tmp_path / "dpt.toml"
    config.write_bytes(CORRUPT_CONFIGS[kind])
    for args in READS:
        result = cli(*args, env={"DPT_CONFIG": str(config)})
        assert result.exit_code == 2, (kind, args, result.stderr)
        assert str(config) in one_line_error(result)
    assert table_counts(env.url) == before


@pytest.mark.parametrize("broken", ["url", "config"])
def test_a_pipeline_step_under_a_broken_configuration_runs_spools_and_says_so_once(
    recorded_sqlite, tmp_path, broken
):
    """The step's own work is never failed by dpt's configuration (DESIGN: tracking never
    fails a pipeline); its events wait in the spool and come back once it is fixed."""
    env, before = recorded_sqlite
    if broken == "url":
        setting, needle = (
            {"DPT_DATABASE_URL": "postgresql://u:hunter2@h:notaport/db"},
            "DPT_DATABASE_URL",
        )
    else:
        (tmp_path / "broken.toml").write_bytes(CORRUPT_CONFIGS["invalid toml"])
        setting, needle = (
            {"DPT_CONFIG": str(tmp_path / "broken.toml")},
            str(tmp_path / "broken.toml"),
        )
    result = dpt(
        "run", "-o", "made.txt", "--", "sh", "-c", "echo made > made.txt", env=setting, cwd=tmp_path
    )
    assert result.returncode == 0 and (tmp_path / "made.txt").read_text() == "made\n"
    assert "hunter2" not in result.stderr
    spooled = Spool(tmp_path / "spool").status().events
    assert spooled > 0 and table_counts(env.url) == before
    assert cli_json("spool", "replay") == {"replayed": spooled}  # fixed: everything comes back
    assert [r["status"] for r in cli_json("runs")][0] == "success"
    line = one_line_error(result)
    assert needle in line and "spool" in line


def test_config_path_that_is_a_directory_or_missing_is_named(recorded_sqlite, tmp_path):
    env, before = recorded_sqlite
    for path in (tmp_path, tmp_path / "absent.toml"):
        result = cli("stats", env={"DPT_CONFIG": str(path)})
        assert result.exit_code == 2 and str(path) in one_line_error(result)
    assert table_counts(env.url) == before


@pytest.mark.parametrize(
    "setting",
    [{"DPT_DATABASE_URL": "not a url"}, {"DPT_CONFIG": "corrupt"}],
    ids=["bad-url", "corrupt-config"],
)
def test_bad_settings_never_fail_the_users_code(dpt_env, monkeypatch, tmp_path, setting):
    for key, value in setting.items():
        if value == "corrupt":
            value = str(tmp_path / "corrupt.toml")
            Path(value).write_text("database_url = [unclosed\n")
        monkeypatch.setenv(key, value)
    dpt_core.plugin_api.reset()
    went_on = False
    try:
        with dpt_core.invocation("user-task") as inv:
            inv.write("s3://bucket/k")
            went_on = True
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped into the user's code: {exc}") from exc
    assert went_on


# --------------------------------------------------------------------------- schema


def set_revision(url: str, revision: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


READ_COMMANDS = [
    ("runs",),
    ("stats",),
    ("show", "s3://bucket/x"),
    ("lineage", "s3://bucket/x"),
    ("stale",),
    ("impact", "--package", "numpy"),
    ("export", "--format", "prov"),
    ("env", "show", "1"),
]


def test_newer_schema_refuses_reads_and_spools_writes_without_losing_anything(recorded, tmp_path):
    env, before = recorded
    set_revision(env.url, "9999_from_the_future")
    for args in READ_COMMANDS:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        line = one_line_error(result)
        assert "newer than this dpt" in line and "upgrade data-product-tracker" in line
    # a pipeline step still runs; its events wait in the spool
    result = dpt(
        "run",
        "-o",
        str(tmp_path / "made.txt"),
        "--",
        "sh",
        "-c",
        "echo made > made.txt",
        cwd=tmp_path,
    )
    assert result.returncode == 0 and "newer than this dpt" in one_line_error(result)
    assert (tmp_path / "made.txt").read_text() == "made\n"
    spooled = Spool(tmp_path / "spool").status().events
    assert spooled > 0
    assert table_counts(env.url) == before

    from dpt_core.store.migrations import HEAD

    set_revision(env.url, HEAD)  # the right dpt (here: the schema put back)
    assert cli_json("spool", "replay") == {"replayed": spooled}
    assert {r["status"] for r in cli_json("runs")} == {"success"}
    after = table_counts(env.url)
    assert after["invocations"] == before["invocations"] + 1
    assert after["data_product_versions"] == before["data_product_versions"] + 1


def test_unmigrated_server_database_names_dpt_db_upgrade_and_keeps_the_events(pg_env, tmp_path):
    cli("db", "downgrade", "base", check=0)  # an empty server database
    for args in READ_COMMANDS:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert "dpt db upgrade" in one_line_error(result)
    result = dpt("track", "s3://bucket/x")
    assert result.returncode == 0 and "dpt db upgrade" in one_line_error(result)
    spooled = Spool(tmp_path / "spool").status().events
    assert spooled > 0
    cli("db", "upgrade", check=0)
    assert cli_json("spool", "replay") == {"replayed": spooled}
    assert [r["status"] for r in cli_json("runs")] == ["success"]
    assert cli_json("show", "s3://bucket/x")["versions"]
