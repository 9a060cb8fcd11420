"""``dpt serve``: the OpenLineage receiver, the JSON read API and the web explorer."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from dpt_core.cli import CliError

DEFAULT_PORT = 8765
TOKEN_VARIABLE = "DPT_SERVER_TOKEN"


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one the kernel picks)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    else:
        shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs DPT_SERVER_TOKEN for writes "
    "(or --read-only).",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (the URL printed says which).",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Take no writes (POST gets 405); works with a read-only database role.",
)
@click.option(
    "--max-body",
    "max_body",
    metavar="BYTES",
    type=click.IntRange(1),
    default=None,
    help="Largest request body accepted, in bytes (default 1 MiB); larger ones get 413.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log one line per request to stderr.",
)
def serve(host: str, port: int, read_only: bool, max_body: int | None, access_log: bool) -> None:
    """Serve the OpenLineage endpoint, the JSON API and the web explorer over HTTP.

    \b
    POST /api/v1/lineage   OpenLineage events (point any producer's HTTP transport here)
    GET  /api/...          runs, products, lineage, stale, impact, env diff, stats, health
    GET  /                 the lineage explorer

    Writes need 'Authorization: Bearer <token>' when DPT_SERVER_TOKEN is set, and
    DPT_SERVER_TOKEN is required to take writes on an address other than loopback.
    SIGINT or SIGTERM stops the server after the requests in flight were answered.

    \b
    Examples:
      dpt serve
      DPT_SERVER_TOKEN=$(cat /etc/dpt/token) dpt serve --host 0.0.0.0 --port 8765
      dpt serve --read-only --port 0
    """
    from dpt_core.config import get_settings
    from dpt_core.store.engine import safe_url

    settings = get_settings()
    token = os.environ.get(TOKEN_VARIABLE) or None
    if not read_only and token is None and not is_loopback(host):
        raise CliError(
            f"refusing to take writes on {host}, which is not a loopback address, without "
            f"{TOKEN_VARIABLE}: set {TOKEN_VARIABLE}, listen on 127.0.0.1, or add --read-only",
            2,
        )
    if not read_only and settings.disabled:
        raise CliError(
            "DPT_DISABLED is set, so every event posted would be dropped: unset it, "
            "or serve reads only with --read-only",
            2,
        )
    try:
        import uvicorn

        from dpt_core.server.app import create_app
        from dpt_core.server.config import DEFAULT_MAX_BODY, ServerConfig
    except ImportError as exc:
        raise CliError(
            f"dpt serve needs the 'server' extra ({exc.name} is missing): "
            "pip install 'data-product-tracker[server]'",
            2,
        ) from None

    from dpt_core.export.openlineage_live import configured as forwarding_configured

    if not read_only and forwarding_configured():
        click.echo(
            "dpt serve: OpenLineage forwarding (OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT..., "
            "openlineage.yml) is off in this process: events it receives are not sent on, "
            "so a producer pointed at it cannot loop",
            err=True,
        )
    os.environ["OPENLINEAGE_DISABLED"] = "true"
    config = ServerConfig(
        read_only=read_only,
        token=token,
        max_body=max_body or DEFAULT_MAX_BODY,
        settings=settings,
    )
    sock = _listen(host, port)
    url = _url(sock)
    mode = "read-only" if read_only else ("writes need a token" if token else "open writes")
    banner = f"dpt serve: {url} (database {safe_url(settings.database_url)}, {mode})"

    class Server(uvicorn.Server):  # type: ignore[misc, unused-ignore]
        """Prints the URL once serving; stops on SIGINT/SIGTERM without re-raising them, so
        a graceful stop exits 0."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                click.echo(banner)
                sys.stdout.flush()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    app = create_app(config)
    app.state.loopback_only = is_loopback(host)
    uv_config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_level="info",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=None,
    )
    server: Any = Server(uv_config)
    server.run(sockets=[sock])
    if not server.started:
        raise CliError("dpt serve did not start: see the log above", 1)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
