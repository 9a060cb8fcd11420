"""The explorer's lineage page: server time and browser load time, next to the JSON API.

    python -m benchmarks.bench_explorer [--backend sqlite|postgresql] [--runs 5] [--no-browser]

The graph is bulk-loaded the way ``benchmarks.bench_lineage`` loads its own (every
product one version, made by a run of its own, a real small file): 64 levels of 64
products, each derived from its neighbours ``k`` and ``k+1`` one level up. The upstream
closure of a product at level L then has (L+1)(L+2)/2 versions and about twice as many
edges, so levels 9, 31 and 62 give closures of 55, 528 and 2 016 nodes, every one of them
drawn (no fan-out to fold: the hardest case for the layout). A fourth graph is a fan-out:
one run read one file and wrote 2 000 (the input's downstream closure: 2 001 nodes,
drawn as 8 boxes).

For each closure, against a real ``dpt serve --read-only`` (uvicorn, one process) over
the database, median of ``--runs`` after one warm-up:

* ``api_ms``: ``GET /api/lineage?uri=...&direction=...`` end to end (the CLI's JSON shape);
* ``page_ms``: ``GET /lineage?uri=...&direction=...`` end to end (the HTML page with its SVG);
* in-process, what the page costs by phase: ``query_ms`` (``lineage()``, the same call the
  API makes), ``stale_ms`` (``dpt stale`` over the graph's products, to mark them),
  ``fold_ms`` (``graph.collapse``), ``layout_ms`` (igraph's Sugiyama layout) and
  ``render_ms`` (the Jinja2 template);
* ``browser_load_ms``: Chromium (Debian's, through Playwright) opening the page: from
  navigation start to the load event; ``browser_painted_ms``: to two animation frames
  after it (the picture laid out, pan/zoom set up, painted);
* ``html_kb`` / ``json_kb``: the sizes of both answers, ``boxes``: boxes drawn.

Issue 17's target: at 2 000 nodes the page renders within a few seconds.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from benchmarks._common import database, emit, isolated_dpt, machine, table
from benchmarks.bench_lineage import Shape, analyse, generate

REPO = Path(__file__).resolve().parents[1]
LEVELS = WIDTH = 64
#: Levels whose upstream closures have 55, 528 and 2 016 nodes.
CLOSURES = (9, 31, 62)
FAN_OUT = 2000


def build(url: str, files: Path) -> list[tuple[str, str, str]]:
    """Load the graphs; returns ``(label, uri, direction)`` per closure to measure."""
    import dpt_core
    from dpt_core.store.plugin import current_store
    from dpt_core.uri import normalize_uri

    shape = Shape(LEVELS * WIDTH, LEVELS, 2 * (LEVELS - 1) * WIDTH)
    engine = current_store().engine
    uris = generate(engine, shape, files)
    analyse(engine)
    wanted = []
    for level in CLOSURES:
        nodes = (level + 1) * (level + 2) // 2
        wanted.append((f"grid {nodes}", uris[shape.pid(level, 0)], "upstream"))
    fan = files / "fan-out"
    fan.mkdir()
    source = fan / "exposure.fits"
    source.write_bytes(b"SIMPLE = T\n" * 100)
    with dpt_core.invocation("cutouts") as inv:
        inv.read(source)
        outputs = []
        for index in range(FAN_OUT):
            path = fan / f"cutout-{index:05d}.fits"
            path.write_bytes(f"cutout {index}\n".encode())
            outputs.append(path)
        inv.write(*outputs)
    wanted.append((f"fan-out {FAN_OUT + 1}", normalize_uri(source), "downstream"))
    return wanted


def start_server(environ: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, **environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpt_core.cli", "serve", "--port", "0", "--read-only",
         "--no-access-log"],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("dpt serve: http"):
            return proc, line.split()[2].rstrip("/")
    raise SystemExit(f"dpt serve exited ({proc.wait()}) without printing its URL")


def timed_get(url: str, path: str, runs: int) -> tuple[list[float], int]:
    """Median-able end-to-end times of ``GET path`` on one keep-alive connection."""
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    samples, size = [], 0
    for attempt in range(runs + 1):
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
        size = len(body)
        if attempt:  # the first is a warm-up
            samples.append(elapsed)
    conn.close()
    return samples, size


def phases(uri: str, direction: str, runs: int) -> dict[str, float]:
    """What the page costs in-process, phase by phase (medians, ms)."""
    from dpt_core.config import get_settings
    from dpt_core.server import explorer
    from dpt_core.server import graph as drawing
    from dpt_core.server.config import ServerConfig
    from dpt_core.store.plugin import current_store

    settings = get_settings()
    engine = current_store(settings).engine
    pages = explorer.Explorer(ServerConfig(read_only=True, settings=settings))
    ask = explorer.Ask("/lineage", {"uri": uri, "direction": direction}, {})
    template, context = pages.lineage(ask)  # what the page renders
    times: dict[str, list[float]] = {k: [] for k in ("query", "stale", "fold", "layout", "render")}
    for attempt in range(runs + 1):
        t0 = time.perf_counter()
        view = explorer.product_lineage(engine, settings, uri, direction, None, None)
        t1 = time.perf_counter()
        explorer.mark_stale(engine, settings, view)
        t2 = time.perf_counter()
        folded = drawing.collapse(view.nodes, view.edges)
        t3 = time.perf_counter()
        drawing.layout(folded)
        t4 = time.perf_counter()
        pages.page_html(ask, template, context)
        t5 = time.perf_counter()
        if attempt:
            spans = [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]
            for key, (a, b) in zip(times, spans, strict=True):
                times[key].append(b - a)
    result: dict[str, float] = {f"{k}_ms": _ms(v) for k, v in times.items()}
    result["boxes"] = len(context["picture"].boxes)
    return result


def browser_times(url: str, path: str, runs: int) -> dict[str, float] | None:
    executable = shutil.which("chromium")
    if executable is None:
        print("no chromium on PATH: browser figures skipped", file=sys.stderr)
        return None
    from playwright.sync_api import sync_playwright

    load, painted = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"],
        )  # fmt: skip
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        for attempt in range(runs + 1):
            page.goto(url + path, wait_until="load")
            timing = page.evaluate(
                """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {
                       const nav = performance.getEntriesByType('navigation')[0];
                       done({load: nav.loadEventEnd - nav.startTime, painted: performance.now() - nav.startTime});
                   })))"""
            )
            if attempt:
                load.append(timing["load"] / 1000)
                painted.append(timing["painted"] / 1000)
        browser.close()
    return {"browser_load_ms": _ms(load), "browser_painted_ms": _ms(painted)}


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    emit("machine", **machine())
    rows = []
    with database(args.backend) as url, isolated_dpt(url) as tmp:
        files = Path(tempfile.mkdtemp(dir=tmp))
        closures = build(url, files)
        environ = {k: v for k, v in os.environ.items() if k.startswith("DPT_")}
        proc, server = start_server(environ)
        try:
            for label, uri, direction in closures:
                query = urlencode({"uri": uri, "direction": direction})
                api, json_size = timed_get(server, f"/api/lineage?{query}", args.runs)
                page, html_size = timed_get(server, f"/lineage?{query}", args.runs)
                row: dict[str, Any] = {
                    "closure": label,
                    "api_ms": _ms(api),
                    "page_ms": _ms(page),
                    **phases(uri, direction, args.runs),
                }
                if not args.no_browser:
                    row.update(browser_times(server, f"/lineage?{query}", args.runs) or {})
                row["json_kb"] = round(json_size / 1024, 1)
                row["html_kb"] = round(html_size / 1024, 1)
                emit("explorer_lineage", backend=args.backend, **row)
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait()
    table(rows)


if __name__ == "__main__":
    main()
