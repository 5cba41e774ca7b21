"""One weight tensor: :class:`QuantizedWeight` and :func:`quantize_weight`.

Without calibration inputs the parameters come from the data-free search
(:mod:`.datafree`); with inputs, from the data-driven search (:mod:`.search`), which keeps
the data-free result when that is better on the layer-output error. A mask (N:M pruning)
restricts both to the kept weights: pruned codes are exactly 0.
"""

__all__ = ["QuantizedWeight", "quantize_weight"]

import numpy as np
import torch

from ..golden.numerics import check_operand
from .datafree import _power_datafree, _uniform_datafree
from .search import _STEPS, _Problem, _data_driven
from .tables import _METHODS, _as_float_tensor, _check_exponent, _check_power_widths, power_table


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
    mask : torch.Tensor or None
        ``bool``, the weight's shape: the kept weights the codes were restricted to (every
        other code is 0), or ``None`` without a mask.
    """

    def __init__(self, *, codes, scale, zero_point, exponent, bits, method, per_channel,
                 symmetric, mac_bits, data_driven, dtype, mask=None):
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
        self.mask = mask
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


def quantize_weight(weight, bits=4, method="power", per_channel=True, symmetric=True,
                    mac_bits=8, inputs=None, *, mask=None, exponent=None, steps=_STEPS):
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
    mask : torch.Tensor or numpy.ndarray, optional
        ``bool``, the weight's shape, ``True`` for a kept weight (an N:M pruning mask, for
        instance). Every search (data-free, error feedback, refinement) is restricted to the
        kept weights: the code of every other weight is exactly 0, and the objective counts
        it as the value 0. The weight itself need not be zero there; its error is then part of
        the objective (data-driven, the kept weights compensate for it). Needs symmetric
        codes (code 0 is the value 0).
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
        input axis, NaN/inf values, ``inputs`` of the wrong shape, or a mask of the wrong
        shape or type, or with asymmetric codes.
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
    kept = None if mask is None else _check_mask(mask, shape, symmetric)
    # The searches see the kept weights; a pruned weight's code is 0 (value 0) in every result.
    w2_kept = w2 if kept is None else np.where(kept, w2, 0.0)
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
        codes, scale, a = _power_datafree(w2_kept, bits, mac_bits, exponent, per_channel)
        zp = np.zeros(len(scale), dtype=np.int64)
    else:
        rows = w2_kept if per_channel else w2_kept.reshape(1, -1)
        codes, scale, zp = _uniform_datafree(rows, bits, symmetric)
        codes = codes.reshape(w2.shape)
        if not per_channel:
            scale, zp = np.full(w2.shape[0], scale[0]), np.full(w2.shape[0], zp[0])
        a = None
    if kept is not None:
        codes = np.where(kept, codes, 0)  # already 0: the kept weights' codes of 0.0 are 0
    if gram is not None:
        problem = _Problem(w2, gram, method=method, bits=bits, mac_bits=mac_bits,
                           symmetric=symmetric, per_channel=per_channel, mask=kept)
        codes, scale, zp, a = _data_driven(problem, (codes, scale, zp, a),
                                           fixed_exponent=exponent is not None, steps=steps)
    if kept is not None and np.any(codes[~kept]):
        raise AssertionError("a pruned weight got a nonzero code")  # a bug, not a user error

    scale_t = torch.tensor(scale if per_channel else scale[0], dtype=torch.float64)
    if method == "uniform" and not symmetric:
        zp_out = torch.tensor(zp if per_channel else zp[0], dtype=torch.int64)
    else:
        zp_out = 0
    return QuantizedWeight(
        codes=torch.from_numpy(np.ascontiguousarray(codes)).reshape(shape), scale=scale_t,
        zero_point=zp_out, exponent=None if a is None else float(a), bits=bits,
        method=method, per_channel=per_channel, symmetric=symmetric, mac_bits=mac_bits,
        data_driven=gram is not None, dtype=dtype,
        mask=None if kept is None else torch.from_numpy(kept).reshape(shape))


def _check_mask(mask, shape, symmetric):
    """The mask as a ``bool`` ``[out, K]`` NumPy array, after checking it."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"Mask must be a boolean torch tensor or NumPy array, not "
                        f"{type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"Mask must hold booleans (True = kept), not {mask.dtype}; pass "
                        f"weight != 0 or a pruning mask")
    if tuple(mask.shape) != shape:
        raise ValueError(f"Mask must have the weight's shape {list(shape)}, not "
                         f"{list(mask.shape)}")
    if not symmetric:
        raise ValueError("A mask keeps pruned weights at code 0, which asymmetric codes do "
                         "not give the value 0: use symmetric=True with a mask")
    return np.ascontiguousarray(mask.reshape(shape[0], -1))
