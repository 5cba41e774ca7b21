"""N:M-sparse fine-tuning of PyTorch ``Linear`` / ``Conv2d`` layers (the layout and masks of
:mod:`sparqforge.sw.nm_masks`; the public names are also re-exported by
:mod:`sparqforge.sw.prune`).

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

__all__ = ["METHODS", "bdwp_linear", "bdwp_conv2d", "srste_weight", "NMSparsifier"]

import types

import torch
import torch.nn.functional as F
from torch import nn

from . import nm_format
from .nm_masks import _input_mask, _output_mask, _select_layers, nm_mask, weight_matrix

#: Fine-tuning methods of :class:`NMSparsifier`.
METHODS = ("bdwp", "srste")

#: SR-STE decay (lambda_W) of the reference implementation, used when none is given.
_SRSTE_DECAY = 2e-4


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
