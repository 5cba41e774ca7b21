"""Golden model of ``hw.mac_array.MacArray``: integer matmul, bias, requantization, clamp."""

__all__ = ["matmul", "mac_array"]

import numpy as np

from .numerics import wrap_signed
from .requant import add_bias, output_range, requantize


def matmul(a, w, *, acc_bits=None):
    """Integer matmul ``a @ w`` in int64; wraps to ``acc_bits`` when given, as the
    accumulator register does (it cannot wrap within the array's ``max_depth``).

    >>> matmul(np.array([[-128, -128]]), np.array([[-128], [-128]])).tolist()
    [[32768]]
    >>> matmul(np.array([[-128, -128]]), np.array([[-128], [-128]]), acc_bits=16).tolist()
    [[-32768]]
    """
    acc = np.asarray(a, dtype=np.int64) @ np.asarray(w, dtype=np.int64)
    return acc if acc_bits is None else wrap_signed(acc, acc_bits)


def mac_array(a, w, *, bias, multiplier, shift, zero_point, relu, out_bits, out_signed,
              acc_bits=None):
    """Output codes of a matmul layer as the MAC array with its requantizer computes them.

    Parameters
    ----------
    a : array [M, K]
        Activation codes.
    w : array [K, N]
        Weight codes.
    bias, multiplier, shift, zero_point, relu : array [N] or scalar
        Per-output-channel requantization parameters (see :func:`requantize`).
    out_bits, out_signed :
        Output code type; ReLU clamps at the zero point.
    acc_bits : int, optional
        Accumulator width (wraps there).

    Returns
    -------
    array [M, N] of int64 output codes.
    """
    acc = add_bias(matmul(a, w, acc_bits=acc_bits), bias)
    qmin, qmax = output_range(out_bits, out_signed, zero_point=zero_point, relu=relu)
    return requantize(acc, multiplier, shift, zero_point=zero_point, qmin=qmin, qmax=qmax)
