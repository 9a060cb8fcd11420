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

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
#: A hang is a failure, not a slow test (no test asserts a time).
HANG = 180.0
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


def isolated_environ(directory: Path, url: str) -> dict[str, str]:
    """``DPT_*``/``XDG_*`` variables pointing every dpt setting into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "no-config.toml").write_text("")
    environ = {
        "DPT_DATABASE_URL": url,
        "DPT_SPOOL_DIR": str(directory / "spool"),
        "DPT_CACHE_DIR": str(directory / "cache"),
        "DPT_REDACTION_KEY": "dpt-test-key",
        "DPT_CONFIG": str(directory / "no-config.toml"),
    }
    for xdg in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        environ[xdg] = str(directory / xdg.lower())
    return environ


def subprocess_env(environ: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("DPT_") and not k.startswith("DPT_TEST_"))
    }
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class Serve:
    """One ``dpt serve`` process."""

    environ: dict[str, str]
    directory: Path
    args: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> Serve:
        self.directory.mkdir(parents=True, exist_ok=True)
        out, err = self.directory / "serve.out", self.directory / "serve.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dpt_core.cli", "serve", "--port", "0", *self.args],
                stdout=stdout,
                stderr=stderr,
                env=subprocess_env(self.environ, self.extra),
            )
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith("dpt serve: http"):
                    self.url = line.split()[2].rstrip("/")
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"dpt serve exited {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"dpt serve printed no URL within {HANG} s:\n{self.stderr}")

    @property
    def stderr(self) -> str:
        return (self.directory / "serve.err").read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@dataclass
class Site:
    """A running ``dpt serve`` and what the pipelines wrote."""

    server: Serve
    environ: dict[str, str]
    quickstart: Path
    survey: Path
    _runs: dict[str, list[int]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def get(self, path: str, **params: Any) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=HANG) as client:
            return client.get(path, params=params or None)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dpt_core.cli", *args],
            capture_output=True,
            text=True,
            env=subprocess_env(self.environ),
            timeout=HANG,
        )

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout)

    def run_id(self, job: str, index: int = 0) -> int:
        """The id of the ``index``-th newest run of ``job`` (``dpt runs --job JOB``)."""
        if job not in self._runs:
            self._runs[job] = [r["id"] for r in self.cli_json("runs", "--job", job)]
        return self._runs[job][index]


def run_script(environ: dict[str, str], *args: str, extra: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(environ, extra),
        timeout=HANG * 2,
    )
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-4000:])


def fill(environ: dict[str, str], work: Path, url: str) -> tuple[Path, Path]:
    """Record the quickstart and the survey pipeline (its OpenLineage events through the
    server at ``url``), then edit an input of the quickstart."""
    quickstart, survey = work / "quickstart", work / "survey"
    run_script(environ, str(REPO / "examples" / "quickstart.py"), str(quickstart))
    run_script(
        environ, str(HERE / "survey_pipeline.py"), str(survey), extra={"DPT_TEST_SERVER_URL": url}
    )
    (quickstart / "flat.txt").write_text("1.05\n")  # a new flat field: calibrated.csv is stale
    return quickstart, survey


@pytest.fixture(scope="session")
def survey_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("explorer-site")
    environ = isolated_environ(base / "dpt", f"sqlite:///{base / 'dpt.sqlite3'}")
    server = Serve(environ, base / "server").start()
    try:
        quickstart, survey = fill(environ, base / "work", server.url)
        yield Site(server, environ, quickstart, survey)
    finally:
        server.stop()
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
