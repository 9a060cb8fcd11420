"""Render the CLI reference page (``docs/cli.md``) from the commands' own ``--help``.

``python -m dpt_core.cli.reference > docs/cli.md`` regenerates it; a test fails
when the page and the code disagree.
"""

from __future__ import annotations

import click


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found.extend(_walk(command.commands[name], [*path, name]))
    return found


def cli_reference() -> str:
    from dpt_core import cli as cli_module

    # built-in commands only (plugins may add their own): each built-in module, loaded
    cli_module.cli.list_commands(click.Context(cli_module.cli))
    parts = [
        "# Command line reference",
        "",
        "Generated from `dpt ... --help` by `python -m dpt_core.cli.reference`; a test keeps it in sync.",
        "Exit codes: 0 success, 1 a command that failed, 2 bad usage or bad input (one line on stderr).",
        "",
    ]
    for path, command in _walk(cli_module.cli, ["dpt"]):
        context = click.Context(
            command,
            info_name=" ".join(path),
            terminal_width=100,
            max_content_width=100,
            help_option_names=["-h", "--help"],  # as every dpt command inherits from the group
        )
        parts += [
            f"## `{' '.join(path)}`",
            "",
            "```text",
            command.get_help(context).rstrip(),
            "```",
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(cli_reference(), end="")
