"""The Prefect example and guide turn Prefect's own telemetry off.

Prefect's temporary server sends a telemetry heartbeat by writing to its SQLite
database; when that collides with the flow's writes it logs a ``database is locked``
traceback a newcomer takes for a dpt failure (seen with Prefect 3.9.1). The settings
must be in the environment before Prefect reads them, i.e. before it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect_pipeline.py"
TELEMETRY_OFF = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def environment_defaults_before_prefect(source: str) -> dict[str, str]:
    """``os.environ.setdefault(NAME, VALUE)`` calls at module level before the first
    statement that imports prefect."""
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "prefect":
            return found
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "prefect" for a in node.names
        ):
            return found
        call = node.value if isinstance(node, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and ast.unparse(call.func) == "os.environ.setdefault"
            and all(isinstance(a, ast.Constant) for a in call.args)
        ):
            name, value = (a.value for a in call.args)
            found[name] = value
    raise AssertionError("the example never imports prefect")


def test_the_example_turns_telemetry_off_before_importing_prefect():
    assert environment_defaults_before_prefect(EXAMPLE.read_text()) == TELEMETRY_OFF


def test_the_check_notices_a_setting_made_too_late():
    late = "import os\nfrom prefect import flow\nos.environ.setdefault('DO_NOT_TRACK', '1')\n"
    assert environment_defaults_before_prefect(late) == {}


def test_the_prefect_guide_says_how_to_turn_it_off():
    guide = (ROOT / "docs" / "prefect.md").read_text()
    for name, value in TELEMETRY_OFF.items():
        assert f"export {name}={value}" in guide
