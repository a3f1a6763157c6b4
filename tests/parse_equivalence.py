"""One comparison for the parsers' fast paths against their exact readers (STL, PLY, OBJ tests)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh


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
