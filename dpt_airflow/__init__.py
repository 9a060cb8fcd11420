"""dpt_airflow adapter."""
