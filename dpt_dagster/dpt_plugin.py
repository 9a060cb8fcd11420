"""dpt hooks for Dagster (entry point ``dpt``: ``dagster = "dpt_dagster.dpt_plugin"``).

- ``dpt_resolve_uri``: an ``AssetKey`` (or a one-asset ``AssetSpec`` /
  ``AssetsDefinition``) handed to ``read``/``write``/``track`` becomes
  ``dagster://asset/<key path>``; inside a running asset, the key of an upstream asset
  is the product the sensor records for it (its ``dpt/path`` file, or its partition's
  URI where one partition is read), and the asset's own key is its partition's URI.
- ``dpt_current_context``: inside a running asset that materialises one asset
  (and at most one partition), ``dpt_core.track()`` and ``dpt_core.invocation()``
  attach to that materialisation's invocation, the one the sensor completes.

Both use the process's active translator (the one given to the dpt sensor), so an
asset is one product whether the sensor or the asset's own code names it.

This module is loaded by every dpt process. It never imports Dagster: when
``dagster`` is not already imported, no Dagster object or run can be here, so
both hooks answer None at the cost of a dict lookup.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

from dpt_core.frozen import Frozen, set_field
from dpt_core.plugin_api import CurrentContext, hookimpl

if TYPE_CHECKING:
    from dpt_core.adapter import HostGuard, RunRegistry


class _Running(Frozen):
    """A materialisation whose own code called dpt: its invocation and what it names.

    ``upstream_targets``: the product each upstream asset key stands for in this
    materialisation (its file when it reported ``dpt/path``), where the key names one
    product.
    """

    __slots__ = ("context", "asset_key", "partition", "upstream_targets")
    context: CurrentContext
    asset_key: Any
    partition: str | None
    upstream_targets: dict[Any, str]

    def __init__(
        self,
        context: CurrentContext,
        asset_key: Any,
        partition: str | None,
        upstream_targets: dict[Any, str] | None = None,
    ) -> None:
        set_field(self, "context", context)
        set_field(self, "asset_key", asset_key)
        set_field(self, "partition", partition)
        set_field(self, "upstream_targets", {} if upstream_targets is None else upstream_targets)


@functools.cache
def _running() -> RunRegistry[str, _Running]:
    """Materialisations running in this process that called dpt, by invocation uuid.

    Made on first use (with Dagster here): every dpt process loads this module, and one
    that records outside Dagster does not import the adapter kit (see docs/performance.md).
    """
    from dpt_core.adapter import RunRegistry

    return RunRegistry(4096)


@functools.cache
def _failures() -> HostGuard:
    from dpt_core.adapter import host_guard

    return host_guard("the asset's invocation opens without its inputs; the sensor adds them")


def _dagster() -> Any | None:
    return sys.modules.get("dagster")


@hookimpl
def dpt_resolve_uri(target: Any) -> str | None:
    dg = _dagster()
    if dg is None:
        return None
    key = None
    if isinstance(target, dg.AssetKey):
        key = target
    elif isinstance(target, dg.AssetSpec):
        key = target.key
    elif isinstance(target, dg.AssetsDefinition) and len(target.keys) == 1:
        key = next(iter(target.keys))
    if key is None:
        return None
    from dpt_dagster.translator import active_translator

    running = _current()
    if running is not None:
        if key == running.asset_key:
            return active_translator().get_asset_uri(key, running.partition)
        if key in running.upstream_targets:
            return running.upstream_targets[key]
    return active_translator().get_asset_uri(key, None)


@hookimpl
def dpt_current_context() -> CurrentContext | None:
    running = _current()
    return running.context if running is not None else None


def _current() -> _Running | None:
    """The materialisation running on this thread, its invocation opened on first use."""
    if _dagster() is None:
        return None
    from dpt_dagster import compat

    ctx = compat.current_op_context()
    if ctx is None:
        return None
    target = compat.context_asset_partition(ctx)
    if target is None:
        return None
    asset_key, partition = target
    run_id = ctx.run_id
    from dpt_dagster.translator import materialization_invocation_uuid

    uuid = materialization_invocation_uuid(run_id, asset_key, partition)
    cached = _running().get(uuid)
    if cached is not None:
        return cached
    return _running().add(uuid, _start(ctx, run_id, asset_key, partition))


def _start(ctx: Any, run_id: str, asset_key: Any, partition: str | None) -> _Running:
    import dpt_core
    from dpt_dagster.translator import active_translator

    run_record = None
    try:
        run_record = ctx.instance.get_run_record_by_id(run_id)
    except Exception:
        run_record = None
    code_version = None
    try:
        code_version = ctx.assets_def.code_versions_by_key.get(asset_key)
    except Exception:
        code_version = None
    tracker = dpt_core.get_tracker()
    translator = active_translator()
    upstream = _upstream(tracker, ctx, run_id, asset_key, partition)
    context = translator.start_in_process(
        tracker, run_record, run_id, asset_key, partition, code_version, upstream=upstream
    )
    by_key: dict[Any, list[Any]] = {}
    for u in upstream:
        by_key.setdefault(u.asset_key, []).append(u)
    targets = {
        key: translator.upstream_ref(ups[0], tracker).target
        for key, ups in by_key.items()
        if len(ups) == 1
    }
    return _Running(context, asset_key, partition, targets)


def _upstream(tracker: Any, ctx: Any, run_id: str, asset_key: Any, partition: str | None) -> Any:
    """What the running asset reads, resolved as the sensor will (the same versions).

    Recorded when the invocation opens, so a parent the asset's code names
    (``track(..., parents=[AssetKey("raw")])``) is the upstream version the sensor links,
    not a second, "observed" version of the same asset.
    """
    import time

    from dpt_dagster import compat
    from dpt_dagster.sensor import resolve_upstream
    from dpt_dagster.translator import Materialization

    try:
        graph = compat.context_asset_graph(ctx)
        being_made = Materialization(
            asset_key=asset_key,
            partition=partition,
            run_id=run_id,
            storage_id=compat.NOT_YET_STORED,
            timestamp=time.time(),
        )
        return resolve_upstream(ctx.instance, [being_made], graph)[being_made.storage_id]
    except Exception as exc:
        _failures().failed(
            f"resolving the inputs of {asset_key.to_user_string()}",
            exc,
            strict=tracker.settings.strict,
            key="upstream",
        )
        return ()
