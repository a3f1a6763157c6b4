"""The ASCII STL fast path (stl.parse_ascii_fast) against the exact parser (parse_ascii_exact).

The fast path must give exactly the exact parser's Parsed (same vertex and face arrays, same
metadata, same warnings) whenever it answers, and answer None (so that the exact parser reads
the file or names what is wrong with it) on anything else. Files are drawn at random: number
spellings (repr, %g, %e, %E, signs, integers, 30 decimals, '5.', '.5', the same vertex spelled
differently at different corners), indentation and spacing, LF/CRLF/CR, solid names holding digits and keywords, random
sizes, shared and unshared corners, foreign and zero normals; then one defect or oddity may be
planted: a blank or foreign line, a keyword tail, a wrong number count (on one line, or a
number moved from one line to another, which keeps the file's count; a line split in two or
two lines joined, which keep every token in order), a non-number, nan/inf,
several solids, a truncation, a non-ASCII byte, uneven indentation, a face limit.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings, strategies as st

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh, load_mesh, mesh_to_bytes, stl
from tests.parse_equivalence import assert_same, damaged, fast_or_exact

SPELL = ["{!r}", "{:g}", "{:.6e}", "{:.4f}", "{:+.3f}", "{:.3E}", "{:+.7e}", "{:.9g}", "{:.30f}", "{:.0f}.", "no zero"]
NAMES = ["", "1", "part 2", "facet", "endfacet 3", "vertex 1 2 3", "solid", "endsolid x", "12e3 4",
         "a\tfacet normal 0 0 1", "outer loop", "endloop endfacet", "x\x0by", "a\x00b 7"]  # fmt: skip
WHITE = ["", " ", "  ", "\t", "    ", " \t"]
DEFECTS = ["none"] * 6 + [
    "blank line", "foreign line", "keyword tail", "extra number", "missing number", "bad number",
    "nan", "inf", "two solids", "truncated", "non-ascii", "uneven indent", "face limit", "trailing blank lines",
    "tail after endsolid", "no endsolid", "facet normal words", "moved number", "moved number",
    "split line", "split line", "joined lines",
]  # fmt: skip
NAME_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@st.composite
def stl_files(draw) -> tuple[bytes, str, Limits]:
    n_v = draw(st.integers(3, 9))
    coords = draw(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=3 * n_v, max_size=3 * n_v))
    v = np.array(coords).reshape(n_v, 3)
    n_f = draw(st.integers(1, 10))
    faces = [draw(st.lists(st.integers(0, n_v - 1), min_size=3, max_size=3)) for _ in range(n_f)]
    per_vertex = draw(st.booleans())  # every corner of a vertex spelled alike (a writer), or not
    spell_v = [draw(st.sampled_from(SPELL)) for _ in range(n_v)]
    indent = {k: draw(st.sampled_from(WHITE)) for k in ("facet", "outer", "vertex", "endloop", "endfacet")}
    sep = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
    eol = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    name = draw(st.one_of(st.sampled_from(NAMES), NAME_TEXT))
    end_name = draw(st.one_of(st.just(""), st.just(name), st.sampled_from(NAMES)))
    normal_kind = draw(st.sampled_from(["geometric", "zero", "random"]))
    defect = draw(st.sampled_from(DEFECTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def number(x: float, spelling: str) -> str:
        if spelling == "no zero":  # '.5', '-.25': no digit before the point
            return re.sub(r"^(-?)0\.", r"\1.", repr(float(x)))
        return spelling.format(float(x))

    tri = v[np.array(faces)]
    if normal_kind == "geometric":
        normals = stl.geometric_normals(tri)
    elif normal_kind == "zero":
        normals = np.zeros((n_f, 3))
    else:
        normals = rng.normal(size=(n_f, 3))
    lines = [f"solid {name}".rstrip() if name or rng.random() < 0.5 else "solid"]
    for i, f in enumerate(faces):
        lines.append(indent["facet"] + "facet" + sep + "normal" + sep + sep.join(f"{x:.7g}" for x in normals[i]))
        lines.append(indent["outer"] + "outer" + sep + "loop")
        for c in f:
            spells = [spell_v[c]] * 3 if per_vertex else [SPELL[int(rng.integers(len(SPELL)))] for _ in range(3)]
            lines.append(indent["vertex"] + "vertex" + sep + sep.join(number(x, s) for x, s in zip(v[c], spells)))
        lines.append(indent["endloop"] + "endloop")
        lines.append(indent["endfacet"] + "endfacet")
    lines.append(f"endsolid {end_name}".rstrip())
    body = lines[1:-1]
    at = int(rng.integers(len(body)))
    limits = Limits()
    if defect == "blank line":
        body.insert(at, draw(st.sampled_from(WHITE)))
    elif defect == "foreign line":
        body.insert(at, draw(st.sampled_from(["color 1 2 3", "# comment", "1 2 3", "normal"])))
    elif defect == "keyword tail":
        k = int(rng.choice([j for j, line in enumerate(body) if "vertex" not in line]))
        body[k] += sep + draw(st.sampled_from(["x", "1", "loop", "endfacet"]))
    elif defect in ("extra number", "missing number", "bad number", "nan", "inf"):
        k = int(rng.choice([j for j, line in enumerate(body) if "vertex" in line or "facet" in line.split()[:1]]))
        words = body[k].split(sep)
        if defect == "extra number":
            words.append("1")
        elif defect == "missing number":
            words.pop()
        else:
            words[-1] = {"bad number": draw(st.sampled_from(["1.2.3", "0x1", "1,5", "e5", "1e", "--1", "1_0", "1\x00", "\xff"])),
                         "nan": draw(st.sampled_from(["nan", "NaN", "-nan"])),
                         "inf": draw(st.sampled_from(["inf", "-Infinity", "1e999"]))}[defect]  # fmt: skip
        body[k] = sep.join(words)
    elif defect == "moved number":  # one number line one short, another one long: same count
        numbered = [j for j, line in enumerate(body) if "vertex" in line or "facet" in line.split()[:1]]
        a, b = (int(k) for k in rng.choice(numbered, 2, replace=False))
        words = body[a].split(sep)
        body[b] += sep + words.pop()
        body[a] = sep.join(words)
    elif defect == "split line":  # a line of 2+ words broken in two, every token kept in order
        k = int(rng.choice([j for j, line in enumerate(body) if len(line.split()) > 1]))
        words = body[k].split()
        cut = int(rng.integers(1, len(words)))
        body[k : k + 1] = [" ".join(words[:cut]), " ".join(words[cut:])]
    elif defect == "joined lines" and at + 1 < len(body):  # two lines as one, tokens in order
        body[at : at + 2] = [body[at] + sep + body[at + 1].lstrip()]
    elif defect == "uneven indent":
        k = at
        body[k] = draw(st.sampled_from(WHITE + ["   "])) + body[k].lstrip()
    elif defect == "facet normal words":
        k = 7 * int(rng.integers(n_f))
        body[k] = body[k].replace("normal", draw(st.sampled_from(["norma", "normals", "Normal"])), 1)
    elif defect == "face limit":
        limits = Limits(max_faces=int(rng.integers(1, n_f + 1)))
    lines = [lines[0], *body, lines[-1]]
    if defect == "two solids":
        lines = lines + [f"solid {end_name}", *body, "endsolid"]
    if defect == "no endsolid":
        lines = lines[:-1]
    text = eol.join(lines) + draw(st.sampled_from(["", eol, eol + eol, " ", eol + "  " + eol]))
    if defect == "trailing blank lines":
        text += eol * int(rng.integers(1, 40))
    if defect == "tail after endsolid":
        text += draw(st.sampled_from(["x", "solid", "facet normal 0 0 1", "endsolid"]))
    data = text.encode("latin-1")  # a planted "\xff" (the fast path's line marker) is byte 0xFF
    return damaged(data, defect, rng), defect, limits


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stl_files())
def test_fast_path_gives_the_exact_parsers_result_or_steps_aside(case):
    data, defect, limits = case
    exact, fast = fast_or_exact(stl.parse_ascii_exact, stl.parse_ascii_fast, stl.parse_ascii, data, "t.stl", limits)
    text = data.decode("latin-1")
    plain = defect in ("none", "trailing blank lines") and "\r" not in text.replace("\r\n", "")
    short_tail = defect == "none" or text.count("\n") - text.rstrip().count("\n") <= stl._BLANK_TAIL
    if plain and short_tail and not isinstance(exact, InputRejected) and "\n" in text:
        assert fast is not None, data[:300]  # the common layout: the fast path must not step aside


def writer_layouts() -> dict[str, bytes]:
    """Our writer's file and hand-written exporter layouts (indented, %e numbers, CRLF)."""
    s = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    mesh = Mesh(s.vertices.astype(np.float32).astype(np.float64), s.faces.astype(np.int64))
    tri = mesh.vertices[mesh.faces]
    normals = stl.geometric_normals(tri)
    out = {"ours": mesh_to_bytes(mesh, "stl", "ascii")}
    for label, eol, fmt in (("indented %e CRLF", "\r\n", "{:e}"), ("indented %.6f LF", "\n", "{:.6f}")):
        rows = ["solid Mesh 1 exported by Writer 2.0"]
        for n, t in zip(normals, tri):
            rows.append("  facet normal " + " ".join(fmt.format(x) for x in n))
            rows.append("    outer loop")
            rows += ["      vertex " + " ".join(fmt.format(x) for x in p) for p in t]
            rows += ["    endloop", "  endfacet"]
        rows.append("endsolid Mesh 1 exported by Writer 2.0")
        out[label] = (eol.join(rows) + eol).encode()
    return out


@pytest.mark.parametrize("label", ["ours", "indented %e CRLF", "indented %.6f LF"])
def test_fast_path_is_taken_on_common_files(label):
    data = writer_layouts()[label]
    fast = stl.parse_ascii_fast(data, "w.stl", Limits())
    assert fast is not None  # a silent fallback would hide here
    assert_same(fast, stl.parse_ascii_exact(data, "w.stl", Limits()))
    assert len(fast.vertices) == 642 and len(fast.faces) == 1280
    if label != "ours":
        assert ("stl.solid_name", "Mesh 1 exported by Writer 2.0") in fast.metadata


def test_fast_path_welds_corners_spelled_differently():
    """The same coordinates written differently at two corners ('1' and '1.0', '1e1' and '10')
    are one vertex, as the exact parser's float merge makes them; -0 and 0 stay apart."""
    rows = ["solid"]
    spells = [("0", "0", "0"), ("10", "0", "0"), ("0", "10", "0"), ("0.0", "0e0", "0"), ("1e1", "0", "0.00"),
              ("0", "0", "10"), ("-0", "0", "0")]  # fmt: skip
    for tri in ((0, 1, 2), (3, 4, 5), (6, 1, 5)):
        rows += ["facet normal 0 0 0", "outer loop"]
        rows += ["vertex " + " ".join(spells[c]) for c in tri]
        rows += ["endloop", "endfacet"]
    data = ("\n".join(rows) + "\nendsolid\n").encode()
    fast = stl.parse_ascii_fast(data, "w.stl", Limits())
    assert fast is not None
    assert_same(fast, stl.parse_ascii_exact(data, "w.stl", Limits()))
    assert len(fast.vertices) == 5 and fast.faces.tolist() == [[0, 1, 2], [0, 1, 3], [4, 1, 3]]


def test_load_mesh_rejects_nan_and_names_bad_tokens_as_before():
    data = writer_layouts()["ours"]
    first = data.index(b"vertex ") + len(b"vertex ")
    nan = data[:first] + b"nan" + data[data.index(b" ", first) :]
    with pytest.raises(InputRejected, match="non-finite coordinates"):
        load_mesh(data=nan, name="n.stl")
    bad = data[:first] + b"1.2.3" + data[data.index(b" ", first) :]
    with pytest.raises(InputRejected, match="not a number"):
        load_mesh(data=bad, name="b.stl")


def test_a_line_split_in_one_facet_of_many_is_not_read_by_the_fast_path():
    """Every token in place, one vertex line broken in two in the second facet: the exact parser
    refuses it, so the fast path must step aside (a check of line breaks that looked at whether
    ANY facet had its break in place let it through)."""
    facet = "facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\n"
    for broken in ("vertex 1 0\n0", "outer\nloop", "facet normal 0\n0 1", "endloop endfacet"):
        old = "endloop\nendfacet" if broken == "endloop endfacet" else broken.replace("\n", " ")
        data = ("solid\n" + facet * 3 + facet.replace(old, broken) + facet + "endsolid\n").encode()
        assert stl.parse_ascii_fast(data, "s.stl", Limits()) is None, broken
        with pytest.raises(InputRejected):
            stl.parse_ascii_exact(data, "s.stl", Limits())


def test_a_non_ascii_byte_anywhere_sends_the_file_to_the_exact_parser():
    """The scanner's fast path checks ASCII token by token (names, keywords, numbers), not the
    whole file first: a byte 128-255 planted at every offset of a small file is still refused
    with the exact parser's error, whichever token (or gap) it lands in."""
    facet = "facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\n"
    data = ("solid part 1\n" + facet * 2 + "endsolid part 1\n").encode()
    for at in range(len(data) + 1):
        for byte in (b"\xe9", b"\xff"):
            bad = data[:at] + byte + data[at:]
            assert stl.parse_ascii_fast(bad, "n.stl", Limits()) is None, at
            with pytest.raises(InputRejected, match="non-ASCII byte"):
                stl.parse_ascii(bad, "n.stl", Limits())
