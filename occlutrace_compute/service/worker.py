"""The align worker: a Ray actor that runs batches of jobs and writes each job's final state.

The function it runs is injectable (`ServiceConfig.job_fn`, "module:attr", default the real
pipeline `occlutrace_compute.jobs.runner:run_job(spec, store) -> dict`), so the fault tests can
drive a worker with small job functions of their own.

Attempts are counted when a job STARTS on a worker, so a batch-mate of a job that kills the
worker is not charged; a job already started `max_attempts` times is failed, never re-run. A
worker that loses the store never raises: the job goes back "queued" with its attempt refunded
(see `_run_one`). Every record write is checked against the case's purge generation
(`JobRepo.save`), so a job purged while it ran leaves nothing behind.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from typing import Any, Callable, Iterator

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.logs import REQUEST_ID, log, setup_logging
from occlutrace_compute.service.records import JobRef, JobRepo
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore, StoreError

logger = logging.getLogger("occlutrace.worker")
JobFn = Callable[[JobSpec, ObjectStore], dict]


def load_job_fn(path: str) -> JobFn:
    """Import "package.module:function"."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"job function {path!r}: expected 'module:function'")
    return getattr(importlib.import_module(module_name), attr)


def _walk(obj: Any, depth: int = 0) -> Iterator[dict]:
    if depth > 4:
        return
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _walk(value, depth + 1)


def job_figures(result: dict | None, seconds: float) -> dict:
    """Metrics figures of one job: its duration, stage timings, ICP iterations, RMSE (mm).

    Reads `timings_seconds` ({stage: seconds}) and `metrics` ({"iterations", "rmse_mm"})
    wherever the result nests them (a pair result has one registration, a bite result several).
    """
    figures: dict[str, Any] = {"stages": {"job": seconds}, "icp_iterations": [], "rmse_mm": []}
    for node in _walk(result or {}):
        timings = node.get("timings_seconds")
        if isinstance(timings, dict):
            for stage, value in timings.items():
                if isinstance(value, (int, float)):
                    figures["stages"][str(stage)] = float(value)
        metrics = node.get("metrics")
        if isinstance(metrics, dict):
            if isinstance(metrics.get("iterations"), (int, float)):
                figures["icp_iterations"].append(float(metrics["iterations"]))
            if isinstance(metrics.get("rmse_mm"), (int, float)):
                figures["rmse_mm"].append(float(metrics["rmse_mm"]))
    return figures


def status_body(record: JobRecord) -> dict:
    """The job status as the API and callbacks show it."""
    return {
        "job_id": record.spec.job_id,
        "case": record.spec.case,
        "kind": record.spec.kind,
        "state": record.state,
        "reason": record.reason,
        "attempts": record.attempts,
        "batch_id": record.batch_id,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


class AlignWorker:
    """Runs jobs one after another from the batches the dispatcher hands it."""

    def __init__(self, config: ServiceConfig) -> None:
        setup_logging()
        self.config = config
        self.store = config.open_store()
        self.repo = JobRepo(self.store)
        self.job_fn = load_job_fn(config.job_fn)
        self.device = "cpu"
        try:
            import ray

            if ray.is_initialized() and ray.get_gpu_ids():
                self.device = "cuda"
        except ImportError:
            pass

    def info(self) -> dict:
        return {"device": self.device, "pid": os.getpid(), "node": socket.gethostname()}

    def run_batch(self, keys: list[str], refunds: dict[str, int] | None = None) -> list[dict]:
        """Outcome per job: {key, state, final, kind, figures?, callback_url?, status?, refund?}.

        `refunds` (key -> attempt number) names attempts that ended in a store outage which this
        worker could not record (see `_run_one`): such a job's next start is not charged again.
        """
        outcomes = []
        for key in keys:
            ref = JobRef.parse(key)
            if ref is not None:
                outcomes.append(self._run_one(ref, (refunds or {}).get(key)))
        return outcomes

    def _run_one(self, ref: JobRef, refund: int | None = None) -> dict:
        """One job; never raises for a store fault. A job that loses the store (reading its record,
        running, writing its outcome) is answered "queued" (the dispatcher re-queues it after a
        pause) with `refund` set to the attempt it started, uncharged: an outage is not the job's
        fault, and the store may be unable to take the refund now, so the dispatcher carries it."""
        started: list[int] = []
        token = REQUEST_ID.set(None)  # _attempt sets the job's request id once its record is read
        try:
            return self._attempt(ref, refund, started)
        except StoreError as exc:
            log(logger, logging.WARNING, "store lost: job re-queued uncharged", tenant=ref.tenant,
                job_id=ref.job_id, error=type(exc).__name__)
            return {"key": ref.key, "state": "queued", "final": False,
                    "refund": started[0] if started else refund}
        finally:
            REQUEST_ID.reset(token)

    def _attempt(self, ref: JobRef, refund: int | None, started: list[int]) -> dict:
        record = self.repo.load(ref)
        if record is None:  # purged; an attempt cut short by an outage may have left outputs
            self.store.delete_prefix(ref.prefix + "outputs/")
            return {"key": ref.key, "state": "gone", "final": False}
        if record.state in TERMINAL_STATES:
            return {"key": ref.key, "state": record.state, "final": False}
        REQUEST_ID.set(record.request_id)  # every log line about this job names its request
        if record.state == "running" and refund is not None and record.attempts == refund:
            record.attempts -= 1  # that attempt met a store outage: not charged
        if self.repo.cancelled(ref):
            record.state, record.reason = "cancelled", "cancelled before it started"
            return self._finish(ref, record, None)
        if record.attempts >= self.config.max_attempts:
            record.state = "failed"
            record.reason = f"gave up after {record.attempts} attempts: the worker was lost each time"
            return self._finish(ref, record, None)
        record.state, record.attempts, record.reason = "running", record.attempts + 1, None
        if not self.repo.save(record):  # purged
            return {"key": ref.key, "state": "gone", "final": False}
        started.append(record.attempts)
        fields = {"tenant": ref.tenant, "job_id": ref.job_id, "attempts": record.attempts, "device": self.device}
        log(logger, logging.INFO, "job started", **fields)
        start = time.monotonic()
        result: dict | None = None
        try:
            result = self.job_fn(record.spec, self.store)
            record.state, record.result = "succeeded", result
        except InputRejected as exc:
            record.state, record.reason = "rejected", str(exc)
        except KeyNotFound as exc:  # an object of the job vanished (a purge under it): the job's fault
            record.state, record.reason = "rejected", f"an object of the job is gone: {exc}"[:500]
        except StoreError:  # the store's fault, not the job's: re-queued uncharged (_run_one)
            raise
        except Exception as exc:  # our fault: retry, then fail with the reason
            reason = f"{type(exc).__name__}: {exc}"[:500]
            record.reason = reason
            record.state = "failed" if record.attempts >= self.config.max_attempts else "queued"
            log(logger, logging.WARNING, "job attempt failed", error=type(exc).__name__, **fields)
        figures = job_figures(result, time.monotonic() - start)
        return self._finish(ref, record, figures)

    def _finish(self, ref: JobRef, record: JobRecord, figures: dict | None) -> dict:
        """Write the outcome unless the job was purged or cancelled meanwhile (cancel wins).

        Purged: `repo.save` checks the case's purge generation before and after the write and
        deletes the job's objects (outputs included) when it changed. Cancelled: the outputs go;
        the cancel marker is checked after the outputs were written, so outputs written before a
        cancel are removed either by the controller (after its marker) or here."""
        gone = {"key": ref.key, "state": "gone", "final": False}
        if self.repo.cancelled(ref):
            record.state, record.result = "cancelled", None
        if not self.repo.save(record):
            return gone
        if record.state != "cancelled" and self.repo.cancelled(ref):  # cancel raced the save
            record.state, record.result = "cancelled", None
            if not self.repo.save(record):
                return gone
        if record.state == "cancelled":
            self.store.delete_prefix(ref.prefix + "outputs/")
        final = record.state in TERMINAL_STATES
        log(logger, logging.INFO, "job " + record.state, tenant=ref.tenant, job_id=ref.job_id,
            state=record.state, attempts=record.attempts)
        return {
            "key": ref.key,
            "state": record.state,
            "final": final,
            "kind": record.spec.kind,
            "figures": figures if record.state == "succeeded" else None,
            "callback_url": record.callback_url if final else None,
            "status": status_body(record) if final else None,
        }
