"""JSON answers and errors shared by the server's modules.

They live apart from :mod:`dpt_core.server.app` so the API module, which
:func:`~dpt_core.server.app.create_app` mounts, does not import the app back
(no import circle: tests/core/test_layering.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import Response


def json_bytes(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON, values JSON does not know as text (as the CLI does)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(json_bytes(data), status, headers, media_type="application/json")


class ApiError(HTTPException):  # type: ignore[misc, unused-ignore]
    """An error answered as ``{"error": message, **extra}`` with ``status``."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(status, message, headers)
        self.message = message
        self.extra = extra
