"""The built-in ``dpt.environment`` plugin: facets every environment gets."""

from __future__ import annotations

import os
from typing import Any

from dpt_core.environment import git_facet
from dpt_core.events import CurrentContext
from dpt_core.hookspecs import hookimpl


@hookimpl
def dpt_collect_environment() -> dict[str, Any] | None:
    git = git_facet()
    return {"git": git} if git else None


#: Set by ``dpt run`` for the command it runs, so tracking inside it joins the run.
RUN_ENV_VAR = "DPT_RUN_INVOCATION"


@hookimpl(trylast=True)
def dpt_current_context() -> CurrentContext | None:
    run = os.environ.get(RUN_ENV_VAR)
    return CurrentContext(invocation_uuid=run, job="dpt run") if run else None
