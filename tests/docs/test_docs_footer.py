"""Every page of the built docs names the project in its footer (not a bare "©.")."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_copyright_line_names_the_project():
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["project"] == "dpt — data-product-tracker"
    assert conf["project"] in conf["copyright"]


@pytest.mark.docs_build
def test_the_built_footer_names_the_project(tmp_path):
    """The footer as rendered, on every page (runs in tox -e docs, where Sphinx is)."""
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    pages = sorted(tmp_path.glob("*.html"))
    assert len(pages) > 10
    for page in pages:
        html = page.read_text()
        footer = html.split('<div class="footer">', 1)[1].split("</div>", 1)[0]
        assert "&#169; dpt — data-product-tracker, by its developers." in footer, page.name
