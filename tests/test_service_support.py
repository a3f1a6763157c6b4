"""Helpers for the service tests: job functions run by real Ray workers, servers, clients.

The job functions are imported by the worker actors as `test_service_support:<name>` (the tests
put this folder on the workers' PYTHONPATH). Their behaviour is chosen by the case label, and
they coordinate with the tests through marker objects in the same store (`testctl/...`), so
they work on any node of a multi-node cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import trimesh
import uvicorn

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import JobSpec
from occlutrace_compute.storage.base import ObjectStore

TESTS_DIR = Path(__file__).resolve().parent
JOB_FN = "test_service_support:scripted_job"
RELEASE_WAIT_S = 60.0


def ctl_key(job_id: str, name: str) -> str:
    return f"testctl/{job_id}/{name}"


def scripted_job(spec: JobSpec, store: ObjectStore) -> dict:
    """Reads the inputs, writes outputs like the pipeline does; the case label scripts faults.

    hold-*: on the first attempt, announce `started-1` (with the pid) and wait for `release`;
    poison-*: kill the worker process every time; bad-*: reject the input;
    flaky-*: raise on the first attempt; slowN-*: take N tenths of a second;
    outage-*: on its first 3 runs, wait for `release-N` until the store fails, leave a file
    `outage_marker(job_id, N)` on this machine's disk, and let the store error go;
    real-*: the real pipeline, `occlutrace_compute.jobs.runner.run_job`.
    """
    if spec.case.startswith("real-"):
        from occlutrace_compute.jobs.runner import run_job

        return run_job(spec, store)
    attempt = 1 + sum(1 for k in store.list(f"testctl/{spec.job_id}/") if "/started-" in k)
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    store.put(ctl_key(spec.job_id, f"started-{attempt}"), json.dumps({"pid": os.getpid(), "node": node}).encode())
    label = spec.case
    if label.startswith("poison-"):
        os._exit(3)
    if label.startswith("bad-"):
        raise InputRejected(spec.inputs[min(spec.inputs)], "scripted rejection")
    if label.startswith("flaky-") and attempt == 1:
        raise RuntimeError("scripted failure on the first attempt")
    if label.startswith("hold-") and attempt == 1:
        deadline = time.monotonic() + RELEASE_WAIT_S
        while time.monotonic() < deadline and not store.exists(ctl_key(spec.job_id, "release")):
            time.sleep(0.05)
    if label.startswith("outage-") and attempt <= 3:
        deadline = time.monotonic() + RELEASE_WAIT_S
        try:
            while time.monotonic() < deadline and not store.exists(ctl_key(spec.job_id, f"release-{attempt}")):
                time.sleep(0.05)
        except Exception:
            outage_marker(spec.job_id, attempt).touch()
            raise
    if label.startswith("slow"):
        time.sleep(int(label[4 : label.index("-")]) / 10)
    digests = {role: hashlib.sha256(store.get(key)).hexdigest() for role, key in spec.inputs.items()}
    prefix = f"tenants/{spec.tenant}/cases/{spec.case}/jobs/{spec.job_id}/outputs/"
    result = {"kind": spec.kind, "status": "succeeded", "inputs": digests, "timings_seconds": {"load": 0.001}}
    if spec.kind == "pair":  # the fields summaries read, shaped like the pipeline's result
        result["metrics"] = {"iterations": 12, "rmse_mm": 0.02, "fitness": 0.9, "confidence": 1.0, "doubtful": False}
        result["deviation"] = {"rms_mm": 0.03, "within_tolerance_share": 0.95}
    else:
        side = {"contact_area_mm2": 1.5}
        result["registration"] = {"confidence": 1.0, "doubtful": False, "metrics": {"iterations": 12, "rmse_mm": 0.02}}
        result["contacts"] = {"per_side": {"left": side, "right": side}, "max_penetration_mm": 0.0}
    store.put(prefix + "result.json", json.dumps(result).encode(), "application/json")
    store.put(prefix + "aligned.stl", store.get(spec.inputs[min(spec.inputs)]))  # fixed / bite1
    return result


def outage_marker(job_id: str, run: int) -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"occlutrace-outage-{job_id}-{run}"


def mesh_bytes(seed: int = 0, fmt: str = "stl") -> bytes:
    """A small closed surface, a few cm across (inside the mesh loader's unit checks)."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=12.0)
    sphere.vertices += np.random.default_rng(seed).normal(0, 0.2, sphere.vertices.shape)
    return sphere.export(file_type=fmt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    path.write_text("# tenant token\n" + "".join(f"{tenant} {token}\n" for token, tenant in tokens.items()))
    return path


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a thread; stop() and start() again keep the port."""

    def __init__(self, app_factory: Callable[[], object], port: int | None = None) -> None:
        self.app_factory = app_factory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        config = uvicorn.Config(
            self.app_factory(),
            host="127.0.0.1",
            port=self.port,
            access_log=False,
            log_level="warning",
            limit_concurrency=1000,
            backlog=1024,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, 30, "uvicorn did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(30)
            self._server = None


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.05):
    """Poll `condition` until truthy (returned) or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s: {what}")


class Api:
    """A thin bearer-token client for the tests."""

    def __init__(self, base: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=30)

    def upload(self, case: str, name: str, data: bytes) -> httpx.Response:
        return self.http.post(f"/v1/cases/{case}/files", files={"file": (name, data)})

    def pair(self, case: str, seed: int = 0, **extra) -> dict:
        for role, s in (("fixed", seed), ("moving", seed + 1)):
            r = self.upload(case, f"{role}.stl", mesh_bytes(s))
            assert r.status_code == 201, r.text
        r = self.http.post(
            "/v1/jobs",
            json={"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}, **extra},
        )
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout_s: float = 60) -> dict:
        return wait_for(
            lambda: (j := self.job(job_id))["state"] in states and j,
            timeout_s,
            f"job {job_id} to reach {states}",
            every_s=0.1,
        )


@contextlib.contextmanager
def ray_session(**init_kwargs) -> Iterator[None]:
    """One local Ray per module, with this folder importable by the workers."""
    import ray

    env = {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])}
    ray.init(
        num_cpus=init_kwargs.pop("num_cpus", 2),
        include_dashboard=False,
        log_to_driver=False,
        namespace=init_kwargs.pop("namespace", "occlutrace-test"),
        runtime_env={"env_vars": env},
        **init_kwargs,
    )
    try:
        yield
    finally:
        ray.shutdown()


class Gate:
    """A TCP forwarder to 127.0.0.1:`upstream_port` that can be shut (an S3 outage) and reopened.

    While shut, new connections are closed at once and open ones are cut.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def shut(self) -> None:
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            _close(sock)

    def reopen(self) -> None:
        self.open = True

    def close(self) -> None:
        self._closed.set()
        self.shut()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self.open:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:  # ends at EOF or when the gate cuts the sockets
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class CallbackSink:
    """A real HTTP receiver on 127.0.0.1 that records every POST (headers, body)."""

    def __init__(self, fail_first: int = 0, tls: ssl.SSLContext | None = None) -> None:
        import http.server

        sink = self
        self.received: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if sink.fail_first > 0:
                    sink.fail_first -= 1
                    self.send_response(503)
                else:
                    sink.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
