"""Typed Python client of the OccluTrace Compute HTTP API (`/v1`); httpx and pydantic only."""

from occlutrace_client.client import (
    PRESIGNED_ABOVE_BYTES,
    ApiError,
    JobNotSucceeded,
    OccluTraceClient,
    OccluTraceError,
    Unreachable,
    WaitTimeout,
)
from occlutrace_client.models import (
    JOB_STATES,
    TERMINAL_STATES,
    BatchCreate,
    BatchCreated,
    BatchStatus,
    JobCreate,
    JobList,
    JobResult,
    JobStatus,
    OutputFile,
    PurgeResult,
    UploadInfo,
    UploadUrlRequest,
    UploadUrlResponse,
)

__version__ = "1.0.0"
__all__ = [
    "PRESIGNED_ABOVE_BYTES",
    "ApiError",
    "JobNotSucceeded",
    "OccluTraceClient",
    "OccluTraceError",
    "Unreachable",
    "WaitTimeout",
    "JOB_STATES",
    "TERMINAL_STATES",
    "BatchCreate",
    "BatchCreated",
    "BatchStatus",
    "JobCreate",
    "JobList",
    "JobResult",
    "JobStatus",
    "OutputFile",
    "PurgeResult",
    "UploadInfo",
    "UploadUrlRequest",
    "UploadUrlResponse",
]
