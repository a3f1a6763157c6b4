"""A node removed mid-batch on a real multi-node Ray cluster (ray.cluster_utils.Cluster):
its worker's unfinished jobs run again on the surviving node; none is lost or duplicated."""

from __future__ import annotations

import json
import os

import pytest
import ray
from ray.cluster_utils import Cluster
from test_service_support import JOB_FN, TESTS_DIR, Api, LiveServer, mesh_bytes, wait_for, write_tokens

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.server import build_app


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])}
    ray.init(address=c.address, namespace="cluster-test", runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def test_node_removed_mid_batch_loses_no_job(cluster, tmp_path):
    c, nodes = cluster
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp_path / 'store'}",
        tokens_file=str(tokens),
        job_fn=JOB_FN,
        ray_namespace="cluster-test",
        rescan_s=1.0,
        cpu_workers=2,
        batch_size=4,
    )
    server = LiveServer(lambda: build_app(config)).start()
    store = config.open_store()
    try:
        api = Api(server.url, "tok-alpha-0123456789")
        for role, seed in (("fixed", 0), ("moving", 1)):
            assert api.upload("hold-401", f"{role}.stl", mesh_bytes(seed)).status_code == 201
        job = {"case": "hold-401", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
        ids = [j["job_id"] for j in api.http.post("/v1/batches", json={"jobs": [job] * 6}).json()["jobs"]]

        def started_on(node_id: str) -> list[str]:
            found = []
            for key in store.list("testctl/"):
                if "/started-" in key and json.loads(store.get(key))["node"] == node_id:
                    found.append(key.split("/")[1])
            return found

        victim = nodes[1]
        wait_for(
            lambda: started_on(nodes[0].node_id) and started_on(victim.node_id), 90, "both workers to be running a job"
        )
        interrupted = started_on(victim.node_id)
        c.remove_node(victim)
        for job_id in ids:
            store.put(f"testctl/{job_id}/release", b"")
        finals = [api.wait_state(job_id, ("succeeded", "failed"), 120) for job_id in ids]
        assert [f["state"] for f in finals] == ["succeeded"] * 6
        assert all(len([k for k in store.list(f"testctl/{i}/") if "/started-" in k]) == 2 for i in interrupted)
        records = [k for k in store.list("tenants/alpha/cases/hold-401/") if k.endswith("/job.json")]
        assert len(records) == 6
    finally:
        server.stop()
