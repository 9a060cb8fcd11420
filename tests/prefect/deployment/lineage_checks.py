"""Item 14's assertion, shared by the in-process test and the deployment test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dpt_core


def assert_chain_through_the_producer(recorded: Any, data: Path) -> None:
    """What item 14 asks, from dpt's database: one clean.csv version, and lineage through it."""
    raw, clean, summary = data / "raw.csv", data / "clean.csv", data / "summary.json"
    producer = recorded.one(task="make_clean_csv")
    summarizer = recorded.one(task="summarize")
    assert producer["status"] == summarizer["status"] == "success"

    (clean_version,) = recorded.versions(clean.as_uri())
    assert clean_version["produced_by_id"] == producer["id"]
    assert clean_version["content_hash"] == dpt_core.hash_file(clean)
    (summary_version,) = recorded.versions(summary.as_uri())
    assert summary_version["produced_by_id"] == summarizer["id"]
    (raw_version,) = recorded.versions(raw.as_uri())
    assert raw_version["produced_by_id"] is None  # an input nobody here made
    assert recorded.edges() == {
        (raw.as_uri(), clean.as_uri(), producer["id"]),
        (clean.as_uri(), summary.as_uri(), summarizer["id"]),
    }
    upstream = dpt_core.lineage(summary, direction="upstream")
    assert {(n.uri, n.depth) for n in upstream.nodes} == {
        (summary.as_uri(), 0),
        (clean.as_uri(), 1),
        (raw.as_uri(), 2),
    }
