"""Options shared by the Alembic environment and ``dpt db check``."""

from __future__ import annotations

from typing import Any


def _compare_type(
    context: Any, inspected: Any, metadata: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    # Our TypeDecorators render per dialect; let Alembic compare their implementations.
    return None


COMPARE_OPTIONS: dict[str, Any] = {"compare_type": True, "render_as_batch": True}
