"""The API's one error body: RFC 9457 `application/problem+json`.

Every error answer of the controller (a route's own, FastAPI's request validation and malformed
JSON, unknown routes and methods, and the ASGI layers' 401/413/429) carries the RFC's members
`type`, `title`, `status`, `detail`, and ours: `error` (the machine-readable code, also the last
segment of `type`), `message` (= `detail`, kept for clients written against the first shape),
`source` (the file, label or field at fault) and `problem` (what is wrong with it); a validation
error adds `errors`, one `{loc, msg, type}` per failing field. Plain data only: the ASGI layers
use it without FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:occlutrace:problem:"  # a URN, not a URL: nothing to dereference, nothing to go stale
MAX_FIELD_ERRORS = 50  # a 1000-job batch with every job wrong answers 50 errors, not 1000s


def title_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    code: str,
    message: str,
    source: str | None = None,
    problem: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The body of one error answer (see the module docstring); `errors` only when given."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title_of(status),
        "status": status,
        "detail": message,
        "error": code,
        "message": message,
        "source": source,
        "problem": problem,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def _loc_text(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_problem(raw_errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422 from pydantic/FastAPI error dicts, written from their `loc`, `msg` and `type` alone
    (never `input` or `ctx`: the rejected value may be large or carry what the client must not
    see echoed in logs). Malformed JSON gets the code `invalid_json`, other failures
    `invalid_request`; `source`/`problem` name the first failing field."""
    errors: list[dict[str, Any]] = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in raw_errors[:MAX_FIELD_ERRORS]
    ]
    first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request", "type": ""}
    code = "invalid_json" if first["type"] == "json_invalid" else "invalid_request"
    where = _loc_text(first["loc"])
    more = len(raw_errors) - 1
    message = (f"{where}: {first['msg']}" if where else first["msg"]) + (f" (and {more} more)" if more > 0 else "")
    return problem_body(422, code, message, where or None, first["msg"], errors)
