"""Convolutions on the device: images and the window walk.

On an accelerator with ``conv`` the feeder walks a convolution's windows itself
(``Mode.CONV``, :class:`~sparqforge.protocol.RunDescriptor`), so a convolution reads its
input image where the layer before it wrote it. Such tensors are *images*: every bank holds
the whole tensor, pixel after pixel, ``ceil(channels / cols)`` words per pixel. The host
writes an image into every bank at once (``Space.ACT_ALL``; ``Space.ACT_LANES`` when its
channels fill less than a word, so that only they travel). Layers on the walk form image
segments (:mod:`~sparqforge.sw.runtime.image_segments`). Batches run image by image.

Average pooling and global average pooling run as depthwise convolutions whose weights are
all 1 (:func:`pool_layer`): a global average pool is the requantization of the window's sum
(``docs/numerics.md``), and an average pool's rounded mean is the sum requantized by a
multiplier just above ``1 / count`` with no shift (exact: checked for every sum in the
tests). A pool's output of one pixel can feed matrix layers in the same segment (the pixel's
channels are matrix row 0).

A convolution runs on the walk when the accelerator has ``conv`` and its beats keep within
one word (dense, or an N:M step that divides the input channels); a depthwise convolution
(``Mode.DEPTHWISE``: each column its own channel) on accelerators with ``depthwise``. When
its input and output images fit the banks together it runs whole; otherwise in bands of
output rows (:func:`run_bands`), each band's input rows written and its output rows read by
the host. Only when not even one output row fits is a convolution lowered by im2col on the
host (a depthwise one runs on the host).
"""

__all__ = ["image_words", "image_region", "fits_image", "band_rows", "band_input", "image_shapes",
           "pool_layer", "output_words", "conv_descriptor", "write_image", "run_bands"]

import numpy as np

from ...protocol import Mode, RunDescriptor, Space, encode_address
from .. import golden
from .planning import ceil_div


def image_words(config, shape):
    """Words of an image ``shape = (h, w, c)`` in one bank."""
    h, w, c = shape
    return h * w * ceil_div(c, config.cols)


def image_shapes(bundle, graph):
    """``{tensor name: (h, w, c)}`` of every image tensor of ``bundle`` (the network input
    when it is an image, convolution and pooling outputs, and what adds and clamps keep)."""
    shapes = {}
    if len(bundle.input["shape"]) == 3:
        c, h, w = bundle.input["shape"]
        shapes[golden.NETWORK_INPUT] = (h, w, c)
    for layer, (name, inputs) in zip(bundle.layers, graph):
        kind, shape = layer["type"], shapes.get(inputs[0])
        if kind == "matmul" and layer.get("conv"):
            conv = layer["conv"]
            shapes[name] = (conv["out_height"], conv["out_width"], layer["out_features"])
        elif kind in ("add", "clamp") and shape:
            shapes[name] = shape
        elif kind in ("maxpool", "avgpool") and shape:
            (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
            shapes[name] = ((shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1, shape[2])
        elif kind == "global_avgpool" and shape:
            shapes[name] = (1, 1, shape[2])
    return shapes


def pool_layer(layer, shape):
    """The depthwise convolution with weights 1 that computes the average pooling or global
    average pooling ``layer`` on an image ``shape = (h, w, c)``, as a bundle matmul layer."""
    h, w, c = shape
    if layer["type"] == "global_avgpool":
        (kh, kw), stride = (h, w), (1, 1)
        params = {key: np.full(c, int(layer[key]), dtype=np.int64)
                  for key in ("bias", "multiplier", "shift", "zero_point")}
    else:
        # The rounded mean is the sum times ceil(2**31 / count) / 2**31, rounded once (a
        # shift of 0: the requantizer's second rounding would round ties twice). The
        # multiplier is one ulp above 1 / count, so a tie (the only sums within 1 / (2 *
        # count) of a half) rounds up, as the mean does; 2**31 - 1 for a count of 1.
        (kh, kw), stride = layer["kernel"], layer["stride"]
        multiplier = min(-(-(1 << 31) // (kh * kw)), (1 << 31) - 1)
        params = {"bias": np.zeros(c, dtype=np.int64),
                  "multiplier": np.full(c, multiplier, dtype=np.int64),
                  "shift": np.zeros(c, dtype=np.int64),
                  "zero_point": np.zeros(c, dtype=np.int64)}
    out_h, out_w = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    return {"type": "matmul", "name": layer["name"], "inputs": layer["inputs"],
            "in_features": kh * kw, "out_features": c, "weight_bits": 8,
            "weight": np.ones((c, kh * kw), dtype=np.int64), "act_table": None,
            "weight_table": None, "sparsity": None, "pad_code": 0, "output": "requant",
            "relu": np.zeros(c, dtype=np.int64), **params,
            "conv": {"in_channels": c, "in_height": h, "in_width": w, "kernel": [kh, kw],
                     "stride": list(stride), "padding": [0, 0], "out_height": out_h,
                     "out_width": out_w, "groups": c}}


def image_region(config, shape):
    """Words an image ``shape = (h, w, c)`` takes in a bank as a RUN writes it: whole tiles
    of ``rows`` pixels."""
    h, w, c = shape
    return ceil_div(h * w, config.rows) * config.rows * ceil_div(c, config.cols)


def output_words(config, plan, out_rows=None):
    """Words the output of image layer ``plan`` (or of ``out_rows`` of its rows) takes."""
    conv = plan.layer["conv"]
    out_rows = conv["out_height"] if out_rows is None else out_rows
    return image_region(config, (out_rows, conv["out_width"], plan.n_tiles * config.cols))


def band_input(conv, oy0, oy1):
    """The input rows ``[iy0, iy1)`` that output rows ``oy0 .. oy1 - 1`` read."""
    (kh, _), (sh, _), (ph, _) = conv["kernel"], conv["stride"], conv["padding"]
    iy0 = max(0, oy0 * sh - ph)
    return iy0, max(iy0, min(conv["in_height"], (oy1 - 1) * sh - ph + kh))


def band_rows(config, plan):
    """The most output rows per band with which convolution ``plan`` runs on the window
    walk band by band (:func:`run_bands`): a band's input rows and output fit the
    banks together. 0 when not even one output row does, or the walk cannot run it."""
    conv = plan.layer["conv"]
    if not _walkable(config, plan):
        return 0
    (kh, _), (sh, _) = conv["kernel"], conv["stride"]
    in_c = conv["in_channels"]
    best = 0
    for rows in range(1, conv["out_height"] + 1):
        # Any band of ``rows`` output rows reads at most this many input rows.
        inputs = min(conv["in_height"], (rows - 1) * sh + kh)
        if (image_words(config, (inputs, conv["in_width"], in_c))
                + output_words(config, plan, rows) > config.act_depth):
            break
        best = rows
    return best


def _walkable(config, plan):
    """Whether the window walk can compute convolution ``plan`` (wherever its images fit)."""
    conv = plan.layer["conv"]
    step, in_c = plan.step, conv["in_channels"]
    depthwise = bool(plan.mode & Mode.DEPTHWISE)
    if not (config.depthwise if depthwise else config.conv):
        return False
    if step != 1 and (depthwise or step & (step - 1) or in_c % step):
        return False
    kh, kw = conv["kernel"]
    taps = kh * kw * (1 if depthwise else in_c)
    return plan.k_steps * step == taps and max(*conv["stride"], *conv["padding"]) <= 255


def fits_image(config, plan):
    """Whether convolution ``plan`` can run on the device's window walk, its whole input
    and output in the banks together."""
    conv = plan.layer["conv"]
    shape = (conv["in_height"], conv["in_width"], conv["in_channels"])
    return (_walkable(config, plan)
            and image_words(config, shape) + output_words(config, plan) <= config.act_depth)


def conv_descriptor(config, plan, a_base, out_base, band=None):
    """The descriptors of image layer ``plan`` (for ``Runner.run_parts``) reading its input
    at word ``a_base`` and writing from ``out_base``: the whole image, or ``band = (oy0,
    oy1)``, output rows ``oy0 .. oy1 - 1`` from their input rows at ``a_base``."""
    conv = plan.layer["conv"]
    (sh, sw), (ph, pw) = conv["stride"], conv["padding"]
    oy0, oy1 = band or (0, conv["out_height"])
    iy0, iy1 = band_input(conv, oy0, oy1) if band else (0, conv["in_height"])
    m_tiles = ceil_div((oy1 - oy0) * conv["out_width"], config.rows)

    def descriptor(first, tiles, w_base, group_base):
        # A band's first window row is local row ``oy0 * sh - ph - iy0``: the padding rows
        # above it, if any, are the image's own.
        return RunDescriptor.convolution(
            in_shape=(iy1 - iy0, conv["in_width"],
                      1 if plan.mode & Mode.DEPTHWISE else conv["in_channels"]),
            kernel=tuple(conv["kernel"]), stride=(sh, sw), padding=(iy0 - oy0 * sh + ph, pw),
            pad_code=int(plan.layer["pad_code"]),
            # (A depthwise part from channel tile ``first`` reads that tile's words.)
            a_base=a_base + (first if plan.mode & Mode.DEPTHWISE else 0), words=plan.a_stride,
            m_tiles=m_tiles, n_tiles=tiles, k_steps=plan.k_steps, step=plan.step,
            mode=plan.mode | Mode.CONV, w_base=w_base, out_base=out_base + first,
            out_stride=plan.n_tiles, group_base=group_base)
    return descriptor


def write_image(device, config, image, base=0):
    """Image ``[h, w, c]`` into every bank from word ``base``."""
    h, w, c = image.shape
    cols = config.cols
    if h * w == 0:
        return
    if c < cols:
        # One word per pixel, its lanes past the channels 0: only the channels travel.
        device.write(Space.ACT_LANES,
                     encode_address(Space.ACT_LANES, config, lanes=c - 1, word=base),
                     image.reshape(h * w, c).astype(np.uint8))
    else:
        data = np.zeros((h * w, ceil_div(c, cols) * cols), dtype=np.uint8)
        data[:, :c] = image.reshape(h * w, c)
        device.write(Space.ACT_ALL, base, data.reshape(-1, cols))


def run_bands(runner, plan, image):
    """Image layer ``plan`` on one image ``[h, w, c]``, band by band: each band's input
    rows written at word 0, its output rows read from the other end of the banks."""
    config, device = runner.config, runner.device
    conv = plan.layer["conv"]
    oh, ow = conv["out_height"], conv["out_width"]
    out = np.zeros((oh, ow, plan.n_tiles * config.cols), dtype=np.int64)
    for oy0 in range(0, oh, plan.band_rows):
        oy1 = min(oh, oy0 + plan.band_rows)
        iy0, iy1 = band_input(conv, oy0, oy1)
        write_image(device, config, image[iy0:iy1])
        dst = config.act_depth - output_words(config, plan, oy1 - oy0)
        runner.run_parts(plan, conv_descriptor(config, plan, 0, dst, (oy0, oy1)))
        out[oy0:oy1] = device.read_act(dst, (oy1 - oy0) * ow * plan.n_tiles).reshape(
            oy1 - oy0, ow, -1)
    return out[..., :plan.layer["out_features"]]
