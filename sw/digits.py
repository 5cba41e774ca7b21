"""scikit-learn's bundled digits dataset and the two small classifiers sparqforge ships with.

The dataset (1,797 8x8 images, 10 classes) is part of the scikit-learn package, so nothing
is downloaded. Pixels are scaled from 0..16 to 0..1. The split and the training are seeded,
so every run gives the same models; training takes seconds on a CPU.
"""

__all__ = ["load_digits", "DigitsMLP", "DigitsCNN", "make_model", "train", "evaluate"]

import numpy as np
import torch
from torch import nn


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
