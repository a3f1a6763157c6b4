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


# The building blocks of meshes/text.py against plain Python references (the fast paths added in
# issue 12: fastnumbers over chunks, run-length span masks, 8-byte keyword windows, line numbers
# counted from the breaks).

NUMBER_BYTES = "0123456789+-.eEinfatyINFATYxXpP_dD"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=40),
    st.lists(st.sampled_from(["{!r}", "{:.17g}", "{:e}", "{:.6f}", "{:+.3e}", "{:g}"]), min_size=40, max_size=40),
    st.integers(1, 64),
)
def test_parse_floats_is_float_over_chunks(values, spells, chunk):
    """Every spelling of every double reads back as Python's float() does, whatever the chunk size
    (tokens cut by chunk boundaries)."""
    import occlutrace_compute.meshes.text as text_mod

    words = [s.format(v) for s, v in zip(spells, values)]
    body = "  \n\t".join(words).encode()
    old = text_mod._CHUNK
    try:
        text_mod._CHUNK = chunk
        got = text_mod.parse_floats(body)
        counted = text_mod.parse_floats(body, len(words))  # straight into one array
        miscounted = text_mod.parse_floats(body, len(words) + 1)  # numpy's verdict: its own count
    finally:
        text_mod._CHUNK = old
    expect = np.array([float(w) for w in words], dtype=np.float64)
    assert got is not None and counted is not None and miscounted is not None
    assert np.array_equal(got, expect) and np.array_equal(counted, expect)
    assert len(miscounted) != len(words) + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(NUMBER_BYTES, min_size=1, max_size=8), min_size=1, max_size=5))
def test_parse_floats_verdict_is_numpys(tokens):
    """Odd tokens (nan, inf, '1.', '.5', '1e', '0x1p3', '1_0', ...): the fast path accepts and
    reads exactly what numpy's parser did before it, and refuses what numpy refused."""
    from occlutrace_compute.meshes import text as text_mod

    body = " ".join(tokens).encode()
    strict = text_mod._strict(body)
    got = text_mod.parse_floats(body)
    if strict is None or len(strict) != len(tokens):
        assert got is None or len(got) != len(tokens)
    else:
        assert got is not None
        assert np.array_equal(got, strict, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.data())
def test_tokens_lines_keys_and_masks_match_python(raw, data):
    from occlutrace_compute.meshes import text as text_mod

    buf = text_mod.as_array(raw)
    block, span_block = text_mod._BLOCK, text_mod._SPAN_BLOCK
    try:  # small blocks: every block boundary is crossed
        text_mod._BLOCK, text_mod._SPAN_BLOCK = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 4))
        t = text_mod.tokenize(buf)
        chosen = sorted(data.draw(st.sets(st.integers(0, max(len(t.start) - 1, 0)))) if len(t.start) else [])
        chosen = [i for i in chosen if i < len(t.start)]
        mask = text_mod.span_mask(len(buf), t.start[chosen], t.end[chosen])
    finally:
        text_mod._BLOCK, text_mod._SPAN_BLOCK = block, span_block
    words = raw.split()
    assert [raw[a:b] for a, b in zip(t.start.tolist(), t.end.tolist())] == words
    eol = b"\n" if b"\n" in raw else b"\r"
    assert t.line.tolist() == [raw[:a].count(eol) for a in t.start.tolist()]
    expect_keys = [int.from_bytes(w.ljust(8, b"\0"), "little") if len(w) <= 8 else 2**64 - 1 for w in words]
    assert text_mod.keys(buf, t.start, t.end).tolist() == expect_keys
    expect = np.zeros(len(raw), dtype=bool)
    for i in chosen:
        expect[t.start[i] : t.end[i]] = True
    assert np.array_equal(mask, expect)
