"""Users' own PyTorch models: capture into the sparqforge graph, simplify, evaluate.

:func:`capture` traces an ``nn.Module`` with ``torch.export`` into a :class:`Graph`
(:mod:`.graph`: typed nodes with per-item shapes and float64 parameters), refusing what the
graph cannot express with one line naming the operation, its ATen operator and the user's
source line. :mod:`.passes` folds BatchNorm and fuses activations; :func:`evaluate` runs a
graph in float64 NumPy (the reference for the capture and for quantization's calibration).

The modules: :mod:`.graph`, :mod:`.capture` (export, names, source lines, checks),
:mod:`.operators` (one handler per ATen operator), :mod:`.passes`, :mod:`.evaluate`.
"""

__all__ = ["OPS", "MATMUL_OPS", "Node", "Graph", "GraphError", "capture", "SUPPORTED",
           "evaluate", "evaluate_all", "fold_batchnorm", "fuse_clamps", "remove_identities",
           "simplify"]

from .capture import SUPPORTED, capture
from .evaluate import evaluate, evaluate_all
from .graph import MATMUL_OPS, OPS, Graph, GraphError, Node
from .passes import fold_batchnorm, fuse_clamps, remove_identities, simplify
