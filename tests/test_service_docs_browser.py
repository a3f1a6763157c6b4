"""`/docs` (Swagger UI) and `/redoc` of the real controller (uvicorn on 127.0.0.1) in a headless
Chromium whose network is cut off (every non-loopback request goes to a proxy that refuses):
they render every operation from the assets shipped in the package. A control page that loads
the same UI from the CDN (FastAPI's default) stays empty under the same flags, so the test
would fail if the pages still needed the network. Skipped where no Chromium is installed
(CI installs Debian's `chromium`).

Set OCCLUTRACE_DOCS_SCREENSHOT=path.png to keep the screenshot for a look by eye.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from PIL import Image
from test_service_support import LiveServer, write_tokens

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")

# Loopback stays direct (Chromium's implicit bypass); everything else goes to a refusing proxy.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=http://127.0.0.1:9",
    "--virtual-time-budget=15000",
]


def chromium(url: str, profile: Path, *extra: str) -> str:
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    config = ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}", tokens_file=str(write_tokens(tmp / "tokens", {"t": "a"}))
    )
    live = LiveServer(lambda: create_app(config)).start()
    yield live
    live.stop()


def _operation_ids(url: str) -> set[str]:
    import httpx

    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return {(op["tags"][0], op["operationId"]) for ops in schema["paths"].values() for op in ops.values()}


def test_swagger_ui_lists_every_operation_offline(server, tmp_path):
    expected = _operation_ids(server.url)
    assert len(expected) >= 15
    dom = chromium(f"{server.url}/docs", tmp_path / "p1", "--dump-dom")
    shown = set(re.findall(r'id="operations-([A-Za-z]+)-([A-Za-z]+)"', dom)) - {("tag", tag) for tag, _ in expected}
    assert shown == expected, (sorted(expected - shown), dom[:2000])
    assert "Failed to load API definition" not in dom

    shot = Path(os.environ.get("OCCLUTRACE_DOCS_SCREENSHOT") or tmp_path / "docs.png")
    chromium(
        f"{server.url}/docs", tmp_path / "p2", f"--screenshot={shot}", "--window-size=1280,1800", "--hide-scrollbars"
    )
    image = Image.open(shot).convert("L")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20, "a blank page"  # text and coloured method badges


def test_redoc_lists_every_operation_offline(server, tmp_path):
    expected = _operation_ids(server.url)
    dom = chromium(f"{server.url}/redoc", tmp_path / "p", "--dump-dom")
    shown = set(re.findall(r'data-section-id="tag/([A-Za-z]+)/operation/([A-Za-z]+)"', dom))
    assert shown == expected, (sorted(expected - shown), dom[:2000])


def test_control_the_cdn_default_stays_blank_offline(tmp_path):
    """FastAPI's default /docs (assets from a CDN) under the same flags: no operation shows,
    i.e. the flags really cut the network off and the tests above prove offline rendering."""
    app = FastAPI()

    @app.get("/ping", operation_id="ping", tags=["ops"])
    def ping() -> dict:
        return {}

    live = LiveServer(lambda: app).start()
    try:
        dom = chromium(f"{live.url}/docs", tmp_path / "p", "--dump-dom")
    finally:
        live.stop()
    assert 'id="swagger-ui"' in dom and "operations-ops-ping" not in dom
