"""What the explorer's tests run against: ``dpt serve`` processes over databases that
real pipelines filled (used by ``conftest.py`` and the tests; see there)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
#: A hang is a failure, not a slow test (no test asserts a time).
HANG = 180.0


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
        data = json.loads(result.stdout) if result.stdout else None
        ok = (1 if data else 0) if args[:1] == ("stale",) else 0  # stale: 1 when something is
        assert result.returncode == ok, (args, result.returncode, result.stderr)
        return data

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
