"""Every code block in the README and the docs is checked against the code.

- ``python`` blocks must compile, and each is executed or, where marked
  ``% skip-exec: <why>``, has every dpt name it uses resolved (see "python blocks run"
  below);
- ``bash`` / ``console`` lines that call ``dpt`` must name a real command with
  options it accepts (parsed by the CLI itself, not run);
- ``toml`` blocks must be valid dpt configuration files;
- ``json`` blocks must parse.
Runnable end-to-end paths (the quickstart, each example) run in test_examples.py
and the adapters' test suites.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# =========================================================================== python blocks run
#
# Every ``python`` block of the README and docs/*.md is either EXECUTED or, when it needs
# what a test cannot give it (an orchestrator, a server, a user's files), RESOLVED: every
# ``dpt_core`` / ``dpt_airflow`` / ``dpt_prefect`` / ``dpt_dagster`` name it uses is
# imported and looked up attribute by attribute, and every method a block's class
# overrides on a dpt class exists there. Either way a renamed API fails this test.
#
# Markers are MyST comments (not rendered) right above the fence:
#
#     % skip-exec: needs Airflow                 <- resolve-only, and why
#     ```python
#
#     % exec-files: raw.fits cal.fits            <- executed; the files it expects the
#     ```python                                     reader to have are made first
#
# A page's executed blocks run in order, sharing one namespace, in one fresh Python
# process in a new temporary directory with a temporary SQLite database (DPT_DATABASE_URL,
# DPT_SPOOL_DIR, HOME and the XDG directories point into it) and the default settings a
# reader has (not strict: the adapter kit's page shows what a failure costs then).

MARKER = re.compile(r"^\s*%\s*skip-exec:\s*(?P<reason>.*\S)?\s*$")
FILES_MARKER = re.compile(r"^\s*%\s*exec-files:\s*(?P<files>.*\S)\s*$")
INDENTED_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w{}-]*)[^\n]*\n", re.M)
#: The packages whose names a block must get right.
DPT_PACKAGES = ("dpt_core", "dpt_airflow", "dpt_prefect", "dpt_dagster")
#: Where one of these is not installed (or not importable), the adapters' names that need
#: it are found in their source instead (see _resolve_in_source).
ORCHESTRATOR_LIBRARIES = ("airflow", "prefect", "dagster")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    skip_reason: str | None  # None: executed
    files: tuple[str, ...] = ()  # made (holding their own name) before it runs

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of ``page`` (fenced at any indent, e.g. inside a list item)."""
    text = page.read_text()
    lines = text.splitlines()
    found = []
    for match in INDENTED_FENCE.finditer(text):
        if match.group("lang") != "python":
            continue
        indent = match.group("indent")
        start = text[: match.start()].count("\n")  # 0-based line of the fence
        body = []
        for line in lines[start + 1 :]:
            if line.strip() == "```":
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
        above = []  # the comment lines right above the fence
        for i in range(start - 1, -1, -1):
            if not lines[i].strip().startswith("%"):
                break
            above.append(lines[i])
        reason, files = None, ()
        for line in above:
            if (marker := MARKER.match(line)) is not None:
                reason = marker.group("reason")
                assert reason, f"{page.name}:{start + 1}: '% skip-exec:' must say why"
            elif (marker := FILES_MARKER.match(line)) is not None:
                files = tuple(marker.group("files").split())
        found.append(Block(page, start + 1, "\n".join(body) + "\n", reason, files))
    return found


def all_python_blocks() -> list[Block]:
    return [b for page in PAGES if page.name != "cli.md" for b in python_blocks(page)]


#: dpt classes a block's class extends with methods of its own (an adapter's translator
#: on the kit's base), rather than overriding methods dpt defines.
EXTENDED_BASES = {"dpt_core.adapter.Translator"}


def _dpt_names(blocks: list[Block]) -> dict[Block, set[str]]:
    """The dotted dpt names each block uses (a page's imports carry over to its later blocks).

    A name is an attribute chain rooted at a dpt package or at a name imported from one
    (``dpt_core.lineage``, ``dpt_prefect.flow_hooks``, ``RebuildOptions`` from
    ``from dpt_core.reproduce import RebuildOptions``), and, for a class whose base is a
    dpt class, ``Base.method`` for each public method it overrides.
    """
    aliases = {name: name for name in DPT_PACKAGES}
    out: dict[Block, set[str]] = {}
    for block in blocks:
        tree = ast.parse(block.code, block.where)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in DPT_PACKAGES:
                        aliases[alias.asname or alias.name.split(".")[0]] = (
                            alias.name if alias.asname else alias.name.split(".")[0]
                        )
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in DPT_PACKAGES
            ):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

        def dotted(expr: ast.expr) -> str | None:
            parts = []
            while isinstance(expr, ast.Attribute):
                parts.append(expr.attr)
                expr = expr.value
            if isinstance(expr, ast.Name) and expr.id in aliases:
                return ".".join([aliases[expr.id], *reversed(parts)])
            return None

        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Name):
                name = dotted(node)
                if name is not None:
                    names.add(name)
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    base_name = dotted(base)
                    if base_name is None or base_name in EXTENDED_BASES:
                        continue
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                            names.add(f"{base_name}.{item.name}")
        # keep the longest chains only (``dpt_core.reproduce.check`` covers ``dpt_core.reproduce``)
        out[block] = {n for n in names if not any(m.startswith(n + ".") for m in names)}
    return out


def _module_source(module: str) -> ast.Module | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text(), spec.origin)


def _resolve_in_source(module: str, attrs: list[str], depth: int = 0) -> bool:
    """Whether ``module.attrs...`` exists, read from source, without importing the
    orchestrator it needs: top-level definitions and assignments, imports (also under
    ``TYPE_CHECKING``, which the adapters' lazy ``__getattr__`` mirrors), class bodies
    and their bases."""
    if not attrs:
        return True
    if depth > 20:
        return False
    if _find_spec(f"{module}.{attrs[0]}"):
        return _resolve_in_source(f"{module}.{attrs[0]}", attrs[1:], depth + 1)
    tree = _module_source(module)
    return tree is not None and _find_in_body(module, tree.body, attrs, depth)


def _find_spec(module: str) -> bool:
    """Whether ``module`` exists (its parents are imported; a parent that needs a missing
    library, or that is not a package, means no)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _find_in_body(module: str, body: list[ast.stmt], attrs: list[str], depth: int) -> bool:
    name, rest = attrs[0], attrs[1:]
    for node in body:
        if isinstance(node, ast.If):  # TYPE_CHECKING and other guarded definitions
            if _find_in_body(module, node.body + node.orelse, attrs, depth):
                return True
        elif isinstance(node, ast.ClassDef) and node.name == name:
            if not rest:
                return True
            if _find_in_body(module, node.body, rest, depth):
                return True
            for base in node.bases:  # inherited: look in the base, wherever it is defined
                if isinstance(base, ast.Name) and _find_in_body(
                    module, body, [base.id, *rest], depth + 1
                ):
                    return True
            return False
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return not rest
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return not rest
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    if node.module.split(".")[0] in DPT_PACKAGES:
                        return _resolve_in_source(node.module, [alias.name, *rest], depth + 1)
                    return True  # a library's name: not ours to check
    return False


def resolve(name: str) -> None:
    """Import the longest module prefix of ``name`` and look up the rest, attribute by
    attribute.

    Where an adapter's name needs its orchestrator and the orchestrator is not installed
    in this environment, the rest is looked up in the adapter's source instead.

    :raises AssertionError: naming the part that does not exist.
    """
    parts = name.split(".")
    cut = next((i for i in range(len(parts), 0, -1) if _find_spec(".".join(parts[:i]))), 0)
    assert cut, f"{name}: no module {parts[0]!r}"

    def missing_orchestrator(exc: ImportError, index: int) -> None:
        if (exc.name or "").split(".")[0] not in ORCHESTRATOR_LIBRARIES:
            raise exc
        assert _resolve_in_source(".".join(parts[:index]), parts[index:]), (
            f"{name}: {'.'.join(parts[: index + 1])} does not exist (read from the source: "
            f"{exc.name} is not installed here)"
        )

    try:
        obj: Any = importlib.import_module(".".join(parts[:cut]))
    except ImportError as exc:
        missing_orchestrator(exc, cut - 1)
        return
    for index in range(cut, len(parts)):
        try:
            obj = getattr(obj, parts[index])
        except ImportError as exc:  # (a lazy name whose module needs an orchestrator)
            missing_orchestrator(exc, index)
            return
        except AttributeError:
            raise AssertionError(
                f"{name}: {'.'.join(parts[:index])} has no attribute {parts[index]!r}"
            ) from None


def test_every_python_block_is_executed_or_marked_resolve_only():
    """Count the blocks of each kind (shown with -s / in the report) and check the markers."""
    blocks = all_python_blocks()
    executed = [b for b in blocks if b.skip_reason is None]
    resolved = [b for b in blocks if b.skip_reason is not None]
    print(f"\npython blocks: {len(executed)} executed, {len(resolved)} resolve-only")
    for block in resolved:
        print(f"  resolve-only {block.where}: {block.skip_reason}")
    assert len(blocks) >= 20, "fewer python blocks than the docs have: the parser is broken"
    assert len(executed) >= 10
    # Every marker sits right above a python fence (a misplaced one would skip nothing).
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            if MARKER.match(line) or FILES_MARKER.match(line):
                following = next(
                    (ln for ln in lines[number + 1 :] if not ln.strip().startswith("%")), ""
                )
                assert following.strip().startswith("```python"), (
                    f"{page.name}:{number + 1}: {line.strip()!r} is not right above a python block"
                )


_NAMES = _dpt_names(all_python_blocks())


@pytest.mark.parametrize(
    ("where", "name"),
    sorted({(b.where, n) for b, names in _NAMES.items() for n in names}),
    ids=lambda v: v,
)
def test_dpt_names_in_python_blocks_resolve(where, name):
    resolve(name)


def test_names_are_found_in_the_blocks():
    found = {n for names in _NAMES.values() for n in names}
    for name in (
        "dpt_core.invocation",
        "dpt_core.lineage",
        "dpt_dagster.dpt_asset_sensor",
        "dpt_prefect.flow_hooks",
        "dpt_airflow.AirflowTranslator.get_task",
        "dpt_core.reproduce.RebuildOptions",
    ):
        assert name in found, name


def test_the_resolver_fails_on_a_renamed_name():
    resolve("dpt_core.lineage")
    resolve("dpt_airflow.AirflowTranslator.get_asset_uri")
    for wrong in (
        "dpt_core.lineage_graph",
        "dpt_core.reproduce.RebuildOption",
        "dpt_airflow.AirflowTranslator.get_asset",
        "dpt_prefect.PrefectTranslator.get_flow",
    ):
        with pytest.raises(AssertionError, match=re.escape(wrong.rpartition(".")[2])):
            resolve(wrong)


_RUNNER = r"""
import json, logging, pathlib, sys, traceback

class Report(logging.Handler):  # what dpt itself warns about (its loggers: dpt, dpt.server)
    def emit(self, record):
        if record.name in ("dpt", "dpt.server"):
            print(f"dpt warned: {record.getMessage()}", flush=True)

logging.getLogger("dpt").addHandler(Report(logging.WARNING))
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for where, code, files in blocks:
    for name in files:
        pathlib.Path(name).write_text(name)
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        print(f"FAILED {where}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"ran {where}")
if "dpt_core" in sys.modules:
    import dpt_core
    print(f"recorded runs: {len(dpt_core.runs(limit=100_000))}")
"""


def _executed_pages() -> list[Path]:
    return [
        page
        for page in PAGES
        if page.name != "cli.md" and any(b.skip_reason is None for b in python_blocks(page))
    ]


@pytest.mark.parametrize("page", _executed_pages(), ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path):
    blocks = [b for b in python_blocks(page) if b.skip_reason is None]
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    env.update(
        DPT_DATABASE_URL=f"sqlite:///{tmp_path / 'dpt.sqlite3'}",
        DPT_SPOOL_DIR=str(tmp_path / "spool"),
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "home" / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / "config"),
        XDG_CACHE_HOME=str(tmp_path / "home" / "cache"),
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([(b.where, b.code, b.files) for b in blocks]),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("ran ")] == [f"ran {b.where}" for b in blocks]
    # Tracking never fails a pipeline: it warns and spools. Here nothing may have.
    assert not [line for line in lines if line.startswith("dpt warned: ")], done.stdout
    spooled = [p for p in (tmp_path / "spool").rglob("*.jsonl") if p.stat().st_size]
    assert not spooled, f"events were spooled, not recorded: {spooled}"
    # A page that records runs has them in its database.
    if any(re.search(r"dpt_core\.(invocation|track|tracked)\b", b.code) for b in blocks):
        assert "recorded runs: 0" not in lines and any(
            line.startswith("recorded runs: ") for line in lines
        ), done.stdout
