"""The settings that turn Prefect's telemetry off (docs/prefect.md, examples/prefect_pipeline.py)
are settings Prefect reads, and they take effect."""

from __future__ import annotations

import os
import subprocess
import sys

TELEMETRY_OFF = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def test_the_settings_are_prefects_own():
    """Where Prefect is installed: the names are settings it reads, and they take effect."""
    code = (
        "import prefect.settings as s;"
        "from prefect._internal.analytics.enabled import is_telemetry_enabled;"
        "print(s.get_current_settings().server.analytics_enabled, is_telemetry_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_OFF and k != "CI"}
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    off = subprocess.run(
        [sys.executable, "-c", code], env=env | TELEMETRY_OFF, capture_output=True, text=True
    )
    assert on.stdout.split() == ["True", "True"], on.stderr
    assert off.stdout.split() == ["False", "False"], off.stderr
