"""Job and result models at the boundary between the service, the CLI and the pipeline.

A job record is stored as JSON in the object store (the durable source of truth) under
`tenants/<tenant>/cases/<case>/jobs/<job_id>/job.json`; outputs live beside it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, model_validator

JobKind = Literal["pair", "bite"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "cancelled"})

PAIR_ROLES = ("fixed", "moving")
BITE_ROLES = ("upper", "lower", "bite1", "bite2")
RESULT_SCHEMA_VERSION = "1.0"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobOptions(BaseModel):
    """Per-job knobs; defaults are the product's documented defaults."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    tolerance_mm: float = Field(0.05, gt=0, le=5)
    contact_threshold_mm: float = Field(0.1, gt=0, le=5)
    settle: bool = False
    keep_encoding: bool = Field(
        False,
        description="Write aligned meshes in their input's encoding (an ASCII input gives an ASCII output); "
        "by default they are binary (OBJ is always text)",
    )
    landmarks: list[list[list[float]]] | None = Field(
        None, description="Optional pairs [[x,y,z] in moving, [x,y,z] in fixed], at least 3"
    )


class JobSpec(BaseModel):
    """What to run: inputs are object keys (role -> key) of sanitised meshes of one case."""

    job_id: str
    tenant: str
    case: str
    kind: JobKind
    inputs: dict[str, str]
    options: JobOptions = Field(default_factory=JobOptions)

    @model_validator(mode="after")
    def _roles(self) -> "JobSpec":
        roles = set(self.inputs)
        if self.kind == "pair":
            if roles != set(PAIR_ROLES):
                raise ValueError(f"a pair job needs inputs {list(PAIR_ROLES)}, got {sorted(roles)}")
        else:
            if not {"upper", "lower", "bite1"} <= roles or not roles <= set(BITE_ROLES):
                raise ValueError(f"a bite job needs inputs upper, lower, bite1 [, bite2], got {sorted(roles)}")
        return self


class JobRecord(BaseModel):
    """The stored state of one job."""

    spec: JobSpec
    state: JobState = "queued"
    attempts: int = 0
    reason: str | None = None
    batch_id: str | None = None
    callback_url: str | None = None
    idempotency_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    result: dict | None = None
