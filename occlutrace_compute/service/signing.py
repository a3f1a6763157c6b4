"""HMAC signing: expiring download/upload tokens for the local store, and callback bodies.

A URL token is `<base64url(json payload)>.<base64url(hmac-sha256)>`; the payload names the
tenant, the object key, the allowed method and an absolute expiry, so the token alone (like an
S3 presigned URL) authorises one object for a limited time and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

SIGNATURE_HEADER = "X-OccluTrace-Signature"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class UrlGrant:
    tenant: str
    key: str
    method: str
    expires: float


def sign_grant(secret: str, grant: UrlGrant) -> str:
    payload = json.dumps(
        {"t": grant.tenant, "k": grant.key, "m": grant.method, "e": grant.expires}, separators=(",", ":")
    ).encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_grant(secret: str, token: str, method: str, now: float | None = None) -> UrlGrant | None:
    """The grant if the token is authentic, unexpired and for `method`; else None."""
    try:
        payload_b64, mac_b64 = token.split(".", 1)
        payload = _unb64(payload_b64)
        mac = _unb64(mac_b64)
    except (ValueError, TypeError):
        return None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data = json.loads(payload)
        grant = UrlGrant(str(data["t"]), str(data["k"]), str(data["m"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if grant.method != method or grant.expires < (time.time() if now is None else now):
        return None
    return grant


def sign_body(secret: str, body: bytes) -> str:
    """The callback signature header value: `sha256=<hex hmac of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_body(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign_body(secret, body), header)
