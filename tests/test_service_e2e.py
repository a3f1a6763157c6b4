"""End to end over real sockets: uvicorn on 127.0.0.1, a real local Ray, the local store and
S3 (moto_server behind a gate that can cut it off), upload -> job -> results -> downloads."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from test_service_support import (
    JOB_FN,
    Api,
    CallbackSink,
    Gate,
    LiveServer,
    ctl_key,
    mesh_bytes,
    outage_marker,
    ray_session,
    wait_for,
    write_tokens,
)

from occlutrace_compute.meshes import load_mesh
from occlutrace_compute.service.client import submit_cases
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.server import build_app
from occlutrace_compute.service.signing import SIGNATURE_HEADER, verify_body

TOKENS = {"tok-alpha-0123456789": "alpha", "tok-beta-01234567890": "beta"}
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SECRET = "callback-secret"
OUTAGE_AFTER_S = 2.0  # an outage goes on this long after the job met it (longer than one store op's retries)


@dataclass
class Service:
    config: ServiceConfig
    server: LiveServer
    api: Api
    store: object
    gate: Gate | None = None


def _start(tmp_path, namespace: str, store: str, gate: Gate | None = None, **s3) -> Service:
    tokens = write_tokens(tmp_path / f"tokens-{namespace}", TOKENS)
    config = ServiceConfig.from_env(
        store=store,
        tokens_file=str(tokens),
        job_fn=JOB_FN,
        ray_namespace=namespace,
        rescan_s=1.0,
        cpu_workers=1,
        batch_size=4,
        rate_per_s=1000.0,
        rate_burst=5000,
        callback_secret=SECRET,
        callback_backoff_s=0.05,
        callback_allow_private=True,  # the receiver listens on 127.0.0.1
        privacy_allow=r"MRN-\d{7}",
        **s3,  # a lab whose case labels carry its own (non-patient) numbers
    )
    server = LiveServer(lambda: build_app(config)).start()
    return Service(config, server, Api(server.url, "tok-alpha-0123456789"), config.open_store(), gate)


def _stop(svc: Service) -> None:
    svc.server.stop()
    dispatcher = get_dispatcher(svc.config)
    ray.get(dispatcher.shutdown.remote(), timeout=30)
    ray.kill(dispatcher, no_restart=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with ray_session(num_cpus=3):
        tmp = tmp_path_factory.mktemp("e2e-local")
        svc = _start(tmp, "e2e-local", f"file://{tmp / 'store'}")
        yield svc
        _stop(svc)


@pytest.fixture(scope="module")
def s3(local, s3_server, tmp_path_factory):
    gate = Gate(int(s3_server.endpoint.rsplit(":", 1)[1]))
    svc = _start(
        tmp_path_factory.mktemp("e2e-s3"),
        "e2e-s3",
        "s3://e2e-bucket",
        gate,
        s3_endpoint=gate.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    yield svc
    gate.reopen()
    _stop(svc)
    gate.close()


def _run_pair_and_bite(svc: Service, sink: CallbackSink) -> None:
    api = svc.api
    pair = api.pair("case-101", callback_url=sink.url)
    for role, seed in (("upper", 3), ("lower", 4), ("bite1", 5)):
        assert api.upload("case-102", f"{role}.stl", mesh_bytes(seed)).status_code == 201
    r = api.http.post(
        "/v1/jobs",
        json={
            "case": "case-102",
            "kind": "bite",
            "inputs": {"upper": "upper.stl", "lower": "lower.stl", "bite1": "bite1.stl"},
        },
    )
    assert r.status_code == 201, r.text
    bite = r.json()
    for job, first_input in ((pair, "fixed.stl"), (bite, "bite1.stl")):
        done = api.wait_state(job["job_id"], ("succeeded", "failed", "rejected"))
        assert done["state"] == "succeeded" and done["attempts"] == 1, done
        result = api.http.get(f"/v1/jobs/{job['job_id']}/result").json()
        assert result["result"]["kind"] == job["kind"]
        files = {f["name"]: f["url"] for f in result["files"]}
        assert set(files) == {"outputs/result.json", "outputs/aligned.stl"}
        assert json.loads(httpx.get(files["outputs/result.json"], timeout=10).content) == result["result"]
        aligned = httpx.get(files["outputs/aligned.stl"], timeout=10)
        assert aligned.status_code == 200
        assert aligned.content == svc.store.get(f"tenants/alpha/cases/{job['case']}/inputs/{first_input}")
    wait_for(lambda: sink.received, 30, "the completion callback")
    headers, body = sink.received[0]
    assert verify_body(SECRET, body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["job_id"] == pair["job_id"] and json.loads(body)["state"] == "succeeded"


def test_pair_and_bite_end_to_end_on_the_local_store(local):
    sink = CallbackSink(fail_first=1)  # the first delivery fails: the retry must get through
    try:
        _run_pair_and_bite(local, sink)
    finally:
        sink.close()
    metrics = httpx.get(f"{local.server.url}/metrics").text
    assert 'occlutrace_jobs_finished_total{kind="pair",state="succeeded"}' in metrics
    assert 'occlutrace_workers{device="cpu"} 1.0' in metrics
    assert "occlutrace_registration_rmse_meters_count" in metrics


def test_pair_and_bite_end_to_end_on_s3(s3):
    sink = CallbackSink()
    try:
        _run_pair_and_bite(s3, sink)
    finally:
        sink.close()
    r = s3.api.http.post("/v1/cases/case-103/uploads", json={"name": "fixed.stl"})
    grant = r.json()
    assert grant["url"].startswith(s3.server.url)  # single-use grants are the controller's, on S3 too
    assert httpx.put(grant["url"], content=mesh_bytes(7)).status_code == 204
    committed = s3.api.http.post(grant["commit"])
    assert committed.status_code == 201, committed.text
    assert s3.store.list("tenants/alpha/cases/case-103/") == ["tenants/alpha/cases/case-103/inputs/fixed.stl"]
    purged = s3.api.http.delete("/v1/cases/case-101").json()
    assert purged["count"] > 0
    assert [k for k in s3.store.list("") if "case-101" in k] == []  # the bucket, listed


def test_s3_outage_answers_503_then_recovers_without_losing_jobs(s3):
    api = s3.api
    held = api.pair("hold-201")  # running (waiting for its release marker) when S3 goes away
    for role, seed in (("fixed", 0), ("moving", 1)):
        assert api.upload("case-202", f"{role}.stl", mesh_bytes(seed)).status_code == 201
    wait_for(lambda: s3.store.list(f"testctl/{held['job_id']}/"), 30, "the held job to start")
    body = {"case": "case-202", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    s3.gate.shut()
    try:
        r = api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "outage-1"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
        assert r.json()["error"] == "store_unavailable"
        assert api.http.get(f"/v1/jobs/{held['job_id']}").status_code == 503
        assert httpx.get(f"{s3.server.url}/readyz", timeout=30).status_code == 503
    finally:
        s3.gate.reopen()
    created = [api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "outage-1"}) for _ in range(2)]
    assert [c.status_code for c in created] == [201, 200]
    assert created[0].json()["job_id"] == created[1].json()["job_id"]
    s3.store.put(f"testctl/{held['job_id']}/release", b"")
    for job_id in (held["job_id"], created[0].json()["job_id"]):
        assert api.wait_state(job_id, ("succeeded", "failed"), 60)["state"] == "succeeded"
    records = [
        k
        for k in s3.store.list("tenants/alpha/cases/")
        if k.endswith("job.json") and ("/hold-201/" in k or "/case-202/" in k)
    ]
    assert len(records) == 2


def test_allow_patterns_reach_the_workers(local):
    """A label the controller accepts under OCCLUTRACE_PRIVACY_ALLOW runs on a Ray worker with the
    same patterns (the real pipeline checks the label again)."""
    job = _submit_sample(local, "case-0001-pair", "real-MRN-4471882")
    done = local.api.wait_state(job["job_id"], ("succeeded", "failed", "rejected"), 120)
    assert done["state"] == "succeeded", done
    refused = local.api.http.post("/v1/cases/real-DOB-1961-04-03/files", files={"file": ("fixed.stl", mesh_bytes(0))})
    assert refused.status_code == 422  # the patterns exempt the lab's scheme, nothing else


def test_three_store_outages_during_one_job_are_not_charged(s3):
    """S3 goes away three times while the job runs; each time the worker re-queues it uncharged
    (no 'worker lost'), and once S3 stays up the job succeeds on its first charged attempt."""
    api = s3.api
    job = api.pair("outage-401")
    started = time.monotonic()
    for run in (1, 2, 3):
        wait_for(lambda: s3.store.exists(ctl_key(job["job_id"], f"started-{run}")), 60, f"run {run} to start")
        s3.gate.shut()
        try:
            wait_for(outage_marker(job["job_id"], run).exists, 60, f"run {run} to meet the outage")
            time.sleep(OUTAGE_AFTER_S)  # the fault's length, not a synchronisation: the worker's own
        finally:  # writes of the outcome must meet the outage too
            s3.gate.reopen()
    done = api.wait_state(job["job_id"], ("succeeded", "failed", "rejected"), 120)
    print(
        f"3 store outages during one job: {done['state']} after {time.monotonic() - started:.1f} s, "
        f"attempts charged {done['attempts']}"
    )
    assert done["state"] == "succeeded" and done["attempts"] == 1, done


def test_purge_racing_running_jobs_on_ray_leaves_nothing(local):
    api, store = local.api, local.store
    jobs = []
    for i in range(6):
        job = api.pair(f"slow1-race-{i}", seed=i)
        if i % 2:  # half purged while running, half while queued or finishing
            wait_for(lambda: store.list(f"testctl/{job['job_id']}/"), 60, "the job to start")
        assert api.http.delete(f"/v1/cases/slow1-race-{i}").status_code == 200
        jobs.append(job)
    later = api.pair("case-race-after")  # one worker, jobs in order: this ends after the purged ones
    assert api.wait_state(later["job_id"], ("succeeded",), 120)["state"] == "succeeded"
    for i, job in enumerate(jobs):
        left = [
            k for k in store.list("") if not k.startswith("testctl/") and (f"slow1-race-{i}" in k or job["job_id"] in k)
        ]
        assert left == [], left


def test_200_concurrent_clients_each_accepted_once(local):
    api = local.api
    for role, seed in (("fixed", 0), ("moving", 1)):
        assert api.upload("load-1", f"{role}.stl", mesh_bytes(seed)).status_code == 201
    body = {"case": "load-1", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}

    async def post(http: httpx.AsyncClient, headers: dict) -> httpx.Response:
        for attempt in range(3):  # a dropped connection is retried: the Idempotency-Key makes it safe
            try:
                return await http.post("/v1/jobs", json=body, headers=headers)
            except httpx.TransportError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def client(http: httpx.AsyncClient, i: int) -> tuple[float, str, str]:
        headers = {"Idempotency-Key": f"load-{i}"}
        t0 = time.perf_counter()
        first = await post(http, headers)
        latency = time.perf_counter() - t0
        retry = await post(http, headers)  # a client retry of a request that did succeed
        # 201, or 200 when a dropped first try had already created the job
        assert first.status_code in (200, 201) and retry.status_code == 200, (first.text, retry.text)
        return latency, first.json()["job_id"], retry.json()["job_id"]

    async def main():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=local.server.url,
            headers={"Authorization": "Bearer tok-alpha-0123456789"},
            timeout=60,
            limits=limits,
        ) as http:
            return await asyncio.gather(*(client(http, i) for i in range(200)))

    results = asyncio.run(main())
    latencies = sorted(r[0] for r in results)
    assert all(a == b for _, a, b in results)
    job_ids = {r[1] for r in results}
    assert len(job_ids) == 200
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies)) - 1]
    print(f"\njob creation latency over 200 concurrent clients: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    records = [k for k in local.store.list("tenants/alpha/cases/load-1/") if k.endswith("job.json")]
    assert len(records) == 200
    for job_id in job_ids:
        api.wait_state(job_id, ("succeeded",), 180)
    starts = [k for k in local.store.list("testctl/") if k.split("/")[1] in job_ids]
    assert len(starts) == 200  # each job ran exactly once


def _submit_sample(svc: Service, sample: str, case: str) -> dict:
    truth = json.loads((SAMPLES / sample / "truth.json").read_text())
    files = {p.stem: p for p in (SAMPLES / sample).iterdir() if p.suffix in (".ply", ".stl")}
    for path in files.values():
        assert svc.api.upload(case, path.name, path.read_bytes()).status_code == 201
    r = svc.api.http.post(
        "/v1/jobs", json={"case": case, "kind": truth["kind"], "inputs": {role: p.name for role, p in files.items()}}
    )
    assert r.status_code == 201, r.text
    return r.json()


def _check_real(svc: Service, job: dict, sample: str) -> None:
    done = svc.api.wait_state(job["job_id"], ("succeeded", "failed", "rejected"), 240)
    assert done["state"] == "succeeded", done
    result = svc.api.http.get(f"/v1/jobs/{job['job_id']}/result").json()
    files = {f["name"].removeprefix("outputs/"): f["url"] for f in result["files"]}
    assert "result.json" in files
    if job["kind"] == "pair":
        truth = np.asarray(json.loads((SAMPLES / sample / "truth.json").read_text())["T_fixed_moving"])
        assert np.abs(np.asarray(result["result"]["matrix"])[:3, 3] - truth[:3, 3]).max() < 0.5  # mm
        deviation = httpx.get(files["deviation.ply"], timeout=30)
        assert deviation.status_code == 200
        assert load_mesh(data=deviation.content, name="deviation.ply").mesh.n_vertices > 1000


def test_real_pipeline_pair_over_http_on_both_stores(local, s3):
    jobs = [(svc, _submit_sample(svc, "case-0001-pair", "real-0001"), "case-0001-pair") for svc in (local, s3)]
    for svc, job, sample in jobs:
        _check_real(svc, job, sample)


def test_real_pipeline_bite_over_http_on_both_stores(local, s3):
    pytest.importorskip("occlutrace_compute.registration.bite", reason="the bite registration is not in yet")
    jobs = [(svc, _submit_sample(svc, "case-0003-bite", "real-0003"), "case-0003-bite") for svc in (local, s3)]
    for svc, job, sample in jobs:
        _check_real(svc, job, sample)


def test_submit_folder_waits_downloads_and_resumes(local, tmp_path):
    cases = tmp_path / "cases"
    for label, files in (
        ("lab1/case-a", ("fixed.stl", "moving.stl")),
        ("case-b", ("upper.stl", "lower.stl", "bite.stl")),
        ("Smith_John_1972-03-04", ("fixed.stl", "moving.stl")),
        ("case-c", ("fixed.stl",)),
    ):
        for i, name in enumerate(files):
            (cases / label).mkdir(parents=True, exist_ok=True)
            (cases / label / name).write_bytes(mesh_bytes(i))
    out = tmp_path / "out"
    summary = submit_cases(
        cases, local.server.url, "tok-alpha-0123456789", out, wait=True, progress=False, poll_s=0.2, timeout_s=120
    )
    by_case = {r.case: r for r in summary.rows}
    assert by_case["lab1/case-a"].status == by_case["case-b"].status == "succeeded"
    assert (
        by_case["Smith_John_1972-03-04"].status == "rejected"
        and "personal name" in by_case["Smith_John_1972-03-04"].reason
    )
    assert by_case["case-c"].status == "rejected"  # incomplete: found locally, never sent
    assert (out / "lab1/case-a/aligned.stl").read_bytes() == local.store.get(
        "tenants/alpha/cases/lab1--case-a/inputs/fixed.stl"
    )
    assert (out / "summary.csv").exists() and json.loads((out / "summary.json").read_text())

    def jobs() -> int:
        return len([k for k in local.store.list("tenants/alpha/cases/") if k.endswith("/job.json")])

    before = jobs()
    (out / "case-b" / "result.json").unlink()  # an interrupted download
    again = submit_cases(
        cases, local.server.url, "tok-alpha-0123456789", out, wait=True, progress=False, poll_s=0.2, timeout_s=120
    )
    states = {r.case: r.status for r in again.rows}
    assert states["lab1/case-a"] == "skipped" and states["case-b"] == "succeeded"
    assert (out / "case-b" / "result.json").exists() and jobs() == before  # nothing submitted twice

    from occlutrace_compute.jobs.models import JobOptions

    (cases / "case-b" / "case.json").write_text(json.dumps({"options": {"contact_threshold_mm": 0.2}}))
    changed = submit_cases(
        cases,
        local.server.url,
        "tok-alpha-0123456789",
        out,
        wait=True,
        progress=False,
        poll_s=0.2,
        timeout_s=120,
        options=JobOptions(tolerance_mm=0.1),
    )
    states = {r.case: r.status for r in changed.rows}
    assert states["lab1/case-a"] == states["case-b"] == "succeeded" and jobs() == before + 2  # options changed: re-sent
    sent = json.loads((out / "case-b" / "run.json").read_text())["options"]
    assert sent["contact_threshold_mm"] == 0.2 and sent["tolerance_mm"] == 0.1


@pytest.mark.parametrize("store", ["local", "s3"])
def test_python_client_round_trip(store, request, tmp_path, monkeypatch):
    """The client distribution (clients/python) through the real controller and Ray workers:
    upload -> job -> wait -> result -> download -> purge; on S3 the uploads go through
    presigned PUT URLs and the downloads through presigned GETs of the S3 server."""
    import occlutrace_client.client
    from occlutrace_client import OccluTraceClient

    local = request.getfixturevalue(store)
    if store == "s3":
        monkeypatch.setattr(occlutrace_client.client, "PRESIGNED_ABOVE_BYTES", 1000)
    with OccluTraceClient(local.server.url, "tok-alpha-0123456789") as api:
        for seed, role in enumerate(("fixed", "moving")):
            api.upload_file("client-rt", f"{role}.stl", mesh_bytes(seed))
        job = api.create_job(
            case="client-rt",
            kind="pair",
            inputs={"fixed": "fixed.stl", "moving": "moving.stl"},
            options={"tolerance_mm": 0.1},
        )
        done = api.wait(job.job_id, timeout_s=120, poll_s=0.1)
        assert done.state == "succeeded", done
        result = api.get_result(job.job_id)
        assert result.result["metrics"]["rmse_mm"] == 0.02 and {f.name for f in result.files} >= {"outputs/result.json"}
        assert all(("/v1/download/" in f.url) == (store == "local") for f in result.files)  # S3: presigned GETs
        files = api.download_outputs(job.job_id, tmp_path / "out")
        assert files["aligned.stl"].read_bytes() == local.store.get("tenants/alpha/cases/client-rt/inputs/fixed.stl")
        assert json.loads(files["result.json"].read_bytes())["inputs"] == result.result["inputs"]
        purged = api.purge("client-rt")
        assert purged.count >= 4 and not local.store.list("tenants/alpha/cases/client-rt/")


def generate_python_client(base_url: str, out: Path, package: str) -> None:
    """Generate a Python client from the served /openapi.json with openapi-python-client (the
    commands docs/service.md gives); the generator must not warn (a warning means a part of the
    API it could not model, which we fix in the schema)."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=30)
    assert document.status_code == 200
    (out / "openapi.json").write_bytes(document.content)
    (out / "config.yaml").write_text(
        f"project_name_override: {package}\npackage_name_override: {package}\npost_hooks: []\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(out / "openapi.json"),
            "--output-path",
            str(out / package),
            "--meta",
            "none",
            "--config",
            str(out / "config.yaml"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "warning" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("openapi_python_client") is None,
    reason="openapi-python-client (the test extra) is not installed",
)
def test_generated_python_client_round_trip(local, tmp_path, monkeypatch):
    """A client GENERATED from the served OpenAPI document (openapi-python-client), not ours:
    upload -> job (retried with its Idempotency-Key) -> wait -> result -> download -> purge
    through the real controller and Ray workers, every answer parsed into the generated models,
    X-Request-ID sent and echoed, an error parsed as a Problem."""
    package = "occlutrace_generated"
    generate_python_client(local.server.url, tmp_path, package)
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = importlib.import_module(package)
    api = importlib.import_module(f"{package}.api")
    models = importlib.import_module(f"{package}.models")
    File = importlib.import_module(f"{package}.types").File
    for name in (
        "uploads.upload_file",
        "jobs.create_job",
        "jobs.get_job",
        "jobs.get_result",
        "results.download",
        "cases.purge",
    ):
        importlib.import_module(f"{package}.api.{name}")

    client = gen.AuthenticatedClient(
        base_url=local.server.url, token="tok-alpha-0123456789", raise_on_unexpected_status=True
    )
    case = "gen-rt"
    for seed, role in enumerate(("fixed", "moving")):
        form = models.UploadFileForm(file=File(payload=io.BytesIO(mesh_bytes(seed)), file_name=f"{role}.stl"))
        r = api.uploads.upload_file.sync_detailed(case, client=client, body=form, x_request_id=f"gen-rt-{role}")
        assert r.status_code == 201 and isinstance(r.parsed, models.UploadInfo), r.content
        assert r.parsed.name == f"{role}.stl" and r.headers["X-Request-ID"] == f"gen-rt-{role}"

    body = models.JobCreate.from_dict(
        {"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    )
    created = api.jobs.create_job.sync_detailed(client=client, body=body, idempotency_key="gen-rt-create-1")
    again = api.jobs.create_job.sync_detailed(client=client, body=body, idempotency_key="gen-rt-create-1")
    assert (created.status_code, again.status_code) == (201, 200)
    job = created.parsed
    assert isinstance(job, models.JobStatus) and again.parsed.job_id == job.job_id
    assert created.headers["Location"].endswith(f"/v1/jobs/{job.job_id}")

    done = wait_for(
        lambda: (
            (j := api.jobs.get_job.sync(job.job_id, client=client)).state.value
            in ("succeeded", "failed", "rejected", "cancelled")
            and j
        ),
        120,
        "the generated client's job",
    )
    assert isinstance(done, models.JobStatus) and done.state == models.JobStatusState.SUCCEEDED, done

    result = api.jobs.get_result.sync(job.job_id, client=client)
    assert isinstance(result, models.JobResult) and result.result["metrics"]["rmse_mm"] == 0.02
    by_name = {f.name.rsplit("/", 1)[-1]: f for f in result.files}
    token = httpx.URL(by_name["aligned.stl"].url).path.rsplit("/", 1)[-1]
    aligned = api.results.download.sync_detailed(token, client=gen.Client(base_url=local.server.url))
    assert aligned.status_code == 200  # the scripted job writes the (sanitised) `fixed` input as aligned.stl
    assert aligned.content == local.store.get(f"tenants/alpha/cases/{case}/inputs/fixed.stl")

    missing = api.jobs.get_job.sync_detailed("j000000000000", client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem)
    assert missing.parsed.status == 404 and missing.parsed.error == "not_found"

    purged = api.cases.purge.sync(case, client=client)
    assert isinstance(purged, models.PurgeResult) and purged.count >= 4
    assert not local.store.list(f"tenants/alpha/cases/{case}/")
