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
data-free result is kept when it is better on that objective. A mask (``mask=``: N:M
pruning) restricts every search to the kept weights, so pruned codes stay exactly 0.

Activations use :class:`ActivationQuantizer` (uniform, or unsigned power codes).
:func:`quantize_model` quantizes a whole ``nn.Sequential`` layer by layer, each layer seeing
the quantized outputs of the layers before it, keeping the pattern of N:M-pruned layers;
``preset=`` names a whole quantization (:mod:`.presets`). ``docs/quantization.md`` has the
details.

The modules: :mod:`.tables` (rounding, the power tables, the shared search helpers),
:mod:`.datafree` and :mod:`.search` (the data-free and the data-driven weight searches),
:mod:`.weight` (:class:`QuantizedWeight`, :func:`quantize_weight`), :mod:`.activation`,
:mod:`.model` and :mod:`.presets`. This package re-exports the public names of all of them
but the presets, which keep their module's name (``presets.PRESETS``, ``presets.expand``).
"""

__all__ = [
    "EXPONENT_RANGE", "round_half_away", "power_table", "power_act_table",
    "QuantizedWeight", "quantize_weight", "unfold_inputs",
    "ActivationQuantizer", "FakeQuantLayer", "QuantizedLayer", "QuantizedModel",
    "quantize_model",
]

from . import presets  # noqa: F401  (the module: presets.PRESETS, presets.expand)
from .activation import ActivationQuantizer
from .model import FakeQuantLayer, QuantizedLayer, QuantizedModel, quantize_model, unfold_inputs
from .tables import EXPONENT_RANGE, power_act_table, power_table, round_half_away
from .weight import QuantizedWeight, quantize_weight
