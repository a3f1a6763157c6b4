"""The vectorised text parsers against a plain reference, on randomly spelled files.

Random layouts a real writer may produce: number spellings (repr, %g, %e, %f, leading '+',
integers), separators (spaces, tabs, runs of them), line ends (LF, CRLF, CR only), blank lines,
polygon sizes 3-7, OBJ comments, negative indices and v/vt/vn corners, ASCII STL with several
solids, ASCII PLY records split across lines or all on one line. Expected values come from
Python's float() and a loop-based fan triangulation written here.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from occlutrace_compute.meshes import Limits, obj as objfmt, ply, stl

SPELL = ["{!r}", "{:g}", "{:.6e}", "{:.4f}", "{:+.3f}"]


@st.composite
def layouts(draw):
    n_v = draw(st.integers(3, 12))
    coords = draw(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=3 * n_v, max_size=3 * n_v))
    spell = draw(st.lists(st.sampled_from(SPELL), min_size=3 * n_v, max_size=3 * n_v))
    words = [s.format(c) for s, c in zip(spell, coords)]
    values = np.array([float(w) for w in words]).reshape(n_v, 3)
    sizes = draw(st.lists(st.integers(3, 7), min_size=1, max_size=8))
    polys = [draw(st.lists(st.integers(0, n_v - 1), min_size=k, max_size=k)) for k in sizes]
    sep = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return words, values, polys, sep, eol, draw(st.integers(0, 2**32))


def fan_reference(polys):
    return np.array([(p[0], p[j], p[j + 1]) for p in polys for j in range(1, len(p) - 1)], dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(layouts())
def test_obj_parser_matches_reference(layout):
    words, values, polys, sep, eol, seed = layout
    rng = np.random.default_rng(seed)
    lines = ["# header" if rng.random() < 0.5 else "", "o thing"]
    for i in range(len(values)):
        line = "v" + sep + sep.join(words[3 * i : 3 * i + 3])
        lines.append(line + (" # c" if rng.random() < 0.2 else ""))
    for p in polys:
        corners = []
        for c in p:
            style = rng.integers(3)
            ref = c + 1 if rng.random() < 0.5 else c - len(values)  # negative: relative to the end
            corners.append([f"{ref}", f"{ref}/1", f"{ref}//2"][style])
        lines.append("f" + sep + sep.join(corners))
        if rng.random() < 0.2:
            lines.append("")
    parsed = objfmt.parse(eol.join(lines).encode(), "t.obj", Limits())
    assert np.array_equal(parsed.vertices, values)
    assert np.array_equal(parsed.faces, fan_reference(polys))


@settings(max_examples=40, deadline=None)
@given(layouts(), st.booleans())
def test_ascii_ply_parser_matches_reference(layout, one_line):
    words, values, polys, sep, eol, _ = layout
    eol = "\n" if eol == "\r" else eol  # a PLY header ends its lines with LF or CRLF
    head = ["ply", "format ascii 1.0", f"element vertex {len(values)}", "property float x", "property float y",
            "property float z", f"element face {len(polys)}", "property list uchar int vertex_indices", "end_header"]  # fmt: skip
    rows = [sep.join(words[3 * i : 3 * i + 3]) for i in range(len(values))]
    rows += [sep.join(map(str, [len(p), *p])) for p in polys]
    body = (sep if one_line else eol).join(rows)
    parsed = ply.parse((eol.join(head) + eol + body + eol).encode(), "t.ply", Limits())
    assert np.array_equal(parsed.vertices, values)
    assert np.array_equal(parsed.faces, fan_reference(polys))


@settings(max_examples=40, deadline=None)
@given(layouts(), st.integers(1, 3))
def test_ascii_stl_parser_matches_reference(layout, solids):
    words, values, polys, sep, eol, _ = layout
    tris = fan_reference(polys)
    lines = []
    for s, part in enumerate(np.array_split(np.arange(len(tris)), solids)):
        lines.append(f"solid part{s}")
        for t in part:
            lines += [f"{sep}facet normal 0 0 0", f"{sep}{sep}outer loop"]
            lines += [f"{sep * 3}vertex{sep}" + sep.join(words[3 * c : 3 * c + 3]) for c in tris[t]]
            lines += [f"{sep}{sep}endloop", f"{sep}endfacet"]
        lines.append(f"endsolid part{s}")
    parsed = stl.parse_ascii(eol.join(lines).encode(), "t.stl", Limits())
    assert np.array_equal(parsed.vertices[parsed.faces], values[tris])
