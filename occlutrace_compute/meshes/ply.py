"""PLY: own header parser (counts checked against the file size before any allocation), numpy
record views for binary bodies, a token stream for ASCII bodies.

Only `vertex` (x, y, z, optional red/green/blue/alpha) and `face` (vertex_indices list) are read;
other properties are kept by sanitize, other elements are dropped by it (scanner extras such as
camera or range-grid records).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, colors_to_uint8, fan, printable
from occlutrace_compute.meshes.validate import check_counts

MAX_HEADER = 1 << 20
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_INDEX_NAMES = ("vertex_indices", "vertex_index")
_COLOR_NAMES = (("red", "green", "blue", "alpha"), ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha"))


@dataclass
class Prop:
    name: str
    type: str  # numpy kind+size, e.g. "f4"
    count_type: str | None = None  # set for a list property

    @property
    def is_list(self) -> bool:
        return self.count_type is not None


@dataclass
class Element:
    name: str
    count: int
    props: list[Prop] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # its header lines, for rebuilding the header


@dataclass
class Header:
    order: str | None  # "<", ">" or None for ASCII
    format_line: str
    elements: list[Element]
    metadata: list[tuple[str, str]]
    body_start: int


@dataclass
class Body:
    """The arrays we use, and where each element lies (byte or token ranges) for sanitize."""

    columns: dict[str, np.ndarray]  # vertex properties by name
    faces: np.ndarray
    dropped_faces: int
    spans: list[tuple[int, int]]
    records: list[list[int] | int]  # ASCII: tokens per record, per element
    trailing: str  # what follows the last declared element ("" when nothing)


def parse_header(data: bytes, name: str, limits: Limits) -> Header:
    end = data.find(b"\nend_header", 0, MAX_HEADER) + 1  # at a line start, not in a comment
    if end <= 0:
        raise InputRejected(name, "truncated or corrupt PLY: no 'end_header' in the first 1 MiB")
    body_start = end + len(b"end_header")
    for eol in (b"\r\n", b"\n", b"\r"):
        if data.startswith(eol, body_start):
            body_start += len(eol)
            break
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "ply":
        raise InputRejected(name, "corrupt PLY header: first line is not 'ply'")
    order: str | None = None
    format_line = ""
    elements: list[Element] = []
    metadata: list[tuple[str, str]] = []
    for raw in lines[1:]:
        words = raw.split()
        if not words:
            continue
        key = words[0]
        if key in ("comment", "obj_info"):
            metadata.append((f"ply.{key}", printable(raw.strip()[len(key):])))
            continue
        if not raw.isascii() or not raw.replace("\t", " ").isprintable():
            raise InputRejected(name, f"corrupt PLY header: unreadable line '{printable(raw, 80)}'")
        if key == "format":
            if len(words) != 3 or words[1] not in _FORMATS:
                raise InputRejected(name, f"corrupt PLY header: unknown format line '{printable(raw, 80)}'")
            order, format_line = _FORMATS[words[1]], " ".join(words)
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise InputRejected(name, f"corrupt PLY header: bad element line '{printable(raw, 80)}'")
            elements.append(Element(words[1], int(words[2]), lines=[" ".join(words)]))
        elif key == "property":
            if not elements:
                raise InputRejected(name, "corrupt PLY header: property before any element")
            elements[-1].props.append(_prop(words, raw, name))
            elements[-1].lines.append(" ".join(words))
        else:
            raise InputRejected(name, f"corrupt PLY header: unknown line '{printable(raw, 80)}'")
    if not format_line:
        raise InputRejected(name, "corrupt PLY header: no format line")
    for i, el in enumerate(elements):
        if not el.props:
            raise InputRejected(name, f"corrupt PLY header: element '{el.name}' has no properties")
        if any(other.name == el.name for other in elements[:i]):
            raise InputRejected(name, f"corrupt PLY header: element '{el.name}' declared twice")
        if len({p.name for p in el.props}) < len(el.props):
            raise InputRejected(name, f"corrupt PLY header: a property of '{el.name}' declared twice")
    header = Header(order, format_line, elements, metadata, body_start)
    _check_declared(header, len(data), name, limits)
    return header


def _prop(words: list[str], raw: str, name: str) -> Prop:
    if len(words) == 3 and words[1] in _TYPES:
        return Prop(words[2], _TYPES[words[1]])
    if len(words) == 5 and words[1] == "list" and words[2] in _TYPES and words[3] in _TYPES:
        if _TYPES[words[2]][0] == "f":
            raise InputRejected(name, f"corrupt PLY header: list count of float type in '{printable(raw, 80)}'")
        return Prop(words[4], _TYPES[words[3]], _TYPES[words[2]])
    raise InputRejected(name, f"corrupt PLY header: bad property line '{printable(raw, 80)}'")


def _face_prop(el: Element) -> Prop | None:
    return next((p for p in el.props if p.is_list and p.name in _INDEX_NAMES), None)


def _check_declared(header: Header, size: int, name: str, limits: Limits) -> None:
    """Rejects counts the limits or the file size cannot hold, before a single array exists."""
    by_name = {el.name: el for el in header.elements}
    vertex, face = by_name.get("vertex"), by_name.get("face")
    if vertex is None or vertex.count == 0:
        raise InputRejected(name, "empty mesh: no vertices")
    if not {"x", "y", "z"} <= {p.name for p in vertex.props if not p.is_list}:
        raise InputRejected(name, "corrupt PLY header: vertex element lacks x, y, z")
    if any(p.is_list for p in vertex.props):
        raise InputRejected(name, "unsupported PLY: list properties in the vertex element")
    if face is None or face.count == 0:
        raise InputRejected(name, "empty mesh: no faces (a point cloud cannot be aligned as a surface)")
    index = _face_prop(face)
    if index is None or index.type[0] == "f":
        raise InputRejected(name, "corrupt PLY header: face element has no integer vertex_indices list")
    check_counts(name, vertex.count, face.count, limits)
    budget = size - header.body_start
    need = 0
    for el in header.elements:
        need += el.count * _min_record(el, header.order is None)
        if need > budget:
            raise InputRejected(
                name,
                f"truncated or corrupt PLY: header declares {el.count} '{el.name}' records, "
                f"more than the {budget}-byte body can hold",
            )


def _min_record(el: Element, ascii_: bool) -> int:
    """Fewest bytes one record can take (a face needs >= 3 indices; ASCII >= 2 bytes a value)."""
    total = 0
    for p in el.props:
        items = 3 if p is _face_prop(el) else 0
        if ascii_:
            total += 2 * (1 + items if p.is_list else 1)
        else:
            total += int(p.count_type[1]) + items * int(p.type[1]) if p.is_list else int(p.type[1])
    return max(total, 1) if ascii_ else total


def parse(data: bytes, name: str, limits: Limits) -> Parsed:
    header = parse_header(data, name, limits)
    body = _read_body(header, data, name)
    warnings = []
    metadata = list(header.metadata)
    for el in header.elements:
        if el.name not in ("vertex", "face"):
            metadata.append(("ply.element", f"{el.name} ({el.count} records)"))
    if body.dropped_faces:
        warnings.append(f"dropped {body.dropped_faces} faces with fewer than 3 vertices")
    if body.trailing:
        metadata.append(("ply.trailing_data", body.trailing))
        warnings.append(f"ignored {body.trailing} after the declared elements")
    cols = body.columns
    vertices = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float64)
    return Parsed(vertices, body.faces, _colors(cols), metadata, warnings)


def _colors(cols: dict[str, np.ndarray]) -> np.ndarray | None:
    for names in _COLOR_NAMES:
        if all(n in cols for n in names[:3]):
            channels = [cols[n] for n in names if n in cols]
            floats = any(c.dtype.kind == "f" for c in channels)
            return colors_to_uint8(channels, 1.0 if floats else 255.0)
    return None


def _read_body(header: Header, data: bytes, name: str) -> Body:
    if header.order is None:
        return _AsciiBody(header, data, name).read()
    return _BinaryBody(header, data, name).read()


def _triangulate(polys: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Fan triangulation of polygons of mixed sizes; those with < 3 corners are dropped."""
    tris = [fan(p.reshape(1, -1)) for p in polys if len(p) >= 3]
    dropped = sum(1 for p in polys if len(p) < 3)
    if not tris:
        return np.empty((0, 3), np.int64), dropped
    return np.concatenate(tris), dropped


class _BinaryBody:
    def __init__(self, header: Header, data: bytes, name: str) -> None:
        self.h, self.data, self.name = header, data, name

    def read(self) -> Body:
        off = self.h.body_start
        columns: dict[str, np.ndarray] = {}
        faces, dropped = np.empty((0, 3), np.int64), 0
        spans = []
        for el in self.h.elements:
            start = off
            if not any(p.is_list for p in el.props):
                arr, off = self._fixed(el, off, {})
            else:
                arr, off = self._lists(el, off)
            spans.append((start, off))
            if el.name == "vertex":
                columns = {p.name: arr[f"p{i}"] for i, p in enumerate(el.props) if not p.is_list}
            elif el.name == "face":
                faces, dropped = arr
        extra = len(self.data) - off
        return Body(columns, faces, dropped, spans, [], f"{extra} bytes" if extra else "")

    def _dtype(self, el: Element, list_len: dict[int, int]) -> np.dtype:
        o = self.h.order
        fields = []
        for i, p in enumerate(el.props):
            if p.is_list:
                fields.append((f"n{i}", o + p.count_type))
                fields.append((f"p{i}", o + p.type, (list_len[i],)))
            else:
                fields.append((f"p{i}", o + p.type))
        return np.dtype(fields)

    def _fixed(self, el: Element, off: int, list_len: dict[int, int]) -> tuple[np.ndarray, int]:
        dt = self._dtype(el, list_len)
        end = off + dt.itemsize * el.count
        if end > len(self.data):
            raise InputRejected(self.name, f"truncated PLY: '{el.name}' records run past the end of the file")
        return np.frombuffer(self.data, dt, count=el.count, offset=off), end

    def _lists(self, el: Element, off: int):
        """Fast path: every list holds as many items as the first record's; else walk records."""
        list_len = self._first_lengths(el, off)
        index = _face_prop(el)
        if list_len is not None:
            dt = self._dtype(el, list_len)
            if off + dt.itemsize * el.count <= len(self.data):
                arr = np.frombuffer(self.data, dt, count=el.count, offset=off)
                if all((arr[f"n{i}"] == k).all() for i, k in list_len.items()):
                    end = off + dt.itemsize * el.count
                    if index is None:
                        return None, end
                    idx = arr[f"p{el.props.index(index)}"]
                    if idx.shape[1] < 3:
                        return (np.empty((0, 3), np.int64), el.count), end
                    return (fan(idx), 0), end
        return self._walk(el, off, index)

    def _first_lengths(self, el: Element, off: int) -> dict[int, int] | None:
        """List lengths of the first record, or None when that record does not fit the file."""
        lengths = {}
        for i, p in enumerate(el.props):
            size = int(p.count_type[1]) if p.is_list else int(p.type[1])
            if off + size > len(self.data):
                return None
            if p.is_list:
                k = int(np.frombuffer(self.data, self.h.order + p.count_type, 1, off)[0])
                if k < 0 or off + size + k * int(p.type[1]) > len(self.data):
                    return None
                lengths[i] = k
                off += size + k * int(p.type[1])
            else:
                off += size
        return lengths

    def _walk(self, el: Element, off: int, index: Prop | None):
        """Record by record (polygons of mixed sizes); every read is bounds-checked."""
        data, o, n = self.data, self.h.order, len(self.data)
        truncated = InputRejected(self.name, f"truncated PLY: '{el.name}' records run past the end of the file")
        polys = []
        plan = [
            (p, struct.Struct(o + _STRUCT[p.count_type]) if p.is_list else None, int(p.type[1]))
            for p in el.props
        ]
        for _ in range(el.count):
            for p, count_fmt, item in plan:
                if count_fmt is None:
                    off += item
                    continue
                if off + count_fmt.size > n:
                    raise truncated
                (k,) = count_fmt.unpack_from(data, off)
                off += count_fmt.size
                if k < 0 or off + k * item > n:
                    raise truncated
                if p is index:
                    polys.append(np.frombuffer(data, o + p.type, k, off))
                off += k * item
            if off > n:
                raise truncated
        return (_triangulate(polys) if index is not None else None), off


_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}


class _AsciiBody:
    def __init__(self, header: Header, data: bytes, name: str) -> None:
        self.h, self.name = header, name
        self.tokens = data[header.body_start :].split()

    def read(self) -> Body:
        pos = 0
        columns: dict[str, np.ndarray] = {}
        faces, dropped = np.empty((0, 3), np.int64), 0
        spans, records = [], []
        for el in self.h.elements:
            start = pos
            if not any(p.is_list for p in el.props):
                width = len(el.props)
                values = self._numbers(pos, pos + width * el.count, el, np.float64).reshape(el.count, width)
                pos += width * el.count
                records.append(width)
                if el.name == "vertex":
                    columns = {p.name: self._typed(values[:, i], p) for i, p in enumerate(el.props)}
            else:
                pos, polys, lens = self._lists(el, pos)
                records.append(lens)
                if el.name == "face":
                    faces, dropped = polys
            spans.append((start, pos))
        extra = len(self.tokens) - pos
        return Body(columns, faces, dropped, spans, records, f"{extra} values" if extra else "")

    def _numbers(self, a: int, b: int, el: Element, dtype) -> np.ndarray:
        if b > len(self.tokens):
            raise InputRejected(self.name, f"truncated PLY: fewer '{el.name}' values than the header declares")
        try:
            return np.array(self.tokens[a:b], dtype=dtype)
        except (ValueError, OverflowError):
            raise InputRejected(self.name, f"corrupt ASCII PLY: a '{el.name}' value is not a number") from None

    def _typed(self, col: np.ndarray, p: Prop) -> np.ndarray:
        """Values of uchar properties (colours) as uint8, like a binary body gives them."""
        return np.clip(np.nan_to_num(col), 0, 255).astype(np.uint8) if p.type == "u1" else col

    def _lists(self, el: Element, pos: int):
        index = _face_prop(el)
        simple = len(el.props) == 1 and index is not None
        if simple:
            n = 4 * el.count
            block = self._numbers(pos, pos + n, el, np.int64) if pos + n <= len(self.tokens) else None
            if block is not None and (block.reshape(-1, 4)[:, 0] == 3).all():
                return pos + n, (block.reshape(-1, 4)[:, 1:], 0), 4
        polys, lens = [], []
        for _ in range(el.count):
            start = pos
            for p in el.props:
                if not p.is_list:
                    pos += 1
                    continue
                k = int(self._numbers(pos, pos + 1, el, np.int64)[0])
                if k < 0 or pos + 1 + k > len(self.tokens):
                    raise InputRejected(self.name, f"truncated or corrupt PLY: bad list length in '{el.name}'")
                if p is index:
                    polys.append(self._numbers(pos + 1, pos + 1 + k, el, np.int64))
                pos += 1 + k
            if pos > len(self.tokens):
                raise InputRejected(self.name, f"truncated PLY: fewer '{el.name}' values than the header declares")
            lens.append(pos - start)
        return pos, (_triangulate(polys) if index is not None else None), lens


def strip(data: bytes, name: str, limits: Limits) -> bytes:
    """Header without comment/obj_info lines and extra elements; vertex and face records verbatim."""
    header = parse_header(data, name, limits)
    body = _read_body(header, data, name)
    kept = [i for i, el in enumerate(header.elements) if el.name in ("vertex", "face")]
    lines = ["ply", header.format_line]
    for i in kept:
        lines += header.elements[i].lines
    head = ("\n".join(lines) + "\nend_header\n").encode("ascii")
    if header.order is not None:
        return head + b"".join(data[body.spans[i][0] : body.spans[i][1]] for i in kept)
    tokens = data[header.body_start :].split()
    out = []
    for i in kept:
        a, b = body.spans[i]
        lens = body.records[i]
        if isinstance(lens, int):
            out += [b" ".join(tokens[j : j + lens]) for j in range(a, b, lens)]
        else:
            for k in lens:
                out.append(b" ".join(tokens[a : a + k]))
                a += k
    return head + b"\n".join(out) + b"\n"


def write(mesh: Mesh, encoding: str) -> bytes:
    """Vertices as float when float32 holds them exactly, else double; colours as uchar RGBA."""
    v, f, c = mesh.vertices, mesh.faces, mesh.vertex_colors
    exact32 = np.array_equal(v.astype(np.float32).astype(np.float64), v)
    vtype = "float" if exact32 else "double"
    lines = ["ply", f"format {'ascii' if encoding == 'ascii' else 'binary_little_endian'} 1.0"]
    lines += [f"element vertex {len(v)}"] + [f"property {vtype} {a}" for a in "xyz"]
    if c is not None:
        lines += [f"property uchar {a}" for a in ("red", "green", "blue", "alpha")]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(lines) + "\n").encode("ascii")
    if encoding == "ascii":
        rows = [" ".join(map(repr, r)) for r in v.tolist()]
        if c is not None:
            rows = [f"{r} {a} {b} {g} {al}" for r, (a, b, g, al) in zip(rows, c.tolist())]
        rows += [f"3 {a} {b} {g}" for a, b, g in f.tolist()]
        return head + ("\n".join(rows) + "\n").encode("ascii")
    vfields = [(a, "<f4" if exact32 else "<f8") for a in "xyz"]
    if c is not None:
        vfields.append(("rgba", "u1", (4,)))
    vrec = np.empty(len(v), np.dtype(vfields))
    for i, a in enumerate("xyz"):
        vrec[a] = v[:, i]
    if c is not None:
        vrec["rgba"] = c
    frec = np.empty(len(f), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    frec["n"] = 3
    frec["i"] = f
    return head + vrec.tobytes() + frec.tobytes()
