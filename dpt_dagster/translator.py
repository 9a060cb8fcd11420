"""Dagster objects -> dpt calls: the one place that knows both worlds.

The sensor (host glue) reads the event log and hands the translator plain
:class:`Materialization` / :class:`Upstream` records and Dagster run records;
the translator turns them into :class:`dpt_core.Tracker` calls. Customise what
is recorded by subclassing :class:`DagsterTranslator` and overriding its
``get_*`` methods, then pass an instance to
``dpt_asset_sensor(translator=MyTranslator())``.

Identities are deterministic (uuid5 of Dagster ids), so recording the same
event twice (a reset cursor, two sensors, a restarted daemon) adds nothing:

- a run: ``("dagster", "run", run_id)``;
- a materialisation's invocation: ``("dagster", "materialization", run_id, asset key, partition)``;
- the version it made: ``("dagster", "version", run_id, asset key, partition, storage id)``.

These recipes are module functions, not translator methods: overriding them
would break idempotency and the lineage links between tick and tick.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from dagster import AssetKey, EventLogRecord

import dpt_core
from dpt_core.adapter import Translator, TranslatorRegistry, as_utc
from dpt_core.guard import Guard
from dpt_core.uri import local_path
from dpt_dagster import compat

log = logging.getLogger("dpt.dagster")
#: Targets already warned about (bounded: see :class:`dpt_core.guard.Guard`).
_unrecordable_paths = Guard("recorded under its dagster:// URI", log)

ORCHESTRATOR = "dagster"
#: Materialisation metadata key naming the file (or URI) an asset wrote.
PATH_METADATA_KEY = "dpt/path"
#: Materialisation metadata key with the content hash the asset computed itself (optional).
CONTENT_HASH_METADATA_KEY = "dpt/content_hash"
#: A file modified more than this after its materialisation event was rewritten since.
#: Assets write their file before Dagster logs the event, so any later mtime means a
#: rewrite; raise it only when the file server's clock runs ahead of the workers'.
MTIME_TOLERANCE_SECONDS = 0.0
#: Longest metadata text kept on a version; longer values are cut (Markdown previews...).
MAX_METADATA_TEXT = 2000


# ---------------------------------------------------------------------------------------------
# Deterministic identities
# ---------------------------------------------------------------------------------------------


def _key_id(asset_key: AssetKey) -> str:
    return asset_key.to_string()


def run_invocation_uuid(run_id: str) -> str:
    """The dpt invocation UUID of a Dagster run."""
    return dpt_core.invocation_uuid(ORCHESTRATOR, "run", run_id)


def materialization_invocation_uuid(
    run_id: str, asset_key: AssetKey, partition: str | None, storage_id: int | None = None
) -> str:
    """The dpt invocation UUID of the step of ``run_id`` that materialised ``asset_key`` / ``partition``.

    A materialisation reported outside any run (``report_runless_asset_event``) has no
    run id; its storage id then names it.
    """
    if run_id:
        return dpt_core.invocation_uuid(
            ORCHESTRATOR, "materialization", run_id, _key_id(asset_key), repr(partition)
        )
    return dpt_core.invocation_uuid(
        ORCHESTRATOR, "runless-materialization", _key_id(asset_key), repr(partition), storage_id
    )


def version_uuid(run_id: str, asset_key: AssetKey, partition: str | None, storage_id: int) -> str:
    """The dpt version UUID of one materialisation event."""
    return dpt_core.invocation_uuid(
        ORCHESTRATOR, "version", run_id, _key_id(asset_key), repr(partition), storage_id
    )


# ---------------------------------------------------------------------------------------------
# What the sensor hands over
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Materialization:
    """One ``ASSET_MATERIALIZATION`` event, in plain fields."""

    asset_key: AssetKey
    partition: str | None
    run_id: str
    storage_id: int
    timestamp: float
    step_key: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Dagster ``MetadataValue`` objects by key, as the asset reported them.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: EventLogRecord) -> Materialization:
        return cls.from_entry(record.storage_id, record.event_log_entry)

    @classmethod
    def from_entry(cls, storage_id: int, entry: Any) -> Materialization:
        """From an ``EventLogEntry`` and the storage id the event log index gave it."""
        materialization = entry.asset_materialization
        if materialization is None:
            raise ValueError(f"event {storage_id} is not an asset materialisation")
        return cls(
            asset_key=materialization.asset_key,
            partition=materialization.partition,
            run_id=entry.run_id or "",
            storage_id=storage_id,
            timestamp=entry.timestamp,
            step_key=entry.step_key,
            tags=dict(materialization.tags or {}),
            metadata=dict(materialization.metadata or {}),
        )

    @property
    def invocation_uuid(self) -> str:
        return materialization_invocation_uuid(
            self.run_id, self.asset_key, self.partition, self.storage_id
        )

    @property
    def version_uuid(self) -> str:
        return version_uuid(self.run_id, self.asset_key, self.partition, self.storage_id)

    @property
    def data_version(self) -> str | None:
        return self.tags.get(compat.DATA_VERSION_TAG)

    @property
    def input_event_pointers(self) -> dict[AssetKey, int]:
        """Storage id of the exact upstream materialisation consumed, by upstream key."""
        pointers: dict[AssetKey, int] = {}
        for tag, value in self.tags.items():
            if tag.startswith(compat.INPUT_EVENT_POINTER):
                try:
                    pointers[AssetKey.from_user_string(tag[len(compat.INPUT_EVENT_POINTER) :])] = (
                        int(value)
                    )
                except (TypeError, ValueError):
                    continue
        return pointers

    @property
    def input_data_versions(self) -> dict[str, str]:
        return {
            tag[len(compat.INPUT_DATA_VERSION) :]: value
            for tag, value in self.tags.items()
            if tag.startswith(compat.INPUT_DATA_VERSION)
        }


@dataclass(frozen=True)
class Upstream:
    """An upstream asset (partition) a materialisation consumed.

    :param materialization: the exact upstream materialisation, when Dagster recorded it
        (``dagster/input_event_pointer/<key>``) or the event log could name it; else None
        (a source asset, or one never materialised in this instance).
    """

    asset_key: AssetKey
    partition: str | None
    materialization: Materialization | None = None


# ---------------------------------------------------------------------------------------------
# The translator
# ---------------------------------------------------------------------------------------------


def _hidden_tag(tag: str) -> bool:
    return tag.startswith(".")


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_METADATA_TEXT:
        return value[:MAX_METADATA_TEXT] + "..."
    return value


class DagsterTranslator(
    Translator,
    identity={"get_job", "get_task", "get_asset_uri", "get_target", "get_content_hash"},
    logger=log,
):
    """Turns Dagster runs and materialisations into dpt invocations, versions and lineage.

    Subclass it and override ``get_*`` methods to change what is recorded::

        class MyTranslator(DagsterTranslator):
            def get_task(self, asset_key):
                return asset_key.path[-1]

        defs = Definitions(assets=[...], sensors=[dpt_asset_sensor(translator=MyTranslator())])

    An override that raises costs only its own field (:class:`dpt_core.adapter.Translator`):
    dpt's default answers instead and the materialisation is recorded; an override of a
    method that names what is recorded (``get_job``, ``get_task``, ``get_asset_uri``,
    ``get_target``, ``get_content_hash``) that raises costs that materialisation, which
    the sensor logs and skips. Under ``DPT_STRICT=1`` either raises and fails the tick.
    """

    # -- names --------------------------------------------------------------------------

    def get_job(self, run: Any | None) -> str:
        """The dpt ``job`` of a run (and of its materialisations): the Dagster job name.

        Example override (name ad-hoc ``materialize()`` runs after the code location)::

            def get_job(self, run):
                name = super().get_job(run)
                return "survey" if name == "__ephemeral_asset_job__" else name
        """
        if run is None:
            return "dagster"
        return str(run.job_name)

    def get_task(self, asset_key: AssetKey) -> str:
        """The dpt ``task`` of a materialisation: the asset key, ``"a/b"``.

        Example override (only the last key component)::

            def get_task(self, asset_key):
                return asset_key.path[-1]
        """
        return asset_key.to_user_string()

    # -- products -----------------------------------------------------------------------

    def get_asset_uri(self, asset_key: AssetKey, partition: str | None) -> str:
        """The product URI of an asset that names no file: ``dagster://asset/<key path>[/<partition>]``.

        Key components and the partition are percent-encoded (a ``/`` in a partition
        becomes ``%2F``). Example override (one product per asset, partitions folded)::

            def get_asset_uri(self, asset_key, partition):
                return super().get_asset_uri(asset_key, None)
        """
        path = "/".join(quote(part, safe="") for part in asset_key.path)
        uri = f"dagster://asset/{path}"
        if partition is not None:
            uri += "/" + quote(partition, safe="")
        return uri

    def get_target(self, materialization: Materialization) -> str:
        """What a materialisation produced: the ``dpt/path`` metadata value, else the asset URI.

        ``dpt/path`` may be a local path (hashed like any file) or a URI
        (``s3://bucket/key``). Example override (take the path from the IO manager's
        ``path`` metadata)::

            def get_target(self, materialization):
                path = materialization.metadata.get("path")
                return path.value if path is not None else super().get_target(materialization)
        """
        value = materialization.metadata.get(PATH_METADATA_KEY)
        value = getattr(value, "value", value)
        if value:
            return str(value)
        return self.get_asset_uri(materialization.asset_key, materialization.partition)

    def get_content_hash(self, materialization: Materialization, target: str) -> str | None:
        """A content identity known without reading the product, or None to let dpt hash it.

        Default, in order: the ``dpt/content_hash`` metadata the asset reported
        (``"<algorithm>:<hex>"``); for ``dagster://`` products (nothing to hash) the
        Dagster data version, as ``"dagster_data_version:<value>"``; None for a local
        file, which dpt hashes, unless the file changed after this materialisation (a
        later run rewrote it before the sensor saw this one): its content is then no
        longer this version's, and the data version stands in. Example override (trust
        a checksum the asset reported under another name)::

            def get_content_hash(self, materialization, target):
                sha = materialization.metadata.get("sha256")
                return f"sha256:{sha.value}" if sha else super().get_content_hash(materialization, target)
        """
        reported = materialization.metadata.get(CONTENT_HASH_METADATA_KEY)
        reported = getattr(reported, "value", reported)
        if reported:
            return str(reported)
        by_data_version = (
            f"dagster_data_version:{materialization.data_version}"
            if materialization.data_version
            else None
        )
        if target.startswith("dagster://"):
            return by_data_version
        path = local_path(target)
        if path is not None and by_data_version is not None:
            try:
                changed_since = (
                    os.stat(path).st_mtime > materialization.timestamp + MTIME_TOLERANCE_SECONDS
                )
            except (OSError, ValueError):  # gone, or not a path this system can stat
                changed_since = False
            if changed_since:
                return by_data_version
        return None

    def get_version_metadata(self, materialization: Materialization) -> dict[str, Any]:
        """JSON-able facts kept on the version: the asset's metadata plus Dagster ids.

        Example override (drop bulky previews)::

            def get_version_metadata(self, materialization):
                meta = super().get_version_metadata(materialization)
                meta.pop("preview", None)
                return meta
        """
        meta = {
            key: _clip(value)
            for key, value in compat.metadata_values(materialization.metadata).items()
        }
        meta.update(
            {
                "dagster/asset_key": materialization.asset_key.to_user_string(),
                "dagster/partition": materialization.partition,
                "dagster/run_id": materialization.run_id or None,
                "dagster/storage_id": materialization.storage_id,
                "dagster/data_version": materialization.data_version,
            }
        )
        return dpt_core.plugin_api.jsonable(meta)  # type: ignore[no-any-return]

    # -- invocations --------------------------------------------------------------------

    def get_run_tags(self, run: Any | None) -> dict[str, str]:
        """The run tags kept in parameters (Dagster's hidden ``.dagster/...`` tags left out).

        Example override (keep only your team's tags)::

            def get_run_tags(self, run):
                return {k: v for k, v in super().get_run_tags(run).items() if k.startswith("team/")}
        """
        if run is None:
            return {}
        return {k: v for k, v in sorted((run.tags or {}).items()) if not _hidden_tag(k)}

    def get_run_parameters(self, run: Any) -> dict[str, Any]:
        """Parameters of the run invocation: run tags, partition and op config.

        Only the ``ops`` section of the run config is kept: resource config is where
        credentials live. Example override (no config at all)::

            def get_run_parameters(self, run):
                params = super().get_run_parameters(run)
                params.pop("config", None)
                return params
        """
        params: dict[str, Any] = {"tags": self.get_run_tags(run)}
        partition = (run.tags or {}).get("dagster/partition")
        if partition is not None:
            params["partition"] = partition
        config = run.run_config if isinstance(run.run_config, Mapping) else {}
        if config.get("ops"):
            params["config"] = config["ops"]
        return params

    def get_parameters(self, materialization: Materialization, run: Any | None) -> dict[str, Any]:
        """Parameters of a materialisation's invocation.

        ``asset_key``, ``partition``, ``tags`` (run tags), ``code_version``,
        ``data_version``, ``input_data_versions``, ``step_key`` and ``storage_id``.
        Example override (add a run tag as a top-level parameter)::

            def get_parameters(self, materialization, run):
                params = super().get_parameters(materialization, run)
                params["survey"] = (run.tags or {}).get("survey") if run else None
                return params
        """
        return {
            "asset_key": materialization.asset_key.to_user_string(),
            "partition": materialization.partition,
            "tags": self.get_run_tags(run),
            "code_version": materialization.tags.get(compat.CODE_VERSION_TAG),
            "data_version": materialization.data_version,
            "input_data_versions": materialization.input_data_versions,
            "step_key": materialization.step_key,
            "storage_id": materialization.storage_id,
        }

    def get_code_version(self, materialization: Materialization) -> str | None:
        """The invocation's ``code_version``: the asset's declared code version.

        Dagster tags an asset without one with the run id; that is not a code version,
        so it gives None. Example override (a git commit the asset reported as metadata)::

            def get_code_version(self, materialization):
                sha = materialization.metadata.get("git_sha")
                return sha.value if sha else super().get_code_version(materialization)
        """
        value = materialization.tags.get(compat.CODE_VERSION_TAG)
        if not value or value == materialization.run_id:
            return None
        return value

    def get_status(self, event_type: str) -> str:
        """The dpt status of a final run event (``RUN_SUCCESS`` -> ``success``...).

        Example override (count cancelled runs as failed)::

            def get_status(self, event_type):
                status = super().get_status(event_type)
                return "failed" if status == "cancelled" else status
        """
        return compat.RUN_STATUS_EVENTS.get(event_type, "failed")

    def get_run_error(self, record: EventLogRecord) -> str | None:
        """The error text of a failed or cancelled run: Dagster's message plus the root cause.

        Example override (only the root cause)::

            def get_run_error(self, record):
                text = super().get_run_error(record)
                return text.splitlines()[-1] if text else None
        """
        entry = record.event_log_entry
        if compat.event_type(entry) == "RUN_SUCCESS":
            return None
        message = (entry.message or "").strip()
        step_key, cause = compat.run_failure_details(entry)
        parts = [message] if message else []
        if cause:
            parts.append(f"{step_key}: {cause}" if step_key else cause)
        return "\n".join(parts) or None

    # -- recording ----------------------------------------------------------------------

    def start_run(self, tracker: dpt_core.Tracker, run_id: str, run_record: Any | None) -> str:
        """Record the run invocation (idempotent: its UUID comes from the run id)."""
        run = run_record.dagster_run if run_record is not None else None
        handle = tracker.start(
            self.get_job(run),
            orchestrator=ORCHESTRATOR,
            uuid=run_invocation_uuid(run_id),
            parent=False,  # a Dagster run is a root (None would ask the plugin again: recursion)
            external_id=run_id,
            parameters=self.get_run_parameters(run) if run is not None else {},
            started_at=_run_started(run_record),
            environment=False,
        )
        return handle.uuid

    def finish_run(
        self, tracker: dpt_core.Tracker, record: EventLogRecord, run_record: Any | None
    ) -> None:
        """Close the run invocation with the status and error of its final event."""
        entry = record.event_log_entry
        run_id = entry.run_id
        status = self.get_status(compat.event_type(entry) or "")
        error = self.get_run_error(record)
        ended = None
        if run_record is not None:
            ended = as_utc(run_record.end_time)
        self.start_run(tracker, run_id, run_record)
        tracker.attach(run_invocation_uuid(run_id)).finish(
            status, error=error, ended_at=ended or as_utc(entry.timestamp)
        )

    def upstream_ref(
        self, upstream: Upstream, tracker: dpt_core.Tracker | None = None
    ) -> dpt_core.ProductRef:
        """The product (and, when known, the exact version) an upstream stands for."""
        if upstream.materialization is not None:
            target, _why = self.recordable_target(
                tracker or dpt_core.get_tracker(), upstream.materialization
            )
            return dpt_core.ProductRef(target, version_uuid=upstream.materialization.version_uuid)
        return dpt_core.ProductRef(self.get_asset_uri(upstream.asset_key, upstream.partition))

    def recordable_target(
        self, tracker: dpt_core.Tracker, materialization: Materialization
    ) -> tuple[str, str | None]:
        """:meth:`get_target`, or the asset's URI when that names no product.

        A ``dpt/path`` that dpt cannot record (a NUL byte, a ``file://`` URI without a
        path...) costs only itself: the materialisation is recorded under
        :meth:`get_asset_uri`, with a warning naming the value (raised under
        ``DPT_STRICT=1``), and the reason kept on the version as
        ``dpt/unrecorded_path``. Readers of the asset use the same rule, so lineage
        holds. Returns (target, reason or None).
        """
        target = self.get_target(materialization)
        try:
            tracker.resolve(target)
        except dpt_core.DptError as exc:
            if tracker.settings.strict:
                raise
            fallback = self.get_asset_uri(materialization.asset_key, materialization.partition)
            if target == fallback:
                raise
            if _unrecordable_paths.first_time(target):
                log.warning(
                    "dpt: asset %s names %r as its product, which dpt cannot record (%s); "
                    "recorded as %s",
                    materialization.asset_key.to_user_string(),
                    target,
                    exc,
                    fallback,
                )
            return fallback, str(exc)
        return target, None

    def record_materialization(
        self,
        tracker: dpt_core.Tracker,
        materialization: Materialization,
        run_record: Any | None,
        upstream: Sequence[Upstream] = (),
    ) -> None:
        """One invocation per materialisation: inputs, the output version, success.

        The run invocation (the parent) must have been recorded first (:meth:`start_run`).
        """
        run = run_record.dagster_run if run_record is not None else None
        parent = run_invocation_uuid(materialization.run_id) if run_record is not None else None
        started = _run_started(run_record)
        ended = as_utc(materialization.timestamp)
        # Translate everything first: a failing override must not leave half a record.
        job = self.get_job(run)
        task = self.get_task(materialization.asset_key)
        parameters = self.get_parameters(materialization, run)
        code_version = self.get_code_version(materialization)
        inputs = [self.upstream_ref(u, tracker) for u in upstream]
        target, unrecorded = self.recordable_target(tracker, materialization)
        metadata = self.get_version_metadata(materialization)
        if unrecorded is not None:
            metadata["dpt/unrecorded_path"] = unrecorded
        output = dpt_core.ProductRef(
            target,
            metadata=metadata,
            content_hash=self.get_content_hash(materialization, target),
            version_uuid=materialization.version_uuid,
        )

        handle = tracker.start(
            job,
            task=task,
            orchestrator=ORCHESTRATOR,
            uuid=materialization.invocation_uuid,
            parent=parent,
            external_id=materialization.run_id or None,
            parameters=parameters,
            code_version=code_version,
            started_at=min(started, ended) if started and ended else (started or ended),
            environment=False,
            # One event with the outcome (the sensor records inside tracker.batch(): the
            # start, the inputs and the output land in one transaction or not at all).
            status="success",
            ended_at=ended,
        )
        if inputs:
            handle.read(*inputs)
        handle.write(output)

    def start_in_process(
        self,
        tracker: dpt_core.Tracker,
        run_record: Any | None,
        run_id: str,
        asset_key: AssetKey,
        partition: str | None,
        code_version: str | None = None,
        upstream: Sequence[Upstream] = (),
    ) -> dpt_core.plugin_api.CurrentContext:
        """Open, from inside a running asset, the invocation the sensor will complete.

        Called when asset code uses ``dpt_core.track()`` / ``dpt_core.invocation()``: the
        invocation is recorded with the asset process's environment, under the same UUID
        the sensor uses, so the sensor later adds the output version and the outcome.
        ``upstream`` (what the asset reads, resolved as the sensor resolves it) is
        recorded as its inputs at once. The invocation is handed over to the sensor
        (:meth:`dpt_core.InvocationHandle.detach`): the process's exit does not close it,
        the run's outcome does.
        """
        run = run_record.dagster_run if run_record is not None else None
        self.start_run(tracker, run_id, run_record)
        job = self.get_job(run)
        task = self.get_task(asset_key)
        handle = tracker.start(
            job,
            task=task,
            orchestrator=ORCHESTRATOR,
            uuid=materialization_invocation_uuid(run_id, asset_key, partition),
            parent=run_invocation_uuid(run_id),
            external_id=run_id,
            parameters={
                "asset_key": asset_key.to_user_string(),
                "partition": partition,
                "tags": self.get_run_tags(run),
                "code_version": code_version,
            },
            code_version=code_version,
            environment=True,
        )
        inputs = [self.upstream_ref(u, tracker) for u in upstream]
        if inputs:
            handle.read(*inputs)
        # The sensor closes it, from the run's outcome in the event log (made, failed,
        # skipped, cancelled): not this process's exit, which comes before or after.
        handle.detach()
        return dpt_core.plugin_api.CurrentContext(invocation_uuid=handle.uuid, job=job, task=task)

    def record_unmaterialized(
        self,
        tracker: dpt_core.Tracker,
        run_record: Any,
        asset_key: AssetKey,
        partition: str | None,
        status: str,
        error: str | None,
        ended_at: dt.datetime | None,
    ) -> None:
        """An asset a finished run planned but did not materialise (its step failed, or the run stopped)."""
        run = run_record.dagster_run
        run_id = run.run_id
        parent = self.start_run(tracker, run_id, run_record)
        handle = tracker.start(
            self.get_job(run),
            task=self.get_task(asset_key),
            orchestrator=ORCHESTRATOR,
            uuid=materialization_invocation_uuid(run_id, asset_key, partition),
            parent=parent,
            external_id=run_id,
            parameters={
                "asset_key": asset_key.to_user_string(),
                "partition": partition,
                "tags": self.get_run_tags(run),
            },
            started_at=_run_started(run_record),
            environment=False,
        )
        handle.finish(status, error=error, ended_at=ended_at)


# ---------------------------------------------------------------------------------------------
# The active translator
# ---------------------------------------------------------------------------------------------

#: The process's active translator (the one behind every ``AssetKey`` -> URI).
_translators: TranslatorRegistry[DagsterTranslator] = TranslatorRegistry(DagsterTranslator)


def register_translator(translator: DagsterTranslator) -> None:
    """Make ``translator`` the one dpt uses in this process, outside the sensor too.

    :func:`~dpt_dagster.dpt_asset_sensor` calls it with its translator. Code locations
    load their definitions in every process that needs them (the daemon's code server
    that ticks the sensor, each run worker), so the translator given to the sensor is
    also the one ``dpt_core.track()`` and ``dpt_core.invocation()`` use inside an asset,
    and the one that turns an ``AssetKey`` handed to dpt into a product URI. The sensor
    built last in a process wins.

    :raises TypeError: when ``translator`` is not a :class:`DagsterTranslator`.
    """
    _translators.register(translator)


def active_translator() -> DagsterTranslator:
    """The translator of the dpt sensor built last in this process (default: a plain one)."""
    return _translators.active()


def _run_started(run_record: Any | None) -> dt.datetime | None:
    """When a run started; when it was created, for a run that never started."""
    if run_record is None:
        return None
    return as_utc(run_record.start_time) or as_utc(run_record.create_timestamp)
