"""Prometheus metrics, under the names the Helm dashboard and alerts rely on.

Two registries, because two kinds of process own them:
- controller metrics (HTTP, submissions, bytes, store errors) live in each controller replica;
- cluster metrics (finished jobs, job latency, queue depth and oldest queued age, batches, stages,
  ICP, RMSE, workers, requested workers) live in the dispatcher actor, which receives each job's
  figures from the workers with the job's outcome.
A controller's `/metrics` serves its own registry followed by the dispatcher's exposition text
(fetched with a short timeout), so one scrape target shows both. With several controller
replicas the cluster series are identical on each: aggregate them with max(), not sum().

Labelled counters are created with their known label values at zero, so every series the
dashboard and alerts query exists from the first scrape (rate() over an absent series is no
data, not zero).
"""

from __future__ import annotations

from functools import lru_cache
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from occlutrace_compute.jobs.models import TERMINAL_STATES, JobKind

disable_created_metrics()  # no *_created series: they double the exposition for no use here

STORE_OPS = ("put", "get", "exists", "list", "delete", "presign")  # see instrumented.InstrumentedStore
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# a job waits in the queue behind others: minutes to hours, not the milliseconds of a request
JOB_SECONDS_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("occlutrace_jobs_submitted_total", "Jobs accepted", ["kind"], registry=r)
        self.bytes_in = Counter("occlutrace_bytes_in_total", "Upload bytes accepted", registry=r)
        self.bytes_out = Counter("occlutrace_bytes_out_total", "Bytes served by the controller", registry=r)
        self.store_errors = Counter("occlutrace_store_errors_total", "Failed store operations", ["op"], registry=r)
        for kind in get_args(JobKind):
            self.jobs_submitted.labels(kind=kind)
        for op in STORE_OPS:
            self.store_errors.labels(op=op)
        self.http_requests = Counter(
            "occlutrace_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "occlutrace_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        # set at each scrape from a ping of the dispatcher: Ray's health is a metric and an
        # alert, never this pod's readiness (a Ray head restart must not empty the Service)
        self.dispatcher_up = Gauge(
            "occlutrace_dispatcher_up",
            "1 when this controller reached the dispatcher at the last scrape",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ClusterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_finished = Counter(
            "occlutrace_jobs_finished_total", "Jobs reaching a final state", ["kind", "state"], registry=r
        )
        for kind in get_args(JobKind):
            for state in sorted(TERMINAL_STATES):
                self.jobs_finished.labels(kind=kind, state=state)
        self.queue_depth = Gauge("occlutrace_queue_depth", "Jobs queued, not yet on a worker", registry=r)
        self.batch_size = Histogram(
            "occlutrace_batch_size",
            "Jobs per batch handed to a worker",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.stage_duration = Histogram(
            "occlutrace_stage_duration_seconds",
            "Duration of a pipeline stage",
            ["stage"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.icp_iterations = Histogram(
            "occlutrace_icp_iterations",
            "ICP iterations per registration",
            buckets=(5, 10, 20, 30, 50, 75, 100, 150, 200, 300),
            registry=r,
        )
        self.rmse = Histogram(
            "occlutrace_registration_rmse_meters",
            "Registration RMSE",
            buckets=(1e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3),
            registry=r,
        )
        self.workers = Gauge("occlutrace_workers", "Ready workers by device", ["device"], registry=r)
        self.job_latency = Histogram(
            "occlutrace_job_latency_seconds",
            "Job end-to-end latency: created (the id's time) to final state",
            ["kind", "state"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=r,
        )
        for kind in get_args(JobKind):
            for state in sorted(TERMINAL_STATES):
                self.job_latency.labels(kind=kind, state=state)
        self.oldest_queued_age = Gauge(
            "occlutrace_oldest_queued_job_age_seconds",
            "Age of the oldest job queued and not on a worker (0: none)",
            registry=r,
        )
        self.requested_workers = Gauge(
            "occlutrace_requested_workers",
            "Workers' worth of resources asked of the Ray autoscaler",
            registry=r,
        )

    def observe_job(self, figures: dict) -> None:
        """Record one job's figures as reported by a worker (see worker.job_figures)."""
        for stage, seconds in (figures.get("stages") or {}).items():
            self.stage_duration.labels(stage=str(stage)).observe(float(seconds))
        for n in figures.get("icp_iterations") or []:
            self.icp_iterations.observe(float(n))
        for rmse_mm in figures.get("rmse_mm") or []:
            self.rmse.observe(float(rmse_mm) / 1000.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@lru_cache(maxsize=1)
def controller_metrics() -> ControllerMetrics:
    """One per process: every app instance in a process shares it (prometheus names are global)."""
    return ControllerMetrics()
