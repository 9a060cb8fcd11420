"""``dpt reproduce --export DIR``: what a person needs to rebuild elsewhere.

DIR/
  recipe.json                  the recipe (the ``--json`` shape)
  recipe.txt                   the recipe as text
  manifest.json                input and output hashes, for ``dpt reproduce --check --manifest``
  requirements/env-<id>.txt    exact pins of each recorded environment (``name==version``)
  requirements/env-<id>.python-version   its Python version
  steps.sh                     the steps: ``dpt run`` commands as recorded, the
                               orchestrators' own commands, in dependency order
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
from pathlib import Path
from typing import Any

from dpt_core.reproduce import commands
from dpt_core.reproduce.model import Recipe, Step
from dpt_core.reproduce.render import describe_target, recipe_text

#: The ``format`` of ``manifest.json``.
MANIFEST_FORMAT = "dpt-reproduce-manifest/1"


def manifest(recipe: Recipe) -> dict[str, Any]:
    """The manifest document: the recipe plus each file's place under the recipe's root."""

    def entry(
        uri: str, version: str, content_hash: str | None, size: int | None, path: str | None
    ) -> dict[str, Any]:
        relative = None
        if path and recipe.root and (path + "/").startswith(recipe.root.rstrip("/") + "/"):
            relative = os.path.relpath(path, recipe.root)
        return {
            "uri": uri,
            "version": version,
            "content_hash": content_hash,
            "size": size,
            "path": path,
            "relative": relative,
        }

    return {
        "format": MANIFEST_FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "root": recipe.root,
        "inputs": [entry(s.uri, s.version, s.content_hash, s.size, s.path) for s in recipe.sources],
        "outputs": [
            entry(o.uri, o.version, o.content_hash, o.size, o.path) for o in recipe.outputs
        ],
        "recipe": recipe.to_dict(),
    }


def _shell_path(path: str, root: str | None) -> str:
    """``path`` for the script: under the root, ``"$ROOT"/rel``; elsewhere as it is."""
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        rel = os.path.relpath(path, root)
        return '"$ROOT"' if rel == "." else f'"$ROOT"/{shlex.quote(rel)}'
    return shlex.quote(path)


def _dpt_run_line(step: Step, root: str | None) -> str:
    argv = list(step.rerun.argv)
    split = argv.index("--")
    command = argv[split + 1 :]
    if command and commands.is_python(command[0]) and os.path.isabs(command[0]):
        command[0] = "python"  # the recorded interpreter's path: the active venv's here
    words = [
        _shell_path(t, root) if os.path.isabs(t) else shlex.quote(t)
        for t in [*argv[: split + 1], *command]
    ]
    line = " ".join(words)
    if step.rerun.cwd:
        return f"(cd {_shell_path(step.rerun.cwd, root)} && {line})"
    return line


def steps_script(recipe: Recipe) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"# Rebuild of {describe_target(recipe.target)}",
        f"# Exported by 'dpt reproduce --export' on {dt.datetime.now(dt.UTC).isoformat()}.",
        "#",
        "# Before running: create each environment (requirements/), put the sources where",
        "# ROOT says, and check them:",
        '#   dpt reproduce --check --manifest "$HERE/manifest.json" --root "$ROOT"',
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f'ROOT="${{ROOT:-{recipe.root or "."}}}"  # the recorded root; set ROOT where it is here',
        "",
    ]
    for env in recipe.environments:
        steps = [str(s.index) for s in recipe.steps if s.environment == env.id]
        if not steps:
            continue
        lines += [
            f"# Environment {env.id} (steps {', '.join(steps)}): Python {env.python} "
            f"({env.implementation}) on {env.platform}",
            f"#   python{'.'.join(env.python.split('.')[:2])} -m venv .venv-{env.id} && "
            f'.venv-{env.id}/bin/pip install --no-deps -r "$HERE/requirements/env-{env.id}.txt"',
            f"#   (uv: uv venv --python {env.python} .venv-{env.id} && uv pip install --python "
            f'.venv-{env.id}/bin/python --no-deps -r "$HERE/requirements/env-{env.id}.txt")',
        ]
    lines.append("")
    done: dict[str, int] = {}
    for step in recipe.steps:
        rerun = step.rerun
        lines.append(f"# Step {step.index}: {step.what}")
        lines.append(f"#   recorded as run {step.run.id} ({step.run.uuid}), {step.run.status}")
        if step.code.commit:
            dirty = " + uncommitted changes (not recorded)" if step.code.dirty else ""
            lines.append(f"#   code: git {step.code.commit}{dirty} in {step.code.repo}")
        if step.environment is not None:
            lines.append(f"#   environment {step.environment}")
        if rerun.unit in done:
            lines.append(f"#   made by the command of step {done[rerun.unit]} above")
            lines.append("")
            continue
        done[rerun.unit] = step.index
        if rerun.note:
            lines += [f"#   {line}" for line in _split(rerun.note)]
        if rerun.kind == "dpt-run":
            lines.append(_dpt_run_line(step, recipe.root))
        elif rerun.argv:
            variables = {p: f"{rerun.kind.upper()}_{p.strip('{}').upper()}" for p, _ in rerun.needs}
            for placeholder, meaning in rerun.needs:
                var = variables[placeholder]
                lines += [f"#   {line}" for line in _split(f"${var}: {meaning}")]
                lines.append(f': "${{{var}:?set {var} (see above)}}"')
            # A placeholder is left unquoted: "-f defs.py" is two arguments.
            words = [f"${variables[a]}" if a in variables else shlex.quote(a) for a in rerun.argv]
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in rerun.env)
            line = (prefix + " " if prefix else "") + " ".join(words)
            if rerun.cwd:
                line = f"(cd {_shell_path(rerun.cwd, recipe.root)} && {line})"
            lines.append(line)
        else:
            reason = next(
                (p.message for p in recipe.problems if p.step == step.index), rerun.note or ""
            )
            lines.append(f"echo {shlex.quote(f'step {step.index} cannot be re-run: {reason}')} >&2")
            lines.append("exit 1")
        lines.append("")
    return "\n".join(lines)


def _split(text: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def export_recipe(recipe: Recipe, directory: str | os.PathLike[str]) -> list[Path]:
    """Write the export files into ``directory`` (created if needed); returns their paths.

    :raises DptError: ``directory`` cannot be written.
    """
    from dpt_core.errors import DptError

    try:
        return _export(recipe, Path(directory))
    except OSError as exc:
        raise DptError(
            f"cannot write the export to {exc.filename or directory}: {exc.strerror or exc}"
        ) from None


def _export(recipe: Recipe, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements").mkdir(exist_ok=True)
    written = []

    def write(name: str, text: str) -> None:
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    write("recipe.json", json.dumps(recipe.to_dict(), indent=2, ensure_ascii=False) + "\n")
    write("recipe.txt", recipe_text(recipe))
    write("manifest.json", json.dumps(manifest(recipe), indent=2, ensure_ascii=False) + "\n")
    for env in recipe.environments:
        header = [
            f"# Python {env.python} ({env.implementation}) on {env.platform}",
            f"# environment {env.id}, fingerprint {env.fingerprint}; install with --no-deps:",
            "# the list is the whole recorded environment",
        ]
        write(f"requirements/env-{env.id}.txt", "\n".join([*header, *env.pins]) + "\n")
        write(f"requirements/env-{env.id}.python-version", env.python + "\n")
    write("steps.sh", steps_script(recipe))
    os.chmod(out / "steps.sh", 0o755)
    return written
