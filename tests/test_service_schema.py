"""Property-based API checks with schemathesis against the controller's own OpenAPI schema:
whatever a client sends, authenticated or not, the controller never answers 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from test_service_support import mesh_bytes, write_tokens

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig


def _schema():
    """Built at import (schemathesis parametrizes at collection); the folder lives as long as the module."""
    tmp = Path(_TMP.name)
    tokens = write_tokens(tmp / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(store=f"file://{tmp / 'store'}", tokens_file=str(tokens),
                                    rate_burst=100_000, max_upload_bytes=100_000)
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
