"""What a worker tells the dispatcher about each job of a batch, and the attempts rule.

One `Outcome` per job handed to a worker (`AlignWorker.run_batch`), a frozen dataclass rather
than a dict so that both sides agree on the fields. `state` is a job state
("queued", "running" or one of `jobs.models.TERMINAL_STATES`) or `GONE`: the job was purged (its record is missing, or its case's
purge generation changed under a write), so there is nothing to record or retry.

The attempts rule lives here and only here: a job that has been started `max_attempts` times is
failed, never started again (`exhausted`, `settle`); both the worker (an attempt that raised, a
record found exhausted at start) and the dispatcher (a worker lost mid-job) apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from occlutrace_compute.jobs.models import JobRecord

GONE = "gone"  # not a job state: the job was purged while the worker had it
LOST_REASON = "the worker was lost on each of {attempts} attempts"


@dataclass(frozen=True)
class Outcome:
    """One job's end on a worker.

    - `final`: the job reached a final state on this run (metrics and callback due); False for a
      job found already final, purged (`GONE`), or sent back to the queue.
    - `state == "queued"`: run it again after a pause; `refund` (an attempt number) names an
      attempt that met a store outage, not to be charged (the dispatcher carries it to the next
      worker, which may be able to write it).
    - `figures`, `callback_url`, `status`: only on a final outcome (figures only on success).
    """

    key: str
    state: str
    final: bool = False
    kind: str = "unknown"
    figures: dict[str, Any] | None = None
    callback_url: str | None = None
    status: dict[str, Any] | None = None
    refund: int | None = None


def exhausted(record: JobRecord, max_attempts: int) -> bool:
    """Whether the job has used every attempt it may have."""
    return record.attempts >= max_attempts


def settle(record: JobRecord, max_attempts: int, reason: str) -> None:
    """After an attempt that ended without a verdict (the job raised, or its worker was lost):
    back to "queued" while attempts are left, else "failed" with `reason`."""
    record.reason = reason
    record.state = "failed" if exhausted(record, max_attempts) else "queued"


def give_up(record: JobRecord) -> None:
    """A job found exhausted before it starts again: failed, with the reason that says why."""
    record.state = "failed"
    record.reason = LOST_REASON.format(attempts=record.attempts)
