"""A one-page PDF (text and one image) written directly, without matplotlib.

The case report's PDF is text lines and the deviation/contact sheet: a plotting library's
import (~0.7 s) and figure rendering (~0.4 s CPU per page) cost more than the job's deviation
map did. This writer emits PDF 1.4 objects itself:

- text in the PDF base-14 fonts Helvetica / Helvetica-Bold (every reader has them: nothing is
  embedded), WinAnsi encoded (µ, ±, ², –, … are in it; anything else becomes "?");
- the image as its PNG's own compressed rows (IDAT) under FlateDecode with the PNG predictor,
  which PDF defines bit for bit like PNG: no decode and re-encode of the sheet (other PNG kinds are
  converted to 8-bit RGB by Pillow first).

Written from parsed values only: no metadata (no /Info: no producer, dates or names).
Time and memory O(text + PNG bytes).
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from dataclasses import dataclass, field

A4_PT = (595.28, 841.89)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_AVG_CHAR_EM = 0.52  # Helvetica's mean advance per character, in em (for wrapping)


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252) encoding: parentheses and backslashes escaped,
    line breaks as spaces, characters outside WinAnsi as '?'."""
    raw = " ".join(text.splitlines()).encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


@dataclass(frozen=True)
class PngRows:
    """An 8-bit RGB, non-interlaced PNG's size and concatenated IDAT bytes (zlib stream of
    predictor-prefixed rows)."""

    width: int
    height: int
    idat: bytes


def png_rows(png: bytes) -> PngRows:
    """The IDAT stream of an 8-bit RGB non-interlaced PNG as is; any other image Pillow reads is
    converted to such a PNG first. ValueError when the bytes are no readable image."""
    if png.startswith(_PNG_SIGNATURE) and len(png) >= 33 and png[12:16] == b"IHDR":
        width, height, depth, color, _comp, _filt, interlace = struct.unpack(">IIBBBBB", png[16:29])
        if depth == 8 and color == 2 and interlace == 0 and width > 0 and height > 0:
            chunks, pos = [], 8
            while pos + 8 <= len(png):  # each step moves past one chunk: at most len/12 steps
                (length,) = struct.unpack(">I", png[pos : pos + 4])
                kind = png[pos + 4 : pos + 8]
                if kind == b"IDAT":
                    chunks.append(png[pos + 8 : pos + 8 + length])
                elif kind == b"IEND":
                    break
                pos += 12 + length
            if chunks:
                return PngRows(width, height, b"".join(chunks))
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG", compress_level=1)
    except (OSError, ValueError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__})") from None
    return png_rows(buf.getvalue())


@dataclass
class PdfPage:
    """One page. Coordinates are fractions of the page, origin bottom left (like a matplotlib
    figure's); text is placed at its baseline's left end; sizes in points."""

    size_pt: tuple[float, float] = A4_PT
    _ops: list[bytes] = field(default_factory=list)
    _images: list[PngRows] = field(default_factory=list)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        size: float,
        bold: bool = False,
        color: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        w, h = self.size_pt
        r, g, b = color
        self._ops.append(
            b"BT /%s %.2f Tf %.3f %.3f %.3f rg %.2f %.2f Td %s Tj ET"
            % (b"F2" if bold else b"F1", size, r, g, b, x * w, y * h, _pdf_string(text))
        )

    def wrapped(
        self, x: float, y: float, text: str, size: float, right: float = 0.96, leading: float = 1.25, **kw
    ) -> float:
        """Text wrapped at the page fraction `right`; returns the baseline below the last line."""
        chars = max(10, int((right - x) * self.size_pt[0] / (_AVG_CHAR_EM * size)))
        for line in textwrap.wrap(text, chars) or [""]:
            self.text(x, y, line, size, **kw)
            y -= leading * size / self.size_pt[1]
        return y

    def image(self, png: bytes, x: float, y: float, width: float, height: float) -> None:
        """The image fitted into the box of page fractions (x, y: its bottom left): aspect kept,
        centred across, at the top of the box."""
        rows = png_rows(png)
        pw, ph = self.size_pt
        bw, bh = width * pw, height * ph
        scale = min(bw / rows.width, bh / rows.height)
        iw, ih = rows.width * scale, rows.height * scale
        ix, iy = x * pw + (bw - iw) / 2, y * ph + bh - ih
        self._ops.append(b"q %.3f 0 0 %.3f %.3f %.3f cm /Im%d Do Q" % (iw, ih, ix, iy, len(self._images)))
        self._images.append(rows)

    def tobytes(self) -> bytes:
        """The whole PDF file."""
        w, h = self.size_pt
        content = zlib.compress(b"\n".join(self._ops), 6)
        n_images = len(self._images)
        first_image = 6
        contents_id = first_image + n_images
        xobjects = b" ".join(b"/Im%d %d 0 R" % (i, first_image + i) for i in range(n_images))
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Resources << /Font << /F1 4 0 R /F2 5 0 R >>"
            b" /XObject << %s >> >> /Contents %d 0 R >>" % (w, h, xobjects, contents_id),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        ]
        for rows in self._images:
            objects.append(
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8"
                b" /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 3 /BitsPerComponent 8 /Columns %d >>"
                b" /Length %d >>\nstream\n%s\nendstream"
                % (rows.width, rows.height, rows.width, len(rows.idat), rows.idat)
            )
        objects.append(b"<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
        return bytes(out)
