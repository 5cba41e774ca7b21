"""What the runner decides before it runs anything: whether a layer suits the device (from
its arrays, never from what the bundle declares), and where it lives and how it is tiled."""

__all__ = ["segments", "segment_io", "matrix_run", "CompileError", "LayerPlan", "ceil_div",
           "layer_macs", "check_operands", "check_accumulator"]

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...protocol import RunDescriptor
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
    #: A convolution on the device's window walk (its input and output are images, see
    #: :mod:`~sparqforge.sw.runtime.windows`); else its rows are matrix rows.
    image: bool = False
    #: Output rows per band of an image layer whose input and output do not fit the banks
    #: together: it runs band by band, each band's input rows written and its output rows
    #: read by the host (0: the whole image at once).
    band_rows: int = 0


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


def segments(layers, graph, plans, images_shapes):
    """The order of work over ``layers`` (their ``graph``, the device layers' ``plans`` and
    the ``images_shapes`` of image tensors): ``(items, virtual)``, the items
    ``("host", index)`` and ``("device", [indices])``, and the flatten layers that a device
    segment runs through (they move nothing). The segment runs where its first layer is
    listed.

    A matrix layer joins the segment whose last layer is its only input when that layer has
    no other reader and is a matrix layer, or an image of one pixel (pooled features). A
    layer on the window walk (a convolution, depthwise layer, pooling or residual add whose
    images fit the banks) joins the segment that holds all its inputs as images, whatever
    else reads them: an image segment is a graph, whose tensors other items read are read
    back when they are made (:func:`segment_io`). A convolution lowered by im2col or run in
    row bands starts a segment and ends it: its input and output pass through the host."""
    readers, read_by = {}, {}
    for index, (_, inputs) in enumerate(graph):
        for name in inputs:
            readers[name] = readers.get(name, 0) + 1
            read_by[name] = index
    items = []
    # Tensors the open segments hold: name -> (position, kind, image shape). Image segments
    # hold every image they make; a matrix chain only its last output.
    held = {}
    # Flatten layers inside a device segment: a segment's matrix layer reads one pixel's
    # channels, which flattening leaves in the same order.
    virtual = set()
    for index, layer in enumerate(layers):
        name, inputs = graph[index]
        if (layer["type"] == "flatten" and inputs[0] in held
                and readers[inputs[0]] == 1 and readers.get(name) == 1
                and images_shapes.get(inputs[0], (1, 1))[:2] == (1, 1)
                and read_by[name] in plans and not plans[read_by[name]].image):
            held[name] = held.pop(inputs[0])
            virtual.add(index)
            continue
        if index not in plans:
            items.append(("host", index))
            continue
        # "matrix", "image" or None (an im2col or banded convolution: chains with nothing).
        plan = plans[index]
        kind = ("image" if plan.image and not plan.band_rows
                else None if plan.layer.get("conv") else "matrix")
        position = None
        if kind == "image":
            sources = {held[i][:2] for i in inputs if i in held}
            if len(sources) == 1 and all(i in held for i in inputs):
                (position, source_kind), = sources
                position = position if source_kind == "image" else None
        elif kind == "matrix" and inputs[0] in held and readers[inputs[0]] == 1:
            tail = held[inputs[0]]
            # A matrix layer reads a one-pixel image as its row 0 (pooled features).
            if tail[1] == "matrix" or (tail[1] == "image" and tail[2][:2] == (1, 1)):
                position = tail[0]
                if tail[1] == "matrix":
                    del held[inputs[0]]
        if position is None:
            position = len(items)
            items.append(("device", [index]))
        else:
            items[position][1].append(index)
        if kind:
            held[name] = (position, kind, images_shapes.get(name))
    return items, virtual


def segment_io(indices, graph, virtual):
    """``(inputs, outputs)`` of device segment ``indices`` (and the ``virtual`` flatten layers
    it may run through): the tensors it reads that it does not make, and those it makes that
    a layer outside it reads or that are the network's output; in order of appearance."""
    made = [graph[i][0] for i in indices]
    inside = set(indices)
    # A flatten the segment runs through makes its output there too.
    for v in sorted(virtual):
        if graph[v][1][0] in made:
            made.append(graph[v][0])
            inside.add(v)
    inputs = []
    for i in indices:
        for name in graph[i][1]:
            if name not in made and name not in inputs:
                inputs.append(name)
    read_outside = {name for i, (_, reads) in enumerate(graph) if i not in inside
                    for name in reads} | {graph[-1][0]}
    outputs = [name for name in made if name in read_outside]
    return inputs, outputs


def matrix_run(plan, m_tiles, src, dst):
    """The descriptors of matrix layer ``plan`` (for ``Runner.run_parts``): ``m_tiles``
    row tiles read from word ``src``, written from word ``dst``."""
    def descriptor(first, tiles, w_base, group_base):
        return RunDescriptor(m_tiles=m_tiles, n_tiles=tiles, k_steps=plan.k_steps, a_base=src,
                             a_stride=plan.a_stride, step=plan.step, mode=plan.mode,
                             w_base=w_base, out_base=dst + first, out_stride=plan.n_tiles,
                             group_base=group_base)
    return descriptor
