"""k-nearest-neighbour search over ragged batches, behind one interface.

Convention (PyTorch3D's): padded tensors `query` (B, P, 3), `ref` (B, R, 3) with optional
`query_lengths` / `ref_lengths` (B,) int64 giving how many rows of each batch item are real.
Result: squared distances (B, P, k) and indices into ref (B, P, k); padded query rows get
index -1 and distance +inf.
"""

from occlutrace_compute.nn.api import KnnResult, available_backends, knn

__all__ = ["KnnResult", "available_backends", "knn"]
