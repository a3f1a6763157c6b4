"""Callback URLs are tenant input the service requests itself: no internal addresses (SSRF)."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from occlutrace_compute.service.callbacks import CallbackRefused, callback_target, callback_url_problem, deliver
from tests.test_service_support import CallbackSink


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.20.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
    ],
)
def test_internal_addresses_are_refused_unless_the_deployment_allows_them(url):
    problem = callback_url_problem(url)
    assert problem and "non-public address" in problem
    assert callback_url_problem(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("ftp://example.com/hook", "http(s) URL"),
        ("http:///hook", "http(s) URL"),
        ("http://[::1/hook", "not a valid URL"),
    ],
)
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


NAMES = {"callback.test": ["127.0.0.1"], "b\u00fccher.test": ["127.0.0.1"], "two.test": ["127.0.0.2", "127.0.0.1"]}


@pytest.fixture
def callback_name(monkeypatch):
    """Made-up names resolve to loopback addresses (no DNS server can be run here for them);
    every other name resolves as usual. Yields the list of lookups of the made-up names."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolve(host, port, *args, **kwargs):
        if host in NAMES:
            lookups.append(host)
            return [info for address in NAMES[host] for info in real(address, port, *args, **kwargs)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
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
        ((headers, _),) = sink.received
        assert headers["Host"] == f"callback.test:{sink.port}"
        assert deliver(url, {"job_id": "j-2"}, None, attempts=1) is False  # 127.0.0.1 is not public
        assert len(sink.received) == 1
    finally:
        sink.close()


def test_delivery_tries_every_checked_address_and_sends_idna_names(callback_name):
    sink = CallbackSink()
    try:
        # two.test: 127.0.0.2 first, where nothing listens; the attempt goes on to 127.0.0.1.
        assert deliver(f"http://two.test:{sink.port}/hook", {"job_id": "j-4"}, None, attempts=1, allow_private=True)
        assert sink.received[-1][0]["Host"] == f"two.test:{sink.port}"
        assert deliver(
            f"http://b\u00fccher.test:{sink.port}/hook", {"job_id": "j-4"}, None, attempts=1, allow_private=True
        )
        assert sink.received[-1][0]["Host"] == f"xn--bcher-kva.test:{sink.port}"
    finally:
        sink.close()


def test_a_name_that_fails_to_resolve_is_tried_again_at_the_next_attempt(callback_name, monkeypatch):
    sink = CallbackSink()
    flaky = socket.getaddrinfo
    failures = [socket.gaierror("temporary failure in name resolution")]

    def resolve(host, *args, **kwargs):
        if host == "callback.test" and failures:
            raise failures.pop()
        return flaky(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        assert (
            deliver(
                f"http://callback.test:{sink.port}/hook",
                {"job_id": "j-5"},
                None,
                attempts=2,
                backoff_s=0.01,
                allow_private=True,
            )
            is True
        )
        assert not failures and len(sink.received) == 1
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
            delivered = deliver(
                f"https://callback.test:{sink.port}/hook", {"job_id": "j-3"}, None, attempts=1, allow_private=True
            )
            assert delivered is expected, cert_name
            assert len(sink.received) == int(expected)
        finally:
            sink.close()


def test_target_keeps_credentials_port_path_and_query():
    target = callback_target("https://user:pw@93.184.216.34:8443/a/b?x=1")
    assert target.urls == ("https://user:pw@93.184.216.34:8443/a/b?x=1",)
    assert target.host == "93.184.216.34:8443" and target.server_name == "93.184.216.34"
    six = callback_target("http://[2606:2800:220:1:248:1893:25c8:1946]/hook")
    assert six.urls == ("http://[2606:2800:220:1:248:1893:25c8:1946]/hook",) and six.server_name is None
    assert six.host == "[2606:2800:220:1:248:1893:25c8:1946]"
    with pytest.raises(CallbackRefused, match="non-public"):
        callback_target("http://127.0.0.1/hook")


def test_through_an_egress_proxy_the_url_is_checked_but_not_pinned(monkeypatch):
    """A proxy from the environment resolves and connects (CONNECT for https); pinning the
    address would break its TLS. NO_PROXY hosts are pinned as usual."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "93.184.216.35")
    proxied = callback_target("https://93.184.216.34/hook")
    assert proxied.proxied and proxied.urls == ("https://93.184.216.34/hook",)
    assert not callback_target("https://93.184.216.35/hook").proxied
    with pytest.raises(CallbackRefused, match="non-public"):
        callback_target("https://10.0.0.1/hook")


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
