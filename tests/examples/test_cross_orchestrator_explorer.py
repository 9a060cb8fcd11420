"""The web explorer over what the real cross-orchestrator example recorded, in a real Chromium.

``examples/cross_orchestrator.py`` runs once (``conftest.py``): an Airflow task writes
``observations.csv``, a Dagster asset reads it and writes ``catalog.json``, dpt records
both into its default SQLite file. Then ``dpt serve --read-only --port 0`` serves that
database, and Chromium (Debian's, driven by Playwright) opens the runs, the lineage of the
file that crosses, the run pages of the Airflow task try and of the Dagster
materialisation, and the environment diff between them. What each page shows is compared
with ``dpt ... --json`` of the same database; every request the browser makes must stay on
the server's origin. Screenshots go to the test's temporary directory (``screenshots/``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.examples.example_run import DAG_ID, TASK_ID, ExampleRun
from tests.server.explorer.browser import (
    Watched,
    chromium_browser,
    figure,
    same_origin,
    shoot,
    watched,
)
from tests.server.explorer.explorer_site import Serve

pytestmark = pytest.mark.slow

ASSET = "catalog"


@dataclass
class Explorer:
    """``dpt serve --read-only`` over the example's database, and the runs ``dpt runs`` lists."""

    server: Serve
    example: ExampleRun
    runs: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def run(self, orchestrator: str, task: str | None) -> dict[str, Any]:
        (found,) = [r for r in self.runs if (r["orchestrator"], r["task"]) == (orchestrator, task)]
        return found

    def lineage(self, name: str, direction: str) -> dict[str, Any]:
        graph: dict[str, Any] = self.example.dpt(
            "lineage", str(self.example.file(name)), f"--{direction}", "--format", "json"
        )
        return graph

    def version(self, name: str) -> dict[str, Any]:
        """The one version ``dpt show WORKDIR/name --json`` lists."""
        (found,) = self.example.dpt("show", str(self.example.file(name)), "--json")["versions"]
        return dict(found)


@pytest.fixture(scope="module")
def explorer(example: ExampleRun) -> Iterator[Explorer]:
    # The example's own environment: dpt finds its default SQLite file in the same
    # data directory the example recorded into.
    server = Serve(example.env, example.workdir.parent / "serve", args=("--read-only",)).start()
    try:
        banner = (server.directory / "serve.out").read_text()
        assert f"sqlite:///{example.database}" in banner and "read-only" in banner, banner
        yield Explorer(server, example, example.dpt("runs", "--json"))
    finally:
        assert server.stop() == 0, server.stderr
    assert "Traceback" not in server.stderr, server.stderr


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Watched]:
    yield from watched(chromium, viewport={"width": 1280, "height": 800})


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    return directory


def job_task(run: dict[str, Any]) -> str:
    return f"{run['job']}/{run['task']}" if run["task"] else run["job"]


def clean(text: str) -> str:
    """Text as read, without the zero-width breaks of wrapped paths, spaces collapsed."""
    return " ".join(text.replace("\u200b", "").split())


def boxes(page: Any) -> dict[str, dict[str, Any]]:
    """The boxes of the lineage picture by URI: version key, label, second line, place."""
    found = {}
    for box in page.locator("svg.lineage a.node").all():
        uri = box.get_attribute("data-uri")
        assert uri not in found, f"{uri} drawn twice"
        found[uri] = {
            "key": box.get_attribute("data-key"),
            "status": box.get_attribute("data-status"),
            "root": "root" in (box.get_attribute("class") or "").split(),
            "label": box.locator(".label").text_content(),
            "sub": box.locator(".sub").text_content() or "",
            "title": box.locator("title").text_content() or "",
            "x": float(box.get_attribute("data-x") or "nan"),
            "y": float(box.get_attribute("data-y") or "nan"),
        }
    return found


def lines(page: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The edges of the lineage picture by (parent key, child key): title, ends of the path."""
    found = {}
    for path in page.locator("svg.lineage path.edge").all():
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get_attribute("d") or "")]
        key = (path.get_attribute("data-parent") or "", path.get_attribute("data-child") or "")
        found[key] = {
            "title": path.locator("title").text_content() or "",
            "start": tuple(numbers[:2]),
            "end": tuple(numbers[-2:]),
        }
    return found


def expected_boxes(*graphs: dict[str, Any]) -> dict[str, str]:
    """URI -> version of every node of ``dpt lineage --json`` graphs (joined at their root)."""
    found: dict[str, str] = {}
    for graph in graphs:
        for node in graph["nodes"]:
            assert found.setdefault(node["uri"], node["version"]) == node["version"]
    return found


def test_the_runs_page_lists_the_airflow_and_dagster_runs(
    explorer: Explorer, page: Any, shots: Path
) -> None:
    page.goto(explorer.url + "/")
    page.click("header nav >> text=Runs")
    rows = page.locator("table.runs tbody tr")
    shown = [
        (
            int(row.locator("td").nth(0).locator("a").inner_text()),
            row.locator("td").nth(0).locator("code").inner_text(),
            row.locator("td").nth(1).inner_text(),
            clean(row.locator("td").nth(2).inner_text()),
            row.locator("td").nth(3).inner_text(),
        )
        for row in rows.all()
    ]
    assert shown == [
        (r["id"], r["uuid"][:8], r["status"], job_task(r), r["orchestrator"]) for r in explorer.runs
    ]
    # the DAG run and its task try, the Dagster run and its materialisation: all succeeded
    assert sorted((o, s) for _, _, s, _, o in shown) == [
        ("airflow", "success"),
        ("airflow", "success"),
        ("dagster", "success"),
        ("dagster", "success"),
    ]
    assert f"{DAG_ID}/{TASK_ID}" in [j for _, _, _, j, _ in shown]
    assert f"{explorer.run('dagster', ASSET)['job']}/{ASSET}" in [j for _, _, _, j, _ in shown]
    shoot(page, shots, "runs", full=True)

    options = page.locator("form.filters select[name=orchestrator] option").all_inner_texts()
    assert options == ["any", "airflow", "dagster"]
    for orchestrator in ("dagster", "airflow"):
        page.select_option("form.filters select[name=orchestrator]", orchestrator)
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(rf"/runs\?.*orchestrator={orchestrator}"))
        listed = explorer.example.dpt("runs", "--orchestrator", orchestrator, "--json")
        ids = [int(t) for t in page.locator("table.runs td:first-child a").all_inner_texts()]
        assert ids == [r["id"] for r in listed] and len(ids) == 2
        assert set(page.locator("table.runs td:nth-child(4)").all_inner_texts()) == {orchestrator}
    shoot(page, shots, "runs-airflow")
    same_origin(page, explorer)
    assert page.errors == [] and page.dialogs == []


def test_the_lineage_of_the_file_that_crosses(explorer: Explorer, page: Any, shots: Path) -> None:
    example = explorer.example
    task, asset = explorer.run("airflow", TASK_ID), explorer.run("dagster", ASSET)
    up = explorer.lineage("observations.csv", "upstream")
    down = explorer.lineage("observations.csv", "downstream")

    page.goto(f"{explorer.url}/products?uri={example.file('observations.csv')}")
    page.click("#product-lineage")
    page.wait_for_selector("svg.lineage")
    assert (
        clean(page.locator("h1").inner_text()) == f"Lineage of {example.file('observations.csv')}"
    )
    assert figure(page, "upstream-nodes") == len(up["nodes"]) == 2
    assert figure(page, "downstream-nodes") == len(down["nodes"]) == 2
    assert figure(page, "nodes") == 3
    assert figure(page, "edges") == len(up["edges"]) + len(down["edges"]) == 2

    drawn = boxes(page)
    assert {uri: b["key"] for uri, b in drawn.items()} == expected_boxes(up, down)
    exposures, observations, catalog = (
        drawn[example.uri(n)] for n in ("exposures.csv", "observations.csv", "catalog.json")
    )
    assert [b["label"] for b in (exposures, observations, catalog)] == [
        "exposures.csv",
        "observations.csv",
        "catalog.json",
    ]
    assert [b["root"] for b in (exposures, observations, catalog)] == [False, True, False]
    assert exposures["x"] < observations["x"] < catalog["x"]  # parents left of children

    # Airflow made the file that crosses; Dagster's asset made what was derived from it.
    made = {n["uri"]: n for n in up["nodes"] + down["nodes"]}
    for name, box, run in (
        ("observations.csv", observations, task),
        ("catalog.json", catalog, asset),
    ):
        node = made[example.uri(name)]
        assert node["produced_by"] == run["uuid"]
        assert box["status"] == node["status"] == "success"
        assert f"made by run {run['uuid'][:8]} {job_task(run)} (success)" in box["title"]
        assert node["content_hash"] in box["title"]
        # the second line: short hash, what made it (the task or asset, not only the job), run
        assert box["sub"].startswith(node["content_hash"].split(":")[1][:8]), box["sub"]
        assert box["sub"].endswith(f" {run['uuid'][:6]}"), box["sub"]
        maker = box["sub"].split(" · ")[-1].rsplit(" ", 1)[0]
        assert run["task"].startswith(maker.rstrip("…")), box["sub"]
    assert f" {ASSET} " in catalog["sub"]
    assert exposures["status"] == "observed" and exposures["sub"].endswith("observed")
    assert "no producer recorded" in exposures["title"]

    # the edges: between those boxes, each labelled with the run that made the child
    edges = lines(page)
    assert set(edges) == {
        (e["parent_version"], e["child_version"]) for e in up["edges"] + down["edges"]
    }
    width = float(page.locator(".graph-wrap").get_attribute("data-box-width") or "nan")
    height = float(page.locator(".graph-wrap").get_attribute("data-box-height") or "nan")
    for edge in up["edges"] + down["edges"]:
        line = edges[(edge["parent_version"], edge["child_version"])]
        parent, child = drawn[edge["parent"]], drawn[edge["child"]]
        assert line["start"] == pytest.approx((parent["x"] + width, parent["y"] + height / 2))
        assert line["end"] == pytest.approx((child["x"], child["y"] + height / 2))
        run = task if edge["invocation"] == task["uuid"] else asset
        assert edge["invocation"] == run["uuid"]
        assert f"made by run {run['uuid'][:8]} {job_task(run)}" in line["title"], line
    shoot(page, shots, "lineage-observations", full=True)

    # click the Dagster asset's product: the graph is centred on it
    page.locator("svg.lineage a.node", has_text="catalog.json").click()
    page.wait_for_url(re.compile(r"/lineage\?uri=.*catalog\.json.*version="))
    assert clean(page.locator("h1").inner_text()) == f"Lineage of {example.file('catalog.json')}"
    catalog_up = explorer.lineage("catalog.json", "upstream")
    assert figure(page, "upstream-nodes") == len(catalog_up["nodes"]) == 3
    assert figure(page, "downstream-nodes") == 1
    drawn = boxes(page)
    assert {uri: b["key"] for uri, b in drawn.items()} == expected_boxes(catalog_up)
    assert [uri for uri, b in drawn.items() if b["root"]] == [example.uri("catalog.json")]
    shoot(page, shots, "lineage-catalog", full=True)

    # and on the file nobody made: everything downstream of it, across both orchestrators
    page.locator("svg.lineage a.node", has_text="exposures.csv").click()
    page.wait_for_url(re.compile(r"/lineage\?uri=.*exposures\.csv.*version="))
    exposures_down = explorer.lineage("exposures.csv", "downstream")
    assert figure(page, "downstream-nodes") == len(exposures_down["nodes"]) == 3
    assert [uri for uri, b in boxes(page).items() if b["root"]] == [example.uri("exposures.csv")]
    same_origin(page, explorer)
    assert page.errors == [] and page.dialogs == []


def inputs_outputs(page: Any, section: str) -> list[tuple[str, str, str, str]]:
    """Rows of the run page's inputs or outputs: path, version, hash, last cell."""
    return [
        (
            clean(row.locator("td").nth(0).inner_text()),
            row.locator("td").nth(1).inner_text(),
            row.locator("td").nth(2).inner_text(),
            clean(row.locator("td").nth(4).inner_text()),
        )
        for row in page.locator(f"h2#{section} + .table-wrap tbody tr").all()
    ]


def facts(page: Any) -> dict[str, str]:
    names = page.locator("dl.facts dt").all_inner_texts()
    values = page.locator("dl.facts dd").all_inner_texts()
    return {n: clean(v) for n, v in zip(names, values, strict=True)}


def test_the_run_pages_of_the_airflow_try_and_the_dagster_materialisation(
    explorer: Explorer, page: Any, shots: Path
) -> None:
    example = explorer.example
    task, asset = explorer.run("airflow", TASK_ID), explorer.run("dagster", ASSET)
    dag_run, dagster_run = explorer.run("airflow", None), explorer.run("dagster", None)
    exposures, observations, catalog = (
        explorer.version(n) for n in ("exposures.csv", "observations.csv", "catalog.json")
    )

    # the Airflow task try, from the runs page
    page.goto(explorer.url + "/runs")
    page.click(f'table.runs a[href="/runs/{task["id"]}"]')
    assert clean(page.locator("h1").inner_text()) == f"Run {task['id']} {DAG_ID}/{TASK_ID} success"
    shown = facts(page)
    assert (shown["UUID"], shown["Orchestrator"], shown["Job"], shown["Task"]) == (
        task["uuid"],
        "airflow",
        DAG_ID,
        TASK_ID,
    )
    assert shown["Parent run"] == f"{dag_run['id']} {DAG_ID} success"
    assert page.locator("#inputs .count").inner_text() == "1"
    assert page.locator("#outputs .count").inner_text() == "1"
    assert inputs_outputs(page, "inputs") == [
        (
            str(example.file("exposures.csv")),
            exposures["version"][:8],
            exposures["content_hash"].split(":")[1][:12],
            "observed",
        )
    ]
    (written,) = inputs_outputs(page, "outputs")
    assert written[:3] == (
        str(example.file("observations.csv")),
        observations["version"][:8],
        observations["content_hash"].split(":")[1][:12],
    )
    assert observations["produced_by"]["uuid"] == task["uuid"]
    shoot(page, shots, "run-airflow-task", full=True)

    # the Dagster materialisation: its input is the very version the Airflow try wrote
    page.goto(f"{explorer.url}/runs/{asset['uuid']}")
    assert clean(page.locator("h1").inner_text()) == (
        f"Run {asset['id']} {asset['job']}/{ASSET} success"
    )
    shown = facts(page)
    assert (shown["UUID"], shown["Orchestrator"], shown["Task"], shown["Code version"]) == (
        asset["uuid"],
        "dagster",
        ASSET,
        asset["code_version"],
    )
    assert shown["Parent run"] == f"{dagster_run['id']} {dagster_run['job']} success"
    assert inputs_outputs(page, "inputs") == [
        (
            str(example.file("observations.csv")),
            observations["version"][:8],
            observations["content_hash"].split(":")[1][:12],
            f"run {task['id']} {DAG_ID}/{TASK_ID} success",
        )
    ]
    (written,) = inputs_outputs(page, "outputs")
    assert written[:3] == (
        str(example.file("catalog.json")),
        catalog["version"][:8],
        catalog["content_hash"].split(":")[1][:12],
    )
    assert catalog["produced_by"]["uuid"] == asset["uuid"]
    shoot(page, shots, "run-dagster-materialisation", full=True)

    # its input's producer links across orchestrators, to the Airflow try
    page.click(f'h2#inputs + .table-wrap a[href="/runs/{task["id"]}"]')
    page.wait_for_url(re.compile(rf"/runs/{task['id']}$"))
    assert facts(page)["Orchestrator"] == "airflow"

    # the Dagster run: recorded by the sensor on behalf of the run's process, no environment
    page.goto(f"{explorer.url}/runs/{dagster_run['id']}")
    assert "not recorded" in facts(page)["Environment"]
    children = page.locator("#children + .table-wrap table.runs td:first-child a")
    assert children.all_inner_texts() == [str(asset["id"])]
    same_origin(page, explorer)
    assert page.errors == [] and page.dialogs == []


def test_the_environment_diff_between_the_airflow_try_and_the_dagster_run(
    explorer: Explorer, page: Any, shots: Path
) -> None:
    example = explorer.example
    task, asset = explorer.run("airflow", TASK_ID), explorer.run("dagster", ASSET)
    diff = example.dpt("env", "diff", str(task["id"]), asset["uuid"], "--json")

    page.goto(f"{explorer.url}/runs/{task['id']}")
    page.fill("form.inline-form input[name=b]", asset["uuid"])
    page.click("form.inline-form button[type=submit]")
    page.wait_for_url(re.compile(r"/env/diff\?"))
    # One process ran both (the example): one environment, so one fingerprint.
    assert diff["same"] is True
    assert diff["a"]["fingerprint"] == diff["b"]["fingerprint"]
    summary = page.locator("#summary")
    assert summary.locator('[data-figure="same"]').inner_text() == "the same environment"
    assert summary.locator("code").inner_text() == diff["a"]["fingerprint"][:12]
    assert summary.locator("a").all_inner_texts() == [
        f"run {diff['a']['run']}",
        f"run {diff['b']['run']}",
    ]
    assert (diff["a"]["run"], diff["b"]["run"]) == (task["id"], asset["id"])
    assert page.locator("table.diff").count() == 0
    shoot(page, shots, "env-diff-airflow-dagster")

    # the Dagster run itself has no environment: the page says so as the CLI does
    dagster_run = explorer.run("dagster", None)
    refused = example.cli_error("env", "diff", str(task["id"]), str(dagster_run["id"]))
    response = page.goto(f"{explorer.url}/env/diff?a={task['id']}&b={dagster_run['id']}")
    assert response is not None and response.status == 404
    assert page.locator(".error-message").inner_text() == refused.removeprefix("Error: ")
    assert "has no recorded environment" in refused
    shoot(page, shots, "env-diff-dagster-run")
    same_origin(page, explorer)
    # Chromium logs the page's own 404 status, and nothing else
    assert len(page.errors) == 1 and "status of 404" in page.errors[0], page.errors
    assert page.dialogs == []
