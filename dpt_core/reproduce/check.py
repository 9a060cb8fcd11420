"""``dpt reproduce --check``: would a rebuild here give the recorded results?

Every source of the recipe is looked at on disk (stat, then the stat cache, then
its content hash with the recorded algorithm); every recorded environment is
compared with the one this process runs in, as ``dpt env diff`` compares two
runs (the same functions); the code each re-runnable step ran must still be
reachable; and the problems found in the record itself (a dirty tree, a step only
its orchestrator can run, a command with a masked secret...) count too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from dpt_core.config import Settings, get_settings
from dpt_core.environment import REDACTION_KEY_FACET
from dpt_core.reproduce.model import (
    CheckResult,
    EnvironmentCheck,
    EnvironmentSpec,
    InputCheck,
    InputState,
    Problem,
    ProductVersion,
    Recipe,
)

#: Distributions whose version does not change what a step computes.
_TOOLING = frozenset({"data-product-tracker"})


def map_path(path: str | None, root_map: tuple[str, str] | None) -> str | None:
    """``path`` under the recipe's root, moved to where that root is here."""
    if path is None or root_map is None:
        return path
    old, new = root_map
    if path == old or path.startswith(old.rstrip("/") + "/"):
        return os.path.join(new, os.path.relpath(path, old))
    return path


def _algorithm(content_hash: str | None) -> str | None:
    from dpt_core.config import HASH_ALGORITHMS

    if not content_hash or ":" not in content_hash:
        return None
    name = content_hash.split(":", 1)[0]
    return name if name in HASH_ALGORITHMS and name != "none" else None


def check_files(
    products: Sequence[ProductVersion],
    settings: Settings,
    root_map: tuple[str, str] | None = None,
) -> list[InputCheck]:
    """What the disk says about each of ``products`` (one stat each; a file whose size and
    mtime the stat cache knows is not read again)."""
    from dpt_core.errors import HashError
    from dpt_core.hashing import StatCache, observe_many

    results: list[InputCheck | None] = [None] * len(products)
    wanted: dict[str, list[tuple[int, str]]] = {}
    for index, product in enumerate(products):
        path = map_path(product.path, root_map)

        def result(
            state: InputState,
            current: str | None = None,
            detail: str | None = None,
            product: ProductVersion = product,
            path: str | None = path,
        ) -> InputCheck:
            return InputCheck(
                product.uri, product.version, product.content_hash, state, current, path, detail
            )

        algorithm = _algorithm(product.content_hash)
        if path is None:
            results[index] = result(
                "not_local", detail="not a file on this host: dpt cannot look at it"
            )
        elif not os.path.lexists(path):
            results[index] = result("missing")
        elif algorithm is None:
            results[index] = result("unhashed", detail="no content hash was recorded")
        else:
            wanted.setdefault(algorithm, []).append((index, path))
    if wanted:
        with StatCache(settings.cache_dir / "statcache.sqlite3") as cache:
            for algorithm, items in wanted.items():
                for start in range(0, len(items), _BATCH):
                    part = items[start : start + _BATCH]
                    try:
                        facts = observe_many([p for _, p in part], algorithm, cache=cache)
                        found: list[Any] = list(facts)
                    except HashError:  # find which one: each on its own
                        found = []
                        for _, path in part:
                            try:
                                found.append(observe_many([path], algorithm, cache=cache)[0])
                            except HashError as exc:
                                found.append(exc)
                    for (index, path), fact in zip(part, found, strict=True):
                        product = products[index]
                        base = (product.uri, product.version, product.content_hash)
                        if isinstance(fact, HashError):
                            results[index] = InputCheck(*base, "unreadable", None, path, str(fact))
                        elif not fact.exists:
                            results[index] = InputCheck(*base, "missing", None, path)
                        else:
                            same = fact.content_hash == product.content_hash
                            state: InputState = "same" if same else "changed"
                            results[index] = InputCheck(*base, state, fact.content_hash, path)
    return [r for r in results if r is not None]


#: Files hashed per stat-cache transaction.
_BATCH = 256


def _input_problems(
    checks: Sequence[InputCheck], recipe: Recipe
) -> tuple[list[Problem], list[Problem]]:
    rewritten = {
        o.uri: (s.index, o)
        for s in recipe.steps
        for o in s.outputs
        if o.uri in {c.uri for c in checks}
    }
    causes: list[Problem] = []
    notes: list[Problem] = []
    for c in checks:
        where = c.path or c.uri
        cycle = rewritten.get(c.uri)
        if c.state == "same":
            continue
        if c.state in ("changed", "missing") and cycle is not None:
            step, out = cycle
            now = "is missing" if c.state == "missing" else f"holds {c.current_hash}"
            causes.append(
                Problem(
                    "version_cycle",
                    f"input {c.uri} must be at version {c.recorded_hash} when the recipe "
                    f"starts, and step {step} rewrites it (to {out.content_hash}): {where} {now}",
                    f"restore version {c.recorded_hash} of {where} (a backup, or "
                    "'dpt show' for what made it), then rebuild",
                    subject=c.uri,
                )
            )
        elif c.state == "changed":
            causes.append(
                Problem(
                    "input_changed",
                    f"input {c.uri} changed since it was used: recorded {c.recorded_hash}, "
                    f"now {c.current_hash}",
                    f"restore {where} to version {c.recorded_hash}, or rebuild from its "
                    "current content knowing the result will differ ('dpt stale' lists what "
                    "else it affects)",
                    subject=c.uri,
                )
            )
        elif c.state == "missing":
            causes.append(
                Problem(
                    "input_missing",
                    f"input {c.uri} is gone ({where} does not exist)",
                    f"restore {where} with content {c.recorded_hash} (a backup or its source)",
                    subject=c.uri,
                )
            )
        elif c.state == "unreadable":
            causes.append(
                Problem(
                    "input_unreadable",
                    f"input {c.uri} cannot be read: {c.detail}",
                    "fix its permissions, then check again",
                    subject=c.uri,
                )
            )
        else:
            notes.append(
                Problem(
                    "input_unverifiable",
                    f"input {c.uri} cannot be verified here ({c.detail})",
                    "verify it at its source; a rebuild reads it as it is now",
                    subject=c.uri,
                    blocks_run=False,
                )
            )
    return causes, notes


# --------------------------------------------------------------------------- environments


def current_environment() -> dict[str, Any]:
    """This process's environment in the shape ``dpt env diff`` compares."""
    from dpt_core.tracker import get_tracker

    snap = get_tracker().environment()
    return {
        "python": snap.python_version,
        "implementation": snap.implementation,
        "platform": snap.platform,
        "host": snap.hostname,
        "user": snap.user,
        "facets": dict(snap.facets),
        "packages": dict(snap.distributions),
        "variables": {k: clear for k, clear, _ in snap.variables},
        "_digests": {k: d for k, _, d in snap.variables if d is not None},
    }


def recorded_environment(
    spec: EnvironmentSpec, digests: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``spec`` in the shape ``dpt env diff`` compares; without ``digests`` (a manifest
    read on another host) secret variables are present by name only."""
    variables: dict[str, Any] = dict(spec.variables)
    for name in spec.redacted:
        variables[name] = None
    return {
        "python": spec.python,
        "implementation": spec.implementation,
        "platform": spec.platform,
        "host": spec.host,
        "user": spec.user,
        "facets": dict(spec.facets),
        "packages": dict(spec.distributions),
        "variables": variables,
        "_digests": dict(digests or {name: "" for name in spec.redacted}),
    }


def diff_with_current(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``dpt env diff`` between a recorded environment (``a``) and this one (``b``)."""
    from dpt_core.store.analysis import _diff_maps, _diff_variables, _flatten

    return {
        "fields": {
            name: {"a": recorded[name], "b": current[name]}
            for name in ("python", "implementation", "platform", "host", "user")
            if recorded[name] != current[name]
        },
        "packages": _diff_maps(recorded["packages"], current["packages"]),
        "variables": _diff_variables(recorded, current),
        "facets": _diff_maps(_flatten(recorded["facets"]), _flatten(current["facets"])),
    }


def _steps_of(recipe: Recipe, env_id: int) -> str:
    found = [str(s.index) for s in recipe.steps if s.environment == env_id]
    return ("step " if len(found) == 1 else "steps ") + ", ".join(found)


def _environment_problems(
    recipe: Recipe, spec: EnvironmentSpec, diff: Mapping[str, Any]
) -> tuple[list[Problem], list[Problem]]:
    causes: list[Problem] = []
    notes: list[Problem] = []
    steps = _steps_of(recipe, spec.id)
    for name in ("python", "implementation"):
        change = diff["fields"].get(name)
        if change:
            causes.append(
                Problem(
                    "python_differs",
                    f"{steps} ran {name} {change['a']}, this is {change['b']}",
                    f"use {name} {change['a']} ('--run --venv fresh' with uv finds or installs it)",
                    subject=name,
                )
            )
    for name in ("platform", "host", "user"):
        change = diff["fields"].get(name)
        if change:
            notes.append(
                Problem(
                    "environment_differs",
                    f"{steps} ran with {name} {change['a']}, this is {change['b']}",
                    "not expected to change results",
                    subject=name,
                    blocks_run=False,
                )
            )
    packages = diff["packages"]
    for name, version in packages["removed"].items():
        target = notes if name in _TOOLING else causes
        target.append(
            Problem(
                "package_missing",
                f"{name}=={version} ({steps}) is not installed here",
                f"'--run' installs the recorded pins in a fresh virtual environment; or "
                f"pip install {name}=={version}",
                subject=name,
                blocks_run=name not in _TOOLING,
            )
        )
    for name, change in packages["changed"].items():
        target = notes if name in _TOOLING else causes
        target.append(
            Problem(
                "package_differs",
                f"{name}: {steps} ran {change['a']}, here {change['b']}",
                f"'--run' installs {name}=={change['a']} in its virtual environment; or "
                f"pip install {name}=={change['a']}",
                subject=name,
                blocks_run=name not in _TOOLING,
            )
        )
    if packages["added"]:
        names = sorted(packages["added"])
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        notes.append(
            Problem(
                "environment_differs",
                f"{len(names)} package(s) here that {steps} did not have: {shown}",
                "'--run --venv fresh' leaves them out",
                blocks_run=False,
            )
        )
    variables = diff["variables"]
    changed = sorted({*variables["added"], *variables["removed"], *variables["changed"]})
    if changed:
        shown = ", ".join(changed[:15]) + (
            f" and {len(changed) - 15} more" if len(changed) > 15 else ""
        )
        notes.append(
            Problem(
                "environment_differs",
                f"environment variables differ from {steps}'s: {shown} "
                "(values of secret ones are never shown)",
                "set the recorded values if a step reads them (see the recipe's environment)",
                blocks_run=False,
            )
        )
    facets = _other_facets(diff)
    if facets:
        notes.append(
            Problem(
                "environment_differs",
                f"environment facets differ from {steps}'s: {', '.join(facets)}",
                "see 'dpt env show' for the recorded values",
                blocks_run=False,
            )
        )
    return causes, notes


def _other_facets(diff: Mapping[str, Any]) -> list[str]:
    """Facets that differ, except git's (this process's directory says nothing of the
    code a step ran: the code checks do) and the redaction key's id."""
    names = {
        name
        for part in ("added", "removed", "changed")
        for name in diff["facets"][part]
        if not name.startswith("git.") and name != REDACTION_KEY_FACET
    }
    return sorted(names)


# --------------------------------------------------------------------------- code


def _code_problems(
    recipe: Recipe, root_map: tuple[str, str] | None
) -> tuple[list[Problem], list[Problem]]:
    from dpt_core.environment import git_facet

    causes: list[Problem] = []
    notes: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for step in recipe.steps:
        code = step.code
        if step.rerun.kind != "dpt-run" or not code.repo or not code.commit:
            continue
        repo = map_path(code.repo, root_map) or code.repo
        if (repo, code.commit) in seen:
            continue
        seen.add((repo, code.commit))
        remote = f" (remote {code.remote})" if code.remote else ""
        if not os.path.isdir(repo):
            causes.append(
                Problem(
                    "code_unavailable",
                    f"the git work tree step {step.index} ran from is gone: {repo}",
                    f"clone it{remote} and check out {code.commit}",
                    step.index,
                    repo,
                )
            )
            continue
        if not _has_commit(repo, code.commit):
            causes.append(
                Problem(
                    "code_unavailable",
                    f"commit {code.commit} that step {step.index} ran is not in {repo}",
                    f"fetch it{remote}; 'git -C {repo} fetch --all'",
                    step.index,
                    repo,
                )
            )
            continue
        now = git_facet(repo)
        if now is not None and now.get("commit") != code.commit:
            notes.append(
                Problem(
                    "code_unavailable",
                    f"{repo} is now at {str(now.get('commit'))[:12]}; step {step.index} ran "
                    f"{code.commit[:12]}",
                    f"'--run' uses {code.commit[:12]}; by hand: git -C {repo} checkout {code.commit}",
                    step.index,
                    repo,
                    blocks_run=False,
                )
            )
    return causes, notes


def _has_commit(repo: str, commit: str) -> bool:
    try:
        done = subprocess.run(
            ["git", "-C", repo, "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# --------------------------------------------------------------------------- check


def check_recipe(
    recipe: Recipe,
    *,
    settings: Settings | None = None,
    root_map: tuple[str, str] | None = None,
    digests: Mapping[int, Mapping[str, str]] | None = None,
    current: dict[str, Any] | None = None,
) -> CheckResult:
    """Check ``recipe`` against the disk and this environment.

    :param root_map: ``(recorded root, root here)`` when the files live elsewhere now
        (a manifest checked on another machine).
    :param digests: the recorded keyed digests of secret variables per environment id
        (from the store), so a changed secret shows without its value.
    """
    settings = settings or get_settings()
    inputs = tuple(check_files(recipe.sources, settings, root_map))
    causes, notes = _input_problems(inputs, recipe)
    for problem in recipe.problems:
        if problem.kind == "version_cycle":
            continue  # a cause only when the version it starts from is not on disk (above)
        (causes if problem.blocks_run else notes).append(problem)
    here = current if current is not None else current_environment()
    env_checks = []
    for spec in recipe.environments:
        recorded = recorded_environment(spec, (digests or {}).get(spec.id))
        diff = diff_with_current(recorded, here)
        env_causes, env_notes = _environment_problems(recipe, spec, diff)
        causes += env_causes
        notes += env_notes
        same = not diff["fields"] and not any(
            diff[section][part]
            for section in ("packages", "variables")
            for part in ("added", "removed", "changed")
        )
        same = same and not _other_facets(diff)
        env_checks.append(EnvironmentCheck(spec.id, same, diff))
    code_causes, code_notes = _code_problems(recipe, root_map)
    causes += code_causes
    notes += code_notes
    return CheckResult(
        target=recipe.target,
        inputs=inputs,
        environments=tuple(env_checks),
        causes=tuple(causes),
        notes=tuple(notes),
    )
