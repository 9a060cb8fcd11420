"""Fixtures for the explorer's tests: a real ``dpt serve`` over a database that real
pipelines filled, and a real Chromium (Debian's, driven by Playwright).

- ``survey_site`` (session): ``python -m dpt_core.cli serve --port 0`` over a fresh SQLite
  database in a temporary directory; while it runs, ``examples/quickstart.py`` and
  ``survey_pipeline.py`` (``dpt run`` and the Python API, see there) record into the same
  database as subprocesses with the server's ``DPT_*`` variables (the survey also sends
  OpenLineage events to the server, as dbt-ol and Spark would); then ``flat.txt`` of
  the quickstart is edited, so what was made from it is stale.
- ``chromium`` (session): the browser, headless, no network services of its own.
- ``page`` / ``nojs_page`` / ``phone_page``: a fresh context at 1280x800 (JavaScript on or
  off) or at a phone's 390x844; every request it makes is recorded in ``.requests``
  (the tests check none leaves the server's origin), dialogs in ``.dialogs``, console
  errors in ``.errors``.
- ``shots``: where screenshots go (the test's own temporary directory). With
  ``DPT_TEST_EXPLORER_SHOTS=DIR`` the two pictures used by the README and the docs are
  also copied there (``docs/`` to refresh them).

Chromium missing: skipped locally, failed under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import Watched, chromium_browser, watched
from .explorer_site import Serve, Site, fill, isolated_environ


@pytest.fixture(scope="session")
def survey_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("explorer-site")
    environ = isolated_environ(base / "dpt", f"sqlite:///{base / 'dpt.sqlite3'}")
    # The pipelines' files under a short path of their own: the pages (and the screenshots
    # the docs show) name them.
    work = Path(tempfile.mkdtemp(prefix="dpt-explorer-"))
    server = Serve(environ, base / "server").start()
    try:
        quickstart, survey = fill(environ, work, server.url)
        yield Site(server, environ, quickstart, survey)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    assert "Traceback" not in server.stderr, server.stderr


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Watched]:
    yield from watched(chromium, viewport={"width": 1280, "height": 800})


@pytest.fixture
def nojs_page(chromium: Any) -> Iterator[Watched]:
    yield from watched(chromium, viewport={"width": 1280, "height": 800}, java_script_enabled=False)


@pytest.fixture
def phone_page(chromium: Any) -> Iterator[Watched]:
    yield from watched(
        chromium, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    return directory


@pytest.fixture
def publish() -> Any:
    """``publish(shot, name)``: copy a screenshot to ``$DPT_TEST_EXPLORER_SHOTS`` (when set)."""

    def copy(shot: Path, name: str) -> None:
        target = os.environ.get("DPT_TEST_EXPLORER_SHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, Path(target) / name)

    return copy
