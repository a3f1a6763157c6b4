"""STL: binary (80-byte header, uint32 count, 50-byte records) and ASCII (solid ... endsolid).

STL has no shared vertices; corners are merged by exact equality so vertex counts mean something.
Binary coordinates are float32 (exact in float64); ASCII ones are read as float64 as written.

Only the corners are geometry. Everything else a file can carry is reported as metadata and never
written back (sanitize re-serialises from the parsed corners): the binary header, facet normals
that are not the facet's geometric normal (12 bytes a facet: any bytes fit), the 2 attribute bytes
(no colour convention is read, so they are written as zero), bytes after the last record; ASCII
solid names, text after any keyword (`facet normal x y z <text>`, `outer loop <text>`,
`endloop <text>`, `endfacet <text>`, `endsolid <text>`) and lines that are not STL.

Binary: with the C++ scanner, one pass over the records welds the corners, counts foreign normals
and attribute bytes and finds validate's degenerate faces (native.stl_binary, no GIL: ~0.04 s
CPU to load 310k records, like binary PLY); without it, numpy passes over record columns
(~0.17 s), which give the same result.

ASCII: parse_ascii_fast reads the layout nearly every writer uses (one solid, facets of 7 lines,
one per kind, no keyword tails). With the C++ scanner (meshes/native.py, _textscan.cpp: tokens
and lines in one pass, corners welded as text by a hash table so that ~1/6 of the coordinates are
converted, std::from_chars, all without the GIL, so two files parse at once) the token layout is
checked in numpy; without it, by C-level passes over the lines (bytes.split, list.count, a dict
that welds corners as text, fastnumbers). Anything else, and every refusal, goes to
parse_ascii_exact, vectorised over the whole buffer (see meshes/text.py; it uses the scanner too
where built). No path has a Python loop over lines. The fast path gives exactly the exact
parser's result (tests/test_meshes_stl_fast.py, with and without the scanner). Worst case O(n)
time; memory on the fast path the token tables (9 bytes a token: ~0.7x a typical file, at
most 4.5x) or without the scanner the line objects (~3x the file), ~14x (token tables) on the exact
one, then the merge (~10 words a corner; bench/bench_parse_memory.py: ~5x the input in all).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import native, text
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.merge import merge_exact
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, printable, report
from occlutrace_compute.meshes.validate import check_counts

RECORD = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
_KEYWORDS = ("solid", "facet", "outer", "vertex", "endloop", "endfacet", "endsolid")
SOLID, FACET, OUTER, VERTEX, ENDLOOP, ENDFACET, ENDSOLID = range(1, 8)
_BLOCK = (OUTER, VERTEX, VERTEX, VERTEX, ENDLOOP, ENDFACET)  # the lines after each 'facet'
NORMAL_TOLERANCE = 1e-4  # per component: float32 rounding of any exporter's normal stays far below


def _binary_count(data: bytes, name: str, limits: Limits) -> int:
    """The declared triangle count, checked against the file size and limits before any array."""
    if len(data) < 84:
        raise InputRejected(name, f"truncated binary STL: {len(data)} bytes, the header alone is 84")
    (n,) = struct.unpack_from("<I", data, 80)
    if 84 + 50 * n > len(data):
        raise InputRejected(
            name,
            f"truncated or corrupt binary STL: header declares {n} triangles "
            f"({84 + 50 * n} bytes) but the file has {len(data)} bytes",
        )
    check_counts(name, 0, n, limits)
    return n


def geometric_normals(tri: np.ndarray) -> np.ndarray:
    """(M, 3) unit normals of (M, 3, 3) triangles (right-hand rule), zero for degenerate ones."""
    with np.errstate(all="ignore"):
        tri = tri.astype(np.float64, copy=False)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.where(length > 0, n / np.where(length > 0, length, 1), 0.0)


def _foreign_normals(stored: np.ndarray, tri: np.ndarray) -> int:
    """How many stored (M, 3) normals are neither zero nor the geometric normal of the (M, 3, 3)
    triangles (up to rounding)."""
    return _foreign_count([stored[:, d] for d in range(3)], lambda c, d: tri[:, c, d])


def _normal_columns(corner: Callable[[int, int], np.ndarray]) -> list[np.ndarray]:
    """geometric_normals' arithmetic one coordinate column at a time, from corner(c, d) (coordinate
    d of every triangle's corner c): the 3 float64 columns of the unit normals, zero for degenerate
    triangles (contiguous 1-D passes: ~3x faster than np.cross and row-wise norms on strided rows)."""
    with np.errstate(all="ignore"):
        a = [corner(0, d).astype(np.float64) for d in range(3)]
        u = [corner(1, d) - a[d] for d in range(3)]
        w = [corner(2, d) - a[d] for d in range(3)]
        n = [u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]]
        length = np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
        solid = length > 0
        length[~solid] = 1.0
        return [np.where(solid, n[d] / length, 0.0) for d in range(3)]


def _foreign_count(stored: list[np.ndarray], corner: Callable[[int, int], np.ndarray]) -> int:
    """_foreign_normals from the 3 stored normal components and corner(c, d), coordinate d of
    every triangle's corner c: geometric_normals' arithmetic one coordinate column at a time
    (contiguous 1-D passes: ~3x faster than np.cross and row-wise norms on strided records)."""
    geometric = _normal_columns(corner)
    with np.errstate(all="ignore"):
        far = np.zeros(len(geometric[0]), dtype=bool)
        zero = np.ones(len(geometric[0]), dtype=bool)
        for d in range(3):
            s = stored[d].astype(np.float64)
            g = geometric[d]
            far |= ~(np.abs(s - g) <= NORMAL_TOLERANCE)  # NaN: far, as in the row-wise max
            zero &= s == 0
    return int(np.count_nonzero(far & ~zero))


def parse_binary(data: bytes, name: str, limits: Limits) -> Parsed:
    """A binary STL's corners welded into vertices and faces, and what else it carries as metadata.

    With the C++ scanner, one pass over the records (native.stl_binary: the weld, the foreign
    normal count, the attribute count and validate's degenerate-face mask, all without the GIL;
    ~0.03 s CPU for 310k records against ~0.16 s for the numpy path, bench/RESULTS.md, sixth
    session); without it or where it gives up (a hostile file), the numpy path (_foreign_normals,
    _weld_binary), which gives the same Parsed (tests/test_stl_native.py). Time O(n) (the numpy
    path's fallback merge O(n log n)); memory a few times the file on either path."""
    n = _binary_count(data, name, limits)
    metadata = []
    header = printable(data[:80].rstrip(b"\x00 ").decode("latin-1"))
    if header:
        metadata.append(("stl.header", header))
    one_pass = native.stl_binary(data, n, NORMAL_TOLERANCE) if n else None
    keep: np.ndarray | None = None
    if one_pass is not None:
        vertices, faces, keep = one_pass.vertices, one_pass.faces, one_pass.keep
        foreign, tagged = one_pass.foreign, one_pass.tagged
    else:
        rec = np.frombuffer(data, RECORD, count=n, offset=84)
        foreign = _foreign_normals(rec["normal"], rec["v"])
        tagged = int(np.count_nonzero(rec["attr"]))
        vertices, faces = _weld_binary(data, rec["v"].reshape(-1, 3))
        with np.errstate(invalid="ignore"):  # signalling NaNs: rejected by validation, not here
            vertices = vertices.astype(np.float64)
        faces = faces.reshape(-1, 3)
    if foreign:
        metadata.append(
            (
                "stl.normal_bytes",
                f"{foreign} of {n} facet normals are not the facet's geometric normal "
                f"({12 * foreign} bytes), replaced by computed normals",
            )
        )
    if tagged:
        metadata.append(
            ("stl.attribute_bytes", f"{tagged} of {n} triangles carry attribute bytes ({2 * tagged} bytes), zeroed")
        )
    warnings = []
    extra = len(data) - 84 - 50 * n
    if extra:
        metadata.append(("stl.trailing_bytes", f"{extra} bytes after the last triangle"))
        warnings.append(f"ignored {extra} bytes after the {n} declared triangles")
    return Parsed(vertices, faces, None, metadata, warnings, keep=keep)


def _weld_binary(data: bytes, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """merge_exact(corners) for the (3n, 3) float32 corners of a binary STL's n records: the
    distinct corners (bitwise) in order of first appearance and each corner's index into them.
    (parse_binary's numpy path: native.stl_binary's one pass does this where it runs.)

    By the C++ scanner's hash table over each corner's 12 bytes in `data` (native.first_equal,
    GIL released, bounded probes and compares; ~2x faster than merge_exact's sort, bench/RESULTS.md)
    when it is built; bytes equal exactly when the float32 bits do, so the answer is merge_exact's.
    merge_exact when the scanner is off or gives up (a hostile file of many equal hashes). Time
    O(n); memory ~53-80 bytes a corner: three 4- or 8-byte index arrays (start, end, first), the
    hash table's 16-32 bytes, a flag byte and an 8-byte rank."""
    k = len(corners)
    dtype = np.int32 if len(data) < 2**31 - 1 else np.int64
    start = (84 + 12 + 50 * np.arange(k // 3, dtype=dtype)[:, None] + 12 * np.arange(3, dtype=dtype)).ravel()
    first = native.first_equal(data, start, start + dtype(12)) if k else None
    if first is None:
        return merge_exact(corners)
    is_first = np.zeros(k, dtype=bool)
    is_first[first] = True
    rank = np.cumsum(is_first)
    rank -= 1
    return corners[is_first], rank[first]


def _line_kinds(t: text.Tokens) -> np.ndarray:
    """(L,) int8 keyword code of each non-blank line's first token (0: not an STL keyword)."""
    first_keys = text.keys(t.buf, t.start[t.first], t.end[t.first])
    kind = np.zeros(len(t.first), dtype=np.int8)
    for code, word in enumerate(_KEYWORDS, 1):
        kind[first_keys == text.key(word)] = code
    return kind


def _second_word_is(t: text.Tokens, lines: np.ndarray, word: str) -> bool:
    second = t.first[lines] + 1
    return bool(np.all(text.keys(t.buf, t.start[second], t.end[second]) == text.key(word)))


def parse_ascii(data: bytes, name: str, limits: Limits) -> Parsed:
    """ASCII STL: the fast path for the common layout (parse_ascii_fast), else the exact parser,
    which accepts every layout the format allows and names what is wrong in a file it refuses."""
    fast = parse_ascii_fast(data, name, limits)
    return fast if fast is not None else parse_ascii_exact(data, name, limits)


_MIN_LINE = 12  # bytes: the shortest facet, 'facet normal 0 0 0' ... 'endfacet', is 86 for 7 lines
_BLANK_TAIL = 16  # whitespace lines after 'endsolid' the fast path drops (more: the exact parser)
_SEPARATOR = b" \xff "  # between lines when their tokens are split together: no ASCII file holds 0xFF


def _rows_of_three(lines: list[bytes], keyword: bytes, extra: bytes = b"") -> np.ndarray | None:
    """(3, k) float64 from k lines that each read `keyword [extra] a b c` with one shared prefix
    (the bytes before `a`: indentation, keywords and their spacing); None on any other line.

    The lines are joined by b"\\n", each b"\\n" + prefix replaced by an 0xFF token (no ASCII file
    holds 0xFF) and the whole split once: finding that token at every 4th place proves that
    every line starts with the prefix and holds 3 more tokens. C-level passes over the k lines,
    no Python per line.
    """
    k = len(lines)
    words = (keyword, extra) if extra else (keyword,)
    head = lines[0].split(None, len(words))
    if len(head) != len(words) + 1 or tuple(head[: len(words)]) != words:
        return None
    prefix = lines[0][: len(lines[0]) - len(head[-1])]
    if prefix[-1:].strip():  # the prefix must end in whitespace (else `keyword` runs into `a`)
        return None
    # a line that does not start with the prefix keeps its b"\\n" (no 0xFF token before it) and
    # its keywords: the 0xFF tokens are then not at every 4th place, checked below
    joined = b"\n".join(lines)
    rest = joined.replace(b"\n" + prefix, _SEPARATOR)[len(prefix) :]
    del joined
    tokens = rest.split()
    del rest
    if len(tokens) != 4 * k - 1 or tokens[3::4].count(b"\xff") != k - 1:
        return None
    out = np.empty((3, k), dtype=np.float64)
    try:
        for j in range(3):
            text.fastnumbers.try_array(tokens[j::4], out[j], **text.STRICT)
    except (ValueError, TypeError, OverflowError):
        return None
    return out


def _name_of(line: bytes, keyword: bytes) -> str | None:
    """The text after the keyword of a solid/endsolid line, as the exact parser reports it."""
    rest = line.strip()[len(keyword) :].strip()
    return printable(rest.decode("ascii")) if rest else None


def parse_ascii_fast(data: bytes, name: str, limits: Limits) -> Parsed | None:
    """The same Parsed as parse_ascii_exact for a file in the layout nearly every writer uses:
    one 'solid' line, facets of 7 lines each ('facet normal a b c', 'outer loop', 3 'vertex x y z',
    'endloop', 'endfacet'; any indentation and spacing, LF or CRLF, the same on every line of a
    kind), one 'endsolid' line, then only whitespace. None for anything else (several solids,
    blank or foreign lines, keyword tails, numbers fastnumbers refuses, non-ASCII bytes...):
    parse_ascii_exact then reads the file or names what is wrong with it.

    Lines by one bytes.split; the keyword lines compared in C (list.count); corners welded as
    text first (a dict keyed by the vertex line: each corner appears ~6 times in a closed mesh,
    so ~1/6 of the coordinates are converted), then exactly as floats by merge_exact, in first
    appearance order: the vertices and faces parse_ascii_exact gives. Worst case O(n) time; memory
    the line list (~2-3x the file; at most n / 12 lines: <= ~4.6x) plus O(facets) arrays.
    """
    if native.scanner() is not None:
        return _fast_tokens(data, limits)
    if text.fastnumbers is None or not data.isascii():
        return None
    head_end = data.find(b"\n")
    if head_end < 0 or data[:head_end].split(None, 1)[:1] != [b"solid"]:
        return None
    # a facet is 7 lines of >= 86 bytes in all: a file of more, shorter lines is not this layout
    # (the rest stays in the last piece, and the checks below send it to the exact parser), so
    # the line objects stay within ~4.6x the file however short its lines
    lines = data.split(b"\n", len(data) // _MIN_LINE + 32)
    end = len(lines)  # drop the whitespace after the 'endsolid' line (a few lines at most)
    while end > 1 and len(lines) - end <= _BLANK_TAIL and not lines[end - 1].strip():
        end -= 1
    header, footer = lines[0], lines[end - 1]
    if end < 3 or footer.split(None, 1)[:1] != [b"endsolid"]:
        return None
    del lines[end - 1 :]
    del lines[0]
    m = len(lines) // 7
    if len(lines) != 7 * m:
        return None
    # over the face limit: the exact parser refuses it, counting 'endfacet' as this file would
    # have it if it passes (one per facet, plus any in the names)
    if m + header.count(b"endfacet") + footer.count(b"endfacet") > limits.max_faces:
        return None
    for j, words in ((1, [b"outer", b"loop"]), (5, [b"endloop"]), (6, [b"endfacet"])):
        if lines[j].split() != words or lines[j::7].count(lines[j]) != m:
            return None
    normals = _rows_of_three(lines[0::7], b"facet", b"normal")
    if normals is None:
        return None
    corners: list[bytes] = [b""] * (3 * m)  # vertex lines in file order (facet-major)
    for c in range(3):
        corners[c::3] = lines[2 + c :: 7]
    del lines
    # each corner -> the first corner with the same line: one dict pass in C (setdefault keeps
    # the first index it was given); then the distinct lines numbered in order of appearance
    first_of: dict[bytes, int] = {}
    first = np.fromiter(map(first_of.setdefault, corners, itertools.count()), dtype=np.int64, count=3 * m)
    del first_of
    is_first = np.zeros(3 * m, dtype=bool)
    is_first[first] = True
    coords = _rows_of_three(list(itertools.compress(corners, is_first)), b"vertex")
    del corners
    if coords is None:
        return None
    ids = (np.cumsum(is_first) - 1)[first]
    vertices, inverse = merge_exact(np.ascontiguousarray(coords.T))
    faces = inverse[ids].reshape(m, 3)
    metadata: list[tuple[str, str]] = []
    for field, line, keyword in (("stl.solid_name", header, b"solid"), ("stl.endsolid_name", footer, b"endsolid")):
        named = _name_of(line, keyword)
        if named is not None:
            metadata.append((field, named))
    columns = [np.ascontiguousarray(vertices[:, d]) for d in range(3)]
    corner_ids = [np.ascontiguousarray(faces[:, c]) for c in range(3)]
    foreign = _foreign_count(list(normals), lambda c, d: columns[d][corner_ids[c]])
    if foreign:
        metadata.append(
            (
                "stl.facet_normal",
                f"{foreign} of {m} facet normals are not the facet's geometric normal, replaced by computed normals",
            )
        )
    return Parsed(vertices, faces, None, metadata)


# A facet's 21 tokens: the keyword tokens (column, word) and the 12 numbers (normal, 3 corners)
_FACET_WORDS = ((0, "facet"), (1, "normal"), (5, "outer"), (6, "loop"), (7, "vertex"), (11, "vertex"),
                (15, "vertex"), (19, "endloop"), (20, "endfacet"))  # fmt: skip
_WORD_COLUMNS = np.array([col for col, _ in _FACET_WORDS])
_WORD_KEYS = np.array([text.key(word) for _, word in _FACET_WORDS], dtype=np.uint64)
_CORNER_X = np.array([8, 12, 16])  # the x token of each corner (y, z follow)
_LINE_STARTS = np.zeros(21, dtype=np.uint8)  # 1 at the columns that begin a line
_LINE_STARTS[[0, 5, 7, 11, 15, 19, 20]] = 1


def _fast_tokens(data: bytes, limits: Limits) -> Parsed | None:
    """parse_ascii_fast by the C++ scanner (meshes/native.py): every token's [start, end) and
    line, then numpy checks that the tokens between the 'solid' line and the 'endsolid' line are
    facets of exactly 21 tokens laid out 'facet normal a b c' / 'outer loop' / 3 x 'vertex x y z'
    / 'endloop' / 'endfacet', one line each (blank lines between them are allowed: the exact
    parser skips them too); the 12 numbers of every facet are read by from_chars (the corners
    welded as text first), then welded as floats as the exact parser's merge_exact welds them
    (native.weld_rows; merge_exact where it gives up), the stored normals and degenerate faces
    checked in one C++ pass (native.face_checks: Parsed.keep for validate). None for anything else
    (keyword tails, foreign lines, several solids, a number the scanner refuses: nan, inf, '1_0',
    out of range...). Worst case O(n) time (the text weld's hash table is bounded: probes and
    compares capped, else every corner is converted); memory the token tables (9 bytes a token:
    start, end, line-start flag; ~0.7x a typical file, at most 4.5x: one token per 2 bytes), index arrays of the keyword and
    number tokens (~0.6x), the table (<= 32 bytes a corner), then the merge (~10 words a
    distinct corner text).
    """
    buf = text.as_array(data)
    found = native.tokens_and_line_starts(data, 10 if data.find(b"\n") >= 0 else 13)
    if found is None:  # (the scanner was switched off since the caller looked)
        return None
    start, end, starts_line = found
    del found
    n_tok = len(start)
    if n_tok < 2 + 21 or not starts_line[1:].any():
        return None
    head = 1 + int(np.argmax(starts_line[1:]))  # tokens on the 'solid' line
    foot = n_tok - 1 - int(np.argmax(starts_line[::-1]))  # first token of the last line
    m = (foot - head) // 21
    if m == 0 or foot - head != 21 * m:
        return None
    ends_kind = text.keys(buf, start[[0, foot]], end[[0, foot]])
    if ends_kind[0] != text.key("solid") or ends_kind[1] != text.key("endsolid"):
        return None
    head_text, foot_text = data[start[0] : end[head - 1]], data[start[foot] : end[n_tok - 1]]
    # non-ASCII bytes (which the exact parser refuses) are never whitespace, so they sit in some
    # token: the names are checked here, every other token below (a keyword's key, or a number
    # from_chars reads; a corner's text equal to a converted one holds the same bytes)
    if not (head_text.isascii() and foot_text.isascii()):
        return None
    # over the face limit: the exact parser refuses it (counting 'endfacet' anywhere in the file)
    if m + head_text.count(b"endfacet") + foot_text.count(b"endfacet") > limits.max_faces:
        return None
    # one line per kind: a line starts at each line-starting column of a facet and nowhere else
    if not np.all(starts_line[head:foot].reshape(m, 21) == _LINE_STARTS):
        return None
    del starts_line
    base = head + 21 * np.arange(m, dtype=start.dtype)
    words = native.keys(data, start, end, (base[:, None] + _WORD_COLUMNS.astype(start.dtype)).ravel())
    if words is None or not np.all(words.reshape(m, len(_WORD_COLUMNS)) == _WORD_KEYS):
        return None
    del words
    # corners welded as text first (the bytes from a vertex line's x to its z: equal text, equal
    # values), so that only the first corner of each text is converted (~1/6 of them in a closed
    # mesh), then exactly as floats by merge_exact, in order of first appearance: the vertices
    # and faces the exact parser's merge of every corner gives
    corner_at = (base[:, None] + _CORNER_X.astype(start.dtype)).ravel()  # x token of each corner
    first = native.first_equal(data, start[corner_at], end[corner_at + 2])
    if first is None:  # (a hostile file of many equal hashes: every corner converted)
        first = np.arange(3 * m, dtype=start.dtype)
    is_first = np.zeros(3 * m, dtype=bool)
    is_first[first] = True
    distinct = corner_at[is_first]
    del corner_at
    xyz = native.floats(data, start, end, (distinct[:, None] + np.arange(3, dtype=start.dtype)).ravel())
    normal = native.floats(data, start, end, (base[:, None] + np.arange(2, 5, dtype=start.dtype)).ravel())
    del base, distinct
    if xyz is None or normal is None:
        return None
    ids = (np.cumsum(is_first) - 1)[first]
    del first, is_first
    # the float weld and the face checks in C++ too (native.weld_rows, face_checks: merge_exact's,
    # _foreign_count's and validate._non_degenerate's answers), numpy where they step aside
    welded = native.weld_rows(xyz.reshape(-1, 3))
    vertices, inverse = welded if welded is not None else merge_exact(xyz.reshape(-1, 3))
    faces = inverse[ids].reshape(m, 3)
    del ids, inverse, welded
    metadata: list[tuple[str, str]] = []
    for field, raw, keyword in (("stl.solid_name", head_text, b"solid"), ("stl.endsolid_name", foot_text, b"endsolid")):
        named = _name_of(raw, keyword)
        if named is not None:
            metadata.append((field, named))
    checked = native.face_checks(vertices, faces, normal.reshape(m, 3), NORMAL_TOLERANCE)
    keep: np.ndarray | None = None
    if checked is not None:
        foreign, keep = checked
    else:
        normals = [np.ascontiguousarray(normal[d::3]) for d in range(3)]
        columns = [np.ascontiguousarray(vertices[:, d]) for d in range(3)]
        corner_ids = [np.ascontiguousarray(faces[:, c]) for c in range(3)]
        foreign = _foreign_count(normals, lambda c, d: columns[d][corner_ids[c]])
    if foreign:
        metadata.append(
            (
                "stl.facet_normal",
                f"{foreign} of {m} facet normals are not the facet's geometric normal, replaced by computed normals",
            )
        )
    return Parsed(vertices, faces, None, metadata, keep=keep)


def parse_ascii_exact(data: bytes, name: str, limits: Limits) -> Parsed:
    """Every layout ASCII STL allows (several solids, blank and foreign lines, keyword tails),
    vectorised over the whole buffer (meshes/text.py); the specific error for a file it refuses."""
    check_counts(name, 0, data.count(b"endfacet"), limits)
    buf = text.as_array(data)
    high = buf >= 128
    if high.any():
        raise InputRejected(name, f"corrupt ASCII STL: non-ASCII byte at offset {int(np.argmax(high))}")
    del high
    t = text.tokenize(buf)
    kind = _line_kinds(t)
    stl_lines = np.flatnonzero(kind)  # non-blank lines that start with an STL keyword
    k = kind[stl_lines]
    n_solid, n_end = int(np.count_nonzero(k == SOLID)), int(np.count_nonzero(k == ENDSOLID))
    if n_solid == 0 or n_end < n_solid:
        raise InputRejected(name, "truncated ASCII STL: no 'endsolid' after the last triangle")
    f = np.flatnonzero(k == FACET)  # positions in k of every facet line
    in_block = int(np.count_nonzero((k >= FACET) & (k <= ENDFACET)))
    ok = in_block == 7 * len(f) and (len(f) == 0 or f[-1] + 6 < len(k))
    if ok:
        for j, expect in enumerate(_BLOCK, 1):
            ok = ok and bool(np.all(k[f + j] == expect))
    if not ok:
        n_vertex = int(np.count_nonzero(k == VERTEX))
        raise InputRejected(
            name,
            f"corrupt ASCII STL: {len(f)} facets but {n_vertex} vertex lines, "
            f"{int(np.count_nonzero(k == ENDFACET))} endfacet lines, or a facet's lines out of order",
        )
    depth = np.cumsum(np.where(k == SOLID, 1, np.where(k == ENDSOLID, -1, 0)))
    if depth.min() < 0 or depth.max() > 1 or depth[-1] != 0 or (len(f) and depth[f].min() < 1):
        raise InputRejected(name, "corrupt ASCII STL: 'solid' and 'endsolid' lines do not enclose the facets")
    facet, vert = stl_lines[f], stl_lines[f[:, None] + np.arange(2, 5)]  # line numbers
    if np.any(t.count[facet] < 5) or not _second_word_is(t, facet, "normal"):
        raise InputRejected(name, "corrupt ASCII STL: a 'facet' line is not 'facet normal x y z'")
    outer = stl_lines[f + 1]
    if np.any(t.count[outer] < 2) or not _second_word_is(t, outer, "loop"):
        raise InputRejected(name, "corrupt ASCII STL: an 'outer' line is not 'outer loop'")
    if np.any(t.count[vert] != 4):
        raise InputRejected(name, "corrupt ASCII STL: a vertex line does not hold 3 numbers")
    # every facet's 12 numbers in file order: normal (3), then 3 corners (3 each)
    idx = np.concatenate(
        [t.first[facet][:, None] + np.arange(2, 5)]
        + [t.first[vert[:, c]][:, None] + np.arange(1, 4) for c in range(3)],
        axis=1,
    )
    values = text.numbers(buf, t.start[idx.ravel()], t.end[idx.ravel()])
    if values is None:
        raise InputRejected(name, "corrupt ASCII STL: a vertex coordinate or facet normal is not a number")
    values = values.reshape(-1, 4, 3)
    metadata = _ascii_metadata(t, kind, stl_lines, k, f, values)
    vertices, faces = merge_exact(np.ascontiguousarray(values[:, 1:].reshape(-1, 3)))
    return Parsed(vertices, faces.reshape(-1, 3), None, metadata)


_TAILS = ((FACET, 5, "facet"), (OUTER, 2, "outer"), (ENDLOOP, 1, "endloop"), (ENDFACET, 1, "endfacet"))


def _ascii_metadata(t: text.Tokens, kind, stl_lines, k, f, values) -> list[tuple[str, str]]:
    """Solid names, keyword tails, foreign normals and non-STL lines: all dropped by sanitize."""
    metadata: list[tuple[str, str]] = []
    for code, field in ((SOLID, "stl.solid_name"), (ENDSOLID, "stl.endsolid_name")):
        lines = stl_lines[k == code]
        named = lines[t.count[lines] > 1]
        metadata += [(field, printable(t.line_text(int(i), 1))) for i in named[:100]]
        if len(named) > 100:
            metadata.append((field, f"{len(named) - 100} more named lines"))
    foreign = _foreign_normals(values[:, 0], values[:, 1:])
    if foreign:
        metadata.append(
            (
                "stl.facet_normal",
                f"{foreign} of {len(f)} facet normals are not the facet's geometric normal, "
                "replaced by computed normals",
            )
        )
    for code, fixed, word in _TAILS:
        lines = stl_lines[k == code]
        tailed = lines[t.count[lines] > fixed]
        if len(tailed):
            last = t.first[tailed] + t.count[tailed] - 1
            nbytes = int((t.end[last] - t.start[t.first[tailed] + fixed]).sum())
            samples = [t.line_text(int(i), fixed) for i in tailed[:50]]
            metadata += report(f"stl.{word}_text", samples, len(tailed), nbytes, f"'{word}' lines end in text")
    other = np.flatnonzero(kind == 0)
    metadata += [("stl.text", printable(t.line_text(int(i)))) for i in other[:100]]
    if len(other) > 100:
        metadata.append(("stl.text", f"{len(other) - 100} more lines that are not STL"))
    return metadata


def write(mesh: Mesh, encoding: str) -> bytes:
    """A neutral file: zero header (binary) or a bare 'solid' (ASCII); normals computed from the
    corners; attribute bytes zero; no colours in STL."""
    if encoding == "binary":
        return _write_binary(mesh)
    tri = mesh.vertices[mesh.faces]
    normals = geometric_normals(tri)
    parts = ["solid"]
    for n, t in zip(normals.astype(np.float32).tolist(), tri.tolist()):
        parts.append(
            f"facet normal {n[0]:.7g} {n[1]:.7g} {n[2]:.7g}\nouter loop\n"
            f"vertex {t[0][0]!r} {t[0][1]!r} {t[0][2]!r}\n"
            f"vertex {t[1][0]!r} {t[1][1]!r} {t[1][2]!r}\n"
            f"vertex {t[2][0]!r} {t[2][1]!r} {t[2][2]!r}\nendloop\nendfacet"
        )
    parts.append("endsolid\n")
    return "\n".join(parts).encode("ascii")


def _write_binary(mesh: Mesh) -> bytes:
    """write(mesh, "binary"): geometric_normals' arithmetic (float64, then float32 in the record)
    on contiguous coordinate columns gathered per corner, and the float32 corners gathered from
    float32 vertices: the same bytes as the row-wise (M, 3, 3) version at about half its CPU
    (bench/RESULTS.md, fifth session). Time O(M), memory ~16 float64 columns of M. With the C++
    scanner, one pass (native.stl_write: the same arithmetic record by record, no GIL, ~10x less
    CPU; the same bytes, tests/test_stl_native.py) and memory only the output."""
    one_pass = native.stl_write(mesh.vertices, mesh.faces)
    if one_pass is not None:
        return one_pass
    faces = np.ascontiguousarray(mesh.faces.T)
    columns = [np.ascontiguousarray(mesh.vertices[:, d], dtype=np.float64) for d in range(3)]
    rec = np.zeros(len(mesh.faces), RECORD)
    normals = _normal_columns(lambda c, d: columns[d][faces[c]])
    for d in range(3):
        rec["normal"][:, d] = normals[d]
    v32 = mesh.vertices.astype(np.float32)
    for c in range(3):
        rec["v"][:, c] = v32[faces[c]]
    return bytes(80) + struct.pack("<I", len(mesh.faces)) + rec.tobytes()
