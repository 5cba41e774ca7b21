"""N:M structured pruning of PyTorch ``Linear`` / ``Conv2d`` layers.

The conventions are the hardware's (see ``docs/formats.md``):

* Groups of ``M`` consecutive weights run along the reduction (input) axis. A ``Linear``
  weight ``[out, in]`` is grouped along ``in``. A ``Conv2d`` weight ``[out, in, kh, kw]`` is
  first permuted to ``(out, kh, kw, in)`` and flattened to the matrix ``[out, kh*kw*in]``
  (:func:`~sparqforge.sw.nm_masks.conv_weight_matrix`), the column order of the runtime's
  im2col; it is grouped along those columns.
* Magnitude pruning keeps the ``N`` largest ``|w|`` of every group; equal magnitudes are
  broken toward the lower index. A width that is not a multiple of ``M`` is padded with
  zeros, so the last group is shorter (exactly as :mod:`sparqforge.sw.nm_format` does).

The layout and the masks are in :mod:`sparqforge.sw.nm_masks`, N:M-sparse fine-tuning
(BDWP, SR-STE, :class:`~sparqforge.sw.sparse_training.NMSparsifier`) in
:mod:`sparqforge.sw.sparse_training`; their public names are re-exported here, so
``from sparqforge.sw.prune import NMSparsifier, nm_mask`` works.
"""

__all__ = [
    "PATTERNS", "METHODS", "conv_weight_matrix", "conv_weight_from_matrix", "weight_matrix",
    "weight_from_matrix", "nm_mask", "nm_mask_output", "prune_nm", "prune_model",
    "compress_layer", "decompress_layer", "bdwp_linear", "bdwp_conv2d", "srste_weight",
    "NMSparsifier",
]

import numpy as np
import torch
from torch import nn

from . import nm_format
from .nm_masks import (_LAYER_TYPES, _as_tensor, _select_layers, conv_weight_from_matrix,
                       conv_weight_matrix, nm_mask, nm_mask_output, weight_from_matrix,
                       weight_matrix)
from .sparse_training import METHODS, NMSparsifier, bdwp_conv2d, bdwp_linear, srste_weight

#: N:M patterns the tests sweep; any pattern :func:`nm_format.check_nm` accepts works.
PATTERNS = ((1, 2), (2, 4), (1, 4), (2, 8), (4, 8))


def prune_nm(module_or_tensor, n, m):
    """Magnitude-prune a layer or a weight to N:M.

    Parameters
    ----------
    module_or_tensor : nn.Linear, nn.Conv2d, torch.Tensor or numpy.ndarray
        A module's weight is pruned in place; a tensor or array is left untouched.
    n, m : int
        The pattern.

    Returns
    -------
    nn.Module or torch.Tensor
        The same module, or a pruned copy of the tensor.

    Raises
    ------
    TypeError
        For a module other than ``Linear`` / ``Conv2d``.
    """
    if isinstance(module_or_tensor, nn.Module):
        if not isinstance(module_or_tensor, _LAYER_TYPES):
            raise TypeError(f"N:M pruning supports nn.Linear and nn.Conv2d, not "
                            f"{type(module_or_tensor).__name__}")
        with torch.no_grad():
            weight = module_or_tensor.weight
            weight.mul_(nm_mask(weight, n, m))
        return module_or_tensor
    weight = _as_tensor(module_or_tensor)
    return weight.detach() * nm_mask(weight, n, m)


def prune_model(model, n, m, layers=None):
    """Magnitude-prune layers of a model to N:M in place.

    Parameters
    ----------
    model : nn.Module
    n, m : int
        The pattern.
    layers : iterable of str or nn.Module, optional
        Layer names (as in ``model.named_modules()``) or submodules; by default every
        ``nn.Linear`` and ``nn.Conv2d``.

    Returns
    -------
    dict of str to torch.Tensor
        The boolean mask applied to each layer, by layer name.

    Raises
    ------
    TypeError, ValueError
        For an unknown or unsupported layer, or a bad pattern.
    """
    nm_format.check_nm(n, m)
    masks = {}
    with torch.no_grad():
        for name, module in _select_layers(model, layers).items():
            masks[name] = nm_mask(module.weight, n, m)
            module.weight.mul_(masks[name])
    return masks


def compress_layer(weight, n, m):
    """Compress an N:M weight (or layer) with :func:`nm_format.compress`.

    Parameters
    ----------
    weight : nn.Linear, nn.Conv2d, torch.Tensor or numpy.ndarray
        Already N:M along the reduction axis (prune it first). A Conv2d weight is compressed
        as its ``[out, kh*kw*in]`` matrix.

    Returns
    -------
    values, indices : numpy.ndarray
        ``[out, groups * n]`` each, in the layout of :mod:`sparqforge.sw.nm_format`.

    Raises
    ------
    nm_format.NMFormatError
        Naming the first row (output channel) and group with more than ``n`` nonzeros.
    """
    if isinstance(weight, _LAYER_TYPES):
        weight = weight.weight
    matrix = weight_matrix(weight)
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    return nm_format.compress(matrix, n, m)


def decompress_layer(values, indices, n, m, shape):
    """Inverse of :func:`compress_layer`: the dense weight tensor of ``shape``."""
    shape = tuple(shape)
    if len(shape) not in (2, 4):
        raise ValueError(f"Layer shape must be [out, in] or [out, in, kh, kw], not {shape}")
    width = shape[1] if len(shape) == 2 else int(np.prod(shape[1:]))
    matrix = nm_format.decompress(values, indices, n, m, in_features=width)
    if matrix.shape != (shape[0], width):
        raise ValueError(f"Compressed rows {matrix.shape} do not fit layer shape {shape}")
    return weight_from_matrix(torch.from_numpy(np.ascontiguousarray(matrix)), shape).contiguous()
