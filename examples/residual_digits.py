"""A user's own model, end to end: a small residual CNN with BatchNorm, trained on
scikit-learn's digits, compiled to a bundle and run on the Verilated accelerator.

From the command line (docs/frontend.md walks through it)::

    .venv/bin/python examples/residual_digits.py --data build/digits   # writes calib/test .npy
    .venv/bin/sparqforge export --model examples/residual_digits.py:make_model \\
        --quant uniform-w8a8 --calib build/digits/calib.npy -o build/residual.npz
    .venv/bin/sparqforge infer build/residual.npz --backend verilator \\
        --inputs build/digits/x_test.npy --labels build/digits/y_test.npy

or from Python: ``.venv/bin/python examples/residual_digits.py`` compiles with
``sparqforge.compile`` and runs the test split on the golden model and the Verilated
accelerator (``--fast``: a shorter training and 64 test images, for the tests).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity shortcut."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Block(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def digits(seed=0):
    """``(x_train, y_train, x_test, y_test)``: 8x8 images in 0..1, a seeded 70/30 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[:, None] / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:540], order[540:]
    return x[train], bunch.target[train], x[test], bunch.target[test]


def make_model(epochs=10):
    """The trained model, in eval mode (what ``sparqforge export --model FILE:make_model``
    calls)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y, _, _ = digits()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = ResidualNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", metavar="DIR",
                        help="only write calib.npy, x_test.npy and y_test.npy to DIR")
    parser.add_argument("--fast", action="store_true",
                        help="2 training epochs, 64 test images (for the tests)")
    args = parser.parse_args(argv)
    x_train, _, x_test, y_test = digits()
    if args.data:
        out = Path(args.data)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "calib.npy", x_train[:256])
        np.save(out / "x_test.npy", x_test)
        np.save(out / "y_test.npy", y_test)
        print(f"wrote {out}/calib.npy, x_test.npy, y_test.npy")
        return 0

    import sparqforge
    from sparqforge.backends import open_device
    from sparqforge.sw import golden
    from sparqforge.sw.runtime.runner import Runner

    model = make_model(epochs=2 if args.fast else 10)
    if args.fast:
        x_test, y_test = x_test[:64], y_test[:64]
    with torch.no_grad():
        float_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    bundle = sparqforge.compile(model, x_train[:1], quant="uniform-w8a8", calib=x_train[:256])
    codes = bundle.quantize_input(x_test)
    want = golden.run_network(bundle.layers, codes)
    device = open_device("verilator", "demo")
    try:
        runner = Runner(bundle, device)
        runner.load()
        got = runner.infer(codes, batch=64)
    finally:
        device.close()
    print(f"float {float_acc:.4f}, golden {(want.argmax(1) == y_test).mean():.4f}, "
          f"RTL {(got.argmax(1) == y_test).mean():.4f}, RTL == golden: "
          f"{np.array_equal(got, want)}")
    for row in runner.report():
        print(f"  {row['name']:<14} {row['type']:<15} {row['where']:<7} {row['macs']:>7} MACs "
              f"{row['cycles']:8.1f} cycles")
    return 0 if np.array_equal(got, want) else 1


if __name__ == "__main__":
    sys.exit(main())
