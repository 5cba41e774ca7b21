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

:func:`matmul_layer`, :func:`uniform_params` and :func:`as_batch` are shared with the graph
lowering (:mod:`sparqforge.sw.frontend.lower`), which builds its matmul layers the same way.

With ``sparsity=(n, m)`` every matmul layer must have N:M weight codes: a layer that is not is
refused (naming it and the fix), never run dense in silence.
"""

__all__ = ["export_model", "matmul_layer", "uniform_params", "as_batch", "SUPPORTED_LAYERS"]

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


def as_batch(data, what="Calibration data", *, dtype=torch.float32, shape=None):
    """``data`` as one ``dtype`` tensor ``[N, ...]``, checked once at an entry point.

    Parameters
    ----------
    data : numpy.ndarray, torch.Tensor, or an iterable of them
        Real numbers of any float or integer dtype (float64, float32, float16, bfloat16...).
        An iterable (a ``DataLoader``, a list of batches) is concatenated along the batch
        axis; an item that is a tuple or list (``(inputs, labels)``) gives its first element.
    what : str
        Names the data in messages.
    dtype : torch.dtype
        The result's dtype.
    shape : tuple, optional
        The per-item shape the data must have (``[N, *shape]``).

    Raises
    ------
    TypeError
        For data that is no array, tensor or iterable of them, or holds other than real
        numbers (complex, boolean, strings).
    ValueError
        For empty data, NaN or infinity, or items of the wrong shape.
    """
    if not isinstance(data, (np.ndarray, torch.Tensor)):
        if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
            raise TypeError(f"{what} must be a NumPy array, a torch tensor or an iterable of "
                            f"batches (a DataLoader), not {type(data).__name__}")
        batches = [item[0] if isinstance(item, (tuple, list)) and item else item
                   for item in data]
        if not batches:
            raise ValueError(f"{what} is an empty iterable; pass at least one batch")
        return torch.cat([as_batch(b, f"{what} (batch {i})", dtype=dtype, shape=shape)
                          for i, b in enumerate(batches)])
    kind = str(data.dtype)
    if isinstance(data, np.ndarray):
        real = data.dtype.kind in "iuf"
        data = torch.from_numpy(np.ascontiguousarray(data)) if real else data
    else:
        real = (data.is_floating_point() or not (data.is_complex() or data.dtype == torch.bool))
        data = data.detach().cpu()
    if not real:
        raise TypeError(f"{what} must hold real numbers, not {kind}")
    if data.dim() == 0 or data.shape[0] == 0 or data.numel() == 0:
        raise ValueError(f"{what} is empty (shape {list(data.shape)}); pass at least one item")
    if shape is not None and tuple(data.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} has shape {list(data.shape)}; the model takes "
                         f"[N, {', '.join(str(d) for d in shape)}]")
    data = data.to(dtype)
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"{what} holds NaN or infinity (or values too large for {dtype}); "
                         f"clean it first")
    return data


def uniform_params(quantizer, what):
    """``(scale, zero_point)`` of a uniform quantizer as unsigned 8-bit codes; ``what`` names
    the activations for the error message."""
    if quantizer.method != "uniform":
        raise UnsupportedLayerError(f"{what} are {quantizer.method} codes, but they must be "
                                    f"8-bit uniform codes here: quantize them uniformly")
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


def _check_sparsity(codes, sparsity, name):
    """Refuse weight codes that are not N:M when the layer must run N:M sparse."""
    n, m = sparsity
    bad = find_violation(codes, n, m)
    if bad is not None:
        row, group, count = bad
        raise UnsupportedLayerError(
            f"Layer {name!r}: sparsity {n}:{m} was asked for, but its weight codes are not "
            f"{n}:{m} (output {row}, group {group} keeps {count} nonzeros), and sparqforge "
            f"does not run a layer dense in silence: prune the model to {n}:{m} first "
            f"(sparqforge.sw.prune.NMSparsifier, then finalize()) and quantize so the pattern "
            f"survives (data-free, or with the mask), or ask for no sparsity")
    return [int(n), int(m)]


def export_model(qmodel, calib, *, name, sparsity=None, threshold_bits=4):
    """Turn a :class:`~sparqforge.sw.quantize.QuantizedModel` into a :class:`Bundle`.

    Parameters
    ----------
    qmodel : QuantizedModel
        From :func:`sparqforge.sw.quantize.quantize_model` with 8-bit uniform input
        activations for the first layer (power or uniform after that).
    calib : torch.Tensor or numpy.ndarray
        Model inputs (any real dtype: cast once to the model's); used to calibrate the
        logits' output quantization.
    name : str
        Bundle name.
    sparsity : (int, int), optional
        Run every layer N:M sparse: each layer's weight codes must be N:M.
    threshold_bits : int
        Threshold code width of the target; power activations must not be wider.

    Raises
    ------
    UnsupportedLayerError
        For any layer or quantization the integer pipeline cannot express, and with
        ``sparsity`` for the first layer whose weight codes are not N:M.
    TypeError, ValueError
        For calibration data that is not real numbers, empty or NaN (:func:`as_batch`).
    """
    from .quantize import ActivationQuantizer

    model = qmodel.model
    check_model(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    calib = as_batch(calib, dtype=dtype)
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
                next_q = (qlayers[position + 1].input_quantizer if position + 1 < len(qlayers)
                          else out_q)
                relu = (index + 1 < len(children) and isinstance(children[index + 1][1],
                                                                 nn.ReLU))
                bias = (None if ql.bias is None
                        else ql.bias.detach().cpu().numpy().astype(np.float64))
                bundle_layers.append(matmul_layer(
                    ql.name, ql.weight, bias, ql.input_quantizer, next_q,
                    conv=_conv_geometry(module, probe), relu=relu, sparsity=sparsity,
                    threshold_bits=threshold_bits, source=type(module).__name__))
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
    in_scale, in_zero = uniform_params(first, f"The input activations of layer {names[0]!r}")
    out_scale, out_zero = uniform_params(out_q, "The logits")
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


def _conv_geometry(module, probe):
    """A Conv2d's ``conv`` field for its input ``probe`` ``[1, C, H, W]``; ``None`` for a
    Linear."""
    if not isinstance(module, nn.Conv2d):
        return None
    _, c, h, w = probe.shape
    kernel, stride, padding = (_pair(module.kernel_size), _pair(module.stride),
                               _pair(module.padding))
    return {"in_channels": int(c), "in_height": int(h), "in_width": int(w),
            "kernel": kernel, "stride": stride, "padding": padding,
            "out_height": (h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            "out_width": (w + 2 * padding[1] - kernel[1]) // stride[1] + 1}


def matmul_layer(name, qweight, bias, q_in, q_out, *, conv=None, relu=False, sparsity=None,
                 threshold_bits=4, source=None):
    """One bundle ``matmul`` layer (without ``inputs``) from its quantization.

    Parameters
    ----------
    name : str
    qweight : QuantizedWeight
        Codes in the float weight's layout (``[out, in]``, ``[out, in, kh, kw]``, or
        ``[C, 1, kh, kw]`` for a depthwise convolution); symmetric.
    bias : numpy.ndarray or None
        The float bias ``[out]``.
    q_in, q_out : ActivationQuantizer
        The input's and the output's: 8-bit uniform, or power codes (the input's through an
        activation table, the output's by thresholds no wider than ``threshold_bits``).
    conv : dict, optional
        The bundle's ``conv`` field (``docs/bundle.md``); ``None`` for a vector layer.
    relu : bool
        Clamp at the output zero point (a fused ReLU; requantized outputs only: power codes
        are non-negative anyway).
    sparsity : (int, int), optional
        Mark the layer N:M; its codes must be N:M.
    threshold_bits : int
        The target's threshold code width.
    source : str, optional
        What the layer came from, for people reading the bundle.

    Raises
    ------
    UnsupportedLayerError
        For a quantization the integer pipeline cannot express, or codes that are not the
        ``sparsity`` asked for.
    """
    codes, w_int, table, s_w = _weight_matrix(qweight, name)
    n_out, k = codes.shape
    if q_in.method == "power":
        if q_in.mac_bits != 8:
            raise UnsupportedLayerError(f"Layer {name!r}: power activations need 8-bit "
                                        f"table entries, not mac_bits={q_in.mac_bits}: "
                                        f"calibrate them with mac_bits=8")
        s_in, z_in = float(q_in.scale) / A_MAX, 0
        act_table = np.zeros(256, dtype=np.int64)
        act_table[:len(q_in.table)] = np.asarray(q_in.table, dtype=np.int64)
    else:
        s_in, z_in = uniform_params(q_in, f"The input activations of layer {name!r}")
        act_table = None
    scale = s_in * s_w
    bias = np.zeros(n_out) if bias is None else np.asarray(bias, dtype=np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    bias_int = np.where(scale > 0, round_half_away(bias / safe), 0).astype(np.int64)
    bias_int = bias_int - z_in * w_int.sum(axis=1)
    layer = {"type": "matmul", "name": name, "source": source,
             "in_features": int(k), "out_features": int(n_out),
             "weight_bits": int(qweight.bits), "weight_method": qweight.method,
             "weight": codes, "act_table": act_table, "weight_table": table,
             "input_method": q_in.method, "pad_code": int(z_in), "relu": None,
             "conv": conv,
             "sparsity": None if sparsity is None else _check_sparsity(codes, sparsity, name)}
    if q_out.method == "power":
        count = (1 << q_out.bits) - 1
        if q_out.bits > threshold_bits:
            raise UnsupportedLayerError(f"Layer {name!r}: {q_out.bits}-bit power "
                                        f"activations need a {q_out.bits}-bit threshold unit, "
                                        f"the target has {threshold_bits}-bit: quantize them "
                                        f"with act_bits <= {threshold_bits}")
        layer["output"] = "threshold"
        layer["thresholds"] = _thresholds(q_out, scale, bias_int.astype(np.float64), count)
        layer.pop("relu")
    else:
        s_out, z_out = uniform_params(q_out, f"The activations after layer {name!r}")
        multiplier, shift = golden.quantize_multiplier(np.where(scale > 0, scale / s_out, 0.0))
        layer.update(output="requant", bias=np.clip(bias_int, -(1 << 31), (1 << 31) - 1),
                     multiplier=multiplier, shift=shift,
                     zero_point=np.full(n_out, z_out, dtype=np.int64),
                     relu=np.full(n_out, int(relu), dtype=np.int64))
    return {key: value for key, value in layer.items() if value is not None or key in (
        "act_table", "weight_table", "conv", "sparsity")}
