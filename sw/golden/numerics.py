"""Integer operand types and accumulator sizing shared by every block, and the
round-half-away-from-zero helper the quantizers, the export and the bundle share.

The widths are plain Python integers; the hardware generators, the golden model, the
runtime and the tests all derive their widths from these functions, so a width exists in
exactly one place. See ``docs/numerics.md`` for the proof behind :func:`acc_bits`.
"""

__all__ = [
    "OPERAND_BITS", "INT32_MIN", "INT32_MAX",
    "operand_range", "product_range", "signed_bits_for", "acc_bits", "max_depth_for",
    "check_operand", "wrap_signed", "round_half_away",
]

import numpy as np

#: Operand widths every MAC array accepts, for activations and weights alike.
OPERAND_BITS = range(2, 9)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def check_operand(name, bits, signed):
    """Validate one operand type; raise the project-wide error message on a bad value.

    >>> check_operand("Weight", 4, True)
    >>> check_operand("Weight", 9, True)
    Traceback (most recent call last):
    ...
    TypeError: Weight width must be an integer in 2..8, not 9
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in OPERAND_BITS:
        raise TypeError(f"{name} width must be an integer in 2..8, not {bits!r}")
    if not isinstance(signed, bool):
        raise TypeError(f"{name} signedness must be a bool, not {signed!r}")


def operand_range(bits, signed):
    """Inclusive ``(lo, hi)`` range of a ``bits``-wide operand.

    >>> operand_range(8, True)
    (-128, 127)
    >>> operand_range(2, False)
    (0, 3)
    """
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def product_range(a_bits, a_signed, w_bits, w_signed):
    """Inclusive range of one product ``a * w``; always contains 0.

    >>> product_range(8, True, 8, True)
    (-16256, 16384)
    >>> product_range(4, False, 4, True)
    (-120, 105)
    """
    a_lo, a_hi = operand_range(a_bits, a_signed)
    w_lo, w_hi = operand_range(w_bits, w_signed)
    corners = (a_lo * w_lo, a_lo * w_hi, a_hi * w_lo, a_hi * w_hi)
    return min(corners), max(corners)


def signed_bits_for(lo, hi):
    """Smallest width ``B`` of a two's-complement integer holding every value in ``[lo, hi]``.

    >>> signed_bits_for(-128, 127)
    8
    >>> signed_bits_for(0, 128)
    9
    """
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def acc_bits(*, a_bits, a_signed, w_bits, w_signed, max_depth):
    """Accumulator width that no sum of at most ``max_depth`` products can overflow.

    The sum of ``K <= max_depth`` products lies in ``[K * pmin, K * pmax]`` with
    ``pmin <= 0 <= pmax`` the product range, so it lies in
    ``[max_depth * pmin, max_depth * pmax]``; the result is the smallest signed width holding
    that interval.

    >>> acc_bits(a_bits=8, a_signed=True, w_bits=8, w_signed=True, max_depth=256)
    24
    >>> acc_bits(a_bits=2, a_signed=False, w_bits=2, w_signed=False, max_depth=1)
    5
    """
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 1:
        raise ValueError(f"Maximum reduction depth must be a positive integer, not {max_depth!r}")
    p_lo, p_hi = product_range(a_bits, a_signed, w_bits, w_signed)
    return signed_bits_for(max_depth * p_lo, max_depth * p_hi)


def max_depth_for(*, a_bits, a_signed, w_bits, w_signed, bits=32):
    """Largest reduction depth whose accumulator still fits in ``bits`` (default int32).

    >>> max_depth_for(a_bits=8, a_signed=True, w_bits=8, w_signed=True)
    131071
    """
    p_lo, p_hi = product_range(a_bits, a_signed, w_bits, w_signed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    limits = []
    if p_hi > 0:
        limits.append(hi // p_hi)
    if p_lo < 0:
        limits.append(lo // p_lo)
    return min(limits) if limits else hi


def wrap_signed(x, bits):
    """Wrap integers to ``bits``-wide two's complement, as hardware truncation does.

    >>> wrap_signed(np.array([127, 128, -129]), 8).tolist()
    [127, -128, 127]
    """
    x = np.asarray(x, dtype=np.int64)
    half = np.int64(1) << np.int64(bits - 1)
    return ((x + half) & ((np.int64(1) << np.int64(bits)) - 1)) - half


def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C ``round``), as float64.

    The integer part is split off first and only the fraction is compared with 0.5; both
    steps are exact for every finite float64. The shorter ``floor(|x| + 0.5)`` is not: the
    addition rounds, so it gives 1 for ``0.49999999999999994`` (the largest float64 below
    0.5) and is one too large for odd integers from ``2**52`` to ``2**53``. Infinities and
    NaN pass through.

    >>> round_half_away(np.array([0.49999999999999994, -0.5, 2.5, -2.5])).tolist()
    [0.0, -1.0, 3.0, -3.0]
    >>> round_half_away(np.array([0.5, 1.5, -1.5, 2.0 ** 52 + 1])).tolist()
    [1.0, 2.0, -2.0, 4503599627370497.0]
    """
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x)
    whole = np.floor(mag)
    with np.errstate(invalid="ignore"):  # inf - inf: the comparison is False, inf stays inf
        return np.sign(x) * (whole + (mag - whole >= 0.5))
