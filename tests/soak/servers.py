"""Servers a fault run starts and breaks on purpose: a Redis without persistence to restart, and
a TCP gate on loopback in front of PostgreSQL that can refuse connections (the machine's
PostgreSQL service itself is never stopped)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from redis import Redis

from tests.dovecot import close_socket, unused_port


class PrivateRedis:
    """A redis-server of our own, without persistence, to stop and start again (empty) on the same port."""

    def __init__(self, workdir: Path):
        self.port, self.workdir, self.proc = unused_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.up():
            if time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)
        return self

    def up(self) -> bool:
        try:
            return Redis.from_url(self.url, socket_connect_timeout=1).ping()
        except Exception:  # noqa: BLE001 - not yet
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a server that went away does, after a shutdown: the
    database would otherwise keep that session (and its locks) for hours."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    close_socket(sock)


class DatabaseGate:
    """TCP on 127.0.0.1:`port` passed to the database server at `upstream`. refuse(): every open
    connection is reset and new ones are refused (nothing listens), as while PostgreSQL is down;
    open(): it listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = unused_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.open()

    def open(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="database-gate", daemon=True).start()

    def refuse(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
        if listener is not None:
            _reset(listener)
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def close(self) -> None:
        self.refuse()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # refused or closed
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _reset(client)
                    _reset(server)
                    return
                self._pairs.add((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, (client, server)), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, pair) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:  # one side ended: so does the other
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
