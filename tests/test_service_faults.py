"""Faults with zero jobs lost or duplicated: a worker killed mid-job, a poison job, the
dispatcher killed, the controller restarted, a running job cancelled. Real Ray, real HTTP."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
import ray
from test_service_support import JOB_FN, Api, LiveServer, mesh_bytes, ray_session, wait_for, write_tokens

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.server import build_app

FINAL = ("succeeded", "failed", "rejected", "cancelled")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    tokens = write_tokens(tmp / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}",
        tokens_file=str(tokens),
        job_fn=JOB_FN,
        ray_namespace="faults",
        rescan_s=1.0,
        cpu_workers=1,
        max_attempts=3,
        rate_burst=5000,
    )
    with ray_session(num_cpus=2):
        server = LiveServer(lambda: build_app(config)).start()
        store = config.open_store()
        yield config, server, Api(server.url, "tok-alpha-0123456789"), store
        server.stop()
        dispatcher = get_dispatcher(config)
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)


def _started(store, job_id: str) -> list[str]:
    return [k for k in store.list(f"testctl/{job_id}/") if "/started-" in k]


def _records(store, case: str) -> list[str]:
    return [k for k in store.list(f"tenants/alpha/cases/{case}/") if k.endswith("/job.json")]


def test_worker_killed_mid_job_is_retried_elsewhere(svc):
    _, _, api, store = svc
    job = api.pair("hold-301")
    marker = wait_for(lambda: _started(store, job["job_id"]), 60, "the job to start")[0]
    os.kill(json.loads(store.get(marker))["pid"], signal.SIGKILL)
    done = api.wait_state(job["job_id"], FINAL, 90)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert len(_started(store, job["job_id"])) == 2 and len(_records(store, "hold-301")) == 1


def test_poison_job_is_failed_after_max_attempts_and_spares_its_batch_mates(svc):
    _, _, api, store = svc
    for case in ("poison-302", "case-302"):
        for role, seed in (("fixed", 0), ("moving", 1)):
            assert api.upload(case, f"{role}.stl", mesh_bytes(seed)).status_code == 201
    jobs = [
        {"case": c, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
        for c in ("poison-302", "case-302")
    ]
    created = api.http.post("/v1/batches", json={"jobs": jobs}).json()
    poison, healthy = (j["job_id"] for j in created["jobs"])
    failed = api.wait_state(poison, FINAL, 120)
    assert failed["state"] == "failed" and failed["attempts"] == 3, failed
    assert "3 attempts" in failed["reason"]
    ok = api.wait_state(healthy, FINAL, 60)
    assert ok["state"] == "succeeded" and ok["attempts"] == 1
    assert len(_started(store, poison)) == 3
    batch = api.http.get(f"/v1/batches/{created['batch_id']}").json()
    assert batch["done"] and batch["counts"] == {"failed": 1, "succeeded": 1}


def test_dispatcher_killed_loses_no_job(svc):
    config, _, api, store = svc
    dispatcher = get_dispatcher(config)
    held = api.pair("hold-303")
    wait_for(lambda: _started(store, held["job_id"]), 60, "the held job to start")
    old_pid = ray.get(dispatcher.stats.remote(), timeout=30)["pid"]
    os.kill(old_pid, signal.SIGKILL)
    more = [api.pair(f"case-303-{i}", seed=i) for i in range(3)]  # notifications may be lost
    store.put(f"testctl/{held['job_id']}/release", b"")
    for job in [held, *more]:
        assert api.wait_state(job["job_id"], FINAL, 120)["state"] == "succeeded"
    assert ray.get(dispatcher.stats.remote(), timeout=30)["pid"] != old_pid  # restarted, same name
    for case in ("hold-303", "case-303-0", "case-303-1", "case-303-2"):
        assert len(_records(store, case)) == 1


def test_controller_restart_keeps_jobs_and_idempotency(svc):
    config, server, api, store = svc
    for role, seed in (("fixed", 0), ("moving", 1)):
        assert api.upload("case-304", f"{role}.stl", mesh_bytes(seed)).status_code == 201
    body = {"case": "case-304", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    first = api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "restart-1"})
    assert first.status_code == 201
    server.stop()
    with pytest.raises(httpx.TransportError):
        api.http.get("/healthz")
    server.start()  # a fresh app: nothing carried over in memory
    again = api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "restart-1"})
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    assert api.wait_state(first.json()["job_id"], FINAL, 60)["state"] == "succeeded"
    assert len(_records(store, "case-304")) == 1


def test_cancelling_a_running_job_discards_its_result(svc):
    _, _, api, store = svc
    job = api.pair("hold-305")
    wait_for(lambda: _started(store, job["job_id"]), 60, "the job to start")
    r = api.http.post(f"/v1/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    store.put(f"testctl/{job['job_id']}/release", b"")
    after = api.pair("case-305")  # the one worker runs jobs in order: this one ends later
    assert api.wait_state(after["job_id"], FINAL, 60)["state"] == "succeeded"
    result = api.http.get(f"/v1/jobs/{job['job_id']}/result").json()
    assert result["state"] == "cancelled" and result["result"] is None and result["files"] == []
