"""PNG sheets of coloured meshes (deviation and contact maps), headless and fast enough for every job.

Triangles are rasterised here in numpy with a z-buffer (no matplotlib markers, no OpenGL):
per-vertex values are interpolated across each triangle and coloured per pixel by the ColorRamp,
so band edges stay sharp; faces are Lambert-shaded so cusps read. The sheet (views, colour bar
with units, legend swatches, histogram, labels) is composed with Pillow; fonts are matplotlib's
bundled DejaVu Sans (always present, has µ, ±, ²).

Cost of one view: O(F + P) time and memory for F faces and P covered pixels (candidate pixels are
the pixel centres inside each face's bounding box, generated in chunks of at most CHUNK so one
huge face or many large ones cannot blow memory). About 0.1 s for a 150k-vertex deviation sheet;
see bench/bench_preview.py.

A view is drawn in two steps: raster_geometry (which face covers each pixel, where, how lit:
needs the geometry and camera only) and paint (colours from the values). A pair job makes the
deviation sheet's four Rasters (sheet_geometry) beside its deviation query, so the sheet itself
only colours and composes (~0.05 s of the job's path instead of ~0.15 s).
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from occlutrace_compute.analysis.colormap import GREY, ColorRamp
from occlutrace_compute.analysis.frame import ArchFrame
from occlutrace_compute.meshes.model import Mesh

try:  # zlib-ng: the same deflate streams' format; at level 2 about half zlib's level-1 CPU on a
    # sheet (0.010 s instead of 0.019 s for 1400x960) and a smaller file (462 KB against 475 KB)
    from zlib_ng import zlib_ng

    DEFLATE: ModuleType = zlib_ng
    DEFLATE_LEVEL = 2
except ImportError:  # the standard library's zlib, level 1
    DEFLATE, DEFLATE_LEVEL = zlib, 1

BACKGROUND = (255, 255, 255)
CHUNK = 2_000_000  # candidate pixels per rasterisation step (~120 bytes each at the peak)
INK = (40, 40, 40)
MUTED = (110, 110, 110)


@dataclass(frozen=True)
class Panel:
    """One occlusal view: a mesh, its per-vertex values, its frame and a caption."""

    mesh: Mesh
    values: np.ndarray
    frame: ArchFrame
    title: str
    right_label: str | None = None  # e.g. "patient right" on the image's right edge
    left_label: str | None = None


@dataclass(frozen=True)
class View:
    """An orthographic camera: screen right, screen up, and the direction towards the viewer."""

    name: str
    right: np.ndarray
    up: np.ndarray
    toward: np.ndarray
    left_label: str | None = None
    right_label: str | None = None
    top_label: str | None = None


@lru_cache(maxsize=1)
def _font_folder() -> Path:
    """matplotlib's bundled fonts, found without importing matplotlib (~0.7 s a command need not
    pay for two .ttf files); matplotlib's own answer where the package is laid out otherwise."""
    spec = importlib.util.find_spec("matplotlib")
    for where in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(where) / "mpl-data" / "fonts" / "ttf"
        if (folder / "DejaVuSans.ttf").is_file():
            return folder
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=8)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(_font_folder() / name), size)


def _pixel_range(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First pixel whose centre is >= lo and the number of centres in [lo, hi], clipped to the image."""
    first = np.clip(np.ceil(lo - 0.5), 0, size).astype(np.int64)
    last = np.clip(np.floor(hi - 0.5), -1, size - 1).astype(np.int64)
    return first, np.maximum(last - first + 1, 0)


def _dot(cols: tuple[np.ndarray, np.ndarray, np.ndarray], axis: np.ndarray) -> np.ndarray:
    # Column arithmetic, not `v @ axis`: a (N, 3) x (3,) BLAS call is slow and thread-hungry.
    return cols[0] * float(axis[0]) + cols[1] * float(axis[1]) + cols[2] * float(axis[2])


def _corner_columns(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (F, 3) faces' corner indices as three contiguous int64 (F,) columns: a gather by a
    contiguous index column is cheaper than by a strided one, and the columns serve several."""
    f = np.asarray(faces, dtype=np.int64)
    return np.ascontiguousarray(f[:, 0]), np.ascontiguousarray(f[:, 1]), np.ascontiguousarray(f[:, 2])


def _cross_columns(
    vertices: np.ndarray, faces: np.ndarray, corners: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ab x ac) of each face as three (F,) columns, and its length (twice the face's area).
    corners: _corner_columns(faces), when the caller has them."""
    v = np.asarray(vertices, dtype=np.float64)
    idx = corners if corners is not None else _corner_columns(faces)
    cols = [np.ascontiguousarray(v[:, j]) for j in range(3)]
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = [[c[i] for c in cols] for i in idx]
    ux, uy, uz, wx, wy, wz = bx - ax, by - ay, bz - az, cx - ax, cy - ay, cz - az
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    return nx, ny, nz, np.sqrt(nx * nx + ny * ny + nz * nz)


def face_normals(
    vertices: np.ndarray, faces: np.ndarray, corners: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit face normals as three (F,) columns (zero for degenerate faces); shared by every view."""
    return _unit(*_cross_columns(vertices, faces, corners))


def _unit(
    nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-product columns divided by their lengths (zero where the length is)."""
    norm = np.maximum(length, 1e-300)
    return nx / norm, ny / norm, nz / norm


def frame_normals(frame: ArchFrame, mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """face_normals(mesh) from the cross products arch_frame computed for this very mesh (the
    same numbers, bit for bit: one formula), or None when the frame was made from other arrays."""
    cross = frame.face_cross(mesh.vertices, mesh.faces)
    return _unit(*cross) if cross is not None else None


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) triangle areas in mm^2."""
    return 0.5 * _cross_columns(vertices, faces)[3]


def cluster(
    vertices: np.ndarray, faces: np.ndarray, values: np.ndarray, cell_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A coarser copy of the mesh for small views: vertices merged per grid cell of `cell_mm`
    (position and value averaged; NaN if any merged value is NaN), faces that collapse dropped.
    O(N log N + F) time (one sort of the N cell keys), O(N + F) memory; the result has at most
    as many vertices and faces as the input. Worked on coordinate and corner columns (strided
    (N, 3) rows cost 3-4x as much per element); cells are numbered in key order, as np.unique
    numbers them (tests/test_analysis_preview.py checks the result against that).
    cluster_cells, then cell_means of the values: the cells need no values."""
    out_v, out_f, inverse, counts = cluster_cells(vertices, faces, cell_mm)
    return out_v, out_f, cell_means(values, inverse, counts)


def cluster_cells(
    vertices: np.ndarray, faces: np.ndarray, cell_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cluster's merged vertices (M, 3) and faces (K, 3), and each input vertex's cell (N,) and
    each cell's vertex count (M,) (cell_means averages values with them). Costs as cluster's."""
    v = np.asarray(vertices, dtype=np.float64)
    cols = [np.ascontiguousarray(v[:, j]) for j in range(3)]
    keys = (
        [np.floor((c - c.min()) / cell_mm).astype(np.int64) for c in cols] if len(v) else [v[:, 0].astype(np.int64)] * 3
    )
    spans = [int(k.max()) + 1 if len(k) else 1 for k in keys]
    flat = (keys[0] * spans[1] + keys[1]) * spans[2] + keys[2]
    inverse, counts = _groups(flat)
    m = len(counts)
    out_v = np.stack([np.bincount(inverse, weights=c, minlength=m) for c in cols], axis=1) / counts[:, None]
    f = np.asarray(faces, dtype=np.int64)
    g0, g1, g2 = (inverse[f[:, j]] for j in range(3))
    kept = np.flatnonzero((g0 != g1) & (g1 != g2) & (g0 != g2))
    out_f = np.empty((len(kept), 3), dtype=np.int64)
    for j, g in enumerate((g0, g1, g2)):
        out_f[:, j] = g[kept]
    return out_v, out_f, inverse, counts


def cell_means(values: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(M,) mean of the values (N,) in each cell of cluster_cells (any NaN in a cell: NaN). O(N)."""
    vals = np.asarray(values, dtype=np.float64)
    return np.bincount(inverse, weights=vals, minlength=len(counts)) / counts


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True, return_counts=True)[1:] for (N,) int64 keys: the
    rank of each key among the distinct keys, and each distinct key's count. One stable argsort
    (numpy's radix/tim sort on integers), O(N log N) time, O(N) memory."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.empty(n, dtype=np.bool_)
    starts[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=starts[1:])
    ids = np.cumsum(starts) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = ids
    first = np.flatnonzero(starts)
    counts = np.diff(np.append(first, n))
    return inverse, counts


@dataclass(frozen=True)
class Raster:
    """What a view shows before it is coloured: which face (its three corners) covers each drawn
    pixel, where (barycentrics b0, b1 of corners 0, 1) and how lit. Depends on the geometry and
    the camera only, so it can be made before the values are known (a pair job: beside the
    deviation query); `paint` colours it. (P,) arrays for P drawn pixels."""

    height: int
    width: int
    scale: float  # px per mm
    pixels: np.ndarray  # (P,) int64 flat pixel ids (row * width + column), ascending
    corners: tuple[np.ndarray, np.ndarray, np.ndarray]  # (P,) int64 vertex ids of the drawn face
    b0: np.ndarray  # (P,) float64
    b1: np.ndarray  # (P,) float64
    shade: np.ndarray  # (P,) float64 Lambert factor of the drawn face


def rasterize(
    vertices: np.ndarray,
    faces: np.ndarray,
    values: np.ndarray,
    view: View,
    ramp: ColorRamp,
    width: int,
    height: int,
    margin_px: int = 8,
    extent: float | None = None,
    normals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    pool: Executor | None = None,
) -> tuple[np.ndarray, float]:
    """(height, width, 3) uint8 image of the mesh seen by `view`, and its scale in px per mm.

    vertices (N, 3), faces (F, 3) int, values (N,) mm (NaN: grey). `extent`: mm the image must
    span (None: fit the mesh); the same extent across views keeps their scales equal. `normals`:
    face_normals(vertices, faces), computed once for several views. `pool`: draws half the
    faces there (see raster_geometry; the same image). paint(raster_geometry(...)).
    """
    raster = raster_geometry(vertices, faces, view, width, height, margin_px, extent, normals, pool)
    return paint(raster, values, ramp), raster.scale


def raster_geometry(
    vertices: np.ndarray,
    faces: np.ndarray,
    view: View,
    width: int,
    height: int,
    margin_px: int = 8,
    extent: float | None = None,
    normals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    pool: Executor | None = None,
) -> Raster:
    """The Raster of the mesh (vertices (N, 3), faces (F, 3)) seen by `view` in a width x height
    image (arguments as rasterize's).

    Each pixel shows the deepest (nearest the viewer) face whose triangle holds its centre; of
    faces at exactly the same depth, the last in face order. `pool`: the front faces' second
    half is drawn into a z-buffer of its own there while this thread draws the first half, and
    the two are merged by that rule (the second half wins ties: its faces come later), so the
    picture is the one-thread picture, pixel for pixel, whatever the split.

    Time O(F + C) for C candidate pixels (pixel centres inside the faces' bounding boxes),
    memory O(F + H * W) (per part: a float64 z-buffer, an int64 face id and two barycentrics a
    pixel, ~26 bytes a pixel; ~14 MB each for the 954 x 576 occlusal view) plus at most CHUNK
    candidates at a time (~120 bytes each), however large any one face is (a face's box is cut
    into pieces of whole rows; a single row longer than CHUNK, a view over 2M px wide, is one
    piece). A view narrower than twice margin_px gets a margin of a quarter of its smaller side.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    cols = (v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy())
    u, w, d = _dot(cols, view.right), _dot(cols, view.up), _dot(cols, view.toward)
    ucen, wcen = (0.5 * (u.min() + u.max()), 0.5 * (w.min() + w.max())) if len(v) else (0.0, 0.0)
    # At most a quarter of the smaller side each way: a margin as wide as the view left a
    # negative span, so a negative scale, which drew the mesh mirrored.
    margin = min(margin_px, min(width, height) // 4)
    span_w, span_h = width - 2 * margin, height - 2 * margin
    if extent is None:
        ptp_u, ptp_w = (float(np.ptp(u)), float(np.ptp(w))) if len(v) else (0.0, 0.0)
        scale = min(span_w / max(ptp_u, 1e-9), span_h / max(ptp_w, 1e-9))
    else:
        scale = min(span_w, span_h) / max(extent, 1e-9)
    sx = (u - ucen) * scale + width / 2
    sy = height / 2 - (w - wcen) * scale
    none = np.zeros(0, dtype=np.int64)
    if len(faces) == 0:
        return Raster(height, width, float(scale), none, (none, none, none), none * 0.0, none * 0.0, none * 0.0)
    corners = _corner_columns(faces)
    nx, ny, nz = normals if normals is not None else face_normals(v, faces, corners)
    facing = _dot((nx, ny, nz), view.toward)
    # Back faces of a consistently oriented scan are hidden behind front ones: skipping them halves
    # the work. A scan seen from behind everywhere (inside-out export) is drawn from both sides
    # (at least one front face needed: below 10 faces the 10 % rounded down to none).
    if np.count_nonzero(facing > 0) >= max(1, len(facing) // 10):
        front = np.flatnonzero(facing > -0.05)
        facing = facing[front]
        i0, i1, i2 = (c[front] for c in corners)
    else:
        i0, i1, i2 = corners
    screen = _Screen(sx, sy, d, width, height)
    n = len(i0)
    if pool is None or n < 2:
        parts = [screen.draw(i0, i1, i2, facing)]
    else:
        half = n // 2
        second = pool.submit(screen.draw, i0[half:], i1[half:], i2[half:], facing[half:])
        parts = [screen.draw(i0[:half], i1[:half], i2[:half], facing[:half]), second.result()]
    return screen.merged(parts, float(scale))


@dataclass(frozen=True)
class _Part:
    """One z-buffer of some faces: per pixel (H * W,) the nearest depth (-inf: none), that face's
    row in the part's face columns (-1: none) and its barycentrics b0, b1; the face columns."""

    zbuf: np.ndarray
    best: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    face_corners: tuple[np.ndarray, np.ndarray, np.ndarray]
    face_shade: np.ndarray


@dataclass(frozen=True)
class _Screen:
    """The vertices projected to the screen: sx, sy (N,) pixel coordinates, d (N,) depth."""

    sx: np.ndarray
    sy: np.ndarray
    d: np.ndarray
    width: int
    height: int

    def draw(self, i0: np.ndarray, i1: np.ndarray, i2: np.ndarray, facing: np.ndarray) -> _Part:
        """The z-buffer of faces (i0, i1, i2) (corner columns, (F,) each; facing: their normals'
        component towards the viewer). Of candidates at the same depth the last (face order)
        wins: np.maximum.at, then the winners written in candidate order (the last write of a
        pixel stays), and a later chunk's equal depth wins over an earlier chunk's.
        O(F + C) time, O(F + H * W + CHUNK) memory."""
        sx, sy, d, width, height = self.sx, self.sy, self.d, self.width, self.height
        xa, xb, xc, ya, yb, yc = sx[i0], sx[i1], sx[i2], sy[i0], sy[i1], sy[i2]
        x0, bw = _pixel_range(np.minimum(np.minimum(xa, xb), xc), np.maximum(np.maximum(xa, xb), xc), width)
        y0, bh = _pixel_range(np.minimum(np.minimum(ya, yb), yc), np.maximum(np.maximum(ya, yb), yc), height)
        area2 = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        count = bw * bh
        # Faces that cover no pixel centre (most faces of a dense scan) or are degenerate drop out here.
        keep = np.flatnonzero((count > 0) & (np.abs(area2) > 1e-12))
        i0, i1, i2, xa, xb, xc, ya, yb, yc = (a[keep] for a in (i0, i1, i2, xa, xb, xc, ya, yb, yc))
        x0, y0, bw, bh, area2 = x0[keep], y0[keep], bw[keep], bh[keep], area2[keep]
        # Lambert shade per face from its normal, both sides lit (open scans are seen from either side).
        shade = 0.55 + 0.45 * np.abs(facing[keep])
        # Per face, the barycentrics b0, b1 and the depth as linear functions of a candidate's pixel
        # offset (r, q) from the face's first candidate centre: three multiply-adds per candidate
        # from per-face coefficients, on coordinates near 0 (no cancellation of large ones).
        inv = 1.0 / area2
        ox, oy = x0 + 0.5, y0 + 0.5
        xa, xb, xc, ya, yb, yc = xa - ox, xb - ox, xc - ox, ya - oy, yb - oy, yc - oy
        b0c, b0r, b0q = (xb * yc - xc * yb) * inv, (yb - yc) * inv, (xc - xb) * inv
        b1c, b1r, b1q = (xc * ya - xa * yc) * inv, (yc - ya) * inv, (xa - xc) * inv
        d2 = d[i2]
        dd0, dd1 = d[i0] - d2, d[i1] - d2
        base = y0 * width + x0
        zbuf = np.full(height * width, -np.inf)
        best = np.full(height * width, -1, dtype=np.int64)
        bary0, bary1 = np.zeros(height * width), np.zeros(height * width)
        # Pieces of at most CHUNK candidates (whole rows of a face's box; one row when a row is
        # longer): a face larger than CHUNK pixels is drawn a piece at a time, in row order,
        # so the candidates come in the same order as whole faces'. P <= F + C / CHUNK pieces.
        count = bw * bh
        face = np.arange(len(keep))
        pieced = bool(len(count)) and int(count.max()) > CHUNK
        if pieced:
            rows = np.maximum(1, CHUNK // bw)
            n_pieces = -(-bh // rows)
            face = np.repeat(face, n_pieces)
            row0 = (np.arange(len(face)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)) * rows[face]
            count = np.minimum(rows[face], bh[face] - row0) * bw[face]
        cum = np.cumsum(count)
        start = 0
        while start < len(face):  # each step takes >= 1 piece: at most P steps
            first = cum[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(cum, first + CHUNK, side="right")))
            c = count[start:stop]
            k = np.repeat(face[start:stop], c)
            off = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
            q, r = np.divmod(off, bw[k])
            if pieced:  # rows from the face's first: the same offsets as a whole face's
                q += np.repeat(row0[start:stop], c)
            rf, qf = r.astype(np.float64), q.astype(np.float64)
            b0 = b0c[k] + rf * b0r[k] + qf * b0q[k]
            b1 = b1c[k] + rf * b1r[k] + qf * b1q[k]
            inside = np.flatnonzero((b0 >= -1e-9) & (b1 >= -1e-9) & (b0 + b1 <= 1 + 1e-9))
            k, b0, b1 = k[inside], b0[inside], b1[inside]
            pix = base[k] + q[inside] * width + r[inside]
            depth = d2[k] + b0 * dd0[k] + b1 * dd1[k]
            np.maximum.at(zbuf, pix, depth)
            win = np.flatnonzero(depth >= zbuf[pix])  # ties: the last of the equal-depth samples
            at = pix[win]
            best[at] = k[win]
            bary0[at], bary1[at] = b0[win], b1[win]
            start = stop
        return _Part(zbuf, best, bary0, bary1, (i0, i1, i2), shade)

    def merged(self, parts: list[_Part], scale: float) -> Raster:
        """The Raster of the parts' z-buffers, parts in face order: a later part's pixel wins
        over an earlier one's at the same or a nearer depth (the one-buffer rule). O(H * W)."""
        first = parts[0]
        best, b0, b1 = first.best, first.b0, first.b1
        corners, shade = first.face_corners, first.face_shade
        if len(parts) > 1:
            later = parts[1]
            zbuf = first.zbuf
            take = np.flatnonzero((later.best >= 0) & (later.zbuf >= zbuf))
            offset = len(first.face_shade)
            best[take] = later.best[take] + offset
            b0[take], b1[take] = later.b0[take], later.b1[take]
            c0, c1, c2 = (np.concatenate([a, b]) for a, b in zip(corners, later.face_corners))
            corners = (c0, c1, c2)
            shade = np.concatenate([shade, later.face_shade])
        drawn = np.flatnonzero(best >= 0)
        k = best[drawn]
        return Raster(
            self.height,
            self.width,
            scale,
            drawn,
            (corners[0][k], corners[1][k], corners[2][k]),
            b0[drawn],
            b1[drawn],
            shade[k],
        )


def paint(raster: Raster, values: np.ndarray, ramp: ColorRamp) -> np.ndarray:
    """(height, width, 3) uint8 image of a Raster coloured by per-vertex values (N,) mm (NaN:
    grey) through `ramp`: values interpolated at each pixel, then coloured (sharp band edges),
    then shaded. O(H * W + P) time and memory."""
    image = _blank(raster.height * raster.width)
    if len(raster.pixels):
        vals = np.asarray(values, dtype=np.float64)
        b0, b1 = raster.b0, raster.b1
        i0, i1, i2 = raster.corners
        val = b0 * vals[i0] + b1 * vals[i1] + (1.0 - b0 - b1) * vals[i2]  # NaN at a corner: grey
        rgb = ramp.rgb(val).astype(np.float64, copy=False)  # a fresh (P, 3) array
        rgb *= raster.shade[:, None]  # in place, the same operations in the same order as
        rgb *= 255  # clip(round(rgb * shade * 255), 0, 255): fewer (P, 3) temporaries
        np.clip(np.round(rgb, out=rgb), 0, 255, out=rgb)
        image[raster.pixels] = rgb.astype(np.uint8)
    return image.reshape(raster.height, raster.width, 3)


def _blank(n_pixels: int) -> np.ndarray:
    """(n_pixels, 3) uint8 of the background colour (a plain fill when its channels are equal)."""
    if BACKGROUND[0] == BACKGROUND[1] == BACKGROUND[2]:
        return np.full((n_pixels, 3), BACKGROUND[0], dtype=np.uint8)
    return np.full((n_pixels, 3), BACKGROUND, dtype=np.uint8)


def arch_views(frame: ArchFrame, superior: np.ndarray | None) -> list[View]:
    """Occlusal, frontal and both buccal views of an arch. `superior`: the patient's up (None:
    arch unknown; views are drawn occlusal-side-up and patient left/right are not named)."""
    occ = frame.occlusal
    known = superior is not None
    sup = np.asarray(superior if known else occ, dtype=np.float64)
    ant = frame.anterior
    right = np.cross(ant, sup)  # the patient's right
    screen_right_is_patient_right = float(np.dot(frame.x, right)) > 0
    occ_l, occ_r = (
        (("patient left", "patient right") if screen_right_is_patient_right else ("patient right", "patient left"))
        if known
        else (None, None)
    )
    views = [View("occlusal view", frame.x, ant, occ, occ_l, occ_r, "anterior")]
    views.append(
        View(
            "frontal view",
            np.cross(sup, ant),
            sup,
            ant,
            "patient right" if known else None,
            "patient left" if known else None,
        )
    )
    views.append(
        View(
            "right buccal view" if known else "buccal view (side A)",
            np.cross(sup, right),
            sup,
            right,
            "posterior",
            "anterior",
        )
    )
    views.append(
        View(
            "left buccal view" if known else "buccal view (side B)",
            np.cross(sup, -right),
            sup,
            -right,
            "anterior",
            "posterior",
        )
    )
    return views


def _text(
    draw: ImageDraw.ImageDraw, xy, text: str, size: int = 13, fill=INK, anchor: str = "la", bold: bool = False
) -> None:
    draw.text(xy, text, font=font(size, bold), fill=fill, anchor=anchor)


def _paste_view(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, image: np.ndarray, box: tuple[int, int], view: View, caption: str
) -> None:
    x, y = box
    h, w = image.shape[:2]
    sheet.paste(Image.fromarray(image), (x, y))
    draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(205, 205, 205))
    _text(draw, (x + 6, y + 5), caption, 13, bold=True)
    if view.left_label:
        _text(draw, (x + 6, y + h - 6), view.left_label, 12, MUTED, "ld")
    if view.right_label:
        _text(draw, (x + w - 6, y + h - 6), view.right_label, 12, MUTED, "rd")
    if view.top_label:
        _text(draw, (x + w // 2, y + 22), f"\u2191 {view.top_label}", 12, MUTED, "ma")


def _scale_bar(draw: ImageDraw.ImageDraw, x: int, y: int, px_per_mm: float) -> None:
    mm = next((m for m in (20, 10, 5, 2, 1) if m * px_per_mm <= 160), 1)
    length = int(round(mm * px_per_mm))
    draw.rectangle((x - length, y - 4, x, y - 1), fill=INK)
    _text(draw, (x - length // 2, y - 6), f"{mm} mm", 11, INK, "md")


def draw_colorbar(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    ramp: ColorRamp,
    x: int,
    y: int,
    height: int,
    band_mm: float | None = None,
    width: int = 26,
) -> int:
    """A vertical colour bar with its label and units, ticks at the anchors, and swatches for the
    beyond-the-scale and no-measurement colours; returns the y below it."""
    _text(draw, (x, y), ramp.label, 13, bold=True)
    top, bottom = y + 40 + (26 if ramp.above else 0), y + 40 + (26 if ramp.above else 0) + height
    grid = np.linspace(ramp.vmax, ramp.vmin, height)
    strip = np.round(ramp.rgb(np.clip(grid, ramp.vmin, ramp.vmax)) * 255).astype(np.uint8)
    sheet.paste(Image.fromarray(np.repeat(strip[:, None, :], width, axis=1)), (x, top))
    draw.rectangle((x, top, x + width - 1, bottom - 1), outline=INK)

    def ypos(value: float) -> int:
        return int(round(top + (ramp.vmax - value) / (ramp.vmax - ramp.vmin) * (height - 1)))

    for t in ramp.ticks:
        yy = ypos(t)
        draw.line((x + width, yy, x + width + 5, yy), fill=INK)
        _text(draw, (x + width + 8, yy), f"{t:+.3f}" if t else "0", 12, INK, "lm")
    if band_mm:
        _text(draw, (x + width + 70, ypos(0.0)), f"tolerance band \u00b1{band_mm:.3f} mm", 11, MUTED, "lm")
    y_end = bottom + 8

    def swatch(yy: int, color, label: str) -> None:
        draw.rectangle((x, yy, x + width - 1, yy + 15), fill=tuple(int(round(c * 255)) for c in color), outline=INK)
        _text(draw, (x + width + 8, yy + 8), label, 12, INK, "lm")

    if ramp.above:
        swatch(y + 40 - 2, ramp.above, f"above +{ramp.vmax:.3f} mm (beyond the scale)")
    if ramp.below:
        swatch(y_end, ramp.below, f"below {ramp.vmin:.3f} mm (beyond the scale)")
        y_end += 22
    swatch(y_end, GREY, ramp.nan_label)
    return y_end + 26


def draw_histogram(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    hist: dict,
    ramp: ColorRamp,
    box: tuple[int, int, int, int],
    tolerance_mm: float | None = None,
    no_overlap: int = 0,
) -> None:
    """Bars of a stats.Histogram dict (edges_mm, counts, below, above), coloured like the map,
    with the beyond-the-scale counts as the outer bars and the share of each in the caption."""
    x0, y0, x1, y1 = box
    _text(draw, (x0, y0), "histogram of signed deviation [mm]", 13, bold=True)
    edges = np.asarray(hist.get("edges_mm") or [], dtype=np.float64)
    counts = np.asarray(hist.get("counts") or [], dtype=np.float64)
    below, above = int(hist.get("below", 0)), int(hist.get("above", 0))
    total = counts.sum() + below + above
    top, bottom, left, right = y0 + 24, y1 - 34, x0 + 24, x1 - 24
    draw.line((x0, bottom, x1, bottom), fill=INK)
    if len(counts) == 0 or total == 0:
        _text(draw, ((x0 + x1) // 2, (top + bottom) // 2), "nothing measured", 12, MUTED, "mm")
        return
    peak = max(counts.max(), below, above, 1.0)
    bw = (right - left) / len(counts)
    centres = 0.5 * (edges[:-1] + edges[1:])
    colors = np.round(ramp.rgb(centres) * 255).astype(int)
    for i, c in enumerate(counts):
        hh = int(round(c / peak * (bottom - top)))
        if hh:
            draw.rectangle(
                (int(left + i * bw), bottom - hh, int(left + (i + 1) * bw) - 1, bottom), fill=tuple(colors[i])
            )
    for count, xx, color in ((below, x0, ramp.below), (above, right + 2, ramp.above)):
        hh = int(round(count / peak * (bottom - top)))
        if hh:
            draw.rectangle((xx, bottom - hh, xx + 20, bottom), fill=tuple(int(round(v * 255)) for v in (color or GREY)))
    for t in (edges[0], 0.0, edges[-1]) + ((-tolerance_mm, tolerance_mm) if tolerance_mm else ()):
        xx = int(round(left + (t - edges[0]) / (edges[-1] - edges[0]) * (right - left)))
        draw.line((xx, bottom, xx, bottom + 4), fill=INK)
        _text(draw, (xx, bottom + 6), f"{t:+.2f}" if t else "0", 10, INK, "ma")
    _text(draw, (x0 + 10, bottom + 6), "<", 10, INK, "ma")
    _text(draw, (right + 12, bottom + 6), ">", 10, INK, "ma")
    if tolerance_mm:
        for t in (-tolerance_mm, tolerance_mm):
            xx = int(round(left + (t - edges[0]) / (edges[-1] - edges[0]) * (right - left)))
            draw.line((xx, top, xx, bottom), fill=(90, 90, 90), width=1)
    measured = total + no_overlap
    _text(
        draw,
        (x0, y1 - 2),
        f"beyond the scale: {100 * (below + above) / total:.1f} % of measured vertices",
        11,
        MUTED,
        "ls",
    )
    if no_overlap:
        _text(draw, (x0, y1 + 14), f"no overlap: {100 * no_overlap / measured:.1f} % of all vertices", 11, MUTED, "ls")


def png_bytes(rgb: np.ndarray, pool: Executor | None = None, bands: int = 2) -> bytes:
    """(H, W, 3) uint8 as an 8-bit RGB PNG: rows unfiltered, deflated (DEFLATE: zlib-ng level 2,
    else zlib level 1) in `bands` row bands side by side on `pool` (both work without the GIL).
    zlib level 1 took about half the CPU of Pillow's level-1 PNG for a 1400x960 sheet (Pillow
    tries a filter per row) and was smaller: a sheet is mostly flat colour, which a fast level
    packs well unfiltered; zlib-ng level 2 halves that again. O(H * W) time and memory.

    The bands are raw deflate streams, each but the last ended by a full flush (byte-aligned,
    not final, no reference into another band), so together they are one deflate stream; the
    zlib header and the Adler-32 of all rows make it the zlib stream PNG's IDAT holds."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row: filter type 0 (None), then RGB
    raw[:, 1:] = rgb.reshape(h, 3 * w)
    cuts = np.linspace(0, h, max(1, min(bands, h)) + 1).astype(int)
    parts = [raw[a:b].data for a, b in zip(cuts[:-1], cuts[1:])]  # contiguous rows, no copy

    def deflate(i: int) -> bytes:
        z = DEFLATE.compressobj(DEFLATE_LEVEL, DEFLATE.DEFLATED, -15)  # raw deflate: the zlib wrapper is ours
        return z.compress(parts[i]) + z.flush(DEFLATE.Z_FINISH if i == len(parts) - 1 else DEFLATE.Z_FULL_FLUSH)

    jobs = [pool.submit(deflate, i) for i in range(1, len(parts))] if pool is not None else []
    body = [deflate(0)] + (
        [j.result() for j in jobs] if pool is not None else [deflate(i) for i in range(1, len(parts))]
    )
    idat = b"\x78\x01" + b"".join(body) + struct.pack(">I", DEFLATE.adler32(raw.data))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", DEFLATE.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _save(sheet: Image.Image, path: str | Path, pool: Executor | None = None) -> Path:
    out = Path(path)
    out.write_bytes(png_bytes(np.asarray(sheet), pool))
    return out


@dataclass(frozen=True)
class SheetGeometry:
    """write_arch_sheet's four views before colour (Rasters), made for one mesh's very arrays,
    frame, patient up and sheet size (`fits` checks them): the large occlusal view of the full
    mesh, the small views of the mesh merged to ~1.5 px cells (`cells`: cluster_cells' vertex
    cells and counts, to average the values). Needs no values: a pair job makes it beside the
    deviation query (jobs/pipeline.py), and the sheet then only colours and composes."""

    vertices: np.ndarray  # the source arrays themselves (identity, not equality, is checked)
    faces: np.ndarray
    frame: ArchFrame
    superior: np.ndarray | None
    size_px: tuple[int, int]
    views: list[View]
    large: Raster
    small: list[Raster]
    cells: tuple[np.ndarray, np.ndarray]  # (N,) cell of each vertex, (M,) vertices per cell

    def fits(self, mesh: Mesh, frame: ArchFrame, superior: np.ndarray | None, size_px: tuple[int, int]) -> bool:
        """Whether this geometry is write_arch_sheet's for these arguments (the very arrays and
        frame, an equal patient up, the same size)."""
        mine = self.superior
        same_up = mine is None if superior is None else mine is not None and np.array_equal(superior, mine)
        return (
            mesh.vertices is self.vertices
            and mesh.faces is self.faces
            and frame is self.frame
            and same_up
            and tuple(size_px) == tuple(self.size_px)
        )


def _layout(size_px: tuple[int, int]) -> tuple[int, int, int, int, int]:
    """side_w (left of the legends), the large view's and the small views' sizes."""
    W, H = size_px
    side_w = W - 430
    occ_w, occ_h = side_w - 16, int(H * 0.60)
    small_w, small_h = (side_w - 16 - 2 * 8) // 3, H - 70 - occ_h - 24
    return side_w, occ_w, occ_h, small_w, small_h


def occlusal_raster(mesh: Mesh, frame: ArchFrame, size_px: tuple[int, int] = (1400, 960)) -> Raster:
    """The Raster of write_arch_sheet's large occlusal view of `mesh` in `frame` (the view reads
    only the frame's axes: patient up names sides, it moves nothing). The picture does not
    change when the mesh and its frame move rigidly together (up to rounding in the last bits:
    a pixel centre on an edge two faces share, where rounding picks either face's shade; a
    relief grid on whole pixels differs in ~3 % of its pixels, all on its cells' diagonals,
    tests/test_preview_schedule_review.py; scans: 0-5 pixels of 550k): a pair job draws it from the moving scan in its own frame while the registration runs, and
    uses it for the aligned scan when the aligned scan's frame is the moved frame (jobs/
    pipeline.py). Time O(F + C), memory O(F + H * W) (raster_geometry)."""
    _, occ_w, occ_h, _, _ = _layout(size_px)
    view = View("occlusal view", frame.x, frame.anterior, frame.occlusal)
    return raster_geometry(mesh.vertices, mesh.faces, view, occ_w, occ_h, normals=frame_normals(frame, mesh))


def sheet_geometry(
    mesh: Mesh,
    frame: ArchFrame,
    superior: np.ndarray | None,
    size_px: tuple[int, int] = (1400, 960),
    pool: Executor | None = None,
    large: Raster | None = None,
) -> SheetGeometry:
    """The SheetGeometry of write_arch_sheet(mesh, ..., frame, superior, size_px=size_px).
    pool: the small views are drawn there while this thread draws the large one. large: the
    large view's Raster made beforehand (occlusal_raster: of this mesh and frame, or of a rigid
    copy in its moved frame); None, or one of another size than this sheet's: drawn here.
    Time O(N log N + F + H * W) (raster_geometry of the full mesh, cluster_cells and three
    raster_geometry of the merged one), memory O(N + F + H * W): at 150k vertices ~130 MB at
    the peak (the candidates' temporaries, at most CHUNK at a time), ~10 MB held by the result."""
    views = arch_views(frame, superior)
    _, occ_w, occ_h, small_w, small_h = _layout(size_px)
    v = mesh.vertices
    cols = (v[:, 0], v[:, 1], v[:, 2])
    span = max(max(float(np.ptp(_dot(cols, vv.right))) for vv in views[1:]), 1e-6)
    args = (v, mesh.faces, views[1:], (small_w, small_h), span)
    small = pool.submit(_small_geometry, *args) if pool is not None else None
    if large is None or (large.width, large.height) != (occ_w, occ_h):  # another sheet size's: not this one
        large = raster_geometry(v, mesh.faces, views[0], occ_w, occ_h, normals=frame_normals(frame, mesh))
    cells, small_rasters = small.result() if small is not None else _small_geometry(*args)
    return SheetGeometry(v, mesh.faces, frame, superior, (size_px[0], size_px[1]), views, large, small_rasters, cells)


def write_arch_sheet(
    path: str | Path,
    mesh: Mesh,
    values: np.ndarray,
    frame: ArchFrame,
    superior: np.ndarray | None,
    ramp: ColorRamp,
    title: str,
    subtitle: str,
    arch_name: str,
    histogram: dict | None = None,
    band_mm: float | None = None,
    tolerance_mm: float | None = None,
    size_px: tuple[int, int] = (1400, 960),
    geometry: SheetGeometry | None = None,
) -> Path:
    """The deviation sheet: a large occlusal view, frontal and both buccal views, the colour bar
    with units and legend, the histogram, arch and patient sides named on the views.

    geometry: sheet_geometry(mesh, frame, superior, size_px) made beforehand (used when it
    `fits` these arguments, else made here: the same picture either way). Then the sheet costs
    O(H * W + N) (colouring the drawn pixels, the cell means, composing, the PNG)."""
    W, H = size_px
    sheet = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _text(draw, (16, 12), title, 17, bold=True)
    _text(draw, (16, 38), subtitle, 13, MUTED)
    side_w, occ_w, occ_h, small_w, small_h = _layout(size_px)
    # Two threads (numpy and zlib work without the GIL): the small views on a helper while this
    # thread draws the large one and the legends, then the PNG's two halves side by side.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlutrace-sheet") as helper:
        if geometry is None or not geometry.fits(mesh, frame, superior, size_px):
            geometry = sheet_geometry(mesh, frame, superior, size_px, helper)
        views = geometry.views
        image = paint(geometry.large, values, ramp)
        _paste_view(sheet, draw, image, (16, 64), views[0], f"{arch_name} \u2013 {views[0].name}")
        _scale_bar(draw, 16 + occ_w - 12, 64 + occ_h - 24, geometry.large.scale)
        x = side_w + 20
        y = draw_colorbar(sheet, draw, ramp, x, 70, int(H * 0.38), band_mm)
        if histogram is not None:
            n_nan = int(np.sum(~np.isfinite(np.asarray(values, dtype=np.float64))))
            draw_histogram(
                sheet, draw, histogram, ramp, (x, y + 16, W - 16, min(H - 16, y + 16 + 280)), tolerance_mm, n_nan
            )
        small_values = cell_means(values, *geometry.cells)
        for i, (view, raster) in enumerate(zip(views[1:], geometry.small)):
            img = paint(raster, small_values, ramp)
            _paste_view(sheet, draw, img, (16 + i * (small_w + 8), 64 + occ_h + 12), view, view.name)
        return _save(sheet, path, helper)


def _small_geometry(
    v: np.ndarray,
    faces: np.ndarray,
    views: list[View],
    size: tuple[int, int],
    span: float,
) -> tuple[tuple[np.ndarray, np.ndarray], list[Raster]]:
    """The sheet's small views before colour, at one scale (`span` mm across), and the cells
    (cluster_cells' vertex cells and counts) whose value means colour them.

    They show faces of a dense scan below a pixel: a mesh merged to ~1.5 px cells looks the same
    there and costs a fraction (the large occlusal view uses the full mesh)."""
    w, h = size
    sv, sf, inverse, counts = cluster_cells(v, faces, 1.5 * span / max(min(w, h) - 16, 1))
    normals = face_normals(sv, sf)
    return (inverse, counts), [raster_geometry(sv, sf, view, w, h, extent=span, normals=normals) for view in views]


def render_occlusal(
    panel: Panel, ramp: ColorRamp, width_px: int, height_px: int
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Image (float RGB in [0, 1]) of the panel seen from its occlusal side and its extent in mm."""
    frame = panel.frame
    view = View("occlusal", frame.x, frame.anterior, frame.occlusal)
    image, scale = rasterize(
        panel.mesh.vertices,
        panel.mesh.faces,
        panel.values,
        view,
        ramp,
        width_px,
        height_px,
        normals=frame_normals(frame, panel.mesh),
    )
    hw, hh = width_px / (2 * scale), height_px / (2 * scale)
    return image.astype(np.float64) / 255.0, (-hw, hw, -hh, hh)


def write_preview(
    path: str | Path, panels: list[Panel], ramp: ColorRamp, title: str, size_px: tuple[int, int] = (800, 600)
) -> Path:
    """A PNG of occlusal panels side by side with one labelled colour bar; returns the path.

    Two threads (numpy and zlib release the GIL): the panels after the first are drawn on a
    helper while this thread draws the first (a bite's two arches: ~0.05 s CPU each at 120k
    vertices), then the PNG's two bands side by side; each panel is the one-thread picture.
    Per panel rasterize's O(F + C) time and O(F + H * W) memory."""
    width, height = size_px
    bar_w = 260
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _text(draw, (12, 10), title, 14, bold=True)
    n = max(1, len(panels))
    pw, ph = (width - bar_w - 12 - 8 * (n - 1) - 12) // n, height - 48
    views = [
        View(
            "occlusal",
            panel.frame.x,
            panel.frame.anterior,
            panel.frame.occlusal,
            panel.left_label,
            panel.right_label,
            "anterior",
        )
        for panel in panels
    ]

    def picture(i: int) -> tuple[np.ndarray, float]:
        panel = panels[i]
        normals = frame_normals(panel.frame, panel.mesh)
        return rasterize(panel.mesh.vertices, panel.mesh.faces, panel.values, views[i], ramp, pw, ph, normals=normals)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlutrace-sheet") as helper:
        later = [helper.submit(picture, i) for i in range(1, len(panels))]
        pictures = [picture(0)] + [f.result() for f in later] if panels else []
        for i, (panel, (image, scale)) in enumerate(zip(panels, pictures)):
            _paste_view(sheet, draw, image, (12 + i * (pw + 8), 38), views[i], panel.title)
            _scale_bar(draw, 12 + i * (pw + 8) + pw - 12, 38 + ph - 26, scale)
        draw_colorbar(sheet, draw, ramp, width - bar_w + 8, 44, max(60, height - 190))
        return _save(sheet, path, helper)
