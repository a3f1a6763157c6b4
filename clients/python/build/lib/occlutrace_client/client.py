"""`OccluTraceClient`: the `/v1` API over httpx, with bounded retries.

Retried: connection errors and 429/502/503/504 (honouring `Retry-After`, capped), at most
`retries` attempts per call. Safe to retry because every call is idempotent on the server:
uploads overwrite the same name, reads read, and the creating calls (`create_job`,
`create_batch`) always carry an `Idempotency-Key`, so a retry after a lost response gets the
job it created (HTTP 200) instead of a second one. Worst-case time of one call:
`retries * timeout_s` plus the sleeps (at most `retries * max_backoff_s`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from occlutrace_client.models import (
    BatchCreate,
    BatchCreated,
    BatchStatus,
    JobCreate,
    JobList,
    JobResult,
    JobStatus,
    PurgeResult,
    UploadInfo,
    UploadUrlRequest,
    UploadUrlResponse,
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
PRESIGNED_ABOVE_BYTES = 32 * 1024 * 1024


class OccluTraceError(Exception):
    """Base of every error this client raises."""


class Unreachable(OccluTraceError):
    """The server did not answer (connection refused, reset, timed out) after every retry."""


class ApiError(OccluTraceError):
    """A non-2xx answer: `status`, a machine-readable `code` and the server's `message`,
    with the file or field at fault (`source`) and what is wrong with it (`problem`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        source: str | None = None,
        problem: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" + (f" ({source}: {problem})" if source and problem else ""))
        self.status, self.code, self.message = status, code, message
        self.source, self.problem, self.body = source, problem, body

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Reads the server's RFC 9457 problem+json (`type`, `title`, `detail`, with our `error`,
        `message`, `source`, `problem` and a validation error's `errors`), and the older shapes:
        `{error, message, source, problem}` and FastAPI's `{"detail": [...]}`."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(response.status_code, "http_error", f"HTTP {response.status_code}", body=response.text[:500])
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI validation errors
            first = detail[0] if detail and isinstance(detail[0], dict) else {}
            loc = ".".join(str(p) for p in first.get("loc", ()))
            return cls(
                response.status_code,
                "invalid_request",
                str(first.get("msg", detail)),
                loc or None,
                first.get("msg"),
                body,
            )
        code = body.get("error") or str(body.get("type", "")).rsplit("/", 1)[-1] or "http_error"
        message = (
            body.get("message")
            or (detail if isinstance(detail, str) else None)
            or body.get("title")
            or f"HTTP {response.status_code}"
        )
        return cls(response.status_code, code, str(message), body.get("source"), body.get("problem"), body)


class WaitTimeout(OccluTraceError):
    """A job was still not final when `wait` gave up."""


class JobNotSucceeded(OccluTraceError):
    """Outputs were asked of a job that ended without success (`state`, `reason`)."""

    def __init__(self, job_id: str, state: str, reason: str | None) -> None:
        super().__init__(f"job {job_id} is {state}" + (f": {reason}" if reason else ""))
        self.job_id, self.state, self.reason = job_id, state, reason


def _body(model: BaseModel | Mapping[str, Any], cls: type[BaseModel]) -> dict:
    """A request body validated by its model here, before it travels."""
    parsed = model if isinstance(model, cls) else cls.model_validate(model)
    return parsed.model_dump(mode="json", exclude_none=True)


class OccluTraceClient:
    """One tenant's session with a controller (`base_url`, bearer `token`).

    `transport` (an httpx transport) is used for every request, the API's and the presigned
    URLs'; `sleep` is what waits between retries and polls.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 6,
        backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s, self.max_backoff_s, self._sleep = retries, backoff_s, max_backoff_s, sleep
        self.http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s, transport=transport
        )
        # URLs the server hands out (presigned S3, or our signed /v1/download) carry their own
        # signature: the bearer token is never sent to them (they may be on another host).
        self.plain = httpx.Client(timeout=max(timeout_s, 600.0), transport=transport)

    def __enter__(self) -> OccluTraceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.plain.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call with at most `retries` attempts; the last retryable answer is returned."""
        for attempt in range(1, self.retries + 1):
            try:
                response = http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unreachable(
                        f"{method} {url}: no answer after {attempt} attempts ({type(exc).__name__})"
                    ) from exc
                self._sleep(min(self.backoff_s * 2**attempt, self.max_backoff_s))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(self._retry_after(response, attempt))
                continue
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        try:
            wait = float(response.headers["Retry-After"])
        except (KeyError, ValueError):
            wait = self.backoff_s * 2**attempt
        return min(max(wait, 0.0), self.max_backoff_s)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An API call (path relative to `base_url`), retried; ApiError on any non-2xx answer."""
        response = self._send(self.http, method, path, **kwargs)
        if response.status_code >= 300:
            raise ApiError.from_response(response)
        return response

    def _absolute(self, url: str) -> str:
        return self.base_url + url if url.startswith("/") else url

    # -- uploads -----------------------------------------------------------------------------

    def upload_file(self, case: str, name: str, data: bytes | Path) -> UploadInfo:
        """Upload one mesh under `name` in `case` (validated and stripped of metadata by the
        server); files above 32 MiB go through a presigned PUT URL and a commit."""
        content = data.read_bytes() if isinstance(data, Path) else data
        if len(content) <= PRESIGNED_ABOVE_BYTES:
            r = self.request("POST", f"/v1/cases/{case}/files", files={"file": (name, content)})
            return UploadInfo.model_validate(r.json())
        grant = self.create_upload(case, name)
        put = self._send(self.plain, "PUT", self._absolute(grant.url), content=content)
        if put.status_code >= 300:
            raise ApiError.from_response(put)
        return self.commit_upload(grant)

    def create_upload(self, case: str, name: str) -> UploadUrlResponse:
        r = self.request("POST", f"/v1/cases/{case}/uploads", json=_body({"name": name}, UploadUrlRequest))
        return UploadUrlResponse.model_validate(r.json())

    def commit_upload(self, grant: UploadUrlResponse) -> UploadInfo:
        return UploadInfo.model_validate(self.request("POST", grant.commit).json())

    # -- jobs and batches --------------------------------------------------------------------

    def create_job(
        self, job: JobCreate | Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> JobStatus:
        """Create a job (`JobCreate`, a dict, or its fields as keywords). Without a key, a random
        one is sent, so the call's own retries never create a second job."""
        body = _body(job if job is not None else fields, JobCreate)
        key = idempotency_key or f"py-{uuid.uuid4().hex}"
        r = self.request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        return JobStatus.model_validate(r.json())

    def create_batch(
        self, jobs: Iterable[JobCreate | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> BatchCreated:
        """Create up to 1000 jobs at once (all validated before any is stored)."""
        body = _body({"jobs": [_body(j, JobCreate) for j in jobs]}, BatchCreate)
        key = idempotency_key or f"py-{uuid.uuid4().hex}"
        r = self.request("POST", "/v1/batches", json=body, headers={"Idempotency-Key": key})
        return BatchCreated.model_validate(r.json())

    def get_job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self.request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(self, *, state: str | None = None, limit: int = 50, after: str | None = None) -> JobList:
        """One page of the tenant's jobs, oldest first; pass `.next` as `after` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        if after is not None:
            params["after"] = after
        return JobList.model_validate(self.request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(self, *, state: str | None = None, page_size: int = 100) -> Iterator[JobStatus]:
        """Every job, page by page (stops if a page's cursor does not advance)."""
        after: str | None = None
        while True:
            page = self.list_jobs(state=state, limit=page_size, after=after)
            yield from page.jobs
            if page.next is None or (after is not None and page.next <= after):
                return
            after = page.next

    def get_batch(self, batch_id: str, *, limit: int = 100, after: str | None = None) -> BatchStatus:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return BatchStatus.model_validate(self.request("GET", f"/v1/batches/{batch_id}", params=params).json())

    def cancel_job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(self, job_id: str, *, timeout_s: float | None = None, poll_s: float = 2.0) -> JobStatus:
        """Poll until the job is final (succeeded, failed, rejected, cancelled); WaitTimeout
        after `timeout_s` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job: JobStatus | None = None
        etag: str | None = None
        while True:
            # A poll sends the last ETag: an unchanged job answers 304 with no body.
            headers = {"If-None-Match": etag} if etag and job is not None else {}
            response = self._send(self.http, "GET", f"/v1/jobs/{job_id}", headers=headers)
            if response.status_code != 304 or job is None:
                if response.status_code >= 300:
                    raise ApiError.from_response(response)
                job, etag = JobStatus.model_validate(response.json()), response.headers.get("ETag")
            if job.final:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} still {job.state} after {timeout_s} s")
            self._sleep(poll_s)

    def get_result(self, job_id: str) -> JobResult:
        """The result JSON and a time-limited download URL for every output."""
        return JobResult.model_validate(self.request("GET", f"/v1/jobs/{job_id}/result").json())

    # -- downloads and purge -----------------------------------------------------------------

    def download(self, url: str) -> bytes:
        """The bytes behind a download URL of `get_result` (no bearer token is sent)."""
        response = self._send(self.plain, "GET", self._absolute(url))
        if response.status_code != 200:
            raise ApiError.from_response(response)
        return response.content

    def download_outputs(self, job_id: str, dest: str | Path) -> dict[str, Path]:
        """Every output of a succeeded job into `dest` (created), under its base name only:
        a name with a path, `..` or a leading dot from the server cannot escape `dest`."""
        result = self.get_result(job_id)
        if result.state != "succeeded":
            raise JobNotSucceeded(job_id, result.state, result.reason)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for f in result.files:
            name = f.name.rsplit("/", 1)[-1]
            if not name or name.startswith(".") or "\\" in name or name in written:
                raise OccluTraceError(f"job {job_id}: refusing output name {f.name!r}")
            path = dest / name
            path.write_bytes(self.download(f.url))
            written[name] = path
        return written

    def purge(self, case: str) -> PurgeResult:
        """Delete every object of the case (inputs, jobs, outputs)."""
        return PurgeResult.model_validate(self.request("DELETE", f"/v1/cases/{case}").json())
