"""The one check of which PyTorch models sparqforge can quantize and export.

:func:`sparqforge.sw.quantize.quantize_model` and :func:`sparqforge.sw.export.export_model`
both call :func:`check_model` first, so a model is either refused by both, before any work,
or accepted by both. The rule is what the integer pipeline can run:

* an ``nn.Sequential`` of
* ``Linear``;
* ``Conv2d`` with ``groups=1``, ``dilation=1``, ``padding_mode="zeros"`` and integer padding
  (the runtime's im2col pads with the input's zero point; a string such as ``"valid"`` or
  ``"same"`` must be written as integers);
* ``ReLU`` directly after a ``Linear`` or ``Conv2d`` (the requantizer applies it);
* ``MaxPool2d`` and ``AvgPool2d`` without padding, ``ceil_mode`` or dilation (and, for the
  average, without ``divisor_override``: the hardware divides by the window size);
* ``Flatten`` of everything after the batch axis (``start_dim=1``, ``end_dim=-1``).

Each refusal is an :class:`~sparqforge.errors.UnsupportedLayerError` naming the layer, its
type and the fix.
"""

__all__ = ["SUPPORTED_LAYERS", "check_model", "check_conv"]

from torch import nn

from ..errors import UnsupportedLayerError

#: What :func:`check_model` accepts, as the error messages name it.
SUPPORTED_LAYERS = "Linear, Conv2d, ReLU (after Linear/Conv2d), MaxPool2d, AvgPool2d, Flatten"


def _pair(value):
    return tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value)))


def check_conv(conv, name):
    """Refuse a ``Conv2d`` the integer pipeline cannot run.

    Parameters
    ----------
    conv : torch.nn.Conv2d
    name : str
        The layer's name in the model, for the message.

    Raises
    ------
    UnsupportedLayerError
        For ``groups != 1``, ``dilation != 1``, a padding mode other than ``"zeros"`` or a
        string padding.
    """
    where = f"Layer {name!r} (Conv2d)"
    if conv.groups != 1:
        raise UnsupportedLayerError(f"{where} has groups={conv.groups}; sparqforge runs only "
                                    f"groups=1 convolutions: use groups=1")
    if _pair(conv.dilation) != (1, 1):
        raise UnsupportedLayerError(f"{where} has dilation={conv.dilation}; sparqforge runs "
                                    f"only undilated convolutions: use dilation=1")
    if conv.padding_mode != "zeros":
        raise UnsupportedLayerError(f"{where} uses padding_mode={conv.padding_mode!r}; "
                                    f"sparqforge pads with zeros only: use "
                                    f"padding_mode='zeros'")
    if isinstance(conv.padding, str):
        raise UnsupportedLayerError(f"{where} uses padding={conv.padding!r}; give the padding "
                                    f"as integers (padding='valid' is padding=0)")


def _check_pool(pool, name):
    where = f"Layer {name!r} ({type(pool).__name__})"
    if _pair(pool.padding) != (0, 0):
        raise UnsupportedLayerError(f"{where} uses padding={pool.padding}; sparqforge pools "
                                    f"without padding: use padding=0")
    if pool.ceil_mode:
        raise UnsupportedLayerError(f"{where} uses ceil_mode=True; sparqforge pools whole "
                                    f"windows only: use ceil_mode=False")
    if isinstance(pool, nn.MaxPool2d) and _pair(pool.dilation) != (1, 1):
        raise UnsupportedLayerError(f"{where} has dilation={pool.dilation}; use dilation=1")
    if isinstance(pool, nn.AvgPool2d) and pool.divisor_override is not None:
        raise UnsupportedLayerError(f"{where} has divisor_override={pool.divisor_override}; "
                                    f"sparqforge divides by the window size: leave "
                                    f"divisor_override=None")


def check_model(model):
    """Refuse, before any work, a model sparqforge cannot quantize and export.

    Parameters
    ----------
    model : torch.nn.Sequential

    Raises
    ------
    UnsupportedLayerError
        (a ``TypeError``) for a model that is not an ``nn.Sequential`` or has a layer outside
        the rule of this module; the message names the layer, its type and the fix.

    >>> check_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    >>> check_model(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sparqforge.errors.UnsupportedLayerError: Layer '1' (Sigmoid) is not supported; ...
    """
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(f"sparqforge needs an nn.Sequential, not "
                                    f"{type(model).__name__}; put the layers in an "
                                    f"nn.Sequential")
    previous = previous_name = None
    for name, module in model.named_children():
        if isinstance(module, nn.Conv2d):
            check_conv(module, name)
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            _check_pool(module, name)
        elif isinstance(module, nn.ReLU):
            if not isinstance(previous, (nn.Linear, nn.Conv2d)):
                after = ("is the first layer" if previous is None else
                         f"follows {previous_name!r} ({type(previous).__name__})")
                raise UnsupportedLayerError(
                    f"Layer {name!r} (ReLU) {after}, but it must directly follow a Linear or "
                    f"Conv2d layer, whose requantizer applies it: move it there")
        elif isinstance(module, nn.Flatten):
            if (module.start_dim, module.end_dim) != (1, -1):
                raise UnsupportedLayerError(
                    f"Layer {name!r} (Flatten) has start_dim={module.start_dim}, "
                    f"end_dim={module.end_dim}; sparqforge flattens everything after the "
                    f"batch axis: use nn.Flatten()")
        elif not isinstance(module, nn.Linear):
            raise UnsupportedLayerError(
                f"Layer {name!r} ({type(module).__name__}) is not supported; sparqforge "
                f"quantizes and exports {SUPPORTED_LAYERS}: remove or replace it (fold a "
                f"BatchNorm into the layer before it)")
        previous, previous_name = module, name
