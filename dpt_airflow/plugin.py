"""The Airflow plugin, found through the ``airflow.plugins`` entry point.

Installing ``data-product-tracker[airflow]`` is the whole set-up: Airflow loads
:class:`DptAirflowPlugin` in every component, and its listener records task
tries and dag runs. ``DPT_DISABLED=1`` or ``[dpt] enabled = False`` in
``airflow.cfg`` (``AIRFLOW__DPT__ENABLED=False``) switches recording off.
"""

from __future__ import annotations

from dpt_airflow.compat import AirflowPlugin
from dpt_airflow.listener import dpt_listener


class DptAirflowPlugin(AirflowPlugin):
    """Registers the dpt listener (``airflow plugins`` lists it as ``dpt``)."""

    name = "dpt"
    listeners = [dpt_listener]
