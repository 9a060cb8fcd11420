"""The record as a W3C PROV-JSON document (https://www.w3.org/Submission/prov-json/).

Mapping:

* each product **version** is a ``prov:Entity`` ``dpt:version_<uuid>`` (label: the
  URI; attributes: URI, content hash, size, recording time);
* each **invocation** is a ``prov:Activity`` ``dpt:run_<uuid>`` (start and end
  times, job, task, status, orchestrator; ``dpt:parent`` names the enclosing run);
* each **environment** is a ``prov:SoftwareAgent`` ``dpt:environment_<fingerprint>``
  and each user@host a ``prov:Person`` ``dpt:user_<user>_at_<host>``; runs are
  ``wasAssociatedWith`` both;
* reads are ``used``, writes ``wasGeneratedBy``, lineage edges
  ``wasDerivedFrom`` (with the run as ``prov:activity``).

Relations get blank-node ids (``_:u1``, ``_:g1``, ``_:d1``, ``_:a1``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["NAMESPACE", "prov_document"]

#: The namespace of the ``dpt`` prefix.
NAMESPACE = "urn:dpt:"


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return str(value.isoformat())
    return str(value)


def _when(value: Any) -> dict[str, str] | None:
    """A typed ``xsd:dateTime`` literal (for attributes that PROV does not type itself)."""
    text = _time(value)
    return None if text is None else {"$": text, "type": "xsd:dateTime"}


def _local(text: str) -> str:
    """A safe local part for a qualified name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def prov_document(engine: Engine, since: dt.datetime | None = None) -> dict[str, Any]:
    """Every invocation started at or after ``since`` (all when None), as PROV-JSON.

    The records are read through :func:`dpt_core.store.export_queries.prov_records`.
    """
    from dpt_core.store.export_queries import prov_records

    records = prov_records(engine, since)
    run_rows, parents, versions = records.runs, records.parents, records.versions
    used, generated, derived = records.used, records.generated, records.derived

    run_uuid = {r.id: r.uuid for r in run_rows}

    def run_id(uuid: str) -> str:
        return f"dpt:run_{uuid}"

    def version_id(vid: int) -> str:
        return f"dpt:version_{versions[vid].uuid}"

    entity = {
        version_id(vid): _drop_none(
            {
                "prov:type": {"$": "dpt:DataProductVersion", "type": "prov:QUALIFIED_NAME"},
                "prov:label": row.uri,
                "dpt:uri": row.uri,
                "dpt:content_hash": row.content_hash,
                "dpt:size": row.size,
                "dpt:recorded_at": _when(row.recorded_at),
            }
        )
        for vid, row in sorted(versions.items())
    }
    activity: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    associated: dict[str, Any] = {}
    for r in run_rows:
        label = f"{r.job}.{r.task}" if r.task else r.job
        activity[run_id(r.uuid)] = _drop_none(
            {
                "prov:startTime": _time(r.started_at),
                "prov:endTime": _time(r.ended_at),
                "prov:label": label,
                "dpt:uuid": r.uuid,
                "dpt:orchestrator": r.orchestrator,
                "dpt:job": r.job,
                "dpt:task": r.task,
                "dpt:status": r.status,
                "dpt:error": r.error,
                "dpt:parent": run_id(parents[r.parent_id]) if r.parent_id in parents else None,
            }
        )
        if r.fingerprint:
            env_agent = f"dpt:environment_{r.fingerprint[:16]}"
            agent.setdefault(
                env_agent,
                {
                    "prov:type": {"$": "prov:SoftwareAgent", "type": "prov:QUALIFIED_NAME"},
                    "prov:label": f"python {r.python_version} on {r.hostname}",
                    "dpt:fingerprint": r.fingerprint,
                    "dpt:python": r.python_version,
                    "dpt:platform": r.platform,
                    "dpt:host": r.hostname,
                },
            )
            associated[f"_:a{len(associated) + 1}"] = {
                "prov:activity": run_id(r.uuid),
                "prov:agent": env_agent,
            }
        if r.user:
            person = f"dpt:user_{_local(r.user)}_at_{_local(r.host or 'unknown')}"
            agent.setdefault(
                person,
                {
                    "prov:type": {"$": "prov:Person", "type": "prov:QUALIFIED_NAME"},
                    "prov:label": f"{r.user}@{r.host}" if r.host else r.user,
                },
            )
            associated[f"_:a{len(associated) + 1}"] = {
                "prov:activity": run_id(r.uuid),
                "prov:agent": person,
            }
    used_relations = {
        f"_:u{n}": {
            "prov:activity": run_id(run_uuid[r.invocation_id]),
            "prov:entity": version_id(r.version_id),
        }
        for n, r in enumerate(sorted(used), start=1)
    }
    generated_relations = {
        f"_:g{n}": _drop_none(
            {
                "prov:entity": version_id(r.id),
                "prov:activity": run_id(run_uuid[r.produced_by_id]),
                "prov:time": _time(versions[r.id].recorded_at),
            }
        )
        for n, r in enumerate(sorted(generated), start=1)
    }
    derived_relations = {
        f"_:d{n}": {
            "prov:generatedEntity": version_id(r.child_version_id),
            "prov:usedEntity": version_id(r.parent_version_id),
            "prov:activity": run_id(run_uuid[r.invocation_id]),
        }
        for n, r in enumerate(sorted(derived), start=1)
    }
    document: dict[str, Any] = {
        "prefix": {"dpt": NAMESPACE},
        "entity": entity,
        "activity": activity,
        "agent": agent,
        "used": used_relations,
        "wasGeneratedBy": generated_relations,
        "wasDerivedFrom": derived_relations,
        "wasAssociatedWith": associated,
    }
    return {k: v for k, v in document.items() if v or k == "prefix"}
