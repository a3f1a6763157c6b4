"""Wavefront OBJ: v (optionally with r g b [a] colours), f (polygons, v/vt/vn, negative indices).

Only vertex positions, colours and face corners are geometry. Everything else is reported as
metadata and never written back (sanitize re-serialises from the parsed arrays): comments
(whole-line and inline), o/g names, mtllib/usemtl, smoothing groups, a 'v' line's 4th value (w),
vt/vn/vp/l/p lines, the vt/vn indices in face corners, free-form statements. OBJ is text only, so
`encoding` is always ascii.

Parsing is vectorised over the whole buffer (meshes/text.py): no Python loop over lines, tokens
or polygons. Worst case for an n-byte file: time O(n log n) (sorted searches), memory ~14x the
file in token tables plus the triangles (polygons checked against the limits before
triangulating, see meshes/polygons.py).
"""

from __future__ import annotations

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import text
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, colors_to_uint8, printable
from occlutrace_compute.meshes.polygons import check_polygons, fan_triangulate
from occlutrace_compute.meshes.validate import check_counts

_KEYWORDS = ("v", "f", "vt", "vn", "vp", "l", "p", "o", "g", "s", "mtllib", "usemtl")
V, F = 1, 2
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


def parse(data: bytes, name: str, limits: Limits) -> Parsed:
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
    faces, f_meta = _faces(t, kind, f_lines, name, limits)
    return Parsed(vertices, faces, colors, metadata + w_meta + f_meta, warnings)


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
    # colours are floats 0..1 by convention; some writers use 0..255
    rgb = values[:, 3:6][np.isfinite(values[:, 3:6])]
    scale = 255.0 if rgb.size and rgb.max() > 1.0 else 1.0
    channels = [values[:, 3 + i] for i in range(values.shape[1] - 3)]
    if len(channels) == 4:  # alpha where a line gave one, opaque elsewhere
        channels[3] = np.where(np.isnan(channels[3]), scale, channels[3])
    return xyz, colors_to_uint8(channels, scale), [], meta


def _faces(t: text.Tokens, kind: np.ndarray, lines: np.ndarray, name: str, limits: Limits):
    """1-based (or negative, relative) corner indices to 0-based fan triangles."""
    if len(lines) == 0:
        return np.empty((0, 3), np.int64), []
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
    refs = vend < ce
    if refs.any():
        meta = [("obj.face_refs", f"{int(refs.sum())} face corners carry vt/vn indices, "
                 f"{int((ce - vend).sum())} bytes")]  # fmt: skip
    return fan_triangulate(idx, sizes, name, limits, "OBJ"), meta


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
        if len(lines) == 0 or word in ("v", "f"):
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


def write(mesh: Mesh, encoding: str, keep_alpha: bool = False) -> bytes:
    """'v x y z [r g b]' (colours as floats 0..1) and 'f a b c'; nothing else. Exports carry RGB
    only (7-value 'v' lines are not widely read); sanitize passes keep_alpha so that a file whose
    'v' lines gave an alpha keeps it ('v x y z r g b a', written only when some vertex is not opaque)."""
    rows = [f"v {x!r} {y!r} {z!r}" for x, y, z in mesh.vertices.tolist()]
    if mesh.vertex_colors is not None:
        alpha = keep_alpha and bool((mesh.vertex_colors[:, 3] != 255).any())
        channels = mesh.vertex_colors[:, : 4 if alpha else 3].astype(np.float64) / 255.0
        rows = [r + "".join(f" {c!r}" for c in cs) for r, cs in zip(rows, channels.tolist())]
    rows += [f"f {a} {b} {c}" for a, b, c in (mesh.faces + 1).tolist()]
    return ("\n".join(rows) + "\n").encode("ascii")
