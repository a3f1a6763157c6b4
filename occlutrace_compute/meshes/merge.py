"""Exact-equality vertex merge: STL stores every triangle corner separately."""

from __future__ import annotations

import numpy as np

_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> None:
    """splitmix64's finaliser, in place: a bijection in which every input bit moves every output
    bit (float coordinates have long runs of zero low bits that a plain multiply would keep)."""
    z ^= z >> np.uint64(30)
    z *= _C1
    z ^= z >> np.uint64(27)
    z *= _C2
    z ^= z >> np.uint64(31)


def _hash(bits: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of three 32- or 64-bit words."""
    if bits.dtype == np.uint32:
        words = [bits[:, 0].astype(np.uint64) | (bits[:, 1].astype(np.uint64) << np.uint64(32)), bits[:, 2]]
    else:
        words = [bits[:, 0], bits[:, 1], bits[:, 2]]
    h = np.zeros(len(bits), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for w in words:
            h ^= w
            _mix(h)
    return h


def merge_exact(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows (bitwise equal) in order of first appearance, and each row's index into them.

    One np.sort of 64-bit keys (hash in the high bits, row index in the low bits) groups equal
    rows and yields each group's first row; that is several times faster than np.unique(axis=0)
    or an argsort. Hash collisions are found by comparing every row with its group's first row
    and only the rows of colliding groups are then grouped exactly.
    """
    rows = np.ascontiguousarray(rows)
    n = len(rows)
    if n == 0:
        return rows, np.empty(0, dtype=np.int64)
    bits = rows.view(np.uint32 if rows.dtype.itemsize == 4 else np.uint64).reshape(n, 3)
    shift = np.uint64(max(1, int(n - 1).bit_length()))
    low = (np.uint64(1) << shift) - np.uint64(1)
    keys = np.sort((_hash(bits) & ~low) | np.arange(n, dtype=np.uint64))
    order = (keys & low).astype(np.int64)
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(keys[1:] >> shift, keys[:-1] >> shift, out=new_group[1:])
    first = order[new_group]  # keys sort by index within a hash group: the first appearance
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new_group) - 1
    group_first = first[inverse]
    differs = np.zeros(n, dtype=bool)
    for j in range(3):  # column by column: 1-D gathers are much faster than row gathers
        column = np.ascontiguousarray(bits[:, j])
        differs |= np.take(column, group_first) != column
    mismatch = np.flatnonzero(differs)
    if len(mismatch):
        first, inverse = _split_collisions(bits, first, inverse, mismatch)
    # renumber groups by first appearance without a sort: first rows are distinct row indices
    is_first = np.zeros(n + 1, dtype=bool)
    is_first[first] = True
    rank = (np.cumsum(is_first) - 1)[first]
    return rows[np.flatnonzero(is_first[:n])], rank[inverse]


def _split_collisions(bits, first, inverse, mismatch):
    """Regroup exactly the rows of hash groups that hold different rows; retire those groups."""
    bad = np.unique(inverse[mismatch])
    idx = np.flatnonzero(np.isin(inverse, bad))
    _, sub_first, sub_inverse = np.unique(bits[idx], axis=0, return_index=True, return_inverse=True)
    first = first.copy()
    first[bad] = len(bits)  # retired: no row refers to these groups any more
    inverse[idx] = len(first) + sub_inverse.reshape(-1)
    return np.concatenate([first, idx[sub_first]]), inverse
