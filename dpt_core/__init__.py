"""dpt: record where every data product came from.

The public API (everything else is internal; reference: docs/api.md)::

    import dpt_core
    with dpt_core.invocation("calibrate", parameters={"gain": 1.5}) as inv:
        inv.read("raw.fits")
        inv.write("cal.fits", parents=["raw.fits"])
    async with dpt_core.invocation("calibrate") as inv:  # in a coroutine
        await inv.write("cal.fits")

    @dpt_core.tracked(inputs="raw", outputs="out")      # each call is one run
    def calibrate(raw: str, out: str) -> None: ...

    dpt_core.read("flat.fits")                         # inputs of the current run
    dpt_core.track("lc.fits", parents=["cal.fits"])    # outputs of the current run
    dpt_core.lineage("lc.fits", direction="upstream")
    dpt_core.runs(status="failed"); dpt_core.show("cal.fits"); dpt_core.stale()
    dpt_core.impact("raw.fits"); dpt_core.env_diff(41, 42)
    dpt_core.register_secret(token)  # masked wherever dpt stores free text

Plugins import their plumbing from :mod:`dpt_core.plugin_api`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal, overload

from dpt_core import plugin_api
from dpt_core.api import tracked
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
from dpt_core.hookspecs import hookimpl
from dpt_core.tags import InvalidTag, Tags
from dpt_core.tracker import (
    AsyncInvocationHandle,
    InvocationBlock,
    InvocationHandle,
    Tracker,
    WrittenURIs,
    get_tracker,
    invocation_uuid,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator, Mapping, Sequence

    # Deprecated names (see __getattr__), still visible to type checkers for one release.
    from dpt_core.plugin_api import CurrentContext as CurrentContext
    from dpt_core.plugin_api import Guard as Guard
    from dpt_core.plugin_api import jsonable as jsonable
    from dpt_core.plugin_api import reset as reset
    from dpt_core.plugin_api import strict_mode as strict_mode

    # The read API, imported on first use (see __getattr__): a process that only records
    # does not pay for it.
    from dpt_core.query import (
        EnvironmentChange,
        EnvironmentDiff,
        EnvironmentSummary,
        ImpactedProduct,
        MappingDiff,
        ParentVersion,
        Product,
        ProductVersion,
        Run,
        RunEnvironment,
        StaleProduct,
        StaleReason,
        Tagged,
        env_diff,
        impact,
        runs,
        show,
        stale,
        tag,
    )
    from dpt_core.reproduce import Recipe
    from dpt_core.store.lineage import LineageGraph

__version__ = "0.1.0"

__all__ = [
    "AsyncInvocationHandle",
    "ConfigError",
    "DatabaseUnavailable",
    "DptError",
    "EnvironmentChange",
    "EnvironmentDiff",
    "EnvironmentSummary",
    "HashError",
    "ImpactedProduct",
    "InvalidTag",
    "InvalidTarget",
    "InvocationBlock",
    "InvocationHandle",
    "LineageGraph",
    "MappingDiff",
    "MigrationRequired",
    "NotFound",
    "ParentVersion",
    "Product",
    "ProductRef",
    "ProductVersion",
    "Run",
    "RunEnvironment",
    "StaleProduct",
    "StaleReason",
    "Tagged",
    "Tags",
    "Tracker",
    "TrackingError",
    "WrittenURIs",
    "env_diff",
    "flush",
    "get_tracker",
    "hash_file",
    "hookimpl",
    "impact",
    "invocation",
    "invocation_uuid",
    "lineage",
    "plugin_api",
    "read",
    "recipe",
    "register_secret",
    "runs",
    "show",
    "stale",
    "tag",
    "track",
    "tracked",
]

#: Names of :mod:`dpt_core.query`, imported when first used.
_QUERY_NAMES = frozenset(
    {
        "EnvironmentChange",
        "EnvironmentDiff",
        "EnvironmentSummary",
        "ImpactedProduct",
        "MappingDiff",
        "ParentVersion",
        "Product",
        "ProductVersion",
        "Run",
        "RunEnvironment",
        "StaleProduct",
        "StaleReason",
        "Tagged",
        "env_diff",
        "impact",
        "runs",
        "show",
        "stale",
        "tag",
    }
)

#: Plugin plumbing that lived here until 0.1: now in :mod:`dpt_core.plugin_api`.
_MOVED_TO_PLUGIN_API = frozenset({"CurrentContext", "Guard", "jsonable", "reset", "strict_mode"})

if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name stays an error there

    def __getattr__(name: str) -> Any:
        if name in _QUERY_NAMES:
            from dpt_core import query

            value = getattr(query, name)
            globals()[name] = value
            return value
        if name in _MOVED_TO_PLUGIN_API:
            warnings.warn(
                f"dpt_core.{name} moved to dpt_core.plugin_api.{name} (plugin plumbing); "
                "the old name goes away in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(plugin_api, name)
        if name == "LineageGraph":
            from dpt_core.store.lineage import LineageGraph

            return LineageGraph
        raise AttributeError(f"module 'dpt_core' has no attribute {name!r}")


def invocation(
    job: str | None = None,
    *,
    task: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    orchestrator: str = "python",
    command: str | Sequence[str] | None = None,
    code_version: str | None = None,
    uuid: str | None = None,
    parent: InvocationHandle | str | Literal[False] | None = None,
    external_id: str | None = None,
    started_at: dt.datetime | None = None,
    environment: bool = True,
    variables: Mapping[str, str | None] | None = None,
    tags: Tags | None = None,
) -> InvocationBlock:
    """One invocation for a ``with`` or ``async with`` block, on the process tracker.

    ::

        with dpt_core.invocation("calibrate", parameters={"gain": 1.5}) as inv:
            inv.read("raw.fits")
            inv.write("cal.fits")

        async with dpt_core.invocation("calibrate") as inv:  # in a coroutine
            await inv.write("cal.fits")  # hashing and database work off the event loop

    The run is recorded when the block is entered (a crash leaves it visible as
    ``running``) and ends as ``success``, or ``failed`` with the error when the block
    raises (``cancelled`` on Ctrl-C or asyncio cancellation). ``with`` gives an
    :class:`InvocationHandle`, ``async with`` an :class:`AsyncInvocationHandle`. Inside
    the block the run is the current one: :func:`track`, :func:`read`, nested blocks
    and tracked functions attach to it, also from the tasks and threads the block
    starts with its context (asyncio does). To record every call of a function,
    decorate it with :func:`tracked`: this is not a decorator.

    :param job: what ran (a script, a pipeline step). None inside an orchestrator task
        or another block: the block joins the run there instead of opening a new one;
        None elsewhere: the script's name.
    :param task: the step within ``job``, if any.
    :param parameters: JSON-able settings of this run (a non-JSON value is kept as its
        ``repr``; secrets are redacted).
    :param orchestrator: what ran it (``python`` for a script).
    :param command: the command line that ran it. Default for ``python``: how this
        script was started, which ``dpt reproduce`` runs again.
    :param code_version: a git commit, a release, ...
    :param uuid: a stable id (see :func:`invocation_uuid`) makes the record idempotent.
    :param parent: the enclosing run (a handle or a UUID); None: the current one, if
        any; False: no parent, even inside another block.
    :param external_id: the orchestrator's own id for this run.
    :param started_at: when it started (default: now).
    :param environment: False for a run recorded on behalf of another process (the
        environment here would be the wrong one).
    :param variables: per-run variables, replacing the process's of the same names.
    :param tags: ``{key: value}`` labels of the run (``{"survey": "tess", "sector": 42}``),
        kept as text and queryable with ``runs(tags=...)`` (see docs/tags.md). Not used
        when the block joins the current run.
    :raises InvalidTag: a tag key or value cannot be recorded.
    """
    return get_tracker().invocation(
        job,
        task=task,
        parameters=parameters,
        orchestrator=orchestrator,
        command=command,
        code_version=code_version,
        uuid=uuid,
        parent=parent,
        external_id=external_id,
        started_at=started_at,
        environment=environment,
        variables=variables,
        tags=tags,
    )


@overload
def track(
    targets: Iterator[Any],
    /,
    *,
    parents: Sequence[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Tags | None = None,
) -> WrittenURIs: ...


@overload
def track(
    *targets: Any,
    parents: Sequence[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Tags | None = None,
) -> list[str]: ...


def track(
    *targets: Any,
    parents: Sequence[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Tags | None = None,
) -> list[str] | WrittenURIs:
    """Record ``targets`` as outputs of the current invocation (or of a new one-off one);
    returns their URIs: a list, or, for one generator (or other iterator) of targets, a
    compact :class:`WrittenURIs` (recorded a chunk at a time, see
    :meth:`InvocationHandle.write`).

    :param parents: what every target was made from (default: every input of the
        invocation).
    :param metadata: JSON-able facts kept on each new version.
    :param tags: ``{key: value}`` labels of each version written (see docs/tags.md).
    :raises InvalidTag: a tag key or value cannot be recorded.
    """
    uris: list[str] | WrittenURIs = get_tracker().track(
        *targets, parents=parents, metadata=metadata, tags=tags
    )
    return uris


def read(*targets: Any, metadata: dict[str, Any] | None = None) -> list[str]:
    """Record ``targets`` as inputs of the current invocation (or of a new one-off one);
    returns their URIs. The twin of :func:`track`."""
    return get_tracker().read(*targets, metadata=metadata)


def flush(timeout: float | None = None) -> bool:
    """Wait until every event this process recorded is written to the database, or kept in
    the spool when the database is away; True when none waits.

    Events are written by a background writer (``DPT_WRITE=background``, the default) after
    being made durable in the spool; reads through dpt and the end of the process flush it
    on their own. Call it where a process must not go on before its records are in the
    database: an orchestrator's end-of-task hook, a test reading the database with its own
    engine, a fork that ends with ``os._exit``.

    :param timeout: seconds to wait at most (default: ``DPT_FLUSH_TIMEOUT``, 10 s).
    """
    from dpt_core.store.plugin import flush as _flush

    return _flush(timeout)


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
    direction: Literal["upstream", "downstream"] = "upstream",
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
        target,
        direction=direction,
        depth=depth,
        version=version,
        all_versions=all_versions,
        resolve=get_tracker().resolve,
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
