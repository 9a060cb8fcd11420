"""Which process made a run, and whether that process is still alive.

An invocation started with this process's environment records a *process token*
(``Invocation.process``). When a later dpt process on the same host finds a run
still ``running`` whose process is gone — killed by SIGKILL, the OOM killer, a
reboot — it closes the run as ``crashed`` (see
:func:`dpt_core.store.liveness.close_dead_runs`): no run stays ``running`` after
its process ended.

On Linux the token is ``linux:<boot id>:<pid namespace>:<pid>:<start time>``, so a
pid reused by another process, or a reboot, is told apart from the original
process; a process of another pid namespace (another container sharing the host
name) cannot be judged from here. Elsewhere it is ``pid:<pid>``.
"""

from __future__ import annotations

import os
import sys
from typing import Final

_BOOT_ID: Final = "/proc/sys/kernel/random/boot_id"
_tokens: dict[int, str | None] = {}


def hostname() -> str:
    """This host's name, as ``socket.gethostname()`` gives it, without importing ``socket``
    on Linux (glibc's ``gethostname()`` is ``uname()``'s node name): a process that only
    spools its events pays for no network module."""
    if sys.platform == "linux":
        return os.uname().nodename
    import socket

    return socket.gethostname()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _pid_namespace(pid: int | str = "self") -> str | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    return link.removeprefix("pid:[").removesuffix("]")


def _start_ticks(pid: int) -> tuple[str, str] | None:
    """(start time in clock ticks since boot, state letter) of ``pid``, from /proc."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and ")"
    if len(fields) < 20:
        return None
    return fields[19], fields[0]


def process_token(pid: int | None = None) -> str | None:
    """The token of process ``pid`` (default: this one), or None when it cannot be made."""
    pid = os.getpid() if pid is None else pid
    if pid in _tokens:
        return _tokens[pid]
    token: str | None
    boot, namespace, started = _read(_BOOT_ID), _pid_namespace(), _start_ticks(pid)
    if boot and namespace and started:
        token = f"linux:{boot}:{namespace}:{pid}:{started[0]}"
    else:
        token = f"pid:{pid}"
    if pid == os.getpid():
        _tokens.clear()  # a forked child has a new pid: the parent's entry is stale there
        _tokens[pid] = token
    return token


def is_alive(token: str) -> bool | None:
    """Whether the process ``token`` names still runs on this host: True, False, or None
    when this process cannot tell (another pid namespace, an unknown token)."""
    kind, _, rest = token.partition(":")
    if kind == "linux":
        parts = rest.split(":")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        boot, namespace, pid, started = parts
        if boot != _read(_BOOT_ID):
            return False  # the host rebooted since
        if namespace != _pid_namespace():
            return None
        now = _start_ticks(int(pid))
        return now is not None and now[0] == started and now[1] not in ("Z", "X")
    if kind == "pid" and rest.isdigit():
        try:
            os.kill(int(rest), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return None
        return True
    return None
