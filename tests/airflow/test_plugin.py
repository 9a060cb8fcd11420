"""Installing the package is the whole set-up: Airflow and dpt both find the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_airflow_plugins_command_lists_the_dpt_plugin(airflow_cli: Any) -> None:
    result = airflow_cli("plugins", "--output", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["dpt"]["listeners"] == ["dpt_airflow.listener.DptListener"]
    assert "dpt_airflow.plugin:DptAirflowPlugin" in plugins["dpt"]["source"]
    assert "airflow.plugins" in plugins["dpt"]["source"]


def test_plugins_manager_registers_the_listener(airflow_db: Path) -> None:
    from airflow import plugins_manager
    from airflow.listeners.listener import get_listener_manager
    from airflow.sdk.listener import get_listener_manager as get_task_listener_manager

    from dpt_airflow.listener import dpt_listener

    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}
    assert info["dpt"]["listeners"] == ["dpt_airflow.listener.DptListener"]
    # the scheduler's manager (dag runs) and the task runner's (task instances)
    assert get_listener_manager().pm.is_registered(dpt_listener)
    assert get_task_listener_manager().pm.is_registered(dpt_listener)


def test_dpt_loads_the_airflow_hooks_without_importing_airflow(dpt_env: Any) -> None:
    code = (
        "import sys, json, dpt_core\n"
        "from dpt_core.plugins import plugin_listing\n"
        "dpt_core.get_tracker().pm\n"
        "hooks = {p['name']: p['hooks'] for p in plugin_listing()}\n"
        "print(json.dumps({'hooks': hooks.get('airflow'),\n"
        "                  'airflow_imported': 'airflow' in sys.modules,\n"
        "                  'context': repr(dpt_core.get_tracker().current())}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "hooks": ["dpt_current_context", "dpt_resolve_uri"],
        "airflow_imported": False,
        "context": "None",
    }
