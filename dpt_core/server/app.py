"""The ASGI application of ``dpt serve``: routes plus the rules every request passes.

:func:`create_app` mounts the JSON API (:mod:`dpt_core.server.api`) and the
explorer's pages (:mod:`dpt_core.server.explorer`) behind one pure-ASGI
middleware, :class:`RequestRules`, which applies, in this order:

0. on a loopback server, a ``Host`` that is not a loopback name gets 400 (DNS rebinding);
1. ``--read-only``: any write (a method other than GET, HEAD, OPTIONS) gets 405;
2. ``DPT_SERVER_TOKEN``: a write without ``Authorization: Bearer <token>`` gets 401
   (compared in constant time); a write whose ``Content-Type`` is not JSON gets 415;
3. the body limit: a declared ``Content-Length`` above it gets 413 before a byte of
   the body is read; a body that turns out longer (chunked, or a lying header) is
   cut off with 413 as soon as it passes the limit, so no request holds more than
   the limit in memory;
4. errors: an exception nobody handled becomes a 500 whose body is one JSON line
   naming an error id; the traceback goes to the log under that id, never to the
   client.

Every error body is ``{"error": "<one line>"}`` plus fields that help (``field``
for a 422, ``parameter`` for a 400 about a query parameter, ``id`` for a 500).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dpt_core.server.config import ServerConfig
from dpt_core.server.responses import ApiError, json_bytes, json_response

log = logging.getLogger("dpt.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Methods that never change anything; every other method is a write.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    """Raised by the counting ``receive`` when a body passes the limit."""


async def _send_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json_bytes(data) + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def bearer_matches(authorization: bytes | None, token: str) -> bool:
    """True when ``authorization`` is ``Bearer <token>`` (scheme case-insensitive),
    compared in constant time whatever the header holds."""
    expected = token.encode("utf-8")
    scheme, _, given = (authorization or b"").partition(b" ")
    ok_scheme = scheme.lower() == b"bearer"
    # compare_digest on every path, so a wrong scheme costs the same as a wrong token
    ok_token = hmac.compare_digest(given.strip(), expected)
    return ok_scheme and ok_token


@functools.lru_cache(maxsize=256)  # a server sees few Host headers: parsed once each
def is_loopback_name(host_header: bytes | None) -> bool:
    """True when a ``Host`` header names this machine's loopback: ``localhost`` (or a
    ``*.localhost`` name), ``127.x.y.z`` or ``[::1]``, with or without a port."""
    import ipaddress

    text = (host_header or b"").decode("latin-1").strip().lower()
    if text.startswith("["):
        name = text[1:].partition("]")[0]
    else:
        name = text.rpartition(":")[0] if text.count(":") == 1 else text
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class RequestRules:
    """Host, read-only, token, content type, body limit and error rules around the whole
    application.

    Two guards protect a server on loopback from web pages its user visits: a browser can
    post a "simple" cross-origin request (``text/plain``, a form) without asking, so a
    write must be JSON (or name no type at all, as no browser does), else 415; and a page
    whose domain is re-pointed at 127.0.0.1 (DNS rebinding) still sends its own name in
    ``Host``, so a server listening on loopback (``app.state.loopback_only``, set by
    ``dpt serve``) answers only requests addressed to a loopback name, else 400.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        config = self.config
        application = scope.get("app")
        loopback_only = getattr(getattr(application, "state", None), "loopback_only", False)
        if loopback_only and not is_loopback_name(_header(scope, b"host")):
            await _send_json(
                send,
                400,
                {
                    "error": "this dpt server listens on loopback and answers only requests "
                    "addressed to localhost, 127.0.0.1 or [::1] (Host header), a guard "
                    "against DNS rebinding; serve on another address (--host) to be reached "
                    "by other names"
                },
                [],
            )
            return
        if scope["method"] not in SAFE_METHODS:
            if config.read_only:
                await _send_json(
                    send,
                    405,
                    {
                        "error": "this dpt server is read-only (dpt serve --read-only): it takes no writes"
                    },
                    [(b"allow", b"GET, HEAD")],
                )
                return
            if config.token and not bearer_matches(_header(scope, b"authorization"), config.token):
                await _send_json(
                    send,
                    401,
                    {
                        "error": "writes need 'Authorization: Bearer <token>' with the server's DPT_SERVER_TOKEN"
                    },
                    [(b"www-authenticate", b'Bearer realm="dpt"')],
                )
                return
            content_type = _header(scope, b"content-type")
            if content_type is not None and not _is_json(content_type):
                await _send_json(
                    send,
                    415,
                    {
                        "error": f"Content-Type {content_type.decode('latin-1')!r}: send "
                        "application/json (what OpenLineage clients send; a web page's form "
                        "or text/plain post is not taken)"
                    },
                    [],
                )
                return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, {"error": "Content-Length is not a number"}, [])
                return
            if length > config.max_body:
                await self._too_large(send)
                return
        await self._guarded(scope, receive, send)

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {
                "error": f"request body over {self.config.max_body} bytes "
                "(dpt serve --max-body BYTES raises the limit)"
            },
            [(b"connection", b"close")],
        )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.config.max_body
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send)
        except Exception:
            error_id = secrets.token_hex(6)
            log.exception(
                "dpt serve: internal error %s on %s %s", error_id, scope["method"], scope["path"]
            )
            if not started:
                await _send_json(
                    send,
                    500,
                    {"error": f"internal error {error_id}: see the server's log", "id": error_id},
                    [],
                )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return json_response({"error": exc.message, **exc.extra}, exc.status_code, exc.headers)
    return json_response({"error": exc.detail}, exc.status_code, exc.headers)


def create_app(config: ServerConfig) -> Starlette:
    """The ``dpt serve`` application for ``config``: the JSON API, the explorer, the rules.

    Its lifespan starts the group-commit writer (unless read-only) and stops it after
    the last request was answered.
    """
    from starlette.middleware import Middleware

    from dpt_core.server import api, explorer

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from dpt_core.server.writer import GroupWriter

        app.state.writer = None
        if not config.read_only:
            writer = GroupWriter()
            writer.start()
            app.state.writer = writer
        try:
            yield
        finally:
            if app.state.writer is not None:
                app.state.writer.stop()

    app = Starlette(
        routes=[*api.routes(config), *explorer.routes(config)],
        middleware=[Middleware(RequestRules, config=config)],  # type: ignore[arg-type, unused-ignore]
        exception_handlers={HTTPException: _api_error},
        lifespan=lifespan,
    )
    app.state.config = config
    return app
