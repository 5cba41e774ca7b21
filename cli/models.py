"""The built-in example: digits classifiers trained, quantized and exported three ways."""

__all__ = ["SCHEMES", "train", "quantize_and_export"]

import copy

import numpy as np

#: The three quantizations of the main job.
SCHEMES = {
    "uniform-w8a8": "uniform 8-bit weights and activations (gemmlowp requantization)",
    "power-w4": "power-exponent 4-bit weights, 4-bit power-domain hidden activations "
                "(operand tables and threshold units)",
    "sparse24-w4": "2:4-pruned (SR-STE fine-tuned) uniform 4-bit weights, 8-bit activations, "
                   "run in N:M sparse mode",
}


def train(kind, *, seed=0):
    """A trained float digits model (fixed seed) and the dataset split."""
    import torch

    from .sw import digits

    torch.set_num_threads(1)
    data = digits.load_digits(seed=seed)
    model = digits.train(digits.make_model(kind, seed=seed), data[0], data[1], seed=seed)
    return model, data


def quantize_and_export(kind, model, data, scheme, *, seed=0):
    """Quantize ``model`` with ``scheme`` and export it.

    Returns ``(bundle, fake_quant_accuracy)``: the bundle and the test accuracy of the
    quantized model simulated in floating point (what PyTorch would report).
    """
    import torch

    from .sw import digits, prune
    from .sw.export import export_model
    from .sw.quantize import quantize_model

    x_train, y_train, x_test, y_test = data
    calib = x_train[:256]
    layers = [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    count = len(layers)
    sparsity = None
    if scheme == "uniform-w8a8":
        qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=calib)
    elif scheme == "power-w4":
        qmodel = quantize_model(model, bits=4, method="power",
                                act_bits=[8] + [4] * (count - 1),
                                act_method=["uniform"] + ["power"] * (count - 1), calib=calib)
    elif scheme == "sparse24-w4":
        sparse = copy.deepcopy(model)
        sparsifier = prune.NMSparsifier(sparse, 2, 4, method="srste").attach()
        for stage, (lr, epochs) in enumerate(prune.FINETUNE_SCHEDULE):
            digits.train(sparse, x_train, y_train, epochs=epochs, lr=lr, seed=seed + stage)
        sparsifier.finalize()
        # Data-free weight quantization keeps every pruned weight exactly zero.
        qmodel = quantize_model(sparse, bits=4, method="uniform", act_bits=8, act_calib=calib)
        sparsity = (2, 4)
    else:
        raise ValueError(f"Unknown scheme {scheme!r}; choose from {sorted(SCHEMES)}")
    bundle = export_model(qmodel, calib, name=f"{kind}-{scheme}", sparsity=sparsity)
    with torch.no_grad():
        accuracy = digits.evaluate(qmodel.fake_quant_model(), x_test, y_test)
    if sparsity and not all(layer.get("sparsity") for layer in bundle.matmul_layers()):
        raise AssertionError("a pruned layer lost its 2:4 pattern in quantization")
    return bundle, float(np.float64(accuracy))
