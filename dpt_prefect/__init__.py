"""dpt_prefect adapter."""
