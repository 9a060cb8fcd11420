"""``dpt tag``: add, change or remove tags of a run or a product version afterwards."""

from __future__ import annotations

import click

from dpt_core.cli import echo_json, json_option


@click.command()
@click.argument("target")
@click.argument("tags", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--remove",
    "-r",
    "remove",
    multiple=True,
    metavar="KEY",
    help="Remove this tag (repeatable; a tag that is not there is no error).",
)
@click.option(
    "--version",
    "version",
    metavar="V",
    help="With a product: tag this version (UUID, UUID prefix or content hash: every "
    "version with that content) instead of the newest.",
)
@json_option
def tag(
    target: str, tags: tuple[str, ...], remove: tuple[str, ...], version: str | None, as_json: bool
) -> None:
    """Set, change or remove tags of a run or a product version.

    TARGET is a path or URI of a recorded product (its newest version, or --version),
    else a run id or UUID (prefix). Each KEY=VALUE sets a tag, replacing the key's value;
    --remove KEY removes one. With neither, the current tags are shown. Values are text
    (see docs/tags.md); a key is letters, digits and '_ . - : /'.

    \b
    Examples:
      dpt tag 42 reviewed=true --remove draft
      dpt tag cal.fits quality=good
      dpt runs --tag quality=good
    """
    from dpt_core.query import tag as _tag
    from dpt_core.tags import InvalidTag, parse_tag

    wanted: dict[str, str] = {}
    for text in tags:
        key, value = parse_tag(text)
        if key in wanted and wanted[key] != value:
            raise InvalidTag(f"{key}= is given twice ({wanted[key]!r} and {value!r}): give one")
        wanted[key] = value
    done = _tag(target, wanted, remove=list(remove), version=version)
    if as_json:
        echo_json([t.to_dict() for t in done])
        return
    for t in done:
        what = f"run {t.uuid}" if t.kind == "run" else f"{t.uri} version {t.uuid}"
        shown = " ".join(f"{k}={v}" for k, v in sorted(t.tags.items())) or "(no tags)"
        click.echo(f"{what}: {shown}")


def register(cli: click.Group) -> None:
    cli.add_command(tag)
