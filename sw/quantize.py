"""Post-training quantizers: a uniform baseline and power-exponent (NUPES-style) weight codes.

Weights are quantized per output channel (dim 0 of a Linear ``[out, in]`` or Conv2d
``[out, in, kh, kw]`` weight) or per tensor. Two methods share one interface:

``"uniform"``
    Symmetric codes ``q`` in ``[-Q, Q]`` with value ``scale_c * q``, or asymmetric codes in
    ``[0, 2**b - 1]`` with value ``scale_c * (q - zero_point_c)``. The clipping range is
    searched to minimise the squared reconstruction error (not plain max scaling).
``"power"``
    With ``Q = 2**(b-1) - 1``, ``T_max = 2**(mac_bits-1) - 1`` and one exponent ``a > 0`` per
    tensor, the integer table ``T[q] = sign(q) * round_half_away(T_max * (|q|/Q) ** (1/a))``
    maps a code ``q`` in ``[-Q, Q]`` to the ``mac_bits``-wide operand the hardware multiplies;
    code ``q`` of channel ``c`` stands for exactly ``alpha_c * T[q] / T_max``. Every weight
    gets the code of the nearest representable value, so the table rounding is accounted for.

Without calibration inputs the parameters come from a data-free search of the weight
reconstruction error (exponent: coarse grid then golden section; scales: clipping search).
With inputs ``X`` the layer-output error ``||X W^T - X What^T||^2`` is minimised over the
whole code grid: for each candidate exponent the codes are chosen column by column with
error feedback through the inverse Gram matrix (the GPTQ update, on the power grid), then a
straight-through refinement (Adam) moves codes, scales and the exponent together. The
data-free result is kept when it is better on that objective.

Activations use :class:`ActivationQuantizer` (uniform, or unsigned power codes).
:func:`quantize_model` quantizes a whole ``nn.Sequential`` layer by layer, each layer seeing
the quantized outputs of the layers before it. ``docs/quantization.md`` has the details.
"""

__all__ = [
    "EXPONENT_RANGE", "round_half_away", "power_table", "power_act_table",
    "QuantizedWeight", "quantize_weight", "unfold_inputs",
    "ActivationQuantizer", "FakeQuantLayer", "QuantizedLayer", "QuantizedModel",
    "quantize_model",
]

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw.golden.numerics import OPERAND_BITS, check_operand

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
_EXP_GOLDEN = 10
# The exponent search scores each candidate on at most this many weights (evenly strided
# channels, each channel whole); the scales are then searched on the whole tensor.
_EXP_SAMPLES = 1 << 15
# Data-driven: Gram-matrix damping (fraction of its mean diagonal) for the error-feedback
# codes, golden-section steps of the exponent search around the data-free exponent, then
# Adam on the latent weights, log-scales and exponent logit.
_DAMP = 0.01
_EXP_GOLDEN_DATA = 8
_STEPS = 100
_LR_LATENT = 0.003      # in units of the top code spacing 1/Q
_LR_LOG_SCALE = 1e-3
_LR_EXPONENT = 3e-3
# Activation calibration subsamples large tensors (evenly strided, deterministic).
_ACT_SAMPLES = 1 << 18

_METHODS = ("power", "uniform")
_CLIPPINGS = ("mse", "percentile", "max")


# --------------------------------------------------------------------------------------------
# Rounding and tables
# --------------------------------------------------------------------------------------------

def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C ``round``), as float64 NumPy.

    ``floor(|x| + 0.5)`` is wrong for ``0.49999999999999994``; this splits off the integer
    part first, which is exact for ``|x| < 2**52``.

    >>> round_half_away(np.array([0.5, 1.5, -0.5, -2.5, 0.49999999999999994])).tolist()
    [1.0, 2.0, -1.0, -3.0, 0.0]
    """
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x)
    whole = np.floor(mag)
    return np.sign(x) * (whole + (mag - whole >= 0.5))


def _round_half_away_t(x):
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


# --------------------------------------------------------------------------------------------
# Data-free weight quantization (NumPy, float64, on a [channels, elements] matrix)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Data-driven refinement (torch, float64)
# --------------------------------------------------------------------------------------------

# The exponent is optimised through lam = log(1/a) = LAM_LO + (LAM_HI - LAM_LO) * sigmoid(theta).
# A nonzero code's table value is T_max * y with y = exp(-exp(lam) * L), L = -log(|q|/Q) >= 0,
# a constant of the integer code. So dy/dlam = y * log(y), bounded by 1/e: no 1/a**2 factor,
# no log of a weight (log 0), no division by a, and lam bounded keeps exp(lam) * L below
# ~100, so y never underflows and every gradient is finite.
_LAM_LO = math.log(1 / EXPONENT_RANGE[1])
_LAM_HI = math.log(1 / EXPONENT_RANGE[0])


def _theta_from_exponent(a):
    s = (math.log(1 / a) - _LAM_LO) / (_LAM_HI - _LAM_LO)
    s = min(max(s, 1e-6), 1 - 1e-6)
    return math.log(s / (1 - s))


def _exponent_from_theta(theta):
    """Bounded reparametrisation: ``a`` in ``EXPONENT_RANGE`` for any real ``theta``."""
    return torch.exp(-(_LAM_LO + (_LAM_HI - _LAM_LO) * torch.sigmoid(theta)))


def _power_levels_t(codes, theta, bits, mac_bits):
    """``T[q] / T_max`` as float64, differentiable in ``theta`` (straight-through rounding)."""
    q_max = (1 << (bits - 1)) - 1
    t_max = (1 << (mac_bits - 1)) - 1
    mag = codes.abs().to(torch.float64)
    nonzero = mag > 0
    neg_log = -torch.log(torch.where(nonzero, mag, torch.ones_like(mag)) / q_max)
    lam = _LAM_LO + (_LAM_HI - _LAM_LO) * torch.sigmoid(theta)
    cont = t_max * torch.exp(-torch.exp(lam) * neg_log)
    cont = torch.where(nonzero, cont, torch.zeros_like(cont))
    hard = cont + (_round_half_away_t(cont.detach()) - cont.detach())
    return torch.sign(codes).to(torch.float64) * hard / t_max


def _dequant_rows(method, codes, scale, zero_point, a, bits, mac_bits):
    """Float64 [C, K] values of ``codes`` [C, K] with per-row ``scale`` (NumPy)."""
    if method == "power":
        t_max = (1 << (mac_bits - 1)) - 1
        table = power_table(bits, a, mac_bits)
        return scale[:, None] * table[codes & ((1 << bits) - 1)] / t_max
    return scale[:, None] * (codes - zero_point[:, None])


def _objective(w2, what, gram):
    """``trace((W - What) G (W - What)^T)``: the output error ``||X (W - What)^T||^2 / N``."""
    e = w2 - what
    return float(np.sum((e @ gram) * e))


class _Problem:
    """One data-driven problem: weights ``[C, K]``, Gram matrix and the code format."""

    def __init__(self, w2, gram, *, method, bits, mac_bits, symmetric, per_channel):
        self.w2, self.gram = w2, gram
        self.method, self.bits, self.mac_bits = method, bits, mac_bits
        self.symmetric, self.per_channel = symmetric, per_channel
        self.q_max = (1 << (bits - 1)) - 1
        self.t_max = (1 << (mac_bits - 1)) - 1
        self.c_lo, self.c_hi = (-self.q_max, self.q_max) if symmetric else (0, (1 << bits) - 1)

    def cost(self, sol):
        codes, scale, zp, a = sol
        what = _dequant_rows(self.method, codes, scale, zp, a, self.bits, self.mac_bits)
        return _objective(self.w2, what, self.gram)

    def projector(self, scale, zp, a):
        """``project(column, rows)``: nearest codes and values of one column of weights."""
        if self.method == "power":
            mags, reps = _distinct(power_table(self.bits, a, self.mac_bits)[:self.q_max + 1])
            to_table = self.t_max / scale

            def project(col):
                idx = _nearest(mags, np.abs(col) * to_table)
                sign = np.sign(col)
                return (sign * reps[idx]).astype(np.int64), sign * mags[idx] / to_table
        else:
            def project(col):
                q = np.clip(round_half_away(col / scale) + zp, self.c_lo, self.c_hi)
                return q.astype(np.int64), (q - zp) * scale
        return project


def _gram_factor(gram):
    """Act order and the upper Cholesky factor of the damped inverse Gram matrix (or None)."""
    h = gram.copy()
    diag = np.diag(h).copy()
    dead = np.flatnonzero(diag <= 0)
    h[dead, dead] = 1.0  # inputs that are always zero: any code is as good as any other
    order = np.argsort(-np.diag(h), kind="stable")
    h = h[order][:, order]
    damp = _DAMP * float(np.mean(np.diag(h)))
    eye = np.eye(len(h))
    for _ in range(4):
        try:
            lower_inv = np.linalg.inv(np.linalg.cholesky(h + damp * eye))
            upper = np.linalg.cholesky(lower_inv.T @ lower_inv).T
        except np.linalg.LinAlgError:
            upper = None
        if upper is not None and np.all(np.isfinite(upper)) and np.all(np.diag(upper) > 0):
            return order, upper
        damp *= 10
    return None


def _feedback_codes(w2, factor, project):
    """Codes column by column (act order), each column's error spread over later columns.

    This is optimal-brain-quantization error feedback (as in GPTQ) on an arbitrary grid: the
    error-compensated target of a weight may land on any code, not only next to the weight.
    """
    order, upper = factor
    w = w2[:, order].copy()
    codes = np.empty(w.shape, dtype=np.int64)
    for j in range(w.shape[1]):
        codes[:, j], value = project(w[:, j])
        err = (w[:, j] - value) / upper[j, j]
        w[:, j + 1:] -= np.outer(err, upper[j, j + 1:])
    out = np.empty_like(codes)
    out[:, order] = codes
    return out


def _refine_ste(problem, sol, *, learn_exponent, steps):
    """Straight-through refinement of codes, scales and exponent from ``sol``.

    Latent weights ``z`` (in units of the largest code) choose their codes by nearest
    representable value under the current table; the forward pass uses those hard codes and
    the rounded integer table exactly, so the loss is the true calibration objective, and the
    best hard solution seen is returned.
    """
    p = problem
    codes0, scale0, zp0, a0 = sol
    w = torch.from_numpy(p.w2)
    gram = torch.from_numpy(p.gram)
    j0 = float(((w @ gram) * w).sum())
    best = (p.cost(sol) / j0, sol)
    unit0 = scale0 if p.method == "power" else scale0 * p.q_max
    start = _dequant_rows(p.method, codes0, scale0, zp0, a0, p.bits, p.mac_bits) / unit0[:, None]
    z = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    log_unit = torch.tensor(np.log(unit0 if p.per_channel else unit0[:1]),
                            dtype=torch.float64, requires_grad=True)
    groups = [{"params": [z], "lr": _LR_LATENT / p.q_max},
              {"params": [log_unit], "lr": _LR_LOG_SCALE}]
    theta = None
    if p.method == "power" and learn_exponent:
        theta = torch.tensor(_theta_from_exponent(a0), dtype=torch.float64, requires_grad=True)
        groups.append({"params": [theta], "lr": _LR_EXPONENT})
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    zp_t = torch.from_numpy(zp0)[:, None]
    mask = (1 << p.bits) - 1
    for step in range(steps + 1):
        unit = torch.exp(log_unit).expand(w.shape[0])
        latent = z.detach().numpy()
        if p.method == "power":
            a = float(_exponent_from_theta(theta.detach())) if theta is not None else a0
            mags, reps = _distinct(power_table(p.bits, a, p.mac_bits)[:p.q_max + 1])
            codes = np.sign(latent) * reps[_nearest(mags / p.t_max, np.abs(latent))]
            codes = torch.from_numpy(codes.astype(np.int64))
            if theta is not None:
                level = _power_levels_t(codes, theta, p.bits, p.mac_bits)
            else:
                table = power_table(p.bits, a, p.mac_bits)
                level = torch.from_numpy(table[codes.numpy() & mask] / p.t_max)
        else:
            a = None
            codes = np.clip(round_half_away(latent * p.q_max) + zp0[:, None], p.c_lo, p.c_hi)
            codes = torch.from_numpy(codes.astype(np.int64))
            level = (codes - zp_t).to(torch.float64) / p.q_max
        err = w - unit[:, None] * (level + z - z.detach())
        loss = ((err @ gram) * err).sum() / j0
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"Non-finite calibration objective at step {step}")
        if value < best[0]:
            scale = unit.detach().numpy().copy()
            scale = scale if p.method == "power" else scale / p.q_max
            best = (value, (codes.numpy(), scale, zp0, a))
        if step == steps:
            break
        optimizer.zero_grad()
        loss.backward()
        for param in (z, log_unit, theta):
            if param is not None and not bool(torch.isfinite(param.grad).all()):
                raise FloatingPointError(f"Non-finite gradient at step {step}")
        optimizer.step()
        schedule.step()
    return best[1]


def _data_driven(problem, sol, *, fixed_exponent, steps):
    """Best of: the data-free ``sol``, error-feedback codes (over a search of ``a`` for
    power), and their straight-through refinement; judged on the calibration objective."""
    p = problem
    j0 = _objective(p.w2, np.zeros_like(p.w2), p.gram)
    if not (j0 > 0 and math.isfinite(j0)):
        return sol  # inputs or weights all zero: every code gives the same output
    candidates = [(p.cost(sol), 0, sol)]
    factor = _gram_factor(p.gram)
    if factor is not None:
        if p.method == "power":
            cache = {}

            def total(a):
                if a not in cache:
                    alpha = _power_alpha(p.w2, p.bits, a, p.mac_bits, p.per_channel)
                    codes = _feedback_codes(p.w2, factor, p.projector(alpha, None, a))
                    trial = (codes, alpha, sol[2], a)
                    cache[a] = (p.cost(trial), 1, trial)
                return cache[a][0]

            a0 = sol[3]
            total(a0)
            if not fixed_exponent and p.q_max > 1:
                lo, hi = (math.log(x) for x in EXPONENT_RANGE)
                _golden(lambda x: total(math.exp(x)), max(math.log(a0 / 2), lo),
                        min(math.log(a0 * 2), hi), _EXP_GOLDEN_DATA)
            candidates += cache.values()
        else:
            codes = _feedback_codes(p.w2, factor, p.projector(sol[1], sol[2], None))
            trial = (codes, sol[1], sol[2], None)
            candidates.append((p.cost(trial), 1, trial))
    start = min(candidates, key=lambda c: (c[0], c[1]))[2]
    if steps > 0:
        learn = not fixed_exponent and p.method == "power" and p.q_max > 1
        refined = _refine_ste(p, start, learn_exponent=learn, steps=steps)
        candidates.append((p.cost(refined), 2, refined))
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


# --------------------------------------------------------------------------------------------
# Public weight API
# --------------------------------------------------------------------------------------------

class QuantizedWeight:
    """One quantized weight tensor: integer codes plus the parameters that give their values.

    Attributes
    ----------
    codes : torch.Tensor
        ``int64``, the weight's shape. Power and symmetric uniform: ``[-Q, Q]``; asymmetric
        uniform: ``[0, 2**bits - 1]``.
    scale : torch.Tensor
        ``float64``: ``alpha`` (power) or the step (uniform); shape ``[out]`` per channel, a
        0-d tensor per tensor. All-zero channels get the placeholder 1.0.
    zero_point : torch.Tensor or int
        ``int64`` like ``scale`` for asymmetric uniform, else ``0``.
    exponent : float or None
        The power exponent ``a`` (``None`` for uniform).
    bits, mac_bits : int
        Code width and (power) signed MAC operand width.
    method : str
        ``"power"`` or ``"uniform"``.
    per_channel, symmetric, data_driven : bool
        How the parameters were chosen.
    table : numpy.ndarray or None
        Power: :func:`power_table` (``int64``, ``2**bits`` entries, indexed by
        ``q & (2**bits - 1)``); uniform: ``None``.
    """

    def __init__(self, *, codes, scale, zero_point, exponent, bits, method, per_channel,
                 symmetric, mac_bits, data_driven, dtype):
        self.codes = codes
        self.scale = scale
        self.zero_point = zero_point
        self.exponent = exponent
        self.bits = bits
        self.method = method
        self.per_channel = per_channel
        self.symmetric = symmetric
        self.mac_bits = mac_bits
        self.data_driven = data_driven
        self.table = power_table(bits, exponent, mac_bits) if method == "power" else None
        self._dtype = dtype

    @property
    def shape(self):
        """The weight's shape."""
        return tuple(self.codes.shape)

    def _channel_view(self, x):
        return x.reshape(-1, *([1] * (self.codes.dim() - 1))) if x.dim() else x

    def dequantize(self, dtype=None):
        """The float tensor the codes stand for.

        Power: ``alpha_c * T[q] / T_max``; uniform: ``scale_c * (q - zero_point_c)``.
        Computed in float64, returned as ``dtype`` (default: the original weight's dtype).
        """
        scale = self._channel_view(self.scale.to(torch.float64))
        if self.method == "power":
            t_max = (1 << (self.mac_bits - 1)) - 1
            table = torch.from_numpy(self.table)
            values = table[self.codes & ((1 << self.bits) - 1)].to(torch.float64)
            out = scale * values / t_max
        else:
            zp = self.zero_point
            zp = self._channel_view(zp) if isinstance(zp, torch.Tensor) else zp
            out = scale * (self.codes - zp).to(torch.float64)
        return out.to(dtype or self._dtype)

    def __repr__(self):
        extra = f", exponent={self.exponent:.4g}" if self.exponent is not None else ""
        return (f"QuantizedWeight(shape={self.shape}, method={self.method!r}, bits={self.bits}"
                f"{extra}, per_channel={self.per_channel}, data_driven={self.data_driven})")


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


def quantize_weight(weight, bits=4, method="power", per_channel=True, symmetric=True,
                    mac_bits=8, inputs=None, *, exponent=None, steps=_STEPS):
    """Quantize one weight tensor (output channels on dim 0).

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray
        ``[out, in]`` (Linear), ``[out, in, kh, kw]`` (Conv2d) or any ``[out, ...]``.
    bits : int
        Code width, 2..8.
    method : {"power", "uniform"}
        Power-exponent codes with an integer table, or the uniform baseline.
    per_channel : bool
        One scale per output channel (else one per tensor).
    symmetric : bool
        Uniform only: symmetric codes ``[-Q, Q]`` or asymmetric ``[0, 2**bits - 1]`` with a
        zero point. Power codes are always symmetric.
    mac_bits : int
        Power only: signed width of the table entries the MAC multiplies, ``bits``..8.
    inputs : torch.Tensor or numpy.ndarray, optional
        Calibration inputs of the layer, ``[N, K]`` with ``K = weight[0].numel()``: the
        Linear input rows, or Conv2d patches in ``weight.reshape(out, -1)`` order (what
        :func:`unfold_inputs` returns). When given, the codes minimise the output error
        ``||X W^T - X What^T||^2`` (data-driven, never worse than data-free on it);
        otherwise the weight error ``||W - What||^2`` (data-free).
    exponent : float, optional
        Power only: use this exponent instead of searching/learning it.
    steps : int
        Data-driven straight-through refinement steps (0 skips the refinement).

    Returns
    -------
    QuantizedWeight

    Raises
    ------
    TypeError
        For a bad width, a non-tensor weight or non-real data.
    ValueError
        For an unknown method, asymmetric power codes, a bad exponent, a weight without an
        input axis, NaN/inf values, or ``inputs`` of the wrong shape.
    """
    if method not in _METHODS:
        raise ValueError(f"Quantization method must be one of {list(_METHODS)}, not {method!r}")
    w = _as_float_tensor(weight, "Weight")
    if w.dim() < 2 or w.numel() == 0:
        raise ValueError(f"Weight must be a non-empty [out, in, ...] tensor with output "
                         f"channels on dim 0, not shape {tuple(w.shape)}")
    if method == "power":
        _check_power_widths("Weight", bits, mac_bits)
        if not symmetric:
            raise ValueError("Power codes are always symmetric; pass symmetric=True or use "
                             "method='uniform' for asymmetric codes")
        if exponent is not None:
            exponent = _check_exponent(exponent)
    else:
        check_operand("Weight", bits, True)
        if exponent is not None:
            raise ValueError("An exponent only applies to method='power'")
    for name, flag in (("per_channel", per_channel), ("symmetric", symmetric)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {flag!r}")
    shape, dtype = tuple(w.shape), (w.dtype if w.is_floating_point() else torch.float32)
    w2 = w.to(torch.float64).reshape(shape[0], -1).numpy()
    gram = None
    if inputs is not None:
        x = _as_float_tensor(inputs, "Calibration inputs").to(torch.float64)
        if x.dim() != 2 or x.shape[1] != w2.shape[1] or x.shape[0] == 0:
            raise ValueError(f"Calibration inputs must be [N, {w2.shape[1]}] (rows of the "
                             f"layer input, Conv2d inputs unfolded with unfold_inputs), not "
                             f"shape {tuple(x.shape)}")
        gram = (x.T @ x / x.shape[0]).numpy()
        if not np.all(np.isfinite(gram)):
            raise ValueError("Calibration inputs are too large: their Gram matrix overflows")

    if method == "power":
        codes, scale, a = _power_datafree(w2, bits, mac_bits, exponent, per_channel)
        zp = np.zeros(len(scale), dtype=np.int64)
    else:
        rows = w2 if per_channel else w2.reshape(1, -1)
        codes, scale, zp = _uniform_datafree(rows, bits, symmetric)
        codes = codes.reshape(w2.shape)
        if not per_channel:
            scale, zp = np.full(w2.shape[0], scale[0]), np.full(w2.shape[0], zp[0])
        a = None
    if gram is not None:
        problem = _Problem(w2, gram, method=method, bits=bits, mac_bits=mac_bits,
                           symmetric=symmetric, per_channel=per_channel)
        codes, scale, zp, a = _data_driven(problem, (codes, scale, zp, a),
                                           fixed_exponent=exponent is not None, steps=steps)

    scale_t = torch.tensor(scale if per_channel else scale[0], dtype=torch.float64)
    if method == "uniform" and not symmetric:
        zp_out = torch.tensor(zp if per_channel else zp[0], dtype=torch.int64)
    else:
        zp_out = 0
    return QuantizedWeight(
        codes=torch.from_numpy(np.ascontiguousarray(codes)).reshape(shape), scale=scale_t,
        zero_point=zp_out, exponent=None if a is None else float(a), bits=bits,
        method=method, per_channel=per_channel, symmetric=symmetric, mac_bits=mac_bits,
        data_driven=gram is not None, dtype=dtype)


def unfold_inputs(layer, x):
    """Rows ``X`` with ``layer(x) == X @ W.reshape(out, -1).T + bias`` (up to reshaping).

    Linear: ``x.reshape(-1, in_features)``. Conv2d: the ``F.unfold`` patches,
    ``[N * positions, in * kh * kw]``, in the order of ``weight.reshape(out, -1)``.

    Raises
    ------
    UnsupportedLayerError
        For other layers, grouped convolutions or non-zero padding modes.
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features)
    if isinstance(layer, nn.Conv2d):
        _check_conv(layer, "conv")
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation,
                        padding=_conv_padding(layer), stride=layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise UnsupportedLayerError(f"Cannot unfold inputs of {type(layer).__name__}; only Linear "
                                f"and Conv2d layers have quantizable weights")


def _conv_padding(conv):
    if isinstance(conv.padding, str):
        return 0  # only "valid" passes _check_conv
    return conv.padding


def _check_conv(conv, name):
    if conv.groups != 1:
        raise UnsupportedLayerError(f"Layer {name!r} (Conv2d) has groups={conv.groups}; only "
                                    f"groups=1 convolutions are supported")
    if conv.padding_mode != "zeros":
        raise UnsupportedLayerError(f"Layer {name!r} (Conv2d) uses padding_mode="
                                    f"{conv.padding_mode!r}; only 'zeros' is supported")
    if isinstance(conv.padding, str) and conv.padding != "valid":
        raise UnsupportedLayerError(f"Layer {name!r} (Conv2d) uses padding={conv.padding!r}; "
                                    f"give the padding as integers")


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

class ActivationQuantizer:
    """Per-tensor activation quantizer calibrated on sample activations.

    ``"uniform"``: signed codes ``[-2**(b-1), 2**(b-1) - 1]`` or unsigned ``[0, 2**b - 1]``
    with value ``scale * (c - zero_point)``; unsigned and symmetric-signed quantizers have
    ``zero_point = 0``. ``"power"``: unsigned codes ``c`` in ``[0, 2**b - 1]`` with value
    ``beta * A[c] / A_max`` (:func:`power_act_table`, ``A_max = 2**mac_bits - 1``); each value
    gets the code of the nearest representable value (ties toward zero).

    Parameters
    ----------
    bits : int
        Code width, 2..8.
    method : {"uniform", "power"}
    signed : bool, optional
        Uniform only. ``None``: signed exactly when the calibration data has negative values
        (post-ReLU data gets unsigned codes). Power codes are unsigned.
    symmetric : bool
        Signed uniform only: ``zero_point = 0`` (else an asymmetric range with a zero point).
    clipping : {"mse", "percentile", "max"}
        How the range is chosen: minimum squared error on the calibration data (searched),
        the ``percentile`` of ``|x|``, or the largest ``|x|``.
    percentile : float
        Used by ``clipping="percentile"``, in (0, 100].
    mac_bits : int
        Power only: unsigned MAC input width, ``bits``..8.

    Attributes
    ----------
    scale : float
        Step (uniform) or ``beta`` (power); 1.0 when the calibration data is all zero.
    zero_point : int
    exponent : float or None
        Power exponent ``a_act``.
    table : numpy.ndarray or None
        Power: ``A`` as ``int64``.
    qmin, qmax : int
        Code range.
    """

    def __init__(self, bits=8, method="uniform", *, signed=None, symmetric=True,
                 clipping="mse", percentile=99.99, mac_bits=8):
        if method not in _METHODS:
            raise ValueError(f"Activation quantization method must be one of "
                             f"{list(_METHODS)}, not {method!r}")
        if clipping not in _CLIPPINGS:
            raise ValueError(f"Clipping must be one of {list(_CLIPPINGS)}, not {clipping!r}")
        if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
            raise ValueError(f"Percentile must be in (0, 100], not {percentile!r}")
        if method == "power":
            _check_power_widths("Activation", bits, mac_bits)
            if signed:
                raise ValueError("Power activation codes are unsigned; pass signed=None/False "
                                 "or use method='uniform' for signed activations")
        else:
            check_operand("Activation", bits, signed if signed is not None else True)
        self.bits, self.method, self.mac_bits = bits, method, mac_bits
        self.clipping, self.percentile, self.symmetric = clipping, float(percentile), symmetric
        self._signed_request = signed
        self.signed = None
        self.scale = None
        self.zero_point = 0
        self.exponent = None
        self.table = None

    @property
    def calibrated(self):
        """Whether :meth:`calibrate` has run."""
        return self.scale is not None

    @property
    def qmin(self):
        """Smallest code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self):
        """Largest code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def calibrate(self, x):
        """Choose the range (and exponent) from sample activations; returns ``self``.

        Raises
        ------
        ValueError
            If the data is empty or holds NaN/inf, or power codes meet negative data
            without ``signed=False``.
        """
        x = _as_float_tensor(x, "Calibration activations").to(torch.float64).reshape(-1)
        if x.numel() == 0:
            raise ValueError("Calibration activations are empty; pass at least one value")
        data = x.numpy()
        if data.size > _ACT_SAMPLES:
            data = data[:: -(-data.size // _ACT_SAMPLES)]
        has_neg = bool(np.any(data < 0))
        if self.method == "power":
            if has_neg and self._signed_request is None:
                raise ValueError(f"Power activation codes are unsigned but the calibration "
                                 f"data has negative values (min {data.min():.4g}); quantize "
                                 f"post-ReLU activations, pass signed=False to clamp at 0, "
                                 f"or use method='uniform'")
            self.signed = False
            self._calibrate_power(np.maximum(data, 0.0))
        else:
            self.signed = has_neg if self._signed_request is None else self._signed_request
            self._calibrate_uniform(data if self.signed else np.maximum(data, 0.0))
        return self

    def _calibrate_uniform(self, data):
        q_lo, q_hi = self.qmin, self.qmax
        asym = self.signed and not self.symmetric
        if asym:
            lo, hi = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
            if self.clipping == "percentile":
                lo = min(float(np.percentile(data, 100 - self.percentile)), 0.0)
                hi = max(float(np.percentile(data, self.percentile)), 0.0)
        else:
            hi = float(np.abs(data).max())
            if self.clipping == "percentile":
                hi = float(np.percentile(np.abs(data), self.percentile))
            lo = -hi if self.signed else 0.0
        if hi - lo <= 0:
            self.scale, self.zero_point = 1.0, 0
            return

        def params(r):
            if asym:
                s = (hi - lo) * r / (q_hi - q_lo)
                zp = int(np.clip(round_half_away(q_lo - lo * r / s), q_lo, q_hi))
            else:
                s, zp = hi * r / q_hi, 0
            return s, zp

        def err(r):
            s, zp = params(r)
            q = np.clip(round_half_away(data / s) + zp, q_lo, q_hi)
            return float(((data - (q - zp) * s) ** 2).sum())

        ratios = [1.0] if self.clipping != "mse" else _CLIP_COARSE
        r = min(ratios, key=err)
        if self.clipping == "mse":
            step = _CLIP_COARSE[1] / _CLIP_COARSE[0]
            fine = [min(r * f, 1.0) for f in np.geomspace(1 / step, step, _CLIP_FINE)]
            r = min([r, *fine], key=err)
        self.scale, self.zero_point = params(r)

    def _calibrate_power(self, data):
        top = float(data.max())
        if self.clipping == "percentile":
            top = float(np.percentile(data, self.percentile))
        if top <= 0:
            self.scale, self.exponent = 1.0, 1.0
            self.table = power_act_table(self.bits, 1.0, self.mac_bits)
            return
        a_max = (1 << self.mac_bits) - 1
        scaled = data / top
        ratios = _CLIP_COARSE if self.clipping == "mse" else np.array([1.0])

        def err_for(a):
            mags, _ = _distinct(power_act_table(self.bits, a, self.mac_bits))
            mids = (mags[1:] + mags[:-1]) / 2
            best = (np.inf, 1.0)
            for r in ratios:
                idx = _bucket(mids, scaled * (a_max / r))
                e = float(((scaled - mags[idx] * (r / a_max)) ** 2).sum())
                best = min(best, (e, r))
            return best

        grid = np.geomspace(*EXPONENT_RANGE, _EXP_COARSE)
        results = {float(a): err_for(float(a)) for a in grid}
        i = int(np.argmin([results[float(a)][0] for a in grid]))
        for a in np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 9):
            results.setdefault(float(a), err_for(float(a)))
        a = min(results, key=lambda k: (results[k][0], abs(math.log(k))))
        self.exponent = a
        self.scale = top * results[a][1]
        self.table = power_act_table(self.bits, a, self.mac_bits)

    def _require(self):
        if not self.calibrated:
            raise RuntimeError("ActivationQuantizer is not calibrated; call calibrate(x) first")

    def quantize(self, x):
        """Integer codes (``int64`` tensor, ``x``'s shape) of the nearest representable values."""
        self._require()
        x = torch.as_tensor(x).detach().to(torch.float64)
        if self.method == "power":
            a_max = (1 << self.mac_bits) - 1
            mags, reps = _distinct(self.table)
            x = torch.nan_to_num(x.clamp(min=0.0), nan=0.0).numpy()
            return torch.from_numpy(reps[_nearest(mags * (self.scale / a_max), x)])
        q = _round_half_away_t(torch.nan_to_num(x, nan=0.0).clamp(-1e300, 1e300) / self.scale)
        return torch.clamp(q + self.zero_point, self.qmin, self.qmax).to(torch.int64)

    def dequantize(self, codes, dtype=torch.float32):
        """The values the codes stand for, as ``dtype``."""
        self._require()
        codes = torch.as_tensor(codes).to(torch.int64)
        if self.method == "power":
            a_max = (1 << self.mac_bits) - 1
            values = torch.from_numpy(self.table)[codes].to(torch.float64)
            return (self.scale * values / a_max).to(dtype)
        return (self.scale * (codes - self.zero_point).to(torch.float64)).to(dtype)

    def fake_quant(self, x):
        """``dequantize(quantize(x))`` in ``x``'s floating dtype."""
        x = torch.as_tensor(x)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return self.dequantize(self.quantize(x), dtype=dtype)

    def __repr__(self):
        state = (f"scale={self.scale:.4g}, zero_point={self.zero_point}, signed={self.signed}"
                 if self.calibrated else "uncalibrated")
        extra = f", exponent={self.exponent:.4g}" if self.exponent is not None else ""
        return f"ActivationQuantizer(bits={self.bits}, method={self.method!r}, {state}{extra})"


# --------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------

_PASSTHROUGH = (nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d)
_SUPPORTED = "Linear, Conv2d, ReLU, Flatten, MaxPool2d, AvgPool2d"


class FakeQuantLayer(nn.Module):
    """A Linear/Conv2d with dequantized weights behind its input fake-quantizer."""

    def __init__(self, layer, input_quantizer):
        super().__init__()
        self.layer = layer
        self.input_quantizer = input_quantizer

    def forward(self, x):
        if self.input_quantizer is not None:
            x = self.input_quantizer.fake_quant(x)
        return self.layer(x)


class QuantizedLayer:
    """Quantization of one Linear/Conv2d layer.

    Attributes
    ----------
    name : str
        The layer's name in the model (``"1"`` for ``model[1]``).
    layer : torch.nn.Module
        A copy of the float layer.
    weight : QuantizedWeight
    input_quantizer : ActivationQuantizer or None
        Quantizer of the layer's input (``None`` when activations stay float).
    bias : torch.Tensor or None
        The float bias (kept in float; the hardware folds it into the int32 accumulator).
    """

    def __init__(self, name, layer, weight, input_quantizer):
        self.name = name
        self.layer = layer
        self.weight = weight
        self.input_quantizer = input_quantizer
        self.bias = None if layer.bias is None else layer.bias.detach().clone()

    def fake_quant_layer(self):
        """A :class:`FakeQuantLayer` computing this layer with quantized weights and input."""
        layer = copy.deepcopy(self.layer)
        with torch.no_grad():
            layer.weight.copy_(self.weight.dequantize(layer.weight.dtype))
        return FakeQuantLayer(layer, self.input_quantizer)

    def __repr__(self):
        return (f"QuantizedLayer({self.name!r}, {type(self.layer).__name__}, {self.weight!r}, "
                f"{self.input_quantizer!r})")


class QuantizedModel:
    """Per-layer quantization of an ``nn.Sequential``.

    Attributes
    ----------
    model : torch.nn.Sequential
        A copy of the float model.
    layers : dict of str to QuantizedLayer
        One entry per Linear/Conv2d, keyed by the layer's name, in model order.
    """

    def __init__(self, model, layers):
        self.model = model
        self.layers = layers

    def fake_quant_model(self):
        """A copy of the model whose Linear/Conv2d layers are :class:`FakeQuantLayer`.

        Its accuracy is what the quantized network computes up to the integer accumulation
        and output requantization (the last layer's output stays float).
        """
        model = copy.deepcopy(self.model)
        for name, qlayer in self.layers.items():
            setattr(model, name, qlayer.fake_quant_layer())
        model.eval()
        return model

    def __repr__(self):
        inner = "\n".join(f"  {layer!r}" for layer in self.layers.values())
        return f"QuantizedModel(\n{inner}\n)"


def _per_layer(value, names, what):
    """A setting for every Linear/Conv2d: one value for all, or a list with one per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"{what} lists {len(value)} values for {len(names)} "
                             f"Linear/Conv2d layers")
        return dict(zip(names, value))
    return {name: value for name in names}


def quantize_model(model, *, bits=4, method="power", act_bits=8, act_method="uniform",
                   calib=None, act_calib=None, per_channel=True, steps=_STEPS):
    """Quantize every Linear/Conv2d of an ``nn.Sequential``, layer by layer.

    Each layer's input quantizer is calibrated on the layer's actual input, computed through
    the already-quantized layers before it. With ``calib`` the weights are quantized
    data-driven on those inputs (:func:`quantize_weight` with ``inputs``); without it they are
    quantized data-free, and ``act_calib`` is only used to calibrate activation ranges.

    Parameters
    ----------
    model : torch.nn.Sequential
        Made of Linear, Conv2d (``groups=1``, zero padding), ReLU, Flatten, MaxPool2d and
        AvgPool2d.
    bits, method : int, str
        Weight code width and method (``"power"`` or ``"uniform"``, symmetric).
    act_bits : int or None, or a list of them
        Input activation width of every Linear/Conv2d (or one per layer, in order);
        ``None`` keeps activations float.
    act_method : {"uniform", "power"}, or a list of them
        Activation quantizer, for all layers or one per layer (power needs non-negative
        inputs: pixels, post-ReLU).
    calib : torch.Tensor, optional
        Model inputs for data-driven quantization (and activation calibration).
    act_calib : torch.Tensor, optional
        Model inputs for activation calibration only (weights stay data-free).
    per_channel : bool
        Per-output-channel weight scales.
    steps : int
        Data-driven optimiser steps per layer.

    Returns
    -------
    QuantizedModel

    Raises
    ------
    UnsupportedLayerError
        (a ``TypeError``) for a model that is not an ``nn.Sequential`` or contains any other
        layer; the message names the layer and its type.
    ValueError
        If activations are to be quantized but no calibration inputs are given.
    """
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(f"quantize_model needs an nn.Sequential, not "
                                    f"{type(model).__name__}")
    for name, module in model.named_children():
        if isinstance(module, nn.Conv2d):
            _check_conv(module, name)
        elif not isinstance(module, (nn.Linear, *_PASSTHROUGH)):
            raise UnsupportedLayerError(
                f"Layer {name!r} ({type(module).__name__}) is not supported by "
                f"quantize_model; supported layers are {_SUPPORTED}")
    if calib is not None and act_calib is not None:
        raise ValueError("Pass calib (data-driven) or act_calib (activation ranges only), "
                         "not both")
    data = calib if calib is not None else act_calib
    quantized_acts = (any(b is not None for b in act_bits)
                      if isinstance(act_bits, (list, tuple)) else act_bits is not None)
    if quantized_acts and data is None:
        raise ValueError("Activation quantization needs calibration inputs: pass calib= "
                         "(data-driven) or act_calib= (data-free weights), or act_bits=None "
                         "to keep activations float")
    model = copy.deepcopy(model).eval()
    matmuls = [n for n, mod in model.named_children() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    per_layer_bits = _per_layer(act_bits, matmuls, "act_bits")
    per_layer_method = _per_layer(act_method, matmuls, "act_method")
    layers = {}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = None if data is None else _as_float_tensor(data, "Calibration inputs").to(dtype)
    with torch.no_grad():
        for name, module in model.named_children():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                if x is not None:
                    x = module(x)
                continue
            quantizer = None
            if per_layer_bits[name] is not None:
                quantizer = ActivationQuantizer(per_layer_bits[name],
                                                per_layer_method[name]).calibrate(x)
                x = quantizer.fake_quant(x)
            inputs = unfold_inputs(module, x) if calib is not None else None
            with torch.enable_grad():
                qweight = quantize_weight(module.weight, bits, method, per_channel,
                                          inputs=inputs, steps=steps)
            qlayer = QuantizedLayer(name, copy.deepcopy(module), qweight, quantizer)
            layers[name] = qlayer
            if x is not None:
                x = qlayer.fake_quant_layer().layer(x)
    return QuantizedModel(model, layers)
