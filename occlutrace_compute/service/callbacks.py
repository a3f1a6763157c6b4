"""Job-completion callbacks: POST the final status, HMAC-signed, retried with bounded backoff.

The receiver checks `X-OccluTrace-Signature: sha256=<hex>` = HMAC-SHA256(secret, raw body).
Delivery is best effort (at most `attempts` tries); the job record stays the source of truth,
so a receiver that missed a callback can always poll the job.

A callback URL is a tenant's input that the service itself requests: unless the deployment
allows it, it must not name loopback, private, link-local (cloud metadata) or other non-public
addresses, so that no tenant can reach the cluster's internal services through it (SSRF). It is
checked when the job is created and again before every delivery (the name may resolve elsewhere
by then).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import threading
from urllib.parse import urlsplit

import httpx

from occlutrace_compute.service.logs import log
from occlutrace_compute.service.signing import SIGNATURE_HEADER, sign_body

logger = logging.getLogger("occlutrace.callbacks")


def callback_url_problem(url: str, allow_private: bool = False) -> str | None:
    """Why `url` may not receive callbacks (None: it may): not http(s), no host, a host that does
    not resolve, or (unless `allow_private`) one resolving to any non-public address."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL with a host"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return f"host {host!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            return f"host {host!r} resolves to a non-public address ({address}); callbacks go to public receivers only"
    return None


def deliver(url: str, status: dict, secret: str | None, attempts: int = 5, backoff_s: float = 0.5,
            stop: threading.Event | None = None, allow_private: bool = False) -> bool:
    """POST `status` to `url`; True once a 2xx came back. Never raises."""
    problem = callback_url_problem(url, allow_private)
    if problem:
        log(logger, logging.WARNING, "callback refused", job_id=status.get("job_id"), error=problem)
        return False
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
