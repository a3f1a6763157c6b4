"""The dispatcher: one named, detached Ray actor that feeds queued jobs to worker actors.

It holds no state of its own worth keeping: at every (re)start it rebuilds its queue from the
store's queue markers (one per active job: the cost follows the work in flight, not the
history), then rescans them periodically, so a job whose
notification was lost, or whose worker or dispatcher died, is picked up again. Workers are
actors it owns (restartable); when one dies its batch's unfinished jobs go back to the queue,
every one but the job its running hint names with its attempt given back (worker.py). Tenants
are served round-robin when batches are packed (fairqueue.py), so one tenant's thousand jobs do
not starve another tenant's one.

Scaling: the dispatcher asks the Ray autoscaler for one worker-shaped bundle per batch of
queued or running jobs (`request_resources`, capped at `max_workers`), clears the request when
the queue drains, creates a worker actor whenever the cluster has room for one more that the
queue needs, and lets a worker above the floor go after `worker_idle_s` without work, so that
its node becomes idle and the autoscaler can remove it. Workers are GPU workers (num_gpus=1)
once the cluster has shown a GPU, else CPU workers.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources
from ray.exceptions import GetTimeoutError, RayError

from occlutrace_compute.jobs.models import TERMINAL_STATES
from occlutrace_compute.service import device_worker
from occlutrace_compute.service.callbacks import CallbackPool, deliver
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.fairqueue import FairQueue
from occlutrace_compute.service.logs import log, setup_logging
from occlutrace_compute.service.metrics import ClusterMetrics
from occlutrace_compute.service.outcomes import LOST_REASON, Outcome, settle
from occlutrace_compute.service.records import JobRef, JobRepo, new_id
from occlutrace_compute.service.worker import AlignWorker, running_hint_key, status_body
from occlutrace_compute.storage.base import KeyNotFound, StoreError

logger = logging.getLogger("occlutrace.dispatcher")
DISPATCHER_NAME = "occlutrace-dispatcher"
POLL_S = 0.2
RETRY_DELAY_S = 1.0
ORPHAN_MARKER_AGE_S = 120.0
SCALE_S = 1.0  # how often the worker count and the autoscaler request are revised
# Batches handed to one worker at once: the second waits in the actor's queue, so the worker
# starts it as soon as the first returns, without a round trip through this loop (short jobs:
# the gap was a tenth of a 4-job batch). Only for a worker whose last batch took under
# PIPELINE_S: a batch never waits long behind another while a different worker may free up.
PIPELINE = 2
PIPELINE_S = 0.5


@dataclass
class _Slot:
    handle: Any
    index: int
    worker_id: str
    gpu: bool
    idle_since: float
    device: str = "cpu"
    pid: int | None = None
    ready: bool = False
    info_ref: Any = None
    # the batches sent and not collected: Ray ref -> (jobs, incarnation sent to, time sent)
    inflight: dict[Any, tuple[list[JobRef], int, float]] = field(default_factory=dict)
    incarnation: int = 0  # raised at each loss: the batches of one death share one hint
    lost_hint: tuple[str, int] | None = None  # the running hint read at the last loss
    fast: bool = False  # the last batch came back within PIPELINE_S


class Dispatcher:
    """Runs its loop on a thread of its own; the actor's methods only talk to that loop."""

    def __init__(self, config: ServiceConfig) -> None:
        setup_logging()
        self.config = config
        self.repo = JobRepo(config.open_store())
        self.metrics = ClusterMetrics()
        self._notes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.queue = FairQueue()
        self._slots: list[_Slot] = []
        self._next_index = 0
        self._gpu_mode = False  # sticky: a cluster that has shown a GPU gets GPU workers
        self._requested: int | None = None  # bundles last asked of the autoscaler
        self._stats: dict[str, Any] = {"started": False}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refunds: dict[str, int] = {}  # job key -> attempt that met a store outage (uncharged)
        self._callbacks = CallbackPool(config.callback_concurrency)
        self._device_actor: Any = None  # device-worker mode: the device actor (device_worker.py)
        self._thread = threading.Thread(target=self._run, name="dispatch-loop", daemon=True)
        self._thread.start()

    # -- actor methods ---------------------------------------------------------------------

    def ping(self) -> str:
        return "ok"

    def notify(self, key: str) -> None:
        """A new job record was written under `key`; the periodic rescan covers a lost notify."""
        self._notes.put(key)

    def notify_many(self, keys: list[str]) -> None:
        """`notify` for the jobs of a batch: one Ray call for all of them."""
        for key in keys:
            self._notes.put(key)

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def metrics_text(self) -> bytes:
        return self.metrics.exposition()

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for slot in self._slots:
            ray.kill(slot.handle, no_restart=True)
            self._drop_hint(slot)
        if self._device_actor is not None:
            ray.kill(self._device_actor, no_restart=True)
        self._request(0)

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        rebuilt = False
        next_rescan = next_scale = 0.0
        while not self._stop.is_set():  # the service loop; every wait in it is bounded
            try:
                if not rebuilt:
                    self._rebuild()
                    rebuilt = True
                    next_rescan = time.monotonic() + self.config.rescan_s
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    next_rescan = time.monotonic() + self.config.rescan_s
                if time.monotonic() >= next_scale:
                    self._scale()
                    next_scale = time.monotonic() + SCALE_S
                self._drain_notes()
                self._release_deferred()
                self._check_workers()
                self._dispatch()
                self._collect()
                self._publish()
            except Exception as exc:  # store outage or a bug: log, back off, carry on
                log(logger, logging.ERROR, "dispatch loop error", error=type(exc).__name__)
                self._stop.wait(RETRY_DELAY_S)

    def _rebuild(self) -> None:
        """Every job with a queue marker goes back in the queue: O(active jobs), never O(history).

        A marker exists from before a job's record is written until after it is final, so the
        markers cover every job that may still need a run. Records are not read here: the
        worker reads each one anyway and skips a final or missing one, and the rescan drops
        such markers, so the first batch can go out after one listing of the markers."""
        count = 0
        for ref, _marker in self.repo.queued_refs():
            self._enqueue(ref)
            count += 1
        log(logger, logging.INFO, "queue rebuilt from the queue markers", count=count)

    def _rescan(self) -> None:
        """Pick up jobs whose notification was lost; drop stale queue markers. The markers of
        jobs held already are listed, not read (`queued_refs(known)`)."""
        for ref, marker in self.repo.queued_refs(self.queue.jobs()):
            if ref.key in self.queue:
                continue
            record = self.repo.load(ref)
            if record is None:
                if _age_s(ref.job_id) > ORPHAN_MARKER_AGE_S:
                    self.repo.store.delete(marker)
            elif record.state in TERMINAL_STATES:
                self.repo.finalize(record)  # its state index entry, then the marker removed
            else:
                self._enqueue(ref)

    def _drain_notes(self) -> None:
        for _ in range(10_000):
            try:
                key = self._notes.get_nowait()
            except queue.Empty:
                return
            ref = JobRef.parse(key)
            if ref is not None:
                self._enqueue(ref)

    def _enqueue(self, ref: JobRef) -> None:
        self.queue.enqueue(ref)

    def _defer(self, ref: JobRef) -> None:
        """Back in the queue after a pause (a failed attempt, a lost worker): no hot retry loop."""
        self.queue.defer(ref, time.monotonic() + RETRY_DELAY_S)

    def _release_deferred(self) -> None:
        self.queue.release_due(time.monotonic())

    # -- workers ---------------------------------------------------------------------------

    def _scale(self) -> None:
        """Worker count and autoscaler request follow the queue, within [floor, max_workers]."""
        self._gpu_mode = self._gpu_mode or ray.cluster_resources().get("GPU", 0) > 0
        floor = self._floor()
        backlog = self.queue.depth + self.queue.in_flight
        needed = min(math.ceil(backlog / max(self.config.batch_size, 1)), self.config.max_workers)
        wanted = max(floor, needed)
        self._request(needed)
        self.metrics.oldest_queued_age.set(self._oldest_queued_age_s())  # here: once per SCALE_S
        for _ in range(max(floor - len(self._own()), 0)):  # the floor, even before the cluster has room
            self._add_worker()
        room = self._room()
        while len(self._slots) < wanted and room > 0:
            self._add_worker()
            room -= 1
        self._release_idle(wanted)

    def _floor(self) -> int:
        """Workers kept even when idle."""
        return min(self.config.min_workers if self._gpu_mode else self.config.cpu_workers, self.config.max_workers)

    def _own(self) -> list[_Slot]:
        """Workers of the current kind (GPU or CPU)."""
        return [slot for slot in self._slots if slot.gpu == self._gpu_mode]

    def _shape(self) -> dict[str, float]:
        """Resources of one worker actor: also the bundle asked of the autoscaler per worker."""
        # device-worker mode: workers are CPU-only, the GPU is the device actor's
        shape = {"GPU": 1.0} if self._gpu_mode and not self._device_mode() else {}
        if self.config.worker_cpus > 0:
            shape["CPU"] = float(self.config.worker_cpus)
        return shape

    def _room(self) -> int:
        """How many more workers fit in the resources the cluster has free now.

        Workers not ready yet may still be waiting for their share: they are counted against
        the room (at worst one tick late, never a pile of actors that cannot be placed).
        """
        free = ray.available_resources()
        shape = self._shape()
        fits = self.config.max_workers if not shape else min(free.get(k, 0.0) // v for k, v in shape.items())
        return int(fits) - sum(1 for slot in self._slots if not slot.ready)

    def _request(self, workers: int) -> None:
        """Ask the autoscaler for room for `workers` workers in all (0 clears the request)."""
        if workers == self._requested:
            return
        request_resources(bundles=[self._shape()] * workers)
        self._requested = workers
        self.metrics.requested_workers.set(workers)
        log(logger, logging.INFO, "autoscaler request", count=workers, device="cuda" if self._gpu_mode else "cpu")

    def _device_mode(self) -> bool:
        return device_worker.enabled(self.config, self._gpu_mode)

    def _add_worker(self) -> None:
        staged = self._device_mode()  # device worker (issue 16): CPU workers + one device actor
        if staged and self._device_actor is None:
            self._device_actor = device_worker.start_device_actor(self.config, gpu=self._gpu_mode)
        remote = ray.remote(device_worker.DeviceWorker if staged else AlignWorker).options(
            num_gpus=1 if self._gpu_mode and not staged else 0,
            num_cpus=self.config.worker_cpus,
            max_restarts=-1,
            max_task_retries=0,
        )
        worker_id = new_id("w")
        slot = _Slot(
            handle=remote.remote(self.config, worker_id),
            index=self._next_index,
            worker_id=worker_id,
            gpu=self._gpu_mode,
            idle_since=time.monotonic(),
        )
        slot.info_ref = slot.handle.info.remote()
        self._next_index += 1
        self._slots.append(slot)

    def _release_idle(self, wanted: int) -> None:
        """Let go of one worker above `wanted` that has had no batch for `worker_idle_s`.

        Workers of the wrong kind (CPU workers once a GPU appeared) and workers not ready
        (waiting for a node) go first; one per call, so the count steps down gently.
        """
        if len(self._slots) <= wanted:
            return
        cutoff = time.monotonic() - self.config.worker_idle_s
        idle = [s for s in self._slots if not s.inflight and s.idle_since <= cutoff]
        if not idle:
            return
        slot = min(idle, key=lambda s: (s.gpu == self._gpu_mode, s.ready, s.idle_since))
        if slot.gpu == self._gpu_mode and len(self._own()) <= self._floor():
            return
        self._slots.remove(slot)
        ray.kill(slot.handle, no_restart=True)
        self._drop_hint(slot)
        log(logger, logging.INFO, "idle worker released", worker=slot.index, device=slot.device)

    def _drop_hint(self, slot: _Slot) -> None:
        """Delete the running hint of a worker let go: a worker leaves its last hint in place
        (one write a batch saved; a stale hint names an attempt no record shows once that job
        moved on), so the hint goes with the worker."""
        try:
            self.repo.store.delete(running_hint_key(slot.worker_id))
        except StoreError:  # left behind: a tiny object that names no active attempt
            pass

    def _check_workers(self) -> None:
        for slot in self._slots:
            if slot.ready or slot.info_ref is None:
                continue
            done, _ = ray.wait([slot.info_ref], timeout=0)
            if not done:
                continue
            try:
                info = ray.get(slot.info_ref)
                slot.ready, slot.device, slot.pid = True, info["device"], info["pid"]
                slot.info_ref = None
                log(logger, logging.INFO, "worker ready", worker=slot.index, device=slot.device)
            except RayError:
                slot.info_ref = slot.handle.info.remote()  # restarting: ask again

    def _dispatch(self) -> None:
        """Every ready worker without a batch gets one; then every fast one (PIPELINE) a second."""
        for depth in range(PIPELINE):
            for slot in self._slots:
                if not slot.ready or len(slot.inflight) != depth or (depth > 0 and not slot.fast):
                    continue
                batch = self.queue.next_batch(self.config.batch_size)
                if not batch:
                    return
                refunds = {ref.key: self._refunds.pop(ref.key) for ref in batch if ref.key in self._refunds}
                ref = slot.handle.run_batch.remote([ref.key for ref in batch], refunds)
                slot.inflight[ref] = (batch, slot.incarnation, time.monotonic())
                self.metrics.batch_size.observe(len(batch))
                log(logger, logging.INFO, "batch dispatched", worker=slot.index, batch_size=len(batch))

    def _collect(self) -> None:
        running = {ref: slot for slot in self._slots for ref in slot.inflight}
        if not running:
            self._wait_for_note()
            return
        done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        for ref in done:
            slot = running[ref]
            batch, incarnation, sent = slot.inflight.pop(ref)
            slot.idle_since = time.monotonic()
            self.queue.done(batch)
            try:
                outcomes = ray.get(ref, timeout=5)
            except (RayError, GetTimeoutError) as exc:
                self._worker_lost(slot, batch, exc, incarnation)
                continue
            slot.fast = slot.idle_since - sent < PIPELINE_S
            for outcome in outcomes:
                self._record_outcome(outcome)

    def _wait_for_note(self) -> None:
        try:
            key = self._notes.get(timeout=POLL_S)
        except queue.Empty:
            return
        ref = JobRef.parse(key)
        if ref is not None:
            self._enqueue(ref)

    def _worker_lost(self, slot: _Slot, batch: list[JobRef], exc: Exception, incarnation: int | None = None) -> None:
        """The worker died (or the task broke): unfinished jobs go back, or fail if exhausted.

        The worker charged every job of the batch when the batch started; its running hint names
        the one job that was running (if any). That job keeps its charge (`settle`: re-queued, or
        failed once exhausted); every other one still "running" gets its attempt back, so a
        batch-mate of a job that kills workers is never charged for it. No hint, or one naming
        an attempt the record does not show (a stale one): no job of this batch had started.
        The hint is read once per loss, at the first failed batch of the worker's `incarnation`
        (the one the batch was sent to; None: the current one), and applied to every batch of
        that incarnation (PIPELINE: two may fail together, in either order): read per batch,
        the second would find it gone and refund the job that killed the worker, forever."""
        if incarnation is None or incarnation == slot.incarnation:  # the first failed batch of this loss
            slot.incarnation += 1
            slot.ready, slot.fast = False, False
            slot.info_ref = slot.handle.info.remote()
            slot.lost_hint = self._read_hint(slot.worker_id)
        log(logger, logging.WARNING, "worker lost", worker=slot.index, error=type(exc).__name__, batch_size=len(batch))
        culprit = slot.lost_hint
        for ref in batch:
            record = self.repo.load(ref)
            if record is None or record.state in TERMINAL_STATES:
                continue
            if record.state == "running":
                if culprit == (ref.key, record.attempts):
                    settle(record, self.config.max_attempts, LOST_REASON.format(attempts=record.attempts))
                    record.reason = record.reason if record.state == "failed" else None
                else:  # charged by the batch's start, never ran: given back
                    record.state, record.attempts = "queued", max(record.attempts - 1, 0)
                if not self.repo.save(record):
                    continue
                if record.state == "failed":
                    self._record_outcome(
                        Outcome(
                            ref.key,
                            "failed",
                            final=True,
                            kind=record.spec.kind,
                            callback_url=record.callback_url,
                            status=status_body(record),
                        )
                    )
                    continue
            self._defer(ref)

    def _read_hint(self, worker_id: str) -> tuple[str, int] | None:
        """(job key, attempt) of the job the worker last started, read and removed; None if none."""
        key = running_hint_key(worker_id)
        try:
            hint = self.repo.store.get_json(key)
            self.repo.store.delete(key)
            return str(hint["key"]), int(hint["attempt"])
        except KeyNotFound:
            return None
        except (ValueError, KeyError, TypeError):  # torn by a power loss: no job known to have run
            return None

    def _record_outcome(self, outcome: Outcome) -> None:
        ref = JobRef.parse(outcome.key)
        if ref is None:
            return
        if outcome.state == "queued":  # a failed attempt with attempts left, or a store outage
            if outcome.refund is not None:
                self._refunds[ref.key] = outcome.refund
            self._defer(ref)
            return
        if not outcome.final:
            return
        kind = outcome.kind
        self.metrics.jobs_finished.labels(kind=kind, state=outcome.state).inc()
        latency_s = _age_s(ref.job_id)  # created -> now (final); a malformed id has no age to count
        if math.isfinite(latency_s):
            self.metrics.job_latency.labels(kind=kind, state=outcome.state).observe(max(latency_s, 0.0))
        if outcome.figures:
            self.metrics.observe_job(outcome.figures)
        if outcome.callback_url and outcome.status:
            self._callbacks.submit(
                ref.tenant,
                deliver,
                outcome.callback_url,
                outcome.status,
                self.config.callback_secret,
                attempts=self.config.callback_attempts,
                backoff_s=self.config.callback_backoff_s,
                stop=self._stop,
                allow_private=self.config.callback_allow_private,
            )

    def _publish(self) -> None:
        ready: dict[str, int] = {"cpu": 0, "cuda": 0}
        for slot in self._slots:
            if slot.ready:
                ready[slot.device] = ready.get(slot.device, 0) + 1
        for device, n in ready.items():
            self.metrics.workers.labels(device=device).set(n)
        depth = self.queue.depth
        self.metrics.queue_depth.set(depth)
        with self._lock:
            self._stats = {
                "started": True,
                "pid": os.getpid(),
                "queue_depth": depth,
                "in_flight": self.queue.in_flight,
                "workers": ready,
                "requested_workers": self._requested or 0,
                "worker_pids": [s.pid for s in self._slots if s.ready],
            }

    def _oldest_queued_age_s(self) -> float:
        """Age of the oldest job waiting for a worker (queued or deferred), 0 when none.

        O(queued jobs) time, O(queued jobs) memory: called once per SCALE_S (from _scale), so a
        queue of 100k jobs costs some tens of ms of id parsing a second."""
        ages = [age for age in (_age_s(ref.job_id) for ref in self.queue.waiting()) if math.isfinite(age)]
        return max(max(ages, default=0.0), 0.0)


def _age_s(job_id: str) -> float:
    """A job id starts with a letter and 12 hex digits of its creation time in ms."""
    try:
        return time.time() - int(job_id[1:13], 16) / 1000.0
    except ValueError:
        return float("inf")


def get_dispatcher(config: ServiceConfig) -> Any:
    """The running dispatcher, created (detached, restartable) if there is none yet."""
    return (
        ray.remote(Dispatcher)
        .options(
            name=DISPATCHER_NAME,
            namespace=config.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=8,
            num_cpus=0,
        )
        .remote(config)
    )
