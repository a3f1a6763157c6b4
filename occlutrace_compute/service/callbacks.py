"""Job-completion callbacks: POST the final status, HMAC-signed, retried with bounded backoff.

The receiver checks `X-OccluTrace-Signature: sha256=<hex>` = HMAC-SHA256(secret, raw body).
Delivery is best effort (at most `attempts` tries); the job record stays the source of truth,
so a receiver that missed a callback can always poll the job.
"""

from __future__ import annotations

import json
import logging
import random
import threading

import httpx

from occlutrace_compute.service.logs import log
from occlutrace_compute.service.signing import SIGNATURE_HEADER, sign_body

logger = logging.getLogger("occlutrace.callbacks")


def deliver(url: str, status: dict, secret: str | None, attempts: int = 5, backoff_s: float = 0.5,
            stop: threading.Event | None = None) -> bool:
    """POST `status` to `url`; True once a 2xx came back. Never raises."""
    body = json.dumps(status, sort_keys=True).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = sign_body(secret, body)
    waiter = stop or threading.Event()
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=5.0)
            if 200 <= response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            if waiter.wait(min(delay, 30.0)):
                break
        log(logger, logging.WARNING, "callback attempt failed", job_id=status.get("job_id"),
            attempts=attempt, error=problem)
    return False
