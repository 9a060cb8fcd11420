"""``dpt db``: schema migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from dpt_core.cli import CliError, echo_json, json_option


def _engine() -> object:
    from dpt_core.config import get_settings
    from dpt_core.store.engine import make_engine

    s = get_settings()
    return make_engine(
        s.database_url, connect_timeout=s.connect_timeout, statement_timeout=s.statement_timeout
    )


@contextlib.contextmanager
def _revision_errors(revision: str) -> Iterator[None]:
    """Alembic's errors about a revision argument, as one line and exit 2."""
    from alembic.util.exc import CommandError

    if not revision.strip():
        raise CliError(
            "the revision is empty: give 'head', 'base' or a revision (see 'dpt db current')"
        )
    if "@" in revision:  # Alembic's branch syntax (dpt has one branch); it asserts on '@'
        raise CliError(
            f"revision {revision!r} cannot be used (dpt's migrations have no branches): "
            "give 'head', 'base' or a revision (see 'dpt db current')"
        )
    try:
        yield
    except CommandError as exc:
        from dpt_core.store.migrations import HEAD

        raise CliError(
            f"revision {revision!r} cannot be used ({exc}): give 'head', 'base' or a revision "
            f"such as {HEAD} (see 'dpt db current')"
        ) from None


@click.group()
def db() -> None:
    """Create and migrate the database schema."""


def _migrate(direction: str, revision: str) -> None:
    """Move the schema to ``revision`` (``direction`` is ``upgrade`` or ``downgrade``)."""
    from dpt_core.store import migrations
    from dpt_core.store.engine import safe_url

    engine = _engine()
    with _revision_errors(revision):
        getattr(migrations, direction)(engine, revision)
    reached = migrations.current(engine) or "base"  # type: ignore[arg-type]
    click.echo(f"{safe_url(engine.url)} is at revision {reached}")  # type: ignore[attr-defined]


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head). Safe to run again."""
    _migrate("upgrade", revision)


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION ('base' removes every dpt table)."""
    _migrate("downgrade", revision)


@db.command()
@json_option
def current(as_json: bool) -> None:
    """Show the schema revision of the database and the one this dpt needs."""
    from dpt_core.store import migrations

    engine = _engine()
    data = {"current": migrations.current(engine), "head": migrations.HEAD}  # type: ignore[arg-type]
    if as_json:
        echo_json(data)
    else:
        click.echo(
            f"current: {data['current'] or 'none (empty database)'}\nhead:    {data['head']}"
        )


@db.command()
def check() -> None:
    """Fail (exit 1) when the database schema and dpt's models disagree."""
    from dpt_core.store import migrations

    engine = _engine()
    revision = migrations.current(engine)  # type: ignore[arg-type]
    if revision != migrations.HEAD:
        raise CliError(
            f"database is at revision {revision or 'none'}, head is {migrations.HEAD}: run 'dpt db upgrade'",
            1,
        )
    differences = migrations.diff(engine)  # type: ignore[arg-type]
    if differences:
        for item in differences:
            click.echo(f"  {item}", err=True)
        raise CliError(f"{len(differences)} difference(s) between models and database", 1)
    click.echo(f"schema at {revision}; models and database agree")


def register(cli: click.Group) -> None:
    cli.add_command(db)
