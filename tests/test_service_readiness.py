"""Readiness is this pod's own business, and the controller rejoins Ray by itself: a real Ray head
(`ray start --head`, its own process group) is killed and started again under a running
controller (a separate process joined to it); `/readyz` answers 200 throughout, `/metrics` shows
the loss as `occlutrace_dispatcher_up 0`, and once the head is back the link's watchdog
(service/link.py) rejoins the new cluster: `occlutrace_dispatcher_up 1` again and a job submitted
afterwards runs there. (The old `/readyz` pinged the dispatcher: 503 within seconds; the old link
kept the dead driver: dispatcher_up stayed 0.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from test_service_support import (
    JOB_FN,
    TESTS_DIR,
    Api,
    free_port,
    wait_for,
    write_tokens,
)

from occlutrace_compute.service.link import Backoff, gcs_reachable

RAY = Path(sys.executable).with_name("ray")


class RayHead:
    """`ray start --head --block` in a process group of its own, so that killing the group ends
    exactly this head's processes (GCS, raylet, its workers), never another Ray on the machine."""

    def __init__(self, root: Path, port: int, env: dict[str, str]) -> None:
        self.root, self.port, self.env = root, port, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.root / f"head-{id(self)}-{os.urandom(2).hex()}.log"
        self.proc = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={self.root / 'ray'}",
                "--block",
            ],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: b"Ray runtime started" in log.read_bytes() or self.proc.poll() is not None,
            120,
            "the Ray head to start",
            every_s=0.2,
        )
        assert self.proc.poll() is None, log.read_text()[-2000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        # Ray's worker processes start sessions of their own: find them by this head's temp dir
        for pid, cmdline in _processes():
            if str(self.root) in cmdline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not RAY.exists(), reason="the ray CLI is not installed beside this Python")
def test_readiness_stays_green_while_the_ray_head_is_killed_and_restarted(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths have a limit
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR)]),
    )
    head = RayHead(root, free_port(), env)
    port = free_port()
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    controller = None
    try:
        head.start()
        controller_env = dict(env, OCCLUTRACE_JOB_FN=JOB_FN, OCCLUTRACE_RESCAN_S="1")
        controller = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "occlutrace_compute.service.server",
                "--port",
                str(port),
                "--store",
                f"file://{tmp_path / 'store'}",
                "--tokens-file",
                str(tokens),
                "--ray-address",
                f"127.0.0.1:{head.port}",
            ],
            env=controller_env,
            cwd=TESTS_DIR.parent,
            stdout=(tmp_path / "controller.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"

        def dispatcher_up() -> float | None:
            """The controller's occlutrace_dispatcher_up; /readyz must be 200 at every look."""
            try:
                ready = httpx.get(f"{base}/readyz", timeout=10)
            except httpx.TransportError:
                raise AssertionError((tmp_path / "controller.log").read_text()[-3000:]) from None
            assert ready.status_code == 200 and ready.json()["ready"], ready.text
            text = httpx.get(f"{base}/metrics", timeout=10).text
            return next(
                float(line.split()[1]) for line in text.splitlines() if line.startswith("occlutrace_dispatcher_up ")
            )

        def reachable() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert controller.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]
                return False

        wait_for(reachable, 120, "the controller to serve")
        wait_for(lambda: dispatcher_up() == 1, 60, "the controller to reach the dispatcher", every_s=0.2)

        head.kill()
        wait_for(lambda: dispatcher_up() == 0, 60, "the controller to see the dispatcher gone", every_s=0.2)
        head.start()
        for _ in range(5):  # head back (a new cluster): the controller is still in its Service
            dispatcher_up()
        # the watchdog rejoins the new cluster (and re-creates the dispatcher there)
        wait_for(lambda: dispatcher_up() == 1, 120, "the controller to rejoin the restarted head", every_s=0.5)
        api = Api(base, "tok-alpha-0123456789")
        job = api.pair("after-restart-1")
        done = api.wait_state(job["job_id"], ("succeeded", "failed", "rejected", "cancelled"), 120)
        assert done["state"] == "succeeded", done
        assert dispatcher_up() == 1 and controller.poll() is None
    finally:
        if controller is not None:
            controller.terminate()
            try:
                controller.wait(20)
            except subprocess.TimeoutExpired:
                controller.kill()
        head.kill()
        wait_for(lambda: not [p for p, cmd in _processes() if str(root) in cmd], 10, "the head's processes to end")
        shutil.rmtree(root, ignore_errors=True)


def test_backoff_grows_to_its_cap_and_resets():
    """Delays double (with jitter in the upper half) up to the cap, however many failures."""
    backoff = Backoff(0.5, 15.0)
    delays = [backoff.next() for _ in range(200)]  # far past 2**n overflow territory for a naive version
    assert all(0.25 <= d <= 15.0 for d in delays)
    assert delays[0] <= 0.5 and min(delays[10:]) >= 7.5  # capped, and not stuck at the base
    backoff.reset()
    assert backoff.next() <= 0.5
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


def test_gcs_probe_is_a_bounded_tcp_connect():
    """A closed port answers False at once (no `ray.init` that blocks for minutes); an address
    that is not host:port is left to ray.init (True)."""
    closed = free_port()
    assert not gcs_reachable(f"127.0.0.1:{closed}", 2.0)
    assert gcs_reachable("auto", 2.0) and gcs_reachable("ray://head:10001", 2.0)
