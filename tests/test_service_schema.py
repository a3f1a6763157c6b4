"""Property-based API checks with schemathesis against the controller's own OpenAPI schema:
whatever a client sends, authenticated or not, the controller never answers 5xx; and, against
a real uvicorn server, every answer is one the document declares for its operation (status,
media type, headers, body schema)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_service_support import LiveServer, mesh_bytes, write_tokens

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig


def _schema():
    """Built at import (schemathesis parametrizes at collection); the folder lives as long as the module."""
    tmp = Path(_TMP.name)
    tokens = write_tokens(tmp / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}", tokens_file=str(tokens), rate_burst=100_000, max_upload_bytes=100_000
    )
    app = create_app(config)
    store = app.state.controller.store
    for name in ("fixed.stl", "moving.stl"):  # something real for generated jobs to point at
        store.put(f"tenants/alpha/cases/case-1/inputs/{name}", mesh_bytes(0))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


_TMP = tempfile.TemporaryDirectory(prefix="occlutrace-schema-")
schema = _schema()


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    response = case.call(headers={"Authorization": "Bearer tok-alpha-0123456789"})
    case.validate_response(response, checks=[not_a_server_error])


# -- the document and the running server against each other -----------------------------------

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _live() -> tuple[LiveServer, object]:
    """A real uvicorn server on 127.0.0.1 and the schema as it serves it (started at import:
    schemathesis parametrizes at collection; `_stop_live` stops it after the module)."""
    tmp = Path(_TMP.name) / "live"
    tmp.mkdir()
    tokens = write_tokens(tmp / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}",
        tokens_file=str(tokens),
        rate_burst=100_000,
        max_upload_bytes=100_000,
        max_json_bytes=200_000,
    )
    store = config.open_store()
    for name in ("fixed.stl", "moving.stl"):
        store.put(f"tenants/alpha/cases/case-1/inputs/{name}", mesh_bytes(0))
    server = LiveServer(lambda: create_app(config, store)).start()
    return server, schemathesis.openapi.from_url(f"{server.url}/openapi.json")


_LIVE, live = _live()


@pytest.fixture(scope="module", autouse=True)
def _stop_live():
    yield
    _LIVE.stop()


@live.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_is_declared(case):
    """Each operation's answers, good and bad input, with and without a token: every status is
    one the document lists for the operation, with its media type, headers and body schema."""
    response = case.call(headers={"Authorization": "Bearer tok-alpha-0123456789"})
    case.validate_response(response, checks=CONFORMANCE)
    bare = case.call(headers={"Authorization": "Bearer wrong-token-000000000"})
    case.validate_response(bare, checks=CONFORMANCE)


PAIR = {"case": "case-1", "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}


class _Workflow(live.as_state_machine()):
    """Stateful: the document's links (a created job -> its status, result, cancel; a batch ->
    its status) followed against the running server, every answer checked as above."""

    def before_call(self, case):
        """Creations get a valid body (random ones are the test above's job), so that the links
        lead somewhere: a real job or batch, then its status, result, cancel."""
        if case.method.upper() == "POST" and case.path in ("/v1/jobs", "/v1/batches"):
            case.body = {"jobs": [PAIR, PAIR]} if case.path == "/v1/batches" else dict(PAIR)
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}

    def get_call_kwargs(self, case):
        return {"headers": {"Authorization": "Bearer tok-alpha-0123456789"}}

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, checks=CONFORMANCE)


TestWorkflow = _Workflow.TestCase
TestWorkflow.settings = settings(
    max_examples=10, stateful_step_count=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
