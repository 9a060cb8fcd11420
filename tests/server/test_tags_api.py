"""Tags through a real ``dpt serve``: ``/api/runs?tag=KEY=VALUE``, tags in the JSON twins
(equal to the CLI's ``--json``), the explorer's run and product pages, and OpenLineage
tags facets posted to ``/api/v1/lineage``; on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import html
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import DptServer, run_event

import dpt_core


@pytest.fixture
def tagged(dpt_backend: str, dpt_server: DptServer, tmp_path: Path) -> dict[str, Any]:
    """Four runs (three TESS sectors, one Kepler), each writing a tagged file."""
    made: dict[str, Any] = {}
    for job, survey, sector in (
        ("s40", "tess", 40),
        ("s41", "tess", 41),
        ("s42", "tess", 42),
        ("k1", "kepler", 1),
    ):
        out = tmp_path / f"{job}.fits"
        with dpt_core.invocation(job, tags={"survey": survey, "sector": sector}) as inv:
            out.write_text(job)
            inv.write(out, tags={"quality": "<b>good</b>" if job == "s42" else "ok"})
        made[job] = (inv.uuid, out)
    dpt_core.runs()  # (reads through dpt: what this process recorded is in the database)
    return made


def test_runs_filter_on_tags_like_the_cli(dpt_server: DptServer, tagged: dict[str, Any]) -> None:
    response = dpt_server.get("/api/runs", tag="survey=tess")
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(r["job"] for r in body) == ["s40", "s41", "s42"]
    assert body == dpt_server.cli_json("runs", "--tag", "survey=tess")
    with dpt_server.client() as client:
        both = client.get("/api/runs?tag=survey=tess&tag=sector=42").json()
    assert [(r["job"], r["tags"]) for r in both] == [("s42", {"sector": "42", "survey": "tess"})]
    assert dpt_server.get("/api/runs", tag="survey=TESS").json() == []


def test_pages_of_a_tag_filter_keep_it(dpt_server: DptServer, tagged: dict[str, Any]) -> None:
    everything = dpt_server.cli_json("runs", "--tag", "survey=tess")
    pages: list[list[dict[str, Any]]] = []
    link = "/api/runs?tag=survey%3Dtess&limit=2"
    with dpt_server.client() as client:
        while link:
            response = client.get(link)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            header = response.headers.get("link")
            link = header.split(";")[0].strip("<>") if header else ""
            if link:
                assert parse_qs(urlparse(link).query)["tag"] == ["survey=tess"]
    assert [len(p) for p in pages] == [2, 1]
    assert [r for page in pages for r in page] == everything


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tag=survey", "has no '='"),
        ("tag=bad%20key=1", "tag key 'bad key' is not valid"),
        ("tag=survey=tess&tag=survey=kepler", "twice"),
    ],
)
def test_a_bad_tag_filter_is_400_naming_it(
    dpt_server: DptServer, tagged: dict[str, Any], query: str, message: str
) -> None:
    with dpt_server.client() as client:
        response = client.get(f"/api/runs?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == "tag" and message in body["error"]


def test_a_filter_of_a_thousand_tags_is_answered_not_503(
    dpt_server: DptServer, tagged: dict[str, Any]
) -> None:
    # (one nested subquery per tag: SQLite refused the statement, PostgreSQL ran out of
    # its statement timeout, and the server answered 503 as if the database were away)
    query = "&".join(["tag=survey=tess", *(f"tag=k{i}=v" for i in range(999))])
    with dpt_server.client() as client:
        response = client.get(f"/api/runs?{query}")
        assert response.status_code == 200, response.text
        assert response.json() == []
        page = client.get(f"/runs?{query}")
        assert page.status_code == 200, page.text


def test_the_json_twins_carry_tags(dpt_server: DptServer, tagged: dict[str, Any]) -> None:
    run_uuid, path = tagged["s42"]
    run = dpt_server.get(f"/api/runs/{run_uuid}").json()
    assert run["tags"] == {"sector": "42", "survey": "tess"}
    assert run == dpt_server.cli_json("show", run_uuid)
    product = dpt_server.get("/api/products", uri=str(path)).json()
    assert product["versions"][0]["tags"] == {"quality": "<b>good</b>"}
    assert product["versions"][0]["produced_by"]["tags"] == run["tags"]
    assert product == dpt_server.cli_json("show", str(path))


def test_the_explorer_shows_tags_escaped(dpt_server: DptServer, tagged: dict[str, Any]) -> None:
    run_uuid, path = tagged["s42"]
    run_id = dpt_server.get(f"/api/runs/{run_uuid}").json()["id"]
    page = dpt_server.get(f"/runs/{run_id}")
    assert page.status_code == 200, page.text
    assert 'data-tag="survey">survey=tess</code>' in page.text
    assert 'data-tag="sector">sector=42</code>' in page.text
    product = dpt_server.get("/products", uri=str(path))
    assert product.status_code == 200, product.text
    assert html.escape("quality=<b>good</b>", quote=False) in product.text
    assert "<b>good</b>" not in product.text  # a tag is text, never markup


def test_tags_posted_as_openlineage_facets_are_queryable(
    dpt_server: DptServer, tagged: dict[str, Any]
) -> None:
    event = run_event(str(uuid.uuid4()), job="spark-job", outputs=(("s3://bucket", "table"),))
    facet = {"_producer": "https://example.com/p", "_schemaURL": "https://example.com/tags"}
    event["run"]["facets"] = {
        "tags": {**facet, "tags": [{"key": "survey", "value": "tess", "source": "USER"}]}
    }
    event["outputs"][0]["facets"] = {
        "tags": {**facet, "tags": [{"key": "pii", "value": "false"}]},
        "version": {**facet, "datasetVersion": "v1"},
    }
    response = dpt_server.post("/api/v1/lineage", event)
    assert response.status_code in (200, 201), response.text
    runs = dpt_server.get("/api/runs", tag="survey=tess").json()
    assert "spark-job" in [r["job"] for r in runs]
    product = dpt_server.get("/api/products", uri="s3://bucket/table").json()
    assert product["versions"][0]["tags"] == {"pii": "false"}
