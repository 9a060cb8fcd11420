"""``dpt lineage``, ``dpt stale``, ``dpt impact``, ``dpt env show|diff``, ``dpt export``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from dpt_core.cli import echo_json, engine, json_option, progress, resolve_target


def _console() -> Console:
    """Standard output for people; when piped, wide enough that paths are not wrapped."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200))
    return console


def _display(uri: str) -> str:
    """A local file as its path, anything else as its URI."""
    from dpt_core.uri import uri_to_path

    try:
        path = uri_to_path(uri)
    except Exception:  # noqa: BLE001 - display only
        path = None
    return path or uri


def _short(text: str | None, width: int = 8) -> str:
    if not text:
        return "-"
    return text.split(":", 1)[-1][:width]


# =========================================================================== lineage


def _made_by(job: str | None, task: str | None) -> str:
    """``job/task``, or the task alone when the job names nothing (``__ephemeral_asset_job__``)."""
    from dpt_core.store.lineage import made_up_job

    if task and made_up_job(job):
        return task
    return f"{job or ''}/{task}" if task else (job or "")


def _node_text(node: Any) -> str:
    made = (
        f" [dim]<- {escape(_made_by(node.job, node.task))} "
        f"(run {node.produced_by[:8]}, {node.status})[/]"
        if node.produced_by
        else " [dim](observed, no producer recorded)[/]"
    )
    return f"{escape(_display(node.uri))} [cyan]{_short(node.content_hash)}[/]{made}"


def _tree(graph: Any) -> Tree:
    nodes = {n.version: n for n in graph.nodes}
    following: dict[str, list[str]] = {}
    for e in graph.edges:
        here, there = (
            (e.child_version, e.parent_version)
            if graph.direction == "upstream"
            else (e.parent_version, e.child_version)
        )
        following.setdefault(here, []).append(there)
    for key in following:
        following[key].sort(key=lambda v: (nodes[v].uri, v) if v in nodes else ("", v))
    arrow = "made from" if graph.direction == "upstream" else "used by"
    top = Tree(f"[bold]{escape(_display(graph.root))}[/] [dim]({graph.direction}: {arrow})[/]")
    shown: set[str] = set()

    def grow(branch: Tree, version: str) -> None:
        for nxt in following.get(version, []):
            node = nodes.get(nxt)
            if node is None:
                continue
            if nxt in shown:
                branch.add(f"{_node_text(node)} [dim](see above)[/]")
                continue
            shown.add(nxt)
            grow(branch.add(_node_text(node)), nxt)

    roots = [n for n in graph.nodes if n.depth == 0]
    for root in roots:
        shown.add(root.version)
    for root in roots:
        label = f"version [cyan]{_short(root.content_hash)}[/] {root.version[:8]}"
        if root.produced_by:
            label += (
                f" [dim]<- {escape(_made_by(root.job, root.task))} "
                f"(run {root.produced_by[:8]}, {root.status})[/]"
            )
        grow(top.add(label) if len(roots) > 1 else top, root.version)
    if len(roots) == 1:
        top.label = f"{top.label} [cyan]{_short(roots[0].content_hash)}[/]"
    return top


@click.command()
@click.argument("target")
@click.option(
    "--upstream/--downstream",
    "upstream",
    default=True,
    help="What TARGET came from (default), or what depends on it.",
)
@click.option(
    "--depth", type=click.IntRange(min=0), help="At most this many steps away (default: all)."
)
@click.option(
    "--version",
    "version",
    metavar="V",
    help="Start from this version: a UUID, a UUID prefix, or a content hash (every "
    "version with that content).",
)
@click.option(
    "--all-versions",
    is_flag=True,
    help="Start from every recorded version of TARGET (default: the version on disk, "
    "else the newest).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "json", "dot", "mermaid"]),
    default="tree",
    show_default=True,
    help="tree for people, json for machines, dot (Graphviz) or mermaid for pictures.",
)
@json_option
def lineage(
    target: str,
    upstream: bool,
    depth: int | None,
    version: str | None,
    all_versions: bool,
    fmt: str,
    as_json: bool,
) -> None:
    """Show where TARGET came from (--upstream) or what depends on it (--downstream).

    TARGET is a path or URI. Every step names the run that made the product. The
    graph starts from the version of TARGET that is on disk (the newest version
    with the file's current content), else from its newest version.

    \b
    Examples:
      dpt lineage lc.fits --upstream
      dpt lineage raw.fits --downstream --depth 2
      dpt lineage cal.fits --format dot | dot -Tsvg > cal.svg
      dpt lineage cal.fits --version 3f2a9c --json
      dpt lineage cal.fits --all-versions
    """
    from dpt_core.export.graph import to_dot, to_mermaid
    from dpt_core.store.lineage import lineage as _lineage

    if version is not None and all_versions:
        raise click.UsageError("give --version V or --all-versions, not both")
    graph = _lineage(
        resolve_target(target),
        "upstream" if upstream else "downstream",
        depth,
        version=version,
        all_versions=all_versions,
        engine=engine(),
    )
    if as_json or fmt == "json":
        echo_json(graph.to_dict())
    elif fmt == "dot":
        click.echo(to_dot(graph), nl=False)
    elif fmt == "mermaid":
        click.echo(to_mermaid(graph), nl=False)
    else:
        console = _console()
        console.print(_tree(graph))
        selected = _selection_text(graph)
        if selected:
            console.print(f"[dim]{escape(selected)}[/]")


def _selection_text(graph: Any) -> str | None:
    """Which version of the root the tree starts from, when there is a choice to tell."""
    others = (graph.versions or 0) - 1
    more = f"{others} other version{'s' if others > 1 else ''} recorded: --all-versions"
    if graph.selection == "on_disk":
        return f"shown: the version on disk ({more})" if others > 0 else None
    if graph.selection == "newest" and (graph.note or others > 0):
        why = f", as {graph.note}" if graph.note else ""
        return f"shown: the newest version{why}" + (f" ({more})" if others > 0 else "")
    return None


# =========================================================================== stale


@click.command()
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@json_option
def stale(targets: tuple[str, ...], as_json: bool) -> None:
    """List products whose inputs changed after they were made.

    An input counts as changed when its file now differs from the version used
    (only files whose size or mtime moved are re-hashed), when it is missing,
    or when a newer version of it was recorded. Everything downstream of a
    stale product is stale too. With TARGETs, only those are judged (with
    everything upstream of them).

    Exits 1 when something is stale and 0 when nothing is, with --json too (like
    'git diff --exit-code'), so a script or CI job can branch on it; 2 when it
    could not tell (a bad TARGET or setting, a database that cannot be reached).

    \b
    Examples:
      dpt stale
      dpt stale lc.fits cal.fits --json
      dpt stale lc.fits > /dev/null || make lc.fits
    """
    from sqlalchemy.exc import SQLAlchemyError

    from dpt_core.cli import CliError
    from dpt_core.errors import DptError
    from dpt_core.store.analysis import stale as _stale
    from dpt_core.store.engine import describe_db_error

    stats: dict[str, int] = {}
    try:  # exit 1 means "stale": a check that could not be made exits 2, whatever went wrong
        with progress("hashing changed inputs") as update:
            found = _stale(
                [resolve_target(t) for t in targets] if targets else None,
                engine(),
                stats=stats,
                progress=update,
            )
    except DptError as exc:
        raise CliError(str(exc), 2) from None
    except SQLAlchemyError as exc:
        raise CliError(f"database error: {describe_db_error(exc)}", 2) from None
    if as_json:
        echo_json(found)
        raise SystemExit(1 if found else 0)
    console = _console()
    summary = (
        f"{stats.get('products', 0)} product(s) with recorded inputs checked, "
        f"{stats.get('files_checked', 0)} input file(s) stat-ed, "
        f"{stats.get('files_hashed', 0)} re-hashed"
    )
    if not found:
        console.print(f"nothing is stale ({summary})")
        return
    table = Table("product", "why", title=f"{len(found)} stale product(s)", show_lines=True)
    for item in found:
        table.add_row(
            escape(_display(item["uri"])), "\n".join(escape(r["message"]) for r in item["reasons"])
        )
    console.print(table)
    console.print(f"[dim]{summary}[/]")
    raise SystemExit(1)


# =========================================================================== impact


@click.command()
@click.option("--product", metavar="TARGET", help="Everything downstream of this product.")
@click.option(
    "--package",
    metavar="NAME[==VERSION]",
    help="Everything made in an environment with this distribution, and downstream.",
)
@click.option(
    "--version",
    "version",
    metavar="V",
    help="With --product: start from this version only (UUID, prefix or content hash).",
)
@json_option
def impact(product: str | None, package: str | None, version: str | None, as_json: bool) -> None:
    """List what a bad product or a bad package affects.

    \b
    Examples:
      dpt impact --product raw/flat.fits
      dpt impact --package numpy==2.1.0 --json
    """
    from dpt_core.store.analysis import (
        impact_of_package,
        impact_of_product,
        known_distribution,
        parse_package,
    )

    if (product is None) == (package is None):
        raise click.UsageError("give exactly one of --product TARGET or --package NAME[==VERSION]")
    if package is not None:
        if version is not None:
            raise click.UsageError("--version goes with --product; write --package NAME==VERSION")
        try:
            name, pinned = parse_package(package)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--package") from None
        items = impact_of_package(name, pinned, engine=engine())
        if not items and not known_distribution(name, pinned, engine=engine()):
            click.echo(
                f"note: no recorded environment has {name}{'==' + pinned if pinned else ''}",
                err=True,
            )
        subject = f"{name}{'==' + pinned if pinned else ''}"
    else:
        assert product is not None
        items = impact_of_product(resolve_target(product), version=version, engine=engine())
        subject = _display(resolve_target(product))
    if as_json:
        echo_json(items)
        return
    console = _console()
    if not items:
        console.print(f"nothing is affected by {escape(subject)}")
        return
    table = Table("product", "depth", "versions", "runs", title=f"affected by {escape(subject)}")
    for item in items:
        depth = str(item["depth"]) + (" (made with it)" if item.get("direct") else "")
        table.add_row(
            escape(_display(item["uri"])),
            depth,
            str(len(item["versions"])),
            ", ".join(r[:8] for r in item["runs"][:5]) + (" ..." if len(item["runs"]) > 5 else ""),
        )
    console.print(table)


# =========================================================================== env


@click.group()
def env() -> None:
    """Inspect and compare the environments runs ran in."""


@env.command("show")
@click.argument("run_id")
@json_option
def env_show(run_id: str, as_json: bool) -> None:
    """Show the environment of RUN_ID: Python, platform, host, packages, variables, facets.

    RUN_ID is a run's number, UUID or UUID prefix (see 'dpt runs').
    Secret variables are never shown: they are listed as redacted.

    \b
    Example:
      dpt env show 42
    """
    from dpt_core.store.analysis import environment_of_run

    data = environment_of_run(run_id, engine=engine())
    if as_json:
        echo_json(data)
        return
    console = _console()
    run, env_ = data["run"], data["environment"]
    console.print(
        f"[bold]run {run['id']}[/] {run['uuid']} {escape(run['job'])}"
        f"{'/' + escape(run['task']) if run['task'] else ''} ({run['status']})"
    )
    console.print(
        f"python {env_['python']} ({env_['implementation']}) on {escape(env_['platform'])}, "
        f"host {escape(env_['host'])}, user {escape(env_['user'])}"
    )
    console.print(f"fingerprint {env_['fingerprint']}")
    packages = Table("package", "version", title=f"{len(env_['packages'])} package(s)")
    for name, ver in env_["packages"].items():
        packages.add_row(name, ver)
    console.print(packages)
    variables = Table("variable", "value", title=f"{len(env_['variables'])} variable(s)")
    redacted = set(env_["redacted"])
    for key, value in env_["variables"].items():
        shown = "[dim]<redacted>[/]" if key in redacted and value is None else escape(str(value))
        variables.add_row(escape(key), shown)
    console.print(variables)
    if env_["facets"]:
        console.print("facets: " + escape(json.dumps(env_["facets"], sort_keys=True)))


@env.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@json_option
def env_diff(run_a: str, run_b: str, as_json: bool) -> None:
    """Show what differs between the environments of RUN_A and RUN_B.

    Packages and variables added, removed or changed; Python, platform, host
    and user; facets (git commit, ...). A secret variable that changed is
    reported as changed, without its values; when the two runs used different
    redaction keys (hosts without a shared DPT_REDACTION_KEY), its digests cannot
    be compared and it is reported as not comparable.

    \b
    Example:
      dpt env diff 41 42
    """
    from dpt_core.store.analysis import diff_environments

    diff = diff_environments(run_a, run_b, engine=engine())
    if as_json:
        echo_json(diff)
        return
    console = _console()
    if diff["same"]:
        console.print(
            f"runs {run_a} and {run_b} ran in the same environment ({diff['a']['fingerprint'][:12]})"
        )
        return
    table = Table("what", "name", run_a, run_b, title=f"environment of run {run_a} -> run {run_b}")
    for name, change in diff["fields"].items():
        table.add_row("field", name, escape(str(change["a"])), escape(str(change["b"])))
    for section in ("packages", "variables", "facets"):
        part = diff[section]
        for key, value in part["added"].items():
            table.add_row(section, escape(key), "[dim](absent)[/]", _shown(value))
        for key, value in part["removed"].items():
            table.add_row(section, escape(key), _shown(value), "[dim](absent)[/]")
        for key, change in part["changed"].items():
            if change.get("comparable") is False:
                table.add_row(
                    section,
                    escape(key),
                    "[dim]<redacted>[/]",
                    f"[dim]<redacted, not comparable: {escape(change['reason'])}>[/]",
                )
            elif change.get("redacted"):
                table.add_row(
                    section, escape(key), "[dim]<redacted>[/]", "[dim]<redacted, changed>[/]"
                )
            else:
                table.add_row(section, escape(key), _shown(change["a"]), _shown(change["b"]))
    console.print(table)
    blind = [k for k, c in diff["variables"]["changed"].items() if c.get("comparable") is False]
    if blind:
        console.print(
            f"{len(blind)} secret variable(s) not comparable: run {run_a} recorded them under "
            f"redaction key {diff['a']['redaction_key']}, run {run_b} under "
            f"{diff['b']['redaction_key']}. Give every host one key (DPT_REDACTION_KEY or "
            "DPT_REDACTION_KEY_FILE) to compare secrets across hosts.",
            highlight=False,
        )


def _shown(value: Any) -> str:
    return "[dim]<redacted>[/]" if value is None else escape(str(value))


# =========================================================================== export


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openlineage", "prov"]),
    required=True,
    help="openlineage: RunEvents as JSON lines; prov: one W3C PROV-JSON document.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only runs started since WHEN: 2024-05-01, 2024-05-01T12:00+00:00, 12h, 7d, 2w.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file (default: standard output).",
)
def export(fmt: str, since: str | None, output: str | None) -> None:
    """Export runs and lineage as OpenLineage events or W3C PROV-JSON.

    \b
    Examples:
      dpt export --format openlineage --since 7d -o events.jsonl
      dpt export --format prov > provenance.json
    """
    from dpt_core.export import parse_since

    when = parse_since(since) if since else None
    eng = engine()
    with _open_output(output) as out:
        if fmt == "prov":
            from dpt_core.export.prov import prov_document

            json.dump(prov_document(eng, when), out, indent=2, ensure_ascii=False, sort_keys=True)
            out.write("\n")
            return
        from dpt_core.export.openlineage import count_runs, write_events

        total = count_runs(eng, when)
        with progress("exporting runs") as update:
            count = write_events(eng, out, when, progress=lambda done: update(done, total))
    if output:
        click.echo(f"wrote {count} OpenLineage event(s) for {total} run(s) to {output}", err=True)


@contextlib.contextmanager
def _open_output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def register(cli: click.Group) -> None:
    for command in (lineage, stale, impact, env, export):
        cli.add_command(command)
