"""`helm test` smoke test: one tiny pair job through the public API, start to finish.

Runs in the chart's test pod on the CPU image with nothing but the standard library (so it
tests the deployment, not a client library): waits for /readyz, uploads two small meshes into a
fresh case, submits a pair job (with an Idempotency-Key), polls it to a final state, reads its
result, and always purges the case again. Exit 0 only when the job succeeded.

Environment: OCCLUTRACE_API_URL (e.g. http://<release>-controller.<ns>.svc:80),
OCCLUTRACE_TOKEN_FILE (the test tenant's token), OCCLUTRACE_TEST_TIMEOUT_S (default 600),
OCCLUTRACE_TEST_POLL_S (seconds between status polls, default 2).

Bounded: every HTTP call has a 30 s timeout and the polling loop a wall-clock deadline, so the
pod ends within timeout + a few calls. The meshes are 642 vertices / 1280 faces (~64 KB each).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
import sys
import time
import urllib.error
import urllib.request
from typing import Any

FINAL_STATES = ("succeeded", "failed", "rejected", "cancelled")
HTTP_TIMEOUT_S = 30.0
POLL_EVERY_S = float(os.environ.get("OCCLUTRACE_TEST_POLL_S", "2"))


class SmokeTestError(RuntimeError):
    """A step of the smoke test failed; the message says which and why."""


def _request(
    method: str, url: str, token: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """One HTTP call; returns (status, JSON body or {}). Never raises on an HTTP status."""
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Authorization": f"Bearer {token}", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"raw": raw[:200].decode("utf-8", "replace")}
    return status, payload if isinstance(payload, dict) else {"body": payload}


def _expect(step: str, status: int, payload: dict[str, Any], *ok: int) -> dict[str, Any]:
    if status not in ok:
        raise SmokeTestError(f"{step}: HTTP {status} (expected {'/'.join(map(str, ok))}): {json.dumps(payload)[:500]}")
    return payload


def _vertex_key(v: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(round(c * 1e6) for c in v)  # type: ignore[return-value]


def bumpy_sphere(subdivisions: int = 3, radius_mm: float = 10.0) -> list[tuple[tuple[float, ...], ...]]:
    """Triangles of a closed, asymmetric blob about 2 cm across (an icosphere with low-order
    bumps, so that registration has a unique answer). 20 * 4**subdivisions faces."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [
        (-1, t, 0),
        (1, t, 0),
        (-1, -t, 0),
        (1, -t, 0),
        (0, -1, t),
        (0, 1, t),
        (0, -1, -t),
        (0, 1, -t),
        (t, 0, -1),
        (t, 0, 1),
        (-t, 0, -1),
        (-t, 0, 1),
    ]
    faces = [
        (0, 11, 5),
        (0, 5, 1),
        (0, 1, 7),
        (0, 7, 10),
        (0, 10, 11),
        (1, 5, 9),
        (5, 11, 4),
        (11, 10, 2),
        (10, 7, 6),
        (7, 1, 8),
        (3, 9, 4),
        (3, 4, 2),
        (3, 2, 6),
        (3, 6, 8),
        (3, 8, 9),
        (4, 9, 5),
        (2, 4, 11),
        (6, 2, 10),
        (8, 6, 7),
        (9, 8, 1),
    ]
    unit = [tuple(c / math.sqrt(sum(x * x for x in v)) for c in v) for v in verts]
    for _ in range(subdivisions):
        index: dict[tuple[int, int, int], int] = {_vertex_key(v): i for i, v in enumerate(unit)}
        new_faces = []

        def midpoint(a: int, b: int, index: dict[tuple[int, int, int], int] = index) -> int:
            m = [(unit[a][k] + unit[b][k]) / 2.0 for k in range(3)]
            n = math.sqrt(sum(c * c for c in m))
            v = tuple(c / n for c in m)
            key = _vertex_key(v)
            if key not in index:
                index[key] = len(unit)
                unit.append(v)
            return index[key]

        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces

    def place(v: tuple[float, ...]) -> tuple[float, float, float]:
        x, y, z = v
        r = radius_mm * (1.0 + 0.25 * x * y + 0.2 * z * z * x + 0.15 * y)
        return (r * x * 1.3, r * y, r * z * 0.8)

    points = [place(v) for v in unit]
    return [(points[a], points[b], points[c]) for a, b, c in faces]


def moved(triangles: list, angle_rad: float = 0.08, shift_mm: tuple[float, float, float] = (0.8, -0.5, 0.3)) -> list:
    """The same surface rotated about z and shifted (a small, known rigid motion)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)

    def tf(p: tuple[float, ...]) -> tuple[float, float, float]:
        return (c * p[0] - s * p[1] + shift_mm[0], s * p[0] + c * p[1] + shift_mm[1], p[2] + shift_mm[2])

    return [tuple(tf(p) for p in tri) for tri in triangles]


def binary_stl(triangles: list) -> bytes:
    out = [bytes(80), struct.pack("<I", len(triangles))]
    for a, b, c in triangles:
        u = [b[k] - a[k] for k in range(3)]
        v = [c[k] - a[k] for k in range(3)]
        n = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
        length = math.sqrt(sum(x * x for x in n)) or 1.0
        out.append(struct.pack("<12fH", *(x / length for x in n), *a, *b, *c, 0))
    return b"".join(out)


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "occlutrace-" + secrets.token_hex(12)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run(api: str, token: str, timeout_s: float, log=print) -> dict[str, Any]:
    """The whole smoke test; returns the job's result document. Raises SmokeTestError."""
    api = api.rstrip("/")
    deadline = time.monotonic() + timeout_s
    while True:  # bounded by the deadline
        status, payload = _request("GET", f"{api}/readyz", token)
        if status == 200:
            break
        if time.monotonic() > deadline:
            raise SmokeTestError(f"/readyz: HTTP {status} until the deadline: {json.dumps(payload)[:300]}")
        time.sleep(POLL_EVERY_S)
    log(f"ready: {json.dumps(payload)}")
    case = f"helm-test-{secrets.token_hex(6)}"
    fixed = bumpy_sphere()
    try:
        for name, triangles in (("fixed.stl", fixed), ("moving.stl", moved(fixed))):
            body, content_type = _multipart("file", name, binary_stl(triangles))
            _expect(
                f"upload {name}",
                *_request("POST", f"{api}/v1/cases/{case}/files", token, body, {"Content-Type": content_type}),
                201,
            )
        job_body = json.dumps(
            {"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
        ).encode()
        job = _expect(
            "create job",
            *_request(
                "POST",
                f"{api}/v1/jobs",
                token,
                job_body,
                {"Content-Type": "application/json", "Idempotency-Key": f"{case}-job"},
            ),
            200,
            201,
        )
        job_id = job["job_id"]
        log(f"job {job_id} ({case}): {job.get('state')}")
        state = job.get("state")
        while state not in FINAL_STATES:  # bounded by the deadline
            if time.monotonic() > deadline:
                raise SmokeTestError(f"job {job_id} still {state} after {timeout_s:.0f} s (are workers running?)")
            time.sleep(POLL_EVERY_S)
            job = _expect("job status", *_request("GET", f"{api}/v1/jobs/{job_id}", token), 200)
            if job.get("state") != state:
                state = job.get("state")
                log(f"job {job_id}: {state}")
        if state != "succeeded":
            raise SmokeTestError(f"job {job_id} ended {state}: {job.get('reason')}")
        result = _expect("job result", *_request("GET", f"{api}/v1/jobs/{job_id}/result", token), 200)
        if not result.get("files"):
            raise SmokeTestError(f"job {job_id} succeeded without output files: {json.dumps(result)[:300]}")
        log(f"result files: {[f.get('name') for f in result['files']]}")
        return result
    finally:
        status, payload = _request("DELETE", f"{api}/v1/cases/{case}", token)
        log(f"purge {case}: HTTP {status}, {payload.get('count')} objects")


def main() -> int:
    api = os.environ["OCCLUTRACE_API_URL"]
    with open(os.environ["OCCLUTRACE_TOKEN_FILE"], encoding="utf-8") as fh:
        token = fh.read().strip()
    timeout_s = float(os.environ.get("OCCLUTRACE_TEST_TIMEOUT_S", "600"))
    try:
        run(api, token, timeout_s)
    except (SmokeTestError, OSError, KeyError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
