"""The docs stay true to the code: every hook documented, the CLI page generated from --help."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from dpt_core import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("dpt_")]


def test_every_hook_is_documented_in_the_hook_reference():
    page = (DOCS / "hooks.md").read_text()
    documented = set(re.findall(r"autofunction:: dpt_core\.hookspecs\.(dpt_\w+)", page))
    assert hook_names(), "no hooks found"
    assert set(hook_names()) - documented == set()
    assert documented - set(hook_names()) == set()


def test_every_hook_has_a_docstring_with_its_calling_convention():
    for name in hook_names():
        doc = " ".join((inspect.getdoc(getattr(hookspecs, name)) or "").split())
        assert len(doc) > 60, name
        spec = getattr(hookspecs, name).dpt_spec  # set by HookspecMarker("dpt")
        if spec.get("firstresult"):
            assert "first non-None result" in doc, name


def test_cli_reference_is_generated_from_help():
    from dpt_core.cli.reference import cli_reference

    assert (DOCS / "cli.md").read_text() == cli_reference(), (
        "run: python -m dpt_core.cli.reference > docs/cli.md"
    )
