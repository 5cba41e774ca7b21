"""Golden model of ``hw.mac_array.MacArray``: integer matmul, bias, requantization, clamp."""

__all__ = ["matmul", "requantize_layer", "mac_array"]

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
    return requantize_layer(matmul(a, w, acc_bits=acc_bits), bias=bias, multiplier=multiplier,
                            shift=shift, zero_point=zero_point, relu=relu, out_bits=out_bits,
                            out_signed=out_signed)


def requantize_layer(acc, *, bias, multiplier, shift, zero_point, relu, out_bits, out_signed):
    """The requantizer stage alone: int32 bias add (saturating), gemmlowp rescale, zero
    point, clamp to the output type raised to the zero point where ``relu`` is set."""
    x = add_bias(acc, bias)
    qmin, qmax = output_range(out_bits, out_signed, zero_point=zero_point, relu=relu)
    return requantize(x, multiplier, shift, zero_point=zero_point, qmin=qmin, qmax=qmax)
