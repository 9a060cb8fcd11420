"""``dpt runs``, ``dpt show``, ``dpt stats``."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dpt_core.cli import echo_json, engine, json_option, resolve_target
from dpt_core.events import STATUSES


def _short(value: Any, width: int = 19) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@click.option(
    "--orchestrator",
    help="Only runs from this orchestrator (airflow, prefect, dagster, cli, python).",
)
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--job", help="Only runs of this job (DAG id, flow name, Dagster job, script).")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="At most this many runs.",
)
@json_option
def runs(
    orchestrator: str | None, status: str | None, job: str | None, limit: int, as_json: bool
) -> None:
    """List recorded runs, newest first.

    \b
    Example:
      dpt runs --orchestrator airflow --status failed --limit 10
    """
    from dpt_core.store.queries import list_runs

    rows = list_runs(engine(), orchestrator=orchestrator, status=status, job=job, limit=limit)
    if as_json:
        echo_json(rows)
        return
    table = Table("id", "uuid", "orchestrator", "job", "task", "status", "started", "parent")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["uuid"][:8],
            r["orchestrator"],
            _short(r["job"], 30),
            _short(r["task"], 30),
            r["status"],
            _short(r["started_at"]),
            str(r["parent_id"] or ""),
        )
    Console().print(table)


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
    if kind == "run":
        for key, value in data.items():
            console.print(f"[bold]{key}[/]: {value}")
        return
    console.print(f"[bold]{data['uri']}[/] — {len(data['versions'])} version(s)")
    for v in data["versions"]:
        producer = v["produced_by"]
        made = (
            f"run {producer['id']} {producer['orchestrator']}:{producer['job']}{'/' + producer['task'] if producer['task'] else ''} ({producer['status']})"
            if producer
            else "observed (no producer recorded)"
        )
        console.print(f"  {v['recorded_at']}  {v['content_hash'] or '-'}  {made}")
        if v["environment"]:
            console.print(
                f"    env: python {v['environment']['python']} on {v['environment']['host']}"
            )
        for p in v["parents"]:
            console.print(f"    <- {p['uri']} ({p['content_hash'] or '-'})")


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
