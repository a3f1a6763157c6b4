"""write_batch_report: a self-contained, escaped HTML report with inline thumbnails."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
from PIL import Image

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
        {"case": "case-001", "kind": "pair", "status": "succeeded", "reason": "", "seconds": 12.34,
         "metrics": {"rmse_mm": 0.0123, "fitness": 0.91, "deviation_rms_mm": 0.021,
                     "within_tolerance_share": 0.934, "confidence": 0.88, "doubtful": False, "iterations": 31},
         "previews": [_png(tmp_path / "dev.png", (0, 120, 0))]},
        {"case": "case-002", "kind": "bite", "status": "succeeded", "reason": "",
         "metrics": {"contacts": {"per_side": {"left": {"contact_area_mm2": 24.7}, "right": {"contact_area_mm2": 27.9}},
                                  "max_penetration_mm": 0.038}, "doubtful": True},
         "previews": [_png(tmp_path / "contacts.png", (200, 0, 0), (1000, 520)), str(tmp_path / "missing.png"), str(not_png)]},
        {"case": evil, "kind": "pair", "status": "failed", "reason": f"RuntimeError: {evil}", "metrics": {}, "previews": []},
        {"case": "case-004", "kind": "bite", "status": "rejected",
         "reason": "upper.stl: binary STL truncated (expected 684 bytes, got 80)", "metrics": None},
    ]
    out = write_batch_report(rows, tmp_path / "report.html")
    doc = out.read_text(encoding="utf-8")

    parser = _Collect()
    parser.feed(doc)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags
    for tag, attrs in parser.tags:
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
    for needle in ("0.012 mm", "91.0%", "93.4%", "0.88", "24.7 mm\u00b2", "27.9 mm\u00b2", "0.038 mm",
                   "expected 684 bytes", "preview missing.png unavailable", "preview broken.png unavailable",
                   "no preview", "iterations", "12.3 s"):
        assert needle in text, needle
    assert 'class="doubtful"' in doc  # case-002 flagged


def test_empty_batch_still_writes_a_report(tmp_path):
    out = write_batch_report([], tmp_path / "report.html")
    doc = out.read_text(encoding="utf-8")
    assert "0 cases" in doc and "succeeded: 0" in doc and doc.rstrip().endswith("</html>")
