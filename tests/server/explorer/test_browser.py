"""The explorer in a real Chromium (Debian's, driven by Playwright) against a real ``dpt serve``.

The database was filled by real pipelines (``conftest.py``): the quickstart, and a survey
pipeline recorded by ``dpt run``, the Python API and OpenLineage events from the
openlineage-python client (as dbt-ol and Spark send them). The tests click through the
pages as a person would and compare what is shown with ``dpt ... --json``; every request
the browser makes is recorded, and must stay on the server's origin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from .browser import Watched, figure, same_origin, shoot
from .survey_pipeline import FAN_OUT, SECRETS, XSS_FILE, XSS_JOB, XSS_TAG

pytestmark = pytest.mark.slow


def every_page(site: Any) -> list[str]:
    catalog = site.survey / "catalog.json"
    runs = [r["id"] for r in site.cli_json("runs", "--limit", "1000")]
    earlier, later = site.run_id("catalog", 1), site.run_id("catalog")
    return [
        "/",
        "/runs",
        "/runs?status=failed",
        "/runs?tag=survey%3Dtess&tag=release%3Ddr1",
        *[f"/runs/{i}" for i in runs],
        f"/runs/{later}/environment",
        "/products",
        f"/products?uri={catalog}",
        f"/products?uri={site.survey / XSS_FILE}",
        f"/lineage?uri={catalog}",
        f"/lineage?uri={catalog}&view=table",
        f"/lineage?uri={site.survey / XSS_FILE}",
        f"/lineage?run={site.run_id(XSS_JOB)}",
        f"/lineage?uri={site.quickstart / 'lightcurve.csv'}",
        f"/env/diff?a={earlier}&b={later}",
        "/impact?package=click",
        "/stale",
        "/search?q=cutout-01",
        "/search?q=onerror",
    ]


def test_click_through_product_lineage_run_and_environment_diff(
    survey_site: Any, page: Any, shots: Path, publish: Any
) -> None:
    site = survey_site
    catalog = site.survey / "catalog.json"
    page.goto(site.url + "/")
    assert page.locator('[data-stat="invocations"]').inner_text() == str(
        site.cli_json("stats")["invocations"]
    )
    # the search box in the header: a product
    page.fill("header input[name=q]", "catalog.json")
    page.press("header input[name=q]", "Enter")
    page.click(f'#product-results a.uri[href*="{catalog.name}"]')

    # the product: its versions, where it is now, what depends on it
    shown = site.cli_json("show", str(catalog))
    assert page.locator("h1").inner_text().replace("\u200b", "") == str(catalog)
    assert figure(page, "versions") == len(shown["versions"]) == 2
    assert figure(page, "downstream") == len(site.cli_json("impact", "--product", str(catalog)))
    newest = shown["versions"][0]["version"]
    assert page.locator("#versions tr.on-disk code").first.inner_text() == newest[:8]
    shoot(page, shots, "product")

    # its lineage: both ways, the fan-out of 486 cutouts folded into one box
    page.click("#product-lineage")
    page.wait_for_selector("svg.lineage")
    up = site.cli_json("lineage", str(catalog), "--upstream")
    down = site.cli_json("lineage", str(catalog), "--downstream")
    assert figure(page, "upstream-nodes") == len(up["nodes"])
    assert figure(page, "downstream-nodes") == len(down["nodes"])
    assert figure(page, "nodes") == len(up["nodes"]) + len(down["nodes"]) - 1
    labels = page.locator("svg.lineage a.node .label").all_text_contents()
    cutouts = site.cli_json("runs", "--job", "cutouts")[0]
    for label in (
        "exposures.csv",
        "observations.csv",
        "catalog.json",
        "summary.txt",
        "report.html",
        "public.sources",
        "release=dr1",
        XSS_FILE,
        f"{FAN_OUT - 6} more outputs of run {cutouts['uuid'][:8]}",
    ):
        assert label in labels, (label, labels)
    assert len(labels) < 20
    node = page.locator("svg.lineage a.node")
    assert node.filter(has_text="report.html").get_attribute("data-status") == "failed"
    assert node.filter(has_text="summary.txt").get_attribute("data-stale") == "true"
    assert "root" in (node.filter(has_text="catalog.json").get_attribute("class") or "")
    assert figure(page, "failed") == 2  # report.html and the "><script> job's file
    # hover: the URI, the short hash and the run that made it
    observations = node.filter(has_text="observations.csv")
    title = observations.locator("title").text_content() or ""
    ingest = site.cli_json("runs", "--job", "ingest")[0]
    obs = site.cli_json("show", str(site.survey / "observations.csv"))["versions"][0]
    assert str(site.survey / "observations.csv") in title
    assert obs["content_hash"] in title
    assert f"made by run {ingest['uuid'][:8]} ingest (success)" in title
    shot = shoot(page, shots, "lineage", full=True)
    publish(shot, "explorer-lineage.png")
    observations.hover()

    # click a box: the graph is centred on it
    observations.click()
    page.wait_for_url(re.compile(r"uri=.*observations\.csv.*version="))
    assert "observations.csv" in page.locator("h1").inner_text()
    root = page.locator("svg.lineage a.node.root")
    assert root.count() == 1 and "observations.csv" in (root.text_content() or "")

    # the table view lists the runs; open the one that made catalog.json
    page.click("nav.tabs >> text=Table")
    catalog_run = site.cli_json("runs", "--job", "catalog")[0]
    page.click(f'a[href="/runs/{catalog_run["uuid"]}"]')
    assert page.locator("h1").inner_text().startswith(f"Run {catalog_run['id']} catalog")
    assert page.locator("h1 .status").inner_text() == "success"
    assert page.locator("#inputs .count").inner_text() == "1"
    assert page.locator("#outputs .count").inner_text() == "1"
    nightly = site.cli_json("runs", "--job", "nightly")[0]
    assert page.locator(f'a[href="/runs/{nightly["id"]}"]').count() >= 1  # its parent
    shoot(page, shots, "run")

    # its environment against the previous run of the same job
    page.click("#diff-previous")
    earlier = site.run_id("catalog", 1)
    diff = site.cli_json("env", "diff", str(earlier), str(catalog_run["id"]))
    assert figure(page, "variables-changed") == len(diff["variables"]["changed"]) == 2
    assert figure(page, "packages-changed") == len(diff["packages"]["changed"])
    rows = page.locator("table#variables tr").all_inner_texts()
    assert any(re.match(r"SURVEY_RELEASE\s+dr2\s+dr1\s+changed", r) for r in rows), rows
    assert any(
        re.match(r"SURVEY_DB_PASSWORD\s+<redacted>\s+<redacted>\s+changed \(secret\)", r)
        for r in rows
    ), rows
    shoot(page, shots, "env-diff")
    same_origin(page, site)
    assert page.dialogs == [] and page.errors == []


def test_no_request_leaves_the_origin_and_nothing_breaks(
    survey_site: Any, page: Any, shots: Path
) -> None:
    for index, path in enumerate(every_page(survey_site)):
        response = page.goto(survey_site.url + path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        if index < 3 or "lineage" in path:
            shoot(page, shots, f"page-{index:02d}", full=True)
        text = page.content()
        for secret in SECRETS.values():
            assert secret not in text, path
    same_origin(page, survey_site)
    assert any(u.endswith(".css") or ".css?" in u for u in page.requests)
    assert any(".js?" in u for u in page.requests)
    assert page.errors == []  # no CSP violation, no script error, no missing file
    assert page.dialogs == []


def test_hostile_names_open_no_dialog_and_show_as_text(survey_site: Any, page: Any) -> None:
    site = survey_site
    xss = site.survey / XSS_FILE
    for path in (
        "/runs",
        f"/runs/{site.run_id(XSS_JOB)}",
        f"/products?uri={xss}",
        f"/lineage?uri={xss}",
        f"/lineage?uri={xss}&view=table",
        f"/lineage?run={site.run_id(XSS_JOB)}",
        "/search?q=onerror",
        f"/runs?job={XSS_JOB}",
        "/runs?" + urlencode({"tag": f"ticket={XSS_TAG}"}),
    ):
        page.goto(site.url + path)
        page.wait_for_load_state("load")
        for box in page.locator("svg.lineage a.node").all():
            box.hover()
    assert page.dialogs == []  # no name ran as code (the CSP would stop most; not all)
    page.goto(f"{site.url}/lineage?uri={xss}")
    box = page.locator("svg.lineage a.node.root")
    assert box.locator(".label").text_content() == XSS_FILE
    assert XSS_FILE in (box.locator("title").text_content() or "")
    assert box.get_attribute("data-uri") == site.cli_json("show", str(xss))["uri"]
    assert XSS_JOB[:10] in (box.locator(".sub").text_content() or "")
    page.goto(f"{site.url}/runs/{site.run_id(XSS_JOB)}")
    assert page.locator("dl.facts dd").nth(1).inner_text() == XSS_JOB
    assert page.evaluate("document.querySelectorAll('script:not([src]), img').length") == 0
    assert page.dialogs == []
    assert page.errors == []
    same_origin(page, site)


def test_everything_works_without_javascript(survey_site: Any, nojs_page: Any, shots: Path) -> None:
    site, page = survey_site, nojs_page
    page.goto(site.url + "/")
    page.click("header nav >> text=Runs")
    page.select_option("form.filters select[name=status]", "failed")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"/runs\?.*status=failed"))
    failed = [r["id"] for r in site.cli_json("runs", "--status", "failed")]
    shown = [int(t) for t in page.locator("table.runs td:first-child a").all_inner_texts()]
    assert shown == failed
    report = site.run_id("report")
    page.click(f'table.runs a[href="/runs/{report}"]')
    assert (
        "RuntimeError: photometry zero point missing"
        in page.locator(".error-box summary").inner_text()
    )
    page.click("#run-lineage")
    assert page.locator("svg.lineage").is_visible()
    assert page.locator(".graph-controls").count() == 0  # the script did not run
    assert page.locator("svg.lineage").get_attribute("width") is not None
    shoot(page, shots, "lineage-no-js", full=True)
    page.locator("svg.lineage a.node", has_text="catalog.json").first.click()
    page.wait_for_url(re.compile(r"/lineage\?uri=.*catalog\.json"))
    assert "catalog.json" in page.locator("h1").inner_text()
    page.select_option("select[name=depth]", "1")
    page.select_option("select[name=direction]", "upstream")
    page.click("form.lineage-form button[type=submit]")
    page.wait_for_url(re.compile(r"direction=upstream.*depth=1|depth=1.*direction=upstream"))
    graph = site.cli_json(
        "lineage", str(site.survey / "catalog.json"), "--upstream", "--depth", "1"
    )
    assert figure(page, "upstream-nodes") == len(graph["nodes"])
    page.fill("header input[name=q]", "lightcurve")
    page.press("header input[name=q]", "Enter")
    assert "lightcurve.csv" in page.locator("#product-results").inner_text()
    same_origin(page, site)
    assert page.dialogs == []


def shown_runs(page: Any) -> list[int]:
    return [int(t) for t in page.locator("table.runs td:first-child a").all_inner_texts()]


def tagged(site: Any, *tags: str) -> list[int]:
    """The runs ``dpt runs --tag T ...`` lists (what was recorded with those tags)."""
    options = [option for tag in tags for option in ("--tag", tag)]
    return [r["id"] for r in site.cli_json("runs", "--limit", "1000", *options)]


def url_tags(page: Any) -> list[str]:
    return [t for t in parse_qs(urlsplit(page.url).query).get("tag", []) if t]


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_filter_runs_by_tags(
    survey_site: Any, chromium: Any, shots: Path, javascript: bool
) -> None:
    """Click a run's tag, type another, reload, go back, remove one: the rows are always the
    runs ``dpt runs --tag`` lists for the tags in the URL; no match and a bad tag say so."""
    site = survey_site
    context = chromium.new_context(
        viewport={"width": 1280, "height": 800}, java_script_enabled=javascript
    )
    try:
        page = Watched(context)
        page.goto(site.url + "/runs")
        assert page.locator("#active-tags").count() == 0
        cutouts = site.run_id("cutouts")
        row = page.locator("table.runs tbody tr").filter(
            has=page.locator(f'td:first-child a[href="/runs/{cutouts}"]')
        )
        # a tag on a row: the runs carrying it
        row.locator('a.tag-chip[data-tag="survey"]').click()
        page.wait_for_url(re.compile(r"/runs\?tag=survey%3Dtess$"))
        assert shown_runs(page) == tagged(site, "survey=tess")
        assert len(shown_runs(page)) == 5
        assert page.locator("#active-tags .tag-chip").all_inner_texts() == ["survey=tess×"]
        # another, typed into the form: runs carrying both
        page.fill("#tag-input", "release=dr1")
        page.press("#tag-input", "Enter")
        page.wait_for_url(re.compile(r"tag=release%3Ddr1"))
        assert url_tags(page) == ["survey=tess", "release=dr1"]
        both = tagged(site, "survey=tess", "release=dr1")
        assert shown_runs(page) == both
        assert sorted(site.cli_json("show", str(i))["job"] for i in both) == ["catalog", "cutouts"]
        for run in both:  # every row shown carries both tags
            line = page.locator("table.runs tbody tr").filter(
                has=page.locator(f'td:first-child a[href="/runs/{run}"]')
            )
            texts = line.locator("a.tag-chip").all_inner_texts()
            assert "survey=tess" in texts and "release=dr1" in texts, texts
        shoot(page, shots, "runs-tagged", full=True)
        # the URL is the view: it survives a reload and opens the same in a new page
        linked = page.url
        page.reload()
        assert shown_runs(page) == both
        other = context.new_page()
        other.goto(linked)
        assert [
            int(t) for t in other.locator("table.runs td:first-child a").all_inner_texts()
        ] == both
        other.close()
        # a third, clicked on a row: only the cutouts run has it
        row.locator('a.tag-chip[data-tag="team/owner"]').click()
        page.wait_for_url(re.compile(r"tag=team%2Fowner%3Dphotometry"))
        assert url_tags(page) == ["survey=tess", "release=dr1", "team/owner=photometry & cutouts"]
        assert shown_runs(page) == [cutouts]
        # back: the two-tag view again
        page.go_back()
        page.wait_for_url(linked)
        assert shown_runs(page) == both
        # remove one: the runs carrying the other
        page.click('#active-tags .tag-chip[data-tag="survey"] a.remove')
        page.wait_for_url(re.compile(r"/runs\?tag=release%3Ddr1$"))
        assert shown_runs(page) == tagged(site, "release=dr1")
        # nothing matches
        page.fill("#tag-input", "survey=kepler")
        page.press("#tag-input", "Enter")
        page.wait_for_url(re.compile(r"tag=survey%3Dkepler"))
        assert tagged(site, "release=dr1", "survey=kepler") == []
        assert shown_runs(page) == []
        empty = page.locator("#no-runs").inner_text()
        assert "No runs match tag release=dr1 and tag survey=kepler" in empty, empty
        page.click("#clear-filters")
        page.wait_for_url(re.compile(r"/runs$"))
        assert shown_runs(page) == tagged(site)[:50]
        # a bad tag: the form again, the error naming it, nothing listed
        page.fill("#tag-input", "survey")
        with page.expect_navigation() as navigation:
            page.press("#tag-input", "Enter")
        assert navigation.value.status == 400
        assert "tag 'survey' has no '='" in page.locator("#filter-error").inner_text()
        assert page.locator("form.filters input[name=tag]").first.input_value() == "survey"
        assert shown_runs(page) == []
        shoot(page, shots, "runs-bad-tag")
        same_origin(page, site)
        assert page.dialogs == []
        assert [e for e in page.errors if "status of 400" not in e] == []
    finally:
        context.close()


def test_pan_and_zoom(survey_site: Any, page: Any) -> None:
    page.goto(f"{survey_site.url}/lineage?uri={survey_site.survey / 'catalog.json'}")
    svg = page.locator(".graph-wrap svg.lineage")
    page.wait_for_selector(".graph-controls")
    before = [float(v) for v in (svg.get_attribute("viewBox") or "").split()]
    page.click(".graph-controls button[aria-label='Zoom in']")
    zoomed = [float(v) for v in (svg.get_attribute("viewBox") or "").split()]
    assert zoomed[2] == pytest.approx(before[2] / 1.25, rel=0.01)
    wrap = page.locator(".graph-wrap").bounding_box()
    assert wrap is not None
    x, y = wrap["x"] + wrap["width"] / 2, wrap["y"] + 20
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 150, y + 40, steps=6)
    page.mouse.up()
    panned = [float(v) for v in (svg.get_attribute("viewBox") or "").split()]
    assert panned[0] > zoomed[0] and panned[1] < zoomed[1]
    assert "/lineage?uri=" in page.url and "version=" not in page.url  # a drag is not a click
    page.mouse.move(x, y + 100)
    page.mouse.wheel(0, 400)
    page.wait_for_function(
        "w => document.querySelector('.graph-wrap svg').getAttribute('viewBox').split(' ')[2] > w",
        arg=panned[2],
    )
    page.click(".graph-controls button[aria-label='Show the whole graph']")
    whole = [float(v) for v in (svg.get_attribute("viewBox") or "").split()]
    assert whole[2] >= float(page.locator(".graph-wrap").get_attribute("data-width") or 0)
    assert page.errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_themes_and_phone_width(
    survey_site: Any, chromium: Any, shots: Path, publish: Any, scheme: str
) -> None:
    site = survey_site
    backgrounds = set()
    for name, options in (
        ("desktop", {"viewport": {"width": 1280, "height": 800}}),
        (
            "phone",
            {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
        ),
    ):
        context = chromium.new_context(color_scheme=scheme, **options)
        try:
            page = context.new_page()
            for index, path in enumerate(every_page(site)[:3] + every_page(site)[-10:]):
                page.goto(site.url + path)
                width = options["viewport"]["width"]  # type: ignore[index]
                overflow = page.evaluate("document.documentElement.scrollWidth")
                assert overflow <= width, (path, overflow, width)  # no sideways scrolling
                backgrounds.add(page.evaluate("getComputedStyle(document.body).backgroundColor"))
                shot = shoot(page, shots, f"{scheme}-{name}-{index:02d}")
                if scheme == "dark" and name == "desktop" and path == "/runs":
                    publish(shot, "explorer-runs-dark.png")
        finally:
            context.close()
    assert backgrounds == {"rgb(255, 255, 255)"} if scheme == "light" else {"rgb(15, 20, 25)"}


def test_a_picture_wider_than_the_screen_opens_on_where_it_starts(
    survey_site: Any, phone_page: Any
) -> None:
    phone_page.goto(f"{survey_site.url}/lineage?uri={survey_site.survey / 'catalog.json'}")
    phone_page.wait_for_selector(".graph-controls")
    wrap = phone_page.locator(".graph-wrap").bounding_box()
    root = phone_page.locator("svg.lineage a.node.root rect").first.bounding_box()
    assert wrap is not None and root is not None
    centre = (root["x"] + root["width"] / 2, root["y"] + root["height"] / 2)
    assert wrap["x"] < centre[0] < wrap["x"] + wrap["width"], (wrap, root)
    assert wrap["y"] < centre[1] < wrap["y"] + wrap["height"], (wrap, root)
    assert root["width"] >= 0.5 * 232  # readable, not the whole picture squeezed in
    assert phone_page.errors == []
