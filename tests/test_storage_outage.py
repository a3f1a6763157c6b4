"""Failures: a stopped S3 server, a silent one, connections cut mid-transfer, a killed writer.

Each must end in StoreUnavailable within a bounded time, leave no partial object, and the store
must work again once the server is back. And the controller's staging sweeper stops with the app,
so a store stopped after it logs no failed sweep.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from s3server import CuttingProxy, MotoServer, S3Endpoint
from test_service_support import LiveServer, wait_for, write_tokens

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.storage import LocalStore, RetryPolicy, S3Store, StoreUnavailable
from occlutrace_compute.storage.keys import TEMP_PREFIX

# Default policy: 4 tries, backoff <= 0.1+0.2+0.4+jitter s, connection refused is immediate.
OUTAGE_BOUND_S = 5.0


def make_s3(endpoint: str, creds: S3Endpoint, bucket: str = "outage", **kw) -> S3Store:
    return S3Store(endpoint, creds.access_key, creds.secret_key, bucket, **kw)


def timed_failure(op) -> tuple[StoreUnavailable, float]:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        op()
    return info.value, time.monotonic() - start


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    """A server this module may stop and restart (the shared session one stays up)."""
    server = MotoServer(tmp_path_factory.mktemp("moto-outage"))
    server.start()
    yield server
    server.stop()


def test_server_outage_fails_fast_then_recovers(own_server: MotoServer) -> None:
    creds = own_server.info
    store = make_s3(own_server.endpoint, creds)
    store.put("tenants/t/cases/c/a", b"before")
    assert store.get("tenants/t/cases/c/a") == b"before"

    own_server.stop()
    ops = {
        "put": lambda: store.put("tenants/t/cases/c/b", b"during outage"),
        "put_if_absent": lambda: store.put_if_absent("tenants/t/cases/c/claim", b"during outage"),
        "get": lambda: store.get("tenants/t/cases/c/a"),
        "exists": lambda: store.exists("tenants/t/cases/c/a"),
        "list": lambda: store.list("tenants/t"),
        "delete": lambda: store.delete("tenants/t/cases/c/a"),
        "delete_prefix": lambda: store.delete_prefix("tenants/t/cases/c"),
    }
    for name, op in ops.items():
        error, elapsed = timed_failure(op)
        assert elapsed < OUTAGE_BOUND_S, f"{name} took {elapsed:.1f} s"
        message = str(error)
        assert "unavailable after 4 attempt(s)" in message and own_server.endpoint in message
        assert "Connection refused" in message
        assert creds.secret_key not in message

    own_server.start()  # same port; moto is in memory, so the bucket itself is gone
    assert not store.exists("tenants/t/cases/c/b")  # the put during the outage left nothing
    store.put("tenants/t/cases/c/b", b"after")  # the bucket is re-created on demand
    assert store.get("tenants/t/cases/c/b") == b"after"
    assert store.list("") == ["tenants/t/cases/c/b"]


def test_silent_server_times_out_instead_of_hanging(own_server: MotoServer) -> None:
    """A server that accepts connections but never answers (a hung proxy, a dead NAT)."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        policy = RetryPolicy(attempts=3, read_timeout_s=0.3, deadline_s=3.0)
        store = make_s3(f"http://127.0.0.1:{port}", own_server.info, retry=policy)
        error, elapsed = timed_failure(lambda: store.get("k"))
    # 3 tries x 0.3 s read timeout + backoff (0.1..0.2 + 0.2..0.4 s)
    assert 0.9 <= elapsed < 3.0
    assert "timed out" in str(error).lower()


def test_upload_cut_mid_body_leaves_the_old_object(own_server: MotoServer) -> None:
    direct = make_s3(own_server.endpoint, own_server.info, bucket="cut-up")
    direct.put("mesh.stl", b"old version")
    new = os.urandom(2_000_000)
    with CuttingProxy(own_server.port, limit=300_000, direction="up") as proxy:
        via_proxy = make_s3(proxy.endpoint, own_server.info, bucket="cut-up")
        assert via_proxy.get("mesh.stl") == b"old version"  # small transfers pass
        _, elapsed = timed_failure(lambda: via_proxy.put("mesh.stl", new))
        timed_failure(lambda: via_proxy.put("fresh.stl", new))
    assert proxy.cuts >= 4 and elapsed < OUTAGE_BOUND_S
    assert direct.get("mesh.stl") == b"old version"
    assert direct.list("") == ["mesh.stl"]


def test_download_cut_mid_body_is_an_error_not_short_data(own_server: MotoServer) -> None:
    direct = make_s3(own_server.endpoint, own_server.info, bucket="cut-down")
    data = os.urandom(2_000_000)
    direct.put("mesh.stl", data)
    with CuttingProxy(own_server.port, limit=1_000_000, direction="down") as proxy:
        via_proxy = make_s3(proxy.endpoint, own_server.info, bucket="cut-down")
        error, elapsed = timed_failure(lambda: via_proxy.get("mesh.stl"))
    assert "IncompleteRead" in str(error) and elapsed < OUTAGE_BOUND_S
    assert direct.get("mesh.stl") == data


_CHILD = """
import sys
from occlutrace_compute.storage import LocalStore

def chunks():
    yield b"N" * 1_000_000
    open(sys.argv[2], "w").close()  # tell the parent we are mid-write
    sys.stdin.read()  # and wait to be killed
    yield b"never"

LocalStore(sys.argv[1]).put_stream("tenants/t/cases/c/mesh.stl", chunks())
"""


def test_local_writer_killed_mid_write_leaves_the_old_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("tenants/t/cases/c/mesh.stl", b"old version")
    marker = tmp_path / "mid-write"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store.root), str(marker)], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval of a bounded wait for the child's marker
        assert marker.exists(), "the writer never reached the middle of its write"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL
    assert store.get("tenants/t/cases/c/mesh.stl") == b"old version"
    assert store.list("") == ["tenants/t/cases/c/mesh.stl"]  # the orphan temp file is invisible
    leftovers = list((store.root / "tenants/t/cases/c").glob(TEMP_PREFIX + "*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1_000_000


def _sweepers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "staging-sweeper"}


class _Records(logging.Handler):
    """The records of a logger (the service's loggers do not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_staging_sweeper_stops_with_the_app_and_a_stopped_store_logs_nothing(
    own_server: MotoServer, tmp_path: Path
) -> None:
    """The sweeper used to be a daemon thread started with the app and never stopped: after a
    test run the store's server went away under it and "staging sweep failed ...
    StoreUnavailable" was printed at exit. Now the app's lifespan starts it and joins it."""
    creds = own_server.info
    config = ServiceConfig.from_env(
        store="s3://sweeper",
        s3_endpoint=own_server.endpoint,
        s3_access_key=creds.access_key,
        s3_secret_key=creds.secret_key,
        s3_region=creds.region,
        tokens_file=str(write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})),
        staging_sweep_s=0.02,
        staging_ttl_s=0,  # every upload is expired at once: the sweeper's work is visible
    )
    logger = logging.getLogger("occlutrace.controller")
    handler = _Records()
    before = _sweepers()
    live = LiveServer(lambda: create_app(config)).start()
    logger.addHandler(handler)
    try:
        store = config.open_store()
        headers = {"Authorization": "Bearer tok-alpha-0123456789"}
        r = httpx.post(f"{live.url}/v1/cases/case-1/uploads", json={"name": "fixed.stl"}, headers=headers)
        assert r.status_code == 201, r.text
        wait_for(lambda: store.list("staging/") == [], 30, "the sweeper to delete the expired upload")
        ours = _sweepers() - before
        assert len(ours) == 1
        live.stop()
        assert not [t for t in ours if t.is_alive()], "the sweeper outlived its app"
        own_server.stop()  # the store goes after the app, as at the end of a test run
        own_server.start()
        assert [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING] == []
    finally:
        logger.removeHandler(handler)
        live.stop()
