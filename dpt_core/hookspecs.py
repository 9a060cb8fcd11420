"""Every dpt hook, in one place. Project name ``dpt``.

This module is the contract between the core, the built-in SQL store and every
plugin. Implement a hook by decorating a function or method of the same name
with :data:`dpt_core.hookimpl` and registering its module or object through the
``dpt`` entry-point group::

    [project.entry-points.dpt]
    my_plugin = "my_package.dpt_plugin"

Hooks are grouped by phase: environment, resolution, invocation lifecycle,
products, CLI. Hook arguments are only ever added, never removed; a plugin may
accept any subset of them.

The tracker calls each implementation under its own guard
(:func:`dpt_core.plugins.call_each`): an implementation that raises is logged
once with its plugin's name and the others, the built-in store included, are
still called; a resolver that raises counts as one that returned None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from dpt_core.events import (
        CurrentContext,
        InvocationFinished,
        InvocationStarted,
        ProductsRead,
        ProductsWritten,
    )

hookspec = pluggy.HookspecMarker("dpt")
hookimpl = pluggy.HookimplMarker("dpt")

# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


@hookspec
def dpt_collect_environment() -> dict[str, Any] | None:
    """Contribute facets to the environment record of this process.

    Called once per process, when the environment is first captured. Every
    plugin may contribute; the returned dicts are merged (later plugins win on
    a clash). Facets are part of the environment fingerprint, so return only
    values that identify the environment (a git commit, a conda env name, a
    CUDA version), never values that change per run.

    :returns: a JSON-able ``{facet_name: value}`` dict, or None to contribute nothing.
    """


@hookspec(firstresult=True)
def dpt_redact(key: str, value: str) -> str | None:
    """Decide that an environment variable's value is secret.

    Called for every variable before the built-in name and value-shape rules.
    Stops at the first non-None result.

    :param key: the variable's name.
    :param value: its value, in clear (never stored unless no rule redacts it).
    :returns: a replacement text to store instead (the value is then treated as
        redacted: only a keyed digest of the original is kept), or None to let
        the built-in rules decide.
    """


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def dpt_resolve_uri(target: Any) -> str | None:
    """Turn an object handed to ``read``/``write``/``track`` into a URI.

    Adapters teach dpt their asset types here (an Airflow ``Asset``, a Dagster
    ``AssetKey``). Strings and paths are handled by the core when every plugin
    returns None. Stops at the first non-None result.

    :param target: whatever the user passed.
    :returns: a URI such as ``s3://bucket/key`` (the core normalises it), or None.
    """


@hookspec(firstresult=True)
def dpt_hash(uri: str, path: str | None) -> str | None:
    """Compute the content hash of a product.

    Called for every product read or written. Stops at the first non-None
    result; the core hashes local files itself (with the stat cache) when every
    plugin returns None. Implement it for remote stores (return an object's
    ETag or checksum as ``"etag:<value>"``).

    :param uri: the normalised URI.
    :param path: the local path for ``file://`` URIs, else None.
    :returns: ``"<algorithm>:<hex>"`` or None.
    """


@hookspec(firstresult=True)
def dpt_current_context() -> CurrentContext | None:
    """Say which invocation is running now in this thread, if an orchestrator knows.

    ``dpt_core.track()`` and ``dpt_core.invocation()`` call it when no dpt
    invocation is open in the current context, so that calls made inside an
    Airflow task or a Prefect task attach to that task's invocation. Stops at
    the first non-None result.

    :returns: a :class:`dpt_core.plugin_api.CurrentContext` naming the invocation (by UUID),
        or None when this plugin's orchestrator is not running anything here.
    """


# ---------------------------------------------------------------------------------------------
# Invocation lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def dpt_invocation_started(event: InvocationStarted) -> None:
    """An invocation started (or was first seen). Broadcast to every plugin.

    The built-in store records it; an OpenLineage emitter sends a START event.
    The event may arrive again (spool replay, re-read orchestrator logs):
    implementations must be idempotent on ``event.uuid``.

    :param event: the invocation, its parameters and its environment snapshot.
    """


@hookspec
def dpt_invocation_finished(event: InvocationFinished) -> None:
    """An invocation reached a final status. Broadcast to every plugin.

    :param event: the invocation's UUID, final status, end time and error text.
    """


@hookspec
def dpt_batch_started() -> None:
    """A batch of events begins (``with tracker.batch():``). Broadcast to every plugin.

    Events that follow, until :func:`dpt_batch_finished`, may be buffered and
    handled together: the built-in store records the whole batch in one
    transaction. Batches do not nest: only the outermost one is announced.
    """


@hookspec
def dpt_batch_finished() -> None:
    """The batch announced by :func:`dpt_batch_started` ends; flush what was buffered.

    Called also when the block raised, so that the events of work that did
    happen are still recorded.
    """


# ---------------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------------


@hookspec
def dpt_products_read(event: ProductsRead) -> None:
    """An invocation read products. Broadcast to every plugin; one call per batch.

    :param event: the invocation's UUID and one observation per input (URI,
        content hash, size, mtime).
    """


@hookspec
def dpt_products_written(event: ProductsWritten) -> None:
    """An invocation wrote products. Broadcast to every plugin; one call per batch.

    :param event: the invocation's UUID and one observation per output, each
        with its explicit parents (or None: it derives from every input).
    """


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


@hookspec
def dpt_register_commands(cli: click.Group) -> None:
    """Add commands to the ``dpt`` command line. Called last, after the built-in ones.

    :param cli: the top-level click group; call ``cli.command()`` / ``cli.add_command()``.
    """
