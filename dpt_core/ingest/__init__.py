"""OpenLineage events -> dpt records (what ``dpt serve`` does with ``POST /api/v1/lineage``).

::

    from dpt_core.ingest import InvalidEvent, parse_events, ingest

    events = parse_events(doc)   # one event dict or a list; raises InvalidEvent(field=...)
    result = ingest(events)      # one tracker.batch(); idempotent, order-free
    result.outcome               # "recorded" | "spooled" | "disabled"

The mapping is the inverse of ``dpt export --format openlineage``
(:mod:`dpt_core.export.openlineage`): exporting a database and ingesting the events
into a fresh one gives the same runs, statuses, products, versions and edges.
docs/openlineage-mapping.md has the table.
"""

from __future__ import annotations

from dpt_core.ingest.mapping import (
    IngestResult,
    OpenLineageRun,
    ParsedEvent,
    StaticEvent,
    ingest,
    parse_event,
    parse_events,
    to_dpt_events,
)
from dpt_core.ingest.naming import NAMING_TABLE, dataset_identifier, product_uri
from dpt_core.ingest.spec import InvalidEvent

__all__ = [
    "NAMING_TABLE",
    "IngestResult",
    "InvalidEvent",
    "OpenLineageRun",
    "ParsedEvent",
    "StaticEvent",
    "dataset_identifier",
    "ingest",
    "parse_event",
    "parse_events",
    "product_uri",
    "to_dpt_events",
]
