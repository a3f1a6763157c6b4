"""write_batch_report: a self-contained, escaped HTML index with inline thumbnails, sorting and
filtering by inline script only (nothing fetched); case pages and PDFs."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from report_results import pair_result

from occlutrace_compute.analysis.report import THUMB_WIDTH_PX, write_batch_report


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _png(path, color, size=(800, 600)):
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = color
    arr[100:200, 100:300] = (255, 255, 255)
    Image.fromarray(arr).save(path)
    return str(path)


def test_report_is_self_contained_escaped_and_complete(tmp_path):
    evil = '<script>alert("x")</script> & "quotes"'
    not_png = tmp_path / "broken.png"
    not_png.write_bytes(b"not an image")
    rows = [
        {
            "case": "case-001",
            "kind": "pair",
            "status": "succeeded",
            "reason": "",
            "seconds": 12.34,
            "metrics": {
                "rmse_mm": 0.0123,
                "fitness": 0.91,
                "deviation_rms_mm": 0.021,
                "within_tolerance_share": 0.934,
                "confidence": 0.88,
                "doubtful": False,
                "iterations": 31,
            },
            "previews": [_png(tmp_path / "dev.png", (0, 120, 0))],
        },
        {
            "case": "case-002",
            "kind": "bite",
            "status": "succeeded",
            "reason": "",
            "metrics": {
                "contacts": {
                    "per_side": {"left": {"contact_area_mm2": 24.7}, "right": {"contact_area_mm2": 27.9}},
                    "max_penetration_mm": 0.038,
                },
                "doubtful": True,
            },
            "previews": [
                _png(tmp_path / "contacts.png", (200, 0, 0), (1000, 520)),
                str(tmp_path / "missing.png"),
                str(not_png),
            ],
        },
        {
            "case": evil,
            "kind": "pair",
            "status": "failed",
            "reason": f"RuntimeError: {evil}",
            "metrics": {},
            "previews": [],
        },
        {
            "case": "case-004",
            "kind": "bite",
            "status": "rejected",
            "reason": "upper.stl: binary STL truncated (expected 684 bytes, got 80)",
            "metrics": None,
        },
    ]
    out = write_batch_report(rows, tmp_path / "report.html")
    doc = out.read_text(encoding="utf-8")

    parser = _Collect()
    parser.feed(doc)
    tags = [t for t, _ in parser.tags]
    assert "link" not in tags and tags.count("script") == 1  # the inline sort/filter script
    for tag, attrs in parser.tags:
        assert not (tag == "script" and "src" in attrs)
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith("data:image/png;base64,"), (tag, attrs[key][:40])
    imgs = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(imgs) == 2
    for src in imgs:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.width == THUMB_WIDTH_PX
    assert "http://" not in doc and "https://" not in doc

    text = "".join(parser.text)
    assert evil in text  # shown verbatim, as text
    assert "&lt;script&gt;" in doc
    for needle in ("succeeded: 2", "failed: 1", "rejected: 1", "4 cases"):
        assert needle in text
    for needle in (
        "12.3",
        "91.0",
        "93.4",
        "0.88",
        "24.7",
        "27.9",
        "0.038",
        "reg. RMSE [µm]",
        "dev. RMS [mm]",
        "contact L [mm²]",
        "max penetration [mm]",
        "expected 684 bytes",
        "preview missing.png unavailable",
        "preview broken.png unavailable",
        "no preview",
        "iterations",
        "12.3 s",
    ):
        assert needle in text, needle
    assert 'doubtful" data-v="1"' in doc  # case-002 flagged
    assert 'data-verdict="pass"' in doc  # case-001: 93.4 % within tolerance


def test_empty_batch_still_writes_a_report(tmp_path):
    out = write_batch_report([], tmp_path / "report.html")
    doc = out.read_text(encoding="utf-8")
    assert "0 cases" in doc and "succeeded: 0" in doc and doc.rstrip().endswith("</html>")


def test_csv_cells_are_short_and_spreadsheet_friendly():
    from occlutrace_compute.jobs.batch import csv_value

    assert csv_value("deviation_rms_mm", 0.123456789012345) == "0.123"
    assert csv_value("rmse_um", 12.345678) == "12.3"
    assert csv_value("doubtful", False) == "false" and csv_value("doubtful", True) == "true"
    assert csv_value("fitness", 0.86712345678) == "0.8671"
    assert csv_value("x", None) == "" and csv_value("x", float("nan")) == ""


def test_case_page_and_pdf_explain_judge_and_locate(tmp_path):
    from occlutrace_compute.analysis.colormap import deviation_ramp
    from occlutrace_compute.analysis.frame import arch_frame
    from occlutrace_compute.analysis.report import case_report_files, viewer_payload
    from occlutrace_compute.synth.arch import make_arch

    arch = make_arch("upper", 4, 0.5)
    png = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(png, format="PNG")
    evil = "<img src=x onerror=alert(1)>"
    result = pair_result("lab/" + evil, inputs={"fixed": "a.stl", "moving": "b.stl"}, warnings=[evil])
    viewer = viewer_payload(
        arch.mesh.vertices,
        arch.mesh.faces,
        np.zeros(arch.mesh.n_vertices),
        deviation_ramp(0.2, 0.1),
        arch_frame(arch.mesh),
        "upper",
    )
    files = case_report_files(result, {"deviation.png": png.getvalue()}, viewer, {"tolerance_mm": 0.05})
    doc = files["report.html"].decode()
    parser = _Collect()
    parser.feed(doc)
    text = "".join(parser.text)
    for needle in (
        "FAIL",
        "79.5 % of the measured surface lies within \u00b10.050 mm",
        "26.4 µm",
        "0.178 mm",
        "-0.400 \u2026 +0.059 mm",
        "upper left anterior",
        "152.6",
        "+0.664",
        "root-mean-square",
        "registration errors in µm, deviations in mm",
    ):
        assert needle in text, needle
    assert evil in text and evil not in doc  # escaped everywhere
    assert "http://" not in doc and "https://" not in doc
    for tag, attrs in parser.tags:
        assert not (tag == "script" and "src" in attrs) and tag != "link"
    assert files["report.pdf"].startswith(b"%PDF") and len(files["report.pdf"]) > 2000


def test_base64_marked_safe_renders_the_page_escaping_would():
    """The sheet's and the 3D mesh's base64 skip the escaper (nothing in their alphabet needs it):
    the page is byte for byte the one escaping them gives; a prefix that would need escaping is
    refused."""
    from occlutrace_compute.analysis.colormap import deviation_ramp
    from occlutrace_compute.analysis.frame import arch_frame
    from occlutrace_compute.analysis.report import _base64_text, case_page, viewer_payload
    from occlutrace_compute.synth.arch import make_arch

    arch = make_arch("lower", 2, 0.6)
    viewer = viewer_payload(
        arch.mesh.vertices,
        arch.mesh.faces,
        np.zeros(arch.mesh.n_vertices),
        deviation_ramp(0.2),
        arch_frame(arch.mesh),
        None,
    )
    png = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(png, format="PNG")
    result = pair_result("case-1", inputs={"fixed": "a.ply", "moving": "b.ply"})
    marked = case_page(result, [("sheet", png.getvalue())], viewer)
    plain = case_page(result, [("sheet", png.getvalue())], viewer | {"data": str(viewer["data"])})
    assert marked == plain and str(viewer["data"]) in marked
    with pytest.raises(ValueError, match="needs escaping"):
        _base64_text(b"x", 'data:"><script>')
