"""Named quantizations: the three schemes of the built-in example, for any model.

A preset fixes the weight width and method, the per-layer activation widths and methods, and
which N:M pattern the weights keep; :func:`expand` turns it into the keyword arguments of
:func:`~sparqforge.sw.quantize.quantize_model` for a model with a given number of
Linear/Conv2d layers, and ``quantize_model(model, preset=name, calib=x)`` applies it.

``"uniform-w8a8"``
    Uniform symmetric 8-bit weights, uniform 8-bit activations everywhere.
``"power-w4"``
    Power-exponent 4-bit weights; the first layer's input is uniform 8-bit (the bundle's
    input quantization: pixels or features as the model receives them), every later layer's
    input is a 4-bit power code (the threshold unit of the layer before produces it; 4 bits
    is the reference accelerator's threshold width).
``"sparse24-w4"``
    Uniform symmetric 4-bit weights that keep a 2:4 pattern, uniform 8-bit activations. Every
    Linear/Conv2d must already be 2:4 pruned (:mod:`sparqforge.sw.prune`); a dense one is
    refused, naming it (as :mod:`sparqforge.sw.frontend.presets` does for ``compile``).

The first two keep the zeros of any layer that is already N:M sparse (``sparsity="auto"``,
see :func:`~sparqforge.sw.quantize.quantize_model`).
"""

__all__ = ["PRESETS", "expand"]

from ..schemes import SCHEMES

#: Preset name -> description (the same names and texts as the example's schemes).
PRESETS = dict(SCHEMES)


def expand(name, layers):
    """The :func:`~sparqforge.sw.quantize.quantize_model` settings of a preset.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`.
    layers : torch.nn.Module or int
        The model (its Linear/Conv2d layers are counted, in ``modules()`` order) or the
        number of Linear/Conv2d layers.

    Returns
    -------
    dict
        ``bits``, ``method``, ``act_bits``, ``act_method`` (lists with one entry per layer
        where layers differ) and ``sparsity``.

    Raises
    ------
    ValueError
        For an unknown preset or a model without Linear/Conv2d layers.

    >>> expand("power-w4", 3)["act_bits"]
    [8, 4, 4]
    >>> expand("power-w4", 3)["act_method"]
    ['uniform', 'power', 'power']
    >>> expand("sparse24-w4", 2)["sparsity"]
    (2, 4)
    """
    if name not in PRESETS:
        raise ValueError(f"Quantization preset must be one of {sorted(PRESETS)}, not {name!r}")
    count = layers if isinstance(layers, int) and not isinstance(layers, bool) else None
    if count is None:
        from torch import nn

        if not isinstance(layers, nn.Module):
            raise TypeError(f"A preset is expanded for a torch.nn.Module or a layer count, "
                            f"not {type(layers).__name__}")
        count = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in layers.modules())
    if count < 1:
        raise ValueError(f"Preset {name!r} needs a model with at least one Linear or Conv2d "
                         f"layer, not {count}")
    if name == "uniform-w8a8":
        return {"bits": 8, "method": "uniform", "act_bits": 8, "act_method": "uniform",
                "sparsity": "auto"}
    if name == "power-w4":
        return {"bits": 4, "method": "power", "act_bits": [8] + [4] * (count - 1),
                "act_method": ["uniform"] + ["power"] * (count - 1), "sparsity": "auto"}
    if name == "sparse24-w4":
        return {"bits": 4, "method": "uniform", "act_bits": 8, "act_method": "uniform",
                "sparsity": (2, 4)}
    raise AssertionError(f"preset {name!r} has a description but no settings")
