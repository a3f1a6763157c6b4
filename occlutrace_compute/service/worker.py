"""The align worker: a Ray actor that runs batches of jobs and writes each job's final state.

The function it runs is injectable (`ServiceConfig.job_fn`, "module:attr", default the real
pipeline `occlutrace_compute.jobs.runner:run_job(spec, store) -> dict`), so the fault tests can
drive a worker with small job functions of their own.

A batch runs in three steps, its store writes in parallel rounds (`JobRepo.save_many`), so a
batch costs a few rounds of store calls rather than ~8 synced writes in a row per job:
1. every record read and, where runnable, marked "running" with its attempt charged (one round);
2. the jobs run one after another, each after a hint naming it (`running_hint_key`, written
   with `put_transient`: visible at once, no fsync); each finished job's outcome goes to a
   committer thread that writes the finished ones in rounds while the next job runs;
3. every outcome written (record, state and batch entries, marker removed) before the batch
   returns, so the dispatcher's metrics and callbacks follow durable records only.
Attempts: each job of a batch is charged when the batch starts; if the worker dies, the
dispatcher reads the hint and gives back the attempt of every batch-mate except the job the
hint names (the one that was running), so a batch-mate of a job that kills the worker is not
charged. The last hint stays after the batch (a stale hint names an attempt that no record
shows once its job moved on: deleting it cost a call and a folder removed and made again per
batch); the dispatcher deletes it with the worker. A job already started `max_attempts`
times is failed, never re-run (outcomes.py). A worker that loses the store never raises: the job goes back "queued" with its attempt refunded
(see `_run_one`). Every record write is checked against the case's purge generation
(`JobRepo.save_many`), so a job purged while it ran leaves nothing behind.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.logs import REQUEST_ID, log, setup_logging
from occlutrace_compute.service.outcomes import (
    GONE,
    Outcome,
    exhausted,
    give_up,
    settle,
)
from occlutrace_compute.service.records import JobRef, JobRepo, light_map, new_id, parallel_map
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore, StoreError

logger = logging.getLogger("occlutrace.worker")
JobFn = Callable[[JobSpec, ObjectStore], dict]
RUNNING_HINTS = "ops/running/"
COMMIT_GRACE_S = 0.02  # a finished job waits this long at most for batch-mates to share its writes


def running_hint_key(worker_id: str) -> str:
    """`ops/running/<worker id>.json` -> {"key", "attempt"}: the job this worker is running now."""
    return f"{RUNNING_HINTS}{worker_id}.json"


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


@dataclass
class _Run:
    """A job of the batch being run: its record (moved on as it runs), the attempt it started
    (None: not started by this batch), its figures once run, and whether its run met a store
    outage (then it goes back "queued" with that attempt given back)."""

    ref: JobRef
    record: JobRecord
    started: int | None = None
    figures: dict | None = None
    outage: bool = False


class AlignWorker:
    """Runs jobs one after another from the batches the dispatcher hands it."""

    def __init__(self, config: ServiceConfig, worker_id: str | None = None) -> None:
        setup_logging()
        self.config = config
        self.worker_id = worker_id or new_id("w")
        self.store = config.open_store()
        self.repo = JobRepo(self.store)
        self.job_fn = load_job_fn(config.job_fn)
        self.device = "cpu"
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        try:
            import ray

            if ray.is_initialized() and ray.get_gpu_ids():
                self.device = "cuda"
        except ImportError:
            pass

    def info(self) -> dict:
        return {"device": self.device, "pid": os.getpid(), "node": socket.gethostname()}

    def run_batch(self, keys: list[str], refunds: dict[str, int] | None = None) -> list[Outcome]:
        """One Outcome per well-formed key, in order (see the module docstring for the steps).

        `refunds` (key -> attempt number) names attempts that ended in a store outage which this
        worker could not record (see `_run_one`): such a job's next start is not charged again.
        Never raises for a store fault: the jobs it hits go back "queued", their attempts refunded.
        """
        refs = [ref for ref in (JobRef.parse(key) for key in keys) if ref is not None]
        outcomes: dict[str, Outcome] = {}
        runs = self._start(refs, refunds or {}, outcomes)
        inbox: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        commits = self._committer.submit(self._commit_loop, inbox, outcomes)
        try:
            self._run_all(runs, inbox, outcomes)
        finally:
            inbox.put(None)
            commits.result()
        return [outcomes[ref.key] for ref in refs if ref.key in outcomes]

    # -- step 1: read, charge -------------------------------------------------------------

    def _start(self, refs: list[JobRef], refunds: dict[str, int], outcomes: dict[str, Outcome]) -> list[_Run]:
        """Read every record; mark the runnable ones "running" with their attempt charged, in one
        round. Returns the batch's jobs still to run or to write (exhausted ones with `started`
        None); the others have their outcome in `outcomes` already."""
        try:
            records = self.repo.load_many(refs)
        except StoreError as exc:
            self._requeue(refs, refunds, outcomes, exc)
            return []
        runs: list[_Run] = []
        purged: list[JobRef] = []
        for ref, record in zip(refs, records):
            if record is None:  # purged; an attempt cut short by an outage may have left outputs
                purged.append(ref)
                outcomes[ref.key] = Outcome(ref.key, GONE)
            elif record.state in TERMINAL_STATES:
                outcomes[ref.key] = Outcome(ref.key, record.state)
            else:
                refund = refunds.get(ref.key)
                if record.state == "running" and refund is not None and record.attempts == refund:
                    record.attempts -= 1  # that attempt met a store outage: not charged
                runs.append(_Run(ref, record))
        try:
            parallel_map(lambda ref: self.store.delete_prefix(ref.prefix + "outputs/"), purged)
            # No cancel-marker check here: a cancel saves the record "cancelled" (final, skipped
            # above) before it answers, and the marker is checked after the result is written
            # (`_write`), so a cancel racing this start still wins; a check here cost a store
            # call per job for a window the client cannot observe.
            starting = []
            for run in runs:
                if exhausted(run.record, self.config.max_attempts):
                    give_up(run.record)
                else:
                    record = run.record
                    record.state, record.attempts, record.reason = "running", record.attempts + 1, None
                    run.started = record.attempts
                    starting.append(run)
            saved = self.repo.save_many([run.record for run in starting])
        except StoreError as exc:
            self._requeue(
                [run.ref for run in runs],
                refunds,
                outcomes,
                exc,
                {run.ref.key: run.started for run in runs if run.started is not None},
            )
            return []
        for run, ok in zip(starting, saved):
            if not ok:  # purged
                outcomes[run.ref.key] = Outcome(run.ref.key, GONE)
        return [run for run in runs if run.ref.key not in outcomes]

    # -- step 2: run ----------------------------------------------------------------------

    def _run_all(self, runs: list[_Run], inbox: queue.SimpleQueue[_Run | None], outcomes: dict[str, Outcome]) -> None:
        """Runs the started jobs one after another, each after its hint; every run whose outcome
        is to be written goes to `inbox`. (device_worker.DeviceWorker overrides this: staged runs.)"""
        for run in runs:
            if run.started is None or self._hint(run, outcomes):  # None: exhausted at start
                if run.started is not None:
                    self._run_one(run)
                inbox.put(run)

    def _hint(self, run: _Run, outcomes: dict[str, Outcome]) -> bool:
        """Name the job about to run, for the dispatcher to read if this worker dies (module
        docstring). False (the job re-queued uncharged) if the store is lost."""
        body = json.dumps({"key": run.ref.key, "attempt": run.started}).encode()
        try:
            self.store.put_transient(running_hint_key(self.worker_id), body)
        except StoreError as exc:
            self._requeue([run.ref], {}, outcomes, exc, {run.ref.key: run.started} if run.started is not None else None)
            return False
        return True

    def _run_one(self, run: _Run, job: Callable[[], dict] | None = None) -> None:
        """Run the job function (or `job`, the same job run another way: device_worker's stages);
        the record's state and result (or reason) set from its end."""
        record, ref = run.record, run.ref
        token = REQUEST_ID.set(record.request_id)  # every log line about this job names its request
        try:
            fields = {"tenant": ref.tenant, "job_id": ref.job_id, "attempts": record.attempts, "device": self.device}
            log(logger, logging.INFO, "job started", **fields)
            start = time.monotonic()
            result: dict | None = None
            try:
                result = job() if job is not None else self.job_fn(record.spec, self.store)
                record.state, record.result = "succeeded", result
            except InputRejected as exc:
                record.state, record.reason = "rejected", str(exc)
            except KeyNotFound as exc:  # an object of the job vanished (a purge under it): the job's fault
                record.state, record.reason = "rejected", f"an object of the job is gone: {exc}"[:500]
            except StoreError as exc:  # the store's fault, not the job's: re-queued uncharged (_finish)
                run.outage = True
                log(logger, logging.WARNING, "store lost during the job", error=type(exc).__name__, **fields)
                return
            except Exception as exc:  # our fault: retry, then fail with the reason
                settle(record, self.config.max_attempts, f"{type(exc).__name__}: {exc}"[:500])
                log(logger, logging.WARNING, "job attempt failed", error=type(exc).__name__, **fields)
            run.figures = job_figures(result, time.monotonic() - start)
        finally:
            REQUEST_ID.reset(token)

    # -- step 3: write ----------------------------------------------------------------------

    def _commit_loop(self, inbox: queue.SimpleQueue[_Run | None], outcomes: dict[str, Outcome]) -> None:
        """The committer: writes finished jobs in rounds, each round what finished within
        COMMIT_GRACE_S of its first job (or until the batch ended), so a batch of quick jobs
        is written in one round and a slow job's outcome waits at most COMMIT_GRACE_S.
        Ends at the batch's end mark (None); at most one wait of COMMIT_GRACE_S per round."""
        ended = False
        while not ended:
            first = inbox.get()
            if first is None:
                return
            runs = [first]
            deadline = time.monotonic() + COMMIT_GRACE_S
            while True:
                try:
                    more = inbox.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if more is None:
                    ended = True
                    break
                runs.append(more)
            self._finish(runs, outcomes)

    def _finish(self, runs: list[_Run], outcomes: dict[str, Outcome]) -> None:
        """Write the outcomes of `runs` unless purged or cancelled meanwhile (cancel wins), in
        parallel rounds. Purged: `save_many` checks the case's purge generation before and after
        the writes and deletes the job's objects (outputs included) when it changed. Cancelled:
        the outputs go; the cancel marker is checked after the outputs were written, so outputs
        written before a cancel are removed either by the controller (after its marker) or here.
        A job whose run met a store outage goes back "queued" uncharged."""
        outage = [run for run in runs if run.outage]
        if outage:
            self._requeue(
                [r.ref for r in outage],
                {},
                outcomes,
                StoreError("store lost during the job"),
                {r.ref.key: r.started for r in outage if r.started is not None},
            )
        runs = [run for run in runs if not run.outage]
        try:
            self._write(runs, outcomes)
        except StoreError as exc:
            self._requeue(
                [r.ref for r in runs], {}, outcomes, exc, {r.ref.key: r.started for r in runs if r.started is not None}
            )

    def _write(self, runs: list[_Run], outcomes: dict[str, Outcome]) -> None:
        for run, cancel in zip(runs, light_map(self.store, lambda r: self.repo.cancelled(r.ref), runs)):
            if cancel:
                run.record.state, run.record.result = "cancelled", None
        saved = self.repo.save_many([run.record for run in runs])
        live = [run for run, ok in zip(runs, saved) if ok]
        raced = [
            run
            for run, cancel in zip(live, light_map(self.store, lambda r: self.repo.cancelled(r.ref), live))
            if cancel and run.record.state != "cancelled"
        ]  # a cancel raced the save
        for run in raced:
            run.record.state, run.record.result = "cancelled", None
        again = dict(zip((run.ref.key for run in raced), self.repo.save_many([run.record for run in raced])))
        cancelled = [run for run in live if run.record.state == "cancelled" and again.get(run.ref.key, True)]
        parallel_map(lambda r: self.store.delete_prefix(r.ref.prefix + "outputs/"), cancelled)
        for run, ok in zip(runs, saved):
            if not ok or not again.get(run.ref.key, True):
                outcomes[run.ref.key] = Outcome(run.ref.key, GONE)
                continue
            record = run.record
            final = record.state in TERMINAL_STATES
            token = REQUEST_ID.set(record.request_id)  # the committer thread logs for every job
            try:
                log(
                    logger,
                    logging.INFO,
                    "job " + record.state,
                    tenant=run.ref.tenant,
                    job_id=run.ref.job_id,
                    state=record.state,
                    attempts=record.attempts,
                )
            finally:
                REQUEST_ID.reset(token)
            outcomes[run.ref.key] = Outcome(
                key=run.ref.key,
                state=record.state,
                final=final,
                kind=record.spec.kind,
                figures=run.figures if record.state == "succeeded" else None,
                callback_url=record.callback_url if final else None,
                status=status_body(record) if final else None,
            )

    def _requeue(
        self,
        refs: list[JobRef],
        refunds: dict[str, int],
        outcomes: dict[str, Outcome],
        exc: Exception,
        started: dict[str, int] | None = None,
    ) -> None:
        """The store was lost: each job goes back "queued", the attempt it started (or the
        refund it came with) carried to the dispatcher to be given back."""
        for ref in refs:
            log(
                logger,
                logging.WARNING,
                "store lost: job re-queued uncharged",
                tenant=ref.tenant,
                job_id=ref.job_id,
                error=type(exc).__name__,
            )
            refund = (started or {}).get(ref.key, refunds.get(ref.key))
            outcomes[ref.key] = Outcome(ref.key, "queued", refund=refund)
