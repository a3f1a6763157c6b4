"""meshes/numtext: whole columns of numbers as text, read back bit-identical (issue 12: the OBJ
export of a job was ~0.9 s of per-value `repr` beside its preview)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from occlutrace_compute.meshes import Mesh, load_mesh, numtext, obj as obj_format
from occlutrace_compute.meshes.export import mesh_files, obj_text


def _tokens(column: numtext.Column) -> list[str]:
    return numtext.lines([column]).decode("ascii").splitlines()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(0, 300), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_any_float64_reads_back_bit_identical(x):
    text = _tokens(numtext.floats(x))
    assert len(text) == len(x)
    back = np.array([float(t) for t in text], dtype=np.float64)
    same = (back.view(np.int64) == x.view(np.int64)) | (np.isnan(back) & np.isnan(x))
    assert same.all()
    assert all(" " not in t and t for t in text)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(-7, 16),  # decimal exponents around and beyond the fast path's range
    arrays(np.float64, st.integers(1, 200), elements=st.floats(-9.999, 9.999)),
)
def test_every_exponent_of_the_fast_path(exp, mantissa):
    x = mantissa * 10.0**exp
    back = np.array([float(t) for t in _tokens(numtext.floats(x))])
    assert np.array_equal(back, x)


def test_positional_text_is_short_and_plain():
    x = np.array([1.0, 10.0, 2.5, -12.25, 0.5, 0.000123, 23.106202845364113, 1e-6, 1e14 + 0.5])
    assert _tokens(numtext.floats(x)) == [
        "1",
        "10",
        "2.5",
        "-12.25",
        "0.5",
        "0.00012300000000000001",
        "23.106202845364113",
        "0.000001",
        "100000000000000.5",
    ]


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 2**63 - 1)))
def test_integers_read_back(x):
    assert [int(t) for t in _tokens(numtext.integers(x))] == x.tolist()


def test_negative_integers_are_refused():
    with pytest.raises(ValueError):
        numtext.integers(np.array([3, -1]))


def _mesh(rng, n: int, colors: bool, uv: bool) -> Mesh:
    v = rng.normal(0.0, 25.0, (n, 3))
    v[: n // 10] = 0.0  # exact zeros and a far vertex: the repr fallback beside the fast path
    v[-1] = (1e-9, -3e17, 5e-324)
    f = rng.integers(0, n, (2 * n, 3))
    c = rng.integers(0, 256, (n, 4), dtype=np.uint8) if colors else None
    return Mesh(v, f, c, uv=rng.random((n, 2)) if uv else None)


@pytest.mark.parametrize("colors,uv", [(False, False), (True, False), (False, True), (True, True)])
def test_obj_export_matches_the_obj_writer_value_for_value(colors, uv):
    mesh = _mesh(np.random.default_rng(3), 500, colors, uv)
    ours = obj_text(mesh, ref="x.mtl").decode("ascii").splitlines()
    theirs = obj_format.write(mesh, "ascii", ref="x.mtl").decode("ascii").splitlines()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        ka, kb = a.split(), b.split()
        assert ka[0] == kb[0] and len(ka) == len(kb)
        if ka[0] in ("v", "vt"):
            assert [float(t) for t in ka[1:]] == [float(t) for t in kb[1:]]
        else:
            assert ka == kb


def test_a_job_obj_export_loads_back_exactly():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    rng = np.random.default_rng(5)
    v = s.vertices * rng.uniform(0.9, 1.1, (len(s.vertices), 1)) + np.array([1.0 / 3.0, -71.1, 0.0])
    mesh = Mesh(v, s.faces.astype(np.int64), rng.integers(0, 256, (len(v), 4), dtype=np.uint8))
    files = mesh_files(mesh, "aligned", "obj")
    back = load_mesh(data=files["aligned.obj"], name="aligned.obj").mesh
    assert np.array_equal(back.vertices, mesh.vertices)
    assert np.array_equal(back.faces, mesh.faces)
    assert np.array_equal(back.vertex_colors[:, :3], mesh.vertex_colors[:, :3])
