"""The JSON API of ``dpt serve``: the OpenLineage receiver and the read endpoints.

Every read endpoint answers with the shape ``dpt ... --json`` prints (DESIGN.md
section 8), from the same store query functions the CLI calls, run in a worker
thread (the database work is synchronous; the event loop never waits on it).

Errors: a bad query parameter is 400 naming it (``{"error", "parameter"}``), an unknown
run or product 404, a database that cannot answer 503; see :mod:`dpt_core.server.app`
for 401, 405, 413 and 500.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dpt_core.server.config import ServerConfig
from dpt_core.server.responses import ApiError, json_response

T = TypeVar("T")

#: Upper bound of ``limit`` on /api/runs (the same as ``dpt runs --limit``).
MAX_RUNS_LIMIT = 100_000
DEFAULT_RUNS_LIMIT = 50

#: Requests of at most this many events are validated and mapped in the event loop
#: (~35 us an event, less than the ~55 us of CPU a hand-off to a worker thread costs);
#: larger ones in a worker thread, so a long list never holds the loop up.
INLINE_PARSE_EVENTS = 16

_TRUE = {"1", "true", "yes", "on", ""}
_FALSE = {"0", "false", "no", "off"}


# =========================================================================== parameters


class Params:
    """The query parameters of one request, checked against what the endpoint takes."""

    def __init__(
        self, request: Request, allowed: Iterable[str], repeatable: Iterable[str] = ()
    ) -> None:
        self.query = request.query_params
        self.allowed = sorted(allowed)
        repeatable = set(repeatable)
        for name in self.query:
            if name not in self.allowed:
                takes = ", ".join(self.allowed) if self.allowed else "no query parameters"
                raise ApiError(
                    400,
                    f"unknown query parameter {name!r}: this endpoint takes {takes}",
                    parameter=name,
                )
            if name not in repeatable and len(self.query.getlist(name)) > 1:
                raise ApiError(
                    400, f"query parameter {name!r} is given more than once", parameter=name
                )

    def _get(self, name: str) -> str | None:
        value = self.query.get(name)
        return None if value is None else str(value)

    def text(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        if not value.strip():
            raise ApiError(400, f"query parameter {name!r} is empty", parameter=name)
        return value

    def required(self, name: str, what: str) -> str:
        value = self.text(name)
        if value is None:
            raise ApiError(400, f"query parameter {name!r} is missing: give {what}", parameter=name)
        return value

    def integer(self, name: str, low: int, high: int | None, default: int | None) -> int | None:
        value = self.query.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ApiError(
                400,
                f"query parameter {name!r} must be an integer {bound}, not {value!r}",
                parameter=name,
            )
        return number

    def choice(self, name: str, choices: Iterable[str], default: str | None) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        options = list(choices)
        if value not in options:
            raise ApiError(
                400,
                f"query parameter {name!r} must be one of {', '.join(options)}, not {value!r}",
                parameter=name,
            )
        return value

    def flag(self, name: str) -> bool:
        value = self.query.get(name)
        if value is None:
            return False
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ApiError(
            400, f"query parameter {name!r} must be true or false, not {value!r}", parameter=name
        )

    def uris(self, name: str) -> list[str]:
        return [product_uri(value, name) for value in self.query.getlist(name)]


def product_uri(value: str, parameter: str) -> str:
    """The normalised URI a query parameter names: a URI, or an absolute path on the
    server's machine. A relative path is refused: the server cannot know the caller's
    working directory."""
    from dpt_core.errors import InvalidTarget
    from dpt_core.uri import normalize_uri

    if not value.strip():
        raise ApiError(400, f"query parameter {parameter!r} is empty", parameter=parameter)
    if "://" not in value and not value.startswith("/"):
        raise ApiError(
            400,
            f"query parameter {parameter!r} is a relative path ({value!r}): give a URI "
            "(file:///abs/path, s3://bucket/key, ...) or an absolute path",
            parameter=parameter,
        )
    try:
        return normalize_uri(value)
    except InvalidTarget as exc:
        raise ApiError(400, f"query parameter {parameter!r}: {exc}", parameter=parameter) from None


# =========================================================================== reading


async def _read(config: ServerConfig, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(engine, *args, **kwargs)`` in a worker thread; dpt and database errors
    become 404 (not recorded), 400 (bad input, a value the database refuses among it) or
    503 (the database cannot answer)."""

    def call() -> T:
        from dpt_core.store.plugin import current_store

        return func(current_store(config.settings).engine, *args, **kwargs)

    from sqlalchemy.exc import DataError, SQLAlchemyError

    from dpt_core.errors import (
        ConfigError,
        DatabaseUnavailable,
        DptError,
        MigrationRequired,
        NotFound,
    )
    from dpt_core.store.engine import describe_db_error

    try:
        result: T = await run_in_threadpool(call)
        return result
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except (MigrationRequired, DatabaseUnavailable, ConfigError) as exc:
        raise ApiError(503, str(exc)) from None
    except DptError as exc:
        raise ApiError(400, str(exc)) from None
    except DataError as exc:  # (a value of the request: a NUL for PostgreSQL, say)
        raise ApiError(400, f"the database refused a value: {describe_db_error(exc)}") from None
    except SQLAlchemyError as exc:
        raise ApiError(503, f"database error: {describe_db_error(exc)}") from None


# =========================================================================== runs


def _encode_cursor(run: dict[str, Any]) -> str:
    raw = json.dumps([run["started_at"], run["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, run_id = json.loads(raw)
        when = dt.datetime.fromisoformat(started)
        if not isinstance(run_id, int):
            raise TypeError
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(
            400,
            "query parameter 'cursor' is not a cursor this server gave: take it from the "
            "Link header of the previous page",
            parameter="cursor",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when, run_id


def runs_page(
    engine: Any,
    *,
    orchestrator: str | None,
    status: str | None,
    job: str | None,
    limit: int,
    after: tuple[dt.datetime, int] | None,
    tags: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Runs in ``dpt runs`` order (newest first), the page after the run ``after`` names.

    The first page is :func:`dpt_core.store.queries.list_runs` itself; later pages add
    the keyset condition "started before that run, or at the same moment with a
    smaller id", the same filters, the same order and the same ``run_dict`` shape.
    """
    from sqlalchemy import and_, or_, select

    from dpt_core.store.queries import I, list_runs, run_dict, tag_filter, with_tags

    if after is None:
        return list_runs(
            engine, orchestrator=orchestrator, status=status, job=job, limit=limit, tags=tags
        )
    started, run_id = after
    query = (
        select(I)
        .where(or_(I.c.started_at < started, and_(I.c.started_at == started, I.c.id < run_id)))
        .order_by(I.c.started_at.desc(), I.c.id.desc())
        .limit(limit)
    )
    if orchestrator:
        query = query.where(I.c.orchestrator == orchestrator)
    if status:
        query = query.where(I.c.status == status)
    if job:
        query = query.where(I.c.job == job)
    query = tag_filter(query, tags, engine.dialect.name)
    with engine.connect() as conn:
        return with_tags(conn, [run_dict(r) for r in conn.execute(query)])


def tag_filters(texts: list[str]) -> dict[str, str]:
    """``?tag=KEY=VALUE`` (repeatable: runs with all of them) as ``{key: value}``; a bad
    one is a 400 naming the parameter (:func:`dpt_core.tags.parse_tag_filter`)."""
    from dpt_core.tags import InvalidTag, parse_tag_filter

    try:
        return parse_tag_filter(texts, "query parameter 'tag'")
    except InvalidTag as exc:
        raise ApiError(400, str(exc), parameter="tag") from None


def routes(config: ServerConfig) -> list[Route]:
    """The JSON API's routes for ``config``."""
    from dpt_core.events import STATUSES

    async def health(request: Request) -> Response:
        """Alive, and what the database and the spool are doing (always 200 while serving)."""
        Params(request, ())

        def check(engine: Any) -> dict[str, Any]:
            from sqlalchemy import text

            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return {"reachable": True}

        try:
            database = await _read(config, check)
        except ApiError as exc:
            database = {"reachable": False, "error": exc.message}
        from dpt_core.store.engine import safe_url
        from dpt_core.store.plugin import current_store

        spool = await run_in_threadpool(lambda: current_store(config.settings).spool.status())
        writer = getattr(request.app.state, "writer", None)
        return json_response(
            {
                "status": "ok" if database["reachable"] and not spool.events else "degraded",
                "read_only": config.read_only,
                "database": {"url": safe_url(config.settings.database_url), **database},
                "spool": {"events": spool.events, "bad_files": spool.bad_files},
                "writer": None
                if writer is None
                else {
                    "groups": writer.groups,
                    "requests": writer.requests,
                    "events": writer.events,
                },
            }
        )

    async def stats(request: Request) -> Response:
        from dpt_core.store.queries import stats as _stats

        Params(request, ())
        return json_response(await _read(config, _stats))

    async def runs(request: Request) -> Response:
        params = Params(
            request, ("orchestrator", "status", "job", "limit", "cursor", "tag"), ("tag",)
        )
        limit = params.integer("limit", 1, MAX_RUNS_LIMIT, DEFAULT_RUNS_LIMIT)
        assert limit is not None
        cursor = params.text("cursor")
        tag_texts = [str(t) for t in request.query_params.getlist("tag")]
        tags = tag_filters(tag_texts)
        filters = {
            "orchestrator": params.text("orchestrator"),
            "status": params.choice("status", STATUSES, None),
            "job": params.text("job"),
        }
        rows = await _read(
            config,
            lambda engine: runs_page(
                engine,
                **filters,
                limit=limit + 1,
                after=_decode_cursor(cursor) if cursor else None,
                tags=tags,
            ),
        )
        headers = {}
        if len(rows) > limit:
            rows = rows[:limit]
            query: dict[str, Any] = {k: v for k, v in filters.items() if v} | {
                "tag": tag_texts,
                "limit": str(limit),
                "cursor": _encode_cursor(rows[-1]),
            }
            from urllib.parse import urlencode

            headers["Link"] = f'<{request.url.path}?{urlencode(query, doseq=True)}>; rel="next"'
        return json_response(rows, headers=headers)

    async def run(request: Request) -> Response:
        from dpt_core.store.queries import get_run

        Params(request, ())
        return json_response(await _read(config, get_run, request.path_params["run"]))

    async def run_environment(request: Request) -> Response:
        from dpt_core.store.analysis import environment_of_run

        Params(request, ())
        run_id = request.path_params["run"]
        return json_response(
            await _read(config, lambda engine: environment_of_run(run_id, engine=engine))
        )

    async def products(request: Request) -> Response:
        from dpt_core.store.queries import show_product

        params = Params(request, ("uri",))
        uri = product_uri(params.required("uri", "the product's URI or absolute path"), "uri")
        return json_response(await _read(config, show_product, uri))

    async def lineage(request: Request) -> Response:
        from dpt_core.store.lineage import lineage as _lineage

        params = Params(request, ("uri", "direction", "depth", "version", "all_versions"))
        uri = product_uri(params.required("uri", "the product's URI or absolute path"), "uri")
        direction = params.choice("direction", ("upstream", "downstream"), "upstream")
        depth = params.integer("depth", 0, None, None)
        version = params.text("version")
        all_versions = params.flag("all_versions")
        if version is not None and all_versions:
            raise ApiError(
                400, "give version=V or all_versions=true, not both", parameter="all_versions"
            )
        graph = await _read(
            config,
            lambda engine: _lineage(
                uri, direction or "upstream", depth, version=version, all_versions=all_versions,
                engine=engine, settings=config.settings,
            ),
        )  # fmt: skip
        return json_response(graph.to_dict())

    async def stale(request: Request) -> Response:
        from dpt_core.store.analysis import stale as _stale

        params = Params(request, ("uri",), repeatable=("uri",))
        targets = params.uris("uri") or None
        return json_response(
            await _read(config, lambda engine: _stale(targets, engine, config.settings))
        )

    async def impact(request: Request) -> Response:
        from dpt_core.store.analysis import impact_of_package, impact_of_product, parse_package

        params = Params(request, ("product", "package", "version"))
        product, package = params.text("product"), params.text("package")
        version = params.text("version")
        if (product is None) == (package is None):
            raise ApiError(
                400,
                "give exactly one of product=URI or package=NAME[==VERSION]",
                parameter="product" if product is not None else "package",
            )
        if package is not None:
            if version is not None:
                raise ApiError(
                    400,
                    "version goes with product; write package=NAME==VERSION",
                    parameter="version",
                )
            try:
                name, pinned = parse_package(package)
            except ValueError as exc:
                raise ApiError(400, str(exc), parameter="package") from None
            items = await _read(
                config, lambda engine: impact_of_package(name, pinned, engine=engine)
            )
        else:
            assert product is not None
            uri = product_uri(product, "product")
            items = await _read(
                config, lambda engine: impact_of_product(uri, version=version, engine=engine)
            )
        return json_response(items)

    async def env_diff(request: Request) -> Response:
        from dpt_core.store.analysis import diff_environments

        params = Params(request, ("a", "b"))
        a, b = params.required("a", "a run id or UUID"), params.required("b", "a run id or UUID")
        return json_response(
            await _read(config, lambda engine: diff_environments(a, b, engine=engine))
        )

    async def post_lineage(request: Request) -> Response:
        return await receive_lineage(request, config)

    return [
        Route("/api/v1/lineage", post_lineage, methods=["POST"]),
        Route("/api/health", health),
        Route("/api/stats", stats),
        Route("/api/runs", runs),
        Route("/api/runs/{run}", run),
        Route("/api/runs/{run}/env", run_environment),
        Route("/api/products", products),
        Route("/api/lineage", lineage),
        Route("/api/stale", stale),
        Route("/api/impact", impact),
        Route("/api/env/diff", env_diff),
    ]


# =========================================================================== writing


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, decompressed when it says ``Content-Encoding: gzip``, never
    more than ``limit`` bytes in memory (413 beyond; the raw body is already counted
    by :class:`dpt_core.server.app.RequestRules`)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise ApiError(
            415, f"Content-Encoding {encoding!r} is not supported: send identity or gzip"
        )
    chunks: list[bytes] = []
    size = 0
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
    too_large = ApiError(
        413,
        f"request body over {limit} bytes once decompressed (dpt serve --max-body BYTES raises the limit)",
        headers={"Connection": "close"},
    )
    try:
        async for chunk in request.stream():
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - size)
                if inflate.unconsumed_tail:
                    raise too_large
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        if inflate is not None:
            tail = inflate.flush()
            size += len(tail)
            if size > limit:
                raise too_large
            chunks.append(tail)
            if not inflate.eof:
                raise ApiError(400, "the gzip body is cut short")
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise ApiError(400, f"the body is not valid gzip: {exc}") from None
    return b"".join(chunks)


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


async def receive_lineage(request: Request, config: ServerConfig) -> Response:
    """``POST /api/v1/lineage``: one OpenLineage event, or a JSON array of them.

    400 malformed JSON, 422 an event that breaks the spec (``field`` names where),
    200 recorded, 202 spooled (the database is away; replayed when it is back).
    Nothing of a rejected request is stored: every event is validated before any is
    queued for recording.
    """
    Params(request, ())
    body = await read_body(request, config.max_body)
    try:
        document = json.loads(body.decode("utf-8-sig"))  # JSON is UTF-8 (RFC 8259)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, _json_error(exc)) from None
    from dpt_core.ingest import InvalidEvent, parse_events

    try:
        if isinstance(document, list) and len(document) > INLINE_PARSE_EVENTS:
            events = await run_in_threadpool(parse_events, document)
        else:  # a few events parse in less time than a hand-off to a worker thread takes
            events = parse_events(document)
    except InvalidEvent as exc:
        raise ApiError(422, str(exc), field=exc.field) from None
    from dpt_core.server.writer import Rejected

    writer = request.app.state.writer
    try:
        outcome = await writer.submit(events)
    except Rejected as exc:
        raise ApiError(422, str(exc), field=None) from None
    return json_response(
        {"status": outcome, "events": len(events)}, 200 if outcome == "recorded" else 202
    )
