"""A corpus of user-style models, written the way people write PyTorch models (plain
``nn.Module`` classes with BatchNorm, residual adds, depthwise convolutions, global pooling,
functional calls), each trained briefly on a data set that ships with scikit-learn. The
frontend's tests and ``sparqforge bench frontend`` compile them; between them they use every
operator the frontend supports (``docs/frontend.md``).

Training is seeded and takes seconds on a CPU; accuracy is what a brief training reaches, not
a state of the art.
"""

__all__ = ["DATASETS", "MODELS", "load", "make", "train", "accuracy"]

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _split(x, y, seed, test_fraction=0.3):
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load(dataset, *, seed=0):
    """``(x_train, y_train, x_test, y_test)`` of ``"digits"`` (``[N, 1, 8, 8]`` in 0..1),
    ``"breast_cancer"`` (30 features) or ``"wine"`` (13 features), as float32 / int64
    tensors; tabular features standardized with the training split's mean and deviation."""
    from sklearn import datasets

    if dataset == "digits":
        bunch = datasets.load_digits()
        x = bunch.images[:, None] / 16.0
    elif dataset in ("breast_cancer", "wine"):
        bunch = getattr(datasets, f"load_{dataset}")()
        x = bunch.data
    else:
        raise ValueError(f"Data set must be one of {sorted(DATASETS)}, not {dataset!r}")
    x_train, y_train, x_test, y_test = _split(x.astype(np.float64), bunch.target, seed)
    if dataset != "digits":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return (torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train),
            torch.tensor(x_test, dtype=torch.float32), torch.tensor(y_test))


class ResidualCNN(nn.Module):
    """A small ResNet: a Conv-BN-ReLU stem, an identity residual block, a strided block with
    a 1x1 strided shortcut convolution (no BatchNorm on the shortcut, as in ResNet-8), global
    average pooling and a linear classifier."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.down_bn1 = nn.BatchNorm2d(16)
        self.down2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.down_bn2 = nn.BatchNorm2d(16)
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(y)))
        y = F.relu(self.down_bn1(self.down1(x)))
        x = F.relu(self.shortcut(x) + self.down_bn2(self.down2(y)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SeparableCNN(nn.Module):
    """A depthwise-separable CNN (MobileNet style): depthwise 3x3 + BN + ReLU6, pointwise
    1x1 + BN + ReLU6, a strided depthwise block, max pooling, ``mean`` over the spatial
    axes."""

    def __init__(self, classes=10):
        super().__init__()

        def separable(channels, out, stride):
            return nn.Sequential(
                nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels,
                          bias=False),
                nn.BatchNorm2d(channels), nn.ReLU6(),
                nn.Conv2d(channels, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU6())
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU6())
        self.block1 = separable(8, 16, 1)
        self.block2 = separable(16, 24, 2)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(24, classes)

    def forward(self, x):
        x = self.pool(self.block2(self.block1(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class TabularMLP(nn.Module):
    """An MLP with BatchNorm1d and Dropout between its layers."""

    def __init__(self, features, classes, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, hidden // 2),
                                  nn.BatchNorm1d(hidden // 2), nn.ReLU(), nn.Dropout(0.1))
        self.out = nn.Linear(hidden // 2, classes)

    def forward(self, x):
        return self.out(self.body(x))


class PoolHeadCNN(nn.Module):
    """Convolutions, average pooling, and a global-average-pool head with a 1x1 classifier
    convolution before the pool (so the classifier works on every position)."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding="same"), nn.BatchNorm2d(12), nn.ReLU(),
            nn.AvgPool2d(2), nn.Conv2d(12, 16, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x):
        return self.flatten(self.pool(self.classifier(self.features(x))))


class FunctionalNet(nn.Module):
    """A plain module with functional calls: one hidden tensor feeds two branches that are
    added back (``x + y``), ``F.relu`` between them."""

    def __init__(self, features, classes, hidden=24):
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.left = nn.Linear(hidden, hidden)
        self.right = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        h = F.relu(self.inp(x))
        y = F.relu(self.left(h))
        z = self.right(h)
        return self.out(F.relu(y + z + h))


#: Each model: its data set and a factory.
MODELS = {
    "residual_cnn": ("digits", lambda: ResidualCNN(10)),
    "separable_cnn": ("digits", lambda: SeparableCNN(10)),
    "pool_head_cnn": ("digits", lambda: PoolHeadCNN(10)),
    "tabular_mlp": ("breast_cancer", lambda: TabularMLP(30, 2)),
    "functional_net": ("wine", lambda: FunctionalNet(13, 3)),
}
DATASETS = ("digits", "breast_cancer", "wine")
#: Training epochs per model (seconds each).
EPOCHS = {"residual_cnn": 12, "separable_cnn": 15, "pool_head_cnn": 25, "tabular_mlp": 40,
          "functional_net": 60}


def make(name, *, seed=0):
    """A freshly initialised corpus model (seeded)."""
    if name not in MODELS:
        raise ValueError(f"Model must be one of {sorted(MODELS)}, not {name!r}")
    torch.manual_seed(seed)
    return MODELS[name][1]()


def train(name, *, seed=0, epochs=None, lr=3e-3, batch_size=32):
    """Train corpus model ``name`` on its data set (Adam, cross-entropy, seeded); return
    ``(model in eval mode, (x_train, y_train, x_test, y_test))``."""
    torch.set_num_threads(1)
    data = load(MODELS[name][0], seed=seed)
    x, y = data[0], data[1]
    model = make(name, seed=seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(EPOCHS[name] if epochs is None else epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:
                continue   # BatchNorm needs two items in training
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval(), data


@torch.no_grad()
def accuracy(model, x, y):
    """Top-1 accuracy in ``[0, 1]`` of a float model."""
    return float((model.eval()(x).argmax(dim=1) == y).float().mean())
