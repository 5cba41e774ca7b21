"""``sparqforge bench``: measured performance, size and quality figures.

Every figure comes from running the thing it names in this process: Verilator runs of the
generated RTL, yosys synthesis, PyTorch training. Ratios are taken within one run.
"""

__all__ = ["bench_models", "bench_frontend", "GROUPS", "run_benchmarks", "bench_dense", "bench_sparse", "bench_soak"]

import sys

import numpy as np

from .blocks import ArrayConfig, build_array


def _log(quiet, message):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _harness_for(array, name):
    from ..hw.emit import description, to_verilog
    from ..sim.harness import StreamHarness

    desc = description(array, name)
    harness = StreamHarness(to_verilog(array, name), desc)
    harness.build()
    return desc, harness


def _timed_run(schedule, desc, harness):
    """Run without stalls; the time is the compiled simulation loop's own wall time."""
    from ..sim.run import run_schedule

    stats = {}
    got, cycles = run_schedule(schedule, desc, harness=harness, stall=0.0, stats=stats)
    return got, cycles, stats["sim_ns"] * 1e-9


def _dense_run(quiet, rows, cols, size, packed=False):
    """A ``size``^3 int8 matmul through a ``rows`` x ``cols`` dense array in Verilator:
    ``(bit_exact, cycles, seconds)``."""
    from ..sim.mac_array.schedule import dense_schedule, random_layer
    from ..sw import golden

    config = ArrayConfig(rows=rows, cols=cols, max_depth=size, groups=size // rows,
                         packed_products=packed)
    array = build_array(config)
    label = f"{rows}x{cols} int8{' packed' if packed else ''}"
    _log(quiet, f"dense: building the {label} array in Verilator...")
    desc, harness = _harness_for(array, "mac_array")
    rng = np.random.default_rng(0)
    types = dict(a_bits=8, a_signed=True, w_bits=8, w_signed=True, out_bits=8, out_signed=True)
    a, w, requant = random_layer(rng, m=size, k=size, n=size, **types)
    _log(quiet, f"dense: running a {size}x{size}x{size} matmul on the {label} array...")
    got, cycles, seconds = _timed_run(dense_schedule(rows, cols, a, w, requant), desc, harness)
    want = golden.mac_array(a, w, **requant, out_bits=8, out_signed=True)
    return bool(np.array_equal(got, want)), cycles, seconds


def bench_dense(quiet=False, size=256, synth=True):
    """A ``size``^3 int8 matmul through an 8x8 dense array and a 16x16 packed one in
    Verilator; with ``synth``, the multiplier blocks the packed arrays take on an ECP5."""
    from ..boards.synth import array_multiplier_blocks
    from ..config import AcceleratorConfig

    exact, cycles, seconds = _dense_run(quiet, 8, 8, size)
    macs_per_cycle = size ** 3 / cycles
    report = {
        "dense.bit_exact": exact,
        "dense.cycles": cycles,
        "dense.macs_per_cycle": macs_per_cycle,
        "dense.utilization": macs_per_cycle / 64,
        "sim.cycles_per_s": cycles / seconds,
    }
    exact, cycles, _ = _dense_run(quiet, 16, 16, size, packed=True)
    report.update({"dense.packed_16x16.bit_exact": exact,
                   "dense.packed_16x16.cycles": cycles,
                   "dense.packed_16x16.macs_per_cycle": size ** 3 / cycles,
                   "dense.packed_16x16.utilization": size ** 3 / cycles / 256})
    if synth:
        for label, rows, packed in (("", 8, True), ("_unpacked", 8, False),
                                    ("_16x16", 16, True)):
            _log(quiet, f"dense: yosys synth_ecp5 of the {rows}x{rows} int8 MAC array"
                        f"{' (packed)' if packed else ''}...")
            config = AcceleratorConfig(rows=rows, cols=rows, groups=32, packed_products=packed)
            blocks = array_multiplier_blocks(config, "ecp5")
            report[f"dense.macs_per_dsp{label}"] = blocks["macs_per_dsp"]
            report[f"dense.mult18x18d{label}"] = blocks["blocks"]
    return report


def bench_sparse(quiet=False, size=256, synth=True):
    """The same int8 matmul with N:M weights on 8x8 sparse arrays, dense mode vs sparse
    mode, plus yosys ``synth_xilinx`` resources of dense and sparse arrays."""
    from ..sim.mac_array.schedule import (random_layer, random_nm_weights,
                                          sparse_dense_schedule, sparse_schedule)
    from ..sw import golden, nm_format

    report = {}
    types = dict(a_bits=8, a_signed=True, w_bits=8, w_signed=True, out_bits=8, out_signed=True)
    for n, m in ((2, 4), (2, 8)):
        config = ArrayConfig(rows=8, cols=8, max_depth=size, groups=size // 8, sparsity=(n, m))
        array = build_array(config)
        _log(quiet, f"sparse: building the 8x8 int8 {n}:{m} array in Verilator...")
        desc, harness = _harness_for(array, "sparse_mac_array")
        rng = np.random.default_rng(n * 10 + m)
        w = random_nm_weights(rng, k=size, n_out=size, n=n, m=m, w_bits=8, w_signed=True)
        a, w, requant = random_layer(rng, m=size, k=size, n=size, w=w, **types)
        values, indices = nm_format.compress(w.T, n, m)
        want = golden.mac_array(a, w, **requant, out_bits=8, out_signed=True)
        _log(quiet, f"sparse: {size}^3 matmul in dense mode and in {n}:{m} mode...")
        got_d, cycles_d, _ = _timed_run(sparse_dense_schedule(8, 8, n, m, a, w, requant), desc,
                                        harness)
        got_s, cycles_s, _ = _timed_run(sparse_schedule(8, 8, n, m, a, values, indices,
                                                        requant), desc, harness)
        key = f"{n}_{m}"
        report[f"sparse.bit_exact_{key}"] = bool(np.array_equal(got_d, want)
                                                and np.array_equal(got_s, want))
        report[f"sparse.dense_mode_cycles_{key}"] = cycles_d
        report[f"sparse.sparse_mode_cycles_{key}"] = cycles_s
        report[f"sparse.speedup_{key}"] = cycles_d / cycles_s
    if synth:
        report.update(synth_arrays(quiet))
    return report


def _sparse_only(config):
    """The N:M array of ``config`` without its dense mode (the index multiplexers that force
    ``0..N-1``), built only to measure what the mode costs."""
    from ..hw.sparse_mac_array import SparseMacArray

    class SparseOnly(SparseMacArray):
        def _column_terms(self, m, w, col):
            return [(w.data[col][j].index, w.data[col][j].value) for j in range(self._n)]

    return build_array(config, sparse_class=SparseOnly)


def synth_arrays(quiet=False):
    """yosys ``synth_xilinx`` resources of 8x8 dense, 2:4 and 2:8 arrays at 4 and 8 bits,
    and what the 2:4 array's dense mode costs (``sparse.synth.mode_cost.*``: the 2:4 array
    minus the same array without the mode)."""
    from ..boards.synth import synth_xilinx

    report = {}
    for bits in (4, 8):
        for label, sparsity in (("dense", None), ("2_4", (2, 4)), ("2_8", (2, 8)),
                                ("2_4_sparse_only", (2, 4))):
            config = ArrayConfig(rows=8, cols=8, a_bits=bits, w_bits=bits, max_depth=256,
                                 groups=8, sparsity=sparsity)
            _log(quiet, f"sparse: yosys synth_xilinx of the 8x8 {label} array at {bits} bits...")
            array = (_sparse_only(config) if label.endswith("sparse_only")
                     else build_array(config))
            stats = synth_xilinx(array, "mac_array")
            for resource in ("lut", "ff", "carry4", "dsp48e1"):
                report[f"sparse.synth.{label}.w{bits}.{resource}"] = stats[resource]
        for resource in ("lut", "ff"):
            report[f"sparse.synth.mode_cost.w{bits}.{resource}"] = (
                report[f"sparse.synth.2_4.w{bits}.{resource}"]
                - report[f"sparse.synth.2_4_sparse_only.w{bits}.{resource}"])
    return report


def bench_power(quiet=False, synth=True):
    """Quantization quality (uniform vs power) and the hardware cost of the power units."""
    from ..sw.quality import power_metrics

    report = power_metrics(progress=None if quiet else (lambda msg: _log(False, msg)))
    if synth:
        report.update(synth_power_units(quiet))
    return report


def synth_power_units(quiet=False):
    """yosys ``synth_xilinx`` resources of the dequant and threshold units for 8 lanes at
    4- and 8-bit codes (weight tables: 8 channel groups; 24-bit accumulators)."""
    from ..boards.synth import synth_xilinx
    from ..hw.dequant_unit import DequantUnit
    from ..hw.threshold_unit import ThresholdUnit

    report = {}
    for bits in (4, 8):
        units = {
            "dequant": DequantUnit(lanes=8, code_bits=bits, out_bits=8, groups=8),
            "threshold": ThresholdUnit(lanes=8, acc_bits=24, code_bits=bits, out_bits=8,
                                       groups=8),
        }
        for label, unit in units.items():
            _log(quiet, f"power: yosys synth_xilinx of the {label} unit at {bits} bits...")
            stats = synth_xilinx(unit, label)
            for resource in ("lut", "ff", "lutram", "ramb18", "ramb36"):
                report[f"power.synth.{label}.w{bits}.{resource}"] = stats[resource]
    return report


def bench_runtime(quiet=False):
    """Whole networks on the Verilated 8x8 int8 accelerator (``int8`` preset): the digits
    MLP and CNN (uniform W8A8) over the test split, checked against the golden model.

    ``runtime.sim_cycles_per_s`` is simulated clock cycles per second of the compiled
    harness loop, ``runtime.wall_cycles_per_s`` the same over the whole wall time including
    the host runtime (compiling, im2col, packing, pipes).
    """
    import time as _time

    from ..backends import open_device
    from ..sw import golden
    from ..sw.digits import quantize_and_export, train_example
    from ..sw.runtime.runner import Runner

    report = {}
    device = open_device("verilator", "int8", quiet=quiet,
                         log=lambda m: _log(quiet, m))
    transport = device.transport
    total_cycles = total_loop = total_wall = 0.0
    try:
        for kind in ("mlp", "cnn"):
            model, data = train_example(kind)
            bundle, _ = quantize_and_export(kind, model, data, "uniform-w8a8")
            codes = bundle.quantize_input(data[2].numpy())
            reference = golden.run_network(bundle.layers, codes)
            runner = Runner(bundle, device)
            runner.load()
            cycles0, loop0 = transport.cycles, transport.loop_seconds
            _log(quiet, f"runtime: {kind} over {len(codes)} images in Verilator...")
            start = _time.monotonic()
            out = runner.infer(codes, batch=64)
            wall = _time.monotonic() - start
            cycles = transport.cycles - cycles0
            loop = transport.loop_seconds - loop0
            total_cycles += cycles
            total_loop += loop
            total_wall += wall
            report[f"runtime.{kind}.bit_exact"] = bool(np.array_equal(out, reference))
            report[f"runtime.{kind}.accuracy"] = float(
                (out.argmax(1) == data[3].numpy()).mean())
            report[f"runtime.{kind}.compute_cycles_per_inference"] = runner.cycles / len(codes)
            report[f"runtime.{kind}.simulated_cycles_per_inference"] = cycles / len(codes)
            report[f"runtime.{kind}.sim_cycles_per_s"] = cycles / loop
            report[f"runtime.{kind}.inferences_per_s_wall"] = len(codes) / wall
    finally:
        device.close()
    report["runtime.sim_cycles_per_s"] = total_cycles / total_loop
    report["runtime.wall_cycles_per_s"] = total_cycles / total_wall
    return report


def bench_soak(quiet=False):
    """At least 10^6 random layer vectors through the Verilated accelerator with random link
    stalls, each compared with the golden device model, and whole inferences over a faulty
    link (``soak.*``, ``faults.*``; see :mod:`sparqforge.cli.soak`)."""
    from .soak import bench_soak as run

    return run(quiet=quiet)


def bench_frontend(quiet=False):
    """The corpus of user-style models (:mod:`sparqforge.sw.corpus`) compiled from PyTorch,
    W8A8 and power W4, on the Verilated ``demo`` accelerator over each test split: float,
    fake-quant, golden and RTL accuracy, RTL == golden (``frontend.*``; see
    :mod:`sparqforge.cli.corpus_bench`)."""
    from .corpus_bench import bench_frontend as run

    return run(quiet=quiet)


def bench_models(quiet=False, **options):
    """The MLPerf Tiny reference models (ResNet-8, DS-CNN, MobileNetV1 0.25x, the FC
    autoencoder) through the frontend, W8A8, at batch 1 on the Verilated ``networks``
    accelerator (the ULX3S's 8x8 int8 array with memories for whole networks): MACs, device cycles, utilization, device MAC fraction, link and I/O bytes,
    latency, RTL == golden (``models.*``; see :mod:`sparqforge.cli.models_bench`)."""
    from .models_bench import bench_models as run

    return run(quiet=quiet, **options)


GROUPS = {"dense": bench_dense, "sparse": bench_sparse, "power": bench_power,
          "runtime": bench_runtime, "soak": bench_soak, "frontend": bench_frontend,
          "models": bench_models}


def run_benchmarks(group, quiet=False, **options):
    """Run one group (or ``all``); return one flat dict of measurements. ``options`` go to
    the group (``models``: ``models``, ``layers``)."""
    names = list(GROUPS) if group == "all" else [group]
    report = {}
    for name in names:
        report.update(GROUPS[name](quiet=quiet, **(options if name == group else {})))
    return report
