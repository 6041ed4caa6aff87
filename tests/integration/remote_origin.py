"""A hostile HTTPS origin on loopback, a process of its own with a certificate of its own (trusted
through SSL_CERT_FILE, as a deployment trusts its CA): what the tests of datasets by URI and
bench/remote_stall.py point regtrain at.

Paths (any name after the prefix; the suffix gives the format):
- `/slow/…`: answers a byte at a time, one per TRICKLE_S, status line included (HEAD and GET);
- `/slow-body/…`: HEAD answers at once (200, a Content-Length); GET sends its headers at once,
  then the body a byte per TRICKLE_S (a job gets past its submit and trickles in the worker);
- `/bomb.csv`: `Content-Encoding: gzip`, about 1 MB on the wire that decodes to 1 GiB of zeros;
- `/bomb-stacked.csv`: `Content-Encoding: gzip, gzip`, the same gzipped again (about 2.5 kB);
- `/data.csv`: a small CSV, at once;
- `/count`: JSON `{"slow": exchanges on /slow or /slow-body in progress, "slow_ended": those
  ended (the client gave up or the body was sent)}`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

TRICKLE_S = 1.0

SERVER = textwrap.dedent(
    """
    import asyncio, gzip, json, ssl, struct, sys, zlib
    cert, key, trickle_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    CSV = b"a,b,label\\n" + b"".join(f"{i * 0.1:.1f},{(i * 7) % 5},{'xy'[i % 2]}\\n".encode() for i in range(60))
    state = {"slow": 0, "slow_ended": 0}

    def gzip_of_zeros(mib):
        # full flushes make each MiB's deflate blocks the same bytes: built in a fraction of a
        # second, where compressing a GiB takes several
        z = bytes(1 << 20)
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        block = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
        block = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
        last = c.compress(z) + c.flush()
        crc = 0
        for _ in range(mib):
            crc = zlib.crc32(z, crc)
        trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
        return b"\\x1f\\x8b\\x08\\x00\\x00\\x00\\x00\\x00\\x02\\xff" + block * (mib - 1) + last + trailer

    BOMB = gzip_of_zeros(1024)
    STACKED = gzip.compress(BOMB, 9)

    def response(status, headers, body=b""):
        lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\\r\\n".join(lines) + "\\r\\n\\r\\n").encode() + body

    async def trickle(writer, data, gone):
        for i in range(len(data)):
            if gone.done():
                return
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.wait([gone], timeout=trickle_s)

    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
        except Exception:
            writer.close()
            return
        method, path = head.split(b"\\r\\n", 1)[0].decode().split(" ")[:2]
        gone = asyncio.ensure_future(reader.read())  # b"" once the client has closed
        slow = path.startswith("/slow")
        if slow:
            state["slow"] += 1
        try:
            fixed = {"Connection": "close"}
            if path == "/count":
                body = json.dumps(state).encode()
                writer.write(response("200 OK", {**fixed, "Content-Length": len(body)}, body))
            elif path.startswith("/slow/"):
                body = CSV
                data = response("200 OK", {**fixed, "Content-Length": len(body)}, b"" if method == "HEAD" else body)
                await trickle(writer, data, gone)
            elif path.startswith("/slow-body/"):
                writer.write(response("200 OK", {**fixed, "Content-Length": len(CSV), "Content-Type": "text/csv"}))
                await writer.drain()
                if method != "HEAD":
                    await trickle(writer, CSV, gone)
            elif path in ("/bomb.csv", "/bomb-stacked.csv"):
                body, coding = (BOMB, "gzip") if path == "/bomb.csv" else (STACKED, "gzip, gzip")
                headers = {**fixed, "Content-Encoding": coding, "Content-Length": len(body)}
                writer.write(response("200 OK", headers, b"" if method == "HEAD" else body))
            elif path == "/data.csv":
                headers = {**fixed, "Content-Length": len(CSV), "ETag": '"v1"'}
                writer.write(response("200 OK", headers, b"" if method == "HEAD" else CSV))
            else:
                writer.write(response("404 Not Found", {**fixed, "Content-Length": 0}))
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            if slow:
                state["slow"] -= 1
                state["slow_ended"] += 1
            gone.cancel()
            writer.close()

    async def main():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=512)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


@dataclass(frozen=True)
class Origin:
    url: str  # https://localhost:PORT
    cert: Path  # what SSL_CERT_FILE names for every process that calls it

    def count(self) -> dict[str, int]:
        with httpx.Client(verify=ssl.create_default_context(cafile=self.cert), timeout=10) as http:
            return dict(http.get(f"{self.url}/count").json())

    def wait_for(self, key: str, at_least: int, timeout: float = 30) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.count()
            if seen[key] >= at_least or time.monotonic() > deadline:
                return seen
            time.sleep(0.1)


@contextmanager
def origin(folder: Path) -> Iterator[Origin]:
    """The origin's process (ended, with its process group, when the block ends)."""
    cert, key = folder / "origin-cert.pem", folder / "origin-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key), str(TRICKLE_S)],
        stdout=subprocess.PIPE,
        stderr=open(folder / "origin.log", "ab"),  # noqa: SIM115 (closed with the process)
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Origin(f"https://localhost:{port}", cert)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (VmHWM), MB."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Start the process's VmHWM afresh from its present RSS (Linux: clear_refs 5); False where
    the kernel does not allow it (then VmHWM is the lifetime's peak)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def as_json(r: httpx.Response) -> str:
    try:
        return json.dumps(r.json())
    except ValueError:
        return r.text
