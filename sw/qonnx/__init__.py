"""Import QONNX graphs (what Brevitas' ``export_qonnx`` writes and FINN and hls4ml read) as
sparqforge bundles.

:func:`import_qonnx` reads an ``.onnx`` file, runs ``qonnx.util.cleanup.cleanup_model``
(shape inference, constant folding, unique readable names), translates it node by node into
a :class:`~sparqforge.sw.frontend.quantized.QuantizedGraph` (:func:`translate`) and lowers
that to a :class:`~sparqforge.sw.bundle.Bundle`. Quantization is read from the ``Quant``
nodes, not calibrated: a ``Quant`` on a weight gives its integer codes and scales, one on a
tensor the tensor's 8-bit quantizer; a second ``Quant`` on an already quantized tensor
becomes a requantization layer. ``docs/qonnx.md`` has the translation, what is exact, what
is rounded differently from QONNX's own execution and by how much.

Needs the optional packages ``onnx`` and ``qonnx`` (``pip install 'sparqforge[qonnx]'``).

The modules: :mod:`.quant` (``Quant`` parameters, weight codes, the quantizers),
:mod:`.translation` (the translation and its helpers), :mod:`.operators` (one handler per ONNX
operator), :mod:`.resolve` (passes, weights, the quantizers no ``Quant`` gives).
"""

__all__ = ["QonnxError", "SUPPORTED", "load", "translate", "import_qonnx", "run_qonnx"]

import importlib.util
from pathlib import Path

import numpy as np

from ...errors import SparqforgeError, ToolError
from .translation import SUPPORTED


class QonnxError(SparqforgeError, ValueError):
    """A QONNX file that cannot be read (missing, not ONNX, rejected by QONNX's cleanup)."""


def _require():
    for package in ("onnx", "onnxruntime", "qonnx"):
        if importlib.util.find_spec(package) is None:
            raise ToolError(f"Importing QONNX needs the {package} package: "
                            f"pip install 'sparqforge[qonnx]'")


def load(path):
    """Read ``path`` and run QONNX's ``cleanup_model`` on it; returns the ``ModelWrapper``.

    Raises
    ------
    ToolError
        If onnx or qonnx is not installed.
    QonnxError
        If the file does not exist, is not an ONNX model, or QONNX's cleanup rejects it.
    """
    _require()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    if not path.is_file():
        raise QonnxError(f"QONNX file {path} does not exist; export one with Brevitas' "
                         f"export_qonnx")
    try:
        model = ModelWrapper(str(path))
    except Exception as error:                  # protobuf raises several types on bad bytes
        raise QonnxError(f"{path} is not a readable ONNX model ({type(error).__name__}: "
                         f"{_first_line(error)}); export it again") from None
    try:
        return cleanup_model(model)
    except Exception as error:                  # any failure of QONNX's own passes
        raise QonnxError(f"QONNX's cleanup_model rejects {path} ({type(error).__name__}: "
                         f"{_first_line(error)}); check it with qonnx-cleanup") from None


def _first_line(error):
    line = next((s.strip() for s in str(error).splitlines() if s.strip()), "")
    return line if len(line) <= 160 else line[:157] + "..."


def run_qonnx(model, x, tensors=None):
    """QONNX's own execution (``execute_onnx``) of a cleaned ``model`` on a batch of float
    inputs ``x`` ``[B, ...]``, in the batches the model's input shape fixes (exported graphs
    often fix 1). Returns the output ``[B, ...]`` as float64 or, with ``tensors`` (ONNX tensor
    names), ``{name: values [B, ...]}``."""
    from qonnx.core.onnx_exec import execute_onnx

    name = next(i.name for i in model.graph.input if model.get_initializer(i.name) is None)
    shape = model.get_tensor_shape(name)
    wanted = [model.graph.output[0].name] if tensors is None else list(tensors)
    x = np.asarray(x, dtype=np.float32).reshape(-1, *shape[1:])
    runs = [execute_onnx(model, {name: x[i:i + shape[0]]},
                         return_full_exec_context=tensors is not None)
            for i in range(0, len(x), shape[0])]
    found = {t: np.concatenate([run[t] for run in runs]).astype(np.float64) for t in wanted}
    return found[wanted[0]] if tensors is None else found


def translate(model, *, name=None, calibration=None):
    """Translate a QONNX file (a path) or a cleaned ``ModelWrapper`` into a checked
    :class:`~sparqforge.sw.frontend.quantized.QuantizedGraph`.

    Parameters
    ----------
    model : str, pathlib.Path or qonnx.core.modelwrapper.ModelWrapper
        A path is read with :func:`load`; a ``ModelWrapper`` must have been cleaned.
    name : str, optional
        The graph's name (default: the file's stem, or ``"model"``).
    calibration : array_like, optional
        Float inputs ``[B, ...]`` for the tensors no ``Quant`` quantizes: QONNX's own values
        on them (their largest magnitude) fix the 8-bit range of the last layer's output
        and of global average pools. Without them the output's range is the largest the
        last layer can reach from its input codes (interval arithmetic: never saturates,
        but coarse) and a global average pool keeps its input's scale.

    Returns
    -------
    (QuantizedGraph, dict)
        The graph and notes: ``output`` (``"quant"``, ``"calibration"`` or ``"bound"``: where
        the output's quantization comes from), ``calibrated`` (other nodes calibrated) and
        ``requantizations`` (the requantization nodes added).

    Raises
    ------
    UnsupportedLayerError
        One line naming the first node sparqforge cannot express, its ``op_type`` and the fix.
    QonnxError, ToolError
        See :func:`load`.
    """
    from .resolve import finish
    from .translation import Translation

    source = ""
    if isinstance(model, (str, Path)):
        source = Path(model).name
        name = name or Path(model).stem
        model = load(model)
    else:
        _require()
    tr = Translation(model, source).run()
    observe = None
    if calibration is not None:
        def observe(tensors):
            return run_qonnx(model, calibration, tensors)
    return finish(tr, name=name or "model", observe=observe)


def import_qonnx(path, *, name=None, calibration=None):
    """Import a QONNX file as a :class:`~sparqforge.sw.bundle.Bundle` (:func:`translate`, then
    :func:`~sparqforge.sw.frontend.lower.lower`). ``bundle.info["qonnx"]`` records the file,
    where the output's quantization came from and the requantization layers added.

    Raises
    ------
    UnsupportedLayerError, QonnxError, ToolError
        See :func:`translate`.
    """
    from ..frontend.lower import lower

    name = name or Path(path).stem
    qgraph, notes = translate(path, name=name, calibration=calibration)
    bundle = lower(qgraph, name=name)
    bundle.info["qonnx"] = {"file": Path(path).name, **notes}
    return bundle

