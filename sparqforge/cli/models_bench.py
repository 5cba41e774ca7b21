"""``sparqforge bench models``: the MLPerf Tiny reference architectures
(:mod:`sparqforge.sw.mlperf_tiny`) through the frontend, W8A8, at batch 1 (MLPerf Tiny's
single-stream case) on the Verilated ``networks`` accelerator (the ULX3S's 8x8 int8 array with
memories for whole networks; ``--accel`` chooses another), checked against the golden model.

Per model ``M`` (keys ``models.M.*``): ``macs`` per inference; ``device_cycles`` per inference
(the cycles of the accelerator's layers, as RUN commands or from its program slots);
``utilization`` (the MACs the accelerator executed / (``device_cycles`` x its multipliers));
``device_mac_fraction`` (MACs the accelerator executed / all MACs); ``link_bytes`` per
inference, both directions, SLIP framing, headers and CRCs included, weights and stored
descriptors excluded (they are loaded once, before the inferences: one warm-up inference,
not counted, stores the lists of layers in the program slots); ``io_bytes`` (the input and
output tensors' bytes, no framing); ``run_commands`` and ``runs_commands``: RUN and RUNS
commands per inference; ``runs_overhead_cycles``: the cycles per inference RUNS commands
took beyond their layers' (fetching and checking each stored descriptor);
``latency_ms``: ``device_cycles`` plus ``runs_overhead_cycles`` at the ULX3S reference clock
(host work and link time not included: MLPerf Tiny times inference on the device after the
input is loaded); ``link_ms``: the link bytes at the ULX3S's UART rate (10 bits a byte);
``end_to_end_per_s``: inferences per second on a ULX3S when the link and the device take
turns (``1000 / (latency_ms + link_ms)``, host time not included); ``spilled_words``: image
words per inference the runtime read back and wrote again to make room in the activation
banks (part of ``link_bytes``); ``banded_blocks``: residual blocks per inference run in bands
of output rows because their three images do not fit the banks together (no link traffic);
``rtl_equals_golden`` (the warm-up inference's outputs
too). The weights and BatchNorm statistics are fixed-seed random values: accuracy is not
measured.
"""

__all__ = ["bench_models", "run_bundle", "compile_model"]

import sys
import time

import numpy as np



def _log(quiet, message):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _inputs(name, count, seed):
    from ..sw import mlperf_tiny

    rng = np.random.default_rng(seed)
    shape = mlperf_tiny.INPUT_SHAPES[name]
    if len(shape) == 3 and shape[0] == 3:
        return rng.random((count, *shape)).astype(np.float32)       # images in [0, 1)
    return rng.standard_normal((count, *shape)).astype(np.float32)  # MFCC, spectrogram


def compile_model(name, *, calib_items=64, seed=0):
    """The bundle of MLPerf Tiny model ``name``, W8A8, calibrated on random inputs."""
    import sparqforge
    from ..sw import mlperf_tiny

    calib = _inputs(name, calib_items, seed)
    return sparqforge.compile(mlperf_tiny.make(name, seed=seed), calib[:1],
                              quant="uniform-w8a8", calib=calib, name=name)


def run_bundle(bundle, codes, config, *, backend="verilator", batch=1, quiet=True, log=print,
               warm_up=False):
    """Load ``bundle`` on a ``backend`` device with accelerator ``config`` and run ``codes``
    at ``batch``: ``(outputs, runner, link bytes)``, the runner holding the device cycles and
    the per-layer report, the link bytes those of the inferences (both directions, framing
    included; loading the weights not counted). ``warm_up``: one inference of the first
    input runs before them and is not counted (it stores the RUN lists in a device with
    program slots, which is loading them as the weights are); its output is
    ``runner.warm_up_output``."""
    from ..backends import open_device
    from ..sw.runtime.link import CountingTransport, Device
    from ..sw.runtime.runner import Runner

    inner = open_device(backend, config, quiet=quiet, log=log)
    counter = CountingTransport(inner.transport)
    device = Device(counter)
    try:
        runner = Runner(bundle, device)
        runner.load()
        if warm_up:
            runner.warm_up_output = runner.infer(codes[:1])
            for name in ("cycles", "runs", "images", "spilled_words", "compactions",
                         "banded_blocks"):
                setattr(runner, name, 0)
            runner.layer_cycles = [0] * len(runner.layer_cycles)
            device.runs_commands = device.runs_overhead_cycles = device.run_commands = 0
        loaded = counter.sent + counter.received
        got = runner.infer(codes, batch=batch)

    finally:
        device.close()
    return got, runner, counter.sent + counter.received - loaded


def bench_models(quiet=False, *, models=None, images=4, backend="verilator",
                 config="networks", layers=False):
    """Run the benchmark; return one flat dict (``models.M.*``; with ``layers`` also
    ``models.M.layers``, the runner's per-layer report)."""
    from ..backends import resolve_config
    from ..boards.ulx3s import ULX3S
    from ..sw import golden, mlperf_tiny

    config = resolve_config(config)
    pes = config.rows * config.cols * config.kept
    # The clock and UART rate of the ULX3S reference system.
    clock_hz, baud = ULX3S.config.clk_freq, ULX3S.config.baud
    report = {}
    for name in models or mlperf_tiny.MODELS:
        start = time.monotonic()
        _log(quiet, f"models: {name}: compiling...")
        bundle = compile_model(name)
        x = _inputs(name, images, seed=100)
        codes = bundle.quantize_input(x)
        want = golden.run_network(bundle.layers, codes)
        _log(quiet, f"models: {name}: {images} inferences at batch 1 on {backend}...")
        got, runner, link = run_bundle(bundle, codes, config, backend=backend, quiet=quiet,
                                       log=lambda m: _log(quiet, m), warm_up=True)
        rows = runner.report()
        macs = sum(row["macs"] for row in rows)
        device_macs = sum(row["macs"] for row in rows if row["where"] == "device")
        cycles = runner.cycles / images
        overhead = runner.device.runs_overhead_cycles / images
        latency_ms = (cycles + overhead) / clock_hz * 1e3
        link /= images
        key = f"models.{name}"
        report.update({
            f"{key}.macs": macs,
            f"{key}.macs_reference": mlperf_tiny.mac_count(name),
            f"{key}.parameters": mlperf_tiny.parameter_count(mlperf_tiny.make(name)),
            f"{key}.device_cycles": cycles,
            f"{key}.utilization": device_macs / (cycles * pes) if cycles else 0.0,
            f"{key}.device_mac_fraction": device_macs / macs if macs else 0.0,
            f"{key}.host_layers": sum(1 for row in rows if row["where"] == "host"),
            f"{key}.link_bytes": link,
            f"{key}.io_bytes": int(np.prod(bundle.input["shape"])) + bundle.output["classes"],
            f"{key}.latency_ms": latency_ms,
            f"{key}.link_ms": link * 10 / baud * 1e3,
            f"{key}.end_to_end_per_s": 1e3 / (latency_ms + link * 10 / baud * 1e3),
            f"{key}.spilled_words": runner.spilled_words / images,
            f"{key}.banded_blocks": runner.banded_blocks / images,
            f"{key}.runs_commands": runner.device.runs_commands / images,
            f"{key}.run_commands": runner.device.run_commands / images,
            f"{key}.runs_overhead_cycles": overhead,
            f"{key}.rtl_equals_golden": bool(np.array_equal(got, want)
                                             and np.array_equal(runner.warm_up_output,
                                                                want[:1])),
            f"{key}.images": images,
            f"{key}.seconds": round(time.monotonic() - start, 1),
        })
        if layers:
            report[f"{key}.layers"] = rows
        _log(quiet, f"models: {name}: {cycles:,.0f} cycles/inference, "
                    f"{report[f'{key}.device_mac_fraction']:.3f} of the MACs on the device, "
                    f"{link:,.0f} link bytes, RTL==golden {report[f'{key}.rtl_equals_golden']}")
    return report
