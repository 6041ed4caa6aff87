"""A TCP relay on loopback that a test can take down and bring back on the same port: the
outage of a real server (connections refused, open ones cut) without the minutes a real
server takes to stop and start again on two loaded cores."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Forwards 127.0.0.1:port to target_port while up; refuses and cuts connections while down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener: socket.socket | None = None
        self.port = 0
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        """Close the listener (new connections are refused) and cut every open connection."""
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for c in self.open:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.open.update((client, server))
            for a, b, last in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, last), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, last: bool) -> None:
        """Copy src to dst until src ends; the server-to-client side, which ends last (the
        server closes once the client has), then closes the pair."""
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        if last:
            with self.lock:
                self.open.difference_update((src, dst))
            src.close()
            dst.close()
