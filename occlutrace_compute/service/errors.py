"""The controller's errors and how each becomes an HTTP answer: every error answer is an RFC 9457
problem (service/problems.py), FastAPI's own validation errors and unknown routes included.

The status of each error is chosen by its TYPE, never by its message: `FileTooLarge` (an
`InputRejected` subclass) is 413, any other `InputRejected` 422.
"""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from occlutrace_compute.errors import InputRejected, too_large
from occlutrace_compute.service.logs import log
from occlutrace_compute.service.problems import (
    PROBLEM_MEDIA_TYPE,
    problem_body,
    validation_problem,
)
from occlutrace_compute.service.purges import CasePurged
from occlutrace_compute.storage.base import KeyNotFound, StoreError
from occlutrace_compute.storage.local import DISK_ERRNOS

logger = logging.getLogger("occlutrace.controller")
RETRY_AFTER_S = 5
UPLOAD_LIMIT_SETTING = "max_upload_bytes, env OCCLUTRACE_MAX_UPLOAD_BYTES"  # named in a 413's detail


class ApiError(Exception):
    """An answer decided by the controller: status, machine-readable `error`, and for the
    client the `source` at fault and its `problem`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        source: str | None = None,
        problem: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.source, self.problem, self.headers = source, problem, headers or {}


class FileTooLarge(InputRejected):
    """A file over the upload limit: 413 (Content Too Large), where other rejected input is 422."""

    def __init__(self, source: str, size: int, limit: int, setting: str = UPLOAD_LIMIT_SETTING) -> None:
        super().__init__(source, too_large(size, limit, setting))
        self.size, self.limit = size, limit


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def purged_meanwhile(case: str) -> ApiError:
    return ApiError(
        409,
        "case_purged",
        "the case was purged while this request was writing to it; nothing was kept",
        source="case",
        problem="purged",
    )


def rejected_status(exc: InputRejected) -> int:
    """413 for a file over the limit, 422 for any other rejected input: by type."""
    return 413 if isinstance(exc, FileTooLarge) else 422


def error_response(status: int, body: dict, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def install_error_handlers(app: FastAPI) -> None:
    """Every error answer of `app` as a problem document."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status, problem_body(exc.status, exc.error, exc.message, exc.source, exc.problem), exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's validation errors and malformed JSON: every failing field in `errors`."""
        return error_response(422, validation_problem(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown routes (404), wrong methods (405, with Allow), unparsable multipart (400)."""
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(
            exc.status_code,
            problem_body(exc.status_code, codes.get(exc.status_code, "http_error"), detail),
            dict(exc.headers or {}),
        )

    @app.exception_handler(InputRejected)
    async def _rejected(_: Request, exc: InputRejected) -> JSONResponse:
        status = rejected_status(exc)
        # a file over the upload limit says too_large, as the size middleware's 413 does
        code = "too_large" if status == 413 else "rejected"
        return error_response(status, problem_body(status, code, str(exc), exc.source, exc.problem))

    @app.exception_handler(CasePurged)
    async def _purged(_: Request, exc: CasePurged) -> JSONResponse:
        return error_response(
            409,
            problem_body(
                409,
                "case_purged",
                "the case is being purged or was purged while "
                "this request wrote to it; nothing of the request was kept",
                "case",
                "purged",
            ),
        )

    @app.exception_handler(KeyNotFound)
    async def _missing(_: Request, exc: KeyNotFound) -> JSONResponse:
        return error_response(404, problem_body(404, "not_found", "no such object"))

    @app.exception_handler(StoreError)
    async def _store_down(_: Request, exc: StoreError) -> JSONResponse:
        log(logger, logging.WARNING, "store unavailable", error=type(exc).__name__)
        return error_response(
            503,
            problem_body(503, "store_unavailable", "the object store is unavailable; retry later"),
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(OSError)
    async def _disk(_: Request, exc: OSError) -> JSONResponse:
        """The controller's own disk (a multipart upload spools to a temp file): full is 503."""
        if exc.errno in DISK_ERRNOS:
            log(logger, logging.WARNING, "controller disk unavailable", error=errno.errorcode.get(exc.errno, "?"))
            return error_response(
                503,
                problem_body(503, "disk_unavailable", "the controller's disk is full or failing; retry later"),
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        log(logger, logging.ERROR, "unexpected OS error", error=type(exc).__name__)
        return error_response(500, problem_body(500, "internal", "internal error"))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        """A bug: the same problem shape, nothing of the exception in it (Starlette's error
        layer re-raises after this answer, so the traceback is still logged)."""
        return error_response(500, problem_body(500, "internal", "internal error"))
