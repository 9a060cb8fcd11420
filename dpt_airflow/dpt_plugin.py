"""dpt hooks for Airflow (entry point ``dpt: airflow``): the running task, and Assets as URIs.

dpt loads this module in every process, with or without Airflow. It never
imports Airflow: it only looks at Airflow when the process has already loaded
it (a task runner, a scheduler, a script that built a DAG), which is the only
case where an Airflow task can be running or an Airflow Asset can be passed in.
So a process without Airflow pays one dictionary lookup per call, and never a
failed import.
"""

from __future__ import annotations

import sys
from typing import Any

from dpt_core.plugin_api import CurrentContext, hookimpl

_LISTENER_MODULE = "dpt_airflow.listener"
#: Present in ``sys.modules`` whenever an Airflow Asset object can exist in this process.
_ASSET_MODULE = "airflow.sdk.definitions.asset"


@hookimpl
def dpt_current_context() -> CurrentContext | None:
    """The Airflow task try running on this thread, so ``dpt_core.track()`` joins its invocation."""
    listener = sys.modules.get(_LISTENER_MODULE)
    if listener is None:  # the Airflow plugin never loaded here: no task is tracked
        return None
    context: CurrentContext | None = listener.dpt_listener.current_context()
    return context


@hookimpl
def dpt_resolve_uri(target: Any) -> str | None:
    """An Airflow ``Asset`` (or asset key) as a URI, through the active translator."""
    if _ASSET_MODULE not in sys.modules:
        return None
    from dpt_airflow import compat

    base_asset, _ = compat.asset_types()
    asset_key = getattr(sys.modules[_ASSET_MODULE], "AssetUniqueKey", None)
    if not isinstance(target, base_asset) and not (
        asset_key is not None and isinstance(target, asset_key)
    ):
        return None
    # The listener's translator, even where Airflow never loaded the plugin (a script
    # building Assets): one active translator names an Asset the same way everywhere.
    from dpt_airflow.listener import active_translator

    uri: str | None = active_translator().get_asset_uri(target)
    return uri
