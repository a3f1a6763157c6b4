"""Exact-equality vertex merge: STL stores every triangle corner separately."""

from __future__ import annotations

import numpy as np

_C1, _C2, _C3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _words(bits: np.ndarray) -> list[np.ndarray]:
    """The rows of (n, 3) uint32 or uint64 bits as contiguous 1-D uint64 words: (x, y) read as
    one word and z for uint32 rows (a row of 12 bytes: 2 words), x, y, z for uint64 rows."""
    n = len(bits)
    if bits.dtype == np.uint32:
        bits = np.ascontiguousarray(bits)
        xy = np.ndarray((n,), dtype=np.uint64, buffer=bits, strides=(12,)) if n else np.empty(0, np.uint64)
        return [xy.copy(), bits[:, 2].astype(np.uint64)]
    return [np.ascontiguousarray(bits[:, j]) for j in range(3)]


def _hash(bits: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of three 32- or 64-bit words, good in its high bits (the merge sorts
    on those): multiply-xor rounds, where bit k of a product depends on input bits 0..k, so every
    input bit reaches the top bits, and a shift brings the high half down before the next word;
    float coordinates' long runs of zero low bits do not survive it. ~8 passes over n words."""
    words = _words(bits)
    h = words[0].copy()
    with np.errstate(over="ignore"):
        for i, c in enumerate((_C1, _C2, _C3)[: len(words)]):
            if i:
                h ^= words[i]
            h *= c
            h ^= h >> np.uint64(32)  # the high half back down: the next product spreads it again
    return h


def merge_exact(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows (bitwise equal) in order of first appearance, and each row's index into them.

    One np.sort of 64-bit keys (hash in the high bits, row index in the low bits) groups equal
    rows and yields each group's first row; that is several times faster than np.unique(axis=0)
    or an argsort. Hash collisions are found by comparing every row with its group's first row
    (2 words a row for float32 rows, 3 for float64) and only the rows of colliding groups are
    then grouped exactly. Time O(n log n) (the sort), ~25 passes over n words; memory ~10
    words a row.
    """
    rows = np.ascontiguousarray(rows)
    n = len(rows)
    if n == 0:
        return rows, np.empty(0, dtype=np.int64)
    bits = rows.view(np.uint32 if rows.dtype.itemsize == 4 else np.uint64).reshape(n, 3)
    shift = np.uint64(max(1, int(n - 1).bit_length()))
    low = (np.uint64(1) << shift) - np.uint64(1)
    keys = _hash(bits)
    keys &= ~low
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    group = keys >> shift
    keys &= low
    order = keys.view(np.int64)
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(group[1:], group[:-1], out=new_group[1:])
    del group
    first = order[new_group]  # keys sort by index within a hash group: the first appearance
    inverse = np.empty(n, dtype=np.int64)
    number = np.cumsum(new_group)
    number -= 1
    inverse[order] = number
    del number, order, keys
    group_first = first[inverse]
    differs = np.zeros(n, dtype=bool)
    for column in _words(bits):  # column by column: 1-D gathers are much faster than row gathers
        differs |= np.take(column, group_first) != column
    mismatch = np.flatnonzero(differs)
    if len(mismatch):
        first, inverse = _split_collisions(bits, first, inverse, mismatch)
    # renumber groups by first appearance without a sort: first rows are distinct row indices
    is_first = np.zeros(n + 1, dtype=bool)
    is_first[first] = True
    rank = np.cumsum(is_first)
    rank -= 1
    return rows[np.flatnonzero(is_first[:n])], rank[first][inverse]


def _split_collisions(bits, first, inverse, mismatch):
    """Regroup exactly the rows of hash groups that hold different rows; retire those groups."""
    bad = np.unique(inverse[mismatch])
    idx = np.flatnonzero(np.isin(inverse, bad))
    _, sub_first, sub_inverse = np.unique(bits[idx], axis=0, return_index=True, return_inverse=True)
    first = first.copy()
    first[bad] = len(bits)  # retired: no row refers to these groups any more
    inverse[idx] = len(first) + sub_inverse.reshape(-1)
    return np.concatenate([first, idx[sub_first]]), inverse
