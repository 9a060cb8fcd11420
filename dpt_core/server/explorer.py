"""The web explorer's pages (issue 17): server-rendered HTML, one stable URL per view.

:func:`routes` is what :func:`dpt_core.server.app.create_app` mounts next to the JSON
API. The pages are being built; until then there are none.
"""

from __future__ import annotations

from typing import Any

from dpt_core.server.config import ServerConfig


def routes(config: ServerConfig) -> list[Any]:
    """The explorer's routes (Starlette ``Route``/``Mount`` objects)."""
    return []
