"""One comparison for the parsers' fast paths against their exact readers (STL, PLY, OBJ tests)."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh, native
from occlutrace_compute.meshes.parsed import Parsed
from occlutrace_compute.meshes.validate import validate


@contextlib.contextmanager
def scanner_off(off: bool = True) -> Iterator[None]:
    """The readers' Python path (OCCLUTRACE_NO_NATIVE=1) inside the block, or (off=False) the C++
    scanner where it is built; the caller's setting restored after."""
    before = os.environ.get("OCCLUTRACE_NO_NATIVE")
    os.environ["OCCLUTRACE_NO_NATIVE"] = "1" if off else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["OCCLUTRACE_NO_NATIVE"]
        else:
            os.environ["OCCLUTRACE_NO_NATIVE"] = before


def scanner_modes() -> list[bool]:
    """The `off` values to test: the Python path always, the scanner too where it is built."""
    with scanner_off(False):
        return [True, False] if native.scanner() is not None else [True]


def outcome(fn: Callable[[bytes, str, Limits], Mesh], data: bytes, name: str, limits: Limits) -> Mesh | InputRejected:
    """fn's mesh, or the InputRejected it raised (any other exception propagates: a crash)."""
    try:
        return fn(data, name, limits)
    except InputRejected as e:
        return e


def assert_same(a: Mesh | InputRejected, b: Mesh | InputRejected) -> None:
    """The same error text, or the same mesh: vertices bit for bit (-0.0, NaN payloads), faces,
    colours, texture coordinates, metadata and warnings."""
    if isinstance(a, InputRejected) or isinstance(b, InputRejected):
        assert isinstance(a, InputRejected) and isinstance(b, InputRejected), (a, b)
        assert str(a) == str(b)
        return
    assert a.vertices.dtype == b.vertices.dtype and a.faces.dtype == b.faces.dtype
    assert a.vertices.shape == b.vertices.shape and a.faces.shape == b.faces.shape
    assert a.vertices.tobytes() == b.vertices.tobytes()
    assert np.array_equal(a.faces, b.faces)
    assert a.metadata == b.metadata
    assert a.warnings == b.warnings
    assert (a.colors is None) == (b.colors is None)
    assert a.colors is None or np.array_equal(a.colors, b.colors)
    assert (a.uv is None) == (b.uv is None) and a.texture_ref == b.texture_ref


def fast_or_exact(
    exact_fn: Callable[[bytes, str, Limits], Mesh],
    fast_fn: Callable[[bytes, str, Limits], Mesh | None],
    public_fn: Callable[[bytes, str, Limits], Mesh],
    data: bytes,
    name: str,
    limits: Limits,
) -> tuple[Mesh | InputRejected, Mesh | None]:
    """The fast path gives the exact parser's result or steps aside (None); never a mesh where
    the exact parser refuses. The public entry point gives the exact result or its specific
    error, whichever path ran. Checked with the C++ scanner (where built) and without it: the
    same exact outcome both ways. Returns (exact outcome, fast result) of the default path, the
    fast result None where either path's fast path stepped aside."""
    results = []
    for off in scanner_modes():
        with scanner_off(off):
            exact = outcome(exact_fn, data, name, limits)
            fast = fast_fn(data, name, limits)
            if fast is not None:
                assert not isinstance(exact, InputRejected), exact
                assert_same(fast, exact)
            assert_same(outcome(public_fn, data, name, limits), exact)
        if results:
            assert_same(exact, results[0][0])
        results.append((exact, fast))
    # the fast result of the default path, None where any path stepped aside
    return results[-1][0], (None if any(f is None for _, f in results) else results[-1][1])


def damaged(data: bytes, defect: str, rng: np.random.Generator) -> bytes:
    """The byte-level defects the text-format strategies share: 'truncated' (cut at a random
    byte), 'non-ascii' (one byte 128-255 planted at a random place); other defects unchanged."""
    if defect == "truncated":
        return data[: int(rng.integers(1, len(data)))]
    if defect == "non-ascii":
        k = int(rng.integers(len(data)))
        return data[:k] + bytes([int(rng.integers(128, 256))]) + data[k:]
    return data


def binary_stl(
    corners: np.ndarray,
    normals: np.ndarray,
    attr: np.ndarray | None = None,
    header: bytes = b"solid written by a test",
    tail: bytes = b"",
) -> bytes:
    """A binary STL of (n, 3, 3) or (n, 9) corners and (n, 3) normals, given as floats (written as
    float32) or as their uint32 bit patterns (written as they are: NaN payloads, -0.0), with
    optional (n,) attribute words, an 80-byte header (padded or cut) and bytes after the records."""

    def bits(a: np.ndarray, n: int, width: int) -> np.ndarray:
        a = np.asarray(a)
        return (a.astype("<f4").view("<u4") if a.dtype.kind == "f" else a.astype("<u4")).reshape(n, width)

    n = len(corners)
    rec = np.zeros(n, dtype=[("normal", "<u4", (3,)), ("v", "<u4", (9,)), ("attr", "<u2")])
    rec["v"] = bits(corners, n, 9)
    rec["normal"] = bits(normals, n, 3)
    if attr is not None:
        rec["attr"] = attr
    return header.ljust(80, b"\0")[:80] + struct.pack("<I", n) + rec.tobytes() + tail


def verdict(parsed: Parsed) -> tuple[bytes, bytes, list[str]] | str:
    """validate's answer for a parse: (vertices bytes, faces bytes, warnings) or the rejection's
    message (what a user would get from either path)."""
    try:
        mesh, warnings = validate(parsed, "x.stl", Limits(units="warn"))
    except InputRejected as e:
        return str(e)
    return mesh.vertices.tobytes(), mesh.faces.tobytes(), warnings
