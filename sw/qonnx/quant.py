"""QONNX ``Quant`` nodes: their parameters, integer weight codes computed exactly as QONNX
computes them, and the sparqforge quantizers they become.

``Quant(X, scale, zeropt, bitwidth; signed, narrow, rounding_mode)`` computes
``y = clamp(X / scale + zeropt, min_int, max_int)``, rounds ``y`` with ``rounding_mode`` and
outputs ``(y - zeropt) * scale`` (``docs/qonnx.md``). On a constant (a weight) the importer
keeps the integers ``y - zeropt`` as the weight's codes; on a tensor computed from the input
(an activation) it becomes an :class:`~sparqforge.sw.quantize.ActivationQuantizer` with that
scale and zero point.
"""

__all__ = ["ROUNDING_MODES", "NEAREST_MODES", "QuantParams", "quant_params", "weight_codes",
           "per_channel", "activation_quantizer", "quantized_weight", "fake_quant"]

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import UnsupportedLayerError
from ..quantize import ActivationQuantizer, QuantizedWeight

#: QONNX's rounding modes (``qonnx.custom_op.general.quant.resolve_rounding_mode``).
ROUNDING_MODES = ("ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN", "CEIL", "FLOOR", "UP", "DOWN")
#: The modes that round to the nearest integer and differ only on ties: what sparqforge's
#: requantizer (nearest, ties up or away from zero) can stand for on activations.
NEAREST_MODES = ("ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN")


@dataclass(frozen=True)
class QuantParams:
    """One ``Quant`` node's parameters. ``scale`` and ``zeropt`` keep the initializers'
    dtype and shape (QONNX computes in that dtype); ``node`` is the node's name."""
    node: str
    scale: np.ndarray
    zeropt: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    @property
    def qmin(self):
        """Smallest integer ``y`` (QONNX's ``min_int``).

        >>> one = np.float32(1)
        >>> [(QuantParams("q", one, one * 0, 8, s, n, "ROUND").qmin,
        ...   QuantParams("q", one, one * 0, 8, s, n, "ROUND").qmax)
        ...  for s, n in ((True, False), (True, True), (False, False), (False, True))]
        [(-128, 127), (-127, 127), (0, 255), (0, 254)]
        """
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self):
        """Largest integer ``y`` (QONNX's ``max_int``)."""
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1 - (1 if self.narrow else 0)

    def key(self):
        """What makes two quantizations of a tensor the same grid and range (the rounding
        mode does not matter to values already on the grid)."""
        return (tuple(np.asarray(self.scale, np.float64).ravel()),
                tuple(np.asarray(self.zeropt, np.float64).ravel()), self.bits, self.signed,
                self.narrow)


def _refuse(node, problem, fix):
    return UnsupportedLayerError(f"Node {node!r} (Quant) {problem}; {fix}")


def quant_params(node, attrs, scale, zeropt, bitwidth):
    """:class:`QuantParams` of the ``Quant`` node named ``node`` from its attributes (a dict:
    ``signed``, ``narrow``, ``rounding_mode``) and its constant inputs.

    Raises
    ------
    UnsupportedLayerError
        For an unknown rounding mode, a bit width that is not a whole number in 2..32, a
        non-positive or non-finite scale, or a zero point that is not a whole number.
    """
    rounding = attrs.get("rounding_mode", "ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    rounding = rounding.upper()
    if rounding not in ROUNDING_MODES:
        raise _refuse(node, f"has rounding_mode {rounding!r}",
                      f"QONNX defines {', '.join(ROUNDING_MODES)}")
    bitwidth = np.asarray(bitwidth, dtype=np.float64)
    if bitwidth.size != 1 or bitwidth.ravel()[0] != round(bitwidth.ravel()[0]) \
            or not 2 <= bitwidth.ravel()[0] <= 32:
        raise _refuse(node, f"has bit width {bitwidth.ravel().tolist()}",
                      "sparqforge imports one whole bit width in 2..8 per Quant "
                      "(BipolarQuant and 1-bit Quant are not supported)")
    scale, zeropt = np.asarray(scale), np.asarray(zeropt)
    if scale.size == 0 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise _refuse(node, "has a scale that is not finite and positive",
                      "export the model again")
    if not np.all(zeropt == np.round(zeropt)):
        raise _refuse(node, f"has a zero point that is not a whole number "
                            f"({zeropt.ravel()[:4].tolist()})",
                      "sparqforge's codes need integer zero points")
    return QuantParams(node=node, scale=scale, zeropt=zeropt, bits=int(bitwidth.ravel()[0]),
                       signed=bool(int(attrs.get("signed", 1))),
                       narrow=bool(int(attrs.get("narrow", 0))), rounding=rounding)


def weight_codes(values, params):
    """The integers ``y - zeropt`` QONNX computes for constant ``values`` (``int64``, the
    values' shape), in the initializers' dtype with QONNX's own clamp-then-round order and
    rounding function, so the codes are the ones ``execute_onnx`` multiplies."""
    from qonnx.custom_op.general.quant import resolve_rounding_mode

    y = values / params.scale
    y = y + params.zeropt
    y = np.where(y > params.qmax, np.asarray(params.qmax).astype(y.dtype), y)
    y = np.where(y < params.qmin, np.asarray(params.qmin).astype(y.dtype), y)
    y = resolve_rounding_mode(params.rounding)(y)
    return np.asarray(y - params.zeropt).astype(np.int64)


def fake_quant(values, params):
    """QONNX's ``Quant`` output for constant ``values``, as float64 (a quantized bias)."""
    codes = weight_codes(values, params)
    return codes.astype(np.float64) * np.asarray(params.scale, dtype=np.float64)


def per_channel(scale, shape, out_axis):
    """The scale of each output channel (``[out]``, float64) when ``scale`` broadcast to a
    weight of ``shape`` is constant along every axis but ``out_axis``; ``None`` otherwise.

    >>> per_channel(np.float32(0.5), (2, 3), 0).tolist()
    [0.5, 0.5]
    >>> per_channel(np.array([[0.5], [0.25]]), (2, 3), 0).tolist()
    [0.5, 0.25]
    >>> per_channel(np.array([[0.5], [0.25]]), (2, 3), 1) is None   # varies along the input
    True
    """
    full = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape)
    rows = np.moveaxis(full, out_axis, 0).reshape(shape[out_axis], -1)
    if rows.shape[1] and not np.all(rows == rows[:, :1]):
        return None
    return rows[:, 0].copy()


def activation_quantizer(params, op_type="Quant"):
    """The :class:`~sparqforge.sw.quantize.ActivationQuantizer` of an activation ``Quant``:
    8 bits, per tensor, its scale and zero point (signed codes become unsigned codes offset
    by 128 when lowered, so the zero point must stay in range).

    Raises
    ------
    UnsupportedLayerError
        For any other width, a per-channel scale, a directed rounding mode or a zero point
        outside the code range; the message names the node and the fix.
    """
    node = params.node
    if params.bits != 8:
        raise _refuse(node, f"quantizes activations to {params.bits} bits",
                      "sparqforge's activations are 8-bit codes: export the activation "
                      "quantizers with bit_width=8 (weights may stay narrower)")
    if params.scale.size != 1 or params.zeropt.size != 1:
        raise _refuse(node, f"quantizes activations with {params.scale.size} scales",
                      "sparqforge's activations have one scale per tensor: use a per-tensor "
                      "activation quantizer (e.g. Int8ActPerTensorFloat)")
    if params.rounding not in NEAREST_MODES:
        raise _refuse(node, f"rounds activations with {params.rounding}",
                      "sparqforge's requantizer rounds to nearest: export activations with "
                      "rounding_mode ROUND")
    zero_point = int(params.zeropt.ravel()[0])
    if not params.qmin <= zero_point <= params.qmax:
        raise _refuse(node, f"has zero point {zero_point} outside its codes "
                            f"{params.qmin}..{params.qmax}", "export the model again")
    quantizer = ActivationQuantizer(bits=8, method="uniform", signed=params.signed,
                                    symmetric=zero_point == 0, clipping="max")
    quantizer.signed = params.signed
    quantizer.scale = float(params.scale.ravel()[0])
    quantizer.zero_point = zero_point
    return quantizer


def quantized_weight(codes, scale, bits):
    """A symmetric uniform :class:`~sparqforge.sw.quantize.QuantizedWeight` of integer
    ``codes`` (output channels on axis 0) and per-channel ``scale``; channels with a
    negative scale (a folded BatchNorm with negative gamma) get negated codes."""
    codes = np.asarray(codes, dtype=np.int64)
    scale = np.asarray(scale, dtype=np.float64).copy()
    flip = scale < 0
    codes = np.where(flip.reshape((-1,) + (1,) * (codes.ndim - 1)), -codes, codes)
    scale = np.abs(scale)
    scale[scale == 0] = 1.0
    return QuantizedWeight(codes=torch.from_numpy(np.ascontiguousarray(codes)),
                           scale=torch.from_numpy(scale), zero_point=0, exponent=None,
                           bits=bits, method="uniform", per_channel=True, symmetric=True,
                           mac_bits=8, data_driven=False, dtype=torch.float32)
