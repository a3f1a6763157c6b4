"""Callback URLs are tenant input the service requests itself: no internal addresses (SSRF)."""

from __future__ import annotations

import pytest

from occlutrace_compute.service.callbacks import callback_url_problem, deliver
from tests.test_service_support import CallbackSink


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook", "http://10.1.2.3/hook",
    "http://192.168.0.10/hook", "http://172.20.0.5/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook", "http://0.0.0.0/hook", "http://100.64.0.1/hook",
])
def test_internal_addresses_are_refused_unless_the_deployment_allows_them(url):
    problem = callback_url_problem(url)
    assert problem and "non-public address" in problem
    assert callback_url_problem(url, allow_private=True) is None


@pytest.mark.parametrize("url, fragment", [
    ("ftp://example.com/hook", "http(s) URL"), ("http:///hook", "http(s) URL"), ("http://[::1/hook", "not a valid URL"),
])
def test_malformed_urls_are_refused_even_when_private_ones_are_allowed(url, fragment):
    assert fragment in (callback_url_problem(url, allow_private=True) or "")


def test_public_literal_address_is_accepted():
    assert callback_url_problem("https://93.184.216.34:8443/hook") is None


def test_delivery_rechecks_the_address_before_posting():
    sink = CallbackSink()
    try:
        assert deliver(sink.url, {"job_id": "j-1", "state": "succeeded"}, None, attempts=1) is False
        assert sink.received == []
        assert deliver(sink.url, {"job_id": "j-1", "state": "succeeded"}, None, attempts=1, allow_private=True) is True
        assert len(sink.received) == 1
    finally:
        sink.close()
