"""What the OpenAPI document says each operation answers: `problem(...)` builds a route's error
responses (RFC 9457 bodies, `application/problem+json`, with the headers that come with them),
and `install(app)` finishes the generated document: error bodies under their real media type and
none of FastAPI's automatic 422 `HTTPValidationError` (an operation lists 422 only where a
request can fail validation, and then with the Problem schema); the `X-Request-ID` header that
every operation accepts and every answer carries (middleware.AccessLog); file parts of multipart
bodies as `format: binary` beside OpenAPI 3.1's `contentMediaType`, which generators (e.g.
openapi-python-client, openapi-typescript) read as a file, not a string; and form bodies named
after their operation (`UploadFileForm`), not FastAPI's `Body_uploadFile`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from occlutrace_compute.service import schemas as s
from occlutrace_compute.service.logs import REQUEST_ID_RE
from occlutrace_compute.service.problems import PROBLEM_MEDIA_TYPE

_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "required": True, "schema": {"type": "integer"}}
}
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "malformed multipart body"},
    401: {
        "description": "missing or invalid bearer token",
        "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    },
    403: {"description": "invalid, expired or used signed URL"},
    404: {"description": "no such object for this tenant"},
    409: {"description": "conflict with the object's state (see `error`)"},
    413: {"description": "request body or file over the limit"},
    422: {
        "description": "invalid request: `errors` lists every failing field (validation), or `source`/`problem` "
        "name the file, label or field at fault"
    },
    429: {
        "description": "rate limited (the tenant's rate, or failed authentications from this address)",
        "headers": _RETRY_AFTER,
    },
    503: {"description": "object store or controller disk unavailable", "headers": _RETRY_AFTER},
}
# OpenAPI links: what a created job or batch leads to (generated clients and stateful tests follow them)
JOB_LINKS = {
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/job_id"}}
    for op in ("getJob", "getResult", "cancelJob")
}
BATCH_LINKS = {"getBatch": {"operationId": "getBatch", "parameters": {"batch_id": "$response.body#/batch_id"}}}
REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "an id for this request, carried into the logs and the records of the jobs it creates; "
    "one of another form is replaced by a generated id",
    "schema": {"type": "string", "maxLength": 128},
}
REQUEST_ID_HEADER = {
    "description": "the request's id: the client's X-Request-ID when it matches the pattern, else a generated one",
    "required": True,
    "schema": {"type": "string", "pattern": REQUEST_ID_RE.pattern},
}
AUTHED = (401, 429, 503)  # what every bearer-token route can answer: the auth layer, the limiter, the store


def problem(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of these error statuses, each with the Problem schema."""
    return {status: {"model": s.Problem, **ERROR_RESPONSES[status]} for status in sorted(set(statuses))}


def _form_schema_names(document: dict[str, Any]) -> dict[str, str]:
    """FastAPI's `Body_<operationId>` form schemas -> `<OperationId>Form`."""
    return {
        name: name[5:6].upper() + name[6:] + "Form"
        for name in document.get("components", {}).get("schemas", {})
        if name.startswith("Body_")
    }


def _rename_refs(node: Any, renames: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/") and ref[21:] in renames:
            node["$ref"] = "#/components/schemas/" + renames[ref[21:]]
        for value in node.values():
            _rename_refs(value, renames)
    elif isinstance(node, list):
        for value in node:
            _rename_refs(value, renames)


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.get("components", {}).get("schemas", {})
    renames = _form_schema_names(document)
    for old, new in renames.items():
        schema = schemas.pop(old)
        schema["title"] = new
        for prop in schema.get("properties", {}).values():
            if prop.get("type") == "string" and prop.get("contentMediaType") == "application/octet-stream":
                prop["format"] = "binary"  # a file part
        schemas[new] = schema
    _rename_refs(document.get("paths", {}), renames)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "X-Request-ID" for p in parameters):
                parameters.append(dict(REQUEST_ID_PARAMETER))
            responses = operation.get("responses", {})
            auto = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if auto.get("$ref", "").endswith("/HTTPValidationError"):  # FastAPI's own, not declared by us
                del responses["422"]
            for response in responses.values():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                response.setdefault("headers", {})["X-Request-ID"] = dict(REQUEST_ID_HEADER)
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
