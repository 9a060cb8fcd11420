"""``dpt reproduce``: the recipe of a product or run, checked, exported or rebuilt."""

from __future__ import annotations

import sys

import click

from dpt_core.cli import CliError, echo_json, engine, json_option


@click.command()
@click.argument("target", required=False)
@click.option(
    "--version",
    "version",
    metavar="V",
    help="This version of the product (UUID, prefix or content hash).",
)
@click.option(
    "--check",
    "do_check",
    is_flag=True,
    help="Check inputs, environments and code; exit 1 naming each cause.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    help="With --check: check an exported manifest.json instead of TARGET (no database needed).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    help="With --manifest: where the recipe's root directory is on this machine.",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write requirements, steps.sh and manifest.json to DIR.",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    metavar="WORKDIR",
    help="Rebuild in WORKDIR (new or empty) and compare every output.",
)
@click.option(
    "--venv",
    type=click.Choice(["overlay", "fresh"]),
    default="overlay",
    show_default=True,
    help="--run: install only the recorded pins this Python lacks (overlay), or all of them.",
)
@click.option(
    "--installer",
    type=click.Choice(["auto", "uv", "pip"]),
    default="auto",
    show_default=True,
    help="--run: uv when on PATH (auto), else venv + pip.",
)
@click.option("--index-url", metavar="URL", help="--run: the package index to install from.")
@click.option(
    "--find-links", multiple=True, metavar="DIR", help="--run: also install from DIR (repeatable)."
)
@click.option("--no-index", is_flag=True, help="--run: use --find-links only.")
@click.option(
    "--exclude", multiple=True, metavar="NAME", help="--run: do not install NAME (repeatable)."
)
@click.option(
    "--allow-dirty",
    is_flag=True,
    help="--run: rebuild steps of a dirty work tree with the committed code.",
)
@json_option
def reproduce(
    target: str | None,
    version: str | None,
    do_check: bool,
    manifest: str | None,
    root: str | None,
    export_dir: str | None,
    run_dir: str | None,
    venv: str,
    installer: str,
    index_url: str | None,
    find_links: tuple[str, ...],
    no_index: bool,
    exclude: tuple[str, ...],
    allow_dirty: bool,
    as_json: bool,
) -> None:
    """Print the recipe that rebuilds TARGET (a product or a run id), from its sources.

    Each step in dependency order: what ran (the dpt run command and its
    directory, the Airflow task, the Prefect flow, the Dagster asset), the
    code version, Python, pinned distributions, the variables kept (secret ones
    named, never shown) and each input with its recorded hash.

    \b
      --check        exit 0 when nothing says a rebuild here would differ,
                     else 1 naming each cause (inputs, environments, code,
                     steps only an orchestrator can run)
      --export DIR   requirements per environment, steps.sh, manifest.json
      --run WORKDIR  rebuild dpt run / Python API steps in a virtual environment
                     of the recorded pins; per output: identical, differs, missing
    \b
    Examples:
      dpt reproduce results/summary.csv
      dpt reproduce results/summary.csv --check
      dpt reproduce --check --manifest export/manifest.json --root /data/project
      dpt reproduce 42 --export rebuild-42
      dpt reproduce results/summary.csv --run /tmp/rebuild
    """
    import dpt_core.reproduce as rp
    from dpt_core.reproduce import render

    modes = [
        m for m, on in (("--check", do_check), ("--export", export_dir), ("--run", run_dir)) if on
    ]
    if len(modes) > 1:
        raise CliError(f"give one of {', '.join(modes)}, not several")
    run_options = (
        venv != "overlay",
        installer != "auto",
        index_url,
        find_links,
        no_index,
        exclude,
        allow_dirty,
    )
    if any(run_options) and not run_dir:
        raise CliError(
            "--venv, --installer, --index-url, --find-links, --no-index, --exclude and --allow-dirty go with --run"
        )
    if manifest is not None:
        if not do_check:
            raise CliError("--manifest goes with --check: dpt reproduce --check --manifest FILE")
        if target is not None or version is not None:
            raise CliError("give TARGET or --manifest, not both")
        result = rp.check_manifest(manifest, root)
        _finish_check(result, as_json)
        return
    if root is not None:
        raise CliError("--root goes with --manifest")
    if target is None:
        raise CliError(
            "give TARGET (a product path or URI, or a run id), or --check --manifest FILE"
        )
    eng = engine()
    found = rp.recipe(target, version, engine=eng)
    if do_check:
        _finish_check(rp.check(found, engine=eng), as_json)
        return
    if export_dir is not None:
        written = rp.export(found, export_dir)
        if as_json:
            echo_json({"directory": export_dir, "files": [str(p) for p in written]})
        else:
            click.echo(f"wrote {len(written)} file(s) to {export_dir}:")
            for path in written:
                click.echo(f"  {path}")
            blocking = [p for p in found.problems if p.blocks_run]
            if blocking:
                click.echo(f"{len(blocking)} problem(s) are recorded in recipe.txt and steps.sh")
        return
    if run_dir is not None:
        options = rp.RebuildOptions(
            venv="fresh" if venv == "fresh" else "overlay",
            installer="uv" if installer == "uv" else "pip" if installer == "pip" else "auto",
            index_url=index_url,
            find_links=find_links,
            no_index=no_index,
            exclude=exclude,
            allow_dirty=allow_dirty,
        )
        outcome = rp.rebuild(
            found,
            run_dir,
            options,
            engine=eng,
            progress=None if as_json else lambda message: click.echo(f"dpt: {message}", err=True),
        )
        if as_json:
            echo_json(outcome.to_dict())
        else:
            click.echo(render.rebuild_text(outcome), nl=False)
        sys.exit(0 if outcome.ok else 1)
    if as_json:
        echo_json(found.to_dict())
    else:
        click.echo(render.recipe_text(found), nl=False)


def _finish_check(result: object, as_json: bool) -> None:
    from dpt_core.reproduce import CheckResult, render

    assert isinstance(result, CheckResult)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(render.check_text(result), nl=False)
    sys.exit(0 if result.ok else 1)


def register(cli: click.Group) -> None:
    cli.add_command(reproduce)
