"""The plugin manager: built-in plugins by name, third-party ones from entry points.

Built-in plugins are registered exactly like third-party ones, under names a user
can block (``pm.set_blocked("dpt.store")``) or narrow with ``DPT_LOAD_PLUGINS``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

from dpt_core import hookspecs
from dpt_core.config import read_keyed_cache, write_keyed_cache
from dpt_core.log import log

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
        for name, value, origin in _entry_points():
            if load is not None and name not in load:
                continue
            if pm.get_plugin(name) is not None or pm.is_blocked(name):
                continue
            try:
                plugin = _load(value)
            except Exception as exc:  # a broken third-party plugin must not stop tracking
                log.warning("dpt: plugin %r (%s) failed to load: %s", name, value, exc)
                continue
            pm.register(plugin, name=name)
            if origin is not None:
                _origins[name] = origin
        pm.check_pending()
        _loaded = True
        return pm


def _entry_points() -> list[tuple[str, str, str | None]]:
    """``(name, value, "distribution version")`` of each ``dpt`` entry point.

    Reading every installed distribution's metadata costs tens of milliseconds, paid by
    every process that records: the answer is cached in ``DPT_CACHE_DIR``, keyed by the
    import path and, in each of its directories, the distributions there and the times
    their entry points were written (installing, removing or upgrading a package
    changes the key).
    """
    key = _installed_key()
    cache = _cache_file()
    if cache is not None:
        cached = read_keyed_cache(cache, key)
        try:
            if cached is not None:
                return [(str(n), str(v), o if o is None else str(o)) for n, v, o in cached]
        except (ValueError, TypeError):  # not the shape written below
            pass
    from importlib.metadata import entry_points  # only when the cache cannot answer

    found = [
        (
            ep.name,
            ep.value,
            None if ep.dist is None else f"{ep.dist.metadata['Name']} {ep.dist.version}",
        )
        for ep in entry_points(group=ENTRY_POINT_GROUP)
    ]
    if cache is not None:
        write_keyed_cache(cache, key, found)
    return found


def _load(value: str) -> Any:
    """The object an entry point names (``module`` or ``module:attribute.path``)."""
    module, _, attribute = value.partition(":")
    found: Any = importlib.import_module(module.strip())
    for part in filter(None, attribute.strip().split(".")):
        found = getattr(found, part)
    return found


def _installed_key() -> str:
    """A digest of what decides the entry points: each import path entry, its distributions
    (``*.dist-info``, ``*.egg-info``) and their ``entry_points.txt`` modification times."""
    parts: list[str] = [sys.version]
    for entry in sys.path:
        parts.append(f"path:{entry}")
        try:
            with os.scandir(entry or ".") as found:
                names = sorted(
                    e.name for e in found if e.name.endswith((".dist-info", ".egg-info"))
                )
        except OSError:
            continue
        for name in names:
            try:
                stamp = os.stat(os.path.join(entry or ".", name, "entry_points.txt")).st_mtime_ns
            except OSError:
                stamp = 0
            parts.append(f"{name}:{stamp}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _cache_file() -> Path | None:
    from dpt_core.config import settings_for_recording

    try:
        return settings_for_recording().cache_dir / "entry-points.json"
    except Exception:  # no usable settings: no cache
        return None


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
