"""Every install line a newcomer reads works as written.

dpt is not on a public package index, so ``pip install "data-product-tracker[...]"``
cannot work; the docs say ``pip install '.[extra]'`` from a clone instead. Nor may a
line point at a placeholder (``git+<this repository>``) the reader cannot fill in.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READ_BY_NEWCOMERS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").rglob("*.py")),
]

# `pip install` (any options) then the distribution's name: an index install.
INDEX_INSTALL = re.compile(
    r"""pip\s+install\s+(?:-{1,2}[\w-]+(?:[= ](?!['"]?data-product-tracker)\S+)?\s+)*['"]?data-product-tracker""",
)
# A URL or VCS reference whose host or path is a <placeholder>.
PLACEHOLDER_URL = re.compile(r"""(?:git\+|https?://|@\s*)<[^>\s]+[^>]*>""")


def offending_lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if INDEX_INSTALL.search(line) or PLACEHOLDER_URL.search(line)
    ]


@pytest.mark.parametrize("path", READ_BY_NEWCOMERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_install_from_an_index_dpt_is_not_on(path):
    assert offending_lines(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(ROOT)}: dpt is not on PyPI; write pip install '.[extra]' "
        "(from a clone) instead"
    )


@pytest.mark.parametrize(
    "line",
    [
        'pip install "data-product-tracker[airflow]"',
        "pip install 'data-product-tracker[server,postgres]'",
        "RUN pip install --no-cache-dir 'data-product-tracker[server]'",
        "pip install -U data-product-tracker",
        'pip install "data-product-tracker @ git+<this repository>"',
        "pip install git+https://<host>/dpt.git",
    ],
)
def test_the_check_catches_what_cannot_work(line):
    assert offending_lines(line) == [line]


@pytest.mark.parametrize(
    "line",
    [
        "pip install '.[airflow]'",
        "pip install -e '.[airflow,dagster]'",
        "RUN pip install --no-cache-dir '/src[server,postgres]'",
        "dpt records <uri> versions",  # a placeholder in prose, not in a URL
    ],
)
def test_the_check_lets_working_lines_pass(line):
    assert offending_lines(line) == []


def test_the_install_lines_name_the_extras_that_exist():
    import tomllib

    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    named = set()
    for path in READ_BY_NEWCOMERS:
        for group in re.findall(r"pip install (?:-\S+ )*'[^'\[]*\[([\w,]+)\]'", path.read_text()):
            named.update(group.split(","))
    assert named, "no install lines found"
    assert named - extras == set()
