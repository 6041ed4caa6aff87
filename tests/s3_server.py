"""A real S3-compatible server process on loopback (moto's standalone server), for the tests of
the artifact store, datasets by URI and the fleet without a shared file system. The code under
test reaches it as production reaches a bucket: obstore, configured by the AWS_* variables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, logs: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(logs / "moto.log", "ab")  # noqa: SIM115 (closed in close())
        server = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended whole in close()
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint, timeout=1)
                break
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(
                        f"moto_server did not start:\n{(logs / 'moto.log').read_text()}"
                    ) from None
                time.sleep(0.1)

    @property
    def env(self) -> dict[str, str]:
        """The standard variables that point a client (obstore here) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def bucket(self) -> str:
        """A new, empty bucket of the caller's own."""
        name = f"rt-{uuid.uuid4().hex[:12]}"
        r = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        r.raise_for_status()
        return name

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
