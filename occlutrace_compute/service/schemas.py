"""Request and response models of the `/v1` HTTP API (they define its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from occlutrace_compute.jobs.models import BITE_ROLES, PAIR_ROLES, JobKind, JobOptions, JobState


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: e.g. ['body', 'jobs', 3, 'case']")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'missing', 'json_invalid'")


class Problem(BaseModel):
    """Every error answer (RFC 9457 `application/problem+json`); see service/problems.py."""

    type: str = Field(description="URN naming the problem: 'urn:occlutrace:problem:<error>'")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="what went wrong, for a person")
    error: str = Field(description="machine-readable code, e.g. 'rejected', 'not_found', 'invalid_request'")
    message: str = Field(description="the same text as `detail` (the first error shape's name)")
    source: str | None = Field(None, description="the file, label or field at fault")
    problem: str | None = Field(None, description="what is wrong with `source`")
    errors: list[FieldError] | None = Field(None, description="validation errors: every failing field")


ErrorBody = Problem  # the first name of the error model


class UploadInfo(BaseModel):
    name: str = Field(description="file name inside the case; use it in a job's inputs")
    key: str
    bytes: int
    sanitized: bool = True


class UploadUrlRequest(BaseModel):
    name: str = Field(min_length=1, max_length=255)


class UploadUrlResponse(BaseModel):
    upload_id: str
    method: Literal["PUT"] = "PUT"
    url: str = Field(description="PUT the raw file bytes here before it expires")
    expires_in: int
    commit: str = Field(description="POST here afterwards: the file is validated and sanitised")


class JobCreate(BaseModel):
    case: str = Field(min_length=1, max_length=128, description="case label (de-identified)")
    kind: JobKind
    inputs: dict[str, str] = Field(
        max_length=len(BITE_ROLES),
        description="role -> committed file name of the case, or the key of an earlier job's output of the "
        "same case (pair: fixed, moving; bite: upper, lower, bite1[, bite2])",
    )
    options: JobOptions = Field(default_factory=JobOptions)
    callback_url: str | None = Field(None, max_length=2000, pattern=r"^https?://")

    @model_validator(mode="after")
    def _roles(self) -> JobCreate:
        """The roles of the kind and nothing else, checked with the body (before any store call:
        one store call per role follows, so the role count must be bounded first)."""
        roles = set(self.inputs)
        if self.kind == "pair" and roles != set(PAIR_ROLES):
            raise ValueError(f"a pair job needs inputs {list(PAIR_ROLES)}, got {sorted(roles)[:8]}")
        if self.kind == "bite" and not ({"upper", "lower", "bite1"} <= roles <= set(BITE_ROLES)):
            raise ValueError(f"a bite job needs inputs upper, lower, bite1 [, bite2], got {sorted(roles)[:8]}")
        for name in self.inputs.values():
            if not 0 < len(name) <= 1024:
                raise ValueError("an input names a file (1 to 1024 characters)")
        return self


class JobStatus(BaseModel):
    job_id: str
    case: str
    kind: JobKind
    state: JobState
    reason: str | None = None
    attempts: int = 0
    batch_id: str | None = None
    created_at: str
    updated_at: str


class JobList(BaseModel):
    jobs: list[JobStatus]
    next: str | None = Field(None, description="pass as `after` for the next page")


class BatchCreate(BaseModel):
    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)


class BatchCreated(BaseModel):
    batch_id: str
    jobs: list[JobStatus]


class BatchStatus(BaseModel):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool
    jobs: list[JobStatus]
    next: str | None = None


class OutputFile(BaseModel):
    name: str
    url: str = Field(description="time-limited download URL")


class JobResult(BaseModel):
    job_id: str
    state: JobState
    reason: str | None = None
    result: dict | None = None
    files: list[OutputFile] = []
    expires_in: int


class PurgeResult(BaseModel):
    case: str
    removed: list[str]
    count: int
    versions_removed: int = Field(0, description="older object versions deleted (versioned buckets)")
    unremoved: list[str] = Field(
        default_factory=list,
        description="'key: reason' for each object version the bucket refused to delete (object lock, permissions)",
    )


class Health(BaseModel):
    status: Literal["ok"] = Field("ok", description="the process serves requests")


class Readiness(BaseModel):
    ready: bool = Field(description="this replica can serve: its object store answers reads and writes")
    checks: dict[str, str] = Field(
        description="`store`: 'ok' or the failing error's type name; `conditional_writes`: 'ok' or 'unsupported' "
        "(the store ignores create-if-absent: idempotency keys hold within each replica only)",
    )
