"""Request and response bodies of the `/v1` API, as the client sees them.

A copy, on purpose, of the server's models (occlutrace_compute/service/schemas.py, served as
`/openapi.json` components/schemas). Not imported from there: schemas.py itself needs only
pydantic, but it ships in the server's distribution, whose install pulls torch, Ray, FastAPI and
the rest, and this client is meant to install with httpx and pydantic alone; and it reads
answers more loosely than the server writes them. Responses ignore fields they do not know, so a
newer server does not break an older client; `state` and a status's `kind` are plain strings for
the same reason (see `TERMINAL_STATES`), and a job's `options` a plain dict the server
validates.

Being a copy, it can drift: tests/test_client_python.py in the server's repository fails when a
model here and the server's model of the same name differ in a field's name, wire type,
required-ness or default (beyond the looser reading above), and checks the served OpenAPI
document's fields too. Change both sides together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobKind = Literal["pair", "bite"]
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "rejected", "cancelled")
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "cancelled"})


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UploadInfo(_Response):
    name: str
    key: str
    bytes: int
    sanitized: bool = True


class UploadUrlRequest(BaseModel):
    name: str = Field(min_length=1, max_length=255)


class UploadUrlResponse(_Response):
    upload_id: str
    method: str = "PUT"
    url: str
    expires_in: int
    commit: str


class JobCreate(BaseModel):
    case: str = Field(min_length=1, max_length=128)
    kind: JobKind
    inputs: dict[str, str] = Field(description="role -> uploaded file name of the case")
    options: dict[str, Any] = Field(default_factory=dict, description="analysis options; the server validates them")
    callback_url: str | None = None


class JobStatus(_Response):
    job_id: str
    case: str
    kind: str
    state: str
    reason: str | None = None
    attempts: int = 0
    batch_id: str | None = None
    created_at: str
    updated_at: str

    @property
    def final(self) -> bool:
        return self.state in TERMINAL_STATES


class JobList(_Response):
    jobs: list[JobStatus]
    next: str | None = None


class BatchCreate(BaseModel):
    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)


class BatchCreated(_Response):
    batch_id: str
    jobs: list[JobStatus]


class BatchStatus(_Response):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool
    jobs: list[JobStatus]
    next: str | None = None


class OutputFile(_Response):
    name: str
    url: str


class JobResult(_Response):
    job_id: str
    state: str
    reason: str | None = None
    result: dict[str, Any] | None = None
    files: list[OutputFile] = []
    expires_in: int


class PurgeResult(_Response):
    case: str
    removed: list[str]
    count: int
    versions_removed: int = 0  # older object versions deleted (versioned buckets)
    unremoved: list[str] = []  # "key: reason" for each version the bucket refused to delete
