"""dpt for Dagster: a sensor that records asset materialisations, lineage and run outcomes.

One line in your definitions::

    import dpt_dagster
    defs = Definitions(assets=[...], sensors=[dpt_dagster.dpt_asset_sensor()])

Names are imported lazily: ``dpt_dagster.dpt_plugin`` is loaded by every dpt
process (the ``dpt`` entry point) and must not import Dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpt_dagster.sensor import SensorCursor, TickResult, dpt_asset_sensor, run_tick
    from dpt_dagster.translator import (
        DagsterTranslator,
        Materialization,
        Upstream,
        active_translator,
        materialization_invocation_uuid,
        register_translator,
        run_invocation_uuid,
        version_uuid,
    )

__all__ = [
    "DagsterTranslator",
    "Materialization",
    "SensorCursor",
    "TickResult",
    "Upstream",
    "active_translator",
    "dpt_asset_sensor",
    "materialization_invocation_uuid",
    "register_translator",
    "run_invocation_uuid",
    "run_tick",
    "version_uuid",
]

_SOURCES = {
    "dpt_asset_sensor": "dpt_dagster.sensor",
    "run_tick": "dpt_dagster.sensor",
    "SensorCursor": "dpt_dagster.sensor",
    "TickResult": "dpt_dagster.sensor",
    "DagsterTranslator": "dpt_dagster.translator",
    "Materialization": "dpt_dagster.translator",
    "Upstream": "dpt_dagster.translator",
    "active_translator": "dpt_dagster.translator",
    "register_translator": "dpt_dagster.translator",
    "materialization_invocation_uuid": "dpt_dagster.translator",
    "run_invocation_uuid": "dpt_dagster.translator",
    "version_uuid": "dpt_dagster.translator",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'dpt_dagster' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
