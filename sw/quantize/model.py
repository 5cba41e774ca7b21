"""Whole models: :func:`quantize_model` on an ``nn.Sequential``, layer by layer, and the
:class:`QuantizedModel` / :class:`QuantizedLayer` / :class:`FakeQuantLayer` it returns.

Which models are accepted is decided by :func:`sparqforge.sw.layers.check_model`, the same
check :func:`sparqforge.sw.export.export_model` runs first, so the two accept exactly the same
layers; the export's remaining refusals concern the quantization chosen (widths, methods).

Layers whose float weights are N:M sparse are quantized with their pruning mask
(:func:`quantize_weight`'s ``mask``), so their codes keep the pattern (``sparsity=``).
"""

__all__ = ["FakeQuantLayer", "QuantizedLayer", "QuantizedModel", "quantize_model",
           "unfold_inputs"]

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UnsupportedLayerError
from .. import nm_format
from ..layers import check_model
from ..nm_masks import weight_matrix
from ..prune import PATTERNS
from . import presets
from .activation import ActivationQuantizer
from .search import _STEPS
from .tables import _as_float_tensor
from .weight import quantize_weight


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
    sparsity : (int, int) or None
        The N:M pattern of the float weights that the codes keep (their zeros were the
        quantization's mask), or ``None`` for a layer quantized dense.
    """

    def __init__(self, name, layer, weight, input_quantizer, sparsity=None):
        self.name = name
        self.layer = layer
        self.weight = weight
        self.input_quantizer = input_quantizer
        self.sparsity = sparsity
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


class _Default:
    """A keyword's default value, told apart from the same value passed explicitly (a preset
    may not be combined with explicit settings); its repr is the value's, so the signature
    reads ``bits=4``."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


#: The settings a preset gives, with their defaults.
_PRESET_KEYS = {"bits": 4, "method": "power", "act_bits": 8, "act_method": "uniform",
                "sparsity": "auto"}
_D = {key: _Default(value) for key, value in _PRESET_KEYS.items()}

def _settings(preset, model, given):
    """The preset's settings, or the given ones over the defaults."""
    explicit = {k: v for k, v in given.items() if not isinstance(v, _Default)}
    if preset is None:
        return {k: explicit.get(k, _PRESET_KEYS[k]) for k in _PRESET_KEYS}
    if explicit:
        raise ValueError(f"preset={preset!r} sets bits, method, act_bits, act_method and "
                         f"sparsity; pass the preset or {', '.join(explicit)}, not both")
    return presets.expand(preset, model)


def _check_sparsity(sparsity):
    if sparsity is None or (isinstance(sparsity, str) and sparsity == "auto"):
        return sparsity
    if (not isinstance(sparsity, (tuple, list)) or len(sparsity) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in sparsity)):
        raise ValueError(f"sparsity must be 'auto', None or a pattern (n, m), not "
                         f"{sparsity!r}")
    nm_format.check_nm(*sparsity)
    return tuple(sparsity)


def _layer_pattern(weight, sparsity):
    """The N:M pattern ``weight``'s float values have (``sparsity`` one pattern, or "auto":
    the sparsest of :data:`sparqforge.sw.prune.PATTERNS`), or ``None``."""
    if sparsity is None:
        return None
    matrix = weight_matrix(weight.detach()).cpu().numpy()
    candidates = [sparsity] if sparsity != "auto" else sorted(
        PATTERNS, key=lambda p: (p[0] / p[1], p[1]))
    return next((tuple(p) for p in candidates if p[0] < p[1]
                 and nm_format.find_violation(matrix, *p) is None), None)


def _require_pattern(model, names, sparsity, preset):
    """Refuse the first layer whose float weights are not N:M for ``sparsity``."""
    n, m = sparsity
    for name in names:
        layer = getattr(model, name)
        bad = nm_format.find_violation(weight_matrix(layer.weight.detach()).cpu().numpy(), n, m)
        if bad is None:
            continue
        row, group, count = bad
        why = (f"preset {preset!r} runs" if preset is not None
               else f"sparsity={sparsity} asks to run")
        raise UnsupportedLayerError(
            f"Layer {name!r} ({type(layer).__name__}) is dense: its weights are not {n}:{m} "
            f"sparse (output {row}, group {group} holds {count} nonzeros), and {why} every "
            f"Linear and Conv2d {n}:{m} sparse; prune the model first: "
            f"sparqforge.sw.prune.NMSparsifier(model, {n}, {m}, method='srste'), fine-tune, "
            f"then finalize() (or prune_model(model, {n}, {m}) without fine-tuning), or pass "
            f"sparsity='auto' to keep the pattern of the layers that have one")


def quantize_model(model, *, preset=None, bits=_D["bits"], method=_D["method"],
                   act_bits=_D["act_bits"], act_method=_D["act_method"], calib=None,
                   act_calib=None, per_channel=True, sparsity=_D["sparsity"], steps=_STEPS):
    """Quantize every Linear/Conv2d of an ``nn.Sequential``, layer by layer.

    Each layer's input quantizer is calibrated on the layer's actual input, computed through
    the already-quantized layers before it. With ``calib`` the weights are quantized
    data-driven on those inputs (:func:`quantize_weight` with ``inputs``); without it they are
    quantized data-free, and ``act_calib`` is only used to calibrate activation ranges.

    A layer whose float weights are N:M sparse (``sparsity``) is quantized with the mask of
    its nonzero weights: every search is restricted to them, so its codes keep the pattern,
    data-driven or not.

    Parameters
    ----------
    model : torch.nn.Sequential
        What :func:`sparqforge.sw.layers.check_model` accepts: Linear, Conv2d (``groups=1``,
        ``dilation=1``, integer zero padding), ReLU directly after a Linear/Conv2d, Flatten,
        MaxPool2d and AvgPool2d (no padding).
    preset : str, optional
        A named quantization (:data:`~sparqforge.sw.quantize.presets.PRESETS`:
        ``"uniform-w8a8"``, ``"power-w4"``, ``"sparse24-w4"``) that sets ``bits``,
        ``method``, ``act_bits``, ``act_method`` and ``sparsity`` for this model
        (:func:`~sparqforge.sw.quantize.presets.expand`); it cannot be combined with them.
    bits, method : int, str
        Weight code width (default 4) and method (``"power"``, the default, or
        ``"uniform"``, symmetric).
    act_bits : int or None, or a list of them
        Input activation width of every Linear/Conv2d (or one per layer, in order; default
        8); ``None`` keeps activations float.
    act_method : {"uniform", "power"}, or a list of them
        Activation quantizer, for all layers or one per layer (default ``"uniform"``; power
        needs non-negative inputs: pixels, post-ReLU).
    calib : torch.Tensor, optional
        Model inputs for data-driven quantization (and activation calibration).
    act_calib : torch.Tensor, optional
        Model inputs for activation calibration only (weights stay data-free).
    per_channel : bool
        Per-output-channel weight scales.
    sparsity : "auto", (int, int) or None
        Which layers keep their zeros. ``"auto"`` (the default): every layer whose float
        weight matrix (Conv2d permuted as :func:`sparqforge.sw.prune.weight_matrix` does) is
        N:M for one of 1:2, 2:4, 1:4, 2:8, 4:8 (at most half of every group nonzero: a
        trained dense layer never is), the others are dense. ``(n, m)``: every layer, and
        every layer must be N:M already (as the accelerator runs a sparse model). ``None``:
        no layer (data-driven codes then fill pruned positions). Each kept layer's
        :attr:`QuantizedLayer.sparsity` names its pattern (for ``"auto"`` the sparsest one
        found).
    steps : int
        Data-driven optimiser steps per layer.

    Returns
    -------
    QuantizedModel

    Raises
    ------
    UnsupportedLayerError
        (a ``TypeError``) from :func:`~sparqforge.sw.layers.check_model`, before any work,
        for a model the export could not run; the message names the layer, its type and
        the fix.
        With ``sparsity=(n, m)`` (or the ``"sparse24-w4"`` preset), for the first layer whose
        float weights are not N:M, naming it and how to prune.
    ValueError
        If activations are to be quantized but no calibration inputs are given, for an
        unknown preset or one combined with explicit settings, or a bad ``sparsity``.
    """
    check_model(model)
    settings = _settings(preset, model, {"bits": bits, "method": method, "act_bits": act_bits,
                                         "act_method": act_method, "sparsity": sparsity})
    bits, method = settings["bits"], settings["method"]
    act_bits, act_method = settings["act_bits"], settings["act_method"]
    sparsity = _check_sparsity(settings["sparsity"])
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
    patterns = {name: _layer_pattern(getattr(model, name).weight, sparsity)
                for name in matmuls}
    if isinstance(sparsity, tuple):
        _require_pattern(model, matmuls, sparsity, preset)
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
            mask = module.weight != 0 if patterns[name] else None
            with torch.enable_grad():
                qweight = quantize_weight(module.weight, bits, method, per_channel,
                                          inputs=inputs, mask=mask, steps=steps)
            qlayer = QuantizedLayer(name, copy.deepcopy(module), qweight, quantizer,
                                    sparsity=patterns[name])
            layers[name] = qlayer
            if x is not None:
                x = qlayer.fake_quant_layer().layer(x)
    return QuantizedModel(model, layers)


def unfold_inputs(layer, x):
    """Rows ``X`` with ``layer(x) == X @ W.reshape(out, -1).T + bias`` (up to reshaping).

    Linear: ``x.reshape(-1, in_features)``. Conv2d: the ``F.unfold`` patches,
    ``[N * positions, in * kh * kw]``, in the order of ``weight.reshape(out, -1)``.

    This is arithmetic for :func:`quantize_weight`'s ``inputs``, so it takes every
    convolution whose patches ``F.unfold`` gives exactly (dilation and ``padding="valid"``
    included); whether a model can be quantized and exported is
    :func:`~sparqforge.sw.layers.check_model`'s decision, not this function's.

    Raises
    ------
    UnsupportedLayerError
        For other layers, grouped convolutions, non-zero padding modes or string padding
        other than ``"valid"``.
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features)
    if isinstance(layer, nn.Conv2d):
        _check_unfoldable(layer)
        padding = 0 if layer.padding == "valid" else layer.padding
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=padding,
                        stride=layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise UnsupportedLayerError(f"Cannot unfold inputs of {type(layer).__name__}; only Linear "
                                f"and Conv2d layers have quantizable weights")


def _check_unfoldable(conv):
    if conv.groups != 1:
        raise UnsupportedLayerError(f"Cannot unfold inputs of a Conv2d with groups="
                                    f"{conv.groups}; only groups=1 convolutions have one "
                                    f"weight row per output channel over all inputs")
    if conv.padding_mode != "zeros":
        raise UnsupportedLayerError(f"Cannot unfold inputs of a Conv2d with padding_mode="
                                    f"{conv.padding_mode!r}; F.unfold pads with zeros: use "
                                    f"padding_mode='zeros'")
    if isinstance(conv.padding, str) and conv.padding != "valid":
        raise UnsupportedLayerError(f"Cannot unfold inputs of a Conv2d with padding="
                                    f"{conv.padding!r}; give the padding as integers")
