"""Per-tensor activation quantization: :class:`ActivationQuantizer` (uniform codes, or
unsigned power codes through :func:`~sparqforge.sw.quantize.tables.power_act_table`)."""

__all__ = ["ActivationQuantizer"]

import math

import numpy as np
import torch

from ..golden.numerics import check_operand
from .tables import (EXPONENT_RANGE, _CLIP_COARSE, _CLIP_FINE, _EXP_COARSE, _METHODS,
                     _as_float_tensor, _bucket, _check_power_widths, _distinct, _nearest,
                     _round_half_away_t, power_act_table, round_half_away)

# Activation calibration subsamples large tensors (evenly strided, deterministic).
_ACT_SAMPLES = 1 << 18

_CLIPPINGS = ("mse", "percentile", "max")


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
