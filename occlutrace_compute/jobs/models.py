"""Job and result models at the boundary between the service, the CLI and the pipeline.

A job record is stored as JSON in the object store (the durable source of truth) under
`tenants/<tenant>/cases/<case>/jobs/<job_id>/job.json`; outputs live beside it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JobKind = Literal["pair", "bite"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "cancelled"})

PAIR_ROLES = ("fixed", "moving")
BITE_ROLES = ("upper", "lower", "bite1", "bite2")
RESULT_SCHEMA_VERSION = "1.0"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ReferenceRegion(BaseModel):
    """Register on this region of the FIXED scan only (union of the parts given); the deviation is
    still measured over the whole overlap."""

    model_config = ConfigDict(extra="forbid")

    vertices: list[int] | None = Field(None, description="fixed-scan vertex indices")
    sectors: list[str] | None = Field(None, description='arch sectors, e.g. ["left molar", "right molar"]')
    spheres: list[list[float]] | None = Field(None, description="[x, y, z, radius_mm] in the fixed scan's frame")

    @model_validator(mode="after")
    def _some(self) -> ReferenceRegion:
        if not (self.vertices or self.sectors or self.spheres):
            raise ValueError("a reference region needs vertices, sectors or spheres")
        return self


class JobOptions(BaseModel):
    """Per-job knobs; defaults are the product's documented defaults."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    tolerance_mm: float = Field(0.05, gt=0, le=5)
    contact_threshold_mm: float = Field(0.1, gt=0, le=5)
    settle: bool = False
    max_distance_mm: float = Field(1.0, gt=0, le=10, description="deviation: farther surfaces are outside the overlap")
    color_scale_mm: float = Field(0.2, gt=0, le=10, description="deviation map: colours span +/- this many mm")
    band_mm: float = Field(0.1, ge=0, le=5, description="deviation map: a flat green band of +/- this many mm")
    arch: Literal["upper", "lower"] | None = Field(
        None, description="pair: which arch (names patient left/right on the maps)"
    )
    reference_region: ReferenceRegion | None = Field(
        None, description="pair: align on this region of the fixed scan only"
    )
    keep_encoding: bool = Field(
        False,
        description="Write aligned meshes in their input's encoding (an ASCII input gives an ASCII output); "
        "by default they are binary (OBJ is always text)",
    )
    landmarks: list[list[list[float]]] | None = Field(
        None, description="Optional pairs [[x,y,z] in moving, [x,y,z] in fixed], at least 3"
    )

    @model_validator(mode="after")
    def _scale(self) -> JobOptions:
        if self.band_mm >= self.color_scale_mm:
            raise ValueError(f"band_mm ({self.band_mm}) must be smaller than color_scale_mm ({self.color_scale_mm})")
        return self


class JobSpec(BaseModel):
    """What to run: inputs are object keys (role -> key) of sanitised meshes of one case."""

    job_id: str
    tenant: str
    case: str
    kind: JobKind
    inputs: dict[str, str]
    options: JobOptions = Field(default_factory=JobOptions)
    allow: tuple[str, ...] = Field(
        (), description="the lab's privacy allow patterns in force when the job was created (regexes)"
    )

    @model_validator(mode="after")
    def _roles(self) -> JobSpec:
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
    sources: dict[str, str] = Field(
        default_factory=dict, description="role -> the key each input was copied from when the job was created"
    )
    generation: int = Field(0, description="the case's purge generation when the job was created")
    request_id: str | None = Field(
        None, description="X-Request-ID of the request that created the job (also on the worker's log lines for it)"
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    result: dict | None = None
