"""The device worker: CPU workers prepare and finish jobs, one device actor registers and measures
whole batches of pairs across jobs (issue 16, item 3).

Layout (`ServiceConfig.device_worker`: "auto" = on once the cluster shows a GPU, "on", "off"):

- `DeviceWorker` actors (one CPU each, as many as the queue needs and the cluster holds) take
  batches from the dispatcher like `AlignWorker`, and ARE AlignWorkers: the same start (records
  read, attempts charged), outcomes, committer, store-outage and purge/cancel handling, only
  `_run_all` differs. The jobs of a batch run side by side on threads, each through the stages of
  `jobs/stages.py`: prepare (parse, validate, sample) on this process's core, then the device
  actor, then finish (deviation report, previews, exports, report, store writes) on this core
  again. The core runs one CPU stage at a time (a lock), so while some jobs wait for the device
  the core prepares or finishes others. Every job goes through `_run_one` (the worker's own
  mapping of errors to states); bite jobs and jobs asking for another device run `run_job`.
- One `DeviceActor` per device (created by the dispatcher; GPU node: num_gpus=1, device
  "cuda"; CPU stand-in in tests: num_gpus=0, device "cpu") collects the pairs that the workers
  send and runs them in batches sized by POINTS: a batch closes when the queued pairs reach the
  points budget (CUDA: the device's free memory x `device_memory_fraction` / bytes per point,
  the bytes per point re-measured from each batch's peak; else `device_points_budget`) or when
  its first pair has waited `device_max_wait_s`. Pairs are taken in arrival order (no pair
  waits behind later ones); a pair bigger than the whole budget runs alone.

Attempts and faults: a job's attempt is charged once, by the worker's start, as for AlignWorker.
The running hint names the job whose CPU stage this worker runs (written before each CPU stage),
so a worker killed by a job's parse or preview charges that job only (dispatcher._worker_lost).
A device actor lost under a batch (RayActorError) fails nobody at once: once it is back, each
pair of that batch is sent again ALONE (`solo`; `DEVICE_SENDS` sends at most), so a pair that
kills the device fails only its own attempt (DeviceLost through `_run_one`: retried while
attempts remain) and its batch-mates finish normally. (A pair queued behind a killer pair's solo
run loses a send too; it fails an attempt only if that happens on every send.) Each job's final
state is written once, by the committer, as for AlignWorker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.logs import log, setup_logging
from occlutrace_compute.service.worker import AlignWorker, _Run, running_hint_key

logger = logging.getLogger("occlutrace.device")
DEVICE_ACTOR_NAME = "occlutrace-device-0"
CPU_POINTS_BUDGET = 2_000_000  # the CPU stand-in's default budget (device_points_budget 0, no CUDA)
HISTORY = 256  # batches remembered for stats()
DEVICE_SENDS = 3  # sends of one pair to the device actor: in a batch, then alone after a loss
RESTART_POLL_S = 0.2


def enabled(config: ServiceConfig, gpu_seen: bool) -> bool:
    """Whether workers are device workers: "on", or "auto" once the cluster has shown a GPU."""
    return config.device_worker == "on" or (config.device_worker == "auto" and gpu_seen)


def take(points: list[int], budget: int) -> int:
    """How many pairs from the head of the queue form the next batch: as many as fit in `budget`
    points, in order, and always at least one (a pair bigger than the budget runs alone).
    O(len(points)); 0 only for an empty queue."""
    n = total = 0
    for p in points:
        if n and total + p > budget:
            break
        n, total = n + 1, total + p
    return n


@dataclass
class _Pending:
    payload: Any  # jobs.stages.DevicePayload
    arrived: float
    done: Future = field(default_factory=Future)


class DeviceActor:
    """Batches pairs of many jobs by points and runs them on one device (module docstring).

    `run(payload)` is called by many workers at once (a threaded actor): each call queues its
    pair and waits for its own answer; one device thread forms and runs the batches. Worst-case
    wait of a pair before its batch starts: `device_max_wait_s` plus the batches queued ahead of
    it; memory: the pending payloads (bounded by the workers' batches) and one batch on the device.
    """

    def __init__(self, config: ServiceConfig, device: str = "auto", serve: bool = True) -> None:
        """serve=False: no device thread; the caller runs batches with `serve_one` (tests)."""
        setup_logging()
        import torch

        self.config = config
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.bytes_per_point = float(config.device_bytes_per_point)
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._history: deque[dict] = deque(maxlen=HISTORY)
        if serve:
            threading.Thread(target=self._loop, name="device-batches", daemon=True).start()

    def info(self) -> dict:
        return {"device": self.device, "pid": os.getpid(), "node": socket.gethostname(), "budget": self.budget()}

    def stats(self) -> list[dict]:
        """The latest batches: {"keys": job keys, "points", "seconds", "solo"} each, oldest first."""
        with self._cond:
            return list(self._history)

    def pending(self) -> int:
        """Pairs waiting for a batch (not yet on the device)."""
        with self._cond:
            return len(self._queue)

    def run(self, payload: Any) -> Any:
        """The DeviceAnswer of one pair, or its PairError, once its batch has run."""
        from occlutrace_compute.jobs.stages import PairError

        try:
            return self.submit(payload).result()
        except Exception as exc:  # returned, not raised: it crosses Ray as plain fields
            return PairError.of(exc)

    def submit(self, payload: Any) -> Future:
        """Queues one pair; its future gets the DeviceAnswer (or the pair's error)."""
        pending = _Pending(payload, time.monotonic())
        with self._cond:
            self._queue.append(pending)
            self._cond.notify_all()
        return pending.done

    def budget(self) -> int:
        """Points per batch: set by config, else from the device's free memory (CUDA)."""
        if self.config.device_points_budget > 0:
            return int(self.config.device_points_budget)
        if self.device == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info()
            return max(int(free * self.config.device_memory_fraction / max(self.bytes_per_point, 1.0)), 1)
        return CPU_POINTS_BUDGET

    # -- the device thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:  # the actor's life; every wait in it is bounded by a pair's max wait
            try:
                self.serve_one()
            except Exception as exc:  # a bug: the batch's pairs got the error, the thread lives on
                log(logger, logging.ERROR, "device batch broke", error=type(exc).__name__)

    def serve_one(self) -> list[str]:
        """Forms the next batch (waiting for a first pair) and runs it; the keys it held. Every
        pair of the batch is answered, with the error if running it broke unexpectedly."""
        batch = self._next_batch()
        try:
            self._run_batch(batch)
        except Exception as exc:
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            raise
        return [p.payload.key for p in batch]

    def _next_batch(self) -> list[_Pending]:
        """Blocks for the first pair, then until the queue holds the budget's points or that pair
        has waited `device_max_wait_s`; a solo pair is a batch of its own."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            budget = self.budget()
            deadline = self._queue[0].arrived + self.config.device_max_wait_s
            while not self._queue[0].payload.solo:
                queued = sum(p.payload.points for p in self._queue)
                left = deadline - time.monotonic()
                if queued >= budget or left <= 0:
                    break
                self._cond.wait(left)
            if self._queue[0].payload.solo:
                return [self._queue.popleft()]
            heads = []
            for p in self._queue:
                if p.payload.solo:
                    break
                heads.append(p.payload.points)
            return [self._queue.popleft() for _ in range(take(heads, budget))]

    def _run_batch(self, batch: list[_Pending]) -> None:
        """Answers every pair of the batch; a batch whose registration fails is run pair by pair,
        so one bad pair fails only its own job."""
        from occlutrace_compute.jobs.stages import device_answers

        start = time.perf_counter()
        payloads = [p.payload for p in batch]
        points = sum(p.points for p in payloads)
        peak = self._reset_peak()
        try:
            answers: list[Any] = device_answers(payloads, self.device)
        except Exception as exc:
            if len(batch) == 1:
                answers = [exc]
            else:
                if self.device == "cuda" and "out of memory" in str(exc).lower():
                    self.bytes_per_point *= 2  # the budget was too generous: halve the next ones
                log(logger, logging.WARNING, "device batch failed: pairs run alone", error=type(exc).__name__)
                for p in batch:
                    self._run_batch([p])
                return
        self._measure(peak, points)
        for pending, answer in zip(batch, answers):
            if isinstance(answer, BaseException):
                pending.done.set_exception(answer)
            else:
                pending.done.set_result(answer)
        with self._cond:
            self._history.append(
                {
                    "keys": [p.key for p in payloads],
                    "points": points,
                    "seconds": time.perf_counter() - start,
                    "solo": any(p.solo for p in payloads),
                }
            )

    def _reset_peak(self) -> int:
        if self.device != "cuda":
            return 0
        import torch

        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())

    def _measure(self, before: int, points: int) -> None:
        """Bytes per point from this batch's peak (torch's allocations; CUDA only), never lowered
        below what a batch has needed: the next budget follows the worst batch seen."""
        if self.device != "cuda" or points <= 0:
            return
        import torch

        used = (int(torch.cuda.max_memory_allocated()) - before) / points
        self.bytes_per_point = max(self.bytes_per_point, used)


def start_device_actor(config: ServiceConfig, gpu: bool) -> Any:
    """The device actor (named, owned by the caller: the dispatcher), created if there is none."""
    import ray

    return (
        ray.remote(DeviceActor)
        .options(
            name=DEVICE_ACTOR_NAME,
            namespace=config.ray_namespace,
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=config.device_max_pending + 4,  # every waiting pair holds a thread
            num_gpus=1 if gpu else 0,
            num_cpus=config.device_actor_cpus,
        )
        .remote(config, "cuda" if gpu else "cpu")
    )


class DeviceLost(RuntimeError):
    """The device actor was lost under this pair on every send (`DEVICE_SENDS`), or never answered."""


class DeviceWorker(AlignWorker):
    """An AlignWorker whose pair jobs run through jobs/stages.py with the device actor
    (module docstring)."""

    def __init__(self, config: ServiceConfig, worker_id: str | None = None) -> None:
        super().__init__(config, worker_id)
        self._cpu = threading.Lock()  # one CPU stage at a time: this worker's one core
        self._actor: Any = None
        self._actor_device = ""

    def info(self) -> dict:
        return {**super().info(), "stages": True}

    def _device(self) -> tuple[Any, str]:
        if self._actor is None:
            import ray

            actor = ray.get_actor(DEVICE_ACTOR_NAME, namespace=self.config.ray_namespace)
            self._actor_device = ray.get(actor.info.remote(), timeout=self.config.device_timeout_s)["device"]
            self._actor = actor
        return self._actor, self._actor_device

    def _run_all(self, runs: list[_Run], inbox: Any, outcomes: dict) -> None:
        """Every started job of the batch on a thread of its own through the stages; cancelled or
        exhausted ones (not started) straight to the committer."""
        started = [run for run in runs if run.started is not None]
        for run in runs:
            if run.started is None:
                inbox.put(run)
        if not started:
            return
        with ThreadPoolExecutor(max_workers=len(started), thread_name_prefix="device-job") as pool:
            list(pool.map(lambda run: self._run_staged(run, inbox, outcomes), started))

    def _run_staged(self, run: _Run, inbox: Any, outcomes: dict) -> None:
        from occlutrace_compute.jobs.stages import staged

        try:
            _, device = self._device()
        except Exception as exc:
            log(logger, logging.WARNING, "device actor unavailable: job run in place", error=type(exc).__name__)
            device = ""
        if not device or not staged(run.record.spec, device):
            with self._cpu:
                if self._hint(run, outcomes):
                    self._run_one(run)
                    inbox.put(run)
            return
        self._run_one(run, job=self._stages(run))  # each CPU stage writes the hint first (_cpu_stage)
        inbox.put(run)

    def _cpu_stage(self, run: _Run, work: Callable[[], Any]) -> Any:
        """`work` on this worker's core, the hint naming this job (a crash here is its doing). A
        lost store raises StoreError: `_run_one` re-queues the job uncharged, as AlignWorker does."""
        with self._cpu:
            body = json.dumps({"key": run.ref.key, "attempt": run.started}).encode()
            self.store.put_transient(running_hint_key(self.worker_id), body)  # StoreError: an outage
            return work()

    def _stages(self, run: _Run) -> Callable[[], dict]:
        from occlutrace_compute.jobs.stages import finish_pair, prepare_pair

        def job() -> dict:
            spec = run.record.spec
            prepared = self._cpu_stage(run, lambda: prepare_pair(spec, self.store, run.ref.key))
            start = time.monotonic()
            answer = self._on_device(prepared.payload)
            wait_s = time.monotonic() - start
            return self._cpu_stage(run, lambda: finish_pair(prepared, answer, wait_s, self.store))

        return job

    def _on_device(self, payload: Any) -> Any:
        """The device's answer. A pair whose call lost the device actor is sent again ALONE once
        the actor is back, at most `DEVICE_SENDS` sends in all: a pair that kills the device each
        time it runs alone fails its own attempt (DeviceLost), its batch-mates are answered."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        from occlutrace_compute.jobs.stages import PairError

        actor, _ = self._device()
        for send in range(DEVICE_SENDS):
            payload.solo = send > 0
            try:
                got = ray.get(actor.run.remote(payload), timeout=self.config.device_timeout_s)
            except RayTaskError as exc:  # the actor's method itself broke (a bug): this attempt fails
                raise DeviceLost(f"the device actor's call failed: {type(exc.cause).__name__}") from None
            except GetTimeoutError:
                raise DeviceLost(f"no answer from the device within {self.config.device_timeout_s} s") from None
            except RayActorError:
                log(logger, logging.WARNING, "device actor lost: pair sent again alone", key=payload.key, send=send + 1)
                self._await_actor(actor)
                continue
            if isinstance(got, PairError):  # this pair's own error (bad landmarks...): as run_job raises it
                raise got.error()
            return got
        raise DeviceLost(f"the device actor was lost {DEVICE_SENDS} times with this pair, alone the last times")

    def _await_actor(self, actor: Any) -> None:
        """Until the restarted device actor answers (calls sent before Ray saw it die fail at
        once): at most `device_timeout_s`, polling every RESTART_POLL_S."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + self.config.device_timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(actor.info.remote(), timeout=max(deadline - time.monotonic(), 0.001))
                return
            except (RayActorError, GetTimeoutError):
                time.sleep(RESTART_POLL_S)


__all__ = ["DeviceActor", "DeviceWorker", "enabled", "start_device_actor", "take"]
