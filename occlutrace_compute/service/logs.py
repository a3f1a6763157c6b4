"""Structured JSON logs: one object per line, with job and tenant ids, never secrets or PHI.

Callers pass identifiers through `extra={"fields": {...}}`; only keys in ALLOWED_FIELDS are
emitted, so a token, URL or file name cannot slip into a log line by accident.
"""

from __future__ import annotations

import json
import logging
import sys

ALLOWED_FIELDS = frozenset(
    {
        "tenant", "job_id", "batch_id", "case", "kind", "state", "attempts", "worker", "device",
        "method", "route", "status", "duration_s", "bytes", "count", "error", "op", "queue_depth",
        "batch_size", "reason", "node",
    }
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update({k: v for k, v in fields.items() if k in ALLOWED_FIELDS})
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
