"""Compressed N:M structured-sparse weight format (SAT / BDWP style), NumPy only.

A weight matrix ``[out, in]`` is N:M sparse when every group of ``M`` consecutive weights
along ``in`` (the reduction axis) holds at most ``N`` nonzeros. ``in`` is padded with zeros
to a multiple of ``M``; group ``g`` of row ``o`` covers ``in`` positions ``g*M .. g*M+M-1``.

Compressed form: ``values`` and ``indices``, both ``[out, groups * N]``; entries
``g*N .. g*N+N-1`` are group ``g``'s kept weights and their positions inside the group
(``0 .. M-1``), strictly ascending. A group with fewer than ``N`` nonzeros keeps explicit
zeros at the lowest positions not holding a nonzero, so every group has exactly ``N``
entries and indices stay ascending. ``docs/formats.md`` describes the format and the
PyTorch 2:4 metadata mapping.
"""

__all__ = ["NMFormatError", "check_nm", "index_bits", "groups_of", "find_violation", "compress",
           "decompress", "validate", "to_torch_2_4_meta", "from_torch_2_4_meta"]

import numpy as np


class NMFormatError(ValueError):
    """A matrix or compressed pair that breaks the N:M format; the message names the group."""


def check_nm(n, m):
    """Validate an N:M pattern.

    >>> check_nm(2, 4)
    >>> check_nm(5, 4)
    Traceback (most recent call last):
    ...
    ValueError: N:M sparsity requires 0 < N <= M, not 5:4
    """
    for value in (n, m):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"N:M sparsity needs integers, not {n!r}:{m!r}")
    if not 0 < n <= m:
        raise ValueError(f"N:M sparsity requires 0 < N <= M, not {n}:{m}")
    if not 2 <= m <= 16:
        raise ValueError(f"N:M sparsity requires 2 <= M <= 16, not {n}:{m}")


def index_bits(m):
    """Bits per kept index: ``ceil(log2(M))``.

    >>> index_bits(4), index_bits(8), index_bits(5)
    (2, 3, 3)
    """
    return max(1, (m - 1).bit_length())


def groups_of(in_features, m):
    """Number of groups after padding ``in_features`` to a multiple of ``m``."""
    return -(-in_features // m)


def _grouped(w, m):
    w = np.asarray(w)
    if w.ndim != 2:
        raise NMFormatError(f"N:M weights must be a 2-D [out, in] matrix, not shape {w.shape}")
    out, in_features = w.shape
    g = groups_of(in_features, m)
    padded = np.zeros((out, g * m), dtype=w.dtype)
    padded[:, :in_features] = w
    return padded.reshape(out, g, m)


def find_violation(w, n, m):
    """First ``(row, group, nonzeros)`` with more than ``N`` nonzeros, or ``None``."""
    check_nm(n, m)
    counts = np.count_nonzero(_grouped(w, m), axis=2)
    bad = np.argwhere(counts > n)
    if len(bad) == 0:
        return None
    row, group = (int(v) for v in bad[0])
    return row, group, int(counts[row, group])


def compress(w, n, m):
    """Compress an N:M-sparse ``[out, in]`` matrix into ``(values, indices)``.

    >>> values, indices = compress(np.array([[0, 3, 0, -2, 0, 0, 0, 0]]), 2, 4)
    >>> values.tolist(), indices.tolist()
    ([[3, -2, 0, 0]], [[1, 3, 0, 1]])

    Raises
    ------
    NMFormatError
        Naming the first group with more than ``N`` nonzeros.
    """
    bad = find_violation(w, n, m)
    if bad is not None:
        row, group, count = bad
        raise NMFormatError(f"Row {row}, group {group} (inputs {group * m}..{group * m + m - 1}) "
                            f"has {count} nonzeros, more than N={n} of {n}:{m}; prune it first")
    grouped = _grouped(w, m)
    # Sort key: nonzeros first, each class by position; the first N positions are kept.
    positions = np.arange(m)
    key = np.where(grouped != 0, positions, positions + m)
    kept = np.sort(np.argsort(key, axis=2, kind="stable")[:, :, :n], axis=2)
    values = np.take_along_axis(grouped, kept, axis=2)
    out = grouped.shape[0]
    return values.reshape(out, -1), kept.reshape(out, -1).astype(np.int64)


def validate(values, indices, n, m):
    """Check a compressed pair; raise :class:`NMFormatError` naming the first bad group
    (duplicate, descending or out-of-range indices, or mismatched shapes)."""
    check_nm(n, m)
    values, indices = np.asarray(values), np.asarray(indices)
    if values.shape != indices.shape or values.ndim != 2 or values.shape[1] % n:
        raise NMFormatError(f"Values {values.shape} and indices {indices.shape} must be equal "
                            f"[out, groups * {n}] matrices")
    out = values.shape[0]
    grouped = indices.reshape(out, -1, n)
    bad_range = (grouped < 0) | (grouped >= m)
    bad_order = np.zeros_like(bad_range)
    bad_order[:, :, 1:] = grouped[:, :, 1:] <= grouped[:, :, :-1]
    bad = np.argwhere((bad_range | bad_order).any(axis=2))
    if len(bad):
        row, group = (int(v) for v in bad[0])
        got = grouped[row, group].tolist()
        why = "out of range 0..%d" % (m - 1) if bad_range[row, group].any() else \
              "duplicate or not ascending"
        raise NMFormatError(f"Row {row}, group {group}: indices {got} are {why}")


def decompress(values, indices, n, m, in_features=None):
    """Exact inverse of :func:`compress`: the dense ``[out, in_features]`` matrix."""
    validate(values, indices, n, m)
    values, indices = np.asarray(values), np.asarray(indices)
    out = values.shape[0]
    groups = values.shape[1] // n
    dense = np.zeros((out, groups, m), dtype=values.dtype)
    np.put_along_axis(dense, indices.reshape(out, groups, n), values.reshape(out, groups, n),
                      axis=2)
    dense = dense.reshape(out, groups * m)
    return dense if in_features is None else dense[:, :in_features]


def to_torch_2_4_meta(indices):
    """PyTorch 2:4 metadata nibbles ``idx0 | idx1 << 2`` per group, ``uint8 [out, groups]``.

    This is the per-group convention of ``torch.sparse`` semi-structured tensors, before
    the CUTLASS-specific interleaving of nibbles into int16 words.

    >>> to_torch_2_4_meta(np.array([[1, 3, 0, 1]])).tolist()
    [[13, 4]]
    """
    validate(np.zeros_like(indices), indices, 2, 4)
    pairs = np.asarray(indices).reshape(len(indices), -1, 2)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 2)).astype(np.uint8)


def from_torch_2_4_meta(meta):
    """Inverse of :func:`to_torch_2_4_meta`."""
    meta = np.asarray(meta).astype(np.int64)
    indices = np.stack([meta & 3, (meta >> 2) & 3], axis=2).reshape(len(meta), -1)
    validate(np.zeros_like(indices), indices, 2, 4)
    return indices
