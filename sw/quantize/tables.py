"""Rounding, the integer power tables and the search helpers every quantizer shares.

:func:`round_half_away` is :func:`sparqforge.sw.golden.numerics.round_half_away` (NumPy);
``_round_half_away_t`` is its torch twin, the same formula on tensors. The clipping search
(:func:`_search_clip`), the golden-section search (:func:`_golden`) and the nearest-level
lookup (:func:`_nearest`) serve the weight and the activation quantizers alike.
"""

__all__ = ["EXPONENT_RANGE", "round_half_away", "power_table", "power_act_table"]

import math

import numpy as np
import torch

from ..golden.numerics import OPERAND_BITS, check_operand, round_half_away

#: Bounds of the power exponent ``a`` for the data-free search and the data-driven optimiser.
#: A user-fixed exponent (``exponent=``) may be any finite number > 0.
EXPONENT_RANGE = (0.05, 4.0)

# Clipping search: candidate clip ratios (of the channel's largest magnitude) on a geometric
# grid, then a finer grid between the neighbours of the best coarse ratio, per channel.
_CLIP_COARSE = np.geomspace(0.01, 1.0, 28)
_CLIP_FINE = 9
# Exponent search: a geometric grid over EXPONENT_RANGE, then golden-section refinement in
# log(a) between the neighbours of the best grid point (the error is locally convex in a).
_EXP_COARSE = 17

_METHODS = ("power", "uniform")


def _round_half_away_t(x):
    """:func:`round_half_away` on a tensor, in its dtype: the same formula (integer part split
    off first, then the fraction compared with 0.5), so the two agree on every value."""
    mag = x.abs()
    whole = torch.floor(mag)
    return torch.sign(x) * (whole + (mag - whole >= 0.5).to(x.dtype))


def _check_power_widths(name, bits, mac_bits):
    check_operand(name, bits, True)
    if (not isinstance(mac_bits, int) or isinstance(mac_bits, bool)
            or mac_bits not in OPERAND_BITS):
        raise TypeError(f"MAC operand width must be an integer in 2..8, not {mac_bits!r}")
    if mac_bits < bits:
        raise ValueError(f"MAC operand width must be at least the {name.lower()} width "
                         f"{bits}, not {mac_bits}")


def _check_exponent(exponent):
    try:
        a = float(exponent)
    except (TypeError, ValueError):
        a = float("nan")
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"Power exponent must be a finite number > 0, not {exponent!r}")
    return a


def power_table(bits, exponent, mac_bits=8):
    """Integer dequantization table of power weight codes, as the hardware holds it.

    Entry ``q & (2**bits - 1)`` (the code's two's-complement bit pattern) holds
    ``T[q] = sign(q) * round_half_away(T_max * (|q|/Q) ** (1/a))`` for ``q`` in ``[-Q, Q]``,
    ``Q = 2**(bits-1) - 1``, ``T_max = 2**(mac_bits-1) - 1``. The unused pattern of
    ``-2**(bits-1)`` holds 0.

    Parameters
    ----------
    bits : int
        Weight code width, 2..8.
    exponent : float
        The power exponent ``a > 0``.
    mac_bits : int
        Signed MAC operand width, ``bits``..8.

    Returns
    -------
    numpy.ndarray
        ``int64``, ``2**bits`` entries, values in ``[-T_max, T_max]``.

    Raises
    ------
    TypeError
        If a width is not an integer in 2..8.
    ValueError
        If ``mac_bits < bits`` or the exponent is not a finite number > 0.

    >>> power_table(3, 0.5).tolist()
    [0, 14, 56, 127, 0, -127, -56, -14]
    """
    _check_power_widths("Weight", bits, mac_bits)
    a = _check_exponent(exponent)
    q_max = (1 << (bits - 1)) - 1
    t_max = (1 << (mac_bits - 1)) - 1
    q = np.arange(q_max + 1)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        mag = t_max * (q / q_max) ** (1.0 / a)
    t = round_half_away(mag).astype(np.int64)
    table = np.zeros(1 << bits, dtype=np.int64)
    table[:q_max + 1] = t
    table[(1 << bits) - q[1:]] = -t[1:]
    return table


def power_act_table(bits, exponent, mac_bits=8):
    """Integer table of unsigned power activation codes.

    ``A[c] = round_half_away(A_max * (c / (2**bits - 1)) ** (1/a))`` for ``c`` in
    ``[0, 2**bits - 1]`` with ``A_max = 2**mac_bits - 1`` (an unsigned MAC input). Code ``c``
    stands for ``beta * A[c] / A_max``.

    Raises
    ------
    TypeError
        If a width is not an integer in 2..8.
    ValueError
        If ``mac_bits < bits`` or the exponent is not a finite number > 0.

    >>> power_act_table(2, 0.5).tolist()
    [0, 28, 113, 255]
    """
    _check_power_widths("Activation", bits, mac_bits)
    a = _check_exponent(exponent)
    c_max = (1 << bits) - 1
    a_max = (1 << mac_bits) - 1
    c = np.arange(c_max + 1)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        mag = a_max * (c / c_max) ** (1.0 / a)
    return round_half_away(mag).astype(np.int64)


def _distinct(levels):
    """Distinct non-negative table magnitudes (ascending) and the smallest code of each."""
    mags, first = np.unique(levels, return_index=True)
    return mags.astype(np.float64), first.astype(np.int64)


def _bucket(mids, x):
    """Number of ``mids`` strictly below each ``x`` (``searchsorted(..., side="left")``)."""
    if len(mids) > 15:
        return np.searchsorted(mids, x, side="left")
    idx = np.zeros(np.shape(x), dtype=np.intp)
    for m in mids:  # faster than searchsorted for a handful of boundaries
        idx += x > m
    return idx


def _nearest(mags, x):
    """Index into ascending ``mags`` of the value nearest to each ``x``; ties go down."""
    return _bucket((mags[1:] + mags[:-1]) / 2, x)


def _search_clip(err_fn, channels):
    """Per-channel clip ratio minimising ``err_fn(ratios) -> errors``, both ``[channels]``."""
    best_e = np.full(channels, np.inf)
    best_r = np.ones(channels)
    for r in _CLIP_COARSE:
        e = err_fn(np.full(channels, r))
        better = e < best_e
        best_e = np.where(better, e, best_e)
        best_r = np.where(better, r, best_r)
    step = _CLIP_COARSE[1] / _CLIP_COARSE[0]
    center = best_r.copy()
    for f in np.geomspace(1 / step, step, _CLIP_FINE):
        r = np.minimum(center * f, 1.0)
        e = err_fn(r)
        better = e < best_e
        best_e = np.where(better, e, best_e)
        best_r = np.where(better, r, best_r)
    return best_r, best_e


def _golden(f, lo, hi, iterations):
    """Golden-section search of ``f`` on ``[lo, hi]`` (the caller caches and picks the best)."""
    g = (math.sqrt(5) - 1) / 2
    xa, xb = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(iterations):
        if f(xa) <= f(xb):
            hi, xb = xb, xa
            xa = hi - g * (hi - lo)
        else:
            lo, xa = xa, xb
            xb = lo + g * (hi - lo)


def _as_float_tensor(x, what):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor or NumPy array, not {type(x).__name__}")
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32,
                                                 torch.int64, torch.uint8)):
        raise TypeError(f"{what} must hold real numbers, not {x.dtype}")
    x = x.detach()
    if x.numel() and not bool(torch.isfinite(x.to(torch.float64)).all()):
        raise ValueError(f"{what} contains NaN or inf; clean it before quantizing")
    return x
