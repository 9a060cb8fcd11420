"""Translator subclasses the Airflow adapter tests name in ``[dpt] translator``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpt_airflow import AirflowTranslator


class BrokenOutputsTranslator(AirflowTranslator):
    """A translator with a bug: listing the outputs raises."""

    def get_outputs(self, task_instance: Any, context: Mapping[str, Any]) -> list[Any]:
        raise RuntimeError("translator bug in get_outputs")


class IndexedTaskTranslator(AirflowTranslator):
    """One task name per mapped index, and a deployment tag in the parameters."""

    def get_task(self, task_instance: Any) -> str:
        ti = task_instance
        return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"

    def get_parameters(self, task_instance: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        parameters = super().get_parameters(task_instance, context)
        parameters["deployment"] = "test"
        return parameters


class BrokenEverywhereTranslator(AirflowTranslator):
    """Every descriptive method raises; the identity methods work."""

    def get_parameters(self, task_instance: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("translator bug in get_parameters")

    def get_command(self, task_instance: Any, context: Mapping[str, Any]) -> str | None:
        raise RuntimeError("translator bug in get_command")

    def get_code_version(self, task_instance: Any, context: Mapping[str, Any]) -> str | None:
        raise RuntimeError("translator bug in get_code_version")

    def get_error(self, error: BaseException | str | None) -> str | None:
        raise RuntimeError("translator bug in get_error")

    def get_dag_run_parameters(self, dag_run: Any) -> dict[str, Any]:
        raise RuntimeError("translator bug in get_dag_run_parameters")


class WarehouseTranslator(AirflowTranslator):
    """Name-only assets live in the warehouse bucket."""

    def get_asset_uri(self, asset: Any) -> str | None:
        uri = str(getattr(asset, "uri", "") or "")
        if "://" not in uri and not uri.startswith("/"):
            return f"s3://warehouse/{asset.name}"
        return super().get_asset_uri(asset)
