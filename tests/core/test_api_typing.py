"""A user's script that uses the public API passes ``mypy --strict``, and runs.

mypy comes from the test's own interpreter if it has it, else from the ``type`` tox
environment (``.tox/type``); without either the test is skipped (failed under
``CI=true``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_SCRIPT = textwrap.dedent(
    '''
    """A pipeline as a user writes it, with every public API name it needs."""

    from __future__ import annotations

    import asyncio
    from pathlib import Path

    import dpt_core
    from dpt_core.query import EnvironmentDiff, ImpactedProduct, Product, Run, StaleProduct


    @dpt_core.tracked(inputs="raw", outputs="out")
    def calibrate(raw: Path, out: Path, gain: float = 1.5) -> int:
        out.write_text(raw.read_text() + str(gain))
        return 1


    @dpt_core.tracked(inputs=["cal"], outputs=[Path("lc.txt")], name="photometry")
    async def photometry(cal: Path) -> str:
        Path("lc.txt").write_text(cal.read_text())
        return "lc"


    @dpt_core.tracked
    def bare() -> None:
        pass


    async def summarise() -> list[str]:
        async with dpt_core.invocation("summarise", parameters={"band": "r"}) as inv:
            handle: dpt_core.AsyncInvocationHandle = inv
            await handle.read("lc.txt")
            Path("summary.txt").write_text("s")
            return await handle.write("summary.txt", metadata={"rows": 1})


    def main() -> None:
        Path("raw.txt").write_text("raw")
        block: dpt_core.InvocationBlock = dpt_core.invocation("observe", task="night1")
        with block as inv:
            handle: dpt_core.InvocationHandle = inv
            uris: list[str] = handle.write("raw.txt")
            streamed: dpt_core.WrittenURIs = handle.write(p for p in [Path("raw.txt")])
        count: int = calibrate(Path("raw.txt"), Path("cal.txt"), gain=2.0)
        made: str = asyncio.run(photometry(Path("cal.txt")))
        written: list[str] = asyncio.run(summarise())
        bare()
        read: list[str] = dpt_core.read("raw.txt")
        tracked_uris: list[str] = dpt_core.track("summary.txt", parents=["lc.txt"])
        graph = dpt_core.lineage("summary.txt", direction="upstream", depth=None)
        upstream: list[str] = [node.uri for node in graph.nodes]
        runs: list[Run] = dpt_core.runs(status="success", limit=10)
        shown: Product | Run = dpt_core.show("cal.txt")
        if isinstance(shown, Product):
            hashes = [v.content_hash for v in shown.versions]
            print(hashes)
        stale: list[StaleProduct] = dpt_core.stale()
        impact: list[ImpactedProduct] = dpt_core.impact(Path("raw.txt"))
        diff: EnvironmentDiff = dpt_core.env_diff(runs[0], runs[-1])
        print(uris, list(streamed), count, made, written, read, tracked_uris, upstream, stale)
        print(impact)
        print(len(runs), diff.same, diff.to_dict()["same"], shown.to_dict())


    if __name__ == "__main__":
        main()
    '''
)

MISTAKES = textwrap.dedent(
    """
    from pathlib import Path

    import dpt_core


    @dpt_core.tracked(inputs="raw")
    def calibrate(raw: Path, gain: float = 1.5) -> int:
        return 1


    calibrate("raw.txt", gain="high")
    count: str = calibrate(Path("raw.txt"))
    dpt_core.trak("out.txt")
    with dpt_core.invocation("x") as inv:
        total: int = inv.write("out.txt")
    dpt_core.runs(status="done")
    """
)


def mypy_command() -> list[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pass
    else:
        return [sys.executable, "-m", "mypy"]
    found = ROOT / ".tox" / "type" / "bin" / "mypy"
    if found.exists():
        return [str(found)]
    reason = "mypy is not installed here nor in .tox/type (tox -e type builds it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def mypy(script: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *mypy_command(),
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(cache),
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=script.parent,
        check=False,
    )


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_a_users_script_passes_mypy_strict_and_runs(tmp_path, mypy_cache, dpt_env):
    script = tmp_path / "pipeline.py"
    script.write_text(USER_SCRIPT)
    checked = mypy(script, mypy_cache)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    ran = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**dpt_env.environ(), "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    jobs = sorted(
        (r.job, r.task or "")
        for r in dpt_env.rows("SELECT job, task FROM invocations WHERE status = 'success'")
    )
    assert jobs == sorted(
        [
            ("observe", "night1"),
            ("calibrate", ""),
            ("photometry", ""),
            ("summarise", ""),
            ("bare", ""),
            ("pipeline.py", "read"),  # dpt_core.read() outside a run: a one-off run
            ("pipeline.py", "track"),
        ]
    )


def test_mypy_strict_reports_the_mistakes_a_user_makes(tmp_path, mypy_cache):
    script = tmp_path / "mistakes.py"
    script.write_text(MISTAKES)
    checked = mypy(script, mypy_cache)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    reported = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"mistakes\.py:(\d+): error: .*\[([\w-]+)\]$", checked.stdout, re.M)
    }
    line = {text: n for n, text in enumerate(MISTAKES.splitlines(), 1)}
    assert reported == {
        (line['calibrate("raw.txt", gain="high")'], "arg-type"),  # the wrapped signature holds
        (line['count: str = calibrate(Path("raw.txt"))'], "assignment"),  # and its return type
        (line['dpt_core.trak("out.txt")'], "attr-defined"),  # a misspelt name is an error
        (line['    total: int = inv.write("out.txt")'], "assignment"),  # handle methods typed
        (line['dpt_core.runs(status="done")'], "arg-type"),  # statuses are a Literal
    }, checked.stdout
