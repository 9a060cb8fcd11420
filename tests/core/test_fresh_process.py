"""What a fresh process that records imports, and the database URL check without SQLAlchemy.

Not timed (benchmarks/bench_fresh_process.py measures): these tests fail when the
recording path or the settings load start importing a heavy module again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpt_core.config import _plainly_valid_url, load_settings
from dpt_core.errors import ConfigError
from dpt_core.store.engine import validate_url

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter importing this tree; its last stdout line as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    clean["PYTHONPATH"] = str(ROOT) + os.pathsep + clean.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the URL check


def test_loading_settings_with_a_server_url_leaves_sqlalchemy_out(tmp_path: Path) -> None:
    code = (
        "import json, sys, dpt_core\n"
        "from dpt_core.config import get_settings\n"
        "url = get_settings().database_url\n"
        "print(json.dumps({'url': url, 'sqlalchemy': 'sqlalchemy' in sys.modules}))\n"
    )
    for url in (
        "postgresql://postgres@127.0.0.1:5432/dpt",
        "mysql://root@127.0.0.1:3306/dpt",
        f"sqlite:///{tmp_path / 'dpt.sqlite3'}",
    ):
        env = {"DPT_DATABASE_URL": url, "DPT_REDACTION_KEY": "k", "DPT_WRITE": "background"}
        assert _python(code, env, tmp_path) == {"url": url, "sqlalchemy": False}


BAD_URLS = [
    "",
    "   ",
    "not a url",
    "oracle://scott@db/orcl",
    "postgres://db/dpt",  # SQLAlchemy no longer knows the 'postgres' name
    "postgresql://db:port/dpt",
    "postgresql://db:/dpt",
    "postgresql+nosuchdriver://db/dpt",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite:///%3Amemory%3A",
    "mysql+mysqlconnector://root@db/dpt",  # driver not installed here
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_url_gets_the_full_checks_message(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as full:
        validate_url(url, source="DPT_DATABASE_URL")
    environ = {"DPT_DATABASE_URL": url, "DPT_REDACTION_KEY": "k", "DPT_CONFIG": os.devnull}
    with pytest.raises(ConfigError) as light:
        load_settings(environ)
    assert str(light.value) == str(full.value)
    assert not _plainly_valid_url(url)


_ODD = ["", ":", "/", "@", "?", "%3A", "%", " ", "\n", "[", "]", "é", "x:y"]
URLS = st.builds(
    lambda scheme, user, host, port, slash, database, query: (
        f"{scheme}://{user}{host}{port}{slash}{database}{query}"
    ),
    st.sampled_from(
        [
            "sqlite",
            "sqlite+pysqlite",
            "postgresql",
            "postgresql+psycopg",
            "postgresql+psycopg2",
            "postgresql+asyncpg",
            "postgres",
            "mysql",
            "mysql+pymysql",
            "mariadb",
            "oracle",
            "SQLITE",
            "sql ite",
        ]
    ),
    st.sampled_from(["", "user@", "user:pw@", "user:p@ss@", ":pw@", "u/x@", *_ODD]),
    st.sampled_from(["", "host", "127.0.0.1", "[::1]", "[::1", "ho/st", *_ODD]),
    st.sampled_from(["", ":5432", ":", ":port", ":٣", ": 1", *_ODD]),
    st.sampled_from(["", "/", "//", *_ODD]),
    st.sampled_from(["", "db", "/abs/db.sqlite3", ":memory:", "%3Amemory%3A", "a?b", *_ODD]),
    st.sampled_from(["", "?sslmode=require", "?a=1&a=2", "?", "?x", *_ODD]),
)


@settings(max_examples=300)
@given(URLS)
def test_what_the_light_check_accepts_the_full_check_accepts(url: str) -> None:
    if _plainly_valid_url(url):
        validate_url(url)  # raises if the light check let a bad URL through


# --------------------------------------------------------------------------- the deferred path

#: Modules a process that only spools must not import (each cost milliseconds, some a
#: lot): the database stack, the metadata reader (the entry points are cached), the
#: config and directory helpers (everything is set by DPT_* here), process spawning (no
#: git outside a work tree, the platform string cached), the adapter kit and the
#: OpenLineage exporter (loaded with the adapters' plugins before), the network stack (the
#: host name comes from ``uname()`` on Linux), the writer's queue and ``shlex``, and
#: ``dataclasses`` (the events, settings and file facts are :class:`~dpt_core.frozen.Frozen`:
#: generating a dataclass's methods cost ~0.6 ms a class) and ``logging`` (imported at
#: dpt's first log message, :mod:`dpt_core.log`), ``getpass`` with ``termios`` (the user
#: name read as getpass reads it) and ``blake3`` (imported when it is the hash algorithm).
NOT_IMPORTED = (
    "sqlalchemy",
    "alembic",
    "importlib.metadata",
    "email",
    "platformdirs",
    "tomllib",
    "subprocess",
    "platform",
    "uuid",
    "secrets",
    "dpt_core.store.engine",
    "dpt_core.adapter",
    "dpt_core.export.openlineage",
    "cachetools",
    "concurrent.futures",
    "pkgutil",
    *(("socket",) if sys.platform == "linux" else ()),
    "queue",
    "shlex",
    "dataclasses",
    "logging",
    "getpass",
    "termios",
    "blake3",
)


def _spooling_env(tmp_path: Path, url: str) -> dict[str, str]:
    """The settings of a process that only spools, everything named (an empty config file)."""
    (tmp_path / "empty.toml").write_text("")
    return {
        "DPT_DATABASE_URL": url,
        "DPT_WRITE": "deferred",
        "DPT_SPOOL_DIR": str(tmp_path / "spool"),
        "DPT_CACHE_DIR": str(tmp_path / "cache"),
        "DPT_REDACTION_KEY": "k",
        "DPT_CONFIG": str(tmp_path / "empty.toml"),
    }


RECORD = (
    "import json, sys, dpt_core\n"
    "with dpt_core.invocation('fresh') as inv:\n"
    "    inv.write({out!r})\n"
    "print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))\n"
)


@pytest.mark.parametrize(
    "url", ["sqlite:///{tmp}/dpt.sqlite3", "postgresql://postgres@127.0.0.1:5432/dpt"]
)
def test_a_process_that_only_spools_imports_nothing_heavy(tmp_path: Path, url: str) -> None:
    out = tmp_path / "product.txt"
    out.write_text("one output\n")
    env = _spooling_env(tmp_path, url.format(tmp=tmp_path))
    code = RECORD.format(out=str(out), names=NOT_IMPORTED)
    _python(code, env, tmp_path)  # the first process fills the caches (entry points, host)
    assert _python(code, env, tmp_path) == []
    spooled = [
        event["kind"]
        for path in sorted((tmp_path / "spool").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
        for event in json.loads(line)
    ]
    assert spooled.count("invocation_started") == 2
    assert spooled.count("products_written") == 2


def test_dpt_run_that_only_spools_imports_no_database_stack(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("made\n")
    env = _spooling_env(tmp_path, f"sqlite:///{tmp_path}/dpt.sqlite3")
    # (click imports uuid and with it platform; dpt run starts the command with subprocess
    # and records its command line, joined with shlex; the CLI sends log messages to stderr)
    click_and_run = ("uuid", "platform", "subprocess", "shlex", "logging")
    names = (
        *(m for m in NOT_IMPORTED if m not in click_and_run),
        "rich",
        "dpt_core.cli.query",
        "dpt_core.cli.analysis",
    )
    code = (
        "import json, sys\n"
        "from dpt_core.cli import main\n"
        "try:\n"
        "    main(['run', '--name', 'cli', '-o', 'out.txt', '--', 'true'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))\n"
    )
    _python(code, env, tmp_path)  # the first process fills the caches
    assert _python(code, env, tmp_path) == []
    spooled = [
        event
        for path in sorted((tmp_path / "spool").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
        for event in json.loads(line)
    ]
    assert [e["job"] for e in spooled if e["kind"] == "invocation_started"] == ["cli", "cli"]
    assert sum(e["kind"] == "products_written" for e in spooled) == 2


# --------------------------------------------------------------------------- name globs

GLOB_NAMES = st.text(alphabet="AbKkSsxY_Z9-.\u017f\u212a\u00e9*?[]", max_size=10)
GLOB_PATTERNS = st.lists(
    st.text(alphabet="AbKkSsY_Z9*?[]-.\u017f\u212a\u00e9", max_size=6), max_size=5
).map(tuple)


@settings(max_examples=500)
@given(GLOB_NAMES, GLOB_PATTERNS)
def test_name_globs_match_as_the_regular_expression_does(name: str, patterns: tuple) -> None:
    from dpt_core.environment import _glob_matcher, _glob_regex

    regex = _glob_regex(patterns)
    assert _glob_matcher(patterns)(name) == (regex is not None and regex.match(name) is not None)


def test_the_default_name_lists_match_as_before() -> None:
    from dpt_core import environment as env

    names = [
        *os.environ,
        "PGPASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "GIT_SHA",
        "ssh_auth_sock",
        "XDG_SESSION_ID",
        "MY_RUN_ID",
        "keyring",
        "DB_DSN",
        "TERMINAL",
        "_",
        "PWD",
    ]
    for group in (
        env.SECRET_NAMES,
        env.VOLATILE_NAMES,
        env._IDENTIFIER_NAMES,
        env._DESCRIPTOR_NAMES,
    ):
        regex = env._glob_regex(group)
        assert regex is not None
        for name in names:
            assert env._glob_matcher(group)(name) == (regex.match(name) is not None), name


# --------------------------------------------------------------------------- cached host facts


def test_host_facts_are_platforms_and_come_from_the_cache_when_its_key_fits(
    tmp_path: Path,
) -> None:
    import platform
    import socket

    from dpt_core.environment import _host_facts
    from dpt_core.process import hostname

    compute = _host_facts.__wrapped__  # the function, without the in-process memo
    expected = (platform.python_version(), platform.python_implementation(), platform.platform())
    assert compute(tmp_path) == expected  # computed and stored
    assert compute(tmp_path) == expected  # read back
    cache = tmp_path / "host-facts.json"
    (stored,) = json.loads(cache.read_text())["entries"]
    marker = {"key": stored["key"], "value": ["9.9", "Marker", "Marker-OS"]}
    cache.write_text(json.dumps({"entries": [marker]}))
    assert compute(tmp_path) == ("9.9", "Marker", "Marker-OS")  # the cache is what is read
    other = {"key": [*stored["key"][:-1], 0], "value": ["9.9", "M", "M"]}
    cache.write_text(json.dumps({"entries": [other]}))
    assert compute(tmp_path) == expected  # another interpreter file: computed again
    assert [e["key"] for e in json.loads(cache.read_text())["entries"]] == [
        stored["key"],
        other["key"],
    ]  # both kept, the newest first
    cache.write_text("{not json")
    assert compute(tmp_path) == expected
    assert hostname() == socket.gethostname()


def test_a_keyed_cache_keeps_the_most_recent_keys(tmp_path: Path) -> None:
    from dpt_core.config import KEYED_CACHE_ENTRIES, read_keyed_cache, write_keyed_cache

    path = tmp_path / "cache" / "facts.json"
    assert read_keyed_cache(path, "a") is None  # no file yet
    write_keyed_cache(path, ("a", 1), {"v": "a"})
    write_keyed_cache(path, "b", ["b"])
    assert read_keyed_cache(path, ["a", 1]) == {"v": "a"}  # a tuple key reads back as a list
    assert read_keyed_cache(path, ("a", 1)) == {"v": "a"}
    assert read_keyed_cache(path, "b") == ["b"]
    write_keyed_cache(path, "b", ["b2"])  # a key written again replaces its value
    assert read_keyed_cache(path, "b") == ["b2"]
    for n in range(KEYED_CACHE_ENTRIES - 1):
        write_keyed_cache(path, f"k{n}", n)
    assert read_keyed_cache(path, "b") == ["b2"]  # still among the most recent
    assert read_keyed_cache(path, ("a", 1)) is None  # the oldest, dropped
    assert len(json.loads(path.read_text())["entries"]) == KEYED_CACHE_ENTRIES
    path.write_text(json.dumps({"key": "b", "value": 1}))  # the shape before: a miss
    assert read_keyed_cache(path, "b") is None
    write_keyed_cache(path, "b", 2)
    assert read_keyed_cache(path, "b") == 2


def test_scripts_in_two_directories_both_find_their_entry_points_cached(tmp_path: Path) -> None:
    """The entry points' key holds the import path, whose first entry is the script's
    directory: two scripts sharing a cache directory must not evict each other's."""
    out = tmp_path / "product.txt"
    out.write_text("one output\n")
    env = _spooling_env(tmp_path, f"sqlite:///{tmp_path}/dpt.sqlite3")
    scripts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        script = tmp_path / name / "job.py"
        script.write_text(RECORD.format(out=str(out), names=("importlib.metadata",)))
        scripts.append(script)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    clean["PYTHONPATH"] = str(ROOT) + os.pathsep + clean.get("PYTHONPATH", "")

    def imported(script: Path) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script)],
            env={**clean, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    assert [imported(s) for s in scripts] == [["importlib.metadata"]] * 2  # each fills it
    assert [imported(s) for s in scripts * 2] == [[]] * 4  # then both read it


@pytest.mark.parametrize(
    "set_here",
    [{}, {"LOGNAME": "log-name"}, {"USER": "user-name"}, {"LNAME": "l", "USERNAME": "u"}],
)
def test_the_user_name_is_what_getpass_answers(
    set_here: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import getpass

    from dpt_core.environment import _login_name

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in set_here.items():
        monkeypatch.setenv(name, value)
    assert _login_name() == getpass.getuser()


def test_new_uuids_are_random_version_4_uuids() -> None:
    import uuid

    from dpt_core.tracker import DPT_NAMESPACE, invocation_uuid, new_uuid

    made = {new_uuid() for _ in range(1000)}
    assert len(made) == 1000
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert invocation_uuid("a", 1) == str(uuid.uuid5(DPT_NAMESPACE, "a\x1f1"))
    assert str(DPT_NAMESPACE) == "6f1d1c8e-3b0e-5f5a-9c57-2d1b7e0c4a11"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(st.characters(exclude_categories=["Cs"])), st.integers(), st.none()),
        max_size=8,
    )
)
def test_invocation_uuids_are_the_standard_library_s_uuid5(parts: list[object]) -> None:
    import uuid

    from dpt_core.tracker import DPT_NAMESPACE, invocation_uuid

    expected = uuid.uuid5(DPT_NAMESPACE, "\x1f".join(str(p) for p in parts))
    assert invocation_uuid(*parts) == str(expected)
    assert uuid.UUID(invocation_uuid(*parts)).version == 5
