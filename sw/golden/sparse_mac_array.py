"""Golden model of ``hw.sparse_mac_array.SparseMacArray`` in sparse mode.

Computes directly on the compressed N:M form (gathering the activation each index selects),
an independent path from a dense matmul on the decompressed matrix; tests require the two to
agree. Dense mode of the array is :func:`~sparqforge.sw.golden.mac_array`.
"""

__all__ = ["sparse_matmul", "sparse_mac_array"]

import numpy as np

from .mac_array import requantize_layer
from .numerics import wrap_signed


def sparse_matmul(a, values, indices, *, n, m, acc_bits=None):
    """``a [M, K]`` times the compressed N:M weights of ``out`` channels.

    ``values`` / ``indices`` are ``[out, groups * n]`` (see ``sparqforge.sw.nm_format``);
    ``K`` is padded with zeros to ``groups * m``. Returns ``[M, out]`` int64 sums, wrapped to
    ``acc_bits`` when given.

    >>> sparse_matmul(np.array([[1, 2, 3, 4]]), np.array([[5, -1]]), np.array([[0, 3]]),
    ...               n=2, m=4).tolist()
    [[1]]
    """
    a = np.asarray(a, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    out, width = values.shape
    groups = width // n
    padded = np.zeros((a.shape[0], groups * m), dtype=np.int64)
    padded[:, :a.shape[1]] = a
    grouped = padded.reshape(a.shape[0], groups, m)
    idx = indices.reshape(out, groups, n)
    # gathered[i, o, g, j] = a[i, g * m + idx[o, g, j]]
    gathered = grouped[:, np.arange(groups)[None, :, None], idx]
    acc = np.einsum("iogj,ogj->io", gathered, values.reshape(out, groups, n))
    return acc if acc_bits is None else wrap_signed(acc, acc_bits)


def sparse_mac_array(a, values, indices, *, n, m, bias, multiplier, shift, zero_point, relu,
                     out_bits, out_signed, acc_bits=None):
    """Output codes of an N:M sparse layer as the sparse array computes them in sparse mode.

    Parameters as for :func:`sparse_matmul` and :func:`~sparqforge.sw.golden.mac_array`.
    """
    acc = sparse_matmul(a, values, indices, n=n, m=m, acc_bits=acc_bits)
    return requantize_layer(acc, bias=bias, multiplier=multiplier, shift=shift,
                            zero_point=zero_point, relu=relu, out_bits=out_bits,
                            out_signed=out_signed)
