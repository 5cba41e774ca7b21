"""N:M structured pruning and N:M-sparse fine-tuning of PyTorch ``Linear`` / ``Conv2d`` layers.

The conventions are the hardware's (see ``docs/formats.md``):

* Groups of ``M`` consecutive weights run along the reduction (input) axis. A ``Linear``
  weight ``[out, in]`` is grouped along ``in``. A ``Conv2d`` weight ``[out, in, kh, kw]`` is
  first permuted to ``(out, kh, kw, in)`` and flattened to the matrix ``[out, kh*kw*in]``
  (:func:`conv_weight_matrix`), the column order of the runtime's im2col; it is grouped
  along those columns.
* Magnitude pruning keeps the ``N`` largest ``|w|`` of every group; equal magnitudes are
  broken toward the lower index. A width that is not a multiple of ``M`` is padded with
  zeros, so the last group is shorter (exactly as :mod:`sparqforge.sw.nm_format` does).

Two fine-tuning methods keep a model N:M while it trains (:class:`NMSparsifier`):

* ``"bdwp"`` -- bidirectional weight pruning (SAT, Fang et al., IEEE TCAD 2023). Forward
  ``Y = X @ Wf.T`` with ``Wf`` the dense weight masked N:M along the input axis. The
  activation gradient ``dX = dY @ Wb`` uses ``Wb``, the dense weight masked N:M along the
  *output* axis (the reduction axis of that transposed product). Both masks are recomputed
  from the dense weights at every step. The weight gradient ``dW = dY.T @ X`` involves no
  weight, stays dense and updates the dense weights (straight-through at pruned positions).
* ``"srste"`` -- sparse-refined straight-through estimator (Zhou et al., ICLR 2021). Forward
  with the N:M-masked weight; the gradient of the masked weight reaches the dense weight
  unchanged, plus the decay ``decay * (1 - mask) * W`` that pulls pruned weights to zero.

:meth:`NMSparsifier.finalize` writes the hard N:M weights into the model and restores plain
``nn.Module`` behaviour. :mod:`sparqforge.sw.digits_pruning` runs the whole flow on the
bundled digits models.
"""

__all__ = [
    "PATTERNS", "METHODS", "conv_weight_matrix", "conv_weight_from_matrix", "weight_matrix",
    "weight_from_matrix", "nm_mask", "nm_mask_output", "prune_nm", "prune_model",
    "compress_layer", "decompress_layer", "bdwp_linear", "bdwp_conv2d", "srste_weight",
    "NMSparsifier",
]

import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nm_format

#: N:M patterns the tests sweep; any pattern :func:`nm_format.check_nm` accepts works.
PATTERNS = ((1, 2), (2, 4), (1, 4), (2, 8), (4, 8))

#: Fine-tuning methods of :class:`NMSparsifier`.
METHODS = ("bdwp", "srste")

#: SR-STE decay (lambda_W) of the reference implementation, used when none is given.
_SRSTE_DECAY = 2e-4


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


# --- pruning and compression ------------------------------------------------------------------

_LAYER_TYPES = (nn.Linear, nn.Conv2d)


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


# --- training functions -----------------------------------------------------------------------

class _BDWPLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, n, m, decay):
        mask = _input_mask(weight, n, m)
        ctx.save_for_backward(x, weight, mask)
        ctx.nm = n, m, decay
        ctx.has_bias = bias is not None
        return F.linear(x, weight * mask, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        n, m, decay = ctx.nm
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ (weight * _output_mask(weight, n, m))
        flat_y = grad_y.reshape(-1, grad_y.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = flat_y.t() @ x.reshape(-1, x.shape[-1])
            if decay:
                grad_w = grad_w + decay * (~mask) * weight
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat_y.sum(0)
        return grad_x, grad_w, grad_b, None, None, None


class _BDWPConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, n, m, decay, stride, padding, dilation):
        mask = _input_mask(weight, n, m)
        ctx.save_for_backward(x, weight, mask)
        ctx.conv = n, m, decay, stride, padding, dilation
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight * mask, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        n, m, decay, stride, padding, dilation = ctx.conv
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight * _output_mask(weight, n, m),
                                                grad_y, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad_y, stride, padding,
                                                 dilation)
            if decay:
                grad_w = grad_w + decay * (~mask) * weight
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


class _SRSTEWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, n, m, decay):
        mask = _input_mask(weight, n, m)
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * (~mask) * weight, None, None, None


def _pattern(n, m):
    nm_format.check_nm(n, m)
    return int(n), int(m)


def bdwp_linear(x, weight, bias, n, m, decay=0.0):
    """``F.linear`` with BDWP (bidirectional weight pruning).

    Forward ``x @ (W * mask_in).T + bias`` with ``mask_in = nm_mask(W)`` (N:M along ``in``).
    Backward ``dX = dY @ (W * mask_out)`` with ``mask_out = nm_mask_output(W)`` (N:M along
    ``out``, the reduction axis of this product); ``dW = dY.T @ X`` dense, plus
    ``decay * (1 - mask_in) * W`` when ``decay > 0``; ``db = sum(dY)``. Both masks are
    computed from the dense ``weight`` passed in.
    """
    n, m = _pattern(n, m)
    return _BDWPLinear.apply(x, weight, bias, n, m, _decay(decay))


def bdwp_conv2d(x, weight, bias, n, m, stride=1, padding=0, dilation=1, decay=0.0):
    """``F.conv2d`` (zero padding, ``groups=1``) with BDWP, as :func:`bdwp_linear`.

    The forward weight is N:M along the ``(kh, kw, in)`` columns of
    :func:`conv_weight_matrix`; ``dX`` (a transposed convolution, i.e. the im2col matmul
    ``W_mat.T @ dY`` followed by col2im) uses the weight N:M along ``out`` for every
    ``(in, kh, kw)``; ``dW`` is the dense convolution weight gradient. ``padding`` must be
    integers here.
    """
    n, m = _pattern(n, m)
    decay = _decay(decay)
    if isinstance(padding, str):
        raise ValueError(f"bdwp_conv2d needs integer padding, not {padding!r}; pad the input "
                         f"with F.pad first")
    unbatched = x.dim() == 3
    y = _BDWPConv2d.apply(x.unsqueeze(0) if unbatched else x, weight, bias, n, m, decay,
                          _pair(stride), _pair(padding), _pair(dilation))
    return y.squeeze(0) if unbatched else y


def srste_weight(weight, n, m, decay=_SRSTE_DECAY):
    """SR-STE view of a weight: forward ``weight * mask``; backward
    ``grad + decay * (1 - mask) * weight`` to the dense weight."""
    n, m = _pattern(n, m)
    decay = _decay(decay)
    return _SRSTEWeight.apply(weight, n, m, decay)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _decay(decay):
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not decay >= 0:
        raise ValueError(f"Decay must be a number >= 0, not {decay!r}")
    return float(decay)


# --- sparsifier -------------------------------------------------------------------------------

_SPEC = "_sparqforge_nm_training"


def _same_padding(module):
    pads = []
    for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return pads


def _sparse_forward(module, x):
    n, m, method, decay = getattr(module, _SPEC)
    if isinstance(module, nn.Linear):
        if method == "bdwp":
            return _BDWPLinear.apply(x, module.weight, module.bias, n, m, decay)
        return F.linear(x, _SRSTEWeight.apply(module.weight, n, m, decay), module.bias)
    if method == "srste":
        return module._conv_forward(x, _SRSTEWeight.apply(module.weight, n, m, decay),
                                    module.bias)
    padding = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        # Explicit padding first, so the custom function only sees padding=0.
        if isinstance(padding, str):
            pads = _same_padding(module) if padding == "same" else [0, 0, 0, 0]
        else:
            pads = [padding[1], padding[1], padding[0], padding[0]]
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads, mode=mode)
        padding = (0, 0)
    return bdwp_conv2d(x, module.weight, module.bias, n, m, module.stride, padding,
                       module.dilation, decay)


class NMSparsifier:
    """Keep layers of a model N:M sparse while it trains.

    While attached, every selected layer computes its forward pass with its weight pruned
    N:M (the masks are recomputed from the dense weights at every call) and the optimizer
    updates the dense weights. :meth:`finalize` writes the hard N:M weights back.

    Parameters
    ----------
    model : nn.Module
    n, m : int
        The pattern, checked by :func:`nm_format.check_nm`.
    method : {"bdwp", "srste"}
        ``"bdwp"``: forward weight N:M along the input axis, activation-gradient weight N:M
        along the output axis, dense weight gradient (SAT, Fang et al. 2023). ``"srste"``:
        forward with the N:M weight, straight-through gradient plus the sparse-refined decay
        (Zhou et al. 2021).
    decay : float, optional
        The decay ``lambda`` of ``lambda * (1 - mask) * W`` added to the weight gradient.
        Default ``2e-4`` for ``"srste"`` (the SR-STE reference value) and ``0`` for
        ``"bdwp"``.
    layers : iterable of str or nn.Module, optional
        As in :func:`prune_model`; every ``Linear`` / ``Conv2d`` by default.

    Raises
    ------
    TypeError, ValueError
        For a bad pattern, method, decay or layer, and for BDWP on a grouped convolution.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(8, 4))
    >>> with NMSparsifier(model, 2, 4, method="srste") as sparsifier:
    ...     model(torch.ones(1, 8)).sum().backward()
    >>> masks = sparsifier.finalize()
    >>> int((model[0].weight != 0).sum())
    16
    """

    def __init__(self, model, n, m, *, method="bdwp", decay=None, layers=None):
        self._n, self._m = _pattern(n, m)
        if method not in METHODS:
            raise ValueError(f"N:M training method must be one of {list(METHODS)}, "
                             f"not {method!r}")
        self._method = method
        if decay is None:
            decay = _SRSTE_DECAY if method == "srste" else 0.0
        self._decay = _decay(decay)
        self._layers = _select_layers(model, layers)
        if method == "bdwp":
            for name, module in self._layers.items():
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    raise ValueError(f"BDWP supports Conv2d with groups=1 only, but layer "
                                     f"{name!r} has groups={module.groups}; use "
                                     f"method='srste' or leave it out with layers=")
        self._attached = False

    @property
    def n(self):
        return self._n

    @property
    def m(self):
        return self._m

    @property
    def method(self):
        return self._method

    @property
    def decay(self):
        return self._decay

    @property
    def layers(self):
        """The selected layers, ``{name: module}`` (a copy)."""
        return dict(self._layers)

    @property
    def attached(self):
        return self._attached

    def attach(self):
        """Make the selected layers train N:M sparse. Returns ``self``.

        Raises
        ------
        RuntimeError
            If already attached, or a layer is attached to another sparsifier.
        """
        if self._attached:
            raise RuntimeError("This NMSparsifier is already attached; call detach() first")
        for name, module in self._layers.items():
            if hasattr(module, _SPEC) or "forward" in vars(module):
                raise RuntimeError(f"Layer {name!r} already has its forward replaced (another "
                                   f"NMSparsifier?); detach that first")
        for module in self._layers.values():
            # Attributes of the module (not a closure), so copy.deepcopy of an attached
            # model stays consistent.
            setattr(module, _SPEC, (self._n, self._m, self._method, self._decay))
            module.forward = types.MethodType(_sparse_forward, module)
        self._attached = True
        return self

    def detach(self):
        """Restore the layers' own forward; the weights stay dense. Returns ``self``."""
        for module in self._layers.values():
            vars(module).pop("forward", None)
            vars(module).pop(_SPEC, None)
        self._attached = False
        return self

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()
        return False

    def masks(self):
        """The current forward masks (N:M along the input axis), ``{name: bool tensor}``."""
        return {name: nm_mask(mod.weight, self._n, self._m) for name, mod in self._layers.items()}

    def finalize(self):
        """Detach and prune the selected layers to exactly the N:M weights the forward pass
        used, leaving a plain model.

        Returns
        -------
        dict of str to torch.Tensor
            The masks applied, by layer name.

        Raises
        ------
        RuntimeError
            If a weight is still not N:M afterwards (a bug, not a user error).
        """
        self.detach()
        masks = {}
        for name, module in self._layers.items():
            with torch.no_grad():
                masks[name] = nm_mask(module.weight, self._n, self._m)
                module.weight.mul_(masks[name])
            matrix = weight_matrix(module.weight.detach()).cpu().numpy()
            bad = nm_format.find_violation(matrix, self._n, self._m)
            if bad is not None:
                raise RuntimeError(f"Layer {name!r} is not {self._n}:{self._m} after "
                                   f"finalize(): row {bad[0]}, group {bad[1]}")
        return masks
