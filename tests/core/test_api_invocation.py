"""``dpt_core.invocation()`` (with and async with) and ``dpt_core.read()``, on a real database."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import dpt_core
from dpt_core.uri import normalize_uri


def runs(env):
    return env.rows(
        "SELECT id, uuid, job, task, status, parent_id, error, parameters, code_version "
        "FROM invocations ORDER BY id"
    )


def inputs_of(env, run_uuid: str) -> list[str]:
    return sorted(
        r.uri
        for r in env.rows(
            "SELECT p.uri FROM invocation_inputs ii JOIN invocations i ON i.id = ii.invocation_id "
            "JOIN data_product_versions v ON v.id = ii.version_id "
            "JOIN data_products p ON p.id = v.product_id WHERE i.uuid = :u",
            u=run_uuid,
        )
    )


def outputs_of(env, run_uuid: str) -> list[str]:
    return sorted(
        r.uri
        for r in env.rows(
            "SELECT p.uri FROM data_product_versions v JOIN invocations i ON i.id = v.produced_by_id "
            "JOIN data_products p ON p.id = v.product_id WHERE i.uuid = :u",
            u=run_uuid,
        )
    )


def edges(env) -> list[tuple[str, str]]:
    return sorted(
        (r.parent, r.child)
        for r in env.rows(
            "SELECT pp.uri AS parent, cp.uri AS child FROM lineage_edges e "
            "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
            "JOIN data_products pp ON pp.id = pv.product_id "
            "JOIN data_product_versions cv ON cv.id = e.child_version_id "
            "JOIN data_products cp ON cp.id = cv.product_id"
        )
    )


def params(row):
    return json.loads(row.parameters) if isinstance(row.parameters, str) else row.parameters


# =========================================================================== sync


def test_invocation_returns_a_block_whose_with_gives_the_handle(dpt_env, tmp_path):
    raw, cal = tmp_path / "raw.fits", tmp_path / "cal.fits"
    raw.write_text("raw")
    block = dpt_core.invocation(
        "calibrate", task="ccd1", parameters={"gain": 1.5}, code_version="v7"
    )
    assert isinstance(block, dpt_core.InvocationBlock)
    assert runs(dpt_env) == []  # nothing is recorded before the block is entered
    with block as inv:
        assert isinstance(inv, dpt_core.InvocationHandle)
        assert dpt_core.get_tracker().current() is inv
        inv.read(raw)
        cal.write_text("cal")
        inv.write(cal)
    assert dpt_core.get_tracker().current() is None
    (row,) = runs(dpt_env)
    assert (row.uuid, row.job, row.task, row.status, row.code_version) == (
        inv.uuid,
        "calibrate",
        "ccd1",
        "success",
        "v7",
    )
    assert params(row) == {"gain": 1.5}
    assert edges(dpt_env) == [(raw.as_uri(), cal.as_uri())]


def test_a_block_that_raises_is_failed_and_a_block_is_entered_once(dpt_env):
    block = dpt_core.invocation("divide")
    with pytest.raises(ZeroDivisionError), block:
        1 / 0  # noqa: B018
    (row,) = runs(dpt_env)
    assert row.status == "failed" and row.error.startswith("ZeroDivisionError")
    with pytest.raises(RuntimeError, match="entered once"), block:
        pass
    assert len(runs(dpt_env)) == 1


def test_invocation_as_a_decorator_is_a_clear_error_pointing_at_tracked(dpt_env):
    with pytest.raises(TypeError, match=r"not a decorator.*@dpt_core\.tracked"):

        @dpt_core.invocation("job")
        def step() -> None:
            pass

    with pytest.raises(TypeError, match=r"@dpt_core\.tracked"):

        @dpt_core.invocation  # type: ignore[arg-type]
        def other() -> None:
            pass

    assert runs(dpt_env) == []


def test_read_joins_the_current_invocation(dpt_env, tmp_path):
    raw, out = tmp_path / "raw.csv", tmp_path / "out.csv"
    raw.write_text("a")
    out.write_text("b")
    with dpt_core.invocation("step") as inv:
        assert dpt_core.read(raw) == [normalize_uri(raw)]
        dpt_core.track(out)
    (row,) = runs(dpt_env)
    assert row.uuid == inv.uuid
    assert inputs_of(dpt_env, inv.uuid) == [raw.as_uri()]
    assert edges(dpt_env) == [(raw.as_uri(), out.as_uri())]


def test_read_outside_any_invocation_records_a_one_off_reading_run(dpt_env, tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("a")
    assert dpt_core.read() == []
    assert runs(dpt_env) == []  # nothing named: no empty run
    assert dpt_core.read(raw, metadata={"rows": 1}) == [raw.as_uri()]
    (row,) = runs(dpt_env)
    assert (row.task, row.status) == ("read", "success")
    assert inputs_of(dpt_env, row.uuid) == [raw.as_uri()]
    assert outputs_of(dpt_env, row.uuid) == []


# =========================================================================== async


def test_async_with_records_the_run_and_awaits_read_and_write(dpt_backend, dpt_env, tmp_path):
    raw, cal = tmp_path / "raw.fits", tmp_path / "cal.fits"
    raw.write_text("raw")

    async def calibrate() -> str:
        async with dpt_core.invocation("calibrate", parameters={"gain": 2}) as inv:
            assert isinstance(inv, dpt_core.AsyncInvocationHandle)
            assert await inv.read(raw) == [raw.as_uri()]
            cal.write_text("cal")
            assert await inv.write(cal) == [cal.as_uri()]
            return inv.uuid

    uuid = asyncio.run(calibrate())
    (row,) = runs(dpt_env)
    assert (row.uuid, row.job, row.status, params(row)) == (
        uuid,
        "calibrate",
        "success",
        {"gain": 2},
    )
    assert edges(dpt_env) == [(raw.as_uri(), cal.as_uri())]


def test_async_block_that_raises_is_failed_and_one_cancelled_is_cancelled(dpt_env):
    async def broken() -> None:
        async with dpt_core.invocation("broken"):
            raise ValueError("bad gain")

    with pytest.raises(ValueError):
        asyncio.run(broken())

    started = asyncio.Event

    async def cancelled() -> None:
        entered = started()

        async def body() -> None:
            async with dpt_core.invocation("slow"):
                entered.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    rows = runs(dpt_env)
    assert [(r.job, r.status) for r in rows] == [("broken", "failed"), ("slow", "cancelled")]
    assert rows[0].error == "ValueError: bad gain"


def test_the_current_invocation_follows_the_async_block_into_tasks_and_threads(dpt_env, tmp_path):
    files = [tmp_path / f"part{i}.csv" for i in range(3)]
    for f in files:
        f.write_text(f.name)

    async def flow() -> tuple[str, str]:
        async with dpt_core.invocation("flow") as outer:

            async def in_a_task(path) -> None:
                assert dpt_core.get_tracker().current() is outer.handle
                await asyncio.to_thread(dpt_core.track, path)  # a thread, context copied

            await asyncio.gather(*(in_a_task(f) for f in files))
            async with dpt_core.invocation("step") as inner:
                pass
            async with dpt_core.invocation() as joined:  # no job: joins the enclosing run
                assert joined.uuid == outer.uuid
        assert dpt_core.get_tracker().current() is None
        return outer.uuid, inner.uuid

    outer_uuid, inner_uuid = asyncio.run(flow())
    rows = {r.uuid: r for r in runs(dpt_env)}
    assert set(rows) == {outer_uuid, inner_uuid}  # no one-off run for the tracked files
    assert rows[inner_uuid].parent_id == rows[outer_uuid].id
    assert rows[outer_uuid].status == rows[inner_uuid].status == "success"
    assert outputs_of(dpt_env, outer_uuid) == sorted(f.as_uri() for f in files)


def test_async_write_does_not_block_the_event_loop(dpt_env, tmp_path):
    """A ticker coroutine keeps ticking while a large file is hashed and recorded.

    The hashing waits (in a ``dpt_hash`` plugin, on the worker thread) until the ticker
    has ticked 20 times: on a blocked loop the ticker could not tick, the wait would
    give up, and the test fails.
    """
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        block = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(64):
            out.write(block)
    ticked_enough = threading.Event()
    seen: dict[str, object] = {}

    class SlowHasher:
        @dpt_core.hookimpl
        def dpt_hash(self, uri, path):
            seen["thread"] = threading.current_thread()
            seen["ticks_waited"] = ticked_enough.wait(timeout=120)
            return None  # the built-in hasher then hashes the file

    async def main() -> int:
        ticks = 0
        goal: list[int] = []  # the tick count to reach while the file is being recorded

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if goal and ticks >= goal[0]:
                    ticked_enough.set()
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        async with dpt_core.invocation("hash-big") as inv:
            before = ticks
            goal.append(before + 20)
            await inv.write(big)
            during = ticks - before
        ticking.cancel()
        return during

    tracker = dpt_core.get_tracker()
    plugin = SlowHasher()
    tracker.pm.register(plugin, name="slow-hasher")
    try:
        during = asyncio.run(main())
    finally:
        tracker.pm.unregister(plugin)
    assert seen["ticks_waited"] is True
    assert seen["thread"] is not threading.main_thread()
    assert during >= 20
    recorded = dpt_env.scalar(
        "SELECT content_hash FROM data_product_versions v JOIN data_products p "
        "ON p.id = v.product_id WHERE p.uri = :u",
        u=big.as_uri(),
    )
    assert recorded == dpt_core.hash_file(big)
