"""Export a PyTorch model to a sparqforge bundle and run it on the golden model.

    .venv/bin/python examples/export_digits.py [--quant uniform|power] [--model mlp|cnn]

The same bundle runs in Verilator or on a board with
``sparqforge infer mlp-power.npz --backend verilator --digits``.
"""

import argparse

import numpy as np
import torch

from sparqforge.backends import open_device
from sparqforge.sw import bundle, digits, golden
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import quantize_model
from sparqforge.sw.runtime.runner import Runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--quant", choices=["uniform", "power"], default="power")
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = digits.load_digits()
    model = digits.train(digits.make_model(args.model), x_train, y_train)
    print(f"float accuracy {digits.evaluate(model, x_test, y_test):.4f}")

    # Pixels enter as uniform 8-bit codes; later layers use the chosen method.
    layers = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in model)
    if args.quant == "power":
        qmodel = quantize_model(model, bits=4, method="power", act_bits=[8] + [4] * (layers - 1),
                                act_method=["uniform"] + ["power"] * (layers - 1),
                                calib=x_train[:256])
    else:
        qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=x_train[:256])
    exported = export_model(qmodel, x_train[:256], name=f"{args.model}-{args.quant}")
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
