"""Export a PyTorch model to a sparqforge bundle and run it on the golden model.

    .venv/bin/python examples/export_digits.py [--quant uniform|power] [--model mlp|cnn]
    .venv/bin/python examples/export_digits.py --fast     # seconds: a quick smoke run

``--fast`` trains for 3 epochs instead of 30, calibrates on 64 training images instead of
256 and scores the first 100 test images; the flow (train, quantize, export, save, load, run
on the golden model, check against it) is the same, only the accuracy is lower.

The same bundle runs in Verilator or on a board with
``sparqforge infer mlp-power.npz --backend verilator --digits``.
"""

__all__ = ["main"]

import argparse

import numpy as np
import torch

from sparqforge.backends import open_device
from sparqforge.sw import bundle, digits, golden
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import quantize_model
from sparqforge.sw.runtime.runner import Runner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--quant", choices=["uniform", "power"], default="power")
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("--fast", action="store_true",
                        help="3 epochs, 64 calibration and 100 test images (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = digits.load_digits()
    epochs, calib_images = (3, 64) if args.fast else (30, 256)
    if args.fast:
        x_test, y_test = x_test[:100], y_test[:100]
    calib = x_train[:calib_images]
    model = digits.train(digits.make_model(args.model), x_train, y_train, epochs=epochs)
    print(f"float accuracy {digits.evaluate(model, x_test, y_test):.4f}")

    # Pixels enter as uniform 8-bit codes; later layers use the chosen method.
    layers = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in model)
    if args.quant == "power":
        qmodel = quantize_model(model, bits=4, method="power", act_bits=[8] + [4] * (layers - 1),
                                act_method=["uniform"] + ["power"] * (layers - 1),
                                calib=calib)
    else:
        qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=calib)
    exported = export_model(qmodel, calib, name=f"{args.model}-{args.quant}")
    path = bundle.save(exported, args.output or f"{args.model}-{args.quant}.npz")
    print(f"wrote {path}")

    loaded = bundle.load(path)
    codes = loaded.quantize_input(x_test.numpy())
    device = open_device("golden", "demo")
    runner = Runner(loaded, device)
    runner.load()
    logits = runner.infer(codes)
    assert np.array_equal(logits, golden.run_network(loaded.layers, codes))
    print(f"integer accuracy {np.mean(logits.argmax(1) == y_test.numpy()):.4f}")


if __name__ == "__main__":
    main()
