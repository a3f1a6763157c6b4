"""Wavefront OBJ: v (optionally with r g b [a] colours), vt, f (polygons, v/vt/vn, negative indices).

Vertex positions, colours, face corners and texture coordinates (vt lines used by every face
corner as v/vt) are kept. UVs are kept PER VERTEX: where one vertex has different UVs at
different corners (a texture seam) it is split into one vertex per distinct (v, vt) pair, the
copies appended after the original vertices (done with one np.unique, no loop), so a file whose
UVs are already per vertex keeps its numbering exactly. The first `mtllib` names the MTL whose
map_Kd texture is loaded by meshes/texture.py. Everything else is reported as metadata and never
written back (sanitize re-serialises from the parsed arrays): comments (whole-line and inline),
o/g names, mtllib/usemtl names (ours replace them), smoothing groups, a 'v' line's 4th value (w),
vn/vp/l/p lines, vn indices in face corners (and vt ones when not every corner
has one), free-form statements. OBJ is text only, so `encoding` is always ascii.

Parsing is vectorised over the whole buffer (meshes/text.py): no Python loop over lines, tokens
or polygons. The layout nearly every writer uses ('v x y z' lines and 'f a b c' lines) is read
by parse_fast, which steps aside for anything else: with the C++ scanner (meshes/native.py: the
tokens, floats and indices without the GIL) any spacing and order, blank lines allowed; without
it, 'v' lines then 'f' lines by C-level passes over two blocks. Worst case for an n-byte file:
time O(n log n) (sorted searches), memory ~14x the file in token tables plus the triangles
(polygons checked against the limits before triangulating, see meshes/polygons.py); the
scanner's fast path ~16x at the smallest tokens ('f 1 2 3' lines), ~5x for typical files.
"""

from __future__ import annotations

import warnings

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import native, text
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, colors_to_uint8, printable
from occlutrace_compute.meshes.polygons import check_polygons, fan_triangulate
from occlutrace_compute.meshes.validate import check_counts

_KEYWORDS = ("v", "f", "vt", "vn", "vp", "l", "p", "o", "g", "s", "mtllib", "usemtl")
V, F, VT = 1, 2, 3
_NAMED = {"o": "obj.object_name", "g": "obj.group_name", "mtllib": "obj.mtllib", "usemtl": "obj.usemtl",
          "s": "obj.smoothing_group"}  # fmt: skip
_COUNTED = {"vt": "texture coordinate lines", "vn": "vertex normal lines", "vp": "parameter-space vertex lines",
            "l": "polyline lines", "p": "point lines"}  # fmt: skip
_CORNER_BYTES = np.zeros(256, dtype=bool)
_CORNER_BYTES[list(b"0123456789/-")] = True
_MAX_LISTED = 100  # verbatim entries per field; the rest are counted (bounds inspect's output)


def ranges(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges first[i] .. first[i] + lengths[i] - 1, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(first - offsets, lengths) + np.arange(total)


def _prepare(data: bytes) -> np.ndarray:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return text.as_array(data.replace(b"\\\r\n", b"   ").replace(b"\\\n", b"  "))  # line continuations


def _comments(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of every comment: from a line's first '#' to the line end."""
    hashes = np.flatnonzero(buf == 35)
    if len(hashes) == 0:
        return hashes, hashes
    breaks = text.line_breaks(buf)
    line = np.searchsorted(breaks, hashes)
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = line[1:] != line[:-1]
    hashes, line = hashes[first], line[first]
    ends = np.where(line < len(breaks), breaks[np.minimum(line, len(breaks) - 1)], len(buf))
    return hashes, ends


_MARK = b" \xff "  # stands for a line's keyword: no ASCII file holds 0xFF
_FACE_BYTES = b"0123456789 \r\nf"  # all the face block of parse_fast's layout may hold


def _longest_digits(block: bytes) -> int:
    """The longest run of ASCII digits in `block` (one numpy pass)."""
    others = np.flatnonzero(~text.DIGIT[text.as_array(block)])
    return int(np.diff(others, prepend=-1, append=len(block)).max()) - 1


def _rows(block: bytes, keyword: bytes, width: int) -> list[bytes] | None:
    """The tokens of `block`, lines that each read `keyword` + one space + `width` tokens (LF or
    CRLF ends, any spacing after the keyword), as one list (the keyword replaced by an 0xFF
    token); None when any line reads otherwise: the marker must be at every (width+1)-th place.
    C-level passes (replace, split, list.count), no Python per line."""
    lines = block.count(b"\n") + 1
    tokens = (b"\n" + block).replace(b"\n" + keyword + b" ", _MARK).split()
    if len(tokens) != (width + 1) * lines or tokens[0 :: width + 1].count(b"\xff") != lines:
        return None
    return tokens


def parse_fast(data: bytes, name: str, limits: Limits) -> Parsed | None:
    """parse's result for the layout nearly every writer uses (ours included): 'v x y z' lines
    (or 'v x y z r g b' on every line), then 'f a b c' lines of positive 1-based indices (one
    space before each), nothing else (no comment, 'vt', name or blank line), LF or CRLF line ends, whitespace at the
    end. None for anything else: parse then reads the file, or names what is wrong with it.

    The 'v' block by one replace and one split (each line's keyword becomes an 0xFF token, which
    must stand at every 4th (7th) place: as many values on every line as on the first), its
    values by fastnumbers (the values and the refusals of parse's fastnumbers pass); the 'f'
    block, once it is known to hold only digits, spaces, line ends and keywords (no sign, '/',
    comment...; runs of <= 18 digits, the token-wise integer reader's limit), by one numpy C
    integer parse in which each keyword became -1, which must stand at every 4th place. Worst
    case O(n) time; memory the 'v' token list (~45 bytes a token: ~20x the 'v' text at its
    smallest, 'v 1 2 3') and ~10x the 'f' text (the parsed integers; a digit table and the
    positions of the non-digits when an index has a leading zero), one block at a time.
    """
    if native.scanner() is not None:
        return _fast_tokens(data, limits)
    if text.fastnumbers is None or not data.startswith(b"v ") or not data.isascii() or b"\\" in data:
        return None
    body = data.rstrip()
    split = body.find(b"\nf ")
    if split < 0 or body.find(b"\nv", split) >= 0:
        return None
    f_block = body[split + 1 :]
    if f_block.translate(None, _FACE_BYTES):
        return None  # signs, slashes, letters...: parse reads them (and names what is wrong)
    v_block = body[:split]
    width = len(v_block.split(b"\n", 1)[0].split()) - 1  # 3 values a line, or 6 with colours
    v_tokens = _rows(v_block, b"v", width) if width in (3, 6) else None
    if v_tokens is None:
        return None
    n_v = len(v_tokens) // (width + 1)
    if n_v > limits.max_vertices:
        return None
    values = np.empty((width, n_v), dtype=np.float64)
    try:
        for d in range(width):
            text.fastnumbers.try_array(v_tokens[1 + d :: width + 1], values[d], **text.STRICT)
    except (ValueError, TypeError, OverflowError):
        return None
    del v_tokens
    n_f = f_block.count(b"\n") + 1
    if n_f > limits.max_faces or limits.max_polygon_corners < 3 or f_block.count(b" ") != 3 * n_f:
        return None  # (one space before each index: a larger polygon stops here, before any array)
    if (b" 0" in f_block or b"\r0" in f_block) and _longest_digits(f_block) > 18:
        return None  # leading zeros (a lone CR is whitespace too): parse refuses 19+ digit indices
    # each line's keyword becomes -1 (the block holds no other sign), read with the indices by
    # numpy's C integer parser: -1 at every 4th place proves 3 indices a line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy < 2.3 warns (and stops) where 2.3+ raises
            flat = np.fromstring((b"\n" + f_block).replace(b"\nf ", b" -1 "), dtype=np.int64, sep=" ")
    except (ValueError, OverflowError, DeprecationWarning):
        return None
    if len(flat) != 4 * n_f or np.any(flat[0::4] != -1) or flat.max() >= 10**18:
        return None  # (no leading zeros: 19+ digits are >= 10^18)
    faces = flat.reshape(n_f, 4)[:, 1:]
    del flat
    if n_f and faces.min() < 1:
        return None  # index 0: parse names it
    faces = faces - 1
    colors = _colors(values.T) if width == 6 else None
    return Parsed(np.ascontiguousarray(values[:3].T), faces, colors, [], [])


def _fast_tokens(data: bytes, limits: Limits) -> Parsed | None:
    """parse_fast by the C++ scanner (meshes/native.py): every token's [start, end) and whether
    it starts a line;
    then numpy checks that every non-blank line is 'v x y z' (or 'v x y z r g b' on every 'v'
    line) or 'f a b c', any spacing, any order, blank lines allowed (ASCII, no comment, no line
    continuation); the values by from_chars, the indices by the scanner's integer reader (1-18
    digits, >= 1: what parse reads as positive 1-based indices). What parse_exact gives for such
    a file, or None for anything else (parse then reads it, or names what is wrong). Worst case
    O(n) time; memory the token tables (9 bytes a token, at most one token per 2 bytes) and
    O(tokens) numpy temporaries.
    """
    if not data.isascii() or b"#" in data or b"\\" in data:
        return None
    found = native.tokens_and_line_starts(data, 10 if data.find(b"\n") >= 0 else 13)
    if found is None or len(found[0]) == 0:
        return None
    start, end, starts_line = found
    del found
    starts_line[0] = 1  # (the first token starts the first non-blank line)
    first = np.flatnonzero(starts_line)
    del starts_line
    empty = np.empty(0, start.dtype)
    t = text.Tokens(text.as_array(data), start, end, empty, first, np.diff(np.append(first, len(start))))
    first_keys = native.keys(data, start, end, t.first)
    if first_keys is None:
        return None
    is_v = first_keys == text.key("v")
    v_lines, f_lines = np.flatnonzero(is_v), np.flatnonzero(first_keys == text.key("f"))
    n_v, n_f = len(v_lines), len(f_lines)
    if n_v == 0 or n_f == 0 or n_v + n_f != len(t.first):
        return None
    if n_v > limits.max_vertices or n_f > limits.max_faces or limits.max_polygon_corners < 3:
        return None
    width = int(t.count[v_lines[0]]) - 1
    if width not in (3, 6) or np.any(t.count[v_lines] != width + 1) or np.any(t.count[f_lines] != 4):
        return None
    # the value tokens of each line by index (int32 below 2 GiB, as the token tables)
    small = start.dtype
    v_tok = (t.first[v_lines].astype(small)[:, None] + np.arange(1, width + 1, dtype=small)).ravel()
    values = native.floats(data, start, end, v_tok)
    del v_tok
    if values is None:
        return None
    f_tok = (t.first[f_lines].astype(small)[:, None] + np.arange(1, 4, dtype=small)).ravel()
    idx = native.integers(data, start, end, f_tok)
    del f_tok, t, start, end
    if idx is None or idx.min() < 1:
        return None  # 0, negative (relative) indices, slashes, signs...: parse reads them
    faces = (idx - 1).reshape(n_f, 3)
    values = values.reshape(n_v, width)
    colors = _colors(values) if width == 6 else None
    return Parsed(np.ascontiguousarray(values[:, :3]), faces, colors, [], [])


def parse(data: bytes, name: str, limits: Limits) -> Parsed:
    """Every OBJ this reader accepts, vectorised over the whole buffer (parse_fast first)."""
    fast = parse_fast(data, name, limits)
    if fast is not None:
        return fast
    return parse_exact(data, name, limits)


def parse_exact(data: bytes, name: str, limits: Limits) -> Parsed:
    buf = _prepare(data)
    c_start, c_end = _comments(buf)
    t = text.tokenize(buf, text.span_mask(len(buf), c_start, c_end) if len(c_start) else None)
    first_keys = text.keys(buf, t.start[t.first], t.end[t.first])
    kind = np.zeros(len(t.first), dtype=np.int8)
    for code, word in enumerate(_KEYWORDS, 1):
        kind[first_keys == text.key(word)] = code
    v_lines, f_lines = np.flatnonzero(kind == V), np.flatnonzero(kind == F)
    check_counts(name, len(v_lines), len(f_lines), limits)
    metadata = _metadata(t, kind, c_start, c_end)
    vertices, colors, warnings, w_meta = _vertices(t, v_lines, name)
    faces, corner_vt, f_meta, f_warn = _faces(t, kind, f_lines, name, limits)
    warnings = warnings + f_warn
    uv = None
    if corner_vt is not None:
        uvs = _texcoords(t, np.flatnonzero(kind == VT), name, limits)
        faces, vertices, colors, uv = split_by_uv(faces, corner_vt, vertices, colors, uvs, name)
    else:
        metadata += _counted(t, kind, VT, "vt", "texture coordinate lines")
    mtllib = np.flatnonzero((kind == _KEYWORDS.index("mtllib") + 1) & (t.count > 1))
    ref = t.line_text(int(mtllib[0]), 1) if len(mtllib) else None
    if ref is not None and uv is None:
        warnings = warnings + ["texture dropped: the faces carry no texture coordinates"]
        ref = None
    return Parsed(vertices, faces, colors, metadata + w_meta + f_meta, warnings, uv, ref)


def _counted(t: text.Tokens, kind: np.ndarray, code: int, word: str, what: str) -> list[tuple[str, str]]:
    lines = np.flatnonzero(kind == code)
    if len(lines) == 0:
        return []
    nbytes = int((t.end[t.first[lines] + t.count[lines] - 1] - t.start[t.first[lines]]).sum())
    return [(f"obj.{word}", f"{len(lines)} {what}, {nbytes} bytes")]


def _texcoords(t: text.Tokens, lines: np.ndarray, name: str, limits: Limits) -> np.ndarray:
    """(K, 2) float64 u, v of the vt lines (a missing v is 0; a 3rd value w is dropped)."""
    if len(lines) > limits.max_vertices * 3:
        raise InputRejected(name, f"too many texture coordinates: {len(lines)} > limit {limits.max_vertices * 3}")
    widths = t.count[lines] - 1
    if len(lines) and (widths.min() < 1 or widths.max() > 3):
        raise InputRejected(name, "corrupt OBJ: a 'vt' line holds no value or more than 3")
    uv = np.zeros((len(lines), 2))
    if len(lines) and widths.min() == widths.max():  # the usual file: one pass over all values
        vals = text.numbers(
            t.buf, t.start[ranges(t.first[lines] + 1, widths)], t.end[ranges(t.first[lines] + 1, widths)]
        )
        if vals is None:
            raise InputRejected(name, "corrupt OBJ: a 'vt' value is not a number")
        vals = vals.reshape(len(lines), -1)
        uv[:, : min(2, vals.shape[1])] = vals[:, :2]
        widths = np.zeros_like(widths)  # done: the loop below reads nothing
    for k in (0, 1):  # at most two passes, whatever the file
        has = widths > k
        if not has.any():
            continue
        tok = t.first[lines[has]] + 1 + k
        vals = text.numbers(t.buf, t.start[tok], t.end[tok])
        if vals is None:
            raise InputRejected(name, "corrupt OBJ: a 'vt' value is not a number")
        uv[has, k] = vals
    if not np.isfinite(uv).all():
        raise InputRejected(name, "corrupt OBJ: a 'vt' value is not finite")
    return uv


def split_by_uv(
    faces: np.ndarray,
    corner_vt: np.ndarray,
    vertices: np.ndarray,
    colors: np.ndarray | None,
    uvs: np.ndarray,
    name: str,
):
    """Per-vertex UVs from per-corner (v, vt) pairs: a vertex seen with k distinct vt gets k-1
    copies appended after the original vertices. faces, corner_vt (T, 3) 0-based.

    Worst case: one np.unique over the 3T corner pairs, O(T log T) time, ~5 int64 arrays of 3T.
    Returns (faces, vertices, colors, uv) with uv (N', 2)."""
    n_v, n_t = len(vertices), len(uvs)  # corner_vt is in range (checked in _faces)
    if faces.size == 0 or faces.min() < 0 or faces.max() >= n_v:
        return faces, vertices, colors, None  # validate names the bad face index
    pairs, inverse = np.unique(faces.ravel() * n_t + corner_vt.ravel(), return_inverse=True)
    pv, pt = pairs // n_t, pairs % n_t
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pv[1:] != pv[:-1]
    new = np.where(first, pv, n_v + np.cumsum(~first) - 1)
    extra = pv[~first]
    out_v = np.concatenate([vertices, vertices[extra]]) if len(extra) else vertices
    out_c = None if colors is None else (np.concatenate([colors, colors[extra]]) if len(extra) else colors)
    uv = np.zeros((len(out_v), 2))
    uv[new] = uvs[pt]
    return new[inverse.ravel()].reshape(-1, 3), out_v, out_c, uv


def _vertices(t: text.Tokens, lines: np.ndarray, name: str):
    if len(lines) == 0:
        return np.empty((0, 3)), None, [], []
    widths = t.count[lines] - 1
    bad = ~np.isin(widths, (3, 4, 6, 7))
    if bad.any():
        raise InputRejected(
            name, f"corrupt OBJ: a 'v' line holds {int(widths[np.argmax(bad)])} values (3, 4, 6 or 7 expected)"
        )
    tok = ranges(t.first[lines] + 1, widths)
    flat = text.numbers(t.buf, t.start[tok], t.end[tok])
    if flat is None:
        raise InputRejected(name, "corrupt OBJ: a 'v' value is not a number")
    meta = []
    w_lines = lines[widths == 4]
    if len(w_lines):
        w_tok = t.first[w_lines] + 4
        meta = [("obj.vertex_w", f"{len(w_lines)} 'v' lines carry a 4th value (w), "
                 f"{int((t.end[w_tok] - t.start[w_tok]).sum())} bytes")]  # fmt: skip
    kinds = np.unique(widths)
    if len(kinds) == 1:
        values = flat.reshape(len(lines), int(kinds[0]))
    else:
        values = np.full((len(lines), 7), np.nan)
        rows = np.repeat(np.arange(len(lines)), widths)
        values[rows, np.arange(len(flat)) - np.repeat(np.cumsum(widths) - widths, widths)] = flat
    xyz = np.ascontiguousarray(values[:, :3])
    has_color = (widths == 6) | (widths == 7)
    if not has_color.any():
        return xyz, None, [], meta
    if not has_color.all():
        return xyz, None, ["vertex colours dropped: only some 'v' lines carry them"], meta
    return xyz, _colors(values), [], meta


def _colors(values: np.ndarray) -> np.ndarray:
    """(N, 4) uint8 colours of (N, 6 or 7) 'v' values (x y z r g b [a], NaN for a missing a)."""
    # colours are floats 0..1 by convention; some writers use 0..255
    rgb = values[:, 3:6][np.isfinite(values[:, 3:6])]
    scale = 255.0 if rgb.size and rgb.max() > 1.0 else 1.0
    channels = [values[:, 3 + i] for i in range(values.shape[1] - 3)]
    if len(channels) == 4:  # alpha where a line gave one, opaque elsewhere
        channels[3] = np.where(np.isnan(channels[3]), scale, channels[3])
    return colors_to_uint8(channels, scale)


def _faces(t: text.Tokens, kind: np.ndarray, lines: np.ndarray, name: str, limits: Limits):
    """1-based (or negative, relative) corner indices to 0-based fan triangles."""
    if len(lines) == 0:
        return np.empty((0, 3), np.int64), None, [], []
    sizes = t.count[lines] - 1
    if sizes.min() < 3:
        raise InputRejected(name, f"corrupt OBJ: an 'f' line with {int(sizes.min())} corners")
    check_polygons(sizes, name, limits, "OBJ")
    buf = t.buf
    tok = ranges(t.first[lines] + 1, sizes)
    cs, ce = t.start[tok], t.end[tok]
    del tok
    inside = text.span_mask(len(buf), cs, ce)
    if np.any(inside & ~_CORNER_BYTES[buf]) or np.any(buf[cs] == 47):
        raise InputRejected(name, "corrupt OBJ: an 'f' index is not an integer")
    slashes = np.flatnonzero(buf == 47)  # few or none: counted per token by two sorted searches
    n_slash = np.searchsorted(slashes, ce) - np.searchsorted(slashes, cs)
    minus = np.flatnonzero(inside & (buf == 45))
    del inside
    if len(minus):
        after = np.minimum(minus + 1, len(buf) - 1)
        starts_token = np.isin(minus, cs) | (buf[np.maximum(minus - 1, 0)] == 47)
        if not (starts_token.all() and text.DIGIT[buf[after]].all() and (minus + 1 < len(buf)).all()):
            raise InputRejected(name, "corrupt OBJ: an 'f' index is not an integer")
    if n_slash.max() > 2:
        raise InputRejected(name, "corrupt OBJ: an 'f' corner has more than 3 parts")
    first_slash = slashes[np.minimum(np.searchsorted(slashes, cs), len(slashes) - 1)] if len(slashes) else ce
    vend = np.where((first_slash > cs) & (first_slash < ce), first_slash, ce)
    if (vend - cs - (buf[cs] == 45)).max() > 18:  # >= 10**18: beyond any vertex count
        raise InputRejected(name, "face index out of range: beyond 64-bit integers")
    idx = text.whole_numbers(buf, cs, vend)
    if idx is None:
        raise InputRejected(name, "corrupt OBJ: an 'f' index is not an integer")
    if (idx == 0).any():
        raise InputRejected(name, "face index out of range: 0 (OBJ indices start at 1)")
    if (idx < 0).any():  # relative to the vertices defined so far
        defined = np.cumsum(kind == V)[lines]
        idx = np.where(idx > 0, idx - 1, np.repeat(defined, sizes) + idx)
    else:
        idx -= 1
    meta = []
    vt = _corner_vt(buf, slashes, cs, ce, vend, n_slash, kind, lines, sizes, name)
    warn = []
    if vt is not None and vt.size and (vt.min() < 0 or vt.max() >= int((kind == VT).sum())):
        bad = int(vt.min() if vt.min() < 0 else vt.max()) + 1
        warn, vt = (
            [f"texture coordinates dropped: a face corner names vt {bad}, the file has {int((kind == VT).sum())}"],
            None,
        )
    vt_end = (
        vend
        if vt is None
        else np.where(n_slash == 2, slashes[np.minimum(np.searchsorted(slashes, cs) + 1, len(slashes) - 1)], ce)
    )
    refs = vt_end < ce
    if refs.any():
        meta = [("obj.face_refs", f"{int(refs.sum())} face corners carry {'vn' if vt is not None else 'vt/vn'} indices, "
                 f"{int((ce - vt_end).sum())} bytes")]  # fmt: skip
    tri = fan_triangulate(idx, sizes, name, limits, "OBJ")
    return tri, (None if vt is None else fan_triangulate(vt, sizes, name, limits, "OBJ")), meta, warn


def _corner_vt(buf, slashes, cs, ce, vend, n_slash, kind, lines, sizes, name) -> np.ndarray | None:
    """0-based vt index of every corner when every corner has one (v/vt or v/vt/vn), else None."""
    if len(slashes) == 0 or (n_slash == 0).any():
        return None
    a = vend + 1
    second = np.where(n_slash == 2, slashes[np.minimum(np.searchsorted(slashes, cs) + 1, len(slashes) - 1)], ce)
    if (second <= a).any():  # v//vn: no texture coordinate at some corner
        return None
    if (second - a - (buf[a] == 45)).max() > 18:
        raise InputRejected(name, "texture coordinate index out of range: beyond 64-bit integers")
    vt = text.whole_numbers(buf, a, second)
    if vt is None:
        raise InputRejected(name, "corrupt OBJ: a 'vt' index in an 'f' corner is not an integer")
    if (vt == 0).any():
        raise InputRejected(name, "texture coordinate index out of range: 0 (OBJ indices start at 1)")
    if (vt < 0).any():
        defined = np.cumsum(kind == VT)[lines]
        return np.where(vt > 0, vt - 1, np.repeat(defined, sizes) + vt)
    return vt - 1


def _metadata(t: text.Tokens, kind: np.ndarray, c_start: np.ndarray, c_end: np.ndarray) -> list[tuple[str, str]]:
    """Every non-geometry line and comment, verbatim up to _MAX_LISTED per field, then counted."""
    metadata: list[tuple[str, str]] = []
    if len(c_start):
        shown = [printable(t.text(int(a) + 1, int(b))) for a, b in zip(c_start[:_MAX_LISTED], c_end[:_MAX_LISTED])]
        metadata += [("obj.comment", s) for s in shown if s]
        if len(c_start) > _MAX_LISTED:
            more = int((c_end - c_start)[_MAX_LISTED:].sum())
            metadata.append(("obj.comment", f"{len(c_start) - _MAX_LISTED} more comments, {more} bytes"))
    for code, word in enumerate(_KEYWORDS, 1):
        lines = np.flatnonzero(kind == code)
        if len(lines) == 0 or word in ("v", "f", "vt"):
            continue
        nbytes = int((t.end[t.first[lines] + t.count[lines] - 1] - t.start[t.first[lines]]).sum())
        if word in _COUNTED:
            metadata.append((f"obj.{word}", f"{len(lines)} {_COUNTED[word]}, {nbytes} bytes"))
            continue
        named = lines[t.count[lines] > 1]
        metadata += [(_NAMED[word], printable(t.line_text(int(i), 1))) for i in named[:_MAX_LISTED]]
        if len(named) > _MAX_LISTED:
            metadata.append((_NAMED[word], f"{len(named) - _MAX_LISTED} more '{word}' lines, {nbytes} bytes in all"))
    other = np.flatnonzero(kind == 0)
    metadata += [("obj.statement", printable(t.line_text(int(i)), 200)) for i in other[:_MAX_LISTED]]
    if len(other) > _MAX_LISTED:
        metadata.append(("obj.statement", f"{len(other) - _MAX_LISTED} more statements"))
    return metadata


def write(mesh: Mesh, encoding: str, keep_alpha: bool = False, ref: str | None = None) -> bytes:
    """'v x y z [r g b]' (colours as floats 0..1), 'vt u v' and 'f a b c' (or 'f a/a b/b c/c'
    with UVs); with UVs and `ref`, 'mtllib <ref>' and 'usemtl texture' (names given by the caller:
    meshes/texture.py writes that MTL). Nothing else. Exports carry RGB only (7-value 'v' lines
    are not widely read); sanitize passes keep_alpha so that a file whose 'v' lines gave an alpha
    keeps it ('v x y z r g b a', written only when some vertex is not opaque)."""
    rows = [f"v {x!r} {y!r} {z!r}" for x, y, z in mesh.vertices.tolist()]
    if mesh.vertex_colors is not None:
        alpha = keep_alpha and bool((mesh.vertex_colors[:, 3] != 255).any())
        channels = mesh.vertex_colors[:, : 4 if alpha else 3].astype(np.float64) / 255.0
        rows = [r + "".join(f" {c!r}" for c in cs) for r, cs in zip(rows, channels.tolist())]
    if ref is not None and mesh.uv is not None:
        rows = [f"mtllib {ref}", "usemtl texture"] + rows
    if mesh.uv is not None:
        rows += [f"vt {u!r} {v!r}" for u, v in mesh.uv.tolist()]
        rows += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (mesh.faces + 1).tolist()]
    else:
        rows += [f"f {a} {b} {c}" for a, b, c in (mesh.faces + 1).tolist()]
    return ("\n".join(rows) + "\n").encode("ascii")
