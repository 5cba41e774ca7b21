"""``sparqforge check``: a random layer through the generated array in Verilator, compared
element by element with the golden model."""

__all__ = ["check_array", "layer_for"]

import dataclasses
import sys
import time

import numpy as np

from .blocks import build_array
from ..errors import ConfigError


def _log(quiet, message):
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def layer_for(config, shape, rng):
    """Random operands and requantization parameters of ``shape`` for ``config``; N:M
    sparse weights when the array is sparse."""
    from ..sim.mac_array.schedule import random_layer, random_nm_weights

    m_dim, k_dim, n_dim = shape
    types = dict(a_bits=config.a_bits, a_signed=config.a_signed, w_bits=config.w_bits,
                 w_signed=config.w_signed,
                 out_bits=config.out_bits or config.a_bits,
                 out_signed=config.a_signed if config.out_signed is None else config.out_signed)
    w = None
    if config.sparsity is not None:
        n, m = config.sparsity
        w = random_nm_weights(rng, k=k_dim, n_out=n_dim, n=n, m=m, w_bits=config.w_bits,
                              w_signed=config.w_signed)
    return random_layer(rng, m=m_dim, k=k_dim, n=n_dim, w=w, **types)


def sized_for(config, shape):
    """``config`` with enough parameter groups for ``shape``'s output channels, after
    checking that the reduction depth fits."""
    m_dim, k_dim, n_dim = shape
    if k_dim > config.max_depth:
        raise ConfigError(f"Reduction depth K={k_dim} exceeds --max-depth {config.max_depth}; "
                          f"raise --max-depth to at least {k_dim}")
    groups = max(config.groups, -(-n_dim // config.cols))
    return dataclasses.replace(config, groups=groups)


def check_array(config, shape, *, seed=0, stall=0.3, quiet=False):
    """Generate, simulate and compare; returns the report dict of ``sparqforge check``.

    The layer runs twice: without stalls (its cycle count is reported) and with random
    valid/ready stalls of probability ``stall`` on every stream. Sparse arrays run the
    same N:M layer in sparse mode and in dense mode.
    """
    from ..sim.mac_array.schedule import dense_schedule, sparse_dense_schedule, sparse_schedule
    from ..sw import golden, nm_format

    config = sized_for(config, shape)
    array = build_array(config)
    rng = np.random.default_rng(seed)
    if config.dequant == "power":
        return _check_power(config, array, shape, rng, seed=seed, stall=stall, quiet=quiet)
    a, w, requant = layer_for(config, shape, rng)
    types = dict(out_bits=array.out_bits, out_signed=array.out_signed, acc_bits=array.acc_bits)
    want = golden.mac_array(a, w, **requant, **types)
    rows, cols = config.rows, config.cols
    if config.sparsity is None:
        modes = {"dense": dense_schedule(rows, cols, a, w, requant)}
    else:
        n, m = config.sparsity
        values, indices = nm_format.compress(w.T, n, m)
        sparse_want = golden.sparse_mac_array(a, values, indices, n=n, m=m, **requant, **types)
        if not np.array_equal(sparse_want, want):
            raise AssertionError("golden sparse and dense paths disagree")
        modes = {"sparse": sparse_schedule(rows, cols, n, m, a, values, indices, requant),
                 "dense_mode": sparse_dense_schedule(rows, cols, n, m, a, w, requant)}

    return _simulate(config, array, shape, modes, want, seed=seed, stall=stall, quiet=quiet)


def _check_power(config, array, shape, rng, *, seed, stall, quiet):
    """Random codes, tables and thresholds (some exactly on accumulators) through the
    power-exponent array."""
    from ..sim.power_mac_array.schedule import power_expected, power_schedule, random_power_layer

    m_dim, k_dim, n_dim = shape
    params = array.params | {"acc_bits": array.acc_bits}
    layer = random_power_layer(rng, params, m=m_dim, k=k_dim, n=n_dim)
    want = power_expected(params, *layer)
    names = ["dense"] if config.sparsity is None else ["sparse", "dense_mode"]
    modes = {mode: power_schedule(params, *layer, mode=mode) for mode in names}
    return _simulate(config, array, shape, modes, want, seed=seed, stall=stall, quiet=quiet)


def _simulate(config, array, shape, modes, want, *, seed, stall, quiet):
    """Run every mode's schedule without and with stalls; build the report."""
    from ..hw.emit import description, to_verilog
    from ..sim.check import compare
    from ..sim.harness import StreamHarness
    from ..sim.run import run_schedule

    name = config.name
    desc = description(array, name)
    harness = StreamHarness(to_verilog(array, name), desc)
    _log(quiet, f"building the Verilator model of {name} (cached after the first run)...")
    start = time.monotonic()
    harness.build()
    _log(quiet, f"built in {time.monotonic() - start:.1f} s; simulating...")

    macs = int(np.prod(shape))
    report = {"config": config.as_dict(), "shape": list(shape), "seed": seed,
              "acc_bits": array.acc_bits, "latency": array.latency}
    mismatches = 0
    for mode, schedule in modes.items():
        got, cycles = run_schedule(schedule, desc, harness=harness, stall=0.0, seed=seed)
        got_stalled, _ = run_schedule(schedule, desc, harness=harness, stall=stall,
                                      seed=seed + 1)
        bad = compare(want, got).count + compare(want, got_stalled).count
        mismatches += bad
        report[mode] = {"cycles": cycles, "mismatches": bad,
                        "macs_per_cycle": macs / cycles}
    rows, cols = config.rows, config.cols
    first = report[next(iter(modes))]
    report.update(bit_exact=mismatches == 0, mismatches=mismatches, cycles=first["cycles"],
                  macs_per_cycle=first["macs_per_cycle"],
                  utilization=first["macs_per_cycle"] / (rows * cols))
    if config.sparsity is not None:
        report["speedup"] = report["dense_mode"]["cycles"] / report["sparse"]["cycles"]
    return report
