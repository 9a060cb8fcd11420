"""The explorer as a team runs it: on PostgreSQL, on a read-only server, behind a token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from dpt_core.testing import POSTGRES_URL, make_database, require_server

from .explorer_site import HANG, Serve, Site, isolated_environ, run_script

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def page_of(site: Site, path: str, **params: str) -> str:
    response = site.get(path, **params)
    assert response.status_code == 200, (path, response.text[:300])
    return response.text


def figure(page: str, name: str) -> int:
    match = re.search(rf'data-figure="{re.escape(name)}"[^>]*>(?:<a [^>]*>)?\s*(\d+)', page)
    assert match, name
    return int(match.group(1))


def test_pages_on_postgresql_agree_with_the_cli(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    require_server(POSTGRES_URL)
    database = make_database("postgresql", tmp_path, request)
    url = next(database)
    environ = isolated_environ(tmp_path / "dpt", url)
    server = Serve(environ, tmp_path / "server").start()
    try:
        work = tmp_path / "quickstart"
        run_script(environ, str(REPO / "examples" / "quickstart.py"), str(work))
        site = Site(server, environ, work, work)
        lightcurve = work / "lightcurve.csv"
        for direction in ("upstream", "downstream"):
            graph = site.cli_json("lineage", str(lightcurve), f"--{direction}")
            page = page_of(site, "/lineage", uri=str(lightcurve), direction=direction)
            assert figure(page, f"{direction}-nodes") == len(graph["nodes"])
            assert figure(page, f"{direction}-edges") == len(graph["edges"])
            assert "<svg" in page
        runs = site.cli_json("runs")
        page = page_of(site, "/runs")
        assert re.findall(r'<td class="nowrap"><a href="/runs/(\d+)">', page) == [
            str(r["id"]) for r in runs
        ]
        # tags set with `dpt tag`; the page's filter lists what `dpt runs --tag` lists
        assert len(runs) >= 2
        for run, tags in ((runs[0], ["stage=cal", "night=1"]), (runs[1], ["stage=cal"])):
            assert site.cli("tag", str(run["id"]), *tags).returncode == 0
        for tags, count in ((["stage=cal"], 2), (["night=1", "stage=cal"], 1), (["stage=x"], 0)):
            listed = site.cli_json("runs", *[o for t in tags for o in ("--tag", t)])
            response = site.get("/runs", tag=tags)
            assert response.status_code == 200, response.text[:300]
            ids = re.findall(r'<td class="nowrap"><a href="/runs/(\d+)">', response.text)
            assert ids == [str(r["id"]) for r in listed] and len(ids) == count, tags
        assert site.get("/runs", tag="stage").status_code == 400
        shown = site.cli_json("show", str(work / "calibrated.csv"))
        page = page_of(site, "/products", uri=str(work / "calibrated.csv"))
        assert figure(page, "versions") == len(shown["versions"]) == 1
        assert figure(page, "downstream") == 1
        (work / "flat.txt").write_text("1.07\n")
        stale = site.cli_json("stale")
        assert figure(page_of(site, "/stale"), "stale") == len(stale) == 2
        diff = site.cli_json("env", "diff", str(runs[0]["id"]), str(runs[-1]["id"]))
        page = page_of(site, "/env/diff", a=str(runs[0]["id"]), b=str(runs[-1]["id"]))
        assert ("the same environment" in page) == diff["same"]
    finally:
        server.stop()
        database.close()
    assert "Traceback" not in server.stderr


@pytest.mark.parametrize("mode", ["read-only", "token"])
def test_pages_are_reads_for_a_read_only_server_and_behind_a_token(
    survey_site: Any, tmp_path: Path, mode: str
) -> None:
    """Pages answer on a --read-only server and without a token; writes still do not."""
    if mode == "read-only":
        server = Serve(survey_site.environ, tmp_path / "server", args=("--read-only",))
    else:
        server = Serve(
            survey_site.environ, tmp_path / "server", extra={"DPT_SERVER_TOKEN": "s3cret-token-1"}
        )
    server.start()
    try:
        catalog = survey_site.survey / "catalog.json"
        for path, params in (
            ("/", {}),
            ("/runs", {"status": "failed"}),
            ("/products", {"uri": str(catalog)}),
            ("/lineage", {"uri": str(catalog)}),
            ("/stale", {}),
            ("/static/explorer.css", {}),
        ):
            response = httpx.get(server.url + path, params=params, timeout=HANG)
            assert response.status_code == 200, (mode, path, response.text[:200])
            head = httpx.head(server.url + path, params=params, timeout=HANG)
            assert head.status_code == 200 and head.content == b""
        refused = httpx.post(server.url + "/runs", content=b"{}", timeout=HANG)
        assert refused.status_code == (405 if mode == "read-only" else 401)
        ingest = httpx.post(server.url + "/api/v1/lineage", json={}, timeout=HANG)
        assert ingest.status_code == (405 if mode == "read-only" else 401)
        if mode == "read-only":
            page = httpx.get(server.url + "/", timeout=HANG).text
            assert "read-only server" in page
    finally:
        server.stop()
    assert "Traceback" not in server.stderr
