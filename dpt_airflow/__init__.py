"""dpt for Airflow: ``pip install data-product-tracker[airflow]`` and every task try is recorded.

The package is imported by every dpt process (its ``dpt`` entry point), so it
imports nothing from Airflow until one of these names is used:

- :class:`AirflowTranslator` (``dpt_airflow.translator``): subclass it to change what is recorded;
- :class:`DptAirflowPlugin` (``dpt_airflow.plugin``): the plugin Airflow loads by entry point;
- :data:`dpt_listener` (``dpt_airflow.listener``): the listener object the plugin registers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpt_airflow.listener import DptListener, dpt_listener
    from dpt_airflow.plugin import DptAirflowPlugin
    from dpt_airflow.translator import AirflowTranslator

__all__ = ["AirflowTranslator", "DptAirflowPlugin", "DptListener", "dpt_listener"]

_LAZY = {
    "AirflowTranslator": "dpt_airflow.translator",
    "DptAirflowPlugin": "dpt_airflow.plugin",
    "DptListener": "dpt_airflow.listener",
    "dpt_listener": "dpt_airflow.listener",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dpt_airflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
