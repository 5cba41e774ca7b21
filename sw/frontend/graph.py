"""The sparqforge graph: a DAG of typed nodes with shapes, what the frontend captures from a
PyTorch model (or a QONNX file) and what quantization and lowering to a bundle work on.

A node's ``shape`` is the shape of one item of its output (no batch axis): ``(channels,
height, width)`` for images, ``(features,)`` for vectors. Floats are float64 NumPy arrays.
Operators and their attributes:

==================  ===========================================================================
``input``           the network input (exactly one)
``linear``          ``weight [out, in]``, ``bias [out]`` or ``None``
``conv2d``          ``weight [out, in / groups, kh, kw]``, ``bias``, ``stride (sh, sw)``,
                    ``padding (ph, pw)`` (zeros), ``groups`` (1, or the input channels with one
                    output channel each: depthwise)
``batchnorm``       ``scale [C]``, ``shift [C]``: ``y = x * scale + shift`` per channel (eval
                    mode: ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``)
``clamp``           ``low``, ``high`` (floats or ``None``): ReLU is ``(0, None)``, ReLU6
                    ``(0, 6)``
``add``             two inputs of one shape
``maxpool``         ``kernel (kh, kw)``, ``stride (sh, sw)``; no padding
``avgpool``         ``kernel``, ``stride``; no padding
``global_avgpool``  the mean over height and width: ``(C, H, W) -> (C,)``
``flatten``         ``(C, H, W) -> (C * H * W,)`` in channel-major order
``output``          the network output (exactly one, one input)
==================  ===========================================================================

``linear``, ``conv2d`` and ``add`` may carry ``clamp`` (``(low, high)``) after the frontend
fused an activation into them.
"""

__all__ = ["OPS", "Node", "Graph", "GraphError"]

from dataclasses import dataclass, field

#: Operators, with the attributes each must have.
OPS = {
    "input": (),
    "linear": ("weight", "bias"),
    "conv2d": ("weight", "bias", "stride", "padding", "groups"),
    "batchnorm": ("scale", "shift"),
    "clamp": ("low", "high"),
    "add": (),
    "maxpool": ("kernel", "stride"),
    "avgpool": ("kernel", "stride"),
    "global_avgpool": (),
    "flatten": (),
    "output": (),
}

#: Operators that multiply by weights (a bundle's matmul layers).
MATMUL_OPS = ("linear", "conv2d")


class GraphError(ValueError):
    """A graph that is not well formed (a bug in a frontend, not a user error)."""


@dataclass
class Node:
    """One operator: its unique ``name``, ``op``, the names of its ``inputs``, the per-item
    ``shape`` of its output, its ``attrs`` and where it came from (``source``: the user's
    file and line, for messages)."""
    name: str
    op: str
    inputs: list
    shape: tuple
    attrs: dict = field(default_factory=dict)
    source: str = ""

    def describe(self):
        """``'layer1.conv' (conv2d) at model.py:12`` for messages."""
        where = f" at {self.source}" if self.source else ""
        return f"{self.name!r} ({self.op}){where}"


class Graph:
    """Nodes in topological order (every node after its inputs)."""

    def __init__(self, nodes=()):
        self._nodes = {}
        for node in nodes:
            self.add(node)

    def add(self, node):
        if node.name in self._nodes:
            raise GraphError(f"Two nodes are named {node.name!r}")
        if node.op not in OPS:
            raise GraphError(f"Node {node.name!r} has unknown operator {node.op!r}")
        for name in node.inputs:
            if name not in self._nodes:
                raise GraphError(f"Node {node.name!r} reads {name!r}, which comes later or "
                                 f"does not exist")
        self._nodes[node.name] = node
        return node

    def __iter__(self):
        return iter(list(self._nodes.values()))

    def __len__(self):
        return len(self._nodes)

    def __getitem__(self, name):
        return self._nodes[name]

    def __contains__(self, name):
        return name in self._nodes

    @property
    def input(self):
        return next(node for node in self if node.op == "input")

    @property
    def output(self):
        return next(node for node in self if node.op == "output")

    def consumers(self, name):
        """The nodes that read ``name``'s output."""
        return [node for node in self if name in node.inputs]

    def replace_uses(self, old, new):
        """Make every reader of ``old`` read ``new`` instead."""
        for node in self:
            node.inputs = [new if name == old else name for name in node.inputs]

    def remove(self, name):
        """Remove a node nobody reads any more."""
        if self.consumers(name):
            raise GraphError(f"Node {name!r} is still read by "
                             f"{[n.name for n in self.consumers(name)]}")
        del self._nodes[name]

    def bypass(self, name):
        """Remove a one-input node, its readers reading its input instead."""
        node = self._nodes[name]
        self.replace_uses(name, node.inputs[0])
        self.remove(name)

    def check(self):
        """Raise :class:`GraphError` unless the graph has one input, one output, known
        operators with their attributes, and inputs that come before their readers."""
        seen = set()
        for node in self:
            for name in node.inputs:
                if name not in seen:
                    raise GraphError(f"Node {node.name!r} reads {name!r} before it is made")
            missing = [key for key in OPS[node.op] if key not in node.attrs]
            if missing:
                raise GraphError(f"Node {node.name!r} ({node.op}) lacks {missing}")
            seen.add(node.name)
        for op in ("input", "output"):
            count = sum(1 for node in self if node.op == op)
            if count != 1:
                raise GraphError(f"The graph has {count} {op} nodes, not one")
        return self

    def summary(self):
        """One line per node: name, operator, inputs and shape."""
        return "\n".join(f"{node.name:<24} {node.op:<15} {','.join(node.inputs):<30} "
                         f"{node.shape}" for node in self)
