"""Job-completion callbacks: POST the final status, HMAC-signed, retried with bounded backoff.

The receiver checks `X-OccluTrace-Signature: sha256=<hex>` = HMAC-SHA256(secret, raw body).
Delivery is best effort (at most `attempts` tries); the job record stays the source of truth,
so a receiver that missed a callback can always poll the job.

A callback URL is a tenant's input that the service itself requests: unless the deployment
allows it, it must not name loopback, private, link-local (cloud metadata) or other non-public
addresses, so that no tenant can reach the cluster's internal services through it (SSRF). It is
checked when the job is created and again before every delivery (the name may resolve elsewhere
by then), and the delivery connects to the very address that passed (the URL's name still goes in
the Host header and as the TLS server name), so a name re-pointed between check and connection
(DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from occlutrace_compute.service.logs import log
from occlutrace_compute.service.signing import SIGNATURE_HEADER, sign_body

logger = logging.getLogger("occlutrace.callbacks")

# getaddrinfo has no timeout of its own: lookups run here so that a slow resolver costs a job
# creation or a delivery at most RESOLVE_TIMEOUT_S (a hung lookup holds one of these threads).
RESOLVE_TIMEOUT_S = 3.0
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="callback-dns")


class CallbackRefused(ValueError):
    """A callback URL the service will not request; the message says why."""


@dataclass(frozen=True)
class PinnedUrl:
    """A callback URL bound to one checked address: `url` names that address, `host` is the
    Host header and `server_name` the TLS server name (https), both the URL's own name."""

    url: str
    host: str
    server_name: str | None


def callback_url_problem(url: str, allow_private: bool = False) -> str | None:
    """Why `url` may not receive callbacks (None: it may): not http(s), no host, a host that does
    not resolve, or (unless `allow_private`) one resolving to any non-public address. With
    `allow_private` the name is not resolved here (an in-cluster name may resolve only later)."""
    try:
        parts = _parts(url)
        if not allow_private:
            _address(parts, allow_private)
    except CallbackRefused as exc:
        return str(exc)
    return None


def pin_callback_url(url: str, allow_private: bool = False) -> PinnedUrl:
    """`url` resolved once and checked (CallbackRefused if it may not be requested), then
    rewritten to connect to the address that passed."""
    parts = _parts(url)
    address = _address(parts, allow_private)
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{parts.port}" if parts.port else "")
    host = parts.netloc.rpartition("@")[2]
    return PinnedUrl(parts._replace(netloc=netloc).geturl(), host, parts.hostname if parts.scheme == "https" else None)


def _parts(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackRefused("must be an http(s) URL with a host")
    return parts


def _address(parts: SplitResult, allow_private: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to connect to; every address the name resolves to must be public (unless
    `allow_private`), so that no round-robin answer can lead inside."""
    host = parts.hostname
    lookup = _RESOLVER.submit(socket.getaddrinfo, host, parts.port or (443 if parts.scheme == "https" else 80),
                              proto=socket.IPPROTO_TCP)
    try:
        infos = lookup.result(timeout=RESOLVE_TIMEOUT_S)
    except TimeoutError as exc:
        raise CallbackRefused(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"host {host!r} does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not allow_private and not address.is_global:
            raise CallbackRefused(f"host {host!r} resolves to a non-public address ({address}); callbacks go to public receivers only")
    return addresses[0]


def deliver(url: str, status: dict, secret: str | None, attempts: int = 5, backoff_s: float = 0.5,
            stop: threading.Event | None = None, allow_private: bool = False) -> bool:
    """POST `status` to `url`; True once a 2xx came back. Never raises."""
    try:
        target = pin_callback_url(url, allow_private)
    except CallbackRefused as exc:
        log(logger, logging.WARNING, "callback refused", job_id=status.get("job_id"), error=str(exc))
        return False
    body = json.dumps(status, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "Host": target.host}
    extensions = {"sni_hostname": target.server_name} if target.server_name else None
    if secret:
        headers[SIGNATURE_HEADER] = sign_body(secret, body)
    waiter = stop or threading.Event()
    with httpx.Client(timeout=5.0) as client:
        for attempt in range(1, attempts + 1):
            try:
                response = client.post(target.url, content=body, headers=headers, extensions=extensions)
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
