"""dpt: record where every data product came from.

The public API (everything else is internal)::

    import dpt_core
    with dpt_core.invocation("calibrate", parameters={"gain": 1.5}) as inv:
        inv.read("raw.fits")
        inv.write("cal.fits", parents=["raw.fits"])
    dpt_core.track("lc.fits", parents=["cal.fits"])
    dpt_core.lineage("lc.fits", direction="upstream")
    dpt_core.register_secret(token)  # masked wherever dpt stores free text
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dpt_core.errors import (
    ConfigError,
    DatabaseUnavailable,
    DptError,
    HashError,
    InvalidTarget,
    MigrationRequired,
    NotFound,
    TrackingError,
)
from dpt_core.events import ProductRef
from dpt_core.guard import Guard, strict_mode
from dpt_core.hookspecs import hookimpl
from dpt_core.tracker import (
    CurrentContext,
    InvocationHandle,
    Tracker,
    get_tracker,
    invocation_uuid,
    jsonable,
    reset,
)

if TYPE_CHECKING:
    from dpt_core.reproduce import Recipe
    from dpt_core.store.lineage import LineageGraph

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CurrentContext",
    "DatabaseUnavailable",
    "DptError",
    "Guard",
    "HashError",
    "InvalidTarget",
    "InvocationHandle",
    "MigrationRequired",
    "NotFound",
    "ProductRef",
    "Tracker",
    "TrackingError",
    "get_tracker",
    "hash_file",
    "hookimpl",
    "invocation",
    "invocation_uuid",
    "jsonable",
    "lineage",
    "recipe",
    "register_secret",
    "reset",
    "strict_mode",
    "track",
]


def invocation(job: str | None = None, **kwargs: Any) -> Any:
    """Context manager for one invocation on the process tracker (see :meth:`Tracker.invocation`)."""
    return get_tracker().invocation(job, **kwargs)


def track(*targets: Any, parents: Any = None, metadata: dict[str, Any] | None = None) -> list[str]:
    """Record ``targets`` as outputs of the current invocation (or of a new one-off one)."""
    return get_tracker().track(*targets, parents=parents, metadata=metadata)


def register_secret(value: str) -> None:
    """Mask ``value`` wherever dpt stores free text from now on (commands, errors, parameters):
    for secrets the environment does not show (a token fetched at run time)."""
    from dpt_core.environment import register_secret as _register_secret

    _register_secret(value)


def hash_file(path: Any, algorithm: str | None = None) -> str:
    """Content hash of a file or directory tree, ``"<algorithm>:<hex>"``."""
    from dpt_core.hashing import hash_file as _hash_file

    return _hash_file(path, algorithm)


def lineage(
    target: Any,
    direction: str = "upstream",
    depth: int | None = None,
    *,
    version: str | None = None,
    all_versions: bool = False,
) -> LineageGraph:
    """The lineage graph of ``target``: ``.nodes`` (``.uri``, ``.depth``, ...) and ``.edges``.

    It starts from the version of ``target`` that is on disk (else its newest version);
    ``.selection`` says which.

    :param direction: ``upstream`` (what it was made from) or ``downstream`` (what was made from it).
    :param depth: at most this many steps (None: all).
    :param version: start from this version instead (UUID, UUID prefix, or a content hash:
        every version with that content).
    :param all_versions: start from every recorded version of ``target``.
    """
    from dpt_core.store.lineage import lineage as _lineage

    return _lineage(
        target, direction=direction, depth=depth, version=version, all_versions=all_versions
    )


def recipe(target: Any, version: str | None = None) -> Recipe:
    """The recipe that rebuilds ``target`` (a product path or URI, or a run id / UUID).

    From the sources to the target's version (the one on disk, else the newest, or
    ``version``), in dependency order: each step's command or task, working
    directory, code version, Python, pinned distributions, kept variables and input
    versions, and the problems that would stop a rebuild. :mod:`dpt_core.reproduce`
    checks (``check``), exports (``export``) and rebuilds (``rebuild``) it.
    """
    from dpt_core.reproduce import recipe as _recipe

    return _recipe(target, version)
