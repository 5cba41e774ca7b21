"""Residual adds on the device: TFLite's integer ADD through the add tables.

TFLite's ADD rescales each input code with a 31-bit multiplier of its own and a rounding of
its own before the sum is requantized (:func:`sparqforge.sw.golden.graph_ops.add_layer`):

    u_i = MultiplyByQuantizedMultiplier((q_i - z_i) << 20, M_i, s_i)
    out = clamp(MultiplyByQuantizedMultiplier(u_1 + u_2, M_3, s_3) + z_3, ...)

``u_i`` depends on one code alone, so the host tabulates it (256 entries per input, the
golden function itself), and the device looks both up and requantizes their sum
(``Mode.ADD``, :class:`~sparqforge.protocol.RunDescriptor`). To get both codes of a pixel
to the table, the depthwise window walk reads the two inputs as the taps of a 2x2 window:
rows ``ky = 0`` and ``1`` are the two images (``tap_row`` is the distance between them),
and the two columns ``kx`` read the same pixel (``a_stride`` 0). Weights ``1, 0`` on the
first input and ``-128, -128`` on the second make the accumulator ``q_1 - 256 * q_2``:
its low byte is ``q_1`` and its next byte ``-q_2 mod 256``, which is how the table of the
second input is indexed. The result is exact for every pair of codes (checked against the
golden ADD in the tests).

The walk treats the image as one row of pixels (``out_w`` = pixels, ``in_w`` one more, so
that the second column of taps is inside), with a vertical stride of 2 and ``in_h`` 2: the
rows past the image, which every RUN computes up to a whole tile, fall outside and read
nothing.
"""

__all__ = ["add_layer", "add_plan", "add_table", "add_descriptor", "AddTables", "TAP_WEIGHTS"]

from dataclasses import replace

import numpy as np

from ...protocol import ADD_TABLES, Mode, RunDescriptor, Space, encode_address
from .. import golden
from .planning import CompileError, ceil_div
from .windows import image_region

#: Weights of the window taps ``(ky, kx)`` in order: ``(0, 0)``, ``(0, 1)`` read the first
#: input, ``(1, 0)``, ``(1, 1)`` the second.
TAP_WEIGHTS = (1, 0, -128, -128)


def add_layer(layer, shape):
    """The depthwise layer (a bundle matmul layer with ``add_table``) that computes the
    ``add`` ``layer`` of two images of ``shape = (h, w, c)``: the tap weights above, the
    output requantization (no bias) and the table of both inputs."""
    h, w, c = shape
    multiplier, shift, zero_point = (np.asarray(layer[key], dtype=np.int64)
                                     for key in ("multiplier", "shift", "zero_point"))
    relu = int(bool(layer["relu"]))
    return {"type": "matmul", "name": layer["name"], "inputs": layer["inputs"],
            "in_features": len(TAP_WEIGHTS), "out_features": c, "weight_bits": 8,
            "weight": np.tile(np.array(TAP_WEIGHTS, dtype=np.int64), (c, 1)),
            "act_table": None, "weight_table": None, "sparsity": None, "pad_code": 0,
            "output": "requant", "bias": np.zeros(c, dtype=np.int64),
            "multiplier": np.full(c, multiplier[2]), "shift": np.full(c, shift[2]),
            "zero_point": np.full(c, zero_point[2]), "relu": np.full(c, relu),
            "add_table": add_table(layer),
            "conv": {"in_channels": c, "in_height": h, "in_width": w, "kernel": [2, 2],
                     "stride": [1, 1], "padding": [0, 0], "out_height": h, "out_width": w,
                     "groups": c}}


def add_table(layer):
    """The add table ``[2, 256]`` of ``add`` ``layer``: entry ``[0][q]`` is the first input's
    rescaled code ``q``, entry ``[1][j]`` the second input's for the code ``-j mod 256``.

    Raises
    ------
    CompileError
        When two entries could overflow the 32-bit sum (no TFLite ADD's multipliers do).
    """
    multiplier, shift, zero_point = (np.asarray(layer[key], dtype=np.int64)
                                     for key in ("multiplier", "shift", "zero_point"))
    left = int(layer["left_shift"])
    codes = np.arange(256, dtype=np.int64)
    table = np.stack([
        golden.multiply_by_quantized_multiplier((codes - zero_point[0]) << left,
                                                multiplier[0], shift[0]),
        golden.multiply_by_quantized_multiplier(((-codes & 0xFF) - zero_point[1]) << left,
                                                multiplier[1], shift[1])])
    if int(np.abs(table).max(axis=1).sum()) >= 1 << 31:
        raise CompileError(f"Add {layer['name']!r}: its rescaled inputs can overflow a 32-bit "
                           f"sum; its multipliers are not a TFLite ADD's")
    return table


def add_descriptor(config, plan, first_base, second_base, out_base, table, pixels=None):
    """The descriptors of add ``plan`` (for ``Runner.run_parts``): its inputs' images at words
    ``first_base`` and ``second_base`` of every bank, its output from ``out_base``, its
    table ``table``; the whole images, or their first ``pixels``. (Channel tile ``nt`` of a
    part from tile ``first`` reads word ``nt + first`` of each pixel.)"""
    conv = plan.layer["conv"]
    if pixels is None:
        pixels = conv["in_height"] * conv["in_width"]
    wrap = 1 << 16

    def descriptor(first, tiles, w_base, group_base):
        return RunDescriptor(
            m_tiles=ceil_div(pixels, config.rows), n_tiles=tiles, k_steps=plan.k_steps,
            a_base=first_base + first, a_stride=0, step=1, mode=plan.mode | Mode.CONV | Mode.ADD,
            w_base=w_base, out_base=out_base + first, out_stride=plan.n_tiles,
            group_base=group_base, in_h=2, in_w=pixels + 1, in_c=1, out_w=pixels,
            origin=first_base + first, x_step=plan.n_tiles, row_step=plan.n_tiles,
            tap_row=(second_base - first_base) % wrap, kh=2, kw=2, sh=2, sw=1, ph=0, pw=0,
            pad_code=0, table=table)
    return descriptor


def add_plan(runner, index, layer):
    """The plan of residual add ``index`` of ``runner``'s bundle on the add tables, or
    ``None`` when it runs on the host: the accelerator has no depthwise columns, its inputs
    are not two images of one shape, or they do not fit the banks together."""
    info = runner.config
    first, second = runner.graph[index][1]
    shape = runner.images_shapes.get(first)
    if not info.depthwise or shape is None or runner.images_shapes.get(second) != shape:
        return None
    try:
        plan = runner._plan(index, add_layer(layer, shape))
    except CompileError:
        return None
    words = ceil_div(shape[2], info.cols)
    # The output goes over an input: the two inputs are all it needs.
    if 2 * image_region(info, shape) > info.act_depth:
        return None
    return replace(plan, image=True, band_rows=0, a_stride=words,
                   mode=plan.mode | Mode.DEPTHWISE | Mode.ADD)


class AddTables:
    """The device's add tables for the residual adds among ``plans``: the first
    :data:`~sparqforge.protocol.ADD_TABLES` adds have one each, written by :meth:`load`;
    later ones share them and are written before they run when the table holds another's.
    """

    def __init__(self, device, plans):
        self.device = device
        adds = [index for index, plan in plans.items()
                if plan.layer.get("add_table") is not None]
        #: The table of each add (by layer index).
        self.slots = {index: k % ADD_TABLES for k, index in enumerate(adds)}
        self._plans = plans
        self._holds = {}

    def load(self):
        """Write the tables of the adds that keep theirs (after the device opened anew)."""
        self._holds = {}
        for index in list(self.slots)[:ADD_TABLES]:
            self.slot(self._plans[index])

    def slot(self, plan):
        """The table of add ``plan``, written first if it holds another add's."""
        slot = self.slots[plan.index]
        if self._holds.get(slot) != plan.index:
            table = np.asarray(plan.layer["add_table"], dtype=np.int64)
            config = self.device.config
            self.device.write(Space.ADD_TABLE,
                              encode_address(Space.ADD_TABLE, config, table=slot),
                              table.reshape(-1).astype("<i4").view(np.uint8).reshape(-1, 4))
            self._holds[slot] = plan.index
        return slot
