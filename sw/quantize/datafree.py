"""Data-free weight quantization: NumPy, float64, on a ``[channels, elements]`` matrix.

Power codes: the exponent from a coarse grid then a golden-section search of the weight
reconstruction error, the per-channel ``alpha`` from a clipping search, then every weight gets
the code of its nearest representable value. Uniform codes: the clipping range searched to
minimise the squared reconstruction error, symmetric or with a zero point.
"""

__all__ = []

import math

import numpy as np

from .tables import (EXPONENT_RANGE, _EXP_COARSE, _bucket, _distinct, _golden, _nearest,
                     _search_clip, power_table, round_half_away)

# Golden-section steps of the exponent search, between the neighbours of the best grid point.
_EXP_GOLDEN = 10
# The exponent search scores each candidate on at most this many weights (evenly strided
# channels, each channel whole); the scales are then searched on the whole tensor.
_EXP_SAMPLES = 1 << 15


def _power_codes(w2, alpha, bits, a, mac_bits):
    """Nearest-representable-value codes of ``w2`` [C, K] for per-row ``alpha`` [C]."""
    q_max = (1 << (bits - 1)) - 1
    t_max = (1 << (mac_bits - 1)) - 1
    mags, reps = _distinct(power_table(bits, a, mac_bits)[:q_max + 1])
    idx = _nearest(mags, np.abs(w2) * (t_max / alpha[:, None]))
    return (np.sign(w2) * reps[idx]).astype(np.int64)


def _power_alpha_search(w2, top, bits, a, mac_bits):
    """Best per-row alpha for exponent ``a``; returns ``(alpha, errors)``."""
    q_max = (1 << (bits - 1)) - 1
    t_max = (1 << (mac_bits - 1)) - 1
    mags, _ = _distinct(power_table(bits, a, mac_bits)[:q_max + 1])
    mids = (mags[1:] + mags[:-1]) / 2
    scaled = np.abs(w2) / top[:, None]  # in [0, 1]

    def err(r):
        idx = _bucket(mids, scaled * (t_max / r[:, None]))
        deq = mags[idx] * (r / t_max)[:, None]
        return ((scaled - deq) ** 2).sum(axis=1)

    r, e = _search_clip(err, len(top))
    return top * r, e * top ** 2


def _power_alpha(w2, bits, a, mac_bits, per_channel):
    """Weight-error-optimal alpha ``[C]`` of ``w2`` [C, K] (all-zero channels: 1.0)."""
    rows = w2 if per_channel else w2.reshape(1, -1)
    top = np.abs(rows).max(axis=1)
    zero = top == 0
    alpha, _ = _power_alpha_search(rows, np.where(zero, 1.0, top), bits, a, mac_bits)
    alpha = np.where(zero, 1.0, alpha)
    return alpha if per_channel else np.full(w2.shape[0], alpha[0])


def _power_datafree(w2, bits, mac_bits, exponent, per_channel):
    """Data-free power quantization of ``w2`` [C, K]: ``(codes, alpha [C], a)``."""
    rows = w2 if per_channel else w2.reshape(1, -1)
    top = np.abs(rows).max(axis=1)
    zero = top == 0
    q_max = (1 << (bits - 1)) - 1
    if exponent is not None:
        a = exponent
    elif q_max == 1 or np.all(zero):
        a = 1.0  # with codes {-1, 0, 1} (or nothing to code) the table does not depend on a
    else:
        keep = np.flatnonzero(~zero)
        keep = keep[::-(-len(keep) * rows.shape[1] // _EXP_SAMPLES)]
        rows_s, top_s = rows[keep], top[keep]
        cache = {}

        def total(log_a):
            a = math.exp(log_a)
            if a not in cache:
                cache[a] = float(_power_alpha_search(rows_s, top_s, bits, a, mac_bits)[1].sum())
            return cache[a]

        grid = np.log(np.geomspace(*EXPONENT_RANGE, _EXP_COARSE))
        i = int(np.argmin([total(x) for x in grid]))
        _golden(total, grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], _EXP_GOLDEN)
        a = min(cache, key=lambda k: (cache[k], abs(math.log(k))))
    alpha = _power_alpha(w2, bits, a, mac_bits, per_channel)
    return _power_codes(w2, alpha, bits, a, mac_bits), alpha, a


def _uniform_datafree(w2, bits, symmetric):
    """Data-free uniform quantization of ``w2`` [C, K]: ``(codes, scale, zero_point)``."""
    if symmetric:
        q_max = (1 << (bits - 1)) - 1
        top = np.abs(w2).max(axis=1)
        zero = top == 0
        top = np.where(zero, 1.0, top)
        scaled = w2 / top[:, None]

        def err(r):
            s = (r / q_max)[:, None]
            q = np.clip(round_half_away(scaled / s), -q_max, q_max)
            return ((scaled - q * s) ** 2).sum(axis=1)

        r, _ = _search_clip(err, len(top))
        scale = np.where(zero, 1.0, top * r / q_max)
        codes = np.clip(round_half_away(w2 / scale[:, None]), -q_max, q_max)
        return codes.astype(np.int64), scale, np.zeros(len(scale), dtype=np.int64)
    c_max = (1 << bits) - 1
    lo = np.minimum(w2.min(axis=1), 0.0)
    hi = np.maximum(w2.max(axis=1), 0.0)
    span = hi - lo
    zero = span == 0
    span = np.where(zero, 1.0, span)
    lo_n, scaled = lo / span, w2 / span[:, None]

    def params(r):
        s = r / c_max  # (hi - lo) * r / c_max in units of span
        zp = np.clip(round_half_away(-lo_n * r / s), 0, c_max)
        return s, zp

    def err(r):
        s, zp = params(r)
        q = np.clip(round_half_away(scaled / s[:, None]) + zp[:, None], 0, c_max)
        return ((scaled - (q - zp[:, None]) * s[:, None]) ** 2).sum(axis=1)

    r, _ = _search_clip(err, len(span))
    s, zp = params(r)
    scale = np.where(zero, 1.0, s * span)
    zp = np.where(zero, 0, zp)
    codes = np.clip(round_half_away(w2 / scale[:, None]) + zp[:, None], 0, c_max)
    return codes.astype(np.int64), scale, zp.astype(np.int64)
