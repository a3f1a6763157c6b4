"""What the OpenAPI document says each operation answers: `problem(...)` builds a route's error
responses (RFC 9457 bodies, `application/problem+json`, with the headers that come with them),
and `install(app)` finishes the generated document: error bodies under their real media type and
none of FastAPI's automatic 422 `HTTPValidationError` (an operation lists 422 only where a
request can fail validation, and then with the Problem schema)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.problems import PROBLEM_MEDIA_TYPE

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                "schema": {"type": "integer"}}}
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "malformed multipart body"},
    401: {"description": "missing or invalid bearer token",
          "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}},
    403: {"description": "invalid, expired or used signed URL"},
    404: {"description": "no such object for this tenant"},
    409: {"description": "conflict with the object's state (see `error`)"},
    413: {"description": "request body or file over the limit"},
    422: {"description": "invalid request: `errors` lists every failing field (validation), or `source`/`problem` "
                         "name the file, label or field at fault"},
    429: {"description": "rate limited (the tenant's rate, or failed authentications from this address)",
          "headers": _RETRY_AFTER},
    503: {"description": "object store or controller disk unavailable", "headers": _RETRY_AFTER},
}
# OpenAPI links: what a created job or batch leads to (generated clients and stateful tests follow them)
JOB_LINKS = {op: {"operationId": op, "parameters": {"job_id": "$response.body#/job_id"}}
             for op in ("getJob", "getResult", "cancelJob")}
BATCH_LINKS = {"getBatch": {"operationId": "getBatch", "parameters": {"batch_id": "$response.body#/batch_id"}}}
AUTHED = (401, 429, 503)  # what every bearer-token route can answer: the auth layer, the limiter, the store


def problem(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of these error statuses, each with the Problem schema."""
    return {status: {"model": s.Problem, **ERROR_RESPONSES[status]} for status in sorted(set(statuses))}


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            auto = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if auto.get("$ref", "").endswith("/HTTPValidationError"):  # FastAPI's own, not declared by us
                del responses["422"]
            for response in responses.values():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the finished document as `/openapi.json` (FastAPI builds and caches it; finished
    once per build: `_finish` is idempotent anyway)."""
    generate = app.openapi
    finished: list[int] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if finished != [id(document)]:
            _finish(document)
            finished[:] = [id(document)]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
