"""Error bodies, Location and ETag against the real controller (uvicorn on 127.0.0.1, local store,
no dispatcher): every error answer, whoever makes it (a route, FastAPI's validation and JSON
parsing, the router's 404/405, the ASGI layers' 401/413/429), is one RFC 9457 problem; a 201
names what it created; an unchanged job answers a conditional poll 304."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_service_support import LiveServer, mesh_bytes, write_tokens

from occlutrace_client import OccluTraceClient
from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.schemas import Problem

TOKEN = "tok-alpha-0123456789"
PROBLEM = "application/problem+json"


def _config(tmp: Path, **extra) -> ServiceConfig:
    tokens = write_tokens(tmp / "tokens", {TOKEN: "alpha"})
    return ServiceConfig.from_env(store=f"file://{tmp / 'store'}", tokens_file=str(tokens), **extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("problems"), rate_burst=100_000, max_json_bytes=4096)
    live = LiveServer(lambda: create_app(config)).start()
    live.http = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    for role, seed in (("fixed", 0), ("moving", 1)):
        r = live.http.post("/v1/cases/case-p/files", files={"file": (f"{role}.stl", mesh_bytes(seed))})
        assert r.status_code == 201, r.text
    yield live
    live.http.close()
    live.stop()


def assert_problem(r: httpx.Response, status: int, error: str | None = None) -> dict:
    """The answer is an RFC 9457 problem with the HTTP status, and the first shape's keys too."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM, r.headers
    body = r.json()
    Problem.model_validate(body)
    assert body["status"] == status and body["detail"] == body["message"] and body["title"]
    assert body["type"] == f"urn:occlutrace:problem:{body['error']}"
    if error is not None:
        assert body["error"] == error, body
    return body


PAIR = {"case": "case-p", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}


def test_fastapi_validation_lists_every_failing_field(server):
    body = assert_problem(server.http.post("/v1/jobs", json={"inputs": {}, "options": {}}), 422, "invalid_request")
    locs = sorted(tuple(e["loc"]) for e in body["errors"])
    assert locs == [("body", "case"), ("body", "kind")], body
    assert body["source"] == "body.case" and body["problem"] and "and 1 more" in body["detail"]
    body = assert_problem(server.http.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
    assert [e["loc"] for e in body["errors"]] == [["query", "limit"]]


def test_malformed_json_is_a_problem(server):
    r = server.http.post("/v1/jobs", content=b'{"case": "case-p", ', headers={"Content-Type": "application/json"})
    body = assert_problem(r, 422, "invalid_json")
    assert body["errors"][0]["type"] == "json_invalid" and body["errors"][0]["loc"][0] == "body"


def test_router_404_and_405_are_problems(server):
    assert_problem(httpx.get(f"{server.url}/no-such-page"), 404, "not_found")
    assert_problem(server.http.get("/v1/no/such/route"), 404, "not_found")
    r = server.http.delete("/healthz")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"
    assert_problem(server.http.get("/v1/jobs/j0123456789abcdef"), 404, "not_found")  # a route's own


def test_the_asgi_layers_answer_problems(server, tmp_path):
    r = httpx.post(f"{server.url}/v1/jobs", json=PAIR)
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = server.http.post("/v1/jobs", content=b"x" * 5000, headers={"Content-Type": "application/json"})
    body = assert_problem(r, 413, "too_large")
    assert body["source"] == "request body"
    config = _config(tmp_path, auth_fail_burst=1, auth_fail_per_s=0.01)  # its own server: 127.0.0.1 gets blocked
    strict = LiveServer(lambda: create_app(config)).start()
    try:
        bad = {"Authorization": "Bearer wrong-token-0000000000"}
        assert_problem(httpx.get(f"{strict.url}/v1/jobs", headers=bad), 401)
        r = httpx.get(f"{strict.url}/v1/jobs", headers=bad)
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        strict.stop()


@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["case", "kind", "inputs", "options", "callback_url", "x"]) | st.text(max_size=8),
                inner,
                max_size=5,
            )
        ),
        max_leaves=20,
    ),
    raw=st.binary(max_size=64),
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_whatever_a_client_posts_an_error_is_a_problem(server, body, raw):
    """Planted JSON values and raw bytes: every non-2xx answer is a problem with its status."""
    for r in (
        server.http.post("/v1/jobs", json=body),
        server.http.post("/v1/batches", content=raw, headers={"Content-Type": "application/json"}),
    ):
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert_problem(r, r.status_code)


def test_201_names_what_it_created_and_a_retry_names_the_same(server):
    r = server.http.post("/v1/jobs", json=PAIR, headers={"Idempotency-Key": "loc-1"})
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    assert server.http.get(r.headers["location"]).json()["job_id"] == job_id
    again = server.http.post("/v1/jobs", json=PAIR, headers={"Idempotency-Key": "loc-1"})
    assert again.status_code == 200 and again.headers["location"] == r.headers["location"]
    b = server.http.post("/v1/batches", json={"jobs": [PAIR, PAIR]})
    assert b.status_code == 201, b.text
    assert b.headers["location"] == f"/v1/batches/{b.json()['batch_id']}"
    assert server.http.get(b.headers["location"]).json()["total"] == 2


def test_job_status_etag_and_304(server):
    job_id = server.http.post("/v1/jobs", json=PAIR).json()["job_id"]
    first = server.http.get(f"/v1/jobs/{job_id}")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and first.headers["cache-control"] == "no-cache"
    assert server.http.get(f"/v1/jobs/{job_id}").headers["etag"] == etag  # the same status, the same tag
    for match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = server.http.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": match})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag, match
    assert server.http.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": '"other"'}).status_code == 200
    assert server.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    changed = server.http.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["state"] == "cancelled"
    assert changed.headers["etag"] != etag
    assert_problem(server.http.get("/v1/jobs/jffffffffffff00", headers={"If-None-Match": "*"}), 404)


class Recording(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner, self.seen = httpx.HTTPTransport(), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen.append((request.headers.get("if-none-match"), response.status_code))
        return response


def test_client_wait_polls_with_the_etag(server):
    job_id = server.http.post("/v1/jobs", json=PAIR).json()["job_id"]
    polls = []

    def sleep(_: float) -> None:  # the job changes on the third wait
        polls.append(1)
        if len(polls) == 3:
            assert server.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200

    transport = Recording()
    with OccluTraceClient(server.url, TOKEN, transport=transport, sleep=sleep) as api:
        job = api.wait(job_id, poll_s=0.01)
    assert job.state == "cancelled"
    assert transport.seen[0] == (None, 200)
    assert [s for _, s in transport.seen[1:]] == [304, 304, 200], transport.seen
    assert all(tag is not None for tag, _ in transport.seen[1:])


def test_error_bodies_parse_in_the_client(server):
    from occlutrace_client import ApiError

    with OccluTraceClient(server.url, TOKEN, sleep=lambda s: None) as api:
        with pytest.raises(ApiError) as info:
            api.request(
                "POST", "/v1/jobs", content=json.dumps({"kind": "pair"}), headers={"Content-Type": "application/json"}
            )
    assert info.value.status == 422 and info.value.code == "invalid_request"
    assert info.value.source == "body.case" and info.value.body["errors"]


def test_a_bug_answers_a_problem_without_its_details(tmp_path):
    """An unexpected exception in a route (here: the store's listing raising a plain bug) is a
    500 problem naming nothing of the exception."""
    config = _config(tmp_path)
    app = create_app(config)
    store = app.state.controller.store

    def broken(*args, **kwargs):
        raise ZeroDivisionError("secret detail")

    store.list = broken
    live = LiveServer(lambda: app).start()
    try:
        r = httpx.get(f"{live.url}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert_problem(r, 500, "internal")
        assert "secret" not in r.text and "ZeroDivision" not in r.text
    finally:
        live.stop()
