"""The JSON read API answers exactly what ``dpt ... --json`` prints, over the same database.

A real pipeline (``dpt run`` commands and a Python script using ``dpt_core``, each its
own process) fills a fresh SQLite or PostgreSQL database; a real ``dpt serve`` serves
it; every endpoint's body is compared with the CLI's JSON, run as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import DptServer, dpt_cli, isolated_environ, subprocess_env

from dpt_core.testing import POSTGRES_URL, make_database, require_server

PIPELINE = textwrap.dedent(
    """
    import sys
    import dpt_core

    work = sys.argv[1]
    previous = f"{work}/cal.txt"
    for step in range(1, 6):
        out = f"{work}/step{step}.txt"
        with dpt_core.invocation("calibrate", task=f"step{step}", parameters={"gain": step}) as inv:
            inv.read(previous)
            with open(previous) as src, open(out, "w") as dst:
                dst.write(src.read() + str(step))
            inv.write(out)
        previous = out
    """
)


class Pipeline:
    def __init__(self, server: DptServer, work: Path) -> None:
        self.server = server
        self.work = work

    def path(self, name: str) -> str:
        return str(self.work / name)

    def uri(self, name: str) -> str:
        return f"file://{self.work / name}"


def run_pipeline(environ: dict[str, str], work: Path) -> None:
    """Real runs into the database: dpt run commands, a failed one, a Python pipeline,
    then an input changed on disk (so something is stale)."""
    work.mkdir()
    (work / "raw.txt").write_text("raw\n")
    (work / "flat.txt").write_text("flat\n")

    def ok(*args: str, extra: dict[str, str] | None = None) -> None:
        result = dpt_cli(environ, *args, cwd=work, extra=extra)
        assert result.returncode == 0, (args, result.stderr)

    ok("run", "-i", "raw.txt", "-i", "flat.txt", "-o", "cal.txt", "--",
       "sh", "-c", "cat raw.txt flat.txt > cal.txt")  # fmt: skip
    ok("run", "-i", "cal.txt", "-o", "lc.txt", "--", "cp", "cal.txt", "lc.txt",
       extra={"PIPELINE_STAGE": "lightcurve"})  # fmt: skip
    failed = dpt_cli(environ, "run", "--name", "broken", "--", "false", cwd=work)
    assert failed.returncode == 1, failed.stderr
    script = work / "pipeline.py"
    script.write_text(PIPELINE)
    result = subprocess.run(
        [sys.executable, str(script), str(work)], capture_output=True, text=True,
        env=subprocess_env(environ), cwd=work, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ok("run", "-i", "step5.txt", "-o", "final.txt", "--", "cp", "step5.txt", "final.txt")
    (work / "raw.txt").write_text("raw, recalibrated\n")  # cal.txt and everything after are stale


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    directory = tmp_path_factory.mktemp(f"served-{request.param}")
    if request.param == "postgresql":
        require_server(POSTGRES_URL)
    database = make_database(request.param, directory)
    url = next(database)
    environ = isolated_environ(directory / "dpt", url)
    run_pipeline(environ, directory / "work")
    server = DptServer(environ, directory)
    server.start()
    try:
        yield Pipeline(server, directory / "work")
    finally:
        server.close()
        database.close()


def api(served: Pipeline, path: str, **params: Any) -> Any:
    response = served.server.get(path, **params)
    assert response.status_code == 200, (path, params, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    return response.json()


def cli(served: Pipeline, *args: str) -> Any:
    return served.server.cli_json(*args)


# =========================================================================== equal to the CLI


def test_stats(served: Pipeline) -> None:
    body = api(served, "/api/stats")
    assert body == cli(served, "stats")
    assert body["invocations"] == 9 and body["edges"] >= 7


def test_runs(served: Pipeline) -> None:
    body = api(served, "/api/runs")
    assert body == cli(served, "runs")
    assert len(body) == 9
    assert {r["status"] for r in body} == {"success", "failed"}


@pytest.mark.parametrize(
    ("params", "args"),
    [
        ({"status": "failed"}, ("--status", "failed")),
        ({"job": "calibrate"}, ("--job", "calibrate")),
        ({"orchestrator": "cli"}, ("--orchestrator", "cli")),
        ({"limit": "3"}, ("--limit", "3")),
        ({"orchestrator": "python", "job": "calibrate", "limit": "2"},
         ("--orchestrator", "python", "--job", "calibrate", "--limit", "2")),
    ],
)  # fmt: skip
def test_runs_filtered(served: Pipeline, params: dict[str, str], args: tuple[str, ...]) -> None:
    body = api(served, "/api/runs", **params)
    assert body == cli(served, "runs", *args)
    assert body, "each filter matches something"


def test_runs_pages_follow_the_link_header_to_the_cli_listing(served: Pipeline) -> None:
    everything = cli(served, "runs", "--limit", "1000")
    pages: list[list[dict[str, Any]]] = []
    link = "/api/runs?limit=2"
    with served.server.client() as client:
        while link:
            response = client.get(link)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            header = response.headers.get("link")
            link = header.split(";")[0].strip("<>") if header else ""
            if link:
                assert 'rel="next"' in header
                assert parse_qs(urlparse(link).query)["limit"] == ["2"]
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert [run for page in pages for run in page] == everything
    # filters ride along on the cursor
    calibrate = cli(served, "runs", "--job", "calibrate")
    first = served.server.get("/api/runs", job="calibrate", limit=3)
    following = first.headers["link"].split(";")[0].strip("<>")
    assert "job=calibrate" in following
    with served.server.client() as client:
        second = client.get(following).json()
    assert first.json() + second == calibrate


def test_run_by_id_and_uuid(served: Pipeline) -> None:
    for run in cli(served, "runs", "--limit", "1000"):
        expected = cli(served, "show", str(run["id"]))
        assert api(served, f"/api/runs/{run['id']}") == expected
        assert api(served, f"/api/runs/{run['uuid']}") == expected
        assert api(served, f"/api/runs/{run['uuid'][:8]}") == expected


def test_run_environment(served: Pipeline) -> None:
    run = cli(served, "runs", "--job", "cp", "--limit", "1")[0]
    body = api(served, f"/api/runs/{run['id']}/env")
    assert body == cli(served, "env", "show", str(run["id"]))
    assert body["environment"]["packages"]


@pytest.mark.parametrize("name", ["cal.txt", "raw.txt", "step3.txt", "final.txt"])
def test_products(served: Pipeline, name: str) -> None:
    expected = cli(served, "show", served.path(name))
    assert api(served, "/api/products", uri=served.path(name)) == expected
    assert api(served, "/api/products", uri=served.uri(name)) == expected
    assert expected["versions"]


@pytest.mark.parametrize(
    ("name", "params", "args"),
    [
        ("final.txt", {}, ()),
        ("final.txt", {"direction": "upstream", "depth": "2"}, ("--upstream", "--depth", "2")),
        ("raw.txt", {"direction": "downstream"}, ("--downstream",)),
        ("raw.txt", {"direction": "downstream", "depth": "0"}, ("--downstream", "--depth", "0")),
        ("raw.txt", {"direction": "downstream", "all_versions": "true"},
         ("--downstream", "--all-versions")),
        ("step2.txt", {"direction": "downstream"}, ("--downstream",)),
    ],
)  # fmt: skip
def test_lineage(
    served: Pipeline, name: str, params: dict[str, str], args: tuple[str, ...]
) -> None:
    body = api(served, "/api/lineage", uri=served.path(name), **params)
    assert body == cli(served, "lineage", served.path(name), *args)
    assert body["nodes"]


def test_lineage_of_a_version(served: Pipeline) -> None:
    version = cli(served, "show", served.path("cal.txt"))["versions"][0]["version"]
    body = api(served, "/api/lineage", uri=served.path("cal.txt"), version=version[:8])
    assert body == cli(served, "lineage", served.path("cal.txt"), "--version", version[:8])
    assert [n["version"] for n in body["nodes"] if n["depth"] == 0] == [version]


def test_a_depth_past_the_databases_integers_is_the_whole_closure(served: Pipeline) -> None:
    whole = api(served, "/api/lineage", uri=served.path("final.txt"))
    deep = api(served, "/api/lineage", uri=served.path("final.txt"), depth="9" * 20)
    assert deep["nodes"] == whole["nodes"] and deep["edges"] == whole["edges"]
    assert deep == cli(served, "lineage", served.path("final.txt"), "--depth", "9" * 20)


def test_lineage_reaches_the_whole_chain(served: Pipeline) -> None:
    body = api(served, "/api/lineage", uri=served.uri("final.txt"))
    uris = {n["uri"] for n in body["nodes"]}
    expected = {"final.txt", "step5.txt", "step1.txt", "cal.txt", "raw.txt", "flat.txt"}
    assert {served.uri(n) for n in expected} <= uris


def test_stale(served: Pipeline) -> None:
    body = api(served, "/api/stale")
    assert body == cli(served, "stale")
    stale = {item["uri"] for item in body}
    assert served.uri("cal.txt") in stale and served.uri("final.txt") in stale
    targeted = api(
        served, "/api/stale?uri=" + served.path("lc.txt") + "&uri=" + served.path("step1.txt")
    )
    assert targeted == cli(served, "stale", served.path("lc.txt"), served.path("step1.txt"))
    assert {item["uri"] for item in targeted} == {served.uri("lc.txt"), served.uri("step1.txt")}


def test_impact_of_a_product(served: Pipeline) -> None:
    body = api(served, "/api/impact", product=served.path("cal.txt"))
    assert body == cli(served, "impact", "--product", served.path("cal.txt"))
    assert served.uri("final.txt") in {item["uri"] for item in body}


@pytest.mark.parametrize("package", ["sqlalchemy", "click", "no-such-package==1.0"])
def test_impact_of_a_package(served: Pipeline, package: str) -> None:
    body = api(served, "/api/impact", package=package)
    assert body == cli(served, "impact", "--package", package)
    assert bool(body) == (package != "no-such-package==1.0")


def test_env_diff(served: Pipeline) -> None:
    runs = cli(served, "runs", "--orchestrator", "cli", "--limit", "1000")
    first, last = runs[-1], runs[0]
    body = api(served, "/api/env/diff", a=str(first["id"]), b=last["uuid"])
    assert body == cli(served, "env", "diff", str(first["id"]), last["uuid"])
    lightcurve = next(r for r in runs if r["command"] == "cp cal.txt lc.txt")
    diff = api(served, "/api/env/diff", a=str(first["id"]), b=str(lightcurve["id"]))
    assert diff == cli(served, "env", "diff", str(first["id"]), str(lightcurve["id"]))
    assert diff["variables"]["added"] == {"PIPELINE_STAGE": "lightcurve"}


def test_health(served: Pipeline) -> None:
    body = api(served, "/api/health")
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True
    assert body["read_only"] is False and body["spool"]["events"] == 0
    assert "password" not in body["database"]["url"]


# =========================================================================== bad requests


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/runs?limit=0", "limit"),
        ("/api/runs?limit=ten", "limit"),
        ("/api/runs?limit=100001", "limit"),
        ("/api/runs?status=exploded", "status"),
        ("/api/runs?cursor=not-a-cursor", "cursor"),
        ("/api/runs?orchestrater=cli", "orchestrater"),
        ("/api/runs?job=a&job=b", "job"),
        ("/api/runs?job=", "job"),
        ("/api/products", "uri"),
        ("/api/products?uri=relative/cal.txt", "uri"),
        ("/api/products?uri=file://host/a?b=c", "uri"),
        ("/api/lineage?uri=/x&direction=sideways", "direction"),
        ("/api/lineage?uri=/x&depth=-1", "depth"),
        ("/api/lineage?uri=/x&all_versions=maybe", "all_versions"),
        ("/api/lineage?uri=/x&version=abc&all_versions=1", "all_versions"),
        ("/api/lineage", "uri"),
        ("/api/stale?uri=raw.txt", "uri"),
        ("/api/impact", "package"),
        ("/api/impact?product=/a&package=b", "product"),
        ("/api/impact?package=numpy==", "package"),
        ("/api/impact?package=numpy&version=1", "version"),
        ("/api/env/diff?a=1", "b"),
        ("/api/stats?x=1", "x"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(served: Pipeline, path: str, parameter: str) -> None:
    response = served.server.get(path)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == parameter
    assert repr(parameter) in body["error"] or parameter in body["error"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/999999",
        f"/api/runs/{uuid.uuid4()}",
        "/api/runs/999999/env",
        "/api/products?uri=/no/such/product.txt",
        "/api/lineage?uri=s3://bucket/unknown",
        "/api/impact?product=/no/such/product.txt",
        "/api/env/diff?a=1&b=999999",
        # past the databases' 64-bit integers (SQLite raised OverflowError: a 500)
        f"/api/runs/{'9' * 20}",
        f"/api/runs/{'9' * 20}/env",
        f"/api/env/diff?a=1&b={'9' * 20}",
        "/api/runs/%C2%B2",  # "²": a digit to str.isdigit(), not to int()
    ],
)
def test_an_unknown_run_or_product_is_404(served: Pipeline, path: str) -> None:
    response = served.server.get(path)
    assert response.status_code == 404, response.text
    assert set(response.json()) == {"error"}
    assert "Traceback" not in response.text
