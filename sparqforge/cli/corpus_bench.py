"""``sparqforge bench frontend``: the corpus of user-style models (:mod:`sparqforge.sw.corpus`)
through the whole flow, each in W8A8 and power W4.

Per model and quantization: the float model's test accuracy, the quantized graph's in float
(fake quantization, what PyTorch would report), the golden model's on the bundle, and the
Verilated accelerator's through the runtime, with whether every output code of the test split
equals the golden model's; and where the layers ran, with their MACs.
"""

__all__ = ["QUANTS", "compile_corpus_model", "bench_frontend"]

import sys
import time

import numpy as np

#: The quantizations of the benchmark.
QUANTS = ("uniform-w8a8", "power-w4")


def _log(quiet, message):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def compile_corpus_model(name, quant, *, seed=0, calib_items=256):
    """Train corpus model ``name``, quantize it with ``quant`` and lower it.

    Returns ``(bundle, data, accuracies)``: ``accuracies`` has ``float`` and ``fake_quant``
    test accuracies.
    """
    import torch

    from ..sw import corpus
    from ..sw.frontend import capture
    from ..sw.frontend.lower import lower
    from ..sw.frontend.quantize_graph import fake_quant, quantize_graph

    model, data = corpus.train(name, seed=seed)
    x_train, _, x_test, y_test = data
    calib = x_train[:calib_items]
    graph = capture(model, calib[:2])
    qgraph = quantize_graph(graph, calib, quant=quant, name=f"{name}-{quant}")
    bundle = lower(qgraph, name=f"{name}-{quant}")
    with torch.no_grad():
        fake = np.asarray(fake_quant(qgraph, x_test.numpy().astype(np.float64)))
    accuracies = {"float": corpus.accuracy(model, x_test, y_test),
                  "fake_quant": float((fake.argmax(1) == y_test.numpy()).mean())}
    return bundle, data, accuracies


def bench_frontend(quiet=False, *, models=None, quants=QUANTS, images=None, backend="verilator",
                   config="demo"):
    """Run the corpus; return one flat dict (``frontend.MODEL.QUANT.*``)."""
    from ..backends import open_device
    from ..sw import corpus, golden
    from ..sw.runtime.runner import Runner

    report = {}
    device = open_device(backend, config, quiet=quiet, log=lambda m: _log(quiet, m))
    try:
        for name in models or corpus.MODELS:
            for quant in quants:
                start = time.monotonic()
                bundle, data, acc = compile_corpus_model(name, quant)
                x_test, y_test = data[2].numpy(), data[3].numpy()
                if images:
                    x_test, y_test = x_test[:images], y_test[:images]
                codes = bundle.quantize_input(x_test)
                want = golden.run_network(bundle.layers, codes)
                runner = Runner(bundle, device)
                runner.load()
                got = runner.infer(codes, batch=64)
                key = f"frontend.{name}.{quant}"
                layers = runner.report()
                macs = sum(row["macs"] for row in layers)
                on_device = sum(row["macs"] for row in layers if row["where"] == "device")
                report.update({
                    f"{key}.images": len(codes),
                    f"{key}.float_acc": acc["float"],
                    f"{key}.fake_quant_acc": acc["fake_quant"],
                    f"{key}.golden_acc": float((want.argmax(1) == y_test).mean()),
                    f"{key}.rtl_acc": float((got.argmax(1) == y_test).mean()),
                    f"{key}.rtl_equals_golden": bool(np.array_equal(got, want)),
                    f"{key}.layers": len(bundle.layers),
                    f"{key}.macs": macs,
                    f"{key}.device_mac_fraction": on_device / macs if macs else 0.0,
                    f"{key}.device_cycles": runner.cycles / len(codes),
                })
                _log(quiet, f"frontend: {name} {quant}: float {acc['float']:.4f}, fake-quant "
                            f"{acc['fake_quant']:.4f}, golden {report[f'{key}.golden_acc']:.4f},"
                            f" RTL {report[f'{key}.rtl_acc']:.4f}, RTL==golden "
                            f"{report[f'{key}.rtl_equals_golden']} "
                            f"({time.monotonic() - start:.1f} s)")
    finally:
        device.close()
    report["frontend.rtl_equals_golden"] = all(
        value for key, value in report.items() if key.endswith(".rtl_equals_golden"))
    return report
