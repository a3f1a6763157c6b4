"""cluster/local_cluster.sh: a real multi-node Ray cluster (head + 2 worker nodes) on this machine,
with Ray token authentication, reached the way users reach it (the printed address and env file),
then stopped without leaving a process behind. Drivers run in subprocesses so that this test
process never joins (or leaks) a Ray session."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "local_cluster.sh"
SAMPLES = ROOT / "samples"
WORKERS = 2
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 90
DRIVER_TIMEOUT_S = 120

pytestmark = pytest.mark.slow


def free_port_block(n: int, lo: int = 7000, hi: int = 9800) -> int:
    """A port p with p..p+n-1 all free (the script uses consecutive ports); bounded tries."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = lo + s.getsockname()[1] % (hi - lo - n)
        try:
            socks = []
            for p in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("0.0.0.0", p))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no block of free ports found")


@dataclass
class Cluster:
    dir: Path
    address: str
    env: dict[str, str]
    start_output: str


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["RAY_BIN"] = str(Path(bin_dir) / "ray")
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    return env


def exported(env_file: Path) -> dict[str, str]:
    out = {}
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = value
    return out


def session_processes(cluster_dir: Path, sids: list[str]) -> list[str]:
    """Live (non-zombie) processes of the sessions the script started."""
    out = subprocess.run(["ps", "-eo", "sid=,stat=,pid=,args="], capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.split()[0] in sids and not line.split()[1].startswith("Z")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # short path: Ray's unix sockets live under it and must stay below ~100 characters
    cluster_dir = Path(tempfile.mkdtemp(prefix="ocx-lc-", dir="/tmp"))
    port = free_port_block(3 + WORKERS)
    env = script_env()
    sids: list[str] = []
    try:
        start = subprocess.run(
            ["bash", str(SCRIPT), "start", "--workers", str(WORKERS), "--port", str(port), "--dir", str(cluster_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=START_TIMEOUT_S,
        )
        sids = [p.read_text().strip() for p in cluster_dir.glob("node*.pid")]
        assert start.returncode == 0, start.stdout + start.stderr
        driver_env = {**env, **exported(cluster_dir / "env.sh")}
        yield Cluster(cluster_dir, (cluster_dir / "address").read_text().strip(), driver_env, start.stdout)
    finally:
        stop = subprocess.run(
            ["bash", str(SCRIPT), "stop", "--dir", str(cluster_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=STOP_TIMEOUT_S,
        )
        leftover = session_processes(cluster_dir, sids)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not leftover, f"processes left after stop: {leftover}"


def run_driver(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=DRIVER_TIMEOUT_S,
        cwd=tempfile.gettempdir(),
    )


NODES_AND_TASKS = """
import json, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address={address!r}, log_to_driver=False, logging_level="ERROR")
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

ran_on = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                  for n in alive], timeout=90)
print(json.dumps({{"alive": alive, "ran_on": ran_on}}))
"""


def test_start_prints_address_and_commands(cluster):
    out = cluster.start_output
    assert cluster.address.startswith("127.0.0.1:")
    assert f"occlutrace batch samples -o out --address {cluster.address}" in out
    assert f"occlutrace serve --ray-address {cluster.address}" in out
    assert cluster.env["RAY_AUTH_MODE"] == "token"
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"])
    assert token.stat().st_mode & 0o077 == 0, "the Ray token file is readable by others"
    status = subprocess.run(
        ["bash", str(SCRIPT), "status", "--dir", str(cluster.dir)], capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0 and f"{1 + WORKERS} node(s)" in status.stdout, status.stdout


def test_every_node_joins_and_runs_tasks(cluster):
    out = run_driver(NODES_AND_TASKS.format(address=cluster.address), cluster.env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["alive"]) == 1 + WORKERS
    assert result["ran_on"] == result["alive"]


def first_refusal(code: str, env: dict[str, str], deadline_s: float = 90) -> str:
    """Runs a driver until its stderr shows that the cluster refused it (Ray retries for ~20 s
    before giving up; the first refusal is enough), then ends it. Returns the stderr read."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            end = time.monotonic() + deadline_s
            while time.monotonic() < end and sel.select(timeout=max(0.0, end - time.monotonic())):
                line = proc.stderr.readline()
                if not line:  # the driver exited
                    break
                lines.append(line)
                if "InvalidAuthToken" in line:
                    break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return "".join(lines)


def test_a_driver_without_the_token_is_refused(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    stderr = first_refusal(f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False)", env)
    assert "InvalidAuthToken" in stderr, stderr[-2000:]


def test_second_start_on_a_running_cluster_is_refused(cluster):
    out = subprocess.run(
        ["bash", str(SCRIPT), "start", "--dir", str(cluster.dir)],
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=60,
    )
    assert out.returncode != 0 and "is running" in out.stderr, out.stderr


def test_bad_options_are_refused_with_a_reason():
    for args, message in (
        (["--workers", "two"], "--workers must be a whole number"),
        (["--port", "15000"], "--port must be 1024-9900"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ):
        out = subprocess.run(
            ["bash", str(SCRIPT), "start", *args, "--dir", "/tmp/ocx-never-started"],
            capture_output=True,
            text=True,
            env=script_env(),
            timeout=30,
        )
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    assert not Path("/tmp/ocx-never-started").exists()


def _batch_available() -> str | None:
    """Why `occlutrace batch` cannot run here, or None when it can."""
    occlutrace = shutil.which("occlutrace", path=str(Path(sys.executable).parent))
    if occlutrace is None:
        return "the occlutrace command is not installed"
    help_out = subprocess.run([occlutrace, "batch", "--help"], capture_output=True, text=True, timeout=60)
    if help_out.returncode != 0 or "--address" not in help_out.stdout:
        return "`occlutrace batch --address` is not available yet"
    if not any(p.is_dir() for p in SAMPLES.iterdir()):
        return "samples/ holds no cases"
    return None


def test_batch_runs_through_the_cluster(cluster, tmp_path):
    reason = _batch_available()
    if reason:
        pytest.skip(reason)
    out_dir = tmp_path / "out"
    occlutrace = shutil.which("occlutrace", path=str(Path(sys.executable).parent))
    run = subprocess.run(
        [occlutrace, "batch", str(SAMPLES), "-o", str(out_dir), "--address", cluster.address],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    cases = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())
    assert sorted(row["case"] for row in summary) == cases
    assert all(row["status"] == "succeeded" for row in summary), summary
    for case in cases:
        assert (out_dir / case / "result.json").is_file(), case
