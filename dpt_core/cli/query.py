"""``dpt runs``, ``dpt show``, ``dpt stats``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dpt_core.cli import echo_json, engine, json_option, resolve_target
from dpt_core.events import STATUSES


def _short(value: Any, width: int = 19) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _started(value: Any) -> str:
    """A start time to the second, in UTC (``2026-12-05 16:08:01``); the JSON keeps it all."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[dict[str, Any]], str]
    elastic: bool = False  # shrinks (with an ellipsis) to what the terminal leaves it
    wide_cell: Callable[[dict[str, Any]], str] | None = None  # for --wide, if not ``cell``


_RUN_COLUMNS = (
    _Column("id", lambda r: str(r["id"])),
    _Column("uuid", lambda r: r["uuid"][:8], wide_cell=lambda r: r["uuid"]),
    _Column("orchestrator", lambda r: r["orchestrator"] or ""),
    _Column("job", lambda r: r["job"] or "", elastic=True),
    _Column("task", lambda r: r["task"] or "", elastic=True),
    _Column("status", lambda r: r["status"] or ""),
    _Column("started (UTC)", lambda r: _started(r["started_at"])),
    _Column("parent", lambda r: str(r["parent_id"] or "")),
    _Column("tags", lambda r: tag_text(r.get("tags")), elastic=True),
)
# Given up first to last when the terminal is too narrow for every column.
_RUN_COLUMNS_DROPPED_FIRST = ("tags", "uuid", "parent", "orchestrator", "task")


def tag_text(tags: dict[str, str] | None) -> str:
    """Tags as ``key=value`` words, sorted by key (what ``dpt tag`` takes)."""
    return " ".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))


_ELASTIC_MIN_WIDTH = 12


def _table_width(widths: list[int]) -> int:
    """Width of a rich table with the default box: one rule per column and one more, padding 1+1."""
    return sum(widths) + 3 * len(widths) + 1


def _share(naturals: list[int], room: int) -> list[int]:
    """Widths for the elastic columns: each its natural width if all fit in ``room``, else
    the room shared so that no column gets more than it needs (water-filling), each at least
    ``_ELASTIC_MIN_WIDTH`` (or its natural width, if less)."""
    widths = [0] * len(naturals)
    waiting = sorted(range(len(naturals)), key=lambda i: naturals[i])
    while waiting:
        fair = max(room // len(waiting), _ELASTIC_MIN_WIDTH)
        i = waiting.pop(0)
        widths[i] = min(naturals[i], fair)
        room -= widths[i]
    return widths


def _layout_runs(
    rows: list[dict[str, Any]], width: int, wide: bool
) -> tuple[list[_Column], list[int], list[list[str]], list[str]]:
    """The columns that fit ``width``, their widths, the cells, and the columns left out
    for want of room.

    Columns empty in every row are left out silently (but for ``--wide``); then columns are
    given up in ``_RUN_COLUMNS_DROPPED_FIRST`` order until the fixed columns and at least
    ``_ELASTIC_MIN_WIDTH`` for each of job and task fit; job and task share what is left.
    """
    columns = [
        c
        for c in _RUN_COLUMNS
        if (wide and c.header != "tags")  # (tags: only when some run has them)
        or c.header in ("id", "job")
        or any(c.cell(r) for r in rows)
    ]

    def cell(column: _Column, row: dict[str, Any]) -> str:
        return (column.wide_cell or column.cell)(row) if wide else column.cell(row)

    def natural(cols: list[_Column]) -> list[int]:
        return [max([len(c.header)] + [len(cell(c, r)) for r in rows]) for c in cols]

    def fixed_width(cols: list[_Column]) -> int:
        return _table_width([n for c, n in zip(cols, natural(cols), strict=True) if not c.elastic])

    hidden: list[str] = []
    if not wide:
        for name in _RUN_COLUMNS_DROPPED_FIRST:
            elastic = sum(c.elastic for c in columns)
            if fixed_width(columns) + elastic * (_ELASTIC_MIN_WIDTH + 3) <= width:
                break
            if any(c.header == name for c in columns):
                columns = [c for c in columns if c.header != name]
                hidden.append(name)
    widths = natural(columns)
    if not wide:
        elastic_at = [i for i, c in enumerate(columns) if c.elastic]
        room = width - fixed_width(columns) - 3 * len(elastic_at)
        for i, w in zip(elastic_at, _share([widths[i] for i in elastic_at], room), strict=True):
            widths[i] = w
    cells = [[cell(c, r) for c in columns] for r in rows]
    return columns, widths, cells, hidden


@click.command()
@click.option(
    "--orchestrator",
    help="Only runs from this orchestrator (airflow, prefect, dagster, cli, python).",
)
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--job", help="Only runs of this job (DAG id, flow name, Dagster job, script).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only runs with this tag (repeatable: runs with all of them). Values compare as "
    "text: sector=42 matches a tag given as 42.",
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="At most this many runs.",
)
@click.option(
    "--wide",
    is_flag=True,
    help="Every column (uuid, orchestrator, task, parent), names not shortened, whatever "
    "the terminal's width.",
)
@json_option
def runs(
    orchestrator: str | None,
    status: str | None,
    job: str | None,
    tags: tuple[str, ...],
    limit: int,
    wide: bool,
    as_json: bool,
) -> None:
    """List recorded runs, newest first.

    The table fits the terminal (or $COLUMNS): columns empty in every run are left out,
    and on a narrow terminal tags, uuid, parent, orchestrator and task are given up in
    that order (a line under the table says which); long job and task names are
    shortened. --wide shows them all.

    \b
    Examples:
      dpt runs --orchestrator airflow --status failed --limit 10
      dpt runs --tag survey=tess --tag sector=42
    """
    from dpt_core.store.queries import list_runs
    from dpt_core.tags import parse_tag_filter

    wanted = parse_tag_filter(tags, "--tag")
    rows = list_runs(
        engine(), orchestrator=orchestrator, status=status, job=job, limit=limit, tags=wanted
    )
    if as_json:
        echo_json(rows)
        return
    console = Console(highlight=False)
    columns, widths, cells, hidden = _layout_runs(rows, console.width, wide)
    table = Table()
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column.header, width=width, no_wrap=True, overflow="ellipsis")
    for row in cells:
        table.add_row(*map(escape, row))
    if wide:  # as wide as it takes, on a terminal or not
        console = Console(highlight=False, width=max(console.width, _table_width(widths)))
    console.print(table)
    if hidden:
        console.print(
            f"not shown at this width: {', '.join(hidden)} (--wide shows them)", style="dim"
        )


@click.command()
@click.argument("target")
@json_option
def show(target: str, as_json: bool) -> None:
    """Show a product: its versions, the run that made each, parents and environment.

    TARGET is a path or URI, or a run id / UUID (then the run is shown).
    """
    from dpt_core.errors import NotFound
    from dpt_core.store.queries import get_run, show_product

    eng = engine()
    try:
        data: dict[str, Any] = show_product(eng, resolve_target(target))
        kind = "product"
    except NotFound:
        try:
            data = get_run(eng, target)
        except NotFound:
            raise NotFound(
                f"{target!r} is neither a recorded product nor a run id: see 'dpt runs'"
            ) from None
        kind = "run"
    if as_json:
        echo_json(data)
        return
    console = Console()
    if not console.is_terminal:  # piped: one record per line, whatever its length
        console = Console(soft_wrap=True)
    if kind == "run":
        for key, value in data.items():
            shown = tag_text(value) if key == "tags" else str(value)
            console.print(f"[bold]{escape(key)}[/]: {escape(shown)}")
        return
    console.print(f"[bold]{escape(data['uri'])}[/] — {len(data['versions'])} version(s)")
    for v in data["versions"]:
        producer = v["produced_by"]
        made = (
            f"run {producer['id']} {producer['orchestrator']}:{producer['job']}{'/' + producer['task'] if producer['task'] else ''} ({producer['status']})"
            if producer
            else "observed (no producer recorded)"
        )
        console.print(escape(f"  {v['recorded_at']}  {v['content_hash'] or '-'}  {made}"))
        if v.get("tags"):
            console.print(escape(f"    tags: {tag_text(v['tags'])}"))
        if v["environment"]:
            env = v["environment"]
            console.print(escape(f"    env: python {env['python']} on {env['host']}"))
        for p in v["parents"]:
            console.print(escape(f"    <- {p['uri']} ({p['content_hash'] or '-'})"))


@click.command()
@json_option
def stats(as_json: bool) -> None:
    """Count what is recorded: invocations, environments, products, versions, edges."""
    from dpt_core.store.queries import stats as _stats

    data = _stats(engine())
    if as_json:
        echo_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key:28} {value}")


def register(cli: click.Group) -> None:
    for command in (runs, show, stats):
        cli.add_command(command)
