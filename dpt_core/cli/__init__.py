"""The ``dpt`` command line.

Exit codes: 0 success, 1 a command that failed (or the exit code of the command
``dpt run`` ran), 2 bad usage or bad input. Errors are one line on stderr, never
a traceback. Every listing takes ``--json``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from dpt_core.errors import DptError


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: Built-in command -> the module under ``dpt_core.cli`` that defines it (its
#: ``register(cli)`` adds it). A command's module is imported when the command is asked
#: for, so ``dpt run`` does not import the database stack or ``rich`` that other commands
#: need; ``dpt --help`` imports them all.
BUILTIN_COMMANDS = {
    "db": "db",
    "run": "run",
    "track": "run",
    "runs": "query",
    "show": "query",
    "stats": "query",
    "plugins": "admin",
    "spool": "admin",
    "doctor": "admin",
    "serve": "serve",
    "lineage": "analysis",
    "stale": "analysis",
    "impact": "analysis",
    "env": "analysis",
    "export": "analysis",
    "reproduce": "reproduce",
    "tag": "tag",
}


class DptGroup(click.Group):
    """Turns dpt errors and database errors into one line and the right exit code, and
    loads each built-in command's module when the command is first asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Modules of :data:`BUILTIN_COMMANDS` whose commands were added to this group.
        self._loaded: set[str] = set()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in BUILTIN_COMMANDS:
            self._load(BUILTIN_COMMANDS[cmd_name])
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in dict.fromkeys(BUILTIN_COMMANDS.values()):
            self._load(module)
        return sorted(self.commands)

    def _load(self, module: str) -> None:
        """Import ``dpt_core.cli.<module>`` and add its commands, once (not over a command a
        plugin added under the same name, as when built-ins were added first); a module
        whose import failed is tried again next time."""
        if module in self._loaded:
            return
        try:
            loaded = importlib.import_module(f"dpt_core.cli.{module}")
        except ImportError:  # pragma: no cover - an optional dependency (rich) is missing
            if module != "analysis":
                raise
            return
        found = click.Group()
        loaded.register(found)
        for name, command in found.commands.items():
            self.commands.setdefault(name, command)  # a plugin's command of that name wins
        self._loaded.add(module)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DptError as exc:
            raise CliError(str(exc), exc.exit_code) from None
        except Exception as exc:
            database = sys.modules.get("sqlalchemy.exc")  # (not imported: not its error)
            if database is None or not isinstance(exc, database.SQLAlchemyError):
                raise
            from dpt_core.store.engine import describe_db_error

            raise CliError(f"database error: {describe_db_error(exc)}", 1) from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


@contextlib.contextmanager
def progress(description: str, shown: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr, on a terminal and when ``shown``; yields
    ``update(done, total=None)``. ``rich`` is imported only when a bar can show."""
    if not (shown and sys.stderr.isatty()):
        yield lambda done, total=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task: list[Any] = []

        def update(done: int, total: int | None = None) -> None:
            if not task:
                task.append(bar.add_task(description, total=total))
            bar.update(task[0], completed=done, total=total)

        yield update


def settings() -> Any:
    from dpt_core.config import get_settings

    return get_settings()


def engine() -> Any:
    """The database engine for read commands (schema checked; SQLite created on first use)."""
    from dpt_core.store.plugin import current_store

    return current_store(settings()).engine


def resolve_target(target: str) -> str:
    from dpt_core.uri import normalize_uri

    return normalize_uri(target)


@click.group(cls=DptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="data-product-tracker", prog_name="dpt")  # type: ignore[call-arg]
@click.option("-v", "--verbose", is_flag=True, help="Log what dpt does to stderr.")
def cli(verbose: bool) -> None:
    """dpt records where every data product came from: runs, environments,
    content-hashed versions and lineage, in one SQL database.

    \b
    Database: $DPT_DATABASE_URL, else the config file, else a SQLite file
    in your data directory.  Examples:
      dpt run -i raw.fits -o cal.fits -- python calibrate.py raw.fits cal.fits
      dpt lineage cal.fits --upstream
      dpt runs --status failed --json
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )


_registered = False


def build_cli() -> click.Group:
    """The complete CLI: built-in commands, then commands from plugins (``dpt_register_commands``)."""
    global _registered
    if not _registered:
        _registered = True
        try:
            from dpt_core.plugins import load_plugins

            load_plugins(settings().load_plugins).hook.dpt_register_commands(cli=cli)
        except DptError:
            pass  # a bad config is reported by the command itself
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="dpt")
