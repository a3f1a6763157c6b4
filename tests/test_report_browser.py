"""Report pages in a real headless Chromium with the network blocked (a proxy that refuses):
the 3D view loads from the page alone, the batch index filters and sorts. Skipped where no
Chromium is installed (CI installs Debian's `chromium`)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=http://127.0.0.1:9",  # any fetch fails: offline
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--virtual-time-budget=8000",
]


def dump_dom(url: str, profile: Path) -> str:
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_case_page_3d_view_loads_offline(tmp_path):
    from occlutrace_compute.analysis.colormap import deviation_ramp
    from occlutrace_compute.analysis.frame import arch_frame
    from occlutrace_compute.analysis.report import case_report_files, viewer_payload
    from occlutrace_compute.synth.arch import make_arch

    arch = make_arch("lower", 8, 0.5)
    png = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(png, format="PNG")
    values = np.where(arch.mesh.vertices[:, 0] > 0, 0.15, -0.15)
    viewer = viewer_payload(
        arch.mesh.vertices, arch.mesh.faces, values, deviation_ramp(0.2, 0.1), arch_frame(arch.mesh), "lower"
    )
    result = {"kind": "pair", "case": "c1", "inputs": {}, "metrics": {}, "deviation": {}, "changed_regions": []}
    page = tmp_path / "report.html"
    page.write_bytes(case_report_files(result, {"deviation.png": png.getvalue()}, viewer)["report.html"])
    dom = dump_dom(page.as_uri(), tmp_path / "profile")
    assert 'data-viewer="ready"' in dom, re.findall(r'id="msg">[^<]*', dom)
    assert f"{viewer['n_vertices']} vertices" in dom


def test_batch_index_filters_and_sorts_in_the_browser(tmp_path):
    from occlutrace_compute.analysis.report import write_batch_report

    rows = [
        {
            "case": f"case-{i}",
            "kind": "pair",
            "status": s,
            "reason": "",
            "seconds": 1.0,
            "metrics": {"rmse_mm": r, "within_tolerance_share": w, "doubtful": False},
            "previews": [],
        }
        for i, (s, r, w) in enumerate(
            [
                ("succeeded", 0.030, 0.95),
                ("rejected", None, None),
                ("succeeded", 0.010, 0.5),
                ("succeeded", 0.020, 0.99),
            ]
        )
    ]
    out = write_batch_report(rows, tmp_path / "report.html")
    dom = dump_dom(out.as_uri() + "#status=succeeded&sort=4", tmp_path / "profile")
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    order = re.findall(r'<tr data-status="(\w+)"[^>]*?(style="display: none;")?>\s*<td data-v="(case-\d)"', body)
    assert [c for _, hidden, c in order if not hidden] == ["case-2", "case-3", "case-0"]  # by RMSE, rejected hidden
    assert "3 of 4 shown" in dom
