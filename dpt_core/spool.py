"""A durable local queue for events the database could not take.

Each process appends to its own JSON-lines file (``<host>-<pid>.jsonl``) under
the spool directory, one ``write`` per batch followed by ``fsync``, holding an
exclusive ``flock`` on the file. Replay claims a file under the same lock,
records its batches in order and deletes it; a line cut short by a crash is
moved to a ``.bad`` file, never silently dropped. Replaying twice is harmless:
events are idempotent by UUID.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpt_core.events import Event, event_from_dict, event_to_dict

log = logging.getLogger("dpt")

SUFFIX = ".jsonl"


@dataclass(frozen=True)
class SpoolStatus:
    directory: str
    files: int
    batches: int
    events: int
    bytes: int
    bad_files: int


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def own_file(self) -> Path:
        return self.directory / f"{socket.gethostname()}-{os.getpid()}{SUFFIX}"

    def append(self, events: Sequence[Event]) -> None:
        """Durably append one batch (a JSON array on one line)."""
        line = json.dumps([event_to_dict(e) for e in events], ensure_ascii=False) + "\n"
        data = line.encode("utf-8", "surrogateescape")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            fd = os.open(self.own_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:  # replay took the file while we waited
                    continue
                os.write(fd, data)
                os.fsync(fd)
                return
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            self.directory.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime_ns, p.name)
        )

    def is_empty(self) -> bool:
        try:
            with os.scandir(self.directory) as entries:
                return not any(e.name.endswith(SUFFIX) for e in entries)
        except FileNotFoundError:
            return True

    def status(self) -> SpoolStatus:
        files = self.files()
        batches = events = size = 0
        for path in files:
            size += path.stat().st_size
            for batch in self._read(path, quarantine=False):
                batches += 1
                events += len(batch)
        bad = len(list(self.directory.glob("*.bad"))) if self.directory.is_dir() else 0
        return SpoolStatus(str(self.directory), len(files), batches, events, size, bad)

    def _read(self, path: Path, *, quarantine: bool) -> list[list[Event]]:
        batches: list[list[Event]] = []
        bad: list[bytes] = []
        for raw in path.read_bytes().splitlines():
            if not raw.strip():
                continue
            try:
                batches.append(
                    [event_from_dict(d) for d in json.loads(raw.decode("utf-8", "surrogateescape"))]
                )
            except (ValueError, TypeError, KeyError):
                bad.append(raw)
        if bad and quarantine:
            with open(path.with_suffix(".bad"), "ab") as handle:
                handle.write(b"\n".join(bad) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            log.warning(
                "dpt: %d unreadable spool line(s) kept in %s", len(bad), path.with_suffix(".bad")
            )
        return batches

    def replay(
        self,
        record: Callable[[Sequence[Event]], None],
        is_transient: Callable[[BaseException], bool] = lambda exc: True,
    ) -> int:
        """Record every spooled batch with ``record``, in order; returns the events replayed.

        When ``record`` fails for a reason that may pass (``is_transient``: the database
        went away again), replay stops and the file keeps exactly the batches not yet
        recorded. A batch the database rejects for good (bad data) is moved to a ``.bad``
        file with the error, so it never blocks the events behind it.
        """
        replayed = 0
        for path in self.files():
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    continue
                batches = self._read(path, quarantine=True)
                for done, batch in enumerate(batches):
                    try:
                        record(batch)
                    except Exception as exc:
                        if is_transient(exc):
                            self._rewrite(path, batches[done:])
                            raise
                        self._reject(path, batch, exc)
                        continue
                    replayed += len(batch)
                path.unlink()
            finally:
                os.close(fd)
        return replayed

    def _rewrite(self, path: Path, batches: Sequence[Sequence[Event]]) -> None:
        """Atomically replace ``path`` with ``batches`` (the caller holds its lock)."""
        temporary = path.with_suffix(".tmp")
        lines = [
            json.dumps([event_to_dict(e) for e in b], ensure_ascii=False) + "\n" for b in batches
        ]
        with open(temporary, "wb") as handle:
            handle.write("".join(lines).encode("utf-8", "surrogateescape"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def _reject(self, path: Path, batch: Sequence[Event], exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        line = json.dumps(
            {"error": reason, "events": [event_to_dict(e) for e in batch]}, ensure_ascii=False
        )
        with open(path.with_suffix(".bad"), "ab") as handle:
            handle.write(line.encode("utf-8", "surrogateescape") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "dpt: a spooled batch of %d event(s) was rejected by the database (%s); kept in %s",
            len(batch),
            reason,
            path.with_suffix(".bad"),
        )
