"""Fixtures for ``dpt serve``: a REAL server process on a free port over a fresh database.

- :class:`DptServer` starts ``python -m dpt_core.cli serve --port 0`` with given ``DPT_*``
  variables, waits for the URL it prints, and stops it with a signal (``stop``) or starts
  it again with other options (``restart("--read-only", token="...")``).
- ``dpt_server``: a server over the test's ``dpt_env`` (SQLite unless the test also asks
  for ``dpt_backend``); ``.url``, ``.env`` (the :class:`dpt_core.testing.DptTestEnv`),
  ``.environ`` (the ``DPT_*`` variables it runs with, for a real pipeline into the same
  database), ``.get`` / ``.post`` (httpx), ``.cli_json`` (``dpt ... --json`` as a
  subprocess over the same database).
- ``pg_dpt_env``: ``dpt_env`` on a fresh PostgreSQL database.
- :func:`isolated_environ` + :class:`DptServer` for module-scoped servers (no monkeypatch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import dpt_core
from dpt_core.testing import POSTGRES_URL, DptTestEnv, isolate, make_database, require_server

REPO = Path(__file__).resolve().parents[2]
#: A hang is a failure, not a slow test (no test asserts a time).
HANG = 120.0
TOKEN_VARIABLE = "DPT_SERVER_TOKEN"


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
    """This process's variables less any ``DPT_*`` (but ``DPT_TEST_*``), plus ``environ``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("DPT_") and not k.startswith("DPT_TEST_"))
    }
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def dpt_cli(
    environ: dict[str, str], *args: str, cwd: Any = None, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m dpt_core.cli ARGS`` as a subprocess with ``environ``."""
    return subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(environ, extra),
        cwd=cwd,
        timeout=HANG,
    )


def dpt_cli_json(environ: dict[str, str], *args: str) -> Any:
    result = dpt_cli(environ, *args, "--json")
    data = json.loads(result.stdout) if result.stdout else None
    ok = (1 if data else 0) if args[:1] == ("stale",) else 0  # stale: 1 when something is
    assert result.returncode == ok, (args, result.returncode, result.stderr)
    return data


class DptServer:
    """One ``dpt serve`` process (see the module docstring)."""

    def __init__(self, environ: dict[str, str], directory: Path, env: Any = None) -> None:
        self.environ = dict(environ)
        self.directory = directory
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.args: tuple[str, ...] = ()
        self.token: str | None = None
        self._runs = 0

    # -- life cycle -------------------------------------------------------------------

    def start(
        self,
        *args: str,
        token: str | None = None,
        extra_env: dict[str, str] | None = None,
        expect_url: bool = True,
    ) -> DptServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._runs += 1
        self.args, self.token = args, token
        self.stdout_path = self.directory / f"serve-{self._runs}.out"
        self.stderr_path = self.directory / f"serve-{self._runs}.err"
        extra = dict(extra_env or {})
        if token is not None:
            extra[TOKEN_VARIABLE] = token
        command = [sys.executable, "-m", "dpt_core.cli", "serve", "--port", "0", *args]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=err, env=subprocess_env(self.environ, extra)
            )
        if expect_url:
            self.url = self._wait_for_url()
        return self

    def _wait_for_url(self) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                if line.startswith("dpt serve: http"):
                    return line.split()[2]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"dpt serve exited {self.proc.returncode} before serving:\n{self.stderr}"
                )
            time.sleep(0.05)
        raise AssertionError(f"dpt serve printed no URL within {HANG} s:\n{self.stderr}")

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=HANG)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait()

    def restart(self, *args: str, token: str | None = None, **kwargs: Any) -> DptServer:
        self.stop()
        return self.start(*args, token=token, **kwargs)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=HANG)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    # -- talking to it ----------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=HANG, **kwargs)

    def get(self, path: str, **params: Any) -> httpx.Response:
        with self.client() as client:
            # (httpx drops a query written in the path when given params, even empty ones)
            return client.get(path, params=params) if params else client.get(path)

    def post(
        self, path: str, body: Any = None, *, content: bytes | None = None, token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if content is None:
            content = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        with self.client() as client:
            return client.post(path, content=content, headers=sent)

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return dpt_cli(self.environ, *args, **kwargs)

    def cli_json(self, *args: str) -> Any:
        return dpt_cli_json(self.environ, *args)


@pytest.fixture
def dpt_server(dpt_env: DptTestEnv, tmp_path: Path) -> Iterator[DptServer]:
    """A real ``dpt serve`` (open writes on loopback) over ``dpt_env``'s database."""
    server = DptServer(dpt_env.environ(), tmp_path / "server", env=dpt_env)
    server.directory.mkdir(exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_dpt_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[DptTestEnv]:
    """dpt isolated in ``tmp_path`` on a fresh PostgreSQL database (skipped when the
    server is down; failed under CI=true)."""
    require_server(POSTGRES_URL)
    database = make_database("postgresql", tmp_path, request)
    url = next(database)
    isolate(monkeypatch, tmp_path, url)
    try:
        yield DptTestEnv(url=url, backend="postgresql", path=tmp_path)
    finally:
        dpt_core.plugin_api.reset()
        database.close()


@pytest.fixture
def pg_server(pg_dpt_env: DptTestEnv, tmp_path: Path) -> Iterator[DptServer]:
    """``dpt_server`` on PostgreSQL."""
    server = DptServer(pg_dpt_env.environ(), tmp_path / "server", env=pg_dpt_env)
    server.directory.mkdir(exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


# =========================================================================== OpenLineage events

SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = "https://github.com/data-product-tracker/tests"


def run_event(
    run_id: str,
    event_type: str = "COMPLETE",
    *,
    job: str = "job",
    namespace: str = "tests",
    inputs: tuple[tuple[str, str], ...] = (),
    outputs: tuple[tuple[str, str], ...] = (),
    when: str = "2026-01-02T03:04:05.000Z",
) -> dict[str, Any]:
    """One OpenLineage RunEvent as the HTTP transport posts it (datasets as (namespace, name))."""
    return {
        "eventType": event_type,
        "eventTime": when,
        "run": {"runId": run_id},
        "job": {"namespace": namespace, "name": job},
        "inputs": [{"namespace": ns, "name": name} for ns, name in inputs],
        "outputs": [{"namespace": ns, "name": name} for ns, name in outputs],
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }


def raw_http(port: int, head: bytes, body_parts: list[bytes] = ()) -> Any:  # type: ignore[assignment]
    """Send ``head`` and ``body_parts`` over a plain socket; return (status, headers, body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        return read_response(sock)


def read_response(sock: Any) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest
