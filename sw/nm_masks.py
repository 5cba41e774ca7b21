"""The N:M weight layout and masks of PyTorch ``Linear`` / ``Conv2d`` layers, shared by
pruning (:mod:`sparqforge.sw.prune`, which states the conventions and re-exports the public
names) and N:M-sparse fine-tuning (:mod:`sparqforge.sw.sparse_training`).
"""

__all__ = ["conv_weight_matrix", "conv_weight_from_matrix", "weight_matrix",
           "weight_from_matrix", "nm_mask", "nm_mask_output"]

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nm_format


# --- weight layout ----------------------------------------------------------------------------

def _as_tensor(weight):
    if isinstance(weight, np.ndarray):
        return torch.from_numpy(weight)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"N:M pruning needs a weight tensor or NumPy array, not "
                        f"{type(weight).__name__}")
    return weight


def _check_weight(weight):
    weight = _as_tensor(weight)
    if weight.dim() not in (2, 4):
        raise ValueError(f"N:M pruning needs a Linear [out, in] or Conv2d [out, in, kh, kw] "
                         f"weight, not shape {tuple(weight.shape)}")
    return weight


def conv_weight_matrix(weight):
    """The ``[out, kh*kw*in]`` matrix of a Conv2d weight ``[out, in, kh, kw]``.

    Columns run in ``(kh, kw, in)`` order, the runtime's im2col order, so N:M groups of
    consecutive columns are groups of input channels first.

    >>> w = torch.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2)
    >>> conv_weight_matrix(w)[0].tolist()
    [0, 2, 4, 1, 3, 5]
    """
    weight = _as_tensor(weight)
    if weight.dim() != 4:
        raise ValueError(f"A Conv2d weight must be [out, in, kh, kw], not shape "
                         f"{tuple(weight.shape)}")
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def conv_weight_from_matrix(matrix, shape):
    """Inverse of :func:`conv_weight_matrix`: the ``[out, in, kh, kw]`` weight of ``shape``."""
    matrix = _as_tensor(matrix)
    out, in_channels, kh, kw = shape
    if tuple(matrix.shape) != (out, kh * kw * in_channels):
        raise ValueError(f"A matrix for Conv2d weight {tuple(shape)} must be "
                         f"[{out}, {kh * kw * in_channels}], not {tuple(matrix.shape)}")
    return matrix.reshape(out, kh, kw, in_channels).permute(0, 3, 1, 2)


def weight_matrix(weight):
    """The ``[out, reduction]`` matrix whose rows are grouped N:M (Linear as is, Conv2d
    permuted by :func:`conv_weight_matrix`)."""
    weight = _check_weight(weight)
    return weight if weight.dim() == 2 else conv_weight_matrix(weight)


def weight_from_matrix(matrix, shape):
    """Inverse of :func:`weight_matrix` for a weight of ``shape``."""
    return _as_tensor(matrix) if len(shape) == 2 else conv_weight_from_matrix(matrix, shape)


# --- masks ------------------------------------------------------------------------------------

def _row_mask(matrix, n, m):
    """Keep the ``n`` largest ``|w|`` in each group of ``m`` columns; ties to the lower index."""
    rows, width = matrix.shape
    groups = nm_format.groups_of(width, m)
    magnitude = F.pad(matrix.detach().abs(), (0, groups * m - width)).reshape(rows, groups, m)
    # A stable ascending sort of -|w| lists equal magnitudes by position, so the lower index
    # wins a tie; zero padding sits after every real column of its group.
    order = torch.argsort(-magnitude, dim=2, stable=True)
    mask = torch.zeros(magnitude.shape, dtype=torch.bool, device=matrix.device)
    mask.scatter_(2, order[:, :, :n], True)
    return mask.reshape(rows, groups * m)[:, :width]


def _input_mask(weight, n, m):
    if weight.dim() == 2:
        return _row_mask(weight, n, m)
    return conv_weight_from_matrix(_row_mask(conv_weight_matrix(weight), n, m), weight.shape)


def _output_mask(weight, n, m):
    # Groups run down the output axis, separately for every column; the column order of
    # the conv matrix does not change them, so the plain reshape is enough.
    matrix = weight.reshape(weight.shape[0], -1)
    return _row_mask(matrix.t(), n, m).t().reshape(weight.shape)


def _checked(weight, n, m):
    nm_format.check_nm(n, m)
    weight = _check_weight(weight)
    if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
        raise ValueError("N:M pruning needs finite weights, but this one holds NaN or "
                         "infinity; fix the training that produced it")
    return weight


def nm_mask(weight, n, m):
    """Boolean N:M mask of a Linear or Conv2d weight, grouped along the reduction axis.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray
        ``[out, in]`` or ``[out, in, kh, kw]``.
    n, m : int
        Keep ``n`` of every ``m`` consecutive weights (``0 < n <= m``, ``2 <= m <= 16``).

    Returns
    -------
    torch.Tensor
        ``bool``, the shape of ``weight``; ``True`` where the weight is kept. Exactly
        ``min(n, group length)`` entries per group are ``True`` (a kept weight may be zero).

    Raises
    ------
    TypeError, ValueError
        For a bad pattern, shape or non-finite weights.

    >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0]]), 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 1]]
    """
    weight = _checked(weight, n, m)
    return _input_mask(weight, n, m)


def nm_mask_output(weight, n, m):
    """Boolean N:M mask grouped along the *output* axis (BDWP's backward weight).

    Groups of ``m`` consecutive output channels (rows of the ``[out, reduction]`` matrix)
    for every column; ``out`` is padded with zeros like the input axis. Same parameters,
    result and errors as :func:`nm_mask`.

    >>> nm_mask_output(torch.tensor([[1.0], [-4.0], [2.0], [0.0]]), 2, 4).int().tolist()
    [[0], [1], [1], [0]]
    """
    weight = _checked(weight, n, m)
    return _output_mask(weight, n, m)


# --- layer selection --------------------------------------------------------------------------

_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _select_layers(model, layers):
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected an nn.Module, not {type(model).__name__}")
    named = dict(model.named_modules())
    if layers is None:
        chosen = {name: mod for name, mod in named.items() if isinstance(mod, _LAYER_TYPES)}
        if not chosen:
            raise ValueError("The model has no nn.Linear or nn.Conv2d layer to prune")
        return chosen
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    by_id = {id(mod): name for name, mod in named.items()}
    chosen = {}
    for layer in layers:
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"The model has no layer named {layer!r}; names are "
                                 f"{sorted(n for n in named if n)}")
            name, mod = layer, named[layer]
        elif isinstance(layer, nn.Module) and id(layer) in by_id:
            name, mod = by_id[id(layer)], layer
        else:
            raise ValueError(f"Layer {layer!r} is not a name or a submodule of the model")
        if not isinstance(mod, _LAYER_TYPES):
            raise TypeError(f"Layer {name!r} is a {type(mod).__name__}; N:M pruning supports "
                            f"nn.Linear and nn.Conv2d only")
        chosen[name] = mod
    return chosen
