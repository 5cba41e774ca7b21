"""Quantization presets for whole graphs, and what one means for each node and tensor.

A preset names a weight quantization for every ``linear`` and ``conv2d`` node and, through
:func:`plan`, an activation quantizer for every tensor of the graph; it expands per layer by
itself, from the graph's structure:

``"uniform-w8a8"``
    8-bit uniform weights (per channel, symmetric) and 8-bit uniform activations.
``"power-w4"``
    4-bit power-exponent weights. 4-bit power activations (``min(4, threshold_bits)`` bits;
    uniform when the target has no threshold unit) on every tensor a matmul layer produces
    through a clamp from 0 (ReLU, ReLU6: power codes are non-negative) and only matmul layers
    read (directly or through max pooling and flatten), other than the network's output;
    8-bit uniform elsewhere, since adds, average pools, clamps and the network's input and
    output need uniform codes.
``"sparse24-w4"``
    4-bit uniform weights that must already be 2:4 sparse in every layer the accelerator runs
    (``linear``, and ``conv2d`` other than depthwise: depthwise convolutions run on the host);
    a dense one is refused, naming it and the fix. 8-bit uniform activations. The pattern is
    kept by quantization and marked in the bundle.

**Tensors and their quantizers.** Max and average pooling, flatten and clamp keep their
input's codes (the golden model computes them on codes), so they share their input's
quantizer: the tensor's *source* (:func:`sources`) is the nearest node before them that
computes new codes. The source of the network output gets the logits' quantizer: 8-bit
uniform, signed and asymmetric (as :func:`sparqforge.sw.export.export_model` makes it).

Per-layer overrides (``layers={"fc": {"bits": 8, "method": "uniform"}}``) change the weight
quantization of named ``linear``/``conv2d`` nodes.
"""

__all__ = ["PRESETS", "SHARED_OPS", "Preset", "Plan", "sources", "plan", "weight_matrix",
           "check_outputs"]

from dataclasses import dataclass, field

import numpy as np

from ...errors import UnsupportedLayerError
from ..nm_format import check_nm, find_violation

#: Operators whose output keeps its input's codes (and so its quantizer).
SHARED_OPS = ("maxpool", "avgpool", "flatten", "clamp")
#: Operators lowered to matmul layers, which read power codes through an activation table.
_READS_POWER = ("linear", "conv2d", "batchnorm")


@dataclass(frozen=True)
class Preset:
    """Weight ``bits`` and ``method`` for every matmul node; ``power_act_bits`` of the power
    activations (``None``: all activations 8-bit uniform); the N:M ``sparsity`` required."""
    bits: int
    method: str
    power_act_bits: int = None
    sparsity: tuple = None


#: The presets, named like the built-in example's schemes (``sparqforge.sw.schemes``).
PRESETS = {
    "uniform-w8a8": Preset(8, "uniform"),
    "power-w4": Preset(4, "power", power_act_bits=4),
    "sparse24-w4": Preset(4, "uniform", sparsity=(2, 4)),
}


@dataclass
class Plan:
    """What :func:`plan` decides: ``weights[name] = (bits, method)`` per ``linear``/``conv2d``;
    ``acts[source] = (kind, bits)`` per tensor source, ``kind`` one of ``"uniform"``,
    ``"power"``, ``"logits"``; ``sparsity[name] = (n, m)`` per layer that must be N:M (and
    the diagonal layers of unfolded vector BatchNorms, which are);
    ``sources[name]`` the source of every node's output but the ``output`` node's."""
    weights: dict = field(default_factory=dict)
    acts: dict = field(default_factory=dict)
    sparsity: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


def sources(graph):
    """``{name: source}``: the node whose quantizer each node's output uses (itself, or for
    :data:`SHARED_OPS` its input's source); the ``output`` node has none."""
    found = {}
    for node in graph:
        if node.op != "output":
            found[node.name] = found[node.inputs[0]] if node.op in SHARED_OPS else node.name
    return found


def weight_matrix(weight):
    """A float weight as the bundle's ``[out, K]`` matrix, convolution columns ``(kh, kw,
    in)`` (the order N:M groups run along)."""
    weight = np.asarray(weight)
    if weight.ndim == 4:
        weight = weight.transpose(0, 2, 3, 1)
    return weight.reshape(weight.shape[0], -1)


def check_outputs(graph):
    """Refuse a graph a bundle cannot hold: no matmul layer, or an output that is not a
    vector of class scores computed by a layer."""
    producer = graph[graph.output.inputs[0]]
    if not any(node.op in _READS_POWER for node in graph):
        raise UnsupportedLayerError("The model has no Linear or Conv2d layer; sparqforge runs "
                                    "matmul layers, so add at least one")
    if producer.op == "input":
        raise UnsupportedLayerError("The model returns its input unchanged; sparqforge "
                                    "compiles models that compute their output")
    if len(producer.shape) != 1:
        dims = ", ".join(str(d) for d in producer.shape)
        raise UnsupportedLayerError(
            f"The model returns an image [B, {dims}] (from {producer.describe()}); a "
            f"sparqforge model returns a vector of class scores [B, classes]: flatten it "
            f"(x.flatten(1)) or pool it")


def _preset(quant):
    if not isinstance(quant, str) or quant not in PRESETS:
        raise ValueError(f"Quantization must be one of {sorted(PRESETS)}, not {quant!r}")
    return PRESETS[quant]


def _overrides(graph, layers):
    """Checked per-layer weight overrides ``{name: (bits, method)}``."""
    found = {}
    names = [node.name for node in graph if node.op in ("linear", "conv2d")]
    for name, spec in (layers or {}).items():
        if name not in names:
            raise ValueError(f"Layer override {name!r} names no Linear or Conv2d node; the "
                             f"graph's are {names}")
        if not isinstance(spec, dict) or not spec or set(spec) - {"bits", "method"}:
            raise ValueError(f"Layer override {name!r} must be a dict of 'bits' and/or "
                             f"'method', not {spec!r}")
        found[name] = spec
    return found


def _power_tensors(graph, found, output_source):
    """The sources whose tensor may hold power codes: made by a matmul node through a clamp
    from 0, read only by matmul layers (directly or through max pooling and flatten)."""
    members = {}
    for name, source in found.items():
        members.setdefault(source, []).append(name)
    eligible = set()
    for source, group in members.items():
        node = graph[source]
        clamp = node.attrs.get("clamp")
        if (node.op not in ("linear", "conv2d") or clamp is None or clamp[0] != 0
                or source == output_source):
            continue
        if any(graph[name].op not in ("maxpool", "flatten") for name in group[1:]):
            continue
        readers = [r for name in group for r in graph.consumers(name)
                   if r.name not in group]
        if readers and all(r.op in _READS_POWER for r in readers):
            eligible.add(source)
    return eligible


def plan(graph, quant="uniform-w8a8", *, threshold_bits=4, sparsity=None, layers=None):
    """Expand a preset over ``graph``: see the module docstring.

    Parameters
    ----------
    graph : Graph
    quant : str
        A name of :data:`PRESETS`.
    threshold_bits : int
        The target's threshold code width (0: no threshold unit, so no power activations).
    sparsity : (int, int), optional
        N:M pattern every accelerator layer must have (the preset's by default).
    layers : dict, optional
        Per-layer weight overrides: ``{name: {"bits": b, "method": m}}``.

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        For an unknown preset, a bad override or threshold width, or a sparsity other than
        the preset's.
    UnsupportedLayerError
        For a graph a bundle cannot hold (:func:`check_outputs`), or with a sparsity, for the
        first accelerator layer whose float weights are not N:M (naming it and the fix).
    """
    preset = _preset(quant)
    if (not isinstance(threshold_bits, int) or isinstance(threshold_bits, bool)
            or not 0 <= threshold_bits <= 8):
        raise ValueError(f"Threshold code width must be an integer in 0..8, not "
                         f"{threshold_bits!r}")
    check_outputs(graph)
    if sparsity is not None:
        sparsity = tuple(sparsity)
        check_nm(*sparsity)
        if preset.sparsity is not None and sparsity != preset.sparsity:
            raise ValueError(f"Preset {quant!r} runs {preset.sparsity[0]}:{preset.sparsity[1]} "
                             f"sparse, not {sparsity[0]}:{sparsity[1]}: leave sparsity unset")
    why = (f"{quant} runs" if sparsity is None else f"sparsity={sparsity} asks to run")
    sparsity = sparsity or preset.sparsity
    overrides = _overrides(graph, layers)
    result = Plan(sources=sources(graph))
    for node in graph:
        if node.op == "batchnorm" and len(node.shape) == 1 and sparsity:
            result.sparsity[node.name] = sparsity        # diagonal: one weight per row
        if node.op not in ("linear", "conv2d"):
            continue
        spec = overrides.get(node.name, {})
        result.weights[node.name] = (spec.get("bits", preset.bits),
                                     spec.get("method", preset.method))
        if sparsity and node.attrs.get("groups", 1) == 1:
            _require_sparse(node, sparsity, why)
            result.sparsity[node.name] = sparsity
    output_source = result.sources[graph.output.inputs[0]]
    power_bits = min(preset.power_act_bits or 0, threshold_bits)
    power = _power_tensors(graph, result.sources, output_source) if power_bits >= 2 else ()
    for name, source in result.sources.items():
        if name != source:
            continue
        kind = ("logits" if source == output_source else "power" if source in power
                else "uniform")
        result.acts[source] = (kind, power_bits if kind == "power" else 8)
    return result


def _require_sparse(node, sparsity, why):
    n, m = sparsity
    bad = find_violation(weight_matrix(node.attrs["weight"]), n, m)
    if bad is None:
        return
    row, group, count = bad
    raise UnsupportedLayerError(
        f"Layer {node.describe()} is dense: its weights are not {n}:{m} sparse (output {row}, "
        f"group {group} holds {count} nonzeros), and {why} every Linear and Conv2d "
        f"{n}:{m} sparse; prune the model first: sparqforge.sw.prune.NMSparsifier(model, {n}, "
        f"{m}, method='srste'), fine-tune, then finalize() (or prune_model(model, {n}, {m}) "
        f"without fine-tuning)")
