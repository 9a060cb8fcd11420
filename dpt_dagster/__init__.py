"""dpt_dagster adapter."""
