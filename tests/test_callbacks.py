"""Callback URLs are tenant input the service requests itself: no internal addresses (SSRF)."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from occlutrace_compute.service.callbacks import CallbackRefused, callback_url_problem, deliver, pin_callback_url
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


@pytest.fixture
def callback_name(monkeypatch):
    """'callback.test' resolves to 127.0.0.1 (no DNS server can be run here for a made-up name);
    every other name resolves as usual. Yields the list of lookups of that name."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolve(host, *args, **kwargs):
        if host == "callback.test":
            lookups.append(host)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return lookups


def test_delivery_connects_to_the_checked_address_once_resolved(callback_name):
    """The name is resolved once, by the check; the POST goes to that address (httpx never looks
    the name up again, so re-pointing it in between cannot redirect the request) and still
    carries the URL's own name as Host."""
    sink = CallbackSink()
    try:
        url = f"http://callback.test:{sink.port}/hook"
        assert deliver(url, {"job_id": "j-2"}, None, attempts=1, allow_private=True) is True
        assert callback_name == ["callback.test"]
        (headers, _), = sink.received
        assert headers["Host"] == f"callback.test:{sink.port}"
        assert deliver(url, {"job_id": "j-2"}, None, attempts=1) is False  # 127.0.0.1 is not public
        assert len(sink.received) == 1
    finally:
        sink.close()


def test_https_delivery_to_a_pinned_address_verifies_the_urls_name(callback_name, tmp_path, monkeypatch):
    """TLS goes to the pinned address with the URL's name as server name: a certificate for that
    name is accepted, one for another name is not."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    for cert_name, expected in (("callback.test", True), ("elsewhere.test", False)):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(cert_name).configure_cert(server)
        sink = CallbackSink(tls=server)
        try:
            delivered = deliver(f"https://callback.test:{sink.port}/hook", {"job_id": "j-3"}, None, attempts=1,
                                allow_private=True)
            assert delivered is expected, cert_name
            assert len(sink.received) == int(expected)
        finally:
            sink.close()


def test_pinned_url_keeps_credentials_port_path_and_query():
    pinned = pin_callback_url("https://user:pw@93.184.216.34:8443/a/b?x=1")
    assert pinned.url == "https://user:pw@93.184.216.34:8443/a/b?x=1"
    assert pinned.host == "93.184.216.34:8443" and pinned.server_name == "93.184.216.34"
    six = pin_callback_url("http://[2606:2800:220:1:248:1893:25c8:1946]/hook")
    assert six.url == "http://[2606:2800:220:1:248:1893:25c8:1946]/hook" and six.server_name is None
    with pytest.raises(CallbackRefused, match="non-public"):
        pin_callback_url("http://127.0.0.1/hook")


def test_a_hung_resolver_costs_a_bounded_wait(monkeypatch):
    """getaddrinfo has no timeout: a lookup that never answers is given up after the bound."""
    from occlutrace_compute.service import callbacks

    release = threading.Event()
    real = socket.getaddrinfo

    def hang(host, *args, **kwargs):
        if host == "slow.test":
            release.wait(10)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    monkeypatch.setattr(callbacks, "RESOLVE_TIMEOUT_S", 0.2)
    try:
        assert "did not resolve within 0.2 s" in callback_url_problem("https://slow.test/hook")
    finally:
        release.set()
