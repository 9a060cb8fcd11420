"""Every code block in the README and the docs is checked against the code.

- ``python`` blocks must compile;
- ``bash`` / ``console`` lines that call ``dpt`` must name a real command with
  options it accepts (parsed by the CLI itself, not run);
- ``toml`` blocks must be valid dpt configuration files;
- ``json`` blocks must parse.
Runnable end-to-end paths (the quickstart, each example) run in test_examples.py
and the adapters' test suites.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w{}-]*)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        if page.name == "cli.md":  # generated from --help and compared in test_docs.py
            continue
        for match in FENCE.finditer(page.read_text()):
            if match.group(1) == language:
                found.append(
                    (
                        f"{page.name}:{page.read_text()[: match.start()].count(chr(10)) + 1}",
                        match.group(2),
                    )
                )
    return found


@pytest.mark.parametrize(
    ("where", "code"), blocks("python"), ids=lambda v: v if ":" in str(v) else ""
)
def test_python_blocks_compile(where, code):
    compile(code, where, "exec")


def dpt_command_lines() -> list[tuple[str, str]]:
    lines = []
    for language in ("bash", "console"):
        for where, code in blocks(language):
            for line in code.splitlines():
                line = line.strip()
                if language == "console":  # only the prompts: the rest is output
                    if not line.startswith("$ "):
                        continue
                    line = line.removeprefix("$ ")
                line = line.split("  #")[0].strip()
                if line.startswith("dpt ") and "..." not in line:
                    lines.append((where, line))
    return lines


@pytest.mark.filterwarnings("ignore:'protected_args' is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("where", "line"), dpt_command_lines(), ids=lambda v: v)
def test_dpt_command_lines_parse(where, line):
    from dpt_core.cli import build_cli

    group: click.Command = build_cli()
    args = shlex.split(line)[1:]
    for stop in (">", "|", "&&"):  # shell redirections and pipes end the dpt command
        if stop in args:
            args = args[: args.index(stop)]
    context = group.make_context("dpt", list(args), resilient_parsing=False)
    # walk down sub-groups the way click does when it runs the command
    while isinstance(group, click.Group) and context.protected_args + context.args:
        name, cmd, rest = group.resolve_command(context, [*context.protected_args, *context.args])
        assert cmd is not None, f"{where}: unknown command in {line!r}"
        context = cmd.make_context(name, rest, parent=context, resilient_parsing=False)
        group = cmd


def test_there_are_command_lines_to_check():
    assert len(dpt_command_lines()) >= 10


@pytest.mark.parametrize(
    ("where", "code"), blocks("toml"), ids=lambda v: v if ":" in str(v) else ""
)
def test_toml_blocks_are_valid(where, code, tmp_path, monkeypatch):
    data = tomllib.loads(code)
    if "project" in data:  # a plugin's pyproject.toml
        assert "dpt" in data["project"]["entry-points"]
        return
    from dpt_core.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text(code)
    settings = load_settings({"DPT_CONFIG": str(path)})
    assert settings.config_file == path


@pytest.mark.parametrize(
    ("where", "code"), blocks("json"), ids=lambda v: v if ":" in str(v) else ""
)
def test_json_blocks_parse(where, code):
    json.loads(code)
