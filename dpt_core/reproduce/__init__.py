"""Recipes, checks and rebuilds: "can I make this again?" (``dpt reproduce``).

* :func:`recipe` — from the sources to a product version (or a run's outputs), in
  dependency order: what ran, where, with which code, Python, distributions,
  variables and input versions (:class:`Recipe`).
* :func:`check` — would a rebuild here give the recorded results? (inputs on disk,
  environments against this one, code, and the recipe's own problems).
* :func:`check_manifest` — the same from an exported ``manifest.json``, on a
  machine without the database.
* :func:`export` — the files to rebuild elsewhere (requirements, steps script, manifest).
* :func:`rebuild` — re-run a recipe of ``dpt run`` / Python API steps in a fresh
  directory and virtual environment, and compare every output with the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from dpt_core.config import Settings
from dpt_core.errors import DptError
from dpt_core.reproduce.model import (
    RECIPE_FORMAT,
    CheckResult,
    CodeVersion,
    EnvironmentCheck,
    EnvironmentSpec,
    InputCheck,
    Problem,
    ProductOutcome,
    ProductVersion,
    RebuildResult,
    RebuiltRun,
    Recipe,
    Rerun,
    RunRef,
    Step,
    Target,
)
from dpt_core.reproduce.rebuild import RebuildOptions

__all__ = [
    "RECIPE_FORMAT",
    "CheckResult",
    "CodeVersion",
    "EnvironmentCheck",
    "EnvironmentSpec",
    "InputCheck",
    "Problem",
    "ProductOutcome",
    "ProductVersion",
    "RebuildOptions",
    "RebuildResult",
    "RebuiltRun",
    "Recipe",
    "Rerun",
    "RunRef",
    "Step",
    "Target",
    "check",
    "check_manifest",
    "export",
    "rebuild",
    "recipe",
]


def recipe(
    target: Any,
    version: str | None = None,
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> Recipe:
    """The recipe of ``target``: a product (path or URI) or a run (id, UUID or UUID prefix).

    For a product, the version on disk (else the newest) unless ``version`` (a version
    UUID, UUID prefix or content hash) is given; for a run, what it and its child runs
    wrote.

    :raises NotFound: the target or version is not recorded.
    """
    from dpt_core.reproduce.build import build_recipe

    return build_recipe(target, version, engine=engine, settings=settings)


def _digests(
    engine: Engine | None, settings: Settings | None, ids: list[int]
) -> dict[int, dict[str, str]]:
    from dpt_core.store.analysis import _engine, _environment

    with _engine(engine, settings).connect() as conn:
        return {i: dict(_environment(conn, i)["_digests"]) for i in ids}


def check(
    target: Any,
    version: str | None = None,
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> CheckResult:
    """Would a rebuild of ``target`` here give the recorded results? (``dpt reproduce --check``)

    ``target`` may also be a :class:`Recipe`. ``result.ok`` is False when anything
    would make the rebuild differ or fail; ``result.causes`` names each.
    """
    from dpt_core.reproduce.check import check_recipe

    found = (
        target
        if isinstance(target, Recipe)
        else recipe(target, version, engine=engine, settings=settings)
    )
    digests = _digests(engine, settings, [e.id for e in found.environments])
    return check_recipe(found, settings=settings, digests=digests)


def load_manifest(path: str | os.PathLike[str]) -> tuple[Recipe, dict[str, Any]]:
    """The recipe inside an exported ``manifest.json`` (or ``recipe.json``), and the document.

    :raises DptError: the file is missing or is not a dpt manifest.
    """
    from dpt_core.reproduce.export import MANIFEST_FORMAT

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DptError(f"cannot read manifest {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DptError(
            f"manifest {path} is not JSON ({exc}): give the exported manifest.json"
        ) from None
    data: Any = None
    if isinstance(document, dict) and document.get("format") == MANIFEST_FORMAT:
        data = document.get("recipe")
    elif isinstance(document, dict) and document.get("format") == RECIPE_FORMAT:
        data = document
    else:
        raise DptError(
            f"{path} is not a dpt manifest (no format {MANIFEST_FORMAT!r}): give the "
            "manifest.json that 'dpt reproduce --export' wrote"
        )
    try:
        if not isinstance(data, dict):
            raise TypeError("recipe")
        return Recipe.from_dict(data), document
    except (KeyError, TypeError, ValueError) as exc:
        raise DptError(f"manifest {path} is incomplete ({exc!r} is missing or wrong)") from None


def check_manifest(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
) -> CheckResult:
    """``dpt reproduce --check --manifest FILE``: check an exported recipe here, without the
    database: its sources (under ``root``, where the recorded root is on this machine),
    its environments against this one, and the problems it recorded.
    """
    from dpt_core.reproduce.check import check_recipe

    found, _document = load_manifest(path)
    root_map = None
    if root is not None:
        if found.root is None:
            raise DptError(f"manifest {path} records no root directory: leave out --root")
        root_map = (found.root, os.path.abspath(root))
    return check_recipe(found, settings=settings, root_map=root_map)


def export(
    target: Any, directory: str | os.PathLike[str], version: str | None = None, **kw: Any
) -> list[Path]:
    """Write the files to rebuild ``target`` elsewhere into ``directory`` (see ``--export``)."""
    from dpt_core.reproduce.export import export_recipe

    found = target if isinstance(target, Recipe) else recipe(target, version, **kw)
    return export_recipe(found, directory)


def rebuild(
    target: Any,
    workdir: str | os.PathLike[str],
    options: RebuildOptions | None = None,
    *,
    version: str | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
) -> RebuildResult:
    """Rebuild ``target`` (or a :class:`Recipe`) in ``workdir`` and compare (``--run``)."""
    from dpt_core.reproduce.rebuild import rebuild_recipe

    found = (
        target
        if isinstance(target, Recipe)
        else recipe(target, version, engine=engine, settings=settings)
    )
    return rebuild_recipe(found, workdir, options, settings=settings, progress=progress)
