"""The plugin manager: built-in plugins by name, third-party ones from entry points.

Built-in plugins are registered exactly like third-party ones, under names a user
can block (``pm.set_blocked("dpt.store")``) or narrow with ``DPT_LOAD_PLUGINS``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from dpt_core import hookspecs

log = logging.getLogger("dpt")

ENTRY_POINT_GROUP = "dpt"
BUILTIN_PLUGINS = {
    "dpt.environment": "dpt_core.collectors",
    "dpt.store": "dpt_core.store.plugin",
}

pm = pluggy.PluginManager("dpt")
pm.add_hookspecs(hookspecs)

_loaded = False
_lock = threading.Lock()
#: plugin name -> "distribution version" for plugins loaded from entry points.
_origins: dict[str, str] = {}


def load_plugins(
    load: tuple[str, ...] | None = None, *, force: bool = False
) -> pluggy.PluginManager:
    """Register the built-in plugins and those of the ``dpt`` entry-point group. Idempotent.

    :param load: names to load from entry points (``DPT_LOAD_PLUGINS``); None loads all.
    """
    global _loaded
    with _lock:
        if _loaded and not force:
            return pm
        for name, module in BUILTIN_PLUGINS.items():
            if pm.get_plugin(name) is None and not pm.is_blocked(name):
                pm.register(importlib.import_module(module), name=name)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if load is not None and ep.name not in load:
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop tracking
                log.warning("dpt: plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            pm.register(plugin, name=ep.name)
            if ep.dist is not None:
                _origins[ep.name] = f"{ep.dist.metadata['Name']} {ep.dist.version}"
        pm.check_pending()
        _loaded = True
        return pm


def call_each(
    caller: Any,
    kwargs: dict[str, Any],
    on_error: Callable[[str, BaseException], None],
    *,
    firstresult: bool = False,
) -> list[Any]:
    """Call every implementation of a hook one by one, each under its own guard.

    pluggy's own call stops at the first implementation that raises, so one broken
    third-party plugin would cost every plugin after it, the built-in store included.
    Here an implementation that raises is handed to ``on_error(plugin_name, exc)``
    and the others are still called, in pluggy's order (last registered first,
    ``tryfirst``/``trylast`` honoured). Hooks with wrappers are called the pluggy way.

    :param caller: ``pm.hook.<name>``.
    :param firstresult: stop at the first non-None result (resolvers).
    :returns: the non-None results, in call order.
    """
    impls = caller.get_hookimpls()
    if any(impl.hookwrapper or impl.wrapper for impl in impls):
        result = caller(**kwargs)
        if firstresult:
            return [] if result is None else [result]
        return [r for r in result if r is not None]
    results: list[Any] = []
    for impl in reversed(impls):
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception as exc:
            on_error(impl.plugin_name, exc)
            continue
        if result is not None:
            results.append(result)
            if firstresult:
                break
    return results


def plugin_listing() -> list[dict[str, Any]]:
    """What ``dpt plugins`` shows: each plugin's name, origin and the hooks it implements."""
    listing = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        listing.append(
            {
                "name": name,
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "builtin": name in BUILTIN_PLUGINS,
                "distribution": _origins.get(name),
                "hooks": hooks,
            }
        )
    return listing
