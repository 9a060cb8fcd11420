"""``dpt plugins``, ``dpt spool``, ``dpt doctor``."""

from __future__ import annotations

from typing import Any

import click

from dpt_core.cli import CliError, echo_json, json_option, settings


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List loaded plugins and the hooks each implements."""
    from dpt_core.plugins import load_plugins, plugin_listing

    load_plugins(settings().load_plugins)
    rows = plugin_listing()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        origin = "built-in" if row["builtin"] else (row["distribution"] or row["module"])
        click.echo(f"{row['name']} ({origin}): {', '.join(row['hooks'])}")


@click.group()
def spool() -> None:
    """Inspect and replay events kept while the database was unreachable."""


@spool.command()
@json_option
def status(as_json: bool) -> None:
    """How many events wait in the spool, per database they are for.

    Events wait for the database they were meant for and replay only into it (at its
    next successful write, or by 'dpt spool replay' with it configured). Events spooled
    while the configuration was broken wait as 'unconfigured'.
    """
    from dpt_core.spool import Spool, target_key

    s = settings()
    data = Spool(s.spool_dir).status().to_dict()
    current = target_key(s.database_url)
    for target in data["databases"]:
        target["current"] = target["key"] == current
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"{data['events']} event(s) in {data['batches']} batch(es), {data['files']} file(s), "
        f"{data['bytes']} bytes in {data['directory']}"
    )
    for target in data["databases"]:
        name = target["database"] or "unconfigured (no database named: replayed by hand)"
        mark = " (the configured database)" if target["current"] else ""
        click.echo(f"  {target['events']} event(s) for {name}{mark}")
    if data["bad_files"]:
        click.echo(f"{data['bad_files']} file(s) of unreadable lines (*.bad) kept for inspection")


@spool.command()
@click.option(
    "--bad",
    is_flag=True,
    help="Record the batches the database rejected for good (kept in *.bad files), once "
    "their cause is fixed; a batch rejected again stays, with the new error.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --bad: say what would be recorded (runs, products, the error kept), change nothing.",
)
@json_option
def replay(bad: bool, dry_run: bool, as_json: bool) -> None:
    """Record the events spooled for the configured database (safe to run twice).

    Also records, into it, events spooled while the configuration was broken (they
    name no database). Events meant for other databases stay until those are
    configured: 'dpt spool status' lists them.

    With --bad, records instead the batches the database once rejected for good, each
    in its own transaction; exits 1 when any is rejected again. Unreadable lines stay in
    their *.bad file for inspection.
    """
    from dpt_core.spool import Spool
    from dpt_core.store.plugin import current_store

    if dry_run and not bad:
        raise CliError("--dry-run goes with --bad: 'dpt spool replay --bad --dry-run'", 2)
    store = current_store(settings())
    if bad:
        _replay_bad(store, dry_run, as_json)
        return
    count = 0
    try:
        for spool_ in [store.spool, *store.spool.unconfigured()]:
            count += store.replay(spool_)
    except Exception as exc:
        from dpt_core.store.engine import describe_db_error

        raise CliError(
            f"replay stopped, the rest stays spooled: {describe_db_error(exc)}", 1
        ) from None
    elsewhere = Spool(store.spool.root).status().events
    if as_json:
        echo_json({"replayed": count})
    else:
        click.echo(f"replayed {count} event(s)")
    if elsewhere:
        click.echo(
            f"{elsewhere} event(s) wait for other databases: see 'dpt spool status'", err=True
        )


@spool.command()
@click.option(
    "--follow",
    is_flag=True,
    help="Keep draining as events arrive, until interrupted (Ctrl-C or SIGTERM): the "
    "writer for processes that run with DPT_WRITE=deferred.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="With --follow: seconds between looks at the spool.",
)
@json_option
def drain(follow: bool, interval: float, as_json: bool) -> None:
    """Write the events waiting in the spool for the configured database, then delete them.

    Every process's spool file is taken, those of running processes too (each file is
    claimed under its lock, so a process appending meanwhile starts a new one): this is
    the writer for processes that only spool (DPT_WRITE=deferred). Safe to run twice
    and beside other writers: events are idempotent. With --follow it keeps going; a
    database that goes away is waited for, the events staying in the spool. SIGTERM (a
    service manager stopping it) ends it as Ctrl-C does.
    """
    import time

    from dpt_core.store.plugin import current_store

    if follow:
        _stop_on_sigterm()
    store = current_store(settings())
    count = 0
    wait = interval
    try:
        while True:
            try:
                count += store.replay()
                wait = interval
            except Exception as exc:
                from dpt_core.store.engine import describe_db_error

                if not follow:
                    raise CliError(
                        f"drain stopped, the rest stays spooled: {describe_db_error(exc)}", 1
                    ) from None
                wait = min(max(wait * 2, 1.0), 60.0)
                click.echo(
                    f"dpt: cannot write ({describe_db_error(exc)}); trying again in {wait:g} s",
                    err=True,
                )
            if not follow:
                break
            time.sleep(wait)
    except KeyboardInterrupt:  # --follow ends here; what was taken is written or spooled
        pass
    if as_json:
        echo_json({"drained": count})
    else:
        click.echo(f"drained {count} event(s)")


def _stop_on_sigterm() -> None:
    """SIGTERM interrupts as Ctrl-C does (KeyboardInterrupt): a batch being written is
    rolled back and stays spooled, and the count is printed."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _replay_bad(store: Any, dry_run: bool, as_json: bool) -> None:
    from dpt_core.spool import replay_bad
    from dpt_core.store.engine import describe_db_error
    from dpt_core.store.plugin import is_transient

    try:
        batches = replay_bad(
            [store.spool, *store.spool.unconfigured()],
            store.record,
            is_transient,
            dry_run=dry_run,
        )
    except Exception as exc:
        raise CliError(
            f"replay stopped, the rest stays in the *.bad files: {describe_db_error(exc)}", 1
        ) from None
    rejected = [b for b in batches if b.outcome == "rejected"]
    if as_json:
        echo_json({"dry_run": dry_run, "batches": [b.to_dict() for b in batches]})
    else:
        for b in batches:
            where = f"{b.file}:{b.line}"
            if b.outcome == "unreadable":
                click.echo(f"unreadable    {where} (kept as it is)")
                continue
            runs = ", ".join(f"{job or '?'} ({uuid[:8]})" for uuid, job in b.runs)
            click.echo(f"{b.outcome:<13} {where}: {b.events} event(s); runs: {runs or '-'}")
            for uri in b.products[:10]:
                click.echo(f"                {uri}")
            if len(b.products) > 10:
                click.echo(f"                ... {len(b.products) - 10} more product(s)")
            click.echo(f"                rejected before: {b.error}")
            if b.new_error:
                click.echo(f"                rejected again: {b.new_error}")
        done = sum(b.events for b in batches if b.outcome in ("recorded", "would_record"))
        verb = "would record" if dry_run else "recorded"
        click.echo(
            f"{verb} {done} event(s) of {len(batches)} quarantined line(s)"
            + (f"; {len(rejected)} batch(es) rejected again" if rejected else "")
        )
    if rejected:
        raise SystemExit(1)


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """Check the configuration, the database, the schema and the spool.

    Also advises when the database keeps no up-to-date planner statistics for dpt's
    tables (PostgreSQL with autovacuum off, InnoDB without automatic recalculation):
    advice does not make the check fail.
    """
    from dpt_core.errors import DptError
    from dpt_core.spool import Spool
    from dpt_core.store.engine import safe_url

    checks: list[dict[str, object]] = []
    ok = True
    try:
        s = settings()
        checks.append(
            {
                "check": "config",
                "ok": True,
                "detail": str(s.config_file or "defaults and DPT_* variables"),
            }
        )
        from dpt_core.store.plugin import current_store

        eng = current_store(s).engine
        checks.append({"check": "database", "ok": True, "detail": safe_url(eng.url)})
        checks.append(_statistics(eng))
        spooled = Spool(s.spool_dir, s.database_url).status().events
        elsewhere = Spool(s.spool_dir).status().events - spooled
        detail = f"{spooled} event(s) waiting"
        if elsewhere:
            detail += f"; {elsewhere} more for other databases ('dpt spool status')"
        checks.append({"check": "spool", "ok": spooled == 0, "detail": detail})
        ok = spooled == 0
        checks.append(_running_runs(eng, Spool(s.spool_dir, s.database_url)))
    except DptError as exc:
        checks.append({"check": "setup", "ok": False, "detail": str(exc)})
        ok = False
    if as_json:
        echo_json(checks)
    else:
        for c in checks:
            mark = "FAIL" if not c["ok"] else "advice" if c.get("advice") else "ok"
            click.echo(f"[{mark}] {c['check']}: {c['detail']}")
            if c.get("advice"):
                click.echo(f"    advice: {c['advice']}")
    if not ok:
        raise SystemExit(1)


def _running_runs(engine: Any, spool: Any) -> dict[str, object]:
    """Close this host's runs whose process died (but for those whose events still wait in
    ``spool``); name the runs still running elsewhere."""
    from dpt_core.process import hostname
    from dpt_core.store.liveness import close_dead_runs, running_elsewhere

    host = hostname()
    closed = close_dead_runs(engine, host, lambda: spool.pids_waiting(host))
    others = running_elsewhere(engine, host)
    detail = f"{len(closed)} run(s) of this host closed as crashed (their process was gone)"
    check: dict[str, object] = {"check": "running", "ok": True, "detail": detail}
    if others:
        listed = "; ".join(
            f"{r.runs} on {r.host or 'no host (recorded for another process)'} since "
            f"{r.oldest_started_at:%Y-%m-%d %H:%M}"
            if r.oldest_started_at
            else f"{r.runs} on {r.host or 'no host'}"
            for r in others
        )
        check["advice"] = (
            f"runs still running that this host cannot check: {listed}; 'dpt doctor' on "
            "those hosts closes the ones whose process is gone"
        )
    return check


def _statistics(engine: Any) -> dict[str, object]:
    """The planner-statistics check: advice only, never a failure of ``dpt doctor``."""
    from sqlalchemy.exc import SQLAlchemyError

    from dpt_core.store.engine import describe_db_error
    from dpt_core.store.statistics import check_statistics

    try:
        return check_statistics(engine).to_dict()
    except SQLAlchemyError as exc:
        return {
            "check": "statistics",
            "ok": True,
            "detail": f"not checked: {describe_db_error(exc)}",
        }


def register(cli: click.Group) -> None:
    for command in (plugins, spool, doctor):
        cli.add_command(command)
