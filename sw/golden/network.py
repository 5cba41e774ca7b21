"""Golden model of a whole quantized network, layer by layer on integer codes.

Layers are plain dicts (the bundle's layer metadata with its arrays, see
``sparqforge.sw.bundle``). Activations are unsigned 8-bit codes throughout; a convolution's
input is kept channels-last (``[images, height, width, channels]``) and lowered to a matmul by
im2col with columns ordered ``(kh, kw, channel)``, padded with the input's zero-point code.
"""

__all__ = ["ACT_BITS", "im2col", "max_pool", "avg_pool", "flatten_nchw", "matmul_layer",
           "run_network"]

import numpy as np

from .power import threshold_unit
from .mac_array import requantize_layer

#: Width of the unsigned activation codes between layers (and of a network's input codes).
ACT_BITS = 8


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


def matmul_layer(codes, layer):
    """One Linear/Conv2d layer on ``codes [rows, K]``: operand tables, integer matmul, then
    requantization or thresholds. Returns ``[rows, N]`` output codes."""
    a = np.asarray(codes, dtype=np.int64)
    if layer.get("act_table") is not None:
        a = np.asarray(layer["act_table"])[a & 0xFF]
    w = np.asarray(layer["weight"], dtype=np.int64)
    if layer.get("weight_table") is not None:
        w = np.asarray(layer["weight_table"])[w & 0xFF]
    acc = a @ w.T
    if layer["output"] == "threshold":
        return threshold_unit(acc, layer["thresholds"])
    return requantize_layer(acc, bias=layer["bias"], multiplier=layer["multiplier"],
                            shift=layer["shift"], zero_point=layer["zero_point"],
                            relu=np.asarray(layer["relu"], dtype=bool), out_bits=ACT_BITS,
                            out_signed=False)


def run_network(layers, codes):
    """Run ``layers`` on input codes (``[B, ...]``: ``[B, H, W, C]`` before a convolution,
    ``[B, features]`` otherwise); returns the last layer's output codes."""
    x = np.asarray(codes, dtype=np.int64)
    for layer in layers:
        kind = layer["type"]
        if kind == "matmul":
            conv = layer.get("conv")
            if conv:
                b = x.shape[0]
                cols = im2col(x, kernel=conv["kernel"], stride=conv["stride"],
                              padding=conv["padding"], pad_code=layer["pad_code"])
                x = matmul_layer(cols, layer).reshape(b, conv["out_height"], conv["out_width"],
                                                      -1)
            else:
                x = matmul_layer(x.reshape(x.shape[0], -1), layer)
        elif kind == "maxpool":
            x = max_pool(x, kernel=layer["kernel"], stride=layer["stride"])
        elif kind == "avgpool":
            x = avg_pool(x, kernel=layer["kernel"], stride=layer["stride"])
        elif kind == "flatten":
            x = flatten_nchw(x) if x.ndim == 4 else x.reshape(x.shape[0], -1)
        else:
            raise ValueError(f"Unknown layer type {kind!r}")
    return x
