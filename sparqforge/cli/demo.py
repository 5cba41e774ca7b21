"""``sparqforge demo``: the main job on the built-in example.

Trains an MLP and a CNN on scikit-learn's digits, quantizes each three ways, exports the
bundles, generates the accelerator, runs the whole test split on the Verilated RTL and on
the golden model, and prints one table.
"""

__all__ = ["run_demo", "format_table"]

import math
import sys
import time

import numpy as np

from ..backends import open_device
from ..config import PRESETS
from ..errors import ConfigError
from .outputs import check_output_dir, save_bundle, write_files
from ..sw.schemes import SCHEMES


def _log(message, quiet):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run_demo(*, out_dir="build/demo", models=("mlp", "cnn"), schemes=tuple(SCHEMES),
             backend="verilator", clock_mhz=100.0, quiet=False):
    """Run the main job; return a list of result rows (dicts).

    Raises
    ------
    ConfigError
        Before any work, for an output directory that cannot be written, a clock that is not
        a positive number or an unknown backend.
    """
    if not (math.isfinite(clock_mhz) and clock_mhz > 0):
        raise ConfigError(f"--clock-mhz must be a positive finite number, not {clock_mhz:g}")
    out = check_output_dir(out_dir, "--out", "build/demo")
    config = PRESETS["demo"]
    # The device first: an unknown backend or a missing tool fails before anything is written
    # (and before the slow imports).
    device = open_device(backend, config, quiet=quiet, log=lambda m: _log(m, quiet))
    rows = []
    try:
        from ..hw.accelerator import Accelerator
        from ..hw.emit import to_verilog
        from ..sw import bundle as bundle_io
        from ..sw import digits, golden
        from ..sw.runtime.runner import Runner
        from .outputs import progress_bar

        verilog, = write_files(out, {"accelerator.v": to_verilog(Accelerator(config),
                                                                 "accelerator")}, "--out")
        _log(f"accelerator: {config.describe()} (Verilog in {verilog})", quiet)
        for kind in models:
            start = time.monotonic()
            model, data = digits.train_example(kind)
            float_acc = digits.evaluate(model, data[2], data[3])
            _log(f"{kind}: trained in {time.monotonic() - start:.1f} s, float test accuracy "
                 f"{100 * float_acc:.2f} %", quiet)
            labels = data[3].numpy()
            for scheme in schemes:
                start = time.monotonic()
                bundle, fake_acc = digits.quantize_and_export(kind, model, data, scheme)
                path = save_bundle(bundle, out / f"{kind}-{scheme}.npz", "--out")
                bundle = bundle_io.load(path)
                _log(f"{kind} {scheme}: exported {path} in {time.monotonic() - start:.1f} s",
                     quiet)
                codes = bundle.quantize_input(data[2].numpy())
                reference = golden.run_network(bundle.layers, codes)
                runner = Runner(bundle, device)
                runner.load()
                transport = device.transport
                cycles_before = transport.cycles or 0
                start = time.monotonic()
                bar = None if quiet else progress_bar(f"  {backend:9s}")
                result = runner.infer(codes, batch=64, progress=bar)
                seconds = time.monotonic() - start
                simulated = (transport.cycles or 0) - cycles_before
                count = len(codes)
                compute = runner.cycles / count if runner.cycles else None
                rows.append({
                    "model": kind, "quantization": scheme, "bundle": str(path),
                    "float_acc": float_acc, "fake_quant_acc": fake_acc,
                    "golden_acc": float((reference.argmax(1) == labels).mean()),
                    "rtl_acc": float((result.argmax(1) == labels).mean()),
                    "bit_exact": bool(np.array_equal(result, reference)),
                    "images": count,
                    "compute_cycles_per_inference": compute,
                    "simulated_cycles_per_inference": simulated / count if simulated else None,
                    "inferences_per_s": (clock_mhz * 1e6 / compute) if compute else None,
                    "sim_cycles_per_s": simulated / seconds if simulated else None,
                    "backend": backend, "clock_mhz": clock_mhz,
                })
    finally:
        device.close()
    return rows


def format_table(rows):
    """The demo's result table as text."""
    head = ["model", "quantization", "float", "golden", "RTL", "RTL==golden",
            "cycles/inf", "inf/s @ %g MHz" % rows[0]["clock_mhz"] if rows else "inf/s"]
    lines = []
    for r in rows:
        cycles = r["compute_cycles_per_inference"]
        rate = r["inferences_per_s"]
        lines.append([r["model"], r["quantization"], f"{100 * r['float_acc']:.2f} %",
                      f"{100 * r['golden_acc']:.2f} %", f"{100 * r['rtl_acc']:.2f} %",
                      "yes" if r["bit_exact"] else "NO",
                      f"{cycles:.0f}" if cycles else "-", f"{rate:,.0f}" if rate else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths))
            for line in [head] + lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
