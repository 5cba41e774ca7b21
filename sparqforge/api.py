"""The Python entry point: :func:`compile` a user's own PyTorch model into a bundle.

``import sparqforge`` stays light (no PyTorch); ``sparqforge.compile`` imports this module,
and this module imports PyTorch, on first use.
"""

__all__ = ["compile"]


def compile(model, example_input, *, quant="uniform-w8a8", calib=None, name=None,
            threshold_bits=4, sparsity=None, layers=None, steps=None):
    """Compile a PyTorch model into a validated integer-only bundle.

    Capture (:func:`sparqforge.sw.frontend.capture`: ``torch.export`` traces the model into
    the sparqforge graph, BatchNorm folded, activations fused), quantization
    (:func:`~sparqforge.sw.frontend.quantize_graph.quantize_graph` with the preset ``quant``)
    and lowering (:func:`~sparqforge.sw.frontend.lower.lower`) in one call.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        In eval mode, one input tensor, one output tensor ``[B, classes]``; or a program
        exported from such a model (``torch.export.export``, ``torch.export.load``).
    example_input : torch.Tensor or numpy.ndarray
        ``[B, features]`` or ``[B, C, H, W]``, any real dtype (cast to the model's). Fixes the
        shapes; it is also the calibration data when ``calib`` is not given.
    quant : str
        ``"uniform-w8a8"`` (8-bit uniform weights and activations), ``"power-w4"`` (4-bit
        power-exponent weights, 4-bit power activations between matmul layers) or
        ``"sparse24-w4"`` (4-bit uniform weights of a model already pruned 2:4, run N:M
        sparse); :mod:`sparqforge.sw.frontend.presets` says what each means per layer.
    calib : array-like, optional
        Calibration inputs ``[N, ...]`` (NumPy, torch, or an iterable of batches such as a
        ``DataLoader`` of ``(inputs, labels)``), any real dtype. With it, weights are quantized
        data-driven on each layer's quantized inputs; without it, weights are data-free and
        activation ranges come from ``example_input``.
    name : str, optional
        The bundle's name (the model's class name by default).
    threshold_bits : int
        The target's threshold code width (power activations are no wider; 0: none).
    sparsity : (int, int), optional
        N:M pattern every accelerator layer must already have (``sparse24-w4``: 2:4).
    layers : dict, optional
        Per-layer weight overrides by node name: ``{"fc": {"bits": 8, "method": "uniform"}}``.
    steps : int, optional
        Refinement steps of the data-driven weight search (its default if ``None``).

    Returns
    -------
    sparqforge.sw.bundle.Bundle
        Run it with :func:`sparqforge.sw.golden.run_network` or a device's runner; save it
        with :func:`sparqforge.sw.bundle.save`.

    Raises
    ------
    UnsupportedLayerError
        For a model the graph or the bundle cannot express (one line naming the operation,
        its source line and the fix), or a dense layer where N:M sparsity is asked for.
    TypeError, ValueError
        For a bad preset or override, or inputs that are not real numbers, empty, NaN or of
        the wrong shape.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> import sparqforge
    >>> from sparqforge.sw import golden
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(),
    ...                       nn.Linear(16, 3)).eval()
    >>> x = np.random.default_rng(0).normal(size=(256, 4))       # float64 is fine
    >>> bundle = sparqforge.compile(model, x[:1], calib=x, name="tiny")
    >>> [(layer["name"], layer["type"]) for layer in bundle.layers]
    [('0', 'matmul'), ('3', 'matmul')]
    >>> codes = golden.run_network(bundle.layers, bundle.quantize_input(x[:5]))
    >>> logits = bundle.dequantize_output(codes)
    >>> reference = model(torch.from_numpy(x[:5]).float()).detach().numpy()
    >>> bool((logits.argmax(1) == reference.argmax(1)).all())
    True
    """
    import torch

    from .sw.export import as_batch
    from .sw.frontend import capture
    from .sw.frontend.lower import lower
    from .sw.frontend.quantize_graph import quantize_graph

    if isinstance(model, torch.export.ExportedProgram):
        dtype = next((fx.meta["val"].dtype for fx in model.graph.nodes
                      if fx.op == "placeholder" and fx.name in _user_inputs(model)),
                     torch.float32)
        default_name = "model"
    elif isinstance(model, torch.nn.Module):
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.float32)
        default_name = type(model).__name__
    else:
        raise TypeError(f"sparqforge.compile() needs a torch.nn.Module or a "
                        f"torch.export.ExportedProgram, not {type(model).__name__}")
    example = as_batch(example_input, "The example input", dtype=dtype)
    graph = capture(model, example)
    qgraph = quantize_graph(graph, example if calib is None else calib, quant=quant,
                            threshold_bits=threshold_bits, sparsity=sparsity, layers=layers,
                            data_driven=calib is not None, steps=steps,
                            name=name or default_name)
    bundle = lower(qgraph, threshold_bits=threshold_bits)
    bundle.info["quant"] = quant
    return bundle


def _user_inputs(program):
    from torch.export.graph_signature import InputKind

    return {spec.arg.name for spec in program.graph_signature.input_specs
            if spec.kind == InputKind.USER_INPUT}
