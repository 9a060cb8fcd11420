"""``@dpt_core.tracked``: each call of a function is one invocation, on a real database."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import dpt_core
from tests.core.test_api_invocation import edges, inputs_of, outputs_of, runs


def test_a_tracked_call_records_argument_paths_and_passes_the_result(
    dpt_backend, dpt_env, tmp_path
):
    raw, flat, cal = tmp_path / "raw.fits", tmp_path / "flat.fits", tmp_path / "cal.fits"
    raw.write_text("raw")
    flat.write_text("flat")

    @dpt_core.tracked(inputs=["raw", "flats"], outputs="out")
    def calibrate(raw: Path, flats: list[Path], out: Path, gain: float = 1.5) -> int:
        out.write_text(raw.read_text() + "".join(f.read_text() for f in flats))
        return 42

    assert calibrate(raw, [flat], out=cal) == 42
    (row,) = runs(dpt_env)
    assert (row.job, row.status, row.error) == (
        "test_a_tracked_call_records_argument_paths_and_passes_the_result.<locals>.calibrate",
        "success",
        None,
    )
    assert inputs_of(dpt_env, row.uuid) == sorted([raw.as_uri(), flat.as_uri()])
    assert outputs_of(dpt_env, row.uuid) == [cal.as_uri()]
    assert edges(dpt_env) == sorted([(raw.as_uri(), cal.as_uri()), (flat.as_uri(), cal.as_uri())])
    assert inspect.signature(calibrate) == inspect.signature(calibrate.__wrapped__)  # type: ignore[attr-defined]


def test_literal_paths_a_name_and_a_failure_with_its_error(dpt_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.toml").write_text("gain = 2")
    Path("lookup").write_text("table")

    @dpt_core.tracked(inputs=["config.toml", Path("lookup")], outputs="result", name="reduce")
    def reduce(result: str | None, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("no convergence")
        if result:
            Path(result).write_text("done")

    reduce("out.txt")
    reduce(None)  # an argument that is None names nothing to record
    with pytest.raises(RuntimeError, match="no convergence"):
        reduce("never.txt", fail=True)
    rows = runs(dpt_env)
    assert [(r.job, r.status) for r in rows] == [
        ("reduce", "success"),
        ("reduce", "success"),
        ("reduce", "failed"),
    ]
    assert rows[2].error == "RuntimeError: no convergence"
    expected_inputs = sorted([(tmp_path / "config.toml").as_uri(), (tmp_path / "lookup").as_uri()])
    assert all(inputs_of(dpt_env, r.uuid) == expected_inputs for r in rows)
    assert outputs_of(dpt_env, rows[0].uuid) == [(tmp_path / "out.txt").as_uri()]
    assert outputs_of(dpt_env, rows[1].uuid) == []
    assert outputs_of(dpt_env, rows[2].uuid) == []  # outputs only after a return


def test_bare_decorator_nesting_and_kwargs(dpt_env, tmp_path):
    @dpt_core.tracked
    def inner() -> str:
        return "x"

    @dpt_core.tracked(outputs="target")
    def outer(**options: Path) -> str:
        for path in options.values():
            path.write_text(inner())
        return "ok"

    target = tmp_path / "t.txt"
    assert outer(target=target) == "ok"
    assert outer(other=tmp_path / "o.txt") == "ok"  # "target" not passed: nothing to record
    rows = runs(dpt_env)
    assert [r.job.rsplit(".", 1)[-1] for r in rows] == ["outer", "inner", "outer", "inner"]
    assert rows[1].parent_id == rows[0].id and rows[3].parent_id == rows[2].id
    assert outputs_of(dpt_env, rows[0].uuid) == [target.as_uri()]
    assert outputs_of(dpt_env, rows[2].uuid) == []


def test_async_functions_are_awaited_inside_their_invocation(dpt_env, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("1,2")
    dst = tmp_path / "out.csv"

    @dpt_core.tracked(inputs="source", outputs="dest", name="async-copy")
    async def copy(source: Path, dest: Path) -> int:
        await asyncio.sleep(0)
        assert dpt_core.get_tracker().current() is not None
        dest.write_text(source.read_text())
        return 7

    assert inspect.iscoroutinefunction(copy)
    assert asyncio.run(copy(src, dst)) == 7
    (row,) = runs(dpt_env)
    assert (row.job, row.status) == ("async-copy", "success")
    assert edges(dpt_env) == [(src.as_uri(), dst.as_uri())]


def test_a_call_that_does_not_fit_the_signature_raises_pythons_error_and_records_nothing(
    dpt_env,
):
    @dpt_core.tracked(inputs="path")
    def load(path: str) -> None:
        pass

    with pytest.raises(TypeError, match="unexpected keyword"):
        load(paht="x")  # type: ignore[call-arg]
    assert runs(dpt_env) == []


def test_bad_declarations_are_clear_errors_at_decoration_time():
    def f(raw: str, *paths: str) -> None:
        pass

    with pytest.raises(
        TypeError, match=r"'rwa' is not a parameter of .*f \(raw, paths\).*Path\('rwa'\)"
    ):
        dpt_core.tracked(inputs="rwa")(f)
    with pytest.raises(TypeError, match="name a single parameter"):
        dpt_core.tracked(inputs="paths")(f)
    with pytest.raises(TypeError, match="neither a parameter name nor a path"):
        dpt_core.tracked(outputs=[3])(f)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="non-empty string"):
        dpt_core.tracked(name="")(f)

    def gen():
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        dpt_core.tracked(gen)
