"""The browser side of the explorer's tests: Debian's Chromium driven by Playwright, pages
that record what they requested, and the checks every browser test makes.

Used by ``conftest.py`` here and by ``tests/examples/test_cross_orchestrator_explorer.py``
(which imports it as ``tests.server.explorer.browser``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
    """Skip locally; fail under ``CI=true`` (a missing browser must not pass silently there)."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """Chromium from PATH, headless, with no network services of its own."""
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


def watched(browser: Any, **options: Any) -> Iterator[Watched]:
    """A fresh context of ``browser`` (Playwright ``new_context`` options) and its page."""
    context = browser.new_context(**options)
    try:
        yield Watched(context)
    finally:
        context.close()


def same_origin(page: Any, site: Any) -> None:
    """Every request the page made went to the server it was opened from (``site.origin``)."""
    assert page.requests, "the page made no request at all"
    strangers = [u for u in page.requests if not u.startswith(site.origin + "/")]
    assert strangers == [], strangers


def figure(page: Any, name: str) -> int:
    """The number a page shows in its ``data-figure=NAME`` element."""
    text = page.locator(f'[data-figure="{name}"]').first.inner_text()
    match = re.match(r"\s*(\d+)", text)
    assert match, (name, text)
    return int(match.group(1))


def shoot(page: Any, shots: Path, name: str, full: bool = False) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    assert path.stat().st_size > 5_000
    return path
