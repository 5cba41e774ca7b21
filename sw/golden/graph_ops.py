"""Golden model of the graph operators between matmul layers (``docs/numerics.md``, "Graph
operators"): depthwise convolution, TFLite's integer residual add, global average pooling and
clamp, on unsigned 8-bit codes, integers only.

Each operator takes its layer as the bundle stores it (``docs/bundle.md``); ``add_params``,
``global_avgpool_params`` and ``clamp_params`` compute those integer fields from the float
scales and zero points, so that every exporter or importer derives them in one place.
"""

__all__ = ["ADD_LEFT_SHIFT", "depthwise_conv_layer", "add_layer", "add_params",
           "global_avgpool_layer", "global_avgpool_params", "clamp_layer", "clamp_params"]

import math

import numpy as np

from .mac_array import requantize_layer
from .network import ACT_BITS, im2col, layer_operands, layer_output
from .numerics import round_half_away
from .requant import multiply_by_quantized_multiplier, output_range, quantize_multiplier, \
    requantize

#: TFLite's 8-bit ADD scales both inputs up by ``2**20`` before rescaling them.
ADD_LEFT_SHIFT = 20


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def _check_quantization(what, scale, zero_point):
    if not isinstance(scale, (int, float, np.integer, np.floating)) or isinstance(scale, bool) \
            or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{what} scale must be a finite positive number, not {scale!r}")
    if not isinstance(zero_point, (int, np.integer)) or isinstance(zero_point, bool) \
            or not 0 <= zero_point <= 255:
        raise ValueError(f"{what} zero point must be an integer in 0..255, not {zero_point!r}")


def depthwise_conv_layer(x, layer):
    """A depthwise convolution on channels-last codes ``x [B, H, W, C]``.

    Output channel ``c`` is a matmul layer over input channel ``c``'s ``kh * kw`` window:
    the input padded with ``pad_code`` (the input zero point), ``acc = sum w * q`` (after the
    operand tables, when the layer has them), then the layer's requantization or thresholds
    per channel. ``weight`` is ``[C, kh * kw]`` with columns ordered ``(kh, kw)``. Returns
    ``[B, OH, OW, C]``.

    >>> layer = {"weight": np.array([[1, 1, 1, 1], [0, 0, 0, 2]]), "pad_code": 0,
    ...          "conv": {"kernel": [2, 2], "stride": [1, 1], "padding": [0, 0],
    ...                   "out_height": 1, "out_width": 1, "groups": 2},
    ...          "output": "requant", "bias": np.array([0, 1]),
    ...          "multiplier": np.array([1 << 30, 1 << 30]), "shift": np.array([0, 0]),
    ...          "zero_point": np.array([0, 0]), "relu": np.array([0, 0])}
    >>> x = np.array([[[[1, 5], [2, 6]], [[3, 7], [4, 8]]]])  # channel 0: 1..4, 1: 5..8
    >>> depthwise_conv_layer(x, layer).tolist()  # (1+2+3+4) / 2, (2 * 8 + 1) / 2 rounded
    [[[[5, 9]]]]
    """
    x = _i64(x)
    conv = layer["conv"]
    kh, kw = conv["kernel"]
    b, c = x.shape[0], x.shape[3]
    cols = im2col(x, kernel=conv["kernel"], stride=conv["stride"], padding=conv["padding"],
                  pad_code=layer["pad_code"])
    a, w = layer_operands(cols.reshape(-1, kh * kw, c), layer)
    acc = np.einsum("pkc,ck->pc", a, w)
    return layer_output(acc, layer).reshape(b, conv["out_height"], conv["out_width"], c)


def add_layer(q1, q2, layer):
    """TFLite's integer ADD of two code tensors of one shape.

    With ``M_i, s_i`` the layer's ``multiplier[i]`` and ``shift[i]`` (inputs 1 and 2, then
    the output), ``z_i`` its ``zero_point[i]`` and ``L = left_shift`` (20), per element::

        u_i = MultiplyByQuantizedMultiplier((q_i - z_i) * 2**L, M_i, s_i)
        out = clamp(MultiplyByQuantizedMultiplier(u_1 + u_2, M_3, s_3) + z_3,
                    relu ? z_3 : 0, 255)

    with the double-rounding ``MultiplyByQuantizedMultiplier`` of the requantizer (no bias).

    Below, the real sums 2.0, -4.0 and -0.25 are 4, -8 and -0.5 output steps; the tie
    rounds away from zero.

    >>> layer = add_params(0.5, 128, 0.25, 0, 0.5, 100, relu=False)
    >>> add_layer(np.array([130, 120, 0]), np.array([4, 0, 255]), layer).tolist()
    [104, 92, 99]
    >>> add_layer(np.array([120]), np.array([0]), dict(layer, relu=1)).tolist()
    [100]
    """
    multiplier, shift, zero_point = (_i64(layer[key]) for key in ("multiplier", "shift",
                                                                    "zero_point"))
    left = int(layer["left_shift"])
    scaled = [multiply_by_quantized_multiplier((_i64(q) - zero_point[i]) << left,
                                               multiplier[i], shift[i])
              for i, q in enumerate((q1, q2))]
    qmin, qmax = output_range(ACT_BITS, False, zero_point=int(zero_point[2]),
                              relu=bool(layer["relu"]))
    return requantize(scaled[0] + scaled[1], multiplier[2], shift[2],
                      zero_point=zero_point[2], qmin=qmin, qmax=qmax)


def add_params(s1, z1, s2, z2, s_out, z_out, relu):
    """The integer fields of an ``add`` layer (all but ``type``, ``name`` and ``inputs``) for
    inputs of scales ``s1``, ``s2`` and zero points ``z1``, ``z2`` and an output of scale
    ``s_out`` and zero point ``z_out``, as TFLite's 8-bit ADD prepares them: with
    ``twice_max = 2 * max(s1, s2)``, the real multipliers ``s1 / twice_max``,
    ``s2 / twice_max`` and ``twice_max / (2**20 * s_out)`` through :func:`quantize_multiplier`.

    Raises
    ------
    ValueError
        If a scale is not a finite positive number or a zero point not an integer in 0..255.

    >>> params = add_params(0.5, 128, 0.25, 0, 0.5, 100, relu=True)
    >>> params["multiplier"].tolist(), params["shift"].tolist()
    ([1073741824, 1073741824, 1073741824], [0, -1, -18])
    >>> params["zero_point"].tolist(), params["relu"], params["left_shift"]
    ([128, 0, 100], 1, 20)
    """
    for what, scale, zero_point in (("Add input 1", s1, z1), ("Add input 2", s2, z2),
                                    ("Add output", s_out, z_out)):
        _check_quantization(what, scale, zero_point)
    twice_max = 2.0 * max(s1, s2)
    real = np.array([s1 / twice_max, s2 / twice_max,
                     twice_max / ((1 << ADD_LEFT_SHIFT) * s_out)])
    multiplier, shift = quantize_multiplier(real)
    return {"multiplier": multiplier, "shift": shift,
            "zero_point": np.array([z1, z2, z_out], dtype=np.int64), "relu": int(bool(relu)),
            "left_shift": ADD_LEFT_SHIFT}


def global_avgpool_layer(x, layer):
    """Global average pooling of channels-last codes ``x [B, H, W, C]`` -> ``[B, C]``: the
    requantization of ``acc = sum q`` over the ``H * W`` positions with the layer's scalar
    ``bias`` (``-H * W * z_in``), ``multiplier``, ``shift`` and ``zero_point``.

    >>> layer = global_avgpool_params(0.1, 10, 0.1, 10, height=2, width=2)
    >>> x = np.array([[[[10, 0], [11, 255]], [[12, 1], [13, 2]]]])
    >>> global_avgpool_layer(x, layer).tolist()  # means 11.5 (ties away) and 64.5
    [[12, 65]]
    """
    acc = _i64(x).sum(axis=(1, 2))
    return requantize_layer(acc, bias=layer["bias"], multiplier=layer["multiplier"],
                            shift=layer["shift"], zero_point=layer["zero_point"], relu=False,
                            out_bits=ACT_BITS, out_signed=False)


def global_avgpool_params(s_in, z_in, s_out, z_out, height, width):
    """The integer fields of a ``global_avgpool`` layer over ``height * width`` positions:
    ``bias = -height * width * z_in`` and the multiplier and shift of
    ``s_in / (height * width * s_out)``; plain ``int`` values.

    Raises
    ------
    ValueError
        If a scale, zero point or size is out of range.

    >>> global_avgpool_params(0.1, 10, 0.1, 10, height=2, width=2)
    {'multiplier': 1073741824, 'shift': -1, 'bias': -40, 'zero_point': 10}
    """
    _check_quantization("Global average pooling input", s_in, z_in)
    _check_quantization("Global average pooling output", s_out, z_out)
    for what, size in (("height", height), ("width", width)):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"Global average pooling {what} must be a positive integer, "
                             f"not {size!r}")
    count = int(height) * int(width)
    multiplier, shift = quantize_multiplier(s_in / (count * s_out))
    return {"multiplier": multiplier, "shift": shift, "bias": -count * int(z_in),
            "zero_point": int(z_out)}


def clamp_layer(x, layer):
    """``clip(q, low, high)`` on codes, at the input's scale and zero point.

    >>> clamp_layer(np.array([0, 3, 200, 255]), {"low": 3, "high": 200}).tolist()
    [3, 3, 200, 200]
    """
    return np.clip(_i64(x), int(layer["low"]), int(layer["high"]))


def clamp_params(scale, zero_point, low, high):
    """The ``low`` and ``high`` codes of a clamp layer for real bounds ``low``, ``high``
    (``None``: no bound) at ``scale`` and ``zero_point``: ``zero_point +
    round_half_away(bound / scale)`` clipped to ``0..255``.

    >>> clamp_params(0.05, 20, 0.0, 6.0)  # ReLU6
    {'low': 20, 'high': 140}
    >>> clamp_params(0.05, 20, -1.025, None)
    {'low': 0, 'high': 255}
    """
    _check_quantization("Clamp", scale, zero_point)

    def code(bound, default):
        if bound is None:
            return default
        return int(np.clip(zero_point + round_half_away(bound / scale), 0, 255))
    lo, hi = code(low, 0), code(high, 255)
    if lo > hi:
        raise ValueError(f"Clamp bounds must satisfy low <= high, not {low!r} > {high!r}")
    return {"low": lo, "high": hi}
