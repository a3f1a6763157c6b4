"""The chart's `helm test` script (deploy/helm/occlutrace/files/helm-smoke-test.py) against a real
controller: uvicorn on 127.0.0.1, a local Ray, the local store and the real job pipeline; run as
the test pod runs it (a subprocess with only the standard library and the pod's environment).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from test_service_support import LiveServer, ray_session, write_tokens

from occlutrace_compute.meshes import load_mesh
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.server import build_app

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "occlutrace" / "files" / "helm-smoke-test.py"
TOKEN = "helm-test-token-0123456789abcdef"


def _script_module():
    spec = importlib.util.spec_from_file_location("helm_smoke_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with ray_session(num_cpus=2):
        tmp = tmp_path_factory.mktemp("helm-test")
        tokens = write_tokens(tmp / "tokens", {TOKEN: "helm-test"})
        config = ServiceConfig.from_env(
            store=f"file://{tmp / 'store'}",
            tokens_file=str(tokens),
            ray_namespace="helm-test",
            rescan_s=1.0,
            cpu_workers=1,
            batch_size=1,
        )
        server = LiveServer(lambda: build_app(config)).start()
        yield config, server, tmp
        server.stop()
        dispatcher = get_dispatcher(config)
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)


def _run_script(url: str, token_file: Path, tmp_path: Path, timeout_s: str = "240") -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "OCCLUTRACE_API_URL": url,
        "OCCLUTRACE_TOKEN_FILE": str(token_file),
        "OCCLUTRACE_TEST_TIMEOUT_S": timeout_s,
        "OCCLUTRACE_TEST_POLL_S": "0.2",
    }
    # -I: isolated, like the pod (no PYTHONPATH, no user site): the script needs the stdlib only
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


@pytest.mark.slow
def test_smoke_script_runs_a_real_job_and_purges_its_case(service, tmp_path):
    config, server, _ = service
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    out = _run_script(server.url, token_file, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("OK")
    assert "job " in out.stdout and ": succeeded" in out.stdout
    # the case is gone again: nothing of the test tenant's cases is left in the store
    store = config.open_store()
    assert not list(store.list("tenants/helm-test/cases/")), store.list("tenants/helm-test/cases/")


def test_smoke_script_fails_clearly_on_a_wrong_token(service, tmp_path):
    _, server, _ = service
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token-of-anyone-0000\n")
    out = _run_script(server.url, token_file, tmp_path, timeout_s="30")
    assert out.returncode == 1
    assert "FAILED: upload fixed.stl: HTTP 401" in out.stderr, out.stderr


def test_smoke_meshes_load_as_valid_closed_surfaces(tmp_path):
    """The meshes the script builds pass the service's own loader (units, closedness)."""
    smoke = _script_module()
    tris = smoke.bumpy_sphere()
    assert len(tris) == 20 * 4**3
    for name, t in (("fixed.stl", tris), ("moving.stl", smoke.moved(tris))):
        path = tmp_path / name
        path.write_bytes(smoke.binary_stl(t))
        mesh = load_mesh(path).mesh
        extent = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
        assert 10.0 < float(extent.max()) < 50.0, extent  # millimetres: about 2-3 cm across
