"""The built-in example: scikit-learn's bundled digits dataset, the two small classifiers
sparqforge ships with, and the three quantizations of the main job (``sparqforge demo``).

The dataset (1,797 8x8 images, 10 classes) is part of the scikit-learn package, so nothing
is downloaded. Pixels are scaled from 0..16 to 0..1. The split and the training are seeded,
so every run gives the same models; training takes seconds on a CPU.
"""

__all__ = ["SCHEMES", "FINETUNE_SCHEDULE", "load_digits", "DigitsMLP", "DigitsCNN",
           "make_model", "train", "finetune", "evaluate", "train_example",
           "quantize_and_export"]

import copy

import numpy as np
import torch
from torch import nn

from .schemes import SCHEMES


def load_digits(*, test_fraction=0.3, seed=0):
    """Return ``(x_train, y_train, x_test, y_test)`` as float32 / int64 tensors.

    Images are ``[N, 1, 8, 8]`` in ``[0, 1]``; the split is a seeded permutation.
    """
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class DigitsMLP(nn.Sequential):
    """64 -> 64 -> 32 -> 10 multilayer perceptron with ReLU."""

    def __init__(self):
        super().__init__(
            nn.Flatten(),
            nn.Linear(64, 64), nn.ReLU(),
            nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 10),
        )


class DigitsCNN(nn.Sequential):
    """Two 3x3 convolutions with max pooling, then a linear classifier."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 2 * 2, 10),
        )


def make_model(kind, *, seed=0):
    """A freshly initialised ``"mlp"`` or ``"cnn"`` (initialisation seeded)."""
    models = {"mlp": DigitsMLP, "cnn": DigitsCNN}
    if kind not in models:
        raise ValueError(f"Model kind must be one of {sorted(models)}, not {kind!r}")
    torch.manual_seed(seed)
    return models[kind]()


def train(model, x, y, *, epochs=30, lr=3e-3, batch_size=64, seed=0, hook=None):
    """Train with Adam and cross-entropy (deterministic for a given seed).

    ``hook(model)`` runs after every optimizer step (used to keep weights N:M sparse, for
    instance). Returns the model.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
            if hook is not None:
                hook(model)
    model.eval()
    return model


@torch.no_grad()
def evaluate(model, x, y):
    """Top-1 accuracy in ``[0, 1]``."""
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


#: N:M fine-tuning schedule of the example: ``(learning rate, epochs)`` stages.
FINETUNE_SCHEDULE = ((3e-3, 15), (1e-3, 5), (3e-4, 5))


def finetune(model, x, y, *, schedule=FINETUNE_SCHEDULE, seed=0):
    """:func:`train` once per ``(learning rate, epochs)`` stage; stage ``i`` uses seed
    ``seed + i``."""
    for stage, (lr, epochs) in enumerate(schedule):
        train(model, x, y, epochs=epochs, lr=lr, seed=seed + stage)
    return model


def train_example(kind, *, seed=0):
    """A trained float digits model (fixed seed) and the dataset split."""
    torch.set_num_threads(1)
    data = load_digits(seed=seed)
    model = train(make_model(kind, seed=seed), data[0], data[1], seed=seed)
    return model, data


def quantize_and_export(kind, model, data, scheme, *, seed=0):
    """Quantize ``model`` with ``scheme`` (one of :data:`SCHEMES`) and export it.

    Returns ``(bundle, fake_quant_accuracy)``: the bundle and the test accuracy of the
    quantized model simulated in floating point (what PyTorch would report).
    """
    from . import prune
    from .export import export_model
    from .quantize import quantize_model

    x_train, y_train, x_test, y_test = data
    calib = x_train[:256]
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
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
        finetune(sparse, x_train, y_train, seed=seed)
        sparsifier.finalize()
        # Data-free weight quantization keeps every pruned weight exactly zero.
        qmodel = quantize_model(sparse, bits=4, method="uniform", act_bits=8, act_calib=calib)
        sparsity = (2, 4)
    else:
        raise ValueError(f"Unknown scheme {scheme!r}; choose from {sorted(SCHEMES)}")
    bundle = export_model(qmodel, calib, name=f"{kind}-{scheme}", sparsity=sparsity)
    with torch.no_grad():
        accuracy = evaluate(qmodel.fake_quant_model(), x_test, y_test)
    if sparsity and not all(layer.get("sparsity") for layer in bundle.matmul_layers()):
        raise AssertionError("a pruned layer lost its 2:4 pattern in quantization")
    return bundle, float(np.float64(accuracy))
