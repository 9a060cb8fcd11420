"""A TCP proxy on 127.0.0.1 that a test can cut, refuse, black-hole and restore.

It sits between dpt and the real database server and lets a test play the
network faults dpt must survive:

- :meth:`FaultProxy.cut`: every open connection is reset (RST), new ones are
  forwarded again at once (a server restart, a NAT dropping a flow);
- :meth:`FaultProxy.refuse`: open connections are reset and the port stops
  listening, so connecting fails with "connection refused" (server down);
- :meth:`FaultProxy.blackhole`: new connections are accepted and then never
  answered (a hung server, a firewall that swallows packets);
- :meth:`FaultProxy.freeze`: open connections stop carrying bytes in either
  direction but stay open, and new ones are black-holed (the server hangs
  mid-session);
- :meth:`FaultProxy.restore`: back to forwarding, on the same port.

One selector thread does all the work; the public methods queue a command and
wait until the thread has applied it, so after ``cut()`` returns the
connections really are gone.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field

FORWARD, REFUSE, BLACKHOLE, FREEZE = "forward", "refuse", "blackhole", "freeze"


@dataclass
class ProxyStats:
    accepted: int = 0
    forwarded_connections: int = 0
    held_connections: int = 0
    connections_reset: int = 0
    bytes_forwarded: int = 0
    faults: list[str] = field(default_factory=list)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` until told otherwise."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.stats = ProxyStats()
        self.mode = FORWARD
        self._selector = selectors.DefaultSelector()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------

    def url_for(self, base_url: str) -> str:
        """``base_url`` (a SQLAlchemy URL to the upstream) pointed at this proxy."""
        from sqlalchemy.engine import make_url

        return (
            make_url(base_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def cut(self) -> None:
        self._command("cut")

    def refuse(self) -> None:
        self._command(REFUSE)

    def blackhole(self) -> None:
        self._command(BLACKHOLE)

    def freeze(self) -> None:
        self._command(FREEZE)

    def restore(self) -> None:
        self._command(FORWARD)

    @property
    def open_connections(self) -> int:
        return len(self._peer) // 2

    def close(self) -> None:
        if not self._stopped:
            self._command("stop")
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the selector thread --------------------------------------------------------------

    def _command(self, name: str) -> None:
        done = threading.Event()
        self._commands.put((name, done))
        self._wake_w.send(b"x")
        if not done.wait(timeout=10):
            raise RuntimeError(f"fault proxy did not apply {name!r}")

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _unlisten(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with an RST, as a dead server or a dropped flow looks to the other end."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _drop_all(self) -> None:
        for sock in list(self._peer):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            self._reset(sock)
        self.stats.connections_reset += len(self._peer) // 2 + len(self._held)
        self._peer.clear()
        for sock in self._held:
            self._reset(sock)
        self._held.clear()

    def _apply(self, name: str) -> None:
        if name != "stop":
            self.stats.faults.append(name)
        if name in ("cut", REFUSE):
            self._drop_all()
            if name == REFUSE:
                self._unlisten()
                self.mode = REFUSE
            return
        if name == FORWARD:
            if self.mode == FREEZE:
                self._drop_all()
            for sock in self._held:
                self._reset(sock)
            self._held.clear()
            if self._listener is None:
                self._listen()
            self.mode = FORWARD
            return
        if name == BLACKHOLE:
            if self._listener is None:
                self._listen()
            self.mode = BLACKHOLE
            return
        if name == FREEZE:
            for sock in self._peer:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
            self.mode = FREEZE
            return
        if name == "stop":
            self._drop_all()
            self._unlisten()
            self._stopped = True

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.stats.accepted += 1
        if self.mode in (BLACKHOLE, FREEZE):
            self.stats.held_connections += 1
            self._held.append(client)  # accepted, never read, never answered
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._reset(client)
            return
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, "pump")
        self._peer[client] = server
        self._peer[server] = client
        self.stats.forwarded_connections += 1

    def _close_pair(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peer.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _pump(self, sock: socket.socket) -> None:
        other = self._peer.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(sock)
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._close_pair(sock)
            return
        self.stats.bytes_forwarded += len(data)

    def _loop(self) -> None:
        while not self._stopped:
            for key, _ in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                    while not self._commands.empty():
                        name, done = self._commands.get()
                        self._apply(name)
                        done.set()
                    if self._stopped:
                        break
                elif key.data == "accept":
                    if self._listener is not None and key.fileobj is self._listener:
                        self._accept()
                elif key.data == "pump" and self.mode != FREEZE:
                    self._pump(key.fileobj)  # type: ignore[arg-type]
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
