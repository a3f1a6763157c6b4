"""Structured JSON logs: one object per line, with job and tenant ids, never secrets or PHI.

Callers pass identifiers through `extra={"fields": {...}}`; only keys in ALLOWED_FIELDS are
emitted, so a token, URL or file name cannot slip into a log line by accident.

`time` is ISO-8601 UTC with milliseconds. `request_id` is the id of the HTTP request being served
(middleware.AccessLog: the client's `X-Request-ID` when well-formed, else a generated one) or, on
a worker, the id of the request that created the job being run (`JobRecord.request_id`); it is
carried by a context variable, so every line logged while serving that request or job has it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone

ALLOWED_FIELDS = frozenset(
    {
        "tenant",
        "job_id",
        "batch_id",
        "case",
        "kind",
        "state",
        "attempts",
        "worker",
        "device",
        "method",
        "route",
        "status",
        "duration_s",
        "bytes",
        "count",
        "error",
        "op",
        "queue_depth",
        "batch_size",
        "reason",
        "node",
        "request_id",
    }
)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("occlutrace_request_id", default=None)
# What a client's X-Request-ID may be: an id, never free text (it goes into logs and job records).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


def request_id_from(header: str | None) -> str:
    """The client's request id when it is a plain token of at most 128 characters, else a new one."""
    if header and REQUEST_ID_RE.match(header):
        return header
    return uuid.uuid4().hex


def iso_time(created: float) -> str:
    """`2026-12-06T14:44:30.123Z`: ISO-8601, UTC, milliseconds."""
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update({k: v for k, v in fields.items() if k in ALLOWED_FIELDS})
        if "request_id" not in obj and REQUEST_ID.get() is not None:
            obj["request_id"] = REQUEST_ID.get()
        if record.exc_info and record.exc_info[0] is not None:
            obj["exc_type"] = record.exc_info[0].__name__
        return json.dumps(obj, default=str)


def setup_logging(level: str = "INFO") -> None:
    """Route the service's loggers to stdout as JSON (idempotent)."""
    logger = logging.getLogger("occlutrace")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def log(logger: logging.Logger, level: int, msg: str, **fields: object) -> None:
    logger.log(level, msg, extra={"fields": fields})
