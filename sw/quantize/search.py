"""Data-driven weight quantization (torch, float64): the layer-output error
``||X W^T - X What^T||^2`` minimised over the whole code grid.

For each candidate exponent the codes are chosen column by column with error feedback through
the inverse Gram matrix (the GPTQ update, on the power grid), then a straight-through
refinement (Adam) moves codes, scales and the exponent together. The data-free result is kept
when it is better on that objective.

With a mask (N:M pruning) every search is restricted to the kept weights: a pruned weight's
code is 0 in every candidate, its error ``w - 0`` is fed back to the kept weights after it
(as SparseGPT does), and the refinement neither moves nor differentiates it.
"""

__all__ = []

import math

import numpy as np
import torch

from .datafree import _power_alpha
from .tables import (EXPONENT_RANGE, _distinct, _golden, _nearest, _round_half_away_t,
                     power_table, round_half_away)

# Data-driven: Gram-matrix damping (fraction of its mean diagonal) for the error-feedback
# codes, golden-section steps of the exponent search around the data-free exponent, then
# Adam on the latent weights, log-scales and exponent logit.
_DAMP = 0.01
_EXP_GOLDEN_DATA = 8
_STEPS = 100
_LR_LATENT = 0.003      # in units of the top code spacing 1/Q
_LR_LOG_SCALE = 1e-3
_LR_EXPONENT = 3e-3

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

    def __init__(self, w2, gram, *, method, bits, mac_bits, symmetric, per_channel,
                 mask=None):
        self.w2, self.gram = w2, gram
        # ``mask`` [C, K] (True = kept) or None; ``kept`` the weights a pruned code leaves.
        self.mask = mask
        self.kept = w2 if mask is None else np.where(mask, w2, 0.0)
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
        """``project(column)``: nearest codes and values of one column of weights."""
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


def _feedback_codes(w2, factor, project, mask=None):
    """Codes column by column (act order), each column's error spread over later columns.

    This is optimal-brain-quantization error feedback (as in GPTQ) on an arbitrary grid: the
    error-compensated target of a weight may land on any code, not only next to the weight.
    A pruned weight (``mask`` False) gets code 0 and value 0 whatever its compensated target;
    that error is spread like any other, so the kept weights after it compensate for it.
    """
    order, upper = factor
    w = w2[:, order].copy()
    pruned = None if mask is None else ~mask[:, order]
    codes = np.empty(w.shape, dtype=np.int64)
    for j in range(w.shape[1]):
        codes[:, j], value = project(w[:, j])
        if pruned is not None:
            codes[pruned[:, j], j] = 0
            value = np.where(pruned[:, j], 0.0, value)
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
    best hard solution seen is returned. Pruned weights keep code 0 and pass no gradient.
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
    pattern = (1 << p.bits) - 1
    kept = None if p.mask is None else torch.from_numpy(p.mask)
    for step in range(steps + 1):
        unit = torch.exp(log_unit).expand(w.shape[0])
        latent = z.detach().numpy()
        if p.method == "power":
            a = float(_exponent_from_theta(theta.detach())) if theta is not None else a0
            mags, reps = _distinct(power_table(p.bits, a, p.mac_bits)[:p.q_max + 1])
            codes = np.sign(latent) * reps[_nearest(mags / p.t_max, np.abs(latent))]
            codes = torch.from_numpy(codes.astype(np.int64))
        else:
            a = None
            codes = np.clip(round_half_away(latent * p.q_max) + zp0[:, None], p.c_lo, p.c_hi)
            codes = torch.from_numpy(codes.astype(np.int64))
        if kept is not None:
            # (Masks need symmetric codes, whose code 0 is the value 0.)
            codes = torch.where(kept, codes, torch.zeros_like(codes))
        if p.method == "power":
            if theta is not None:
                level = _power_levels_t(codes, theta, p.bits, p.mac_bits)
            else:
                table = power_table(p.bits, a, p.mac_bits)
                level = torch.from_numpy(table[codes.numpy() & pattern] / p.t_max)
        else:
            level = (codes - zp_t).to(torch.float64) / p.q_max
        straight = z - z.detach()
        if kept is not None:
            straight = torch.where(kept, straight, torch.zeros_like(straight))
        err = w - unit[:, None] * (level + straight)
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
                    alpha = _power_alpha(p.kept, p.bits, a, p.mac_bits, p.per_channel)
                    codes = _feedback_codes(p.w2, factor, p.projector(alpha, None, a), p.mask)
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
            codes = _feedback_codes(p.w2, factor, p.projector(sol[1], sol[2], None), p.mask)
            trial = (codes, sol[1], sol[2], None)
            candidates.append((p.cost(trial), 1, trial))
    start = min(candidates, key=lambda c: (c[0], c[1]))[2]
    if steps > 0:
        learn = not fixed_exponent and p.method == "power" and p.q_max > 1
        refined = _refine_ste(p, start, learn_exponent=learn, steps=steps)
        candidates.append((p.cost(refined), 2, refined))
    return min(candidates, key=lambda c: (c[0], c[1]))[2]
