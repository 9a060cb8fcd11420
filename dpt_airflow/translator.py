"""Airflow objects -> dpt records: the one place that knows both worlds.

The listener hands every task-instance and dag-run event to an
:class:`AirflowTranslator`, which says what to record: the job and task names,
the invocation ids, the parameters, the inputs and outputs. To change any of
it, subclass the translator, override the ``get_*`` methods you need and name
your class in ``airflow.cfg``::

    [dpt]
    translator = my_company.lineage.MyTranslator

(or ``AIRFLOW__DPT__TRANSLATOR=my_company.lineage.MyTranslator``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import dpt_core
from dpt_airflow import compat
from dpt_core.adapter import Translator, variables_starting_with
from dpt_core.events import error_text

#: The ``orchestrator`` column of everything the Airflow adapter records.
ORCHESTRATOR = "airflow"


class AirflowTranslator(
    Translator,
    identity={"get_invocation_uuid", "get_dag_run_uuid", "get_job", "get_task", "get_asset_uri"},
    fallbacks={"get_inputs": list, "get_outputs": list},
    logger=logging.getLogger("dpt.airflow"),
):
    """Translate Airflow task instances, dag runs and assets into dpt invocations and products.

    An override that raises costs only its own field (:class:`dpt_core.adapter.Translator`):
    dpt's default answers instead, and no inputs or outputs for ``get_inputs`` and
    ``get_outputs``; an override of an identity method (``get_invocation_uuid``,
    ``get_dag_run_uuid``, ``get_job``, ``get_task``, ``get_asset_uri``) that raises costs
    the record it names.

    ``task_instance`` is the task runner's ``RuntimeTaskInstance`` (in the worker, with
    ``.task`` and a template ``context``) or, for events the scheduler or API server
    emits, an ORM ``TaskInstance`` with the ids only (``context`` is then empty).
    ``dag_run`` is a DagRun of either kind: both carry ``dag_id``, ``run_id``,
    ``logical_date``, ``run_type``, ``conf`` and ``start_date``.
    """

    #: The ``orchestrator`` column of the invocations this translator describes.
    orchestrator = ORCHESTRATOR

    # -- identity ---------------------------------------------------------------------------

    def get_invocation_uuid(self, task_instance: Any) -> str:
        """The idempotency key of one task try: the same for every event of that try.

        Derived from ``(dag_id, run_id, task_id, map_index, try_number)``, so each mapped
        index and each retry is its own invocation. Example override (one invocation
        per task instance, retries folded together)::

            def get_invocation_uuid(self, task_instance):
                ti = task_instance
                return dpt_core.invocation_uuid("airflow", ti.dag_id, ti.run_id, ti.task_id)
        """
        return dpt_core.invocation_uuid(ORCHESTRATOR, "task", *compat.task_key(task_instance))

    def get_dag_run_uuid(self, dag_id: str, run_id: str) -> str:
        """The idempotency key of a dag run, the parent of its task tries.

        The first task of the run creates it, the dag-run listeners close it, so every
        process must derive the same key. Example override (a namespace per deployment)::

            def get_dag_run_uuid(self, dag_id, run_id):
                return dpt_core.invocation_uuid("airflow", "prod", dag_id, run_id)
        """
        return dpt_core.invocation_uuid(ORCHESTRATOR, "dag_run", dag_id, run_id)

    def get_job(self, task_instance: Any) -> str:
        """The invocation's ``job``: the DAG id.

        Example override::

            def get_job(self, task_instance):
                return f"survey/{task_instance.dag_id}"
        """
        return str(task_instance.dag_id)

    def get_task(self, task_instance: Any) -> str:
        """The invocation's ``task``: the task id (the map index is in the parameters).

        Example override (one task name per mapped index)::

            def get_task(self, task_instance):
                ti = task_instance
                return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        """
        return str(task_instance.task_id)

    def get_external_id(self, task_instance: Any) -> str | None:
        """The invocation's ``external_id``: Airflow's task-instance id (a UUID per try).

        Example override (the run id instead)::

            def get_external_id(self, task_instance):
                return task_instance.run_id
        """
        ti_id = getattr(task_instance, "id", None)
        return str(ti_id) if ti_id else None

    # -- what the task try was --------------------------------------------------------------

    def get_parameters(self, task_instance: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        """The invocation's ``parameters``: map index, try number, run id, logical date, params.

        Example override (add a value from the run's conf)::

            def get_parameters(self, task_instance, context):
                parameters = super().get_parameters(task_instance, context)
                parameters["field"] = context["dag_run"].conf.get("field")
                return parameters
        """
        _, run_id, _, map_index, try_number = compat.task_key(task_instance)
        parameters: dict[str, Any] = {
            "run_id": run_id,
            "map_index": map_index,
            "try_number": try_number,
        }
        dag_run = context.get("dag_run")
        if dag_run is not None:
            parameters["logical_date"] = getattr(dag_run, "logical_date", None)
        params = context.get("params")
        if params:
            parameters["params"] = dict(params)
        return parameters

    def get_context_variables(
        self, task_instance: Any, context: Mapping[str, Any]
    ) -> dict[str, str | None]:
        """The invocation's per-run ``variables``: this try's ``AIRFLOW_CTX_*``.

        Airflow exports ``AIRFLOW_CTX_DAG_ID``, ``AIRFLOW_CTX_TASK_ID``,
        ``AIRFLOW_CTX_TRY_NUMBER``, ``AIRFLOW_CTX_DAG_RUN_ID``, ... to a task's
        environment only after the listener has opened the try, and a process that runs
        many tasks (``dag.test()``) still holds the previous task's values then. So they
        are computed here from the try's context, as Airflow computes them, and replace
        whatever the process holds. A None value removes a name: stale ``AIRFLOW_CTX_*``
        names this try does not have, and ``_AIRFLOW_PARSING_CONTEXT_*`` values (the DAG
        and task a worker was told to parse) that name another DAG or task. Example
        override (also record the map index)::

            def get_context_variables(self, task_instance, context):
                variables = super().get_context_variables(task_instance, context)
                variables["AIRFLOW_CTX_MAP_INDEX"] = str(task_instance.map_index)
                return variables
        """
        variables: dict[str, str | None] = dict(compat.context_variables(context))
        own = {
            "_AIRFLOW_PARSING_CONTEXT_DAG_ID": str(task_instance.dag_id),
            "_AIRFLOW_PARSING_CONTEXT_TASK_ID": str(task_instance.task_id),
        }
        for name in variables_starting_with(compat.CONTEXT_VARIABLE_PREFIX):
            if name not in variables:
                variables[name] = None  # stale
        for name, value in own.items():
            if os.environ.get(name, value) != value:
                variables[name] = None
        return variables

    def get_command(self, task_instance: Any, context: Mapping[str, Any]) -> str | None:
        """The invocation's ``command``: a ``BashOperator``'s ``bash_command``, as rendered.

        Airflow renders the task's templates before the try starts, so this is the
        script bash runs. dpt redacts secrets in it (values of secret-named flags and
        assignments, auth headers, credentials in URLs) before storing it. None for
        tasks that run Python. Example override (a Kubernetes pod's arguments)::

            def get_command(self, task_instance, context):
                arguments = getattr(task_instance.task, "arguments", None)
                if arguments:
                    return " ".join(arguments)
                return super().get_command(task_instance, context)
        """
        command = getattr(task_instance.task, "bash_command", None)
        # (a ``@task.bash`` task holds a sentinel object until its function returns)
        return command if isinstance(command, str) and command.strip() else None

    def get_code_version(self, task_instance: Any, context: Mapping[str, Any]) -> str | None:
        """The invocation's ``code_version``: the DAG bundle version (a git commit), if any.

        Example override (the deployed image tag)::

            def get_code_version(self, task_instance, context):
                return os.environ.get("IMAGE_TAG")
        """
        return compat.bundle_version(task_instance)

    def get_error(self, error: BaseException | str | None) -> str | None:
        """The invocation's ``error`` text for a failed try.

        Example override (first line only)::

            def get_error(self, error):
                text = super().get_error(error)
                return text.splitlines()[0] if text else None
        """
        if error is None:
            return None
        if isinstance(error, BaseException):
            return error_text(error)
        return str(error)

    # -- products ---------------------------------------------------------------------------

    def get_asset_uri(self, asset: Any) -> str | None:
        """The dpt URI of an Airflow asset (or asset reference); None if it names no product.

        An asset URI with a scheme (``file://``, ``s3://``, ...) is used as it is, an
        absolute path becomes a file, and a bare name becomes ``airflow://asset/<name>``.
        Example override (name-only assets live in a bucket)::

            def get_asset_uri(self, asset):
                if "://" not in asset.uri:
                    return f"s3://warehouse/{asset.name}"
                return super().get_asset_uri(asset)
        """
        uri = getattr(asset, "uri", None) or getattr(asset, "name", None)
        if not uri:
            return None
        uri = str(uri)
        if "://" in uri or uri.startswith("/"):
            return uri
        return f"airflow://asset/{quote(uri, safe='/')}"

    def get_inputs(self, task_instance: Any, context: Mapping[str, Any]) -> list[Any]:
        """What the task try read: its inlets, recorded when it starts.

        Assets become URIs (:meth:`get_asset_uri`); other inlet objects are passed on
        as they are, for a ``dpt_resolve_uri`` plugin to resolve. Example override
        (also record a fixed calibration file)::

            def get_inputs(self, task_instance, context):
                return [*super().get_inputs(task_instance, context), "/data/calib/flat.fits"]
        """
        base_asset, asset_alias = compat.asset_types()
        inputs: list[Any] = []
        for inlet in getattr(task_instance.task, "inlets", None) or ():
            if isinstance(inlet, asset_alias):
                continue
            if isinstance(inlet, base_asset) or hasattr(inlet, "uri"):
                uri = self.get_asset_uri(inlet)
                if uri:
                    inputs.append(uri)
            else:
                inputs.append(inlet)
        return inputs

    def get_outputs(self, task_instance: Any, context: Mapping[str, Any]) -> list[Any]:
        """What the task try wrote: its outlets, recorded when it succeeds.

        Each asset becomes a :class:`dpt_core.ProductRef` whose metadata is the extra of
        the asset event the task emitted (``outlet_events[asset].extra``); assets attached
        to an ``AssetAlias`` outlet at run time are included with their event extras.
        Every output derives from every input of the try. Example override (skip
        database tables)::

            def get_outputs(self, task_instance, context):
                outputs = super().get_outputs(task_instance, context)
                return [o for o in outputs if not o.target.startswith("postgres://")]
        """
        base_asset, asset_alias = compat.asset_types()
        events = context.get("outlet_events")
        outputs: list[Any] = []
        for outlet in getattr(task_instance.task, "outlets", None) or ():
            if isinstance(outlet, asset_alias):
                for alias_event in _alias_events(events, outlet):
                    uri = self.get_asset_uri(alias_event.dest_asset_key)
                    if uri:
                        outputs.append(dpt_core.ProductRef(uri, metadata=alias_event.extra or None))
            elif isinstance(outlet, base_asset) or hasattr(outlet, "uri"):
                uri = self.get_asset_uri(outlet)
                if uri:
                    outputs.append(dpt_core.ProductRef(uri, metadata=_event_extra(events, outlet)))
            else:
                outputs.append(outlet)
        return outputs

    # -- dag runs ---------------------------------------------------------------------------

    def get_dag_run_parameters(self, dag_run: Any) -> dict[str, Any]:
        """The dag-run invocation's ``parameters``: run id, run type, logical date and conf.

        Example override (drop a large conf)::

            def get_dag_run_parameters(self, dag_run):
                parameters = super().get_dag_run_parameters(dag_run)
                parameters.pop("conf", None)
                return parameters
        """
        run_type = getattr(dag_run, "run_type", None)
        parameters: dict[str, Any] = {
            "run_id": dag_run.run_id,
            "run_type": getattr(run_type, "value", run_type),
            "logical_date": getattr(dag_run, "logical_date", None),
        }
        conf = getattr(dag_run, "conf", None)
        if conf:
            parameters["conf"] = dict(conf)
        return parameters


def _event_extra(events: Any, asset: Any) -> dict[str, Any] | None:
    if events is None:
        return None
    extra = events[asset].extra
    return dict(extra) if extra else None


def _alias_events(events: Any, alias: Any) -> list[Any]:
    if events is None:
        return []
    return list(events[alias].asset_alias_events)
