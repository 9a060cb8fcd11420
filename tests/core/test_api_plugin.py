"""Plugin plumbing lives in ``dpt_core.plugin_api``; the old names warn for one release."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import dpt_core
import dpt_core.plugin_api

ROOT = Path(__file__).resolve().parents[2]
MOVED = ("CurrentContext", "Guard", "jsonable", "reset", "strict_mode")


@pytest.mark.parametrize("name", MOVED)
def test_each_old_name_still_works_and_warns_where_it_went(name):
    with pytest.warns(DeprecationWarning, match=rf"dpt_core\.plugin_api\.{name}\b") as caught:
        old = getattr(dpt_core, name)
    assert old is getattr(dpt_core.plugin_api, name)
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.warns(DeprecationWarning):
        exec(f"from dpt_core import {name}", {})


def test_new_names_and_the_public_api_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in dpt_core.plugin_api.__all__:
            getattr(dpt_core.plugin_api, name)
        for name in dpt_core.__all__:
            getattr(dpt_core, name)
    assert not set(MOVED) & set(dpt_core.__all__)
    with pytest.raises(AttributeError, match="no attribute 'trak'"):
        dpt_core.trak  # noqa: B018


def test_every_query_result_type_is_a_dpt_core_name():
    """What dpt_core.runs(), show(), stale(), impact() and env_diff() return, and the
    types inside it, can be named from dpt_core (a user annotates with them)."""
    import dpt_core.query

    assert set(dpt_core.query.__all__) <= set(dpt_core.__all__)
    for name in dpt_core.query.__all__:
        assert getattr(dpt_core, name) is getattr(dpt_core.query, name), name


def test_dpts_own_code_imports_nothing_deprecated(tmp_path):
    """No dpt module, adapter, test, example or benchmark names an old location, and
    importing dpt with every adapter's dpt plugin loaded raises no DeprecationWarning."""
    old = re.compile(
        r"\bdpt_core\.(?:" + "|".join(MOVED) + r")\b"
        r"|from dpt_core import [^\n]*\b(?:" + "|".join(MOVED) + r")\b"
    )
    offenders = []
    for folder in ("dpt_core", "dpt_airflow", "dpt_prefect", "dpt_dagster", "tests", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if old.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    script = (
        "import dpt_core, dpt_airflow.dpt_plugin, dpt_prefect.dpt_plugin, dpt_dagster.dpt_plugin\n"
        "from dpt_core.plugins import load_plugins\n"
        "print(sorted(n for n, _ in load_plugins().list_name_plugin()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"DPT_DATABASE_URL": f"sqlite:///{tmp_path / 'dpt.sqlite3'}", "PATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "airflow" in result.stdout and "dagster" in result.stdout
