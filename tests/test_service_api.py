"""The controller's HTTP API in-process (ASGI), on a real local store; no Ray needed.

Jobs are stored and stay queued (no dispatcher); where a finished job is needed, the real
worker class runs it in this process with a scripted job function.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings, strategies as st
from test_service_support import JOB_FN, free_port, mesh_bytes, wait_for, write_tokens

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.logs import REQUEST_ID_RE, JsonFormatter, request_id_from
from occlutrace_compute.service.records import JobRef
from occlutrace_compute.service.signing import UrlGrant, sign_grant, verify_grant
from occlutrace_compute.service.worker import AlignWorker
from occlutrace_compute.storage import LocalStore
from occlutrace_compute.storage.base import KeyNotFound

TOKENS = {"tok-alpha-0123456789": "alpha", "tok-beta-01234567890": "beta"}


@pytest.fixture
def env(tmp_path):
    tokens = write_tokens(tmp_path / "tokens", TOKENS)
    config = ServiceConfig.from_env(
        store=f"file://{tmp_path / 'store'}", tokens_file=str(tokens), job_fn=JOB_FN, max_upload_bytes=200_000
    )
    store = LocalStore(tmp_path / "store")
    app = create_app(config, store=store)
    clients = {name: TestClient(app, headers={"Authorization": f"Bearer {tok}"}) for tok, name in TOKENS.items()}
    clients["anon"] = TestClient(app)
    return config, store, clients, tokens


def _pair(client, case="case-001", **extra):
    for role, seed in (("fixed", 0), ("moving", 1)):
        r = client.post(f"/v1/cases/{case}/files", files={"file": (f"{role}.stl", mesh_bytes(seed))})
        assert r.status_code == 201, r.text
    return client.post(
        "/v1/jobs",
        json={"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}, **extra},
        headers=extra.pop("headers", None),
    )


def _run_in_process(config, job_key):
    return AlignWorker(config).run_batch([job_key])


def test_missing_or_wrong_token_is_401_everywhere(env):
    _, _, c, _ = env
    calls = [
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/j0000000000000000000000"),
        ("post", "/v1/jobs"),
        ("post", "/v1/batches"),
        ("get", "/v1/batches/b0000000000000000000000"),
        ("delete", "/v1/cases/case-001"),
        ("post", "/v1/cases/case-001/files"),
        ("post", "/v1/cases/case-001/uploads"),
        ("post", "/v1/jobs/j0000000000000000000000/cancel"),
        ("get", "/v1/jobs/j0000000000000000000000/result"),
    ]
    for method, path in calls:
        r = getattr(c["anon"], method)(path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        r = getattr(c["anon"], method)(path, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401, (method, path)
    assert c["anon"].get("/healthz").status_code == 200


def test_tokens_file_hashed_entries_and_reload(env, tmp_path):
    config, store, c, tokens = env
    digest = hashlib.sha256(b"rotated-secret").hexdigest()
    tokens.write_text(f"# rotated\ngamma sha256:{digest}\nalpha tok-alpha-0123456789  # still valid\n")
    app = c["alpha"].app
    fresh = TestClient(app, headers={"Authorization": "Bearer rotated-secret"})
    assert fresh.get("/v1/jobs").status_code == 200
    assert c["beta"].get("/v1/jobs").status_code == 401  # removed from the file
    assert c["alpha"].get("/v1/jobs").status_code == 200


def test_upload_is_sanitised_and_bad_uploads_are_rejected_with_the_file_named(env):
    _, store, c, _ = env
    data = bytearray(mesh_bytes(0))
    data[:80] = b"Patient Jane Doe 1961-04-03".ljust(80, b" ")  # an identifying binary STL header
    r = c["alpha"].post("/v1/cases/case-001/files", files={"file": ("upper.stl", bytes(data))})
    assert r.status_code == 201, r.text
    stored = store.get(r.json()["key"])
    assert b"Jane" not in stored and len(stored) == len(data)

    r = c["alpha"].post("/v1/cases/case-001/files", files={"file": ("lower.stl", b"solid x\nnot a mesh\n")})
    assert r.status_code == 422 and r.json()["source"] == "lower.stl", r.text
    r = c["alpha"].post("/v1/cases/case-001/files", files={"file": ("Smith_John_upper.stl", mesh_bytes(1))})
    assert r.status_code == 422 and "Smith_John" in r.json()["problem"]
    r = c["alpha"].post("/v1/cases/Doe_Jane_1961-04-03/files", files={"file": ("upper.stl", mesh_bytes(1))})
    assert r.status_code == 422 and "case label" in r.json()["source"]
    r = c["alpha"].post("/v1/cases/case-001/files", files={"file": ("big.stl", b"\0" * 300_000)})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = c["alpha"].post(
        "/v1/cases/case-001/files",
        content=b"--xx\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert r.status_code in (400, 422)
    assert store.list("tenants/alpha/cases/case-001/inputs/") == ["tenants/alpha/cases/case-001/inputs/upper.stl"]


def test_idempotency_key_creates_one_job(env):
    _, store, c, _ = env
    headers = {"Idempotency-Key": "req-42"}
    first = _pair(c["alpha"], headers=headers)
    assert first.status_code == 201
    body = {"case": "case-001", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    again = c["alpha"].post("/v1/jobs", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    other = c["alpha"].post(
        "/v1/jobs", json={**body, "kind": "pair", "options": {"tolerance_mm": 0.1}}, headers=headers
    )
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert len([k for k in store.list("tenants/alpha/cases/") if k.endswith("job.json")]) == 1
    missing = c["alpha"].post("/v1/jobs", json={**body, "inputs": {"fixed": "fixed.stl", "moving": "nope.stl"}})
    assert missing.status_code == 422 and missing.json()["source"] == "input 'moving'"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
def test_idempotency_holds_across_replicas_racing_on_one_key(env, tmp_path, path):
    """Two controller replicas over one store get the same first request at once. Replica A reads
    the key just before replica B's whole request lands (the interleaving the per-replica lock
    cannot prevent): A must answer with B's ids, and one job exists."""
    config, _, c, _ = env
    job = {"case": "case-001", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    body = job if path == "/v1/jobs" else {"jobs": [job, job]}
    assert _pair(c["alpha"]).status_code == 201  # uploads the inputs (and one unrelated job)
    auth = {"Authorization": "Bearer tok-alpha-0123456789", "Idempotency-Key": "race-1"}
    replica_b = TestClient(create_app(config, store=LocalStore(tmp_path / "store")), headers=auth)
    landed: list[dict] = []

    class SeenBeforeB(LocalStore):
        """Replica A's store: its first read of an idempotency record predates B's request."""

        def get(self, key: str) -> bytes:
            if "/idempotency/" in key and not landed:
                response = replica_b.post(path, json=body)
                assert response.status_code == 201, response.text
                landed.append(response.json())
                raise KeyNotFound(key)
            return super().get(key)

    replica_a = TestClient(create_app(config, store=SeenBeforeB(tmp_path / "store")), headers=auth)
    answer = replica_a.post(path, json=body)
    assert answer.status_code == 200 and landed, answer.text
    ids = lambda r: [r["job_id"]] if "job_id" in r else [j["job_id"] for j in r["jobs"]]  # noqa: E731
    assert ids(answer.json()) == ids(landed[0])
    jobs = [k for k in LocalStore(tmp_path / "store").list("tenants/alpha/cases/") if k.endswith("job.json")]
    assert len(jobs) == 1 + len(ids(landed[0]))


def test_listing_pages_and_batches(env):
    _, _, c, _ = env
    for role, seed in (("fixed", 0), ("moving", 1)):
        c["alpha"].post("/v1/cases/case-002/files", files={"file": (f"{role}.stl", mesh_bytes(seed))})
    job = {"case": "case-002", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    r = c["alpha"].post("/v1/batches", json={"jobs": [job] * 5})
    assert r.status_code == 201, r.text
    batch = r.json()
    seen, after = [], None
    for _ in range(5):
        page = c["alpha"].get("/v1/jobs", params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [j["job_id"] for j in page["jobs"]]
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(j["job_id"] for j in batch["jobs"])
    status = c["alpha"].get(f"/v1/batches/{batch['batch_id']}", params={"limit": 3}).json()
    assert status["total"] == 5 and status["counts"] == {"queued": 5} and len(status["jobs"]) == 3
    assert not status["done"] and status["next"] == status["jobs"][-1]["job_id"]
    bad = c["alpha"].post(
        "/v1/batches", json={"jobs": [job, {**job, "inputs": {"fixed": "x.stl", "moving": "moving.stl"}}]}
    )
    assert bad.status_code == 422
    assert len(c["alpha"].get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == 5  # all or nothing


def test_results_download_and_tenant_isolation(env):
    config, store, c, _ = env
    job = _pair(c["alpha"]).json()
    key = JobRef("alpha", "case-001", job["job_id"]).key
    outcome = _run_in_process(config, key)
    assert outcome[0].state == "succeeded"
    result = c["alpha"].get(f"/v1/jobs/{job['job_id']}/result").json()
    names = {f["name"]: f["url"] for f in result["files"]}
    assert set(names) == {"outputs/result.json", "outputs/aligned.stl"}
    got = c["anon"].get(names["outputs/aligned.stl"])
    assert got.status_code == 200 and got.content == store.get("tenants/alpha/cases/case-001/inputs/fixed.stl")
    tampered = names["outputs/aligned.stl"][:-3] + "AAA"
    assert c["anon"].get(tampered).status_code == 403

    jid = job["job_id"]
    batch_id = (
        c["alpha"]
        .post(
            "/v1/batches",
            json={
                "jobs": [{"case": "case-001", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}]
            },
        )
        .json()["batch_id"]
    )
    b = c["beta"]
    assert b.get(f"/v1/jobs/{jid}").status_code == 404
    assert b.get(f"/v1/jobs/{jid}/result").status_code == 404
    assert b.post(f"/v1/jobs/{jid}/cancel").status_code == 404
    assert b.get(f"/v1/batches/{batch_id}").status_code == 404
    assert b.get("/v1/jobs").json()["jobs"] == []
    foreign = {
        "case": "case-001",
        "kind": "pair",
        "inputs": {"fixed": "tenants/alpha/cases/case-001/inputs/fixed.stl", "moving": "moving.stl"},
    }
    assert b.post("/v1/jobs", json=foreign).status_code == 422
    assert b.post("/v1/cases/case-001/uploads/u0000000000000000000000/commit").status_code == 404
    assert b.delete("/v1/cases/case-001").json()["count"] == 0
    assert store.list("tenants/alpha/cases/case-001/")  # untouched


def test_cancel_and_purge(env):
    config, store, c, _ = env
    job = _pair(c["alpha"]).json()
    r = c["alpha"].post(f"/v1/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert c["alpha"].post(f"/v1/jobs/{job['job_id']}/cancel").status_code == 409
    outcome = _run_in_process(config, JobRef("alpha", "case-001", job["job_id"]).key)
    assert (
        outcome[0].state == "cancelled" and c["alpha"].get(f"/v1/jobs/{job['job_id']}").json()["state"] == "cancelled"
    )

    r = c["alpha"].delete("/v1/cases/case-001")
    assert r.status_code == 200
    removed = r.json()["removed"]
    assert any(k.endswith("inputs/fixed.stl") for k in removed) and any("/index/jobs/" in k for k in removed)
    assert [k for k in store.list("") if "case-001" in k or (job["job_id"] in k and not k.startswith("testctl/"))] == []
    assert c["alpha"].get(f"/v1/jobs/{job['job_id']}").status_code == 404


def test_upload_url_flow_on_the_local_store(env):
    _, store, c, _ = env
    r = c["alpha"].post("/v1/cases/case-003/uploads", json={"name": "fixed.ply"})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert c["alpha"].post(grant["commit"]).status_code == 409  # nothing PUT yet
    assert c["anon"].put(grant["url"], content=mesh_bytes(2, "ply")).status_code == 204
    done = c["alpha"].post(grant["commit"])
    assert done.status_code == 201 and done.json()["name"] == "fixed.ply"
    assert store.list("tenants/alpha/cases/case-003/") == ["tenants/alpha/cases/case-003/inputs/fixed.ply"]
    assert c["anon"].put(grant["url"].replace("uploads/", "uploads/x"), content=b"x").status_code == 403


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    tokens = write_tokens(tmp_path / "tokens", TOKENS)
    config = ServiceConfig.from_env(store=f"file://{tmp_path}", tokens_file=str(tokens), rate_per_s=0.5, rate_burst=3)
    client = TestClient(create_app(config), headers={"Authorization": "Bearer tok-alpha-0123456789"})
    codes = [client.get("/v1/jobs").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    other = TestClient(client.app, headers={"Authorization": "Bearer tok-beta-01234567890"})
    assert other.get("/v1/jobs").status_code == 200  # per tenant
    r = client.get("/v1/jobs")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_metrics_and_health(env):
    _, _, c, _ = env
    _pair(c["alpha"])
    text = c["anon"].get("/metrics").text
    for name in (
        'occlutrace_jobs_submitted_total{kind="pair"}',
        "occlutrace_bytes_in_total",
        'occlutrace_http_requests_total{method="POST",route="/v1/jobs",status="201"}',
        "occlutrace_http_request_duration_seconds_bucket",
    ):
        assert name in text, name
    ready = c["anon"].get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "conditional_writes": "ok"}  # Ray is no part of it


def test_readiness_reports_a_store_that_ignores_conditional_writes(env, tmp_path, caplog):
    """An S3-compatible store without If-None-Match support (stood in for by a folder store that
    overwrites): reported and logged once, not fatal (each replica still serialises its keys)."""
    config, _, _, _ = env

    class Overwriting(LocalStore):
        def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
            self.put(key, data, content_type)
            return True

    store = Overwriting(tmp_path / "store")
    client = TestClient(create_app(config, store=store))
    with caplog.at_level(logging.ERROR, logger="occlutrace.controller"):
        for _ in range(2):
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["conditional_writes"] == "unsupported"
    assert sum("ignores conditional writes" in r.getMessage() for r in caplog.records) == 1
    assert store.list("ops/") == []  # the probe cleans up


def test_tokens_file_fails_closed(env, caplog):
    """A malformed file refuses the tenants it can no longer prove (never the last good tokens:
    a token revoked in the same edit stays revoked); a token listed for two tenants and very
    short tokens are not loaded; every problem is logged by line, never by token."""
    _, _, c, tokens = env
    alpha, beta = "tok-alpha-0123456789", "tok-beta-01234567890"
    assert c["alpha"].get("/v1/jobs").status_code == 200
    with caplog.at_level(logging.ERROR, logger="occlutrace.auth"):
        tokens.write_text(f"alpha {alpha} extra-field\nbeta {beta}\n")  # alpha's line is malformed
        assert c["alpha"].get("/v1/jobs").status_code == 401 and c["beta"].get("/v1/jobs").status_code == 200
        tokens.write_text(f"alpha {alpha}\nbeta\n")  # beta revoked, and a typo on its line
        assert c["beta"].get("/v1/jobs").status_code == 401 and c["alpha"].get("/v1/jobs").status_code == 200
        tokens.write_text(f"alpha {alpha}\n!!! {beta}\n")  # whose line is that? nobody's token holds
        assert c["alpha"].get("/v1/jobs").status_code == 401
        tokens.write_text(f"alpha {alpha}\nbeta {alpha}\n")  # one token, two tenants
        assert c["alpha"].get("/v1/jobs").status_code == 401
        tokens.write_text(f"alpha {alpha}\nbeta tok-b\n")  # guessable
        assert c["alpha"].get("/v1/jobs").status_code == 200
        assert TestClient(c["alpha"].app, headers={"Authorization": "Bearer tok-b"}).get("/v1/jobs").status_code == 401
    messages = [r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records]
    logged = " ".join(str(r.__dict__) for r in caplog.records)
    assert any("several tenants" in m for m in [logged]) and "shorter than 16" in logged
    assert alpha not in logged and beta not in logged and messages


def test_signed_urls_expire_and_are_bound_to_method():
    grant = UrlGrant("alpha", "tenants/alpha/cases/c/x", "GET", time.time() + 900)
    token = sign_grant("secret", grant)
    assert verify_grant("secret", token, "GET") == grant
    assert verify_grant("secret", token, "PUT") is None
    assert verify_grant("other-secret", token, "GET") is None
    assert verify_grant("secret", token, "GET", now=time.time() + 901) is None


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The service's log lines, as the JSON formatter writes them, while the block runs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("occlutrace")
    logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


def test_logs_hold_no_tokens_urls_or_file_names(env):
    config, _, c, _ = env
    with json_logs() as buffer:
        job = _pair(c["alpha"], case="case-009").json()
        _run_in_process(config, JobRef("alpha", "case-009", job["job_id"]).key)
        files = c["alpha"].get(f"/v1/jobs/{job['job_id']}/result").json()["files"]
        for f in files:
            assert c["anon"].get(f["url"]).status_code == 200
        c["anon"].get("/v1/jobs", headers={"Authorization": "Bearer wrong-token-xyz"})
    text = buffer.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line.get("job_id") == job["job_id"] and line.get("tenant") == "alpha" for line in lines)
    for secret in [
        "tok-alpha-0123456789",
        "wrong-token-xyz",
        "fixed.stl",
        *(f["url"].rsplit("/", 1)[-1] for f in files),
    ]:
        assert secret not in text


def test_request_id_is_echoed_stored_and_on_the_workers_log_lines(env):
    """X-Request-ID: a well-formed one is kept, a hostile or missing one replaced by a generated
    id; echoed on every answer (a 401 included), stored in the job's record, and on each log line
    of the request and of the worker's run of that job; log times are ISO-8601 UTC."""
    config, store, c, _ = env
    with json_logs() as buffer:
        job = _pair(c["alpha"], case="case-010", headers={"X-Request-ID": "web-7f3a.42:1"})
        assert job.status_code == 201 and job.headers["x-request-id"] == "web-7f3a.42:1"
        job_id = job.json()["job_id"]
        record = json.loads(store.get(JobRef("alpha", "case-010", job_id).key))
        assert record["request_id"] == "web-7f3a.42:1"
        outcome = _run_in_process(config, JobRef("alpha", "case-010", job_id).key)
        assert outcome[0].state == "succeeded"
        hostile = c["alpha"].get(f"/v1/jobs/{job_id}", headers={"X-Request-ID": "a b\x7f<script>" + "x" * 200})
        unauth = c["anon"].get("/v1/jobs", headers={"X-Request-ID": "client-401"})
        plain = c["alpha"].get(f"/v1/jobs/{job_id}")
    generated = hostile.headers["x-request-id"]
    assert hostile.status_code == 200 and len(generated) == 32 and int(generated, 16) >= 0
    assert unauth.status_code == 401 and unauth.headers["x-request-id"] == "client-401"
    assert plain.headers["x-request-id"] not in (generated, "web-7f3a.42:1")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    for line in lines:
        assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).utcoffset() == timedelta(0)
        assert "ts" not in line
    of_job = [line for line in lines if line.get("job_id") == job_id]
    worker_lines = [line for line in of_job if line["logger"] == "occlutrace.worker"]
    assert {line["msg"] for line in worker_lines} >= {"job started", "job succeeded"}, of_job
    assert all(
        line.get("request_id") == "web-7f3a.42:1"
        for line in worker_lines + [line for line in of_job if line["msg"] == "job submitted"]
    ), of_job
    access = [line for line in lines if line["msg"] == "request"]
    assert {line["request_id"] for line in access} >= {"web-7f3a.42:1", generated, "client-401"}


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_request_id_from_keeps_only_plain_tokens(header):
    """Whatever a client sends, the id that reaches logs and records is a plain token of at most
    128 characters: the client's own when it already is one, else a fresh uuid."""
    got = request_id_from(header)
    assert REQUEST_ID_RE.match(got) and len(got) <= 128
    plain = bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", header))
    assert (got == header) == plain


def test_serve_main_runs_the_controller_as_a_process(tmp_path):
    tokens = write_tokens(tmp_path / "tokens", TOKENS)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "occlutrace_compute.service.server",
            "--port",
            str(port),
            "--no-dispatcher",
            "--store",
            f"file://{tmp_path / 'store'}",
            "--tokens-file",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None

        wait_for(up, 60, "the controller process to answer")
        assert proc.poll() is None
        r = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": "Bearer tok-beta-01234567890"})
        assert r.status_code == 200 and r.json() == {"jobs": [], "next": None}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("route") == "/v1/jobs" and line.get("tenant") == "beta" for line in lines)
    assert "tok-beta-01234567890" not in output


def test_callback_to_an_internal_address_is_refused_and_nothing_is_stored(env):
    _, store, c, _ = env
    r = _pair(c["alpha"], callback_url="http://169.254.169.254/latest/meta-data/")
    assert r.status_code == 422, r.text
    assert r.json()["source"] == "callback_url" and "non-public address" in r.json()["problem"]
    assert c["alpha"].get("/v1/jobs").json()["jobs"] == []


def test_a_batch_resolves_each_callback_name_once(env, monkeypatch):
    """1000 jobs naming one callback URL cost one name lookup, not 1000 (each up to 3 s)."""
    import socket

    _, _, c, _ = env
    assert _pair(c["alpha"]).status_code == 201
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolve(host, port, *args, **kwargs):
        if host == "hooks.example-lab.test":
            lookups.append(host)
            return real("93.184.216.34", port, *args, **kwargs)  # a public address
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    job = {
        "case": "case-001",
        "kind": "pair",
        "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"},
        "callback_url": "https://hooks.example-lab.test/occlutrace",
    }
    r = c["alpha"].post("/v1/batches", json={"jobs": [job] * 20})
    assert r.status_code == 201, r.text
    assert len(r.json()["jobs"]) == 20 and lookups == ["hooks.example-lab.test"]


@pytest.mark.parametrize("value", ["abc\n", "tok-1\n"])
def test_validation_patterns_refuse_a_trailing_newline(value):
    """`$` matches before a final newline: an id, tenant or request id ending in one would reach
    logs and keys (log-line injection). Each pattern ends in \\Z."""
    from occlutrace_compute.service.auth import TENANT_RE
    from occlutrace_compute.service.records import ID_RE

    assert request_id_from(value) != value
    assert not TENANT_RE.match(value)
    assert not ID_RE.match("j0123456789abc\n")
