"""Golden model of a whole quantized network: a graph of layers evaluated on integer codes.

Layers are plain dicts (the bundle's layer metadata with its arrays, see ``docs/bundle.md``)
listed in topological order; each names the layers it reads in ``inputs`` (``"input"`` is the
network input) and the last one is the network's output. Activations are unsigned 8-bit codes
throughout; images are kept channels-last (``[images, height, width, channels]``) and a
convolution is lowered to a matmul by im2col with columns ordered ``(kh, kw, channel)``,
padded with the input's zero-point code. The operators between matmul layers (residual add,
global average pooling, clamp, depthwise convolution) are in
:mod:`~sparqforge.sw.golden.graph_ops`.
"""

__all__ = ["ACT_BITS", "NETWORK_INPUT", "im2col", "max_pool", "avg_pool", "flatten_nchw",
           "layer_operands", "layer_output", "matmul_layer", "is_depthwise", "layer_graph",
           "apply_layer", "run_network"]

import numpy as np

from .power import threshold_unit
from .mac_array import requantize_layer

#: Width of the unsigned activation codes between layers (and of a network's input codes).
ACT_BITS = 8
#: The name by which layers read the network input.
NETWORK_INPUT = "input"


def im2col(x, *, kernel, stride, padding, pad_code):
    """``x [B, H, W, C]`` -> ``[B * OH * OW, kh * kw * C]`` patches, columns ``(kh, kw, c)``.

    >>> im2col(np.arange(4).reshape(1, 2, 2, 1), kernel=(2, 2), stride=(1, 1),
    ...        padding=(0, 0), pad_code=0).tolist()
    [[0, 1, 2, 3]]
    """
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    padded = np.full((b, h + 2 * ph, w + 2 * pw, c), pad_code, dtype=np.int64)
    padded[:, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((b, oh, ow, kh, kw, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return cols.reshape(b * oh * ow, kh * kw * c)


def _windows(x, kernel, stride):
    b, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((b, oh, ow, kh * kw, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            out[:, :, :, i * kw + j] = x[:, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return out


def max_pool(x, *, kernel, stride):
    """Max pooling on codes (exact: quantization is monotone)."""
    return _windows(x, kernel, stride).max(axis=3)


def avg_pool(x, *, kernel, stride):
    """Average pooling on codes, rounded half away from zero (codes are non-negative, so
    ``(2 * sum + count) // (2 * count)``)."""
    windows = _windows(x, kernel, stride)
    count = windows.shape[3]
    return (2 * windows.sum(axis=3) + count) // (2 * count)


def flatten_nchw(x):
    """``[B, H, W, C]`` -> ``[B, C * H * W]`` in PyTorch's (channel, row, column) order."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


def layer_operands(codes, layer):
    """The integers a matmul layer multiplies: ``codes`` through its ``act_table`` and its
    ``weight`` codes through its ``weight_table`` (each only when the layer has one)."""
    a = np.asarray(codes, dtype=np.int64)
    if layer.get("act_table") is not None:
        a = np.asarray(layer["act_table"], dtype=np.int64)[a & 0xFF]
    w = np.asarray(layer["weight"], dtype=np.int64)
    if layer.get("weight_table") is not None:
        w = np.asarray(layer["weight_table"], dtype=np.int64)[w & 0xFF]
    return a, w


def layer_output(acc, layer):
    """A matmul layer's output stage on accumulators ``[..., N]``: its thresholds, or its
    per-channel requantization to unsigned 8-bit codes."""
    if layer["output"] == "threshold":
        return threshold_unit(acc, layer["thresholds"])
    return requantize_layer(acc, bias=layer["bias"], multiplier=layer["multiplier"],
                            shift=layer["shift"], zero_point=layer["zero_point"],
                            relu=np.asarray(layer["relu"], dtype=bool), out_bits=ACT_BITS,
                            out_signed=False)


def matmul_layer(codes, layer):
    """One Linear/Conv2d layer on ``codes [rows, K]``: operand tables, integer matmul, then
    requantization or thresholds. Returns ``[rows, N]`` output codes."""
    a, w = layer_operands(codes, layer)
    return layer_output(a @ w.T, layer)


def is_depthwise(layer):
    """Whether a matmul layer is a depthwise convolution (``conv.groups`` other than 1).

    >>> is_depthwise({"type": "matmul", "conv": {"groups": 8}})
    True
    >>> is_depthwise({"type": "matmul", "conv": None})
    False
    """
    conv = layer.get("conv")
    return layer.get("type") == "matmul" and bool(conv) and conv.get("groups", 1) != 1


def layer_graph(layers):
    """``[(name, inputs)]`` of every layer. A layer without ``name`` is ``layer{index}``; one
    without ``inputs`` reads the layer before it, the first the network input (what a
    version-1 bundle means).

    >>> layer_graph([{"name": "fc1"}, {}, {"name": "out", "inputs": ["fc1", "layer1"]}])
    [('fc1', ['input']), ('layer1', ['fc1']), ('out', ['fc1', 'layer1'])]
    """
    graph, previous = [], NETWORK_INPUT
    for index, layer in enumerate(layers):
        name = layer.get("name", f"layer{index}")
        graph.append((name, list(layer.get("inputs", [previous]))))
        previous = name
    return graph


def apply_layer(layer, inputs):
    """Output codes ``[B, ...]`` of one layer on its input tensors (a list, in the order of
    its ``inputs``). The runtime runs every layer it keeps on the host with this."""
    from . import graph_ops  # graph_ops builds on this module's im2col and output stage

    kind = layer["type"]
    x = np.asarray(inputs[0], dtype=np.int64)
    if kind == "matmul":
        conv = layer.get("conv")
        if is_depthwise(layer):
            return graph_ops.depthwise_conv_layer(x, layer)
        if conv:
            cols = im2col(x, kernel=conv["kernel"], stride=conv["stride"],
                          padding=conv["padding"], pad_code=layer["pad_code"])
            return matmul_layer(cols, layer).reshape(x.shape[0], conv["out_height"],
                                                     conv["out_width"], -1)
        return matmul_layer(x.reshape(x.shape[0], -1), layer)
    if kind == "add":
        return graph_ops.add_layer(x, inputs[1], layer)
    if kind == "global_avgpool":
        return graph_ops.global_avgpool_layer(x, layer)
    if kind == "clamp":
        return graph_ops.clamp_layer(x, layer)
    if kind == "maxpool":
        return max_pool(x, kernel=layer["kernel"], stride=layer["stride"])
    if kind == "avgpool":
        return avg_pool(x, kernel=layer["kernel"], stride=layer["stride"])
    if kind == "flatten":
        return flatten_nchw(x) if x.ndim == 4 else x.reshape(x.shape[0], -1)
    raise ValueError(f"Unknown layer type {kind!r}")


def run_network(layers, codes):
    """Run the graph ``layers`` on input codes (``[B, H, W, C]`` for an image input,
    ``[B, features]`` otherwise); returns the last layer's output codes.

    Every layer's output is kept by name until the last layer that reads it has run.
    """
    graph = layer_graph(layers)
    last_read = {}
    for position, (_, inputs) in enumerate(graph):
        for name in inputs:
            last_read[name] = position
    tensors = {NETWORK_INPUT: np.asarray(codes, dtype=np.int64)}
    for position, (layer, (name, inputs)) in enumerate(zip(layers, graph)):
        tensors[name] = apply_layer(layer, [tensors[i] for i in inputs])
        for read in set(inputs):
            if last_read[read] == position and read != name:
                del tensors[read]
    return tensors[graph[-1][0]]
