"""Export a quantized PyTorch model to a bundle of integer-only layers.

Supported: what :func:`sparqforge.sw.layers.check_model` accepts (an ``nn.Sequential`` of
Linear, Conv2d with ``groups=1``, ``dilation=1`` and integer zero padding, ReLU directly after
a Linear/Conv2d, MaxPool2d, AvgPool2d and Flatten), the same check
:func:`~sparqforge.sw.quantize.quantize_model` runs. Anything else, and any quantization the
integer pipeline cannot express, is rejected with an error naming the layer and the fix.

For every Linear/Conv2d, with input codes of scale ``s_in`` and zero point ``z_in`` (or a
power-domain input with table ``A`` and scale ``beta / 255``) and integer weights ``w`` of
scale ``s_w[c]`` per output channel, the real pre-activation is
``y[c] = S[c] * (acc[c] + B[c])`` with ``S = s_in * s_w`` and
``B = round_half_away(bias / S) - z_in * sum_k w[c, k]``. When the next layer's input is
uniform, ``S / s_out`` becomes a gemmlowp multiplier and shift (``docs/numerics.md``); when
it is power-domain, the next code is the number of thresholds the accumulator reaches,
``t[c, k] = min{acc : Q_out(S[c] * (acc + B[c])) >= k}``, found exactly by bisection on the
quantizer itself, so the integer network reproduces the quantizer's own decisions.
"""

__all__ = ["export_model", "SUPPORTED_LAYERS"]

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedLayerError
from . import golden
from .bundle import Bundle
from .bundle_check import validate
from .golden.numerics import round_half_away
from .layers import SUPPORTED_LAYERS, check_model
from .nm_format import find_violation

A_MAX = 255
NEVER = (1 << 31) - 1


def _pair(value):
    return [int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value))]


def _uniform_params(quantizer, what):
    """``(scale, zero_point)`` of a uniform quantizer as unsigned 8-bit codes; ``what`` names
    the activations for the error message."""
    offset = 128 if quantizer.signed else 0
    if quantizer.bits != 8:
        raise UnsupportedLayerError(f"{what} are {quantizer.bits}-bit uniform codes, but uniform "
                                    f"activations must be 8-bit: quantize them with act_bits=8")
    return float(quantizer.scale), int(quantizer.zero_point) + offset


def _weight_matrix(qweight, layer):
    """Integer codes ``[out, K]`` (conv columns ``(kh, kw, in)``), the integer weights the
    MAC array multiplies, a 256-entry table or ``None``, and the per-channel scale."""
    codes = qweight.codes.detach().cpu().numpy().astype(np.int64)
    if codes.ndim == 4:
        codes = codes.transpose(0, 2, 3, 1)
    codes = codes.reshape(codes.shape[0], -1)
    scale = np.broadcast_to(np.asarray(qweight.scale, dtype=np.float64).reshape(-1),
                            (codes.shape[0],)).copy()
    if qweight.method == "power":
        small = np.asarray(qweight.table, dtype=np.int64)
        mask = (1 << qweight.bits) - 1
        table = np.zeros(256, dtype=np.int64)
        q = np.arange(-(mask >> 1), (mask >> 1) + 1)
        table[q & 0xFF] = small[q & mask]
        t_max = (1 << (qweight.mac_bits - 1)) - 1
        return codes, table[codes & 0xFF], table, scale / t_max
    if not qweight.symmetric:
        raise UnsupportedLayerError(f"Layer {layer!r}: asymmetric weights are not supported by "
                                    f"the MAC array; quantize weights symmetrically")
    return codes, codes, None, scale


def _thresholds(quantizer, scale, bias, count):
    """``[channels, count]`` thresholds: the smallest int32 accumulator whose value the
    quantizer maps to at least each code (``NEVER`` when none does)."""
    channels = len(scale)
    want = np.arange(1, count + 1)[None, :]

    def reaches(acc):
        real = scale[:, None] * (acc + bias[:, None]).astype(np.float64)
        return quantizer.quantize(torch.from_numpy(real)).numpy() >= want
    # Bisection for the first accumulator that reaches (the quantizer is monotone):
    # the answer stays in [lo, hi], hi = 2**31 meaning "never".
    lo = np.full((channels, count), -(1 << 31), dtype=np.int64)
    hi = np.full((channels, count), 1 << 31, dtype=np.int64)
    for _ in range(33):
        open_ = lo < hi
        mid = (lo + hi) // 2
        ok = reaches(mid)
        hi = np.where(open_ & ok, mid, hi)
        lo = np.where(open_ & ~ok, mid + 1, lo)
    return np.minimum(lo, NEVER)


def export_model(qmodel, calib, *, name, sparsity=None, threshold_bits=4):
    """Turn a :class:`~sparqforge.sw.quantize.QuantizedModel` into a :class:`Bundle`.

    Parameters
    ----------
    qmodel : QuantizedModel
        From :func:`sparqforge.sw.quantize.quantize_model` with 8-bit uniform input
        activations for the first layer (power or uniform after that).
    calib : torch.Tensor
        Model inputs; used to calibrate the logits' output quantization.
    name : str
        Bundle name.
    sparsity : (int, int), optional
        Mark layers whose weights are N:M so the accelerator runs them in sparse mode.
    threshold_bits : int
        Threshold code width of the target; power activations must not be wider.

    Raises
    ------
    UnsupportedLayerError
        For any layer or quantization the integer pipeline cannot express.
    """
    from .quantize import ActivationQuantizer

    model = qmodel.model
    check_model(model)
    children = list(model.named_children())
    names = [n for n, m in children if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not names:
        raise UnsupportedLayerError("The model has no Linear or Conv2d layer to export; "
                                    "sparqforge runs matmul layers, so add at least one")
    qlayers = [qmodel.layers[n] for n in names]
    for ql in qlayers:
        if ql.input_quantizer is None:
            raise UnsupportedLayerError(f"Layer {ql.name!r} has float inputs; quantize its "
                                        f"activations (act_bits=8 uniform, or power codes no "
                                        f"wider than threshold_bits after the first layer)")
    first = qlayers[0].input_quantizer
    if first.method != "uniform":
        raise UnsupportedLayerError(f"Layer {names[0]!r} has {first.method} input codes, but "
                                    f"the first layer's input must be uniform 8-bit (the "
                                    f"bundle's input quantization): use act_method='uniform' "
                                    f"for it")

    # The logits get an 8-bit asymmetric quantizer calibrated on the quantized model.
    with torch.no_grad():
        logits = qmodel.fake_quant_model()(calib)
    out_q = ActivationQuantizer(8, "uniform", signed=True, symmetric=False).calibrate(logits)

    x = calib[:1]
    shape = list(x.shape[1:])
    bundle_layers = []
    with torch.no_grad():
        probe = x
        for index, (child_name, module) in enumerate(children):
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                position = names.index(child_name)
                ql = qlayers[position]
                layer = _matmul_layer(ql, module, probe, children, index,
                                      next_q=(qlayers[position + 1].input_quantizer
                                              if position + 1 < len(qlayers) else out_q),
                                      sparsity=sparsity, threshold_bits=threshold_bits)
                bundle_layers.append(layer)
            elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                if probe.ndim != 4:
                    raise UnsupportedLayerError(
                        f"Layer {child_name!r} ({type(module).__name__}) pools a "
                        f"{probe.ndim - 1}-D input, not an image; pool only [channels, height, "
                        f"width] inputs (a 4-D batch)")
                kernel, stride = _pair(module.kernel_size), _pair(module.stride or
                                                                  module.kernel_size)
                bundle_layers.append({"type": "maxpool" if isinstance(module, nn.MaxPool2d)
                                      else "avgpool", "name": child_name, "kernel": kernel,
                                      "stride": stride})
            elif isinstance(module, nn.Flatten):
                bundle_layers.append({"type": "flatten", "name": child_name})
            probe = module(probe)
    # A chain: each layer reads the one before it, the first the network input.
    for previous, layer in zip([None, *bundle_layers], bundle_layers):
        layer["inputs"] = [previous["name"] if previous else golden.NETWORK_INPUT]
    in_scale, in_zero = _uniform_params(first, f"The input activations of layer {names[0]!r}")
    out_scale, out_zero = _uniform_params(out_q, "The logits")
    bundle = Bundle(name=name, input={"shape": shape, "scale": in_scale,
                                      "zero_point": in_zero},
                    output={"scale": out_scale, "zero_point": out_zero,
                            "classes": int(logits.shape[1])},
                    layers=bundle_layers,
                    info={"weight_method": qlayers[0].weight.method,
                          "weight_bits": qlayers[0].weight.bits,
                          "act_methods": [ql.input_quantizer.method for ql in qlayers],
                          "sparsity": list(sparsity) if sparsity else None})
    validate(bundle, f"export of {name}")
    return bundle


def _matmul_layer(ql, module, probe, children, index, *, next_q, sparsity, threshold_bits):
    codes, w_int, table, s_w = _weight_matrix(ql.weight, ql.name)
    n_out, k = codes.shape
    q_in = ql.input_quantizer
    if q_in.method == "power":
        if q_in.mac_bits != 8:
            raise UnsupportedLayerError(f"Layer {ql.name!r}: power activations need 8-bit "
                                        f"table entries, not mac_bits={q_in.mac_bits}: "
                                        f"calibrate them with mac_bits=8")
        s_in, z_in = float(q_in.scale) / A_MAX, 0
        act_table = np.zeros(256, dtype=np.int64)
        act_table[:len(q_in.table)] = np.asarray(q_in.table, dtype=np.int64)
    else:
        s_in, z_in = _uniform_params(q_in, f"The input activations of layer {ql.name!r}")
        act_table = None
    scale = s_in * s_w
    bias = (np.zeros(n_out) if ql.bias is None
            else ql.bias.detach().cpu().numpy().astype(np.float64))
    safe = np.where(scale > 0, scale, 1.0)
    bias_int = np.where(scale > 0, round_half_away(bias / safe), 0).astype(np.int64)
    bias_int = bias_int - z_in * w_int.sum(axis=1)
    relu = (index + 1 < len(children) and isinstance(children[index + 1][1], nn.ReLU))
    layer = {"type": "matmul", "name": ql.name, "source": type(module).__name__,
             "in_features": int(k), "out_features": int(n_out),
             "weight_bits": int(ql.weight.bits), "weight_method": ql.weight.method,
             "weight": codes, "act_table": act_table, "weight_table": table,
             "input_method": q_in.method, "pad_code": int(z_in), "relu": None}
    if isinstance(module, nn.Conv2d):
        _, c, h, w = probe.shape
        kernel, stride, padding = (_pair(module.kernel_size), _pair(module.stride),
                                   _pair(module.padding))
        layer["conv"] = {"in_channels": int(c), "in_height": int(h), "in_width": int(w),
                         "kernel": kernel, "stride": stride, "padding": padding,
                         "out_height": (h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
                         "out_width": (w + 2 * padding[1] - kernel[1]) // stride[1] + 1}
    else:
        layer["conv"] = None
    layer["sparsity"] = (list(sparsity) if sparsity is not None
                         and find_violation(codes, *sparsity) is None else None)
    if next_q.method == "power":
        count = (1 << next_q.bits) - 1
        if next_q.bits > threshold_bits:
            raise UnsupportedLayerError(f"Layer {ql.name!r}: {next_q.bits}-bit power "
                                        f"activations need a {next_q.bits}-bit threshold unit, "
                                        f"the target has {threshold_bits}-bit: quantize them "
                                        f"with act_bits <= {threshold_bits}")
        layer["output"] = "threshold"
        layer["thresholds"] = _thresholds(next_q, scale, bias_int.astype(np.float64), count)
        layer.pop("relu")
    else:
        s_out, z_out = _uniform_params(next_q, f"The activations after layer {ql.name!r}")
        multiplier, shift = golden.quantize_multiplier(np.where(scale > 0, scale / s_out, 0.0))
        layer.update(output="requant", bias=np.clip(bias_int, -(1 << 31), (1 << 31) - 1),
                     multiplier=multiplier, shift=shift,
                     zero_point=np.full(n_out, z_out, dtype=np.int64),
                     relu=np.full(n_out, int(relu), dtype=np.int64))
    return {key: value for key, value in layer.items() if value is not None or key in (
        "act_table", "weight_table", "conv", "sparsity")}
