"""Whole models: :func:`quantize_model` on an ``nn.Sequential``, layer by layer, and the
:class:`QuantizedModel` / :class:`QuantizedLayer` / :class:`FakeQuantLayer` it returns.

Which models are accepted is decided by :func:`sparqforge.sw.layers.check_model`, the same
check :func:`sparqforge.sw.export.export_model` runs first, so the two accept exactly the same
layers; the export's remaining refusals concern the quantization chosen (widths, methods).
"""

__all__ = ["FakeQuantLayer", "QuantizedLayer", "QuantizedModel", "quantize_model",
           "unfold_inputs"]

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UnsupportedLayerError
from ..layers import check_model
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
        What :func:`sparqforge.sw.layers.check_model` accepts: Linear, Conv2d (``groups=1``,
        ``dilation=1``, integer zero padding), ReLU directly after a Linear/Conv2d, Flatten,
        MaxPool2d and AvgPool2d (no padding).
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
        (a ``TypeError``) from :func:`~sparqforge.sw.layers.check_model`, before any work,
        for a model the export could not run; the message names the layer, its type and
        the fix.
    ValueError
        If activations are to be quantized but no calibration inputs are given.
    """
    check_model(model)
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
