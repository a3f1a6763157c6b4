"""The case PDF written without matplotlib (analysis/pdfpage.py): a valid file (every xref offset
lands on its object), the sheet's pixels exactly (PNG rows under FlateDecode + PNG predictor,
decoded here independently), the text a reader extracts (WinAnsi: µ, ±, ², hostile parentheses
and backslashes escaped, anything else '?'), no metadata; and the job's output stages import no
matplotlib (a fresh interpreter)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from report_results import pair_result

from occlutrace_compute.analysis.pdfpage import PdfPage, png_rows
from occlutrace_compute.analysis.report import case_pdf


def _search(pattern: bytes, data: bytes) -> re.Match[bytes]:
    found = re.search(pattern, data)
    assert found is not None, pattern
    return found


def _objects(pdf: bytes) -> dict[int, bytes]:
    """Object number -> body, after checking that the xref table points at each object."""
    start = int(_search(rb"startxref\n(\d+)\n%%EOF\n$", pdf).group(1))
    assert pdf[start:].startswith(b"xref\n")
    head = _search(rb"^xref\n0 (\d+)\n", pdf[start:])
    count = int(head.group(1))
    table = pdf[start + head.end() :].split(b"\n")[:count]
    assert table[0] == b"0000000000 65535 f "
    out = {}
    for number, row in enumerate(table[1:], start=1):
        offset = int(row[:10])
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number), number
        end = pdf.index(b"\nendobj\n", offset)
        out[number] = pdf[offset + len(b"%d 0 obj\n" % number) : end]
    return out


def _stream(body: bytes) -> bytes:
    length = int(_search(rb"/Length (\d+)", body).group(1))
    data = body[body.index(b"stream\n") + 7 :]
    return data[:length]


def _unfilter(raw: bytes, width: int, height: int, bpp: int = 3) -> np.ndarray:
    """PNG predictor rows (filter byte + row) back to pixels: the PNG spec's five filters."""
    stride = width * bpp
    out = np.zeros((height, stride), np.int64)
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int64)
        up = out[y - 1] if y else np.zeros(stride, np.int64)
        cur = np.zeros(stride, np.int64)
        for x in range(stride):
            left = cur[x - bpp] if x >= bpp else 0
            upleft = up[x - bpp] if x >= bpp and y else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = left
            elif kind == 2:
                pred = up[x]
            elif kind == 3:
                pred = (left + up[x]) // 2
            else:
                p = left + up[x] - upleft
                pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else (up[x] if pb <= pc else upleft)
            cur[x] = (line[x] + pred) % 256
        out[y] = cur
    return out.reshape(height, width, bpp).astype(np.uint8)


def _image_pixels(pdf: bytes) -> np.ndarray:
    images = [b for b in _objects(pdf).values() if b"/Subtype /Image" in b]
    assert len(images) == 1
    body = images[0]
    width = int(_search(rb"/Width (\d+)", body).group(1))
    height = int(_search(rb"/Height (\d+)", body).group(1))
    assert b"/Predictor 15 /Colors 3 /BitsPerComponent 8 /Columns %d" % width in body
    return _unfilter(zlib.decompress(_stream(body)), width, height)


@settings(max_examples=5, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.sampled_from(["RGB", "RGBA", "P", "L"]), st.integers(0, 2**31))
def test_the_sheet_pixels_arrive_exactly_whatever_png_it_is(w, h, mode, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    png = io.BytesIO()
    image.save(png, format="PNG")
    page = PdfPage()
    page.image(png.getvalue(), 0.1, 0.1, 0.8, 0.5)
    got = _image_pixels(page.tobytes())
    assert np.array_equal(got, np.asarray(image.convert("RGB")))


def test_not_an_image_is_a_clear_error():
    with pytest.raises(ValueError, match="not a readable image"):
        png_rows(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)


def _result() -> dict:
    return pair_result("lab (a) \\ b) 漢")


def test_case_pdf_is_valid_has_no_metadata_and_carries_the_sheet():
    sheet = np.zeros((96, 140, 3), np.uint8)
    sheet[:, :70] = (200, 30, 30)
    sheet[10:20, 100:130] = (20, 180, 40)
    png = io.BytesIO()
    Image.fromarray(sheet).save(png, format="PNG")
    pdf = case_pdf(_result(), [("deviation map", png.getvalue())])
    assert pdf.startswith(b"%PDF-1.4\n")
    objects = _objects(pdf)
    assert b"/Type /Catalog" in objects[1]
    assert np.array_equal(_image_pixels(pdf), sheet)
    for word in (b"/Info", b"Producer", b"CreationDate", b"Author", b"matplotlib"):
        assert word not in pdf


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler's pdftotext not installed")
def test_a_pdf_reader_extracts_the_verdict_and_figures(tmp_path):
    png = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(png, format="PNG")
    path = tmp_path / "report.pdf"
    path.write_bytes(case_pdf(_result(), [("deviation map", png.getvalue())]))
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    for needle in (
        "Inspection report: lab (a) \\ b) ?",
        "FAIL",
        "79.5 % of the measured surface lies within \u00b10.050 mm",
        "26.4 \u00b5m",
        "-0.400 \u2026 +0.059 mm",
        "changed: upper left anterior, 152.6 mm\u00b2, mean +0.664 mm",
    ):
        assert needle in text, needle


PROBE = """
import json, sys
import numpy as np
from occlutrace_compute.analysis import deviation
from occlutrace_compute.analysis.report import case_report_files, viewer_payload
from occlutrace_compute.synth.arch import make_arch
from occlutrace_compute.meshes.model import Mesh
arch = make_arch("upper", 4, 0.6).mesh
moved = Mesh(arch.vertices + 0.02, arch.faces)
dev = deviation(moved, arch, band_mm=0.1, arch="upper")
out = sys.argv[1]
dev.write_preview(out + "/deviation.png")
png = open(out + "/deviation.png", "rb").read()
viewer = viewer_payload(dev.colored.vertices, dev.colored.faces, dev.shown, dev.ramp, dev.frame, "upper")
files = case_report_files({"kind": "pair", "deviation": dev.to_dict()}, {"deviation.png": png}, viewer, {})
print(json.dumps({"matplotlib": "matplotlib" in sys.modules, "pdf": files["report.pdf"][:5].decode()}))
"""


def test_the_job_outputs_import_no_matplotlib(tmp_path):
    """Deviation map, preview PNG, report page and PDF in a fresh interpreter: matplotlib (~0.7 s
    of a command's imports, ~0.4 s CPU per PDF page) is never imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"matplotlib": False, "pdf": "%PDF-"}
    with Image.open(tmp_path / "deviation.png") as im:
        assert im.size == (1400, 960)
