"""Format detection from the bytes: a suffix only confirms what the content says."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import PurePath

from occlutrace_compute.errors import InputRejected

FORMATS = ("stl", "obj", "ply")
_SNIFF = 65536
_OBJ_KEYWORDS = frozenset(
    [
        "v",
        "vt",
        "vn",
        "vp",
        "f",
        "l",
        "p",
        "o",
        "g",
        "s",
        "mtllib",
        "usemtl",
        "cstype",
        "deg",
        "curv",
        "curv2",
        "surf",
        "parm",
        "trim",
        "hole",
        "end",
        "bmat",
        "step",
        "con",
        "mg",
        "lod",
        "usemap",
        "maplib",
        "shadow_obj",
        "trace_obj",
        "ctech",
        "stech",
        "bevel",
        "c_interp",
        "d_interp",
    ]
)


@dataclass(frozen=True)
class Detected:
    fmt: str  # "stl" | "obj" | "ply"
    encoding: str  # "ascii" | "binary"

    @property
    def label(self) -> str:
        if self.fmt == "obj":
            return "OBJ"
        return f"{'ASCII' if self.encoding == 'ascii' else 'binary'} {self.fmt.upper()}"


def _is_text(head: bytes) -> bool:
    return b"\x00" not in head


def _binary_stl_size_matches(data: bytes) -> bool:
    if len(data) < 84:
        return False
    (n,) = struct.unpack_from("<I", data, 80)
    return 84 + 50 * n == len(data)


def _looks_ascii_stl(head: bytes) -> bool:
    return head.lstrip()[:5].lower() == b"solid" and _is_text(head) and (b"facet" in head or b"endsolid" in head)


def _looks_obj(head: bytes) -> bool:
    if not _is_text(head):
        return False
    lines = head.decode("latin-1").lstrip("\ufeff\xef\xbb\xbf").splitlines()
    if len(head) == _SNIFF and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut by the sniff window
    seen = False
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.split(None, 1)[0] not in _OBJ_KEYWORDS:
            return False
        seen = True
    return seen


def sniff(data: bytes) -> Detected | None:
    """The format the content shows, or None when it shows none of ours."""
    head = data[:_SNIFF]
    if head[:3] == b"ply" and head[3:4] in (b"\n", b"\r"):
        second = head[3:200].split(maxsplit=3)
        ascii_ = len(second) >= 2 and second[0] == b"format" and second[1] == b"ascii"
        return Detected("ply", "ascii" if ascii_ else "binary")
    if _binary_stl_size_matches(data) and not _looks_ascii_stl(head):
        return Detected("stl", "binary")
    if _looks_ascii_stl(head):
        return Detected("stl", "ascii")
    if _looks_obj(head):
        return Detected("obj", "ascii")
    return None


def suffix_of(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


def resolve(data: bytes, name: str) -> Detected:
    """The format to parse `data` as; rejects content that contradicts a known suffix."""
    suffix = suffix_of(name)
    found = sniff(data)
    if found is None:
        head = data[:_SNIFF]
        if suffix == "stl" and not _is_text(head):
            # Binary STL has no magic: let its parser say what is wrong (truncated, bad count).
            return Detected("stl", "binary")
        if suffix == "stl" and head.lstrip()[:5].lower() == b"solid":
            return Detected("stl", "ascii")  # its parser reports the truncation
        if suffix in FORMATS:
            raise InputRejected(name, f"unknown format: content is not a valid {suffix.upper()} file")
        raise InputRejected(name, "unknown format: content is not STL, OBJ or PLY")
    if suffix in FORMATS and found.fmt != suffix:
        raise InputRejected(name, f"wrong format for the suffix: content is {found.label}, not {suffix.upper()}")
    return found
