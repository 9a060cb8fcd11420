"""dpt hooks for Prefect (entry point ``dpt: prefect``): the running task run, and Assets as URIs.

dpt loads this module in every process, with or without Prefect. It never
imports Prefect: it only looks at Prefect when the process has already loaded
the dpt-prefect hooks (a flow or task decorated with them), which is the only
case where dpt records a Prefect run here, or Prefect's assets module (the only
case where a Prefect ``Asset`` can be passed in). So a process without Prefect
pays one dictionary lookup per call, and never a failed import.
"""

from __future__ import annotations

import sys
from typing import Any

from dpt_core.plugin_api import CurrentContext, hookimpl

_HOOKS_MODULE = "dpt_prefect.hooks"
#: Present in ``sys.modules`` whenever a Prefect Asset object can exist in this process.
_ASSETS_MODULE = "prefect.assets.core"


@hookimpl
def dpt_current_context() -> CurrentContext | None:
    """The Prefect task run (or flow run) running here, so ``dpt_core.track()`` joins its invocation."""
    hooks = sys.modules.get(_HOOKS_MODULE)
    if hooks is None:  # no flow or task with dpt hooks in this process: nothing is recorded
        return None
    context: CurrentContext | None = hooks.current_context()
    return context


@hookimpl
def dpt_resolve_uri(target: Any) -> str | None:
    """A Prefect ``Asset`` as a URI, through the translator of the run executing here."""
    assets = sys.modules.get(_ASSETS_MODULE)
    if assets is None or not isinstance(target, assets.Asset):
        return None
    from dpt_prefect import hooks

    return hooks.resolve_asset(target)
