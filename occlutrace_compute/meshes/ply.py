"""PLY: own header parser (counts checked against the file size before any allocation), numpy
record views for binary bodies, a token stream for ASCII bodies.

Only `vertex` (x, y, z, optional red/green/blue/alpha or diffuse_*, optional texture_u/texture_v,
s/t or u/v) and `face` (vertex_indices list) are geometry; a `comment TextureFile <image>` names
the texture (loaded, re-encoded and renamed by meshes/texture.py; the comment itself is dropped). Everything else is reported as metadata and never written back (sanitize
re-serialises from the parsed arrays): comments, obj_info, a format version other than 1.0, extra
elements (scanner extras such as camera or range-grid records), extra vertex/face properties and
lists (normals, quality, confidence, or a name spelled as a uchar list), data after the last
element.

Worst case: the header's counts are checked against the limits and the file size before any
array exists; binary fixed-size records are numpy views; polygons are checked against the limits
(corners per polygon, total triangles) before they are triangulated (meshes/polygons.py). ASCII
bodies: the values by the C++ scanner where built (meshes/native.py: no token table, no GIL),
else fastnumbers / numpy; O(n) time, memory the values (8 bytes each) plus, on the token-wise
path, the token tables (at most ~18x the body for the smallest tokens, bench_parse_memory.py).
"""

from __future__ import annotations

import re
import struct
import warnings
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import native, text
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.obj import ranges
from occlutrace_compute.meshes.parsed import Parsed, colors_to_uint8, printable
from occlutrace_compute.meshes.polygons import fan_triangulate
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
_UV_NAMES = (("texture_u", "texture_v"), ("s", "t"), ("u", "v"))
_COLOR_NAMES = (("red", "green", "blue", "alpha"), ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha"))


@dataclass
class Prop:
    name: str
    type: str  # numpy kind+size, e.g. "f4"
    count_type: str = ""  # set for a list property

    @property
    def is_list(self) -> bool:
        return bool(self.count_type)


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
@dataclass
class ListData:
    """One list property of every record: its lengths and its items one record after another."""

    counts: np.ndarray  # (records,) int64
    items: np.ndarray  # (sum(counts),) values as read (ASCII: float64; binary: the property type)


@dataclass
class ElementData:
    """What one element's records held: scalar columns and list properties by name, its size."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    lists: dict[str, ListData] = field(default_factory=dict)
    size: int = 0  # bytes (binary) or values (ASCII) the element's records take


@dataclass
class Body:
    elements: dict[str, ElementData]
    trailing: str  # what follows the last declared element ("" when nothing)
    unit: str  # "bytes" or "values"


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
            metadata.append((f"ply.{key}", printable(raw.strip()[len(key) :])))
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


def _checked_face_prop(el: Element) -> Prop:
    """The face element's index list, which _check_declared has made sure of."""
    p = _face_prop(el)
    if p is None:
        raise RuntimeError(f"PLY element '{el.name}' has no index list (not checked before parsing)")
    return p


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
    body = _AsciiBody(header, data, name).read() if header.order is None else _BinaryBody(header, data, name).read()
    warnings = []
    metadata = list(header.metadata)
    version = header.format_line.split()[2]
    if version != "1.0":
        metadata.append(("ply.format_version", printable(version)))
    vertex = body.elements["vertex"]
    color_names = _color_names(vertex.columns)
    uv_names = next((n for n in _UV_NAMES if all(a in vertex.columns for a in n)), ())
    for el in header.elements:
        data_el = body.elements[el.name]
        if el.name not in ("vertex", "face"):
            metadata.append(("ply.element", f"{el.name} ({el.count} records, {data_el.size} {body.unit})"))
            continue
        used = {"x", "y", "z", *color_names, *uv_names} if el.name == "vertex" else {_checked_face_prop(el).name}
        for p in el.props:
            if p.name in used:
                continue
            if p.is_list:
                ld = data_el.lists[p.name]
                size = _list_size(p, ld, body.unit)
                what = f"list {_TYPE_NAMES[p.count_type]} {_TYPE_NAMES[p.type]}"
            else:
                size = el.count * (int(p.type[1]) if body.unit == "bytes" else 1)
                what = _TYPE_NAMES[p.type]
            metadata.append(("ply.property", f"{el.name}.{p.name} ({what}, {size} {body.unit})"))
            if p.is_list and p.type in ("u1", "i1"):
                metadata += _spelled(f"{el.name}.{p.name}", data_el.lists[p.name])
    faces, dropped = _faces(header, body, name, limits)
    if dropped:
        warnings.append(f"dropped {dropped} faces with fewer than 3 vertices")
    if body.trailing:
        metadata.append(("ply.trailing_data", body.trailing))
        warnings.append(f"ignored {body.trailing} after the declared elements")
    cols = vertex.columns
    vertices = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float64)
    uv = None
    if uv_names:
        uv = np.stack([cols[uv_names[0]], cols[uv_names[1]]], axis=1).astype(np.float64)
        if not np.isfinite(uv).all():
            raise InputRejected(name, "corrupt PLY: a texture coordinate is not finite")
    texture_files = [
        v.split(None, 1)[1]
        for k, v in header.metadata
        if k == "ply.comment" and v.split(None, 1)[:1] == ["TextureFile"] and len(v.split(None, 1)) == 2
    ]
    ref = texture_files[0] if texture_files and uv is not None else None
    if texture_files and uv is None:
        warnings.append("texture dropped: the vertices carry no texture coordinates")
    return Parsed(vertices, faces, _colors(cols, color_names), metadata, warnings, uv, ref)


_TYPE_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
               "f4": "float", "f8": "double"}  # fmt: skip


def _spelled(where: str, ld: ListData, records: int = 50) -> list[tuple[str, str]]:
    """Byte lists that read as text (a name spelled as a uchar list), from the first records."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    ends = np.cumsum(ld.counts[:records])
    for a, b in zip(ends - ld.counts[:records], ends):
        chars = np.asarray(ld.items[int(a) : int(b)]).astype(np.int64)
        if len(chars) >= 2 and ((chars >= 32) & (chars < 127)).all():
            word = bytes(chars.astype(np.uint8)).decode("ascii")
            if word not in seen and len(seen) < 5:
                seen.add(word)
                out.append(("ply.property", f"{where} as text: {printable(word)}"))
    return out


def _list_size(p: Prop, ld: ListData, unit: str) -> int:
    if unit == "values":
        return len(ld.counts) + len(ld.items)
    return len(ld.counts) * int(p.count_type[1]) + len(ld.items) * int(p.type[1])


def _color_names(cols: dict[str, np.ndarray]) -> tuple[str, ...]:
    for names in _COLOR_NAMES:
        if all(n in cols for n in names[:3]):
            return tuple(n for n in names if n in cols)
    return ()


def _colors(cols: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray | None:
    if not names:
        return None
    channels = [cols[n] for n in names]
    floats = any(c.dtype.kind == "f" for c in channels)
    return colors_to_uint8(channels, 1.0 if floats else 255.0)


def _faces(header: Header, body: Body, name: str, limits: Limits) -> tuple[np.ndarray, int]:
    """Fan triangles of the face element's polygons; those with < 3 corners are dropped."""
    face = next(el for el in header.elements if el.name == "face")
    ld = body.elements["face"].lists[_checked_face_prop(face).name]
    counts, items = ld.counts, ld.items
    if items.dtype.kind == "f":  # ASCII: whole numbers only
        if not text.integers(items):
            raise InputRejected(name, "corrupt ASCII PLY: a face index is not an integer")
        items = items.astype(np.int64)
    keep = counts >= 3
    dropped = int(len(counts) - np.count_nonzero(keep))
    if dropped:
        items = items[np.repeat(keep, counts)]
        counts = counts[keep]
    return fan_triangulate(items, counts, name, limits, "PLY"), dropped


class _BinaryBody:
    """numpy record views for fixed-size records and for list elements whose records all have the
    first record's list lengths (the usual all-triangle file); otherwise a lean walk over the
    records that only collects offsets (O(records) steps, each a few byte reads, no arrays), the
    items then gathered in one vectorised read."""

    def __init__(self, header: Header, data: bytes, name: str) -> None:
        if header.order is None:
            raise ValueError("an ASCII PLY body has no byte order")
        self.h, self.data, self.name, self.order = header, data, name, header.order

    def read(self) -> Body:
        off = self.h.body_start
        out: dict[str, ElementData] = {}
        for el in self.h.elements:
            start = off
            if not any(p.is_list for p in el.props):
                arr, off = self._fixed(el, off, {})
                out[el.name] = ElementData({p.name: arr[f"p{i}"] for i, p in enumerate(el.props)})
            else:
                out[el.name], off = self._lists(el, off)
            out[el.name].size = off - start
        extra = len(self.data) - off
        return Body(out, f"{extra} bytes" if extra else "", "bytes")

    def _dtype(self, el: Element, list_len: dict[int, int]) -> np.dtype:
        o = self.order
        fields: list[tuple[Any, ...]] = []
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

    def _lists(self, el: Element, off: int) -> tuple[ElementData, int]:
        list_len = self._first_lengths(el, off)
        if list_len is not None:
            dt = self._dtype(el, list_len)
            if off + dt.itemsize * el.count <= len(self.data):
                arr = np.frombuffer(self.data, dt, count=el.count, offset=off)
                if all((arr[f"n{i}"] == k).all() for i, k in list_len.items()):
                    result = ElementData()
                    for i, p in enumerate(el.props):
                        if p.is_list:
                            counts = np.full(el.count, list_len[i], np.int64)
                            result.lists[p.name] = ListData(counts, arr[f"p{i}"].reshape(-1))
                        else:
                            result.columns[p.name] = arr[f"p{i}"]
                    return result, off + dt.itemsize * el.count
        return self._walk(el, off)

    def _first_lengths(self, el: Element, off: int) -> dict[int, int] | None:
        """List lengths of the first record, or None when that record does not fit the file."""
        lengths = {}
        for i, p in enumerate(el.props):
            size = int(p.count_type[1]) if p.is_list else int(p.type[1])
            if off + size > len(self.data):
                return None
            if p.is_list:
                k = int(np.frombuffer(self.data, self.order + p.count_type, 1, off)[0])
                if k < 0 or off + size + k * int(p.type[1]) > len(self.data):
                    return None
                lengths[i] = k
                off += size + k * int(p.type[1])
            else:
                off += size
        return lengths

    def _walk(self, el: Element, off: int) -> tuple[ElementData, int]:
        """Record by record, every read bounds-checked; collects (item offset, count) per list."""
        data, o, n = self.data, self.order, len(self.data)
        truncated = InputRejected(self.name, f"truncated PLY: '{el.name}' records run past the end of the file")
        plan = [
            (i, struct.Struct(o + _STRUCT[p.count_type]) if p.is_list else None, int(p.type[1]))
            for i, p in enumerate(el.props)
        ]
        where = {i: array("q") for i, fmt, _ in plan if fmt is not None}
        counts = {i: array("q") for i in where}
        scalars = {i: array("q") for i, fmt, _ in plan if fmt is None}
        for _ in range(el.count):
            for i, count_fmt, item in plan:
                if count_fmt is None:
                    scalars[i].append(off)
                    off += item
                    continue
                if off + count_fmt.size > n:
                    raise truncated
                (k,) = count_fmt.unpack_from(data, off)
                off += count_fmt.size
                if k < 0 or off + k * item > n:
                    raise truncated
                where[i].append(off)
                counts[i].append(k)
                off += k * item
            if off > n:
                raise truncated
        result = ElementData()
        for i, p in enumerate(el.props):
            dt = np.dtype(o + p.type)
            if p.is_list:
                k = np.frombuffer(counts[i], np.int64)
                at = np.repeat(np.frombuffer(where[i], np.int64), k)
                at += (np.arange(len(at)) - np.repeat(np.cumsum(k) - k, k)) * dt.itemsize
                result.lists[p.name] = ListData(k, _gather(data, dt, at))
            else:
                result.columns[p.name] = _gather(data, dt, np.frombuffer(scalars[i], np.int64))
        return result, off


def _gather(data: bytes, dt: np.dtype, at: np.ndarray) -> np.ndarray:
    """Values of type dt at the byte offsets `at` (unaligned reads through a stride-1 view)."""
    if len(at) == 0:
        return np.empty(0, dt)
    view = np.ndarray((len(data) - dt.itemsize + 1,), dt, buffer=data, offset=0, strides=(1,))
    return view[at]


_NON_SPACE = re.compile(rb"[^ \t\n\v\f\r]")
_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}


class _AsciiBody:
    """Every value of the body parsed in one numpy call (meshes/text.py), then each element cut
    from that array: fixed-size records by a reshape; list elements by a reshape when every record
    has the first record's lengths, else by pointer jumping (record starts found by doubling a
    next-record table over the values, O(v log r) for v values and r records), never a Python
    loop over records or lines. Memory: the values (8 bytes each) plus two int64 tables as long."""

    def __init__(self, header: Header, data: bytes, name: str) -> None:
        self.h, self.name = header, name
        self.vals = self._values(data, header.body_start)

    def _values(self, data: bytes, at: int) -> np.ndarray:
        """Every value of the body data[at:] as float64: the fixed-size elements before the
        first list element (the vertices) by numpy's float parser, the rest by the integer parser
        when every property from there on is an integer (the faces), else by the float parser
        too. The common layout (one record a line, unsigned face indices) goes by
        _values_by_lines, with the same values (and no copy of the body)."""
        fast = self._values_by_lines(data, at)
        if fast is not None:
            return fast
        body = data[at:]
        bad = InputRejected(self.name, "corrupt ASCII PLY: a value is not a number")
        first_list = self._first_list()
        split = sum(len(el.props) * el.count for el in self.h.elements[:first_list])
        t = text.tokenize(text.as_array(body), lines=False)
        split = min(split, len(t.start))
        head = text.all_numbers(body[: int(t.end[split - 1])] if split else b"", split)
        if head is None or len(head) != split:
            raise bad
        if split == len(t.start):
            return head
        whole = all(p.type[0] != "f" for el in self.h.elements[first_list:] for p in el.props)
        tail = text.whole_numbers(t.buf, t.start[split:], t.end[split:]) if whole else None
        if tail is None:
            tail = text.all_numbers(body[int(t.start[split]) :], len(t.start) - split)
            if tail is None:
                raise bad
        return np.concatenate([head, tail.astype(np.float64, copy=False)])

    def _values_by_lines(self, data: bytes, at: int) -> np.ndarray | None:
        """_values' array for the layout nearly every writer uses, without a token table: the
        fixed-size records before the first list element one a line (their end found as the
        r-th line break), read by the C++ scanner (meshes/native.py) or else fastnumbers, which
        must find exactly their value count; the rest, when every property there is an integer
        and the text holds no sign, by the scanner's integer reader (1-18 digits a token) or
        else one call of numpy's C integer parser (np.fromstring: digit runs only, so one value
        a token, as the token-wise integer parser reads them). None for anything else, and
        _values then reads the body token by token. Time O(n), memory the values plus 8 bytes
        a line break (their positions)."""
        elements = self.h.elements
        first_list = self._first_list()
        if (text.fastnumbers is None and native.scanner() is None) or first_list in (0, len(elements)):
            return None
        if any(p.type[0] == "f" for el in elements[first_list:] for p in el.props):
            return None
        records = sum(el.count for el in elements[:first_list])
        count = sum(len(el.props) * el.count for el in elements[:first_list])
        if records == 0:
            return None
        body = memoryview(data)[at:]  # (no copy)
        last = native.nth_byte(body, 10, records)  # the C++ scanner: memchr, no mask
        if last is None:
            breaks = np.flatnonzero(text.as_array(body) == 10)
            last = int(breaks[records - 1]) if len(breaks) >= records else -1
            del breaks
        if last < 0:
            return None
        cut = last + 1
        if (
            _NON_SPACE.search(data, at + cut) is None
            or data.find(b"-", at + cut) >= 0
            or data.find(b"+", at + cut) >= 0
        ):
            return None
        # the head first: a layout this is not (records over several lines) stops here, before
        # the large arrays of the tail exist
        head = text.fast_floats(body[:cut], np.empty(count, dtype=np.float64))
        if head is None:
            return None
        tail = native.all_integers(body[cut:])  # the C++ scanner, when built
        if tail is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # numpy < 2.3 warns (and stops) where 2.3+ raises
                    tail = np.fromstring(data[at + cut :], dtype=np.int64, sep=" ")
            except (ValueError, DeprecationWarning):
                return None
        if len(tail) and tail.max() >= 10**18:  # the token-wise parser's limit is 18 digits
            return None
        vals = np.empty(count + len(tail), dtype=np.float64)
        vals[:count] = head
        vals[count:] = tail
        return vals

    def _first_list(self) -> int:
        return next(
            (i for i, el in enumerate(self.h.elements) if any(p.is_list for p in el.props)), len(self.h.elements)
        )

    def read(self) -> Body:
        pos = 0
        out: dict[str, ElementData] = {}
        for el in self.h.elements:
            start = pos
            if not any(p.is_list for p in el.props):
                width = len(el.props)
                block = self._take(pos, width * el.count, el).reshape(el.count, width)
                pos += width * el.count
                out[el.name] = ElementData({p.name: self._typed(block[:, i], p) for i, p in enumerate(el.props)})
            else:
                out[el.name], pos = self._lists(el, pos)
            out[el.name].size = pos - start
        extra = len(self.vals) - pos
        return Body(out, f"{extra} values" if extra else "", "values")

    def _take(self, a: int, n: int, el: Element) -> np.ndarray:
        if a + n > len(self.vals):
            raise InputRejected(self.name, f"truncated PLY: fewer '{el.name}' values than the header declares")
        return self.vals[a : a + n]

    def _typed(self, col: np.ndarray, p: Prop) -> np.ndarray:
        """Values of uchar properties (colours) as uint8, like a binary body gives them."""
        return np.clip(np.nan_to_num(col), 0, 255).astype(np.uint8) if p.type == "u1" else col

    def _bad_list(self, el: Element) -> InputRejected:
        return InputRejected(self.name, f"truncated or corrupt PLY: bad list length in '{el.name}'")

    def _lists(self, el: Element, pos: int) -> tuple[ElementData, int]:
        starts, end = self._uniform_starts(el, pos)
        if starts is None:
            starts, end = self._jump_starts(el, pos)
        result = ElementData()
        off = starts
        for p in el.props:
            if not p.is_list:
                result.columns[p.name] = self._typed(self.vals[off], p)
                off = off + 1
                continue
            k = self.vals[off].astype(np.int64)  # whole and >= 0: checked by the record walk
            result.lists[p.name] = ListData(k, self.vals[ranges(off + 1, k)])
            off = off + 1 + k
        return result, end

    def _uniform_starts(self, el: Element, pos: int) -> tuple[np.ndarray | None, int]:
        """Record starts when every record has the first one's list lengths (a reshape's worth)."""
        vals, n = self.vals, len(self.vals)
        off, count_at = pos, []
        for p in el.props:
            if off >= n:
                return None, 0
            if p.is_list:
                k = vals[off]
                if not (k >= 0 and k == int(k)) or off + 1 + k > n:
                    return None, 0
                count_at.append((off - pos, k))
                off += 1 + int(k)
            else:
                off += 1
        size = off - pos
        if pos + size * el.count > n:
            return None, 0
        block = vals[pos : pos + size * el.count].reshape(el.count, size)
        if all((block[:, at] == k).all() for at, k in count_at):
            return pos + size * np.arange(el.count, dtype=np.int64), pos + size * el.count
        return None, 0

    def _jump_starts(self, el: Element, pos: int) -> tuple[np.ndarray, int]:
        """Record starts by pointer jumping: nxt[i] = where a record starting at value i ends."""
        if el.count == 0:
            return np.empty(0, np.int64), pos
        vals = self.vals[pos:]
        n = len(vals)
        if n == 0:
            raise self._bad_list(el)
        stop = n + 1  # sentinel: no valid record starts here
        nxt = np.arange(n + 2, dtype=np.int64)
        for p in el.props:
            inside = nxt < n
            if not p.is_list:
                nxt[inside] += 1
            else:
                k = np.where(inside, vals[np.minimum(nxt, n - 1)], -1.0)
                ok = inside & (k >= 0) & (k == np.floor(k)) & (k <= n)
                nxt = np.where(ok, nxt + 1 + np.where(ok, k, 0).astype(np.int64), stop)
            nxt[nxt > n] = stop
        nxt[n:] = stop
        orbit, jump = np.zeros(1, np.int64), nxt
        while len(orbit) < el.count + 1:
            orbit = np.concatenate([orbit, jump[orbit]])
            if len(orbit) < el.count + 1:
                jump = jump[jump]
        orbit = orbit[: el.count + 1]
        if orbit[-1] == stop:
            raise self._bad_list(el)
        return pos + orbit[:-1], pos + int(orbit[-1])


def write(mesh: Mesh, encoding: str, ref: str | None = None) -> bytes:
    """Vertices as float when float32 holds them exactly, else double; colours as uchar RGBA;
    UVs as double texture_u/texture_v; with UVs and `ref`, `comment TextureFile <ref>` (a name
    given by the caller, the only comment ever written)."""
    v, f, c = mesh.vertices, mesh.faces, mesh.vertex_colors
    with np.errstate(over="ignore"):  # huge doubles overflow float32: then they are not exact
        exact32 = np.array_equal(v.astype(np.float32).astype(np.float64), v)
    vtype = "float" if exact32 else "double"
    uv = mesh.uv
    lines = ["ply", f"format {'ascii' if encoding == 'ascii' else 'binary_little_endian'} 1.0"]
    if uv is not None and ref is not None:
        lines.append(f"comment TextureFile {ref}")
    lines += [f"element vertex {len(v)}"] + [f"property {vtype} {a}" for a in "xyz"]
    if c is not None:
        lines += [f"property uchar {a}" for a in ("red", "green", "blue", "alpha")]
    if uv is not None:
        lines += ["property double texture_u", "property double texture_v"]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(lines) + "\n").encode("ascii")
    if encoding == "ascii":
        rows = [" ".join(map(repr, r)) for r in v.tolist()]
        if c is not None:
            rows = [f"{r} {a} {b} {g} {al}" for r, (a, b, g, al) in zip(rows, c.tolist())]
        if uv is not None:
            rows = [f"{r} {a!r} {b!r}" for r, (a, b) in zip(rows, uv.tolist())]
        rows += [f"3 {a} {b} {g}" for a, b, g in f.tolist()]
        return head + ("\n".join(rows) + "\n").encode("ascii")
    vfields: list[tuple[Any, ...]] = [(a, "<f4" if exact32 else "<f8") for a in "xyz"]
    if c is not None:
        vfields.append(("rgba", "u1", (4,)))
    if uv is not None:
        vfields.append(("uv", "<f8", (2,)))
    vrec = np.empty(len(v), np.dtype(vfields))
    for i, a in enumerate("xyz"):
        vrec[a] = v[:, i]
    if c is not None:
        vrec["rgba"] = c
    if uv is not None:
        vrec["uv"] = uv
    frec = np.empty(len(f), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    frec["n"] = 3
    frec["i"] = f
    return head + vrec.tobytes() + frec.tobytes()
