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

from .explorer_site import Serve, Site, fill, isolated_environ

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


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
    executable = shutil.which("chromium")
    if executable is None:
        missing("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (tox -e server installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A Playwright page with what it requested, the dialogs it opened and its errors."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console",
            lambda message: (
                self.errors.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning")
                else None
            ),
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)


def _watched(chromium: Any, **options: Any) -> Iterator[Watched]:
    context = chromium.new_context(**options)
    try:
        yield Watched(context)
    finally:
        context.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Watched]:
    yield from _watched(chromium, viewport={"width": 1280, "height": 800})


@pytest.fixture
def nojs_page(chromium: Any) -> Iterator[Watched]:
    yield from _watched(
        chromium, viewport={"width": 1280, "height": 800}, java_script_enabled=False
    )


@pytest.fixture
def phone_page(chromium: Any) -> Iterator[Watched]:
    yield from _watched(
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
