"""k-nearest-neighbour search over ragged batches, behind one interface.

Convention (PyTorch3D's): padded tensors `query` (B, P, 3), `ref` (B, R, 3) with optional
`query_lengths` / `ref_lengths` (B,) int64 giving how many rows of each batch item are real.
Result: squared distances (B, P, k) and indices into ref (B, P, k); padded query rows get
index -1 and distance +inf.

Backends (`available_backends(device)` lists the usable ones, best first):
  cuda       our uniform-grid kernel (kernels/grid_knn.cu) via CuPy; GPU only, k <= 64
  pytorch3d  pytorch3d.ops.knn_points, when installed
  kdtree     a kd-tree (pykdtree, OpenMP queries) on the CPU cores; the CPU default
  torch      chunked brute force on any device, bounded memory
All but pytorch3d compute squared distances with the same formula, so they agree bit for bit.
"""

from occlutrace_compute.nn.api import KnnResult, available_backends, knn

__all__ = ["KnnResult", "available_backends", "knn"]
