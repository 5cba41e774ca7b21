"""What the runner decides before it runs anything: whether a layer suits the device (from
its arrays, never from what the bundle declares), and where it lives and how it is tiled."""

__all__ = ["CompileError", "LayerPlan", "ceil_div", "layer_macs", "check_operands",
           "check_accumulator"]

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from .. import golden


class CompileError(ConfigError):
    """The bundle does not fit or does not suit the accelerator; the message says which
    layer and what to change."""


@dataclass
class LayerPlan:
    """Where a matmul layer lives on the device and how it is tiled."""
    index: int
    layer: dict
    sparse: bool
    step: int
    k_steps: int
    a_stride: int
    n_tiles: int
    w_base: int
    group_base: int
    mode: int
    #: ``(first channel tile, tiles)`` of each part the layer runs in: one part, unless the
    #: layer alone is larger than the weight memory or the channel groups (then each part's
    #: weights and parameters are written from word and group 0 before it runs).
    parts: tuple = ()


def ceil_div(a, b):
    return -(-a // b)


def layer_macs(layer):
    """Multiply-accumulates of one layer per inference, from its shapes: ``K * N`` times the
    output positions of a convolution (for a depthwise convolution ``K`` is ``kh * kw`` and
    ``N`` the channels), 0 for every other layer type. N:M sparse layers count dense.

    >>> layer_macs({"type": "matmul", "in_features": 27, "out_features": 8,
    ...             "conv": {"out_height": 4, "out_width": 4}})
    3456
    >>> layer_macs({"type": "add"})
    0
    """
    if layer["type"] != "matmul":
        return 0
    conv = layer.get("conv")
    positions = conv["out_height"] * conv["out_width"] if conv else 1
    return layer["in_features"] * layer["out_features"] * positions


def check_operands(config, layer, where):
    """Activation and weight operands must be the device's, judged from the arrays (the
    weights and tables a layer carries), never from what the bundle declares."""
    info = config
    if info.a_bits != golden.ACT_BITS:
        raise CompileError(f"{where} takes {golden.ACT_BITS}-bit activation codes; the "
                           f"accelerator's activations are {info.a_bits}-bit: generate "
                           f"it with a_bits={golden.ACT_BITS}")
    if layer.get("act_table") is not None:
        need = golden.signed_bits_for(0, int(np.max(layer["act_table"]))) - 1
        if need > info.a_bits:
            raise CompileError(f"{where}'s activation table holds {need}-bit operands; "
                               f"the array multiplies {info.a_bits}-bit activations")
    w = np.asarray(layer["weight"], dtype=np.int64)
    if layer.get("weight_table") is not None:
        w = np.asarray(layer["weight_table"], dtype=np.int64)[w & 0xFF]
    need = golden.signed_bits_for(int(w.min(initial=0)), int(w.max(initial=0)))
    if need > info.w_bits:
        declared = layer.get("weight_bits")
        raise CompileError(f"{where}'s weights need {need}-bit signed operands (the bundle "
                           f"declares {declared}-bit weights); the array multiplies "
                           f"{info.w_bits}-bit weights: generate it with w_bits={need}")

def check_accumulator(config, layer, where):
    """The largest accumulator magnitude this layer can produce must fit the device."""
    w = np.asarray(layer["weight"], dtype=np.int64)
    if layer.get("weight_table") is not None:
        w = np.asarray(layer["weight_table"])[w & 0xFF]
    a_max = (int(np.max(layer["act_table"])) if layer.get("act_table") is not None
             else (1 << config.a_bits) - 1)
    worst = int(np.abs(w).sum(axis=1).max()) * a_max
    if worst >= 1 << (config.acc_bits - 1):
        raise CompileError(f"{where} can reach accumulators of {worst}; the accelerator's "
                           f"{config.acc_bits}-bit accumulator cannot hold them: "
                           f"generate it with a larger max depth")

