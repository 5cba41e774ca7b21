"""Users' own PyTorch models: capture into the sparqforge graph, simplify, evaluate, quantize
and lower to a bundle.

:func:`capture` traces an ``nn.Module`` with ``torch.export`` (or takes an
``ExportedProgram``) into a :class:`Graph` (:mod:`.graph`: typed nodes with per-item shapes
and float64 parameters), refusing what the graph cannot express with one line naming the
operation, its ATen operator and the user's source line. :mod:`.passes` folds BatchNorm and
fuses activations; :func:`evaluate` runs a graph in float64 NumPy (the reference for the
capture and for quantization's calibration). :func:`quantize_graph` quantizes every weight and
tensor with a preset (:data:`PRESETS`) into a :class:`QuantizedGraph`, :func:`fake_quant`
evaluates that in float, and :func:`lower` turns it into a validated bundle.
``sparqforge.compile`` does all of it in one call.

The modules: :mod:`.graph`, :mod:`.capture` (export, names, source lines, checks),
:mod:`.operators` (one handler per ATen operator), :mod:`.passes`, :mod:`.evaluate`,
:mod:`.quantized` (the quantized graph), :mod:`.presets` (what a preset means per node),
:mod:`.quantize_graph`, :mod:`.lower`.
"""

__all__ = ["OPS", "MATMUL_OPS", "Node", "Graph", "GraphError", "capture", "SUPPORTED",
           "evaluate", "evaluate_all", "fold_batchnorm", "fuse_clamps", "remove_identities",
           "simplify", "QuantizedGraph", "PRESETS", "quantize_graph", "fake_quant",
           "fake_quant_all", "lower"]

from .capture import SUPPORTED, capture
from .evaluate import evaluate, evaluate_all
from .graph import MATMUL_OPS, OPS, Graph, GraphError, Node
from .lower import lower
from .passes import fold_batchnorm, fuse_clamps, remove_identities, simplify
from .presets import PRESETS
from .quantize_graph import fake_quant, fake_quant_all, quantize_graph
from .quantized import QuantizedGraph
