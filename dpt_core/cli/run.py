"""``dpt run`` and ``dpt track``: record shell commands and files."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import click

from dpt_core.cli import CliError, progress


def _existing(paths: tuple[str, ...], what: str) -> None:
    """Refuse, before anything runs or is recorded, targets that cannot name a product."""
    from dpt_core.errors import InvalidTarget
    from dpt_core.uri import normalize_uri

    for path in paths:
        try:
            normalize_uri(path)
        except InvalidTarget as exc:
            raise CliError(f"{what} {exc}") from None
        if "://" in path:
            continue
        if not os.path.lexists(path):
            raise CliError(
                f"{what} {path} does not exist: check the path (relative to {os.getcwd()})"
            )
        if os.path.islink(path) and not os.path.exists(path):
            raise CliError(f"{what} {path} is a broken or looping symlink: fix the link")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--name", help="Job name (default: the command's program name).")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="PATH",
    help="A file the command reads (repeatable).",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="A file the command writes (repeatable).",
)
@click.option(
    "--outputs-from",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A file listing more outputs, one path a line (for many: recorded in chunks, "
    "with a progress bar on a terminal).",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter to record (repeatable).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    name: str | None,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    outputs_from: str | None,
    params: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run COMMAND and record it: environment, inputs and outputs with hashes.

    Exits with COMMAND's exit code. A failed command is recorded as failed
    and its outputs that exist are still recorded. Many outputs (--outputs-from)
    are recorded in chunks of 5000, memory staying flat. SIGINT, SIGTERM and SIGHUP
    are passed on to COMMAND and its end is recorded (cancelled). Inside
    COMMAND, dpt_core.track() and 'dpt track' attach to this run.

    \b
    Example:
      dpt run --name calibrate -i raw.fits -o cal.fits -- python cal.py raw.fits cal.fits
    """
    import dpt_core
    from dpt_core.collectors import RUN_ENV_VAR

    _existing(inputs, "input")
    _existing(tuple(o for o in outputs if "://" in o), "output")
    parameters: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param {item!r} is not KEY=VALUE")
        parameters[key] = value
    tracker = dpt_core.get_tracker()
    job = name or os.path.basename(command[0])
    handle = tracker.start(
        job,
        orchestrator="cli",
        command=list(command),
        parameters=parameters,
        # where the command ran (an inherited PWD may be stale): what a rebuild needs
        variables={"PWD": os.getcwd()},
    )
    handle.read(*inputs)
    env = dict(os.environ, **{RUN_ENV_VAR: handle.uuid})
    with _forwarding_signals() as forwarder:
        try:
            proc = forwarder.start(list(command), env)
        except OSError as exc:
            handle.finish("failed", error=f"cannot start {command[0]}: {exc.strerror}")
            raise CliError(
                f"cannot run {command[0]!r}: {exc.strerror}",
                127 if isinstance(exc, FileNotFoundError) else 126,
            ) from None
        stopped_by = forwarder.wait()
    returncode = proc.returncode
    missing = _write_outputs(handle, outputs, outputs_from)
    if returncode == 0 and not missing:
        handle.finish("success")
    elif returncode == 0:
        handle.finish("failed", error=f"declared output(s) not written: {missing}")
        click.echo(f"dpt: output(s) not written: {missing}", err=True)
        returncode = 1
    elif returncode < 0:
        sig = signal.Signals(-returncode)
        status = "cancelled" if sig in _STOP_SIGNALS else "crashed"
        handle.finish(status, error=f"killed by {sig.name}")
        returncode = 128 - returncode
    elif stopped_by is not None:
        handle.finish("cancelled", error=f"stopped by {stopped_by.name} (exit code {returncode})")
    else:
        handle.finish("failed", error=f"exit code {returncode}")
    sys.exit(returncode)


#: Most missing outputs named in the error (the rest are counted).
_MISSING_NAMED = 10


def _declared(outputs: tuple[str, ...], outputs_from: str | None) -> Iterator[str]:
    yield from outputs
    if outputs_from is not None:
        with open(outputs_from, encoding="utf-8") as listing:
            for line in listing:
                if line.strip():
                    yield line.rstrip("\n")


def _write_outputs(handle: Any, outputs: tuple[str, ...], outputs_from: str | None) -> str:
    """Record the declared outputs that exist, a chunk at a time (never all in memory),
    with a progress bar on a terminal for many; returns the missing ones, named (the
    first few) and counted, or "" when none is missing."""
    from dpt_core.tracker import WRITE_CHUNK

    total = len(outputs) + (_count_lines(outputs_from) if outputs_from else 0)
    missing: list[str] = []
    missed = 0
    done = 0
    with progress("dpt: recording outputs", shown=total > WRITE_CHUNK) as update:
        declared = _declared(outputs, outputs_from)
        while chunk := list(itertools.islice(declared, WRITE_CHUNK)):
            present = []
            for output in chunk:
                if "://" in output or os.path.exists(output):
                    present.append(output)
                else:
                    missed += 1
                    if len(missing) < _MISSING_NAMED:
                        missing.append(output)
            if present:
                handle.write(present)
            done += len(chunk)
            update(done, total)
    if not missed:
        return ""
    more = missed - len(missing)
    return ", ".join(missing) + (f" and {more} more" if more else "")


def _count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as listing:
        return sum(1 for line in listing if line.strip())


#: Signals that ask 'dpt run' to stop: forwarded to the command, whose end is then recorded.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _SignalForwarder:
    """Passes SIGINT, SIGTERM and SIGHUP sent to 'dpt run' on to its command (a scheduler
    stopping a job signals dpt, not the command), and the wait goes on, so the run's end
    is recorded whatever stopped it. Its handlers are in place before the command
    starts: a signal that came in between used to be lost (a parent's ``nohup``) or to
    end 'dpt run' with the run left running; one that comes before the command exists
    is passed on as soon as it does."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.received: list[signal.Signals] = []

    def __call__(self, signum: int, _frame: object) -> None:
        self.received.append(signal.Signals(signum))
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(command, env=env)
        if self.received:  # (it came while the command was being started)
            self(self.received.pop(), None)
        return self.proc

    def wait(self) -> signal.Signals | None:
        """Wait for the command; the last signal passed on to it, if any."""
        assert self.proc is not None
        while True:
            try:
                self.proc.wait()
                break
            except KeyboardInterrupt:  # SIGINT: Python's own handler raised it here
                self(signal.SIGINT, None)
        return self.received[-1] if self.received else None


@contextlib.contextmanager
def _forwarding_signals() -> Iterator[_SignalForwarder]:
    """A :class:`_SignalForwarder` handling SIGTERM and SIGHUP while the block runs."""
    forwarder = _SignalForwarder()
    previous = {sig: signal.signal(sig, forwarder) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield forwarder
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--parent",
    "parents",
    multiple=True,
    metavar="P",
    help="A product TARGETS derive from (repeatable).",
)
@click.option(
    "--meta",
    "metas",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata for the new versions (repeatable).",
)
def track(targets: tuple[str, ...], parents: tuple[str, ...], metas: tuple[str, ...]) -> None:
    """Record new versions of TARGETS (files or URIs), derived from --parent products.

    Inside 'dpt run' the versions belong to that run; otherwise to a
    one-off invocation of its own.
    """
    import dpt_core

    _existing(targets, "target")
    _existing(parents, "parent")
    metadata = {}
    for item in metas:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--meta {item!r} is not KEY=VALUE")
        metadata[key] = value
    for uri in dpt_core.track(*targets, parents=list(parents) or None, metadata=metadata or None):
        click.echo(uri)


def register(cli: click.Group) -> None:
    cli.add_command(run)
    cli.add_command(track)
