"""A quantized graph: a :class:`~sparqforge.sw.frontend.graph.Graph` together with how each of
its tensors and weights is quantized. It is what quantization produces
(:mod:`sparqforge.sw.frontend.quantize_graph`, from a PyTorch model and calibration data) and
what a QONNX file translates to (:mod:`sparqforge.sw.qonnx`), and the one thing lowering to a
bundle (:mod:`sparqforge.sw.frontend.lower`) reads.

* ``act[name]``: the :class:`~sparqforge.sw.quantize.ActivationQuantizer` (calibrated) of the
  output of node ``name``, for the ``input`` node and every node whose output is a tensor of
  codes (all but ``output``: its tensor is its input's). Uniform quantizers of 8 bits become
  unsigned codes with a zero point (signed ones are offset by 128); power quantizers become
  power codes that the reading layers' activation tables map.
* ``weights[name]``: the :class:`~sparqforge.sw.quantize.QuantizedWeight` of each ``linear``
  and ``conv2d`` node (the folded float weights quantized; codes in the float weight's
  layout), and ``bias[name]`` its float bias (``None`` for none).
* ``sparsity[name]``: the N:M pattern ``(n, m)`` a node's weight codes keep, or absent.
"""

__all__ = ["QuantizedGraph"]

from dataclasses import dataclass, field


@dataclass
class QuantizedGraph:
    """See the module docstring."""
    graph: object
    act: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    bias: dict = field(default_factory=dict)
    sparsity: dict = field(default_factory=dict)
    name: str = "model"

    def check(self):
        """Raise ``ValueError`` naming the first node whose quantization is missing."""
        self.graph.check()
        for node in self.graph:
            if node.op != "output" and node.name not in self.act:
                raise ValueError(f"Node {node.name!r} has no activation quantizer")
            if node.op in ("linear", "conv2d") and node.name not in self.weights:
                raise ValueError(f"Node {node.name!r} has no quantized weight")
        return self
