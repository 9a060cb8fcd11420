"""The web explorer's pages (issue 17): server-rendered HTML, one stable URL per view.

:func:`routes` is what :func:`dpt_core.server.app.create_app` mounts next to the JSON
API::

    /                      what is recorded, the newest and the failed runs
    /runs                  runs, newest first: ?orchestrator= &job= &status= &host= &since= &until=
                           &tag=KEY=VALUE (repeatable: runs with all of them) &offset=
    /runs/{id}             one run (number, UUID or UUID prefix): inputs, outputs, parent, children
    /runs/{id}/environment the environment it ran in (redacted variables stay redacted)
    /products              products, newest first;  /products?uri=  one product and its versions
    /lineage               ?uri= (or ?run=) &direction=both|upstream|downstream &depth= &version= &view=graph|table
    /env/diff              ?a= &b=  the environments of two runs compared
    /impact                ?package=NAME[==VERSION]  or  ?product=URI
    /stale                 products whose inputs changed after they were made
    /search                ?q=  product URIs, job names, run ids
    /static/...            the explorer's own stylesheet and pan/zoom script

Every page gets its data from the store's query functions the CLI's ``--json`` uses
(:mod:`dpt_core.store.queries`, :mod:`dpt_core.store.lineage`,
:mod:`dpt_core.store.analysis`), so a page and ``dpt ... --json`` agree; the few facts
the CLI has no command for (a run's inputs and outputs, search, the product listing,
the host and time filters of the run listing) are read here, from the same tables.
Database work and rendering run in a worker thread, never on the event loop.

Templates are Jinja2 with autoescaping on for every template, whatever its name: a
product named ``<img src=x onerror=alert(1)>.csv`` is text, in HTML, in SVG text and
in attributes. Pages carry a Content-Security-Policy that allows nothing but this
origin and no inline script; the only script adds pan and zoom to the lineage picture,
and every page works without it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dpt_core.errors import DptError, NotFound
from dpt_core.server import graph as drawing
from dpt_core.server.config import ServerConfig

log = logging.getLogger("dpt.server")

HERE = Path(__file__).resolve().parent

#: Rows per page of a listing (``?limit=`` may ask for up to MAX_PAGE).
PAGE = 50
MAX_PAGE = 500
#: A run's inputs, outputs and child runs shown on its page (the rest are counted).
RUN_LIST = 500
#: Search results per kind.
SEARCH_LIMIT = 50

#: What the pages may load: this origin only, no inline script, no plugins, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

DIRECTIONS = ("both", "upstream", "downstream")
DEPTHS = (1, 2, 3, 5, 10)


class BadRequest(DptError):
    """A query parameter of a page is malformed (answered 400, naming it and the fix)."""


# =========================================================================== requests


@dataclass(frozen=True)
class Ask:
    """What a page handler needs of a request (read on the event loop, used in a thread)."""

    path: str
    query: Mapping[str, str]
    path_params: Mapping[str, str]
    root: str = ""
    #: Every value of a parameter given more than once (``?tag=a=1&tag=b=2``); ``query``
    #: holds the last one of each.
    repeated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.query.get(name)
        if value is None:
            return None
        value = value.strip()
        if "\x00" in value:
            raise BadRequest(f"{name}: contains a NUL character")
        return value or None

    def given(self, name: str) -> tuple[str, ...]:
        """Every value given for ``name``, as given (none, one, or a repeated parameter's)."""
        values = self.repeated.get(name)
        if values is None:
            values = (self.query[name],) if name in self.query else ()
        return tuple(values)

    def texts(self, name: str) -> list[str]:
        """Every non-empty value of a repeatable parameter, in the order given."""
        found = []
        for value in self.given(name):
            value = value.strip()
            if "\x00" in value:
                raise BadRequest(f"{name}: contains a NUL character")
            if value:
                found.append(value)
        return found

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value not in choices:
            raise BadRequest(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequest(f"{name}={value!r} is not a whole number") from None
        if not low <= number <= high:
            raise BadRequest(f"{name}={number} is out of range: use {low} to {high}")
        return number

    def depth(self) -> int | None:
        value = self.text("depth")
        if value is None or value == "all":
            return None
        return self.integer("depth", 0, 0, 10_000)

    def url(self, path: str, **params: Any) -> str:
        """``path`` under this app's root, with the non-empty ``params`` as a query string
        (a list or tuple gives the parameter once per item: ``tag=a%3D1&tag=b%3D2``)."""
        query = urlencode(
            {k: v for k, v in params.items() if v is not None and v != "" and v != [] and v != ()},
            doseq=True,
        )
        return f"{self.root}{path}{'?' + query if query else ''}"


# =========================================================================== formatting


@functools.lru_cache(maxsize=16384)
def display(uri: str) -> str:
    """A local file as its path, anything else as its URI (as the CLI shows them)."""
    from dpt_core.uri import uri_to_path

    try:
        path = uri_to_path(uri)
    except DptError:
        path = None
    return path or uri


def breakable(text: str) -> Markup:
    """``text`` escaped, with line-break opportunities after each ``/`` (long paths wrap there)."""
    return Markup(str(escape(text)).replace("/", "/<wbr>"))


def basename(uri: str) -> str:
    """The last segment of a URI or path (a label for a box)."""
    text = display(uri).rstrip("/")
    tail = text.rsplit("/", 1)[-1]
    return tail or text


def short_hash(content_hash: str | None, width: int = 8) -> str:
    if not content_hash:
        return "-"
    return content_hash.split(":", 1)[-1][:width]


def clip(text: str | None, width: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


#: Statuses a box names in its second line (success goes without saying).
_NAMED_STATUSES = ("failed", "crashed", "running", "cancelled", "skipped")


#: A box's second line keeps at least this much of the name of what made it before the
#: short hash gives way to it.
_SUB_NAME = 8


def node_sub(node: drawing.GraphNode, stale: bool = False, width: int = 31) -> str:
    """A box's second line: status if not success, STALE, short hash, then what made it and
    the run's short id (or ``observed``).

    What made it is the task (an Airflow task, a Prefect task, a Dagster asset), else the
    job: a Dagster asset materialised ad hoc belongs to ``__ephemeral_asset_job__``, which
    names nothing. The run's id is never cut; the name is, and the hash goes first when
    the marks leave no room for a name.
    """
    marks = []
    if node.status in _NAMED_STATUSES:
        marks.append(node.status.upper())
    if stale:
        marks.append("STALE")
    hashes = [short_hash(node.content_hash)] if node.content_hash else []
    if not node.produced_by:
        return clip(" · ".join([*marks, *hashes, "observed"]), width)
    run = node.produced_by[:6]
    for shown in (hashes, []):
        prefix = " · ".join([*marks, *shown])
        prefix = f"{prefix} · " if prefix else ""
        room = width - len(prefix) - len(run) - 1
        if room >= _SUB_NAME:
            break
    name = clip(node.task or node.job, room) if room > 0 else ""
    return f"{prefix}{name} {run}" if name else f"{prefix}{run}"


def made_by(job: str | None, task: str | None) -> str:
    return f"{job}/{task}" if task else (job or "")


def line_title(count: int, makers: set[tuple[str | None, str | None, str | None]] | None) -> str:
    """An edge's hover text: how many lineage edges it stands for and the run(s) that made
    them (``dpt lineage --json`` gives each edge's ``invocation``, ``job`` and ``task``)."""
    text = f"{count} lineage edge{'s' if count > 1 else ''}"
    runs = {run for run, _, _ in makers or () if run}
    if not runs:
        return text
    names = {made_by(job, task) for run, job, task in makers or () if run}
    if len(runs) == 1:
        return f"{text}, made by run {next(iter(runs))[:8]} {' '.join(sorted(names))}"
    of = f" of {next(iter(names))}" if len(names) == 1 else ""
    return f"{text}, made by {len(runs)} runs{of}"


def first_line(text: str | None) -> str:
    if not text:
        return ""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _iso(value: Any) -> str | None:
    parsed = _parse_time(value)
    return parsed.isoformat() if parsed is not None else None


def when(value: Any) -> str:
    """``2025-03-01 12:04:05`` in UTC (the page says the zone once)."""
    parsed = _parse_time(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: Any, end: Any) -> str:
    a, b = _parse_time(start), _parse_time(end)
    if a is None or b is None:
        return ""
    seconds = (b - a).total_seconds()
    if seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def size(value: Any) -> str:
    if value is None:
        return ""
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if number < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return str(value)  # pragma: no cover


def has_tags(rows: Any) -> bool:
    """Whether some run of ``rows`` has tags (a listing shows a Tags column only then, as
    ``dpt runs`` does)."""
    return any(row.get("tags") for row in rows)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("data-product-tracker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


def template_environment() -> jinja2.Environment:
    """The explorer's Jinja2 environment: autoescaping on for every template."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        display=display,
        breakable=breakable,
        basename=basename,
        short=short_hash,
        clip=clip,
        first_line=first_line,
        node_sub=node_sub,
        when=when,
        size=size,
        pretty_json=pretty_json,
        has_tags=has_tags,
    )
    env.globals.update(
        duration=duration,
        line_title=line_title,
        statuses=_statuses(),
        directions=DIRECTIONS,
        depths=DEPTHS,
        dpt_version=_version(),
        node_w=drawing.NODE_W,
        node_h=drawing.NODE_H,
    )
    return env


def _statuses() -> tuple[str, ...]:
    from dpt_core.events import STATUSES

    return STATUSES


# =========================================================================== reads
# Facts the CLI has no command for, read from the same tables as the store's functions.


def _tables() -> tuple[Any, Any, Any, Any, Any]:
    from dpt_core.store.models import (
        DataProduct,
        DataProductVersion,
        Environment,
        Invocation,
        InvocationInput,
    )

    return (
        Invocation.__table__,
        DataProductVersion.__table__,
        DataProduct.__table__,
        Environment.__table__,
        InvocationInput.__table__,
    )


def list_runs_page(
    engine: Engine,
    *,
    orchestrator: str | None = None,
    status: str | None = None,
    job: str | None = None,
    host: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    tags: Mapping[str, str] | None = None,
    offset: int = 0,
    limit: int = PAGE,
) -> tuple[list[dict[str, Any]], bool]:
    """``dpt runs``'s listing (same order, same row shape, each run with its ``tags``; ``tags``
    keeps the runs carrying all of them, as ``dpt runs --tag`` does) with host and time
    filters and an offset: ``(rows, more)``, ``more`` telling whether a next page exists."""
    from dpt_core.store.queries import run_dict, tag_filter, with_tags

    runs = _tables()[0]
    query = (
        select(runs)
        .order_by(runs.c.started_at.desc(), runs.c.id.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    if orchestrator:
        query = query.where(runs.c.orchestrator == orchestrator)
    if status:
        query = query.where(runs.c.status == status)
    if job:
        query = query.where(runs.c.job == job)
    if host:
        query = query.where(runs.c.host == host)
    if since is not None:
        query = query.where(runs.c.started_at >= since)
    if until is not None:
        query = query.where(runs.c.started_at < until)
    query = tag_filter(query, tags, engine.dialect.name)
    with engine.connect() as conn:
        rows = [run_dict(r) for r in conn.execute(query)]
        with_tags(conn, rows[:limit])
    return rows[:limit], len(rows) > limit


def tag_filters(texts: list[str]) -> dict[str, str]:
    """``?tag=KEY=VALUE`` (repeatable: runs with all of them) as ``{key: value}``, parsed as
    the JSON API's ``/api/runs`` and ``dpt runs --tag`` parse them
    (:func:`dpt_core.tags.parse_tag_filter`); a refusal is a :class:`BadRequest`."""
    from dpt_core.tags import InvalidTag, parse_tag_filter

    try:
        return parse_tag_filter(texts, "query parameter 'tag'")
    except InvalidTag as exc:
        raise BadRequest(str(exc)) from None


def run_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "uuid": row.uuid,
        "orchestrator": row.orchestrator,
        "job": row.job,
        "task": row.task,
        "status": row.status,
        "host": row.host,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "error": row.error,
    }


def run_detail(engine: Engine, run: str) -> dict[str, Any]:
    """``dpt show RUN --json`` plus its parent, children (with their tags), inputs, outputs
    and environment."""
    from dpt_core.store.queries import get_run, with_tags

    info = get_run(engine, run)
    runs, versions, products, environments, inputs = _tables()
    rid = info["id"]
    producer = runs.alias("producer")
    summary = [
        runs.c.id,
        runs.c.uuid,
        runs.c.orchestrator,
        runs.c.job,
        runs.c.task,
        runs.c.status,
        runs.c.host,
        runs.c.started_at,
        runs.c.ended_at,
        runs.c.error,
    ]
    with engine.connect() as conn:
        parent = None
        if info["parent_id"] is not None:
            row = conn.execute(select(*summary).where(runs.c.id == info["parent_id"])).first()
            parent = run_summary(row) if row else None
        children = [
            run_summary(r)
            for r in conn.execute(
                select(*summary)
                .where(runs.c.parent_id == rid)
                .order_by(runs.c.started_at, runs.c.id)
                .limit(RUN_LIST)
            )
        ]
        with_tags(conn, children)
        child_count = conn.execute(
            select(func.count()).select_from(runs).where(runs.c.parent_id == rid)
        ).scalar_one()
        read = conn.execute(
            select(
                products.c.uri,
                versions.c.uuid.label("version"),
                versions.c.content_hash,
                versions.c.size,
                versions.c.recorded_at,
                producer.c.id.label("run_id"),
                producer.c.uuid.label("run"),
                producer.c.job,
                producer.c.task,
                producer.c.status,
            )
            .select_from(inputs)
            .join(versions, versions.c.id == inputs.c.version_id)
            .join(products, products.c.id == versions.c.product_id)
            .outerjoin(producer, producer.c.id == versions.c.produced_by_id)
            .where(inputs.c.invocation_id == rid)
            .order_by(products.c.uri, versions.c.id)
            .limit(RUN_LIST)
        ).all()
        read_count = conn.execute(
            select(func.count()).select_from(inputs).where(inputs.c.invocation_id == rid)
        ).scalar_one()
        written = conn.execute(
            select(
                products.c.uri,
                versions.c.uuid.label("version"),
                versions.c.content_hash,
                versions.c.size,
                versions.c.recorded_at,
            )
            .join(products, products.c.id == versions.c.product_id)
            .where(versions.c.produced_by_id == rid)
            .order_by(products.c.uri, versions.c.id)
            .limit(RUN_LIST)
        ).all()
        written_count = conn.execute(
            select(func.count()).select_from(versions).where(versions.c.produced_by_id == rid)
        ).scalar_one()
        environment = None
        previous = None
        if info["environment_id"] is not None:
            env = conn.execute(
                select(environments).where(environments.c.id == info["environment_id"])
            ).first()
            if env is not None:
                environment = {
                    "python": env.python_version,
                    "implementation": env.implementation,
                    "platform": env.platform,
                    "host": env.hostname,
                    "user": env.user,
                    "fingerprint": env.fingerprint,
                }
            previous = conn.execute(
                select(runs.c.id, runs.c.environment_id)
                .where(
                    runs.c.job == info["job"],
                    runs.c.id != rid,
                    runs.c.environment_id.is_not(None),
                    runs.c.started_at <= _parse_time(info["started_at"]),
                )
                .order_by(runs.c.started_at.desc(), runs.c.id.desc())
                .limit(1)
            ).first()
    return {
        "run": info,
        "parent": parent,
        "children": children,
        "child_count": int(child_count),
        "inputs": [dict(r._mapping) for r in read],
        "input_count": int(read_count),
        "outputs": [dict(r._mapping) for r in written],
        "output_count": int(written_count),
        "environment": environment,
        "previous": (
            {"id": previous.id, "same": previous.environment_id == info["environment_id"]}
            if previous is not None
            else None
        ),
    }


def list_products_page(
    engine: Engine, *, offset: int = 0, limit: int = PAGE
) -> tuple[list[dict[str, Any]], bool]:
    """Products, newest first, each with its number of versions and last recording."""
    _, versions, products, _, _ = _tables()
    with engine.connect() as conn:
        rows = conn.execute(
            select(products.c.id, products.c.uri)
            .order_by(products.c.id.desc())
            .offset(offset)
            .limit(limit + 1)
        ).all()
        ids = [r.id for r in rows[:limit]]
        counts = {
            r.product_id: (int(r.versions), r.last)
            for r in conn.execute(
                select(
                    versions.c.product_id,
                    func.count().label("versions"),
                    func.max(versions.c.recorded_at).label("last"),
                )
                .where(versions.c.product_id.in_(ids))
                .group_by(versions.c.product_id)
            )
        }
    items = []
    for r in rows[:limit]:
        count, last = counts.get(r.id, (0, None))
        items.append({"uri": r.uri, "versions": count, "last": last})
    return items, len(rows) > limit


def search(engine: Engine, text: str, limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """Products whose URI and jobs whose name contain ``text`` (any case), and the run it names."""
    from dpt_core.store.queries import get_run

    runs, _, products, _, _ = _tables()
    needle = text.lower()
    with engine.connect() as conn:
        found = conn.execute(
            select(products.c.uri)
            .where(func.lower(products.c.uri).contains(needle, autoescape=True))
            .order_by(products.c.id.desc())
            .limit(limit + 1)
        ).all()
        jobs = conn.execute(
            select(
                runs.c.job,
                runs.c.orchestrator,
                func.count().label("runs"),
                func.max(runs.c.started_at).label("last"),
            )
            .where(func.lower(runs.c.job).contains(needle, autoescape=True))
            .group_by(runs.c.job, runs.c.orchestrator)
            .order_by(func.max(runs.c.started_at).desc())
            .limit(limit + 1)
        ).all()
    run = None
    if text.isdigit() or (len(text) >= 6 and all(c in "0123456789abcdef-" for c in needle)):
        try:
            run = get_run(engine, text)
        except NotFound:
            run = None
    return {
        "products": [r.uri for r in found[:limit]],
        "more_products": len(found) > limit,
        "jobs": [dict(r._mapping) for r in jobs[:limit]],
        "more_jobs": len(jobs) > limit,
        "run": run,
    }


def known_orchestrators(engine: Engine) -> list[str]:
    runs = _tables()[0]
    with engine.connect() as conn:
        return sorted(
            r[0] for r in conn.execute(select(runs.c.orchestrator).distinct()) if r[0] is not None
        )


# =========================================================================== lineage


@dataclass
class LineageView:
    """What the lineage page shows, whichever way it was asked for."""

    nodes: list[drawing.GraphNode]
    edges: list[drawing.GraphEdge]
    roots: list[str]
    #: Per direction drawn, the figures ``dpt lineage --json`` gives: nodes and edges.
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    selection: str | None = None
    note: str | None = None
    versions: int | None = None
    stale: dict[str, list[str]] = field(default_factory=dict)


def _from_lineage(graph: Any, sign: int) -> tuple[list[drawing.GraphNode], list[drawing.GraphEdge]]:
    nodes = [
        drawing.GraphNode(
            key=n.version,
            uri=n.uri,
            depth=sign * n.depth,
            content_hash=n.content_hash,
            size=n.size,
            recorded_at=_iso(n.recorded_at),
            produced_by=n.produced_by,
            job=n.job,
            task=n.task,
            status=n.status,
        )
        for n in graph.nodes
    ]
    edges = [
        drawing.GraphEdge(e.parent_version, e.child_version, e.invocation, e.job, e.task)
        for e in graph.edges
    ]
    return nodes, edges


def _from_closure(
    result: Any, sign: int, shift: int = 0
) -> tuple[list[drawing.GraphNode], list[drawing.GraphEdge]]:
    details = result.details
    nodes = [
        drawing.GraphNode(
            key=d.uuid,
            uri=d.uri,
            depth=sign * (result.depths[vid] + shift),
            content_hash=d.content_hash,
            size=d.size,
            recorded_at=_iso(d.recorded_at),
            produced_by=d.produced_by,
            job=d.job,
            task=d.task,
            status=d.status,
        )
        for vid, d in details.items()
        if vid in result.depths
    ]
    edges = [
        drawing.GraphEdge(details[p].uuid, details[c].uuid, run, job, task)
        for p, c, run, job, task in result.edges
        if p in details and c in details
    ]
    return nodes, edges


def _merge(
    parts: list[tuple[list[drawing.GraphNode], list[drawing.GraphEdge]]],
) -> tuple[list[drawing.GraphNode], list[drawing.GraphEdge]]:
    nodes: dict[str, drawing.GraphNode] = {}
    edges: dict[tuple[str, str], drawing.GraphEdge] = {}
    for part_nodes, part_edges in parts:
        for node in part_nodes:
            known = nodes.get(node.key)
            if known is None or abs(node.depth) < abs(known.depth):
                nodes[node.key] = node
        for edge in part_edges:
            edges.setdefault((edge.parent, edge.child), edge)
    ordered = sorted(nodes.values(), key=lambda n: (abs(n.depth), n.depth, n.uri, n.key))
    return ordered, list(edges.values())


def product_lineage(
    engine: Engine,
    settings: Any,
    uri: str,
    direction: str,
    depth: int | None,
    version: str | None,
) -> LineageView:
    """The graph ``dpt lineage URI --upstream/--downstream [--depth] [--version]`` gives
    (both directions: the two graphs joined at the same root version)."""
    from dpt_core.store.lineage import lineage

    wanted = ("upstream", "downstream") if direction == "both" else (direction,)
    parts = []
    view = LineageView([], [], [])
    for way in wanted:
        graph = lineage(uri, way, depth, version=version, engine=engine, settings=settings)
        if view.selection is None:
            view.selection, view.note, view.versions = graph.selection, graph.note, graph.versions
            roots = [n.version for n in graph.nodes if n.depth == 0]
            view.roots = roots
            if version is None and len(roots) == 1:
                version = roots[0]  # the other direction starts from the same version
        view.counts[way] = {"nodes": len(graph.nodes), "edges": len(graph.edges)}
        parts.append(_from_lineage(graph, -1 if way == "upstream" else 1))
    view.nodes, view.edges = _merge(parts)
    return view


def run_lineage(engine: Engine, run: str, direction: str, depth: int | None) -> LineageView:
    """The graph around a run: what it wrote at the centre (what it read, if it wrote
    nothing), what it read one step upstream, then their lineage either way."""
    from dpt_core.store.lineage import closure
    from dpt_core.store.queries import get_run

    info = get_run(engine, run)
    _, versions, _, _, inputs = _tables()
    with engine.connect() as conn:
        written = sorted(
            r[0]
            for r in conn.execute(
                select(versions.c.id).where(versions.c.produced_by_id == info["id"])
            )
        )
        read = sorted(
            {
                r[0]
                for r in conn.execute(
                    select(inputs.c.version_id).where(inputs.c.invocation_id == info["id"])
                )
            }
            - set(written)
        )
        centre = written or read
        parts = []
        view = LineageView([], [], [])
        if direction in ("both", "upstream") and centre:
            result = closure(conn, centre, "upstream", depth)
            parts.append(_from_closure(result, -1))
            if written and read and depth != 0:
                further = closure(conn, read, "upstream", None if depth is None else depth - 1)
                parts.append(_from_closure(further, -1, shift=1))
        if direction in ("both", "downstream") and written:
            parts.append(_from_closure(closure(conn, written, "downstream", depth), 1))
        roots = {
            r[0] for r in conn.execute(select(versions.c.uuid).where(versions.c.id.in_(centre)))
        }
    view.nodes, view.edges = _merge(parts)
    view.roots = sorted(roots)
    view.counts["run"] = {"nodes": len(view.nodes), "edges": len(view.edges)}
    return view


def mark_stale(engine: Engine, settings: Any, view: LineageView) -> None:
    """The reasons ``dpt stale`` gives for the graph's products, on their judged versions."""
    from dpt_core.store.analysis import stale

    uris = sorted({n.uri for n in view.nodes})
    if not uris:
        return
    keys = {n.key for n in view.nodes}
    for item in stale(uris, engine, settings):
        if item["version"] in keys:
            view.stale[item["version"]] = [r["message"] for r in item["reasons"]]


# =========================================================================== the explorer


class Explorer:
    """The pages, bound to one server configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.templates = template_environment()

    @property
    def engine(self) -> Engine:
        from dpt_core.store.plugin import current_store

        return current_store(self.config.settings).engine

    @cached_property
    def routes(self) -> list[BaseRoute]:
        pages: list[tuple[str, Callable[[Ask], Any], str]] = [
            ("/", self.home, "explorer-home"),
            ("/runs", self.runs, "explorer-runs"),
            ("/runs/{run}", self.run, "explorer-run"),
            ("/runs/{run}/environment", self.environment, "explorer-environment"),
            ("/products", self.products, "explorer-products"),
            ("/lineage", self.lineage, "explorer-lineage"),
            ("/env/diff", self.env_diff, "explorer-env-diff"),
            ("/impact", self.impact, "explorer-impact"),
            ("/stale", self.stale, "explorer-stale"),
            ("/search", self.search, "explorer-search"),
        ]
        routes: list[BaseRoute] = [
            Route(path, self._endpoint(handler), methods=["GET", "HEAD"], name=name)
            for path, handler, name in pages
        ]
        routes.append(
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="explorer-static")
        )
        return routes

    # ------------------------------------------------------------------ plumbing

    def _endpoint(self, handler: Callable[[Ask], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            query = request.query_params
            ask = Ask(
                path=request.url.path,
                query=dict(query),
                path_params={k: str(v) for k, v in request.path_params.items()},
                root=request.scope.get("root_path", "") or "",
                repeated={k: tuple(query.getlist(k)) for k in query if len(query.getlist(k)) > 1},
            )
            return await run_in_threadpool(self._answer, handler, ask)

        endpoint.__name__ = handler.__name__
        return endpoint

    def _answer(self, handler: Callable[[Ask], Any], ask: Ask) -> Response:
        try:
            result = handler(ask)
        except NotFound as exc:
            return self._error(ask, 404, "Not found", str(exc))
        except (DptError, ValueError) as exc:
            return self._error(ask, 400, "Bad request", str(exc))
        except DataError as exc:  # (a value of the request: a NUL for PostgreSQL, say)
            from dpt_core.store.engine import describe_db_error

            message = f"the database refused a value: {describe_db_error(exc)}"
            return self._error(ask, 400, "Bad request", message)
        except SQLAlchemyError as exc:
            from dpt_core.store.engine import describe_db_error

            log.warning("explorer: database error on %s: %s", ask.path, describe_db_error(exc))
            return self._error(
                ask, 503, "Database unavailable", f"database error: {describe_db_error(exc)}"
            )
        if isinstance(result, Response):
            result.headers.update(PAGE_HEADERS)
            return result
        template, context = result
        return HTMLResponse(
            self.page_html(ask, template, context), status_code=200, headers=PAGE_HEADERS
        )

    def page_html(self, ask: Ask, template: str, context: dict[str, Any]) -> str:
        """The HTML of a page from what its handler returned."""
        if context.get("picture") is not None:
            # One string for the picture, not thousands of fragments passed up through
            # every enclosing block (a third of the rendering time at 2 000 boxes).
            context = {
                **context,
                "picture_svg": Markup(self._render_text(ask, "_graph.html", context)),
            }
        return self._render_text(ask, template, context)

    def _render_text(self, ask: Ask, template: str, context: dict[str, Any]) -> str:
        text: str = self.templates.get_template(template).render(
            url=ask.url,
            static=lambda name: ask.url(f"/static/{name}", v=self.templates.globals["dpt_version"]),
            ask=ask,
            read_only=self.config.read_only,
            **context,
        )
        return text

    def _render(
        self, ask: Ask, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        html = self._render_text(ask, template, context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def _error(self, ask: Ask, status: int, title: str, message: str) -> Response:
        return self._render(
            ask,
            "error.html",
            {"status": status, "title": title, "message": message, "nav": None, "api": None},
            status=status,
        )

    def _product_uri(self, text: str) -> str:
        from dpt_core.uri import normalize_uri

        return normalize_uri(text)

    # ------------------------------------------------------------------ pages

    def home(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.queries import list_runs, stats

        engine = self.engine
        return "home.html", {
            "nav": "home",
            "api": ask.url("/api/stats"),
            "stats": stats(engine),
            "recent": list_runs(engine, limit=10),
            "failed": list_runs(engine, status="failed", limit=5),
        }

    def runs(self, ask: Ask) -> tuple[str, dict[str, Any]] | Response:
        from dpt_core.export import BadSince, parse_since

        engine = self.engine
        try:
            filters: dict[str, Any] = {
                "orchestrator": ask.text("orchestrator"),
                "job": ask.text("job"),
                "status": ask.choice("status", ("", *_statuses()), "") or None,
                "host": ask.text("host"),
            }
            times: dict[str, dt.datetime | None] = {}
            for name in ("since", "until"):
                text = ask.text(name)
                try:
                    times[name] = parse_since(text) if text else None
                except BadSince as exc:
                    raise BadRequest(str(exc).replace("--since", name, 1)) from None
            tags = tag_filters(ask.texts("tag"))
            limit = ask.integer("limit", PAGE, 1, MAX_PAGE)
            offset = ask.integer("offset", 0, 0, 10**9)
        except BadRequest as exc:
            # The form as it was filled in, and what is wrong with it: fix it and filter again.
            return self._render(ask, "runs.html", self._runs_form_error(ask, str(exc)), status=400)
        rows, more = list_runs_page(
            engine,
            **filters,
            since=times["since"],
            until=times["until"],
            tags=tags,
            offset=offset,
            limit=limit,
        )
        tag_texts = [f"{key}={value}" for key, value in tags.items()]
        shown = {
            **filters,
            "since": ask.text("since"),
            "until": ask.text("until"),
            "tag": tag_texts,
            "limit": limit if limit != PAGE else None,
        }

        def add_tag(key: str, value: str) -> str:
            """This view narrowed to the runs also tagged ``key=value`` (from its first page)."""
            text = f"{key}={value}"
            return ask.url(
                "/runs", **{**shown, "tag": [*tag_texts, text]} if text not in tag_texts else shown
            )

        def remove_tag(text: str) -> str:
            return ask.url("/runs", **{**shown, "tag": [t for t in tag_texts if t != text]})

        active = [
            f"{name}={shown[name]}"
            for name in ("orchestrator", "status", "job", "host", "since", "until")
            if shown[name]
        ]
        active += [f"tag {text}" for text in tag_texts]
        return "runs.html", {
            "nav": "runs",
            "api": ask.url(
                "/api/runs",
                orchestrator=filters["orchestrator"],
                status=filters["status"],
                job=filters["job"],
                tag=tag_texts,
                limit=limit,
            ),
            "rows": rows,
            "more": more,
            "offset": offset,
            "limit": limit,
            "filters": shown,
            "tags": tags,
            "tag_texts": tag_texts,
            "tag_inputs": [],
            "add_tag": add_tag,
            "remove_tag": remove_tag,
            "active": active,
            "error": None,
            "orchestrators": known_orchestrators(engine),
            "newer": ask.url("/runs", **shown, offset=max(offset - limit, 0) or None)
            if offset > 0
            else None,
            "older": ask.url("/runs", **shown, offset=offset + limit) if more else None,
        }

    def _runs_form_error(self, ask: Ask, message: str) -> dict[str, Any]:
        """The runs page for a filter it cannot apply: no rows, the form holding what was
        given (each tag in a field of its own, to be corrected) and ``message``."""
        given = {
            name: (ask.query.get(name) or "").replace("\x00", "").strip() or None
            for name in ("orchestrator", "job", "status", "host", "since", "until")
        }
        tag_inputs = ask.given("tag")
        return {
            "nav": "runs",
            "api": None,
            "rows": [],
            "more": False,
            "offset": 0,
            "limit": PAGE,
            "filters": given,
            "tags": {},
            "tag_texts": [],
            "tag_inputs": [t.replace("\x00", "") for t in tag_inputs if t.strip()],
            "active": [],
            "error": message,
            "orchestrators": known_orchestrators(self.engine),
            "newer": None,
            "older": None,
        }

    def run(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        data = run_detail(self.engine, ask.path_params["run"])
        run = data["run"]
        return "run.html", {
            "nav": "runs",
            "api": ask.url(f"/api/runs/{run['id']}"),
            **data,
        }

    def environment(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.analysis import environment_of_run

        data = environment_of_run(ask.path_params["run"], engine=self.engine)
        return "environment.html", {"nav": "runs", "api": None, **data}

    def products(self, ask: Ask) -> tuple[str, dict[str, Any]] | Response:
        text = ask.text("uri")
        if text is None:
            limit = ask.integer("limit", PAGE, 1, MAX_PAGE)
            offset = ask.integer("offset", 0, 0, 10**9)
            items, more = list_products_page(self.engine, offset=offset, limit=limit)
            return "products.html", {
                "nav": "products",
                "api": None,
                "items": items,
                "offset": offset,
                "newer": ask.url("/products", offset=max(offset - limit, 0) or None)
                if offset > 0
                else None,
                "older": ask.url("/products", offset=offset + limit) if more else None,
            }
        return self.product(ask, self._product_uri(text))

    def product(self, ask: Ask, uri: str) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.analysis import impact_of_product, stale
        from dpt_core.store.lineage import version_on_disk
        from dpt_core.store.queries import show_product

        engine, settings = self.engine, self.config.settings
        data = show_product(engine, uri)
        versions = _tables()[1]
        with engine.connect() as conn:
            start = version_on_disk(conn, uri, settings)
            on_disk = None
            if start.selection == "on_disk" and start.ids:
                on_disk = conn.execute(
                    select(versions.c.uuid).where(versions.c.id == start.ids[0])
                ).scalar()
        # (a product with no version yet has nothing to judge and nothing downstream)
        reasons = stale([uri], engine, settings) if data["versions"] else []
        downstream = impact_of_product(uri, engine=engine) if data["versions"] else []
        return "product.html", {
            "nav": "products",
            "api": ask.url("/api/products", uri=uri),
            "uri": uri,
            "versions": data["versions"],
            "on_disk": on_disk,
            "where": start,
            "stale": reasons[0] if reasons else None,
            "downstream": downstream,
        }

    def lineage(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        uri_text, run_text = ask.text("uri"), ask.text("run")
        direction = ask.choice("direction", DIRECTIONS, "both")
        depth = ask.depth()
        version = ask.text("version")
        view_kind = ask.choice("view", ("graph", "table"), "graph")
        params = {
            "uri": uri_text,
            "run": run_text,
            "direction": direction,
            "depth": depth,
            "version": version,
        }
        context: dict[str, Any] = {"nav": "lineage", "api": None, "params": params, "view": None}
        if uri_text is None and run_text is None:
            return "lineage.html", context
        if uri_text is not None and run_text is not None:
            raise BadRequest("give uri=PRODUCT or run=RUN, not both")
        engine, settings = self.engine, self.config.settings
        run_info = None
        if uri_text is not None:
            uri = self._product_uri(uri_text)
            params["uri"] = uri
            view = product_lineage(engine, settings, uri, direction, depth, version)
            if direction != "both":
                context["api"] = ask.url("/api/lineage", uri=uri, direction=direction, depth=depth)
        else:
            assert run_text is not None
            if version is not None:
                raise BadRequest("version= goes with uri=, not with run=")
            from dpt_core.store.queries import get_run

            run_info = get_run(engine, run_text)
            view = run_lineage(engine, run_text, direction, depth)
        mark_stale(engine, settings, view)
        folded = drawing.collapse(view.nodes, view.edges)
        picture = drawing.layout(folded) if view_kind == "graph" else None
        here = {k: v for k, v in params.items() if v is not None}
        context.update(
            view=view,
            kind=view_kind,
            folded=folded,
            picture=picture,
            run_info=run_info,
            roots=set(view.roots),
            products=len({n.uri for n in view.nodes}),
            here=here,
            table_url=ask.url("/lineage", **here, view="table"),
            graph_url=ask.url("/lineage", **here),
            failed=sum(1 for n in view.nodes if n.status in ("failed", "crashed")),
            collapsed=sum(len(g.members) for g in folded.groups),
        )
        return "lineage.html", context

    def env_diff(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.analysis import diff_environments
        from dpt_core.store.queries import list_runs

        a, b = ask.text("a"), ask.text("b")
        context: dict[str, Any] = {"nav": "env", "api": None, "a": a, "b": b, "diff": None}
        if a is None or b is None:
            context["recent"] = list_runs(self.engine, limit=20)
            return "env_diff.html", context
        diff = diff_environments(a, b, engine=self.engine)
        context.update(diff=diff, api=ask.url("/api/env/diff", a=a, b=b))
        return "env_diff.html", context

    def impact(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.analysis import (
            impact_of_package,
            impact_of_product,
            known_distribution,
            parse_package,
        )

        package, product = ask.text("package"), ask.text("product")
        version = ask.text("version")
        context: dict[str, Any] = {
            "nav": "impact",
            "api": None,
            "package": package,
            "product": product,
            "items": None,
            "known": True,
        }
        if package is not None and product is not None:
            raise BadRequest("give package=NAME[==VERSION] or product=URI, not both")
        engine = self.engine
        if package is not None:
            try:
                name, pinned = parse_package(package)
            except ValueError as exc:
                raise BadRequest(f"package: {exc}") from None
            items = impact_of_package(name, pinned, engine=engine)
            context.update(
                items=items,
                subject=f"{name}{'==' + pinned if pinned else ''}",
                known=bool(items) or known_distribution(name, pinned, engine=engine),
                api=ask.url("/api/impact", package=package),
            )
        elif product is not None:
            uri = self._product_uri(product)
            items = impact_of_product(uri, version=version, engine=engine)
            context.update(
                items=items,
                subject=display(uri),
                product=uri,
                api=ask.url("/api/impact", product=uri),
            )
        return "impact.html", context

    def stale(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        from dpt_core.store.analysis import stale

        stats: dict[str, int] = {}
        found = stale(None, self.engine, self.config.settings, stats=stats)
        return "stale.html", {
            "nav": "stale",
            "api": ask.url("/api/stale"),
            "items": found,
            "stats": stats,
        }

    def search(self, ask: Ask) -> tuple[str, dict[str, Any]]:
        text = ask.text("q")
        if text is not None and len(text) > 1000:
            raise BadRequest("q: at most 1000 characters")
        results = search(self.engine, text) if text else None
        return "search.html", {"nav": None, "api": None, "q": text, "results": results}


def routes(config: ServerConfig) -> list[Any]:
    """The explorer's routes (Starlette ``Route``/``Mount`` objects), mounted at the root."""
    return list(Explorer(config).routes)


__all__ = ["CONTENT_SECURITY_POLICY", "Explorer", "routes"]
