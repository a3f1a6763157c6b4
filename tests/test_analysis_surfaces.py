"""Test surfaces with known geometry for the analysis tests (imported by the other test_analysis_*).

Height fields over a grid, a spherical bowl (exact distances to it are known in closed form) and a
U-shaped arch ribbon (known anterior/left/right). The few tests here check the builders themselves
(orientation and the closed forms the other tests rely on).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from occlutrace_compute.meshes.model import Mesh


def grid_faces(rows: int, cols: int, flip: bool = False) -> np.ndarray:
    """Triangles of a rows x cols vertex grid (row-major), counter-clockwise seen from +z."""
    i = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
    return f[:, ::-1].copy() if flip else f


def height_field(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], half: float, n: int, normals_up: bool = True
) -> Mesh:
    """Open surface z = fn(x, y) over [-half, half]^2 with n x n vertices."""
    x = np.linspace(-half, half, n)
    xx, yy = np.meshgrid(x, x)
    v = np.stack([xx.ravel(), yy.ravel(), fn(xx, yy).ravel()], axis=1)
    return Mesh(v, grid_faces(n, n, flip=not normals_up))


def bumpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 0.8 * np.sin(x / 2.5) * np.cos(y / 3.1) + 0.3 * np.exp(-((x - 2) ** 2 + (y + 1) ** 2) / 4)


def bumpy_normal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Analytic unit normal (+z side) of `bumpy`."""
    e = 0.3 * np.exp(-((x - 2) ** 2 + (y + 1) ** 2) / 4)
    fx = 0.32 * np.cos(x / 2.5) * np.cos(y / 3.1) - e * (x - 2) / 2
    fy = -0.8 / 3.1 * np.sin(x / 2.5) * np.sin(y / 3.1) - e * (y + 1) / 2
    n = np.stack([-fx, -fy, np.ones_like(x)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def offset_bumpy(x0: float, x1: float, half_y: float, n: int, offset: np.ndarray | float) -> Mesh:
    """Grid over [x0, x1] x [-half_y, half_y] on `bumpy`, each vertex moved `offset` mm along the
    analytic normal: its exact signed distance to the bumpy surface is the offset."""
    xx, yy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(-half_y, half_y, n))
    base = np.stack([xx.ravel(), yy.ravel(), bumpy(xx, yy).ravel()], axis=1)
    off = np.broadcast_to(np.asarray(offset, dtype=float), (n * n,))
    return Mesh(base + off[:, None] * bumpy_normal(xx.ravel(), yy.ravel()), grid_faces(n, n))


def bowl(radius: float, bottom_z: float, r_max: float, n: int) -> Mesh:
    """Lower cap (grid over [-r_max, r_max]^2) of the sphere centred (0, 0, bottom_z + radius),
    normals pointing out of the sphere (downwards): an upper 'cusp' touching a plane below."""
    assert r_max * np.sqrt(2) < radius
    x = np.linspace(-r_max, r_max, n)
    xx, yy = np.meshgrid(x, x)
    rr = xx**2 + yy**2
    z = bottom_z + radius - np.sqrt(radius**2 - rr)
    v = np.stack([xx.ravel(), yy.ravel(), z.ravel()], axis=1)
    return Mesh(v, grid_faces(n, n, flip=True))


def arch_ribbon(
    z_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], normals_up: bool, n_along: int = 400, n_across: int = 24
) -> Mesh:
    """U-shaped ribbon like a dental arch: semicircle (radius 22 mm, incisors at +y) plus straight
    legs back to y = -14, 8 mm wide. Patient's right is +x when +z is superior."""
    r, leg, half_w = 22.0, 14.0, 4.0
    total = leg + np.pi * r + leg
    s = np.linspace(0, total, n_along)
    # Centre line from the left leg's end (x=-r, y=-leg) up, over the front, down the right leg.
    cx = np.where(s < leg, -r, np.where(s > leg + np.pi * r, r, -r * np.cos((s - leg) / r)))
    cy = np.where(s < leg, -leg + s, np.where(s > leg + np.pi * r, leg + np.pi * r - s, r * np.sin((s - leg) / r)))
    # Outward unit normal of the centre line in the plane.
    nx = np.where(s < leg, -1.0, np.where(s > leg + np.pi * r, 1.0, -np.cos((s - leg) / r)))
    ny = np.where((s < leg) | (s > leg + np.pi * r), 0.0, np.sin((s - leg) / r))
    w = np.linspace(-half_w, half_w, n_across)
    x = cx[:, None] + w[None, :] * nx[:, None]
    y = cy[:, None] + w[None, :] * ny[:, None]
    v = np.stack([x.ravel(), y.ravel(), z_fn(x, y).ravel()], axis=1)
    f = grid_faces(n_along, n_across)
    mesh = Mesh(v, f)
    up = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])[:, 2].sum() > 0
    if up != normals_up:
        mesh = Mesh(v, f[:, ::-1].copy())
    return mesh


def face_normal_z(mesh: Mesh) -> np.ndarray:
    v, f = mesh.vertices, mesh.faces
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])[:, 2]


def test_builders_orientation():
    assert (face_normal_z(height_field(bumpy, 5, 20)) > 0).all()
    assert (face_normal_z(height_field(bumpy, 5, 20, normals_up=False)) < 0).all()
    assert (face_normal_z(bowl(5.0, 0.2, 2.0, 20)) < 0).all()
    assert (face_normal_z(arch_ribbon(lambda x, y: 0 * x, normals_up=True)) > 0).all()
    assert (face_normal_z(arch_ribbon(lambda x, y: 0 * x, normals_up=False)) < 0).all()


def test_bowl_is_on_its_sphere():
    m = bowl(5.0, 0.2, 2.0, 15)
    centre = np.array([0.0, 0.0, 5.2])
    np.testing.assert_allclose(np.linalg.norm(m.vertices - centre, axis=1), 5.0, atol=1e-12)
    assert abs(m.vertices[:, 2].min() - 0.2) < 1e-12


def test_bumpy_normal_is_the_surface_normal():
    x, y, h = np.array([0.3, 2.0, -4.0]), np.array([1.0, -1.0, 2.5]), 1e-6
    tx = np.stack([np.full(3, 2 * h), np.zeros(3), bumpy(x + h, y) - bumpy(x - h, y)], axis=1)
    ty = np.stack([np.zeros(3), np.full(3, 2 * h), bumpy(x, y + h) - bumpy(x, y - h)], axis=1)
    n = bumpy_normal(x, y)
    assert np.abs(np.einsum("ij,ij->i", n, tx)).max() < 1e-9 and np.abs(np.einsum("ij,ij->i", n, ty)).max() < 1e-9
    assert (n[:, 2] > 0).all()


def test_arch_ribbon_shape():
    m = arch_ribbon(lambda x, y: 0 * x, normals_up=True)
    lo, hi = m.vertices.min(axis=0), m.vertices.max(axis=0)
    np.testing.assert_allclose([lo[0], hi[0], lo[1], hi[1]], [-26, 26, -14, 26], atol=1e-2)
    near_mid = np.abs(m.vertices[:, 0]) < 2
    assert (m.vertices[near_mid, 1] > 15).all()  # the midline is crossed only at the front
