"""A real S3 HTTP server for tests: `moto_server` as a child process on 127.0.0.1.

Fixtures (imported by conftest.py, so every test module can use them):
  - `s3_server` (session): an `S3Endpoint` with endpoint URL + credentials of a running server;
  - `s3_bucket`: a fresh bucket name on it (buckets are created by the store on first use).
For outages, build your own `MotoServer` (stop() / start() on the same port) rather than
stopping the shared one. `CuttingProxy` drops a connection after N bytes (a mid-transfer
network failure). moto keeps everything in memory: a restarted server is empty.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 60.0  # moto imports a lot; the test machine's 2 cores are shared
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str = "occlutrace-test"
    secret_key: str = "occlutrace-test-secret"
    region: str = "us-east-1"

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The OCCLUTRACE_* variables that make open_store() use this server."""
        return {
            "OCCLUTRACE_STORE": f"s3://{bucket}/{prefix}".rstrip("/"),
            "OCCLUTRACE_S3_ENDPOINT": self.endpoint,
            "OCCLUTRACE_S3_ACCESS_KEY": self.access_key,
            "OCCLUTRACE_S3_SECRET_KEY": self.secret_key,
            "OCCLUTRACE_S3_REGION": self.region,
        }


class MotoServer:
    """One moto_server process; stop() and start() again keep the port (and lose the data)."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def info(self) -> S3Endpoint:
        return S3Endpoint(self.endpoint)

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"moto_server on port {self.port} is already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"moto_server exited at start:\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.endpoint}/", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # poll interval of a bounded readiness wait
        self.stop()
        raise RuntimeError(f"moto_server not answering after {START_TIMEOUT_S} s:\n{self._log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CuttingProxy:
    """A TCP proxy to `upstream_port` that closes a connection once `limit` bytes went one way.

    direction "up" cuts client->server traffic (an upload dies mid-body), "down" cuts
    server->client traffic (a download dies mid-body). Connections below the limit pass intact.
    """

    def __init__(self, upstream_port: int, limit: int, direction: str) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        self.upstream_port = upstream_port
        self.limit = limit
        self.direction = direction
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join(STOP_TIMEOUT_S)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(5)
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way == self.direction), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limited: bool) -> None:
        sent = 0
        try:
            while True:  # ends at EOF, on a socket error, or at the cut
                chunk = src.recv(65536)
                if not chunk:
                    break
                if limited and sent + len(chunk) >= self.limit:
                    dst.sendall(chunk[: self.limit - sent])
                    self.cuts += 1
                    break
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server.info


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> str:
    return f"test-{uuid.uuid4().hex[:20]}"
