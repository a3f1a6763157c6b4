"""Queue-driven scaling on a real multi-node Ray cluster (ray.cluster_utils.Cluster): queued jobs
make the dispatcher ask the autoscaler for worker-shaped bundles; a node added meanwhile gets a
worker that runs queued jobs; a drained queue clears the request and the extra worker goes."""

from __future__ import annotations

import json
import os

import pytest
import ray
from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
from ray.autoscaler.v2.utils import is_autoscaler_v2
from ray.cluster_utils import Cluster
from ray.experimental.internal_kv import _internal_kv_get
from test_service_support import JOB_FN, TESTS_DIR, Api, LiveServer, mesh_bytes, wait_for, write_tokens

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.server import build_app

MAX_WORKERS = 2
JOBS = 3


def requested_bundles() -> list[dict]:
    """What the autoscaler was last asked for (Ray 2.60's v1 request channel in the GCS KV)."""
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


# (head node, added node, the bundle one worker needs)
MODES = {
    "cuda": ({"num_cpus": 2, "num_gpus": 1}, {"num_cpus": 2, "num_gpus": 1}, {"GPU": 1.0, "CPU": 1.0}),
    "cpu": ({"num_cpus": 1}, {"num_cpus": 1}, {"CPU": 1.0}),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_queued_jobs_request_resources_and_a_new_node_gets_a_worker(mode, tmp_path):
    head_args, node_args, bundle = MODES[mode]
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])}
    ray.init(address=cluster.address, namespace=f"autoscale-{mode}", runtime_env={"env_vars": env}, log_to_driver=False)
    if is_autoscaler_v2():
        ray.shutdown()
        cluster.shutdown()
        pytest.skip("autoscaler v2 keeps the request in the GCS, not in the channel read here")
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp_path / 'store'}",
        tokens_file=str(tokens),
        job_fn=JOB_FN,
        ray_namespace=f"autoscale-{mode}",
        rescan_s=1.0,
        batch_size=1,
        cpu_workers=1,
        min_workers=1,
        max_workers=MAX_WORKERS,
        worker_idle_s=1.0,
    )
    server = LiveServer(lambda: build_app(config)).start()
    store = config.open_store()
    dispatcher = get_dispatcher(config)
    device = mode

    def workers() -> int:
        return ray.get(dispatcher.stats.remote(), timeout=30).get("workers", {}).get(device, 0)

    def started_on(node_id: str) -> list[str]:
        return [
            key.split("/")[1]
            for key in store.list("testctl/")
            if "/started-" in key and json.loads(store.get(key))["node"] == node_id
        ]

    try:
        api = Api(server.url, "tok-alpha-0123456789")
        wait_for(lambda: workers() == 1, 30, "the floor worker")
        assert requested_bundles() == []
        for role, seed in (("fixed", 0), ("moving", 1)):
            assert api.upload("hold-501", f"{role}.stl", mesh_bytes(seed)).status_code == 201
        job = {"case": "hold-501", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
        ids = [j["job_id"] for j in api.http.post("/v1/batches", json={"jobs": [job] * JOBS}).json()["jobs"]]

        # 3 jobs in batches of 1, capped at 2 workers: room for 2 workers is asked for
        wait_for(lambda: requested_bundles() == [bundle] * MAX_WORKERS, 30, "the resource request")
        head_id = ray.get_runtime_context().get_node_id()
        wait_for(lambda: started_on(head_id), 30, "a job on the head's worker")

        node = cluster.add_node(**node_args)
        on_new = wait_for(lambda: started_on(node.node_id), 45, "a worker on the added node to start a job")
        wait_for(lambda: workers() == MAX_WORKERS, 10, "the dispatcher to count both workers")
        assert len(started_on(head_id)) == 1 and len(on_new) == 1  # each held by its one job

        for job_id in ids:
            store.put(f"testctl/{job_id}/release", b"")
        finals = [api.wait_state(job_id, ("succeeded", "failed"), 60) for job_id in ids]
        assert [f["state"] for f in finals] == ["succeeded"] * JOBS
        wait_for(lambda: requested_bundles() == [], 30, "the request to be cleared")
        wait_for(lambda: workers() == 1, 30, "the idle extra worker to go")
        assert ray.get(dispatcher.stats.remote(), timeout=30)["requested_workers"] == 0
    finally:
        server.stop()
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)
        ray.shutdown()
        cluster.shutdown()
