"""The dispatcher's queue of jobs waiting for a worker: per-tenant FIFOs served round-robin.

Pure: no Ray, no store, no clock of its own (`now` is passed in), so it is unit-tested alone
(tests/test_fairqueue.py). A job is in at most one of three places: queued (waiting in its
tenant's FIFO), deferred (back after a pause, due at a time), or busy (in a batch on a worker);
`enqueue` of a job already in any of them is a no-op, which is what lets notifications, the
periodic rescan and re-queues after failures overlap without running a job twice at once.

Fair share (docs/service.md): `next_batch` takes one job from each tenant with queued jobs in
turn, so a tenant with one job waits behind at most one job of each other tenant, whatever
their backlogs; the rotation carries over from batch to batch.

Cost: enqueue, membership O(1); defer O(log deferred); `release_due` O(k log deferred) for k
jobs due; `next_batch(n)` O(n); a tenant whose FIFO empties leaves the rotation, so memory is
O(jobs held + tenants with jobs).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator

from occlutrace_compute.service.records import JobRef


class FairQueue:
    def __init__(self) -> None:
        self._fifos: dict[str, deque[JobRef]] = {}
        self._rotation: deque[str] = deque()  # tenants with queued jobs, next to serve first
        self._queued: set[str] = set()
        self._deferred: list[tuple[float, int, JobRef]] = []  # heap of (due, tie, ref)
        self._waiting: set[str] = set()
        self._busy: set[str] = set()
        self._tie = itertools.count()

    def __contains__(self, key: object) -> bool:
        """Whether the job (record key) is queued, deferred or busy."""
        return key in self._queued or key in self._waiting or key in self._busy

    def jobs(self) -> set[tuple[str, str]]:
        """(tenant, job id) of every job queued, deferred or busy: O(jobs held)."""
        out: set[tuple[str, str]] = set()
        for key in itertools.chain(self._queued, self._waiting, self._busy):
            ref = JobRef.parse(key)
            if ref is not None:
                out.add((ref.tenant, ref.job_id))
        return out

    def enqueue(self, ref: JobRef) -> bool:
        """Queue the job at the end of its tenant's FIFO; False (nothing done) if already held."""
        if ref.key in self:
            return False
        fifo = self._fifos.get(ref.tenant)
        if fifo is None:
            fifo = self._fifos[ref.tenant] = deque()
            self._rotation.append(ref.tenant)
        fifo.append(ref)
        self._queued.add(ref.key)
        return True

    def defer(self, ref: JobRef, due: float) -> bool:
        """Hold the job until `due` (a failed attempt, a lost worker: no hot retry loop); False if
        already queued or deferred. A busy job may be deferred: it leaves the busy set."""
        if ref.key in self._queued or ref.key in self._waiting:
            return False
        self._busy.discard(ref.key)
        self._waiting.add(ref.key)
        heapq.heappush(self._deferred, (due, next(self._tie), ref))
        return True

    def release_due(self, now: float) -> int:
        """Queue every deferred job due at `now`; how many."""
        count = 0
        while self._deferred and self._deferred[0][0] <= now:
            _, _, ref = heapq.heappop(self._deferred)
            self._waiting.discard(ref.key)
            count += self.enqueue(ref)
        return count

    def next_batch(self, size: int) -> list[JobRef]:
        """Up to `size` queued jobs, one per tenant in turn; they become busy."""
        batch: list[JobRef] = []
        while len(batch) < size and self._rotation:
            tenant = self._rotation.popleft()
            fifo = self._fifos[tenant]
            ref = fifo.popleft()
            self._queued.discard(ref.key)
            self._busy.add(ref.key)
            batch.append(ref)
            if fifo:
                self._rotation.append(tenant)
            else:
                del self._fifos[tenant]
        return batch

    def done(self, refs: list[JobRef]) -> None:
        """The jobs left their worker (finished, or about to be re-queued or deferred)."""
        self._busy.difference_update(ref.key for ref in refs)

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker: queued or deferred."""
        return len(self._queued) + len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def waiting(self) -> Iterator[JobRef]:
        """Every queued or deferred job (for the oldest-queued-age gauge): O(depth)."""
        for fifo in self._fifos.values():
            yield from fifo
        for _, _, ref in self._deferred:
            yield ref
