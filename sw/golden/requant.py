"""gemmlowp / TFLite reference requantization, bit for bit, vectorised over NumPy arrays.

The variant is TFLite's *double-rounding* ``MultiplyByQuantizedMultiplier``:
``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**max(shift, 0), multiplier),
max(-shift, 0))``. Every function works on ``int64`` arrays holding int32 values and emulates C
truncating division where gemmlowp uses it. ``docs/numerics.md`` states the semantics.
"""

__all__ = [
    "SHIFT_MIN", "SHIFT_MAX", "MULTIPLIER_BITS",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "saturating_left_shift", "multiply_by_quantized_multiplier", "quantize_multiplier",
    "add_bias", "requantize", "output_range",
]

import numpy as np

from .numerics import INT32_MIN, INT32_MAX, operand_range

#: Range of the ``shift`` exponent the hardware stores (a 6-bit signed field).
SHIFT_MIN = -31
SHIFT_MAX = 30
#: The fixed-point multiplier is non-negative and below 2**31.
MULTIPLIER_BITS = 31


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values.

    Returns the high 32 bits of ``2 * a * b``, rounded to nearest; the nudge
    (``2**30``, or ``1 - 2**30`` for a negative product) followed by C's truncating division
    sends ties toward +infinity (``1.5 -> 2``, ``-1.5 -> -1``). Saturates the single overflow
    case ``a == b == INT32_MIN``.

    >>> int(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30))
    536870912
    >>> int(saturating_rounding_doubling_high_mul(3, 1 << 30))  # 1.5
    2
    >>> int(saturating_rounding_doubling_high_mul(-3, 1 << 30))  # -1.5
    -1
    >>> int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN))
    2147483647
    """
    a, b = _i64(a), _i64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = ab + nudge
    # C division truncates toward zero; NumPy's >> floors, so divide the magnitude.
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    return np.where(overflow, np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    >>> rounding_divide_by_pot(np.array([5, -5, 6, -6, 7]), 1).tolist()
    [3, -3, 3, -3, 4]
    """
    x, exponent = _i64(x), _i64(exponent)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("RoundingDivideByPOT exponent must be in 0..31")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_left_shift(x, amount):
    """``x * 2**amount`` saturated to int32.

    gemmlowp leaves an overflowing left shift undefined; sparqforge defines it as saturation
    (see docs/numerics.md). In the range where C is defined the two agree.

    >>> saturating_left_shift(np.array([3, -3, 1 << 30]), 2).tolist()
    [12, -12, 2147483647]
    """
    shifted = _i64(x) << _i64(amount)
    return np.clip(shifted, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding) with a saturating left shift.

    >>> m, s = quantize_multiplier(0.25)
    >>> multiply_by_quantized_multiplier(np.array([10, -10, 6, -6]), m, s).tolist()
    [3, -3, 2, -2]
    """
    x, multiplier, shift = _i64(x), _i64(multiplier), _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = saturating_rounding_doubling_high_mul(saturating_left_shift(x, left), multiplier)
    return rounding_divide_by_pot(high, right)


def quantize_multiplier(real_multiplier):
    """Split a non-negative real multiplier into an int32 fixed-point multiplier and a shift.

    Follows TFLite ``QuantizeMultiplier``: ``(q, e) = frexp(real)``,
    ``multiplier = round_half_away(q * 2**31)`` (renormalised when it reaches 2**31) and
    ``shift = e``, so that ``real ~= multiplier * 2**(shift - 31)``. Multipliers too small to
    represent (``shift < -31``) become ``(0, 0)``, which maps everything to zero.

    Returns plain ``int`` values for a scalar input, ``int64`` arrays otherwise.

    Raises
    ------
    ValueError
        If a multiplier is negative, not finite, or needs ``shift > 30``.

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(0.0)
    (0, 0)
    >>> quantize_multiplier(np.array([1.0, 0.001]))[1].tolist()
    [1, -9]
    """
    real = np.asarray(real_multiplier, dtype=np.float64)
    if not np.all(np.isfinite(real)) or np.any(real < 0):
        raise ValueError(f"Real multiplier must be finite and non-negative, not {real_multiplier!r}")
    q, e = np.frexp(real)
    e = e.astype(np.int64)
    # q * 2**31 is exact in binary64; floor(x + 0.5) is round half away from zero for x >= 0.
    m = np.floor(q * float(1 << 31) + 0.5).astype(np.int64)
    renorm = m == (1 << 31)
    m = np.where(renorm, m // 2, m)
    e = np.where(renorm, e + 1, e)
    tiny = (e < SHIFT_MIN) | (m == 0)
    m = np.where(tiny, 0, m)
    e = np.where(tiny, 0, e)
    if np.any(e > SHIFT_MAX):
        raise ValueError(f"Real multiplier too large for a shift of at most {SHIFT_MAX}: "
                         f"{float(np.max(real))!r}")
    if real.ndim == 0:
        return int(m), int(e)
    return m, e


def add_bias(acc, bias):
    """``acc + bias`` saturated to int32: the only saturation before requantization.

    >>> add_bias(np.array([INT32_MAX, 5]), np.array([1, -7])).tolist()
    [2147483647, -2]
    """
    return np.clip(_i64(acc) + _i64(bias), INT32_MIN, INT32_MAX)


def output_range(out_bits, out_signed, zero_point=0, relu=False):
    """Clamp bounds ``(qmin, qmax)`` of an output code; ReLU raises ``qmin`` to the zero point.

    ``zero_point`` and ``relu`` may be per-channel arrays; ``qmin`` then is one too.

    >>> output_range(8, True, zero_point=-128, relu=True)
    (-128, 127)
    >>> output_range(4, False, zero_point=3, relu=True)
    (3, 15)
    """
    qmin, qmax = operand_range(out_bits, out_signed)
    relu_min = np.where(np.asarray(relu, dtype=bool), np.maximum(qmin, zero_point), qmin)
    return (int(relu_min) if relu_min.ndim == 0 else relu_min), qmax


def requantize(acc, multiplier, shift, zero_point=0, qmin=-128, qmax=127):
    """Rescale int32 accumulators to output codes (gemmlowp double rounding), then clamp.

    ``multiplier``, ``shift`` and ``zero_point`` broadcast along the last axis of ``acc``
    (one value per output channel), as do ``qmin`` / ``qmax``.

    >>> m, s = quantize_multiplier(0.5)
    >>> requantize(np.array([[3, -3, 1000]]), m, s, zero_point=1).tolist()
    [[3, 0, 127]]
    """
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift)
    return np.clip(scaled + _i64(zero_point), _i64(qmin), _i64(qmax))
