"""The metrics contract between the service and the Helm chart: a real controller (uvicorn on
127.0.0.1) with the dispatcher and a CPU worker on a local Ray runs one real pair job (the
real pipeline on samples/case-0001-pair); its /metrics then holds every series the chart's
Grafana dashboard and PrometheusRule alerts query, and the worker-side series carry the job."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from test_deploy_chart import chart_metric_names
from test_service_support import Api, LiveServer, ray_session, wait_for, write_tokens

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.records import JobRef, JobRepo
from occlutrace_compute.service.server import build_app

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "case-0001-pair"
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


class Scrape:
    """One /metrics exposition: family types and, per series name, its samples (labels, value)."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def total(self, name: str, **labels: str) -> float:
        return sum(v for lab, v in self.samples.get(name, []) if labels.items() <= lab.items())


def required_series(name: str, types: dict[str, str]) -> set[str]:
    """The series a chart query on `name` needs: all three of a histogram's, a counter's _total."""
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return {base + s for s in HISTOGRAM_SERIES}
    if types.get(name) == "histogram":
        return {name + s for s in HISTOGRAM_SERIES}
    base = name.removesuffix("_total")
    if types.get(base) == "counter":
        return {base + "_total"}
    return {name}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    tokens = write_tokens(tmp / "tokens", {"tok-metrics-0123456": "metrics"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}",
        tokens_file=str(tokens),
        ray_namespace="metrics-contract",
        rescan_s=1.0,
        cpu_workers=1,
        batch_size=4,
        rate_burst=5000,
    )  # the default job function: the real pipeline
    with ray_session(num_cpus=2):
        server = LiveServer(lambda: build_app(config)).start()
        yield server, Api(server.url, "tok-metrics-0123456"), config
        server.stop()
        dispatcher = get_dispatcher(config)
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)


def scrape(url: str) -> Scrape:
    resp = httpx.get(f"{url}/metrics", timeout=30)
    assert resp.status_code == 200
    return Scrape(resp.text)


def test_metrics_cover_the_chart_and_carry_a_real_job(service):
    server, api, config = service
    before = scrape(server.url)  # controller series are per process: other tests may have moved them
    for path in sorted(SAMPLE.glob("*.ply")):
        assert api.upload("real-metrics-1", path.name, path.read_bytes()).status_code == 201
    r = api.http.post(
        "/v1/jobs",
        json={"case": "real-metrics-1", "kind": "pair", "inputs": {"fixed": "fixed.ply", "moving": "moving.ply"}},
        headers={"X-Request-ID": "metrics-req-1"},
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "metrics-req-1", r.text
    done = api.wait_state(r.json()["job_id"], ("succeeded", "failed", "rejected"), 120)
    assert done["state"] == "succeeded", done

    def scrape_after_the_job() -> Scrape | None:
        s = scrape(server.url)
        finished = s.total("occlutrace_jobs_finished_total", kind="pair", state="succeeded") >= 1
        drained = s.samples.get("occlutrace_oldest_queued_job_age_seconds") == [({}, 0.0)]
        return s if finished and drained else None

    after = wait_for(scrape_after_the_job, 30, "the dispatcher to record the finished job", every_s=0.2)

    # the request id reached the job's record and the Ray worker's own log lines for the job
    record = JobRepo(config.open_store()).load(JobRef("metrics", "real-metrics-1", r.json()["job_id"]))
    assert record is not None and record.request_id == "metrics-req-1"
    logs_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())

    def worker_lines() -> list[dict] | None:
        lines = [
            json.loads(line)
            for f in logs_dir.glob("worker-*.out")
            for line in f.read_text().splitlines()
            if line.startswith("{") and '"occlutrace.worker"' in line and r.json()["job_id"] in line
        ]
        return lines if any(line["msg"] == "job succeeded" for line in lines) else None

    lines = wait_for(worker_lines, 30, "the worker's log lines of the job", every_s=0.2)
    assert lines and all(line.get("request_id") == "metrics-req-1" for line in lines), lines

    used = chart_metric_names()
    assert used["dashboard"] and used["alerts"]
    for source, names in used.items():
        missing = {s for n in names for s in required_series(n, after.types) if s not in after.samples}
        assert not missing, f"/metrics lacks series the chart's {source} query: {sorted(missing)}"

    # the worker-side series carry the job that ran
    assert after.total("occlutrace_batch_size_count") >= 1 and after.total("occlutrace_batch_size_sum") >= 1
    assert after.total("occlutrace_stage_duration_seconds_count", stage="job") == 1
    stages = {lab["stage"] for lab, v in after.samples["occlutrace_stage_duration_seconds_count"] if v > 0}
    assert len(stages - {"job"}) >= 2, stages  # the pipeline's own timings, not only the job's
    assert after.total("occlutrace_icp_iterations_count") >= 1 and after.total("occlutrace_icp_iterations_sum") > 0
    rmse_n = after.total("occlutrace_registration_rmse_meters_count")
    assert rmse_n >= 1
    assert 0 < after.total("occlutrace_registration_rmse_meters_sum") / rmse_n < 1e-3  # metres: under 1 mm
    assert after.total("occlutrace_workers", device="cpu") >= 1
    # the job's end-to-end latency: one observation, between its run time and the whole wait
    assert after.total("occlutrace_job_latency_seconds_count", kind="pair", state="succeeded") == 1
    latency = after.total("occlutrace_job_latency_seconds_sum", kind="pair", state="succeeded")
    assert after.total("occlutrace_stage_duration_seconds_sum", stage="job") <= latency < 120
    assert after.samples["occlutrace_dispatcher_up"] == [({}, 1.0)]
    assert after.types["occlutrace_requested_workers"] == "gauge"
    assert after.samples["occlutrace_requested_workers"][0][1] >= 0

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert grew("occlutrace_jobs_submitted_total", kind="pair") == 1
    assert grew("occlutrace_bytes_in_total") == sum(p.stat().st_size for p in SAMPLE.glob("*.ply"))
    assert grew("occlutrace_http_requests_total", route="/v1/jobs", status="201") == 1


def test_oldest_queued_age_is_the_oldest_waiting_job_whatever_its_queue():
    """The gauge's value: the oldest of the jobs queued per tenant and deferred for a retry (not
    necessarily at a queue's head); a malformed id is skipped, an empty queue is 0."""
    import time

    from occlutrace_compute.service.dispatcher import Dispatcher
    from occlutrace_compute.service.fairqueue import FairQueue

    def job_id(age_s: float) -> str:
        return "j" + format(int((time.time() - age_s) * 1000), "012x") + "0a1b"

    d = object.__new__(Dispatcher)  # the method reads only the queue: no loop, no Ray
    d.queue = FairQueue()
    assert d._oldest_queued_age_s() == 0.0
    for ref in (JobRef("a", "c1", job_id(5)), JobRef("a", "c1", job_id(400)), JobRef("b", "c2", "not-an-id")):
        d.queue.enqueue(ref)
    d.queue.defer(JobRef("b", "c2", job_id(90)), due=0.0)
    assert 399 <= d._oldest_queued_age_s() <= 401
    d.queue = FairQueue()
    d.queue.enqueue(JobRef("a", "c1", job_id(5)))
    d.queue.enqueue(JobRef("b", "c2", "not-an-id"))
    d.queue.defer(JobRef("b", "c2", job_id(90)), due=0.0)
    assert 89 <= d._oldest_queued_age_s() <= 91  # the deferred job is now the oldest
