"""The ASCII PLY line-based fast path (ply._AsciiBody._values_by_lines) against the token-wise
reader it stands in front of.

Random ASCII PLY files: vertex properties (float/double coordinates, uchar colours, normals),
a fixed-size element before the faces, faces of 3-6 corners with extra integer or float
properties, an element after the faces; number spellings, separators, LF/CRLF; then records
split over lines or joined on one line, blank lines, signs and leading zeros on indices, long
digit runs, non-numbers, truncation, extra values. The parse with the fast path must equal the
parse without it (same arrays, metadata, warnings) or both must raise the same error.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh, mesh_to_bytes, ply
from tests.parse_equivalence import assert_same, scanner_modes, scanner_off

SPELL = ["{!r}", "{:g}", "{:.6e}", "{:.4f}", "{:+.3f}", "{:.3E}", "{}", "{:.30f}", "{:.0f}.", "no zero"]
ODDITIES = ["none"] * 6 + [
    "split record", "joined records", "blank line", "plus index", "minus index", "leading zeros", "long digits",
    "float index", "word", "truncated", "extra values", "nan", "one line",
]  # fmt: skip


@st.composite
def ply_files(draw) -> bytes:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_v = draw(st.integers(3, 8))
    n_f = draw(st.integers(1, 8))
    vtype = draw(st.sampled_from(["float", "double"]))
    colors, normals = draw(st.booleans()), draw(st.booleans())
    before = draw(st.booleans())  # a fixed-size element between the vertices and the faces
    face_extra = draw(st.sampled_from(["", "int", "float", "uchar"]))
    after = draw(st.sampled_from(["", "list", "fixed"]))
    sep = draw(st.sampled_from([" ", "\t", "  "]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    oddity = draw(st.sampled_from(ODDITIES))
    head = ["ply", "format ascii 1.0", f"element vertex {n_v}"] + [f"property {vtype} {a}" for a in "xyz"]
    if colors:
        head += [f"property uchar {c}" for c in ("red", "green", "blue")]
    if normals:
        head += [f"property float n{a}" for a in "xyz"]
    if before:
        head += ["element material 2", "property float shine", "property int id"]
    head += [f"element face {n_f}", "property list uchar int vertex_indices"]
    if face_extra:
        head.append(f"property {face_extra} flag")
    if after:
        head += ["element edge 2", "property list uchar int ends" if after == "list" else "property int a"]
    head.append("end_header")

    def num(x: float) -> str:
        spelling = SPELL[int(rng.integers(len(SPELL)))]
        if spelling == "no zero":  # '.5', '-.25': no digit before the point
            return re.sub(r"^(-?)0\.", r"\1.", repr(float(x)))
        return spelling.format(float(x))

    rows = []
    for _ in range(n_v):
        r = [num(x) for x in rng.uniform(-30, 30, 3)]
        r += [str(int(c)) for c in rng.integers(0, 256, 3)] if colors else []
        r += [num(x) for x in rng.normal(size=3)] if normals else []
        rows.append(r)
    if before:
        rows += [[num(rng.random()), str(int(rng.integers(9)))] for _ in range(2)]
    for _ in range(n_f):
        k = int(rng.integers(3, 7))
        r = [str(k)] + [str(int(i)) for i in rng.integers(0, n_v, k)]
        if face_extra:
            r.append(num(rng.random()) if face_extra == "float" else str(int(rng.integers(0, 200))))
        rows.append(r)
    if after:
        rows += [["2", "0", "1"] if after == "list" else ["7"] for _ in range(2)]
    at = int(rng.integers(len(rows)))
    last = n_v + 2 * before + n_f - 1  # the last face: its first index is planted on
    if oddity == "plus index":
        rows[last][1] = "+" + rows[last][1]
    elif oddity == "minus index":
        rows[last][1] = "-" + rows[last][1]
    elif oddity == "leading zeros":
        rows[last][1] = "0" * int(rng.integers(1, 25)) + rows[last][1]
    elif oddity == "long digits":
        rows[last][1] = draw(st.sampled_from(["1" * 19, "9" * 20, "1000000000000000000", "999999999999999999"]))
    elif oddity == "float index":
        rows[last][1] = draw(st.sampled_from(["1.0", "1e0", "0x1"]))
    elif oddity == "word":
        rows[at][0] = draw(st.sampled_from(["x", "1.2.3", "--1", "1,5", "1\x00", "1\xa0", "\x0c2"]))
    elif oddity == "nan":
        rows[int(rng.integers(n_v))][0] = draw(st.sampled_from(["nan", "inf", "-Infinity"]))
    elif oddity == "extra values":
        rows.append(["1", "2"])
    lines = [sep.join(r) for r in rows]
    if oddity == "split record":
        r = rows[at]
        cut = int(rng.integers(1, len(r))) if len(r) > 1 else 1
        lines[at] = sep.join(r[:cut]) + eol + sep.join(r[cut:])
    elif oddity == "joined records" and at + 1 < len(lines):
        lines[at : at + 2] = [lines[at] + sep + lines[at + 1]]
    elif oddity == "blank line":
        lines.insert(at, draw(st.sampled_from(["", " ", "\t"])))
    body = (sep if oddity == "one line" else eol).join(lines) + eol
    data = (eol.join(head) + eol + body).encode()
    if oddity == "truncated":
        data = data[: int(rng.integers(len(data) - len(body), len(data)))]
    return data


def parse(data: bytes, fast: bool):
    with pytest.MonkeyPatch.context() as m:
        if not fast:
            m.setattr(ply._AsciiBody, "_values_by_lines", lambda self, data, at: None)
        try:
            return ply.parse(data, "t.ply", Limits(units="warn"))
        except InputRejected as e:
            return e


@settings(max_examples=150, deadline=None)
@given(ply_files())
def test_line_fast_path_reads_what_the_token_reader_reads(data):
    """With the C++ scanner (where built) and without it: the same result all four ways."""
    results = []
    for off in scanner_modes():
        with scanner_off(off):
            results += [parse(data, True), parse(data, False)]
    for other in results[1:]:
        assert_same(other, results[0])


def test_line_fast_path_is_taken_on_common_files(monkeypatch):
    rng = np.random.default_rng(3)
    v = rng.uniform(-20, 20, (200, 3))
    f = rng.integers(0, 200, (300, 3))
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    taken = []
    real = ply._AsciiBody._values_by_lines

    def spy(self, data, at):
        out = real(self, data, at)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(ply._AsciiBody, "_values_by_lines", spy)
    for colors in (None, rng.integers(0, 256, (200, 4), dtype=np.uint8)):
        data = mesh_to_bytes(Mesh(v, f, colors), "ply", "ascii")
        for variant in (data, data.replace(b"\n", b"\r\n")):
            parsed = ply.parse(variant, "c.ply", Limits())
            assert np.array_equal(parsed.vertices, v) and np.array_equal(parsed.faces, f)
    assert taken == [True] * 4  # a silent fallback would hide here


@pytest.mark.parametrize("token", [b"x", b"1.5", b"+1", b"-1"])
def test_odd_face_tokens_take_the_token_reader(token):
    """What the integer call cannot read exactly is read (or refused) by the token-wise reader."""
    data = mesh_to_bytes(Mesh(np.eye(3) * 10, np.array([[0, 1, 2]])), "ply", "ascii")
    data = data[: data.rindex(b"\n3 ") + 1] + b"3 " + token + b" 1 2\n"
    assert_same(parse(data, True), parse(data, False))
