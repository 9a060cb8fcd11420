"""Recipes, checks and rebuilds as text for people (``dpt reproduce`` without ``--json``)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable

from dpt_core.reproduce.model import (
    CheckResult,
    EnvironmentSpec,
    Problem,
    ProductVersion,
    RebuildResult,
    Recipe,
    Step,
    Target,
)

_WIDTH = 100
_VALUE_WIDTH = 90


def _clip(text: str, width: int = _VALUE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text, _WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    ) or [indent]


def describe_target(target: Target) -> str:
    if target.kind == "run":
        return f"run {target.run}"
    how = {
        "on_disk": "the version on disk",
        "newest": "the newest version",
        "version": "the version asked for",
    }.get(target.selection, target.selection)
    text = f"{target.uri}, version {target.version} ({target.content_hash or 'no hash'}), {how}"
    if target.note:
        text += f": {target.note}"
    return text


def _product(p: ProductVersion, made: bool) -> str:
    origin = f"from step {p.made_by}" if made and p.made_by else "source"
    return f"{p.uri}  {p.content_hash or '(no hash)'}  [{origin if made else 'version ' + p.version[:8]}]"


def _step(step: Step, recipe: Recipe) -> list[str]:
    run = step.run
    lines = [f"Step {step.index}  {step.what}"]
    lines.append(
        f"  run {run.id} ({run.uuid}) {run.orchestrator}, {run.status}, started {run.started_at}"
    )
    if step.cwd:
        how = {"PWD": "its PWD", "paths": "the command's relative paths"}.get(
            step.cwd_source or "", step.cwd_source or ""
        )
        lines.append(f"  directory: {step.cwd}" + (f" (from {how})" if how else ""))
    code = step.code
    if code.commit:
        state = "dirty: uncommitted changes" if code.dirty else "clean"
        text = f"  code: git {code.commit} ({state})"
        if code.branch:
            text += f" on {code.branch}"
        if code.repo:
            text += f" in {code.repo}"
        if code.remote:
            text += f", remote {code.remote}"
        lines.append(text)
    elif step.environment is not None:
        lines.append("  code: not in a git work tree (no commit recorded)")
    if code.declared:
        lines.append(f"  code version (declared): {code.declared}")
    env = recipe.environment(step.environment)
    if env is not None:
        lines.append(
            f"  environment {env.id}: Python {env.python} ({env.implementation}) on "
            f"{env.platform}, {len(env.distributions)} distributions"
        )
    else:
        lines.append("  environment: not recorded")
    if step.parameters:
        lines += _wrap(
            "parameters: " + _clip(json.dumps(dict(step.parameters), sort_keys=True), 300), "  "
        )
    if step.inputs:
        lines.append("  inputs:")
        lines += [f"    {_product(p, True)}" for p in step.inputs]
    if step.outputs:
        lines.append("  outputs:")
        lines += [f"    {o.uri}  {o.content_hash or '(no hash)'}" for o in step.outputs]
    rerun = step.rerun
    if rerun.argv:
        where = f"(cd {rerun.cwd} && " if rerun.cwd else ""
        lines += _wrap(f"re-run ({rerun.kind}): {where}{rerun.shell}{')' if where else ''}", "  ")
        for placeholder, meaning in rerun.needs:
            lines += _wrap(f"{placeholder}: {meaning}", "    ")
    else:
        lines.append(f"  re-run: none ({rerun.note})")
    return lines


def _environment(env: EnvironmentSpec) -> list[str]:
    lines = [
        f"Environment {env.id}  Python {env.python} ({env.implementation}) on {env.platform}, "
        f"host {env.host}, user {env.user}"
    ]
    lines += _wrap(f"distributions ({len(env.distributions)}): " + " ".join(env.pins), "  ")
    lines.append(f"  variables kept ({len(env.variables)}):")
    lines += [f"    {k}={_clip(v)}" for k, v in env.variables]
    if env.redacted:
        lines += _wrap("redacted (values never shown): " + ", ".join(env.redacted), "  ")
    return lines


def problems_text(problems: Iterable[Problem], title: str) -> list[str]:
    found = list(problems)
    if not found:
        return []
    lines = [f"{title} ({len(found)}):"]
    for p in found:
        where = f"step {p.step}: " if p.step and not p.message.startswith(f"step {p.step}") else ""
        lines += _wrap(f"- [{p.kind}] {where}{p.message}", "  ")
        lines += _wrap(f"what can be done: {p.remedy}", "      ")
    return lines


def recipe_text(recipe: Recipe) -> str:
    lines = [f"Recipe for {describe_target(recipe.target)}"]
    lines.append(
        f"  {len(recipe.steps)} step(s), {len(recipe.sources)} source(s), "
        f"{len(recipe.environments)} environment(s)"
        + (f"; root {recipe.root}" if recipe.root else "")
    )
    lines.append("")
    if recipe.sources:
        lines.append("Sources (must be present as recorded):")
        lines += [f"  {_product(s, False)}" for s in recipe.sources]
        lines.append("")
    for step in recipe.steps:
        lines += _step(step, recipe)
        lines.append("")
    for env in recipe.environments:
        lines += _environment(env)
        lines.append("")
    lines += problems_text(recipe.problems, "Problems")
    if recipe.notes:
        lines.append("Notes:")
        for note in recipe.notes:
            lines += _wrap(f"- {note}", "  ")
    return "\n".join(lines).rstrip() + "\n"


def check_text(result: CheckResult) -> str:
    lines = [f"Check of {describe_target(result.target)}"]
    for c in result.inputs:
        detail = {
            "same": "as recorded",
            "changed": f"CHANGED: now {c.current_hash}",
            "missing": "MISSING",
            "unreadable": f"UNREADABLE: {c.detail}",
            "not_local": "not checked: not a local file",
            "unhashed": "not checked: no hash recorded",
        }[c.state]
        lines.append(f"  input {c.path or c.uri}: {detail}")
    for e in result.environments:
        lines.append(
            f"  environment {e.environment}: "
            + ("same as this one" if e.same else "differs from this one (see below)")
        )
    lines.append("")
    if result.ok:
        lines.append("OK: nothing recorded says a rebuild here would differ.")
    else:
        lines += problems_text(result.causes, "Would make the rebuild differ or fail")
    if result.notes:
        lines.append("")
        lines += problems_text(result.notes, "Notes")
    return "\n".join(lines).rstrip() + "\n"


def rebuild_text(result: RebuildResult) -> str:
    lines = [f"Rebuild of {describe_target(result.target)} in {result.workdir}"]
    for run in result.runs:
        state = "ok" if run.returncode == 0 else f"exit code {run.returncode}"
        new = f", recorded as run {run.run}" if run.run else ""
        lines.append(
            f"  step(s) {', '.join(map(str, run.steps))}: re-ran run {run.original} ({state}{new})"
        )
    if result.outcomes:
        lines.append("")
        for o in result.outcomes:
            extra = ""
            if o.outcome == "differs":
                extra = f": recorded {o.recorded_hash}, rebuilt {o.rebuilt_hash}"
            elif o.detail:
                extra = f": {o.detail}"
            lines.append(f"  {o.outcome:<12} {o.uri} (step {o.step}){extra}")
    lines.append("")
    if result.ok and not result.outcomes:
        lines.append("Nothing was rebuilt.")
    elif result.ok:
        lines.append("Every output is identical to the recorded one.")
    elif not result.completed and not result.runs:
        lines.append("Nothing was run:")
    elif not result.completed:
        lines.append("The rebuild stopped:")
    else:
        lines.append("The rebuild differs from the record.")
    lines += problems_text(result.problems, "Problems")
    if result.notes:
        lines.append("Notes:")
        for note in result.notes:
            lines += _wrap(f"- {note}", "  ")
    return "\n".join(lines).rstrip() + "\n"
