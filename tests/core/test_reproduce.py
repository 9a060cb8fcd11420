"""``dpt reproduce``: recipes, checks, exports and real rebuilds of ``dpt run`` chains.

Every chain here is recorded by real ``dpt run`` subprocesses into a real database;
every rebuild creates a real virtual environment (uv, or venv + pip), re-runs the
steps under ``dpt run`` and hashes what they wrote. Packages a rebuild must install
come from wheels built in the test (a local directory, ``--no-index``): offline.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dpt_core
from dpt_core.reproduce import Recipe

REPO = Path(__file__).resolve().parents[2]

STEP1 = """\
import sys
rows = open(sys.argv[1]).read().split()
open(sys.argv[2], "w").write("\\n".join(r.upper() for r in rows) + "\\n")
"""
STEP2 = """\
import sys
rows = open(sys.argv[1]).read().split()
open(sys.argv[2], "w").write(f"rows,{len(rows)}\\n")
"""
STAMPED = """\
import sys, time
rows = open(sys.argv[1]).read().split()
open(sys.argv[2], "w").write(f"made at {time.time_ns()}\\n" + "\\n".join(rows) + "\\n")
"""


def dpt(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    environ = dict(os.environ, **(env or {}))
    environ.setdefault("PYTHONPATH", str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=600,
    )


def ok(result: Any, code: int = 0) -> Any:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def digest(path: Path) -> str:
    return dpt_core.hash_file(path, "xxh3_128")


@dataclass
class Chain:
    """Two ``dpt run`` steps: raw.txt -> step1.py -> clean.txt -> step2.py -> summary.txt."""

    dir: Path
    raw: Path
    clean: Path
    summary: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return dpt(*args, cwd=self.dir, env=env)


def make_chain(
    root: Path, step1: str = STEP1, env: dict[str, str] | None = None, python: str | None = None
) -> Chain:
    """Record the chain with 'dpt run' started from ``root`` by a process whose PWD is not
    ``root`` (the PWD it inherits names the test's directory)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "step1.py").write_text(step1)
    (root / "step2.py").write_text(STEP2)
    (root / "raw.txt").write_text("a\nb\nc\n")
    chain = Chain(root, root / "raw.txt", root / "clean.txt", root / "summary.txt")
    py = python or sys.executable
    ok(
        chain.run(
            "run", "--name", "clean", "-i", "raw.txt", "-o", "clean.txt",
            "--", py, "step1.py", "raw.txt", "clean.txt", env=env,
        )
    )  # fmt: skip
    ok(
        chain.run(
            "run", "--name", "summary", "-i", "clean.txt", "-o", "summary.txt",
            "--", py, "step2.py", "clean.txt", "summary.txt", env=env,
        )
    )  # fmt: skip
    return chain


def recipe_json(target: Path | str, *args: str) -> dict[str, Any]:
    return json.loads(ok(dpt("reproduce", str(target), "--json", *args)).stdout)


def runs(dpt_env: Any) -> list[Any]:
    return dpt_env.rows("SELECT id, uuid, job, parameters, status FROM invocations ORDER BY id")


def params(row: Any) -> dict[str, Any]:
    return json.loads(row.parameters) if isinstance(row.parameters, str) else dict(row.parameters)


# --------------------------------------------------------------------------- the recipe


def test_recipe_of_a_dpt_run_chain_in_dependency_order(dpt_backend, dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    data = recipe_json(chain.summary)

    assert data["format"] == "dpt-recipe/1"
    assert data["target"]["uri"] == chain.summary.as_uri()
    assert data["target"]["content_hash"] == digest(chain.summary)
    assert data["target"]["selection"] == "on_disk"
    assert data["root"] == str(chain.dir)
    first, second = data["steps"]
    assert (first["index"], first["run"]["job"], second["run"]["job"]) == (1, "clean", "summary")
    assert first["command"].endswith("step1.py raw.txt clean.txt")
    # The PWD these runs inherited is not where they ran; dpt run records where they did.
    assert os.environ.get("PWD") != str(chain.dir)
    assert (first["cwd"], first["cwd_source"]) == (str(chain.dir), "PWD")
    assert [(i["uri"], i["content_hash"], i["made_by"]) for i in second["inputs"]] == [
        (chain.clean.as_uri(), digest(chain.clean), 1)
    ]
    assert [(s["uri"], s["content_hash"]) for s in data["sources"]] == [
        (chain.raw.as_uri(), digest(chain.raw))
    ]
    assert first["rerun"]["kind"] == "dpt-run"
    argv = first["rerun"]["argv"]
    assert argv[:4] == ["dpt", "run", "--name", "clean"]
    assert argv[argv.index("--") + 1 :] == [sys.executable, "step1.py", "raw.txt", "clean.txt"]
    assert f"dpt.reproduces={first['run']['uuid']}" in argv
    assert argv[4:6] == ["-i", "raw.txt"] and argv[6:8] == ["-o", "clean.txt"]
    (env,) = data["environments"]
    assert first["environment"] == second["environment"] == env["id"]
    import sqlalchemy

    assert f"sqlalchemy=={sqlalchemy.__version__}" in env["requirements"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    # The redaction key is a secret: named, never shown.
    assert "DPT_REDACTION_KEY" in env["redacted"]
    assert "DPT_REDACTION_KEY" not in env["variables"]
    assert "dpt-test-key" not in json.dumps(data)
    assert data["problems"] == []


def test_recipe_text_names_steps_commands_inputs_and_environment(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    text = ok(dpt("reproduce", str(chain.summary))).stdout
    assert "Step 1  dpt run 'clean'" in text and "Step 2  dpt run 'summary'" in text
    assert f"directory: {chain.dir}" in text
    assert f"{chain.raw.as_uri()}  {digest(chain.raw)}  [source]" in text
    assert "redacted (values never shown): DPT_REDACTION_KEY" in text
    assert "dpt-test-key" not in text


def test_the_python_api_returns_typed_objects(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    found = dpt_core.recipe(chain.summary)
    assert isinstance(found, Recipe)
    assert [s.run.job for s in found.steps] == ["clean", "summary"]
    assert found.steps[1].inputs[0].made_by == 1
    assert found.environment(found.steps[0].environment) is found.environments[0]
    assert Recipe.from_dict(json.loads(json.dumps(found.to_dict()))) == found


def test_a_run_target_rebuilds_what_the_run_wrote(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    second = runs(dpt_env)[-1]
    data = recipe_json(second.uuid[:8])
    assert data["target"] == {
        "kind": "run",
        "uri": None,
        "version": None,
        "content_hash": None,
        "run": second.uuid,
        "selection": "run",
        "note": None,
    }
    assert [s["run"]["job"] for s in data["steps"]] == ["clean", "summary"]
    assert chain.summary.as_uri() in [o["uri"] for o in data["steps"][1]["outputs"]]


def test_a_version_of_the_target_can_be_named(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    old_summary = digest(chain.summary)
    chain.raw.write_text("a\nb\nc\nd\n")
    ok(chain.run("run", "--name", "clean", "-i", "raw.txt", "-o", "clean.txt", "--",
                 sys.executable, "step1.py", "raw.txt", "clean.txt"))  # fmt: skip
    ok(chain.run("run", "--name", "summary", "-i", "clean.txt", "-o", "summary.txt", "--",
                 sys.executable, "step2.py", "clean.txt", "summary.txt"))  # fmt: skip
    newest = recipe_json(chain.summary)
    older = recipe_json(chain.summary, "--version", old_summary)
    assert newest["target"]["content_hash"] == digest(chain.summary) != old_summary
    assert older["target"]["content_hash"] == old_summary
    assert older["sources"][0]["content_hash"] != newest["sources"][0]["content_hash"]


def test_bad_targets_and_options_are_one_line_errors(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for args, needle in [
        ((str(chain.summary), "--export", str(a_file / "x")), "cannot write the export"),
        ((str(tmp_path / "nothing.txt"),), "neither a recorded product nor a run"),
        ((str(chain.summary), "--version", "feedfacefeed"), "has no version"),
        ((str(chain.summary), "--check", "--run", str(tmp_path / "w")), "not several"),
        ((str(chain.summary), "--exclude", "x"), "go with --run"),
        (("--check",), "give TARGET"),
        (("--manifest", "m.json"), "goes with --check"),
        (("--check", "--manifest", str(tmp_path / "none.json")), "cannot read manifest"),
    ]:
        result = dpt("reproduce", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )


# --------------------------------------------------------------------------- rebuilds


def test_a_deterministic_chain_rebuilds_identical(dpt_backend, dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    originals = {p: (digest(p), p.stat().st_mtime_ns) for p in (chain.clean, chain.summary)}
    before = runs(dpt_env)
    work = tmp_path / "rebuild"

    result = json.loads(
        ok(dpt("reproduce", str(chain.summary), "--run", str(work), "--json")).stdout
    )

    assert result["ok"] is True and result["completed"] is True
    assert [(o["uri"], o["outcome"]) for o in result["outcomes"]] == [
        (chain.clean.as_uri(), "identical"),
        (chain.summary.as_uri(), "identical"),
    ]
    rebuilt = work / "tree" / "summary.txt"
    assert result["outcomes"][1]["rebuilt_path"] == str(rebuilt)
    assert digest(rebuilt) == originals[chain.summary][0]
    # The originals were not touched.
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in originals} == originals
    # The rebuild is recorded, each new run naming the run it repeats.
    new = runs(dpt_env)[len(before) :]
    assert [(r.job, r.status) for r in new] == [("clean", "success"), ("summary", "success")]
    assert [params(r)["dpt.reproduces"] for r in new] == [r.uuid for r in before]
    assert [r["run"] for r in result["runs"]] == [r.uuid for r in new]
    rebuilt_versions = dpt_env.rows(
        "SELECT p.uri, v.content_hash FROM data_product_versions v "
        "JOIN data_products p ON p.id = v.product_id WHERE v.produced_by_id = :run",
        run=new[1].id,
    )
    assert [(r.uri, r.content_hash) for r in rebuilt_versions] == [
        (rebuilt.as_uri(), originals[chain.summary][0])
    ]
    # Its environment is the rebuild's virtual environment, with the recorded pins.
    (venv,) = result["venvs"].values()
    original_env = dpt_core.recipe(chain.summary).environments[0]
    rebuilt_env = dpt_core.recipe(rebuilt).environments[0]
    assert rebuilt_env.distributions == original_env.distributions
    assert rebuilt_env.id != original_env.id  # another interpreter path, another PATH
    assert dict(rebuilt_env.variables)["VIRTUAL_ENV"] == venv


def test_a_fresh_venv_installs_every_recorded_pin(dpt_env, tmp_path):
    """--venv fresh: all recorded pins installed (by uv, offline: from the cache that built
    this environment), nothing shared with this interpreter."""
    if shutil.which("uv") is None:
        pytest.fail("uv is not on PATH: a fresh venv of this environment's pins needs it offline")
    # uv's own cache (the dpt_env fixture points XDG_CACHE_HOME into tmp_path).
    environ = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, env=environ)
    chain = make_chain(tmp_path / "orig")
    work = tmp_path / "w"
    offline = {"UV_OFFLINE": "1", "UV_CACHE_DIR": cache.stdout.strip()}
    result = dpt("reproduce", str(chain.summary), "--run", str(work), "--json",
                 "--venv", "fresh", env=offline)  # fmt: skip
    data = json.loads(ok(result).stdout)
    assert [o["outcome"] for o in data["outcomes"]] == ["identical", "identical"]
    recorded = dpt_core.recipe(chain.summary).environments[0]
    assert any(f"{len(recorded.distributions) - 1} distribution(s) installed (fresh)" in n
               for n in data["notes"])  # fmt: skip
    (venv,) = data["venvs"].values()
    pth = next(Path(venv).glob("lib/python*/site-packages/_dpt_reproduce.pth")).read_text()
    assert pth.strip() == str(work / "venvs" / "dpt-lib")  # only dpt itself comes from here
    rebuilt = dpt_core.recipe(work / "tree" / "summary.txt").environments[0]
    assert rebuilt.distributions == recorded.distributions


def test_a_source_has_nothing_to_rebuild(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    found = dpt_core.recipe(chain.raw)
    assert found.steps == () and [s.uri for s in found.sources] == [chain.raw.as_uri()]
    assert any("it is a source" in n for n in found.notes)
    text = ok(dpt("reproduce", str(chain.raw), "--run", str(tmp_path / "w"))).stdout
    assert "Nothing was rebuilt." in text


def test_a_step_that_writes_a_timestamp_differs(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig", step1=STAMPED)
    result = dpt("reproduce", str(chain.summary), "--run", str(tmp_path / "w"), "--json")
    data = json.loads(ok(result, 1).stdout)
    outcomes = {o["uri"]: o for o in data["outcomes"]}
    stamped = outcomes[chain.clean.as_uri()]
    assert stamped["outcome"] == "differs"
    assert stamped["recorded_hash"] == digest(chain.clean)
    assert stamped["rebuilt_hash"] == digest(Path(stamped["rebuilt_path"])) != digest(chain.clean)
    # The summary counts lines: the same count, so the same file.
    assert outcomes[chain.summary.as_uri()]["outcome"] == "identical"
    assert data["completed"] is True and data["ok"] is False
    text = ok(dpt("reproduce", str(chain.summary), "--run", str(tmp_path / "w2")), 1).stdout
    assert f"differs      {chain.clean.as_uri()} (step 1)" in text
    assert "The rebuild differs from the record." in text


def test_an_input_edited_after_the_fact_fails_the_check_and_stops_the_rebuild(
    dpt_backend, dpt_env, tmp_path
):
    chain = make_chain(tmp_path / "orig")
    recorded = digest(chain.raw)
    before = ok(dpt("reproduce", str(chain.summary), "--check"))
    assert "OK: nothing recorded says a rebuild here would differ." in before.stdout

    chain.raw.write_text("a\nb\nX\n")
    result = ok(dpt("reproduce", str(chain.summary), "--check", "--json"), 1)
    data = json.loads(result.stdout)
    assert data["ok"] is False
    (cause,) = data["causes"]
    assert (cause["kind"], cause["subject"]) == ("input_changed", chain.raw.as_uri())
    assert recorded in cause["message"] and digest(chain.raw) in cause["message"]
    assert [(i["uri"], i["state"]) for i in data["inputs"]] == [(chain.raw.as_uri(), "changed")]
    text = " ".join(ok(dpt("reproduce", str(chain.summary), "--check"), 1).stdout.split())
    assert f"[input_changed] input {chain.raw.as_uri()} changed since it was used" in text

    before_runs = runs(dpt_env)
    work = tmp_path / "w"
    refused = json.loads(
        ok(dpt("reproduce", str(chain.summary), "--run", str(work), "--json"), 1).stdout
    )
    assert refused["completed"] is False and refused["runs"] == [] and refused["outcomes"] == []
    assert [p["kind"] for p in refused["problems"]] == ["input_changed"]
    assert runs(dpt_env) == before_runs and not work.exists()


def test_a_missing_input_is_named(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    chain.raw.unlink()
    data = json.loads(ok(dpt("reproduce", str(chain.summary), "--check", "--json"), 1).stdout)
    assert [(c["kind"], c["subject"]) for c in data["causes"]] == [
        ("input_missing", chain.raw.as_uri())
    ]
    assert "restore" in data["causes"][0]["remedy"]


def _wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of module ``name`` whose ``VERSION`` is ``version``."""
    directory.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: dpt-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        raw = text.encode()
        sha = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={sha},{len(raw)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


USES_DEMO = """\
import sys, dptdemo
rows = open(sys.argv[1]).read().split()
open(sys.argv[2], "w").write(f"dptdemo {dptdemo.VERSION}\\n" + "\\n".join(rows) + "\\n")
"""


@pytest.fixture
def demo_chain(dpt_env, tmp_path) -> Chain:
    """A chain recorded with dptdemo 1.0 importable (a directory on PYTHONPATH), which
    this interpreter does not have: a rebuild must install it."""
    site = tmp_path / "site"
    with zipfile.ZipFile(_wheel(tmp_path / "build", "dptdemo", "1.0")) as archive:
        archive.extractall(site)
    return make_chain(
        tmp_path / "orig", step1=USES_DEMO, env={"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    )


def test_a_pin_the_index_lacks_is_named_and_nothing_runs(demo_chain, dpt_env, tmp_path):
    found = dpt_core.recipe(demo_chain.summary)
    assert ("dptdemo", "1.0") in found.environments[0].distributions
    index = tmp_path / "index"
    _wheel(index, "dptdemo", "2.0")  # the index has another version only
    work = tmp_path / "w"
    before = runs(dpt_env)

    result = dpt("reproduce", str(demo_chain.summary), "--run", str(work), "--json",
                 "--no-index", "--find-links", str(index))  # fmt: skip

    data = json.loads(ok(result, 1).stdout)
    assert data["completed"] is False and data["runs"] == [] and data["outcomes"] == []
    (problem,) = data["problems"]
    assert (problem["kind"], problem["subject"]) == ("not_installable", "dptdemo==1.0")
    assert "--exclude dptdemo" in problem["remedy"] and "--find-links" in problem["remedy"]
    assert runs(dpt_env) == before
    assert not (work / "logs").exists() or not any((work / "logs").iterdir())


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_recorded_pin_this_interpreter_lacks_is_installed(
    installer, demo_chain, dpt_env, tmp_path
):
    if installer == "uv" and shutil.which("uv") is None:
        pytest.fail("uv is not on PATH: the uv installer cannot be tested")
    index = tmp_path / "index"
    _wheel(index, "dptdemo", "1.0")
    _wheel(index, "dptdemo", "2.0")
    work = tmp_path / "w"

    result = dpt("reproduce", str(demo_chain.summary), "--run", str(work), "--json",
                 "--installer", installer, "--no-index", "--find-links", str(index))  # fmt: skip

    data = json.loads(ok(result).stdout)
    assert [o["outcome"] for o in data["outcomes"]] == ["identical", "identical"]
    assert (work / "tree" / "clean.txt").read_text().startswith("dptdemo 1.0\n")
    (venv,) = data["venvs"].values()
    installed = list(Path(venv).glob("lib/python*/site-packages/dptdemo-1.0.dist-info"))
    assert len(installed) == 1
    assert any("1 distribution(s) installed" in n for n in data["notes"])
    # This interpreter did not get it.
    import importlib.util

    assert importlib.util.find_spec("dptdemo") is None


def test_an_excluded_pin_is_named_and_the_step_runs_without_it(demo_chain, dpt_env, tmp_path):
    result = dpt("reproduce", str(demo_chain.summary), "--run", str(tmp_path / "w"), "--json",
                 "--exclude", "dptdemo")  # fmt: skip
    data = json.loads(ok(result, 1).stdout)
    assert any("not installed (--exclude): dptdemo==1.0" in n for n in data["notes"])
    (failed,) = data["problems"]
    assert failed["kind"] == "step_failed" and failed["step"] == 1
    assert "No module named 'dptdemo'" in failed["message"]
    assert "steps 2" in failed["remedy"] or "(steps 2)" in failed["remedy"]
    assert data["completed"] is False and [r["returncode"] for r in data["runs"]] == [1]


def test_a_python_not_like_this_one_is_named_for_an_overlay(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    found = dpt_core.recipe(chain.summary)
    env = found.environments[0]
    other = dataclasses.replace(found, environments=(dataclasses.replace(env, python="2.7.18"),))
    from dpt_core.reproduce import rebuild

    result = rebuild(other, tmp_path / "w")
    (problem,) = result.problems
    assert problem.kind == "python_unavailable" and "2.7.18" in problem.message
    assert "--venv fresh" in problem.remedy
    assert result.runs == () and not result.ok


def test_a_workdir_that_cannot_be_written_is_named(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    result = ok(dpt("reproduce", str(chain.summary), "--run", str(a_file / "w"), "--json"), 1)
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["kind"] == "cannot_write" and str(a_file) in problem["message"]
    assert a_file.read_text() == "not a directory"


def test_the_workdir_must_be_new_or_empty(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    work = tmp_path / "w"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    data = json.loads(
        ok(dpt("reproduce", str(chain.summary), "--run", str(work), "--json"), 1).stdout
    )
    assert [p["kind"] for p in data["problems"]] == ["workdir_not_empty"]
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


# --------------------------------------------------------------------------- code


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_dirty_tree_is_named_and_allow_dirty_rebuilds_the_committed_code(dpt_env, tmp_path):
    root = tmp_path / "orig"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "step1.py").write_text(STEP1)
    (root / "step2.py").write_text(STEP2)
    _git(root, "add", "step1.py", "step2.py")
    _git(root, "commit", "-qm", "steps")
    commit = _git(root, "rev-parse", "HEAD").strip()
    # The first step runs with an uncommitted change: it lower-cases.
    chain = make_chain(root, step1=STEP1.replace(".upper()", ".lower()"))
    found = dpt_core.recipe(chain.summary)
    assert found.steps[0].code.commit == commit and found.steps[0].code.dirty is True
    assert found.steps[0].code.repo == str(root)
    assert [(p.kind, p.step) for p in found.problems] == [("dirty_tree", 1), ("dirty_tree", 2)]

    check = json.loads(ok(dpt("reproduce", str(chain.summary), "--check", "--json"), 1).stdout)
    assert {c["kind"] for c in check["causes"]} == {"dirty_tree"}
    refused = json.loads(
        ok(dpt("reproduce", str(chain.summary), "--run", str(tmp_path / "w"), "--json"), 1).stdout
    )
    assert refused["runs"] == [] and {p["kind"] for p in refused["problems"]} == {"dirty_tree"}
    assert "--allow-dirty" in refused["problems"][0]["remedy"]

    result = dpt("reproduce", str(chain.summary), "--run", str(tmp_path / "w2"), "--json",
                 "--allow-dirty")  # fmt: skip
    data = json.loads(ok(result, 1).stdout)
    outcomes = {o["uri"]: o["outcome"] for o in data["outcomes"]}
    # The committed code upper-cases: the rebuild shows what the uncommitted change did.
    assert outcomes == {chain.clean.as_uri(): "differs", chain.summary.as_uri(): "identical"}
    assert (tmp_path / "w2" / "tree" / "clean.txt").read_text() == "A\nB\nC\n"
    assert any(f"commit {commit[:12]} (git archive)" in n for n in data["notes"])


def test_a_clean_tree_rebuilds_from_the_recorded_commit_not_the_current_files(dpt_env, tmp_path):
    root = tmp_path / "orig"
    root.mkdir()
    _git(root, "init", "-q")
    chain = make_chain(root)
    for name in ("step1.py", "step2.py"):
        _git(root, "add", name)
    _git(root, "commit", "-qm", "steps")
    # Recorded again now that the scripts are committed: a clean tree.
    chain = make_chain(root)
    commit = _git(root, "rev-parse", "HEAD").strip()
    # Later the code changes and is committed: the rebuild must still use the recorded commit.
    (root / "step1.py").write_text(STEP1.replace(".upper()", ".lower()"))
    _git(root, "commit", "-qam", "lower")
    check = json.loads(ok(dpt("reproduce", str(chain.summary), "--check", "--json")).stdout)
    assert any(
        n["kind"] == "code_unavailable" and "is now at" in n["message"] for n in check["notes"]
    )
    data = json.loads(
        ok(dpt("reproduce", str(chain.summary), "--run", str(tmp_path / "w"), "--json")).stdout
    )
    assert [o["outcome"] for o in data["outcomes"]] == ["identical", "identical"]
    assert any(f"commit {commit[:12]} (git archive)" in n for n in data["notes"])


def test_a_command_whose_directory_cannot_be_told_is_named(dpt_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside any git work tree, as the recorded run was
    root = tmp_path / "orig"
    root.mkdir()
    (root / "fixed.py").write_text("open('out.txt', 'w').write(open('raw.txt').read())\n")
    (root / "raw.txt").write_text("x\n")
    (root / "out.txt").write_text("x\n")
    # Recorded as an older dpt run did: no argument names a recorded file, and the PWD it
    # kept was inherited from elsewhere.
    handle = dpt_core.get_tracker().start(
        "fixed",
        orchestrator="cli",
        command=[sys.executable, "fixed.py"],
        variables={"PWD": str(tmp_path)},
    )
    handle.read(root / "raw.txt")
    handle.write(root / "out.txt")
    handle.finish("success")
    found = dpt_core.recipe(root / "out.txt")
    (problem,) = found.problems
    assert problem.kind == "cwd_unknown" and "fixed.py" in problem.message
    check = json.loads(ok(dpt("reproduce", str(root / "out.txt"), "--check", "--json"), 1).stdout)
    assert [c["kind"] for c in check["causes"]] == ["cwd_unknown"]
    # dpt run records where the command ran, whatever PWD it inherited.
    ok(dpt("run", "--name", "fixed", "-i", "raw.txt", "-o", "out.txt", "--",
           sys.executable, "fixed.py", cwd=root, env={"PWD": str(tmp_path)}))  # fmt: skip
    step = dpt_core.recipe(root / "out.txt").steps[-1]
    assert (step.cwd, step.cwd_source) == (str(root), "PWD")


def test_a_script_run_by_its_path_is_taken_along(dpt_env, tmp_path):
    root = tmp_path / "orig"
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "upper.sh"
    script.write_text('#!/bin/sh\ntr a-z A-Z < "$1" > "$2"\n')
    script.chmod(0o755)
    (root / "raw.txt").write_text("abc\n")
    ok(dpt("run", "--name", "upper", "-i", "raw.txt", "-o", "out.txt", "--",
           "bin/upper.sh", "raw.txt", "out.txt", cwd=root))  # fmt: skip
    data = json.loads(
        ok(dpt("reproduce", str(root / "out.txt"), "--run", str(tmp_path / "w"), "--json")).stdout
    )
    assert [o["outcome"] for o in data["outcomes"]] == ["identical"]
    assert any(f"copied {script} as they are now" in n for n in data["notes"])
    assert os.access(tmp_path / "w" / "tree" / "bin" / "upper.sh", os.X_OK)


def test_a_command_with_a_masked_secret_is_not_re_run(dpt_env, tmp_path):
    root = tmp_path / "orig"
    root.mkdir()
    (root / "dup.py").write_text(
        "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read())\n"
    )
    (root / "raw.txt").write_text("x\n")
    ok(dpt("run", "-i", "raw.txt", "-o", "out.txt", "--", sys.executable, "dup.py",
           "raw.txt", "out.txt", "--password=hunter2", cwd=root))  # fmt: skip
    found = dpt_core.recipe(root / "out.txt")
    assert "hunter2" not in json.dumps(found.to_dict())
    (problem,) = found.problems
    assert problem.kind == "command_redacted" and problem.blocks_run


# --------------------------------------------------------------------------- cycles


CYCLE_A = "import sys; open('y.txt', 'w').write(open('x.txt').read() + 'a\\n')\n"
CYCLE_B = "import sys; open('x.txt', 'w').write(open('y.txt').read() + 'b\\n')\n"
CYCLE_C = "import sys; open('z.txt', 'w').write(open('x.txt').read() + 'c\\n')\n"


def test_a_cycle_through_versions_of_one_product(dpt_env, tmp_path):
    root = tmp_path / "orig"
    root.mkdir()
    for name, code in (("a.py", CYCLE_A), ("b.py", CYCLE_B), ("c.py", CYCLE_C)):
        (root / name).write_text(code)
    (root / "x.txt").write_text("x0\n")
    x0 = digest(root / "x.txt")
    for name, i, o in (("a", "x.txt", "y.txt"), ("b", "y.txt", "x.txt"), ("c", "x.txt", "z.txt")):
        ok(dpt("run", "--name", name, "-i", i, "-o", o, "--", sys.executable, f"{name}.py",
               cwd=root, env={"PWD": str(root)}))  # fmt: skip
    x1 = digest(root / "x.txt")

    found = dpt_core.recipe(root / "z.txt")
    assert [s.run.job for s in found.steps] == ["a", "b", "c"]
    assert [(s.uri, s.content_hash) for s in found.sources] == [((root / "x.txt").as_uri(), x0)]
    (cycle,) = [p for p in found.problems if p.kind == "version_cycle"]
    assert cycle.subject == (root / "x.txt").as_uri() and x0 in cycle.message

    data = json.loads(ok(dpt("reproduce", str(root / "z.txt"), "--check", "--json"), 1).stdout)
    (cause,) = data["causes"]
    assert cause["kind"] == "version_cycle" and x1 in cause["message"] and x0 in cause["message"]

    # With the version it starts from restored, the rebuild passes through both versions
    # and compares each right after the step that makes it.
    (root / "x.txt").write_text("x0\n")
    result = json.loads(
        ok(dpt("reproduce", str(root / "z.txt"), "--run", str(tmp_path / "w"), "--json")).stdout
    )
    assert [(Path(o["uri"]).name, o["step"], o["outcome"]) for o in result["outcomes"]] == [
        ("y.txt", 1, "identical"),
        ("x.txt", 2, "identical"),
        ("z.txt", 3, "identical"),
    ]
    assert digest(tmp_path / "w" / "tree" / "x.txt") == x1


# --------------------------------------------------------------------------- Python API


QUICKSTART = REPO / "examples" / "quickstart.py"


def test_python_api_blocks_inside_dpt_run_rebuild_through_its_command(dpt_env, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(QUICKSTART, code / "quickstart.py")
    data = tmp_path / "data"
    ok(dpt("run", "--name", "quickstart", "--", sys.executable, "quickstart.py", str(data),
           cwd=code, env={"PWD": str(code)}))  # fmt: skip
    found = dpt_core.recipe(data / "lightcurve.csv")
    assert [(s.run.orchestrator, s.run.job) for s in found.steps] == [
        ("python", "observe"),
        ("python", "calibrate"),
        ("python", "lightcurve"),
    ]
    assert len({s.rerun.unit for s in found.steps}) == 1
    assert found.steps[0].parameters == {"seed": 42}
    assert found.steps[0].rerun.argv[-2:] == ("quickstart.py", str(data))
    assert found.root == str(tmp_path)

    result = json.loads(
        ok(
            dpt("reproduce", str(data / "lightcurve.csv"), "--run", str(tmp_path / "w"), "--json")
        ).stdout  # fmt: skip
    )
    assert [(Path(o["uri"]).name, o["outcome"]) for o in result["outcomes"]] == [
        ("flat.txt", "identical"),
        ("raw.csv", "identical"),
        ("calibrated.csv", "identical"),
        ("lightcurve.csv", "identical"),
    ]
    (rebuilt,) = result["runs"]
    assert rebuilt["steps"] == [1, 2, 3]
    assert rebuilt["argv"][-1] == str(tmp_path / "w" / "tree" / "data")
    # The script's own blocks were recorded again, under the rebuild's dpt run.
    children = dpt_env.rows(
        "SELECT c.job FROM invocations c JOIN invocations p ON p.id = c.parent_id "
        "WHERE p.uuid = :uuid ORDER BY c.id",
        uuid=rebuilt["run"],
    )
    assert [c.job for c in children] == ["observe", "calibrate", "lightcurve"]


def test_python_api_blocks_of_a_script_rebuild_by_running_the_script_once(dpt_env, tmp_path):
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, str(QUICKSTART), str(data)], check=True, capture_output=True, cwd=tmp_path
    )
    found = dpt_core.recipe(data / "lightcurve.csv")
    assert found.problems == ()
    assert [s.run.job for s in found.steps] == ["observe", "calibrate", "lightcurve"]
    # One re-run for the three blocks: the script, from where it ran.
    assert len({s.rerun.unit for s in found.steps}) == 1
    step = found.steps[0]
    assert (step.cwd, step.cwd_source) == (str(tmp_path), "PWD")
    assert step.rerun.argv[-2:] == (str(QUICKSTART), str(data))
    result = json.loads(
        ok(
            dpt("reproduce", str(data / "lightcurve.csv"), "--run", str(tmp_path / "w"), "--json")
        ).stdout  # fmt: skip
    )
    assert [(Path(o["uri"]).name, o["outcome"]) for o in result["outcomes"]] == [
        ("flat.txt", "identical"),
        ("raw.csv", "identical"),
        ("calibrated.csv", "identical"),
        ("lightcurve.csv", "identical"),
    ]
    (rebuilt,) = result["runs"]
    assert rebuilt["steps"] == [1, 2, 3]


def test_python_api_blocks_without_a_command_name_what_can_be_done(dpt_env, tmp_path):
    data = tmp_path / "data"
    # python -c cannot be run again as it was: its blocks record no command.
    code = (
        f"import sys; sys.argv[1:] = [{str(data)!r}]; "
        f"exec(open({str(QUICKSTART)!r}).read(), {{'__name__': '__main__'}})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=tmp_path)
    found = dpt_core.recipe(data / "lightcurve.csv")
    assert {p.kind for p in found.problems} == {"no_command"}
    assert all("dpt run" in p.remedy for p in found.problems)
    refused = json.loads(
        ok(
            dpt("reproduce", str(data / "lightcurve.csv"), "--run", str(tmp_path / "w"), "--json"),
            1,
        ).stdout  # fmt: skip
    )
    assert refused["runs"] == [] and {p["kind"] for p in refused["problems"]} == {"no_command"}


# --------------------------------------------------------------------------- export


def test_export_writes_pins_steps_and_a_manifest_checked_elsewhere(dpt_env, tmp_path):
    chain = make_chain(tmp_path / "orig")
    out = tmp_path / "export"
    ok(dpt("reproduce", str(chain.summary), "--export", str(out)))
    found = dpt_core.recipe(chain.summary)
    env = found.environments[0]
    pins = (out / f"requirements/env-{env.id}.txt").read_text().splitlines()
    assert [p for p in pins if not p.startswith("#")] == list(env.pins)
    assert (out / f"requirements/env-{env.id}.python-version").read_text().strip() == env.python
    assert json.loads((out / "recipe.json").read_text()) == found.to_dict()
    script = (out / "steps.sh").read_text()
    assert script.count("dpt run --name") == 2
    assert '(cd "$ROOT" && dpt run --name clean -i raw.txt -o clean.txt' in script
    assert "-- python step1.py raw.txt clean.txt)" in script
    subprocess.run(["bash", "-n", str(out / "steps.sh")], check=True)

    # "Another machine": the sources and code somewhere else, no dpt database.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("raw.txt", "step1.py", "step2.py"):
        shutil.copy(chain.dir / name, elsewhere / name)
    no_db = {"DPT_DATABASE_URL": f"sqlite:///{tmp_path / 'absent' / 'none.sqlite3'}"}
    checked = dpt("reproduce", "--check", "--manifest", str(out / "manifest.json"),
                  "--root", str(elsewhere), "--json", env=no_db)  # fmt: skip
    data = json.loads(ok(checked).stdout)
    assert [(i["path"], i["state"]) for i in data["inputs"]] == [
        (str(elsewhere / "raw.txt"), "same")
    ]
    assert not (tmp_path / "absent").exists()
    # The steps script rebuilds there: dpt and python from this environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["bash", str(out / "steps.sh")], capture_output=True, text=True,
                          env=dict(os.environ, ROOT=str(elsewhere), PATH=path,
                                   PYTHONPATH=str(REPO)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert digest(elsewhere / "summary.txt") == digest(chain.summary)

    (elsewhere / "raw.txt").write_text("changed\n")
    data = json.loads(
        ok(
            dpt(
                "reproduce",
                "--check",
                "--manifest",
                str(out / "manifest.json"),
                "--root",
                str(elsewhere),
                "--json",
                env=no_db,
            ),
            1,
        ).stdout  # fmt: skip
    )
    assert [(c["kind"], c["subject"]) for c in data["causes"]] == [
        ("input_changed", chain.raw.as_uri())
    ]
