"""The explorer's pages over HTTP from a real ``dpt serve``, next to ``dpt ... --json``.

The database was filled by real pipelines (see ``conftest.py`` and ``survey_pipeline.py``);
every number a page shows is compared with what the CLI's JSON says over the same database.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from markupsafe import escape

from .survey_pipeline import FAN_OUT, SECRETS, XSS_FILE, XSS_JOB, XSS_TAG, tagged_runs

pytestmark = pytest.mark.slow


def figure(page: str, name: str) -> int:
    """The number a page shows in its element ``data-figure="name"``."""
    match = re.search(rf'data-figure="{re.escape(name)}"[^>]*>(?:<a [^>]*>)?\s*(\d+)', page)
    assert match, f"no figure {name!r} on the page"
    return int(match.group(1))


def run_ids(page: str) -> list[int]:
    """Run numbers in the runs table, in order."""
    if '<table class="runs">' not in page:
        return []
    table = page.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    return [int(i) for i in re.findall(r'<td class="nowrap"><a href="/runs/(\d+)">', table)]


def ok(site: Any, path: str, **params: Any) -> str:
    response = site.get(path, **params)
    assert response.status_code == 200, (path, params, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def pages(site: Any) -> list[tuple[str, dict[str, Any]]]:
    catalog = str(site.survey / "catalog.json")
    xss = str(site.survey / XSS_FILE)
    everything = [r["id"] for r in site.cli_json("runs", "--limit", "1000")]
    environments = [
        site.run_id(job) for job in ("observe", "ingest", "nightly", XSS_JOB, "archive")
    ]
    return [
        ("/", {}),
        ("/runs", {}),
        ("/runs", {"status": "failed"}),
        ("/runs", {"tag": ["survey=tess", "release=dr1"]}),
        ("/runs", {"tag": f"ticket={XSS_TAG}"}),
        *[(f"/runs/{i}", {}) for i in everything],
        *[(f"/runs/{i}/environment", {}) for i in environments],
        ("/env/diff", {"a": str(site.run_id("catalog", 1)), "b": str(site.run_id("catalog"))}),
        ("/products", {}),
        ("/products", {"uri": catalog}),
        ("/products", {"uri": xss}),
        ("/lineage", {"uri": catalog}),
        ("/lineage", {"uri": catalog, "view": "table"}),
        ("/lineage", {"uri": xss}),
        ("/lineage", {"run": str(site.run_id(XSS_JOB))}),
        ("/lineage", {"run": str(site.run_id("cutouts")), "view": "table"}),
        ("/env/diff", {}),
        ("/impact", {"package": "click"}),
        ("/impact", {"product": catalog}),
        ("/stale", {}),
        ("/search", {"q": "script"}),
        ("/search", {"q": "onerror"}),
    ]


def test_every_page_answers_with_its_security_headers(survey_site: Any) -> None:
    for path, params in pages(survey_site):
        response = survey_site.get(path, **params)
        assert response.status_code == 200, (path, params, response.text[:300])
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        body = response.text
        # nothing from elsewhere, no inline script, no inline style, no event handlers of ours
        assert not re.search(r'(?:src|href|action)="(?:https?:)?//', body), path
        scripts = re.findall(r"<script\b[^>]*>", body)
        assert all(s == '<script src="/static/explorer.js?v=' + s.split("?v=")[1] for s in scripts)
        assert all("</script>" not in s for s in re.findall(r"<script\b[^>]*>[^<]+</script>", body))
        assert "style=" not in body


def test_hostile_names_are_text_everywhere(survey_site: Any) -> None:
    """A product named <img src=x onerror=...> and a job named "><script> stay text,
    in HTML, in SVG text and in attributes (the browser test checks no dialog opens)."""
    escaped_file = str(escape(XSS_FILE))
    escaped_job = str(escape(XSS_JOB))
    shown_file = shown_job = 0
    for path, params in pages(survey_site):
        body = ok(survey_site, path, **params)
        assert "<img src=x" not in body, path
        assert "<script>alert" not in body, path
        assert '"><script' not in body, path
        shown_file += body.count(escaped_file)
        shown_job += body.count(escaped_job)
    assert shown_file > 5 and shown_job > 3  # they are shown, as text
    uri = survey_site.cli_json("show", str(survey_site.survey / XSS_FILE))["uri"]
    graph = ok(survey_site, "/lineage", uri=uri)
    svg = graph.split("<svg", 1)[1].split("</svg>\n</div>", 1)[0]
    assert f'data-uri="{escape(uri)}"' in svg
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in svg  # the box's label, as text


def test_no_secret_reaches_a_page(survey_site: Any) -> None:
    for path, params in pages(survey_site):
        body = ok(survey_site, path, **params)
        for secret in SECRETS.values():
            assert secret not in body, (path, params)
    nightly_env = ok(survey_site, f"/runs/{survey_site.run_id('nightly')}/environment")
    row = re.search(r"<td>SURVEY_DB_PASSWORD</td><td[^>]*>(.*?)</td>", nightly_env)
    assert row and "&lt;redacted&gt;" in row.group(1)
    assert 'SURVEY_RELEASE</td><td class="wrap">dr1' in nightly_env
    earlier, later = survey_site.run_id("catalog", 1), survey_site.run_id("catalog")
    diff = ok(survey_site, "/env/diff", a=str(earlier), b=str(later))
    assert re.search(r"SURVEY_DB_PASSWORD</td>.*?changed \(secret\)", diff, re.S)
    archive = ok(survey_site, f"/runs/{survey_site.run_id('archive')}")
    assert "--password=&lt;redacted&gt;" in archive
    cutouts = ok(survey_site, f"/runs/{survey_site.run_id('cutouts')}")
    assert "&lt;redacted:hmac-sha256:" in cutouts  # a parameter named db_password


def test_runs_page_is_dpt_runs(survey_site: Any) -> None:
    everything = survey_site.cli_json("runs", "--limit", "1000")
    page = ok(survey_site, "/runs")
    assert run_ids(page) == [r["id"] for r in everything][:50]
    for option, value in (("status", "failed"), ("orchestrator", "cli"), ("job", "catalog")):
        expected = [r["id"] for r in survey_site.cli_json("runs", f"--{option}", value)]
        assert expected, option
        assert run_ids(ok(survey_site, "/runs", **{option: value})) == expected, option
    # failed runs show the first line of their error
    failed = ok(survey_site, "/runs", status="failed")
    assert "RuntimeError: photometry zero point missing for 3C 273</td>" in failed
    assert "see the calibration log" not in failed
    # paging: three at a time, newest first, no run twice, none lost
    seen: list[int] = []
    offset = 0
    while True:
        page = ok(survey_site, "/runs", limit="3", offset=str(offset))
        ids = run_ids(page)
        seen += ids
        if 'rel="next"' not in page:
            break
        offset += 3
    assert seen == [r["id"] for r in everything]
    # host and time filters
    host = everything[0]["host"]
    assert run_ids(ok(survey_site, "/runs", host=host)) == [r["id"] for r in everything][:50]
    assert run_ids(ok(survey_site, "/runs", host="no-such-host")) == []
    assert run_ids(ok(survey_site, "/runs", since="1d")) == [r["id"] for r in everything][:50]
    assert run_ids(ok(survey_site, "/runs", until="2000-01-01")) == []


def tag_options(tags: list[str]) -> list[str]:
    return [option for tag in tags for option in ("--tag", tag)]


@pytest.mark.parametrize(
    "tags",
    [
        ["survey=tess"],
        ["release=dr1"],
        ["survey=tess", "release=dr1"],
        ["release=dr1", "team/owner=photometry & cutouts", "survey=tess"],
        [" survey = tess", "release=dr2"],
        [f"ticket={XSS_TAG}"],
    ],
)
def test_runs_page_filters_on_tags_like_dpt_runs_tag(survey_site: Any, tags: list[str]) -> None:
    """``/runs?tag=K=V&tag=...`` lists the runs carrying all of them: those the pipeline
    tagged so, the runs ``dpt runs --tag`` and its JSON twin list, each row with its tags."""
    page = ok(survey_site, "/runs", tag=tags)
    listed = survey_site.cli_json("runs", "--limit", "1000", *tag_options(tags))
    wanted = dict(t.split("=", 1) for t in tags)
    wanted = {k.strip(): v.strip() for k, v in wanted.items()}
    recorded = sorted(job for job, carried in tagged_runs() if wanted.items() <= carried.items())
    assert recorded, tags
    assert sorted(r["job"] for r in listed) == recorded
    assert run_ids(page) == [r["id"] for r in listed]
    # the filter is shown as chips, each removable, and kept by the form's hidden fields
    active = page.split('id="active-tags"', 1)[1].split("</div>", 1)[0]
    for key, value in wanted.items():
        assert f'<input type="hidden" name="tag" value="{escape(f"{key}={value}")}">' in active
        assert f'data-tag="{escape(key)}">{escape(key)}={escape(value)}<a class="remove"' in active
    # each row shows its tags, each a link adding it to the filter
    table = page.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    rows = table.split("<tr class=")[1:]
    for run, row in zip(listed, rows, strict=True):
        assert f'href="/runs/{run["id"]}"' in row
        chips = re.findall(r'<a class="tag-chip[^"]*" href="([^"]+)" data-tag="([^"]+)"', row)
        assert sorted(html.unescape(k) for _, k in chips) == sorted(run["tags"]), row
        for href, key in chips:
            value = run["tags"][html.unescape(key)]
            linked = parse_qs(urlsplit(html.unescape(href)).query)["tag"]
            assert set(linked) == {f"{k}={v}" for k, v in wanted.items()} | {
                f"{html.unescape(key)}={value}"
            }
    # the JSON twin is /api/runs with the same filter, and lists the same runs
    twin = html.unescape(re.search(r'<a href="([^"]+)" rel="alternate"', page).group(1))
    assert sorted(parse_qs(urlsplit(twin).query)["tag"]) == sorted(
        f"{k}={v}" for k, v in wanted.items()
    )
    assert [r["id"] for r in survey_site.get(twin).json()] == run_ids(page)


def test_pages_of_a_tag_filter_keep_it(survey_site: Any) -> None:
    listed = survey_site.cli_json("runs", "--limit", "1000", "--tag", "survey=tess")
    assert len(listed) == 5
    seen: list[int] = []
    link: str | None = "/runs?" + urlencode({"tag": "survey=tess", "limit": "2"})
    while link:
        page = ok(survey_site, link)
        seen += run_ids(page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        link = html.unescape(found.group(1)) if found else None
        if link:
            assert parse_qs(urlsplit(link).query)["tag"] == ["survey=tess"]
    assert seen == [r["id"] for r in listed]


def test_a_tag_filter_nothing_matches_says_so(survey_site: Any) -> None:
    for tags, status, named in (
        (["survey=kepler"], None, ["tag survey=kepler"]),
        (["survey=tess", "release=dr3"], None, ["tag survey=tess", "tag release=dr3"]),
        (["survey=tess"], "crashed", ["status=crashed", "tag survey=tess"]),
        (["survey=TESS"], None, ["tag survey=TESS"]),  # values compare exactly, as text
    ):
        options = tag_options(tags) + (["--status", status] if status else [])
        assert survey_site.cli_json("runs", *options) == []
        page = ok(survey_site, "/runs", tag=tags, status=status or "")
        assert run_ids(page) == [], tags
        empty = page.split('id="no-runs"', 1)[1].split("</div>", 1)[0]
        assert "No runs match" in empty, tags
        assert " and ".join(f"<code>{n}</code>" for n in named) in empty, tags
        assert 'href="/runs" id="clear-filters"' in empty
    everything = ok(survey_site, "/runs")
    assert "No runs match" not in everything and 'id="no-runs"' not in everything


def test_run_tags_link_to_the_runs_carrying_them(survey_site: Any) -> None:
    cutouts = survey_site.run_id("cutouts")
    page = ok(survey_site, f"/runs/{cutouts}")
    tags = page.split('id="run-tags">', 1)[1].split("</dd>", 1)[0]
    links = re.findall(r'<a href="([^"]+)"[^>]*><code data-tag="([^"]+)">', tags)
    assert sorted(html.unescape(k) for _, k in links) == ["release", "survey", "team/owner"]
    for href, key in links:
        key = html.unescape(key)
        value = survey_site.cli_json("show", str(cutouts))["tags"][key]
        assert parse_qs(urlsplit(html.unescape(href)).query) == {"tag": [f"{key}={value}"]}
        listed = survey_site.cli_json("runs", "--tag", f"{key}={value}")
        assert run_ids(ok(survey_site, html.unescape(href))) == [r["id"] for r in listed]
    # the child runs listed on the parent's page show their tags too
    nightly = ok(survey_site, f"/runs/{survey_site.run_id('nightly')}")
    children = nightly.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    assert 'data-tag="team/owner"' in children and '<th scope="col">Tags</th>' in children


def test_run_page_shows_inputs_outputs_parent_children_and_environment(survey_site: Any) -> None:
    runs = {r["id"]: r for r in survey_site.cli_json("runs", "--limit", "1000")}
    nightly = next(r for r in runs.values() if r["job"] == "nightly")
    page = ok(survey_site, f"/runs/{nightly['id']}")
    children = [r for r in runs.values() if r["parent_id"] == nightly["id"]]
    assert len(children) == 4
    assert f'Child runs <span class="count">{len(children)}</span>' in page
    cutouts = next(r for r in children if r["job"] == "cutouts")
    page = ok(survey_site, f"/runs/{cutouts['id']}")
    assert f'Outputs <span class="count">{FAN_OUT}</span>' in page
    assert 'Inputs <span class="count">1</span>' in page
    assert f'<a href="/runs/{nightly["id"]}">{nightly["id"]}</a> nightly' in page
    shown = survey_site.cli_json("show", str(cutouts["id"]))
    assert shown["uuid"] in page and "&#34;size&#34;: 64" in page
    assert f'href="/runs/{cutouts["id"]}/environment"' in page


def test_product_page_is_dpt_show_stale_and_impact(survey_site: Any) -> None:
    for path in (
        survey_site.survey / "catalog.json",
        survey_site.survey / "summary.txt",
        survey_site.quickstart / "calibrated.csv",
        survey_site.quickstart / "raw.csv",
    ):
        page = ok(survey_site, "/products", uri=str(path))
        shown = survey_site.cli_json("show", str(path))
        uri = shown["uri"]
        assert figure(page, "versions") == len(shown["versions"]), path
        for version in shown["versions"]:
            assert f"<code>{version['version'][:8]}</code>" in page
        downstream = survey_site.cli_json("impact", "--product", str(path))
        assert figure(page, "downstream") == len(downstream), path
        stale = survey_site.cli_json("stale", str(path))
        assert ("status-stale" in page.split('id="product-figures"')[1].split("</dl>")[0]) == bool(
            stale
        ), path
        for item in stale:
            for reason in item["reasons"]:
                assert html.escape(reason["message"]) in page
        assert uri in page


def _lineage_figures(site: Any, target: Path, direction: str, depth: str | None = None) -> None:
    args = ["lineage", str(target), f"--{direction}"] + (["--depth", depth] if depth else [])
    graph = site.cli_json(*args)
    page = ok(site, "/lineage", uri=str(target), direction=direction, depth=depth or "")
    assert figure(page, f"{direction}-nodes") == len(graph["nodes"]), (target, direction, depth)
    assert figure(page, f"{direction}-edges") == len(graph["edges"]), (target, direction, depth)
    table = ok(
        site, "/lineage", uri=str(target), direction=direction, depth=depth or "", view="table"
    )
    listed = re.findall(r'<tr data-key="([0-9a-f-]{36})"', table)
    assert sorted(listed) == sorted(n["version"] for n in graph["nodes"])


def test_lineage_page_is_dpt_lineage(survey_site: Any) -> None:
    for target in (
        survey_site.quickstart / "lightcurve.csv",
        survey_site.quickstart / "raw.csv",
        survey_site.survey / "catalog.json",
        survey_site.survey / "summary.txt",
    ):
        for direction in ("upstream", "downstream"):
            _lineage_figures(survey_site, target, direction)
        _lineage_figures(survey_site, target, "upstream", "1")
    both = ok(survey_site, "/lineage", uri=str(survey_site.survey / "catalog.json"))
    up = survey_site.cli_json("lineage", str(survey_site.survey / "catalog.json"), "--upstream")
    down = survey_site.cli_json("lineage", str(survey_site.survey / "catalog.json"), "--downstream")
    assert figure(both, "nodes") == len(up["nodes"]) + len(down["nodes"]) - 1
    assert figure(both, "edges") == len(up["edges"]) + len(down["edges"])


def test_a_big_fan_out_is_one_box_linking_to_its_listing(survey_site: Any) -> None:
    catalog = survey_site.survey / "catalog.json"
    runs = survey_site.cli_json("runs", "--job", "cutouts")
    (cutouts,) = runs
    page = ok(survey_site, "/lineage", uri=str(catalog), direction="downstream")
    label = f"{FAN_OUT - 6} more outputs of run {cutouts['uuid'][:8]}"
    assert f">{label}</text>" in page
    boxes = re.findall(r'<a class="node[^"]*"', page)
    assert len(boxes) < 20  # 486 cutouts drawn as 6 boxes and a group
    found = re.search(r'<a class="node group"[^>]* href="([^"]+)"', page)
    assert found, "no group box"
    link = found.group(1)
    table = ok(survey_site, html.unescape(link).split("#")[0].replace(survey_site.url, ""))
    section = table.split(f'<section id="{html.unescape(link).split("#")[1]}">')[1].split(
        "</section>"
    )[0]
    assert label in section
    assert section.count("<tr data-key=") == FAN_OUT - 6
    assert len(set(re.findall(r"cutout-\d{3}\.fits", section))) == FAN_OUT - 6


def test_lineage_around_a_run(survey_site: Any) -> None:
    runs = survey_site.cli_json("runs", "--job", "summary")
    (summary,) = runs
    page = ok(survey_site, "/lineage", run=str(summary["id"]))
    # the run's output in the middle, what it read one step up, their lineage around
    assert 'class="node st-success root stale"' in page  # summary.txt, made from old zero points
    for name in ("summary.txt", "catalog.json", "zeropoints.txt", "observations.csv"):
        assert f">{name}</text>" in page, name
    assert figure(page, "stale") >= 1


def test_stale_impact_env_diff_and_home_agree_with_the_cli(survey_site: Any) -> None:
    stale = survey_site.cli_json("stale")
    page = ok(survey_site, "/stale")
    assert figure(page, "stale") == len(stale) and stale
    for item in stale:
        assert html.escape(urlencode({"uri": item["uri"]})) in page
    impact = survey_site.cli_json("impact", "--package", "click")
    page = ok(survey_site, "/impact", package="click")
    assert figure(page, "affected") == len(impact)
    assert figure(page, "direct") == sum(1 for i in impact if i["direct"])
    earlier, later = str(survey_site.run_id("catalog", 1)), str(survey_site.run_id("catalog"))
    diff = survey_site.cli_json("env", "diff", earlier, later)
    page = ok(survey_site, "/env/diff", a=earlier, b=later)
    for section in ("packages", "variables"):
        for change in ("added", "removed", "changed"):
            assert figure(page, f"{section}-{change}") == len(diff[section][change])
    assert diff["variables"]["changed"]["SURVEY_RELEASE"] == {"a": "dr2", "b": "dr1"}
    stats = survey_site.cli_json("stats")
    home = ok(survey_site, "/")
    for key in ("invocations", "products", "versions", "edges", "environments"):
        assert re.search(rf'data-stat="{key}">{stats[key]}<', home), key


def test_search_finds_products_jobs_and_runs(survey_site: Any) -> None:
    page = ok(survey_site, "/search", q="CUTOUT-00")
    assert figure(page, "products") == 10  # cutout-000 ... cutout-009, any case
    page = ok(survey_site, "/search", q="catalog")
    assert re.search(r'href="/runs\?job=catalog&amp;orchestrator=python">catalog</a>', page)
    assert "2 runs" in page
    page = ok(survey_site, "/search", q="4")
    assert 'id="run-match"' in page
    page = ok(survey_site, "/search", q="100%_")
    assert figure(page, "products") == 0  # LIKE wildcards are literal
    for number in ("9" * 20, "\u00b2"):  # past 64 bits (SQLite: OverflowError); "²" isdigit()
        page = ok(survey_site, "/search", q=number)
        assert 'id="run-match"' not in page and figure(page, "products") == 0


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/runs/99999", {}, 404, "no run '99999' is recorded"),
        ("/runs/99999/environment", {}, 404, "no run '99999'"),
        ("/products", {"uri": "/no/such/file.csv"}, 404, "no product file:///no/such/file.csv"),
        ("/lineage", {"uri": "/no/such/file.csv"}, 404, "no product"),
        ("/lineage", {"uri": "x", "direction": "sideways"}, 400, "direction='sideways'"),
        ("/lineage", {"uri": "x", "depth": "-1"}, 400, "depth=-1 is out of range"),
        ("/lineage", {"uri": "x", "run": "1"}, 400, "not both"),
        ("/runs", {"since": "yesterday"}, 400, "since 'yesterday' is not a date"),
        ("/runs", {"until": "99999999999d"}, 400, "until '99999999999d' is outside the calendar"),
        (f"/runs/{'9' * 20}", {}, 404, f"no run '{'9' * 20}' is recorded"),
        ("/runs", {"status": "great"}, 400, "status='great' is not one of"),
        ("/runs", {"limit": "0"}, 400, "limit=0 is out of range"),
        ("/runs", {"tag": "survey"}, 400, "tag 'survey' has no '=': write KEY=VALUE"),
        ("/runs", {"tag": "bad key=1"}, 400, "tag key 'bad key' is not valid"),
        ("/runs", {"tag": "=tess"}, 400, "tag key '' is not valid"),
        ("/runs", {"tag": ["survey=tess", "survey=kepler"]}, 400, "gives 'survey' twice"),
        ("/runs", {"tag": f"survey={'x' * 600}"}, 400, "more than 512"),
        ("/impact", {"package": "!!"}, 400, "is not a package"),
        ("/env/diff", {"a": "1", "b": "99999"}, 404, "no run '99999'"),
    ],
)
def test_bad_requests_get_a_page_naming_the_input(
    survey_site: Any, path: str, params: dict[str, str], status: int, words: str
) -> None:
    response = survey_site.get(path, **params)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert words in html.unescape(response.text)
    assert "Traceback" not in response.text


def test_a_bad_tag_keeps_the_form_filled_in_to_correct_it(survey_site: Any) -> None:
    response = survey_site.get("/runs", tag=["survey=tess", "bad key=1"], status="failed")
    assert response.status_code == 400
    page = response.text
    assert run_ids(page) == []
    error = page.split('id="filter-error"', 1)[1].split("</p>", 1)[0]
    assert "tag key &#39;bad key&#39; is not valid" in error
    form = page.split('<form class="filters"', 1)[1].split("</form>", 1)[0]
    assert '<input name="tag" value="survey=tess"' in form
    assert '<input name="tag" value="bad key=1"' in form
    assert '<option value="failed" selected>' in form


def test_static_files_are_our_own_and_small(survey_site: Any) -> None:
    for name, kind in (
        ("explorer.css", "text/css"),
        ("explorer.js", "javascript"),
        ("favicon.svg", "svg"),
    ):
        response = survey_site.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert len(response.content) < 16_000, name
        content = response.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
        assert not re.search(rb"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", content), name
        assert b"@import" not in response.content and b"url(http" not in response.content


def test_every_json_twin_link_answers_json(survey_site: Any) -> None:
    """The "this page as JSON" link of a page is the read API's answer for the same view."""
    checked = 0
    for path, params in pages(survey_site):
        body = ok(survey_site, path, **params)
        found = re.search(r'<a href="([^"]+)" rel="alternate" type="application/json">', body)
        if found is None:
            continue
        link = html.unescape(found.group(1))
        assert link.startswith("/api/"), link
        response = survey_site.get(link)
        assert response.status_code == 200, (path, link, response.text[:300])
        assert response.headers["content-type"].startswith("application/json")
        response.json()
        checked += 1
    assert checked >= 15
    catalog = str(survey_site.survey / "catalog.json")
    page = ok(survey_site, "/lineage", uri=catalog, direction="upstream")
    link = html.unescape(re.search(r'<a href="([^"]+)" rel="alternate"', page).group(1))
    graph = survey_site.get(link).json()
    assert figure(page, "upstream-nodes") == len(graph["nodes"])
    assert figure(page, "upstream-edges") == len(graph["edges"])
