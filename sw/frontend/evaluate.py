"""Evaluate a sparqforge :class:`~.graph.Graph` in float64 with NumPy: the reference a
capture is checked against (it must equal the PyTorch model in float64) and what
quantization calibrates with.

Each operator computes what its PyTorch counterpart computes (``graph.py`` lists them):
cross-correlation with zero padding for ``conv2d`` (one filter per channel when depthwise),
``x @ W.T + b`` for ``linear``, pools over whole windows, and ``clamp`` (also as the fused
``clamp`` attribute of ``linear``, ``conv2d`` and ``add``) as ``np.clip``.
"""

__all__ = ["evaluate", "evaluate_all"]

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(x, kernel, stride):
    """``[B, C, OH, OW, kh, kw]`` views of ``x`` ``[B, C, H, W]``."""
    view = sliding_window_view(x, tuple(kernel), axis=(2, 3))
    return view[:, :, ::stride[0], ::stride[1]]


def _conv2d(x, weight, bias, stride, padding, groups):
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = _windows(x, weight.shape[2:], stride)
    if groups == 1:
        y = np.einsum("bchwij,ocij->bohw", windows, weight, optimize=True)
    else:
        y = np.einsum("bchwij,cij->bchw", windows, weight[:, 0], optimize=True)
    return y if bias is None else y + bias[:, None, None]


def _clamp(x, bounds):
    if bounds is None:
        return x
    low, high = bounds
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


def _channels(vector, x):
    """``vector`` [C] shaped to broadcast over ``x``'s channel axis (axis 1)."""
    return vector.reshape((-1,) + (1,) * (x.ndim - 2))


def _node(node, args):
    a = node.attrs
    if node.op == "linear":
        y = args[0] @ a["weight"].T
        y = y if a["bias"] is None else y + a["bias"]
    elif node.op == "conv2d":
        y = _conv2d(args[0], a["weight"], a["bias"], a["stride"], a["padding"], a["groups"])
    elif node.op == "add":
        y = args[0] + args[1]
    elif node.op == "batchnorm":
        return args[0] * _channels(a["scale"], args[0]) + _channels(a["shift"], args[0])
    elif node.op == "clamp":
        return _clamp(args[0], (a["low"], a["high"]))
    elif node.op == "maxpool":
        return _windows(args[0], a["kernel"], a["stride"]).max(axis=(4, 5))
    elif node.op == "avgpool":
        return _windows(args[0], a["kernel"], a["stride"]).mean(axis=(4, 5))
    elif node.op == "global_avgpool":
        return args[0].mean(axis=(2, 3))
    elif node.op == "flatten":
        return args[0].reshape(args[0].shape[0], -1)
    elif node.op == "output":
        return args[0]
    else:
        raise ValueError(f"Cannot evaluate node {node.name!r} ({node.op})")
    return _clamp(y, a.get("clamp"))


def evaluate_all(graph, x):
    """Every node's output for the batch ``x`` ``[B, *graph.input.shape]``, by node name."""
    x = np.asarray(x, dtype=np.float64)
    if tuple(x.shape[1:]) != tuple(graph.input.shape):
        raise ValueError(f"The input has shape {list(x.shape)}; the graph takes "
                         f"[B, {', '.join(str(d) for d in graph.input.shape)}]")
    values = {}
    for node in graph:
        if node.op == "input":
            values[node.name] = x
        else:
            values[node.name] = _node(node, [values[name] for name in node.inputs])
    return values


def evaluate(graph, x):
    """The graph's output for ``x``, in float64.

    Parameters
    ----------
    graph : Graph
    x : array_like
        ``[B, *graph.input.shape]``, or one item ``graph.input.shape``.

    Returns
    -------
    numpy.ndarray
        ``[B, *graph.output.shape]`` (or one item, like ``x``), float64.

    Raises
    ------
    ValueError
        If ``x`` has the wrong shape.

    Examples
    --------
    >>> from sparqforge.sw.frontend import Graph, Node
    >>> graph = Graph([Node("input", "input", [], (2,)),
    ...                Node("fc", "linear", ["input"], (1,), {"weight": np.array([[1.0, -1.0]]),
    ...                     "bias": None, "clamp": (0.0, None)}),
    ...                Node("output", "output", ["fc"], (1,))])
    >>> evaluate(graph, [[3.0, 1.0], [1.0, 3.0]]).tolist()
    [[2.0], [0.0]]
    >>> evaluate(graph, [3.0, 1.0]).tolist()
    [2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    single = x.shape == tuple(graph.input.shape)
    y = evaluate_all(graph, x[None] if single else x)[graph.output.name]
    return y[0] if single else y
