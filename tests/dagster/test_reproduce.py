"""``dpt reproduce`` on assets a real Dagster materialised: the recipe names
``dagster asset materialize --select KEY --partition P``, and that command, given the
code location dpt does not record, is run here against the test's DAGSTER_HOME."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

import dpt_core
import dpt_dagster
from dpt_core.reproduce import check, export, rebuild
from dpt_core.reproduce.commands import CODE_LOCATION

DEFS = """
import os
from pathlib import Path

import dagster as dg

import dpt_dagster

DATA = Path(os.environ["DPT_TEST_DAGSTER_DATA"])
SIDES = dg.StaticPartitionsDefinition(["north", "south"])


@dg.asset(partitions_def=SIDES)
def survey(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    path = DATA / f"survey-{context.partition_key}.txt"
    path.write_text(f"survey {context.partition_key}\\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


@dg.asset(partitions_def=SIDES, deps=[survey], key_prefix=["sky"])
def catalog(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    source = DATA / f"survey-{context.partition_key}.txt"
    path = DATA / f"catalog-{context.partition_key}.txt"
    path.write_text(source.read_text().upper())
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


defs = dg.Definitions(assets=[survey, catalog], sensors=[dpt_dagster.dpt_asset_sensor()])
"""


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("dpt_reproduce_defs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tick(instance: Any, defs: Any) -> Any:
    context = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs)
    return dpt_dagster.dpt_asset_sensor().evaluate_tick(context)


def test_recipe_names_dagster_asset_materialize_and_the_command_rebuilds(
    dpt_env: Any, dagster_home: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("DPT_TEST_DAGSTER_DATA", str(data))
    defs_file = tmp_path / "defs.py"
    defs_file.write_text(DEFS)
    module = _load(defs_file)
    instance = dg.DagsterInstance.get()
    try:
        done = dg.materialize(
            [module.survey, module.catalog], partition_key="north", instance=instance
        )
        assert done.success
        _tick(instance, module.defs)
        target = data / "catalog-north.txt"
        recorded = dpt_core.hash_file(target)

        found = dpt_core.recipe(target)

        survey, catalog = found.steps
        assert [(s.run.orchestrator, s.run.task) for s in found.steps] == [
            ("dagster", "survey"),
            ("dagster", "sky/catalog"),
        ]
        assert catalog.details["asset_key"] == "sky/catalog"
        assert catalog.details["partition"] == "north"
        assert catalog.details["run_id"] == done.run_id
        assert [(i.uri, i.made_by) for i in catalog.inputs] == [
            ((data / "survey-north.txt").as_uri(), 1)
        ]
        assert catalog.rerun.kind == "dagster"
        assert catalog.rerun.argv == (
            "dagster",
            "asset",
            "materialize",
            "--select",
            "sky/catalog",
            "--partition",
            "north",
            CODE_LOCATION,
        )
        # What dpt does not know is said, not guessed.
        (need,) = catalog.rerun.needs
        assert need[0] == CODE_LOCATION and "-f FILE" in need[1] and "-m MODULE" in need[1]
        blocking = [(p.kind, p.step) for p in found.problems if p.blocks_run]
        assert blocking == [("orchestrator_only", 1), ("orchestrator_only", 2)]
        assert not check(found).ok
        refused = rebuild(found, tmp_path / "w")
        assert refused.runs == () and {p.kind for p in refused.problems} == {"orchestrator_only"}
        export(found, tmp_path / "export")
        script = (tmp_path / "export" / "steps.sh").read_text()
        assert ': "${DAGSTER_CODE_LOCATION:?' in script
        assert (
            "dagster asset materialize --select sky/catalog --partition north "
            "$DAGSTER_CODE_LOCATION" in script
        )

        # The command, with the code location filled in, materialises the partition again.
        target.unlink()
        argv = [
            str(Path(sys.executable).with_name("dagster")),
            *catalog.rerun.argv[1:-1],
            "-f",
            str(defs_file),
        ]
        ran = subprocess.run(
            argv,
            env=dict(os.environ, **dict(catalog.rerun.env)),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert dpt_core.hash_file(target) == recorded
        records = instance.fetch_materializations(dg.AssetKey(["sky", "catalog"]), limit=10).records
        assert [r.partition_key for r in records] == ["north", "north"]
        assert not (data / "catalog-south.txt").exists()
        # The dpt sensor records the re-run as a new materialisation of the same version.
        _tick(instance, module.defs)
        rows = dpt_env.rows(
            "SELECT i.external_id FROM invocations i WHERE i.orchestrator = 'dagster' "
            "AND i.task = 'sky/catalog' ORDER BY i.id"
        )
        assert len(rows) == 2 and rows[0].external_id == done.run_id != rows[1].external_id
    finally:
        instance.dispose()
