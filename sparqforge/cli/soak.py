"""``sparqforge bench soak``: never a silent wrong answer, measured (``soak.*``, ``faults.*``).

**Soak.** Random layers on a few accelerators (:data:`SOAK_CONFIGS`: the ``demo`` preset, an
odd 3x4 N:M array with tables and two-stage products, a dense 2x4 array; the small ones with
a small ``max_depth``, so that corner accumulators wrap) go as the same WRITE, RUN and READ
requests to the Verilated accelerator and to the golden device model. Random shapes within
the memories, modes (dense, N:M sparse, operand tables, thresholds, where the array has
them), bases and strides; fresh random activations or what earlier layers wrote; random
weights, requantization parameters, tables and thresholds, with corner words (all-ones
activations, most-negative weights, saturating biases). After every RUN the output region of
every bank is read back from both and compared byte for byte; at the end of each session the
whole activation memory too. A *vector* (``soak.vectors``) is one output row of one layer (a
RUN of ``m_tiles`` row tiles on ``rows`` rows gives ``m_tiles * rows``, each ``n_tiles *
cols`` channels). ``soak.mismatches`` counts vectors with any differing byte plus differing
words outside every vector (stray writes) and in the final compare; after a mismatch the
Verilated device gets the golden words back, so that one fault counts once.

What is stalled is the *link*: the harness runs with ``--stall P --seed S``
(``sim/harness/link_harness.cpp``), holding ``rx.valid`` low on a random fraction ``P`` of
the cycles in which request bytes wait and, independently, ``tx.ready`` low, so that the
receiver and the reply path (executor, reply queue, transmitter) are back-pressured. The
accelerator's internal streams (feeder -> core -> writeback) are not stalled from outside;
they stall where their FIFOs and the core's own handshakes make them. One session per
accelerator runs with ``--no-gating`` (every clock domain ticks every cycle).

**Faults.** Whole inferences of the digits MLP (briefly trained, exported ``uniform-w8a8``
and ``power-w4``) on the ``demo`` accelerator, golden and Verilated, through
:class:`~sparqforge.sw.runtime.link.FaultyTransport` (bytes dropped, flipped or duplicated
both ways) at :data:`FAULT_RATES`, and some with device restarts between requests
(:class:`~sparqforge.sw.runtime.link.RestartingTransport`) too. An *inference* is one attempt
to open a fresh client, load the bundle and infer a batch of images: ``clean`` (the output
equals the golden network's), ``clean_errors`` (:class:`~sparqforge.errors.LinkError` or
:class:`~sparqforge.errors.DeviceRestarted`) or ``silent_wrong`` (any other output); anything
else raised is one of ``other_errors`` (a bug; the first is reported).
"""

__all__ = ["SOAK_CONFIGS", "FAULT_RATES", "bench_soak", "run_soak", "run_faults"]

import time

import numpy as np

from ..config import PRESETS, AcceleratorConfig

#: The accelerators soaked, and the share of the vectors each gets.
SOAK_CONFIGS = {
    "demo": PRESETS["demo"],
    "sparse_tables_3x4": AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), tables=True,
                                           threshold_bits=3, act_depth=1024, w_depth=512,
                                           groups=8, max_depth=96, product_stages=2),
    "dense_2x4": AcceleratorConfig(rows=2, cols=4, act_depth=1024, w_depth=256, groups=4,
                                   max_depth=64),
    "a4w4_4x4": AcceleratorConfig(rows=4, cols=4, a_bits=4, w_bits=4, act_depth=1024,
                                  w_depth=256, groups=4, max_depth=64),
}
SOAK_SHARES = {"demo": 0.55, "sparse_tables_3x4": 0.15, "dense_2x4": 0.15, "a4w4_4x4": 0.15}

#: Per-byte fault probabilities of the fault-injection run.
FAULT_RATES = (1e-4, 1e-3, 3e-3, 1e-2)


# -- soak: random state and layers ---------------------------------------------------------
def _modes(config):
    """Every RUN mode the array supports."""
    from ..protocol import Mode

    tables = (0, Mode.THRESHOLD, Mode.ACT_TABLE, Mode.WEIGHT_TABLE,
              Mode.ACT_TABLE | Mode.WEIGHT_TABLE, Mode.THRESHOLD | Mode.ACT_TABLE
              | Mode.WEIGHT_TABLE) if config.tables else (0,)
    return [int(s | t) for s in ((0, Mode.SPARSE) if config.sparse else (0,)) for t in tables]


def _activations(rng, count, cols):
    """Random activation words with some all-ones and all-zero words (the corners)."""
    words = rng.integers(0, 256, (count, cols))
    corner = rng.random(count)
    words[corner < 0.05] = 0xFF
    words[(corner >= 0.05) & (corner < 0.07)] = 0
    return words.astype(np.uint8)


def _weights(rng, config, beats):
    """Random weight words: codes over the whole signed range, some beats all most-negative
    (against all-ones activations: the largest products); N:M indices valid, ascending."""
    from ..sw.runtime import layouts

    lo, hi = -(1 << (config.w_bits - 1)), (1 << (config.w_bits - 1)) - 1
    codes = rng.integers(lo, hi + 1, (beats, config.cols, config.kept))
    codes[rng.random(beats) < 0.05] = lo
    if config.sparse:
        order = np.argsort(rng.random((beats, config.cols, config.m)), axis=-1)
        indices = np.sort(order[..., :config.n], axis=-1)
    else:
        indices = np.zeros_like(codes)
    return layouts.pack_weight_words(codes, indices, config)


def _spread(config, k_eff):
    """About the standard deviation of a ``k_eff``-deep accumulator of random operands."""
    return 1.1e4 * np.sqrt(k_eff) * (1 << config.a_bits) * (1 << config.w_bits) / 65536


def _requant(rng, config, k_eff, count):
    """``count`` requantization records scaled so that ``k_eff``-deep accumulators of random
    operands spread over the output range (and some saturate, some have extreme biases)."""
    from ..sw import golden
    from ..sw.runtime import layouts

    spread = _spread(config, k_eff)
    scale = 64.0 / spread * 2.0 ** rng.uniform(-3, 3, count)
    multiplier, shift = golden.quantize_multiplier(scale)
    bias = rng.integers(-4, 5, count) * int(spread)
    bias[rng.random(count) < 0.03] = -(1 << 31)
    bias[rng.random(count) < 0.03] = (1 << 31) - 1
    return layouts.pack_requant(bias, multiplier, shift, rng.integers(0, 256, count),
                                rng.integers(0, 2, count))


def _thresholds(rng, config, k_eff, count):
    """``count`` channels of ascending thresholds around the accumulators' spread."""
    t = np.sort(rng.normal(0, _spread(config, k_eff), (count, config.thresholds)), axis=-1)
    limit = (1 << 31) - 1
    return np.clip(np.round(t), -limit, limit).astype("<i4")


def _tables(rng, config):
    """Requests that fill the operand tables with random values (two lanes their own)."""
    from ..protocol import WEIGHT_TABLE_ALL_BIT, Space

    lanes = rng.choice(config.cols, size=min(2, config.cols), replace=False).tolist()
    return [(space, addr, rng.integers(0, 256, (256, 1))) for space, addr in
            [(Space.ACT_TABLE, 0), (Space.WEIGHT_TABLE, 1 << WEIGHT_TABLE_ALL_BIT)]
            + [(Space.WEIGHT_TABLE, lane << 8) for lane in lanes]] if config.tables else []


def _initial_state(rng, config):
    """Requests that fill every memory and table with random words."""
    from ..protocol import Space

    return ([(Space.ACT, 0, _activations(rng, config.rows * config.act_depth, config.cols)),
             (Space.WEIGHT, 0, _weights(rng, config, config.w_depth))]
            + [(Space.REQUANT, group << config.lane_bits, _requant(rng, config, 64, config.cols))
               for group in range(config.groups)] + _tables(rng, config))


def _layer(rng, config, src, dst, deep=False):
    """A random RUN descriptor reading the half of the banks at word ``src`` and writing the
    half at ``dst``; mostly many row tiles, so that the read-back is amortised; ``deep``: the
    longest reduction (128 beats, where the weight memory allows)."""
    from ..protocol import Mode, RunDescriptor

    half = config.act_depth // 2
    mode = int(rng.choice(_modes(config)))
    step = config.m if mode & Mode.SPARSE else (config.n if config.sparse else 1)
    # One channel tile mostly: a vector then costs the fewest bytes to read back.
    n_tiles = 1 if rng.random() < 0.6 else int(rng.integers(1, min(4, config.groups) + 1))
    k_max = min(128 if deep else 64, config.w_depth // n_tiles)
    k_steps = k_max if deep else max(1, min(int(np.exp(rng.uniform(0, np.log(k_max + 1)))),
                                            k_max))
    k_words = -(-k_steps * step // config.cols)
    a_base, out_base = int(rng.integers(0, 8)), int(rng.integers(0, 8))
    a_stride = int(rng.choice([1, 1, 0, 2, k_words]))
    out_stride = n_tiles + int(rng.choice([0, 0, 0, 1, 3]))
    m_max = (half - out_base - n_tiles) // out_stride + 1
    if a_stride:
        m_max = min(m_max, (half - a_base - k_words) // a_stride + 1)
    m_tiles = int(rng.integers(max(1, m_max // 2), m_max + 1) if rng.random() < 0.85
                  else rng.integers(1, min(4, m_max) + 1))
    return RunDescriptor(
        m_tiles=m_tiles, n_tiles=n_tiles, k_steps=k_steps, a_base=src + a_base,
        a_stride=a_stride, step=step, mode=mode,
        w_base=int(rng.integers(0, config.w_depth - n_tiles * k_steps + 1)),
        out_base=dst + out_base, out_stride=out_stride,
        group_base=int(rng.integers(0, config.groups - n_tiles + 1)))


def _corner(config, d):
    """Requests that give the layer the largest products: all-ones activations against
    most-negative weights. Deep enough, they wrap a small ``max_depth``'s accumulators; returns
    the requests and whether they do (without tables)."""
    from ..protocol import Mode, Space
    from ..sw.runtime import layouts

    words = (d.m_tiles - 1) * d.a_stride + -(-d.k_steps * d.step // config.cols)
    ones = np.full((words, config.cols), 0xFF, np.uint8)
    codes = np.full((d.n_tiles * d.k_steps, config.cols, config.kept), -(1 << config.w_bits - 1))
    weights = layouts.pack_weight_words(codes, np.broadcast_to(np.arange(config.kept),
                                                               codes.shape), config)
    writes = [(Space.ACT, (bank << config.act_depth_bits) | d.a_base, ones)
              for bank in range(config.rows)] + [(Space.WEIGHT, d.w_base, weights)]
    largest = d.k_steps * config.kept * ((1 << config.a_bits) - 1) << (config.w_bits - 1)
    tables = d.mode & (Mode.ACT_TABLE | Mode.WEIGHT_TABLE)
    return writes, not tables and largest > (1 << config.acc_bits - 1) - 1


def _parameters(rng, config, d):
    """Requests that write the requantization records (and thresholds) of the layer's
    groups, scaled to its depth."""
    from ..protocol import Mode, Space

    k_eff, writes = d.k_steps * config.kept, []
    for group in range(d.group_base, d.group_base + d.n_tiles):
        writes.append((Space.REQUANT, group << config.lane_bits,
                       _requant(rng, config, k_eff, config.cols)))
        if d.mode & Mode.THRESHOLD:
            t = _thresholds(rng, config, k_eff, config.cols).view(np.uint8)
            writes += [(Space.THRESHOLD, ((group << config.lane_bits) | lane) << 8,
                        t[lane].reshape(-1, 4)) for lane in range(config.cols)]
    return writes


def _send(devices, writes):
    for space, addr, words in writes:
        for device in devices:
            device.write(space, addr, words)


def _read_banks(device, config, first, count):
    """Words ``first .. first + count - 1`` of every bank, as ``[rows, count, cols]``."""
    return np.stack([device.read_act((bank << config.act_depth_bits) | first, count)
                     for bank in range(config.rows)])


def _compare(config, d, got, want, tally):
    """Count the layer's vectors and the mismatching ones (plus stray words)."""
    rows = config.rows
    m = np.arange(d.m_tiles * rows)
    span_index = (m[:, None] // rows) * d.out_stride + np.arange(d.n_tiles)[None]
    bad = np.any(got != want, axis=-1)                                  # [rows, span]
    written = np.zeros_like(bad)
    written[(m % rows)[:, None], span_index] = True
    tally["vectors"] += len(m)
    tally["mismatches"] += int(np.any(bad[(m % rows)[:, None], span_index], axis=1).sum())
    tally["mismatches"] += int((bad & ~written).sum())
    out = want[written]
    tally["words_compared"] += int(written.sum())
    tally["bytes"] += out.size
    tally["mid_range"] += int(((out > 0) & (out < 255)).sum())
    return bool(bad.any())


def _session(executable, config, rng, vectors, tally, *, args, tamper, progress):
    """One harness process (stall and gating ``args``) until ``vectors`` more vectors."""
    from ..protocol import Space
    from ..sw.runtime.device_model import DeviceModel
    from ..sw.runtime.link import Device, LoopbackTransport, PipeTransport

    transport = PipeTransport(executable, args)
    nonces = iter(rng.integers(1, 1 << 32, 8).tolist())
    rtl, gold = (Device(transport, budget_cycles=10 ** 7, nonces=nonces),
                 Device(LoopbackTransport(DeviceModel(config))))
    half = config.act_depth // 2
    target = tally["vectors"] + vectors
    try:
        _send((rtl, gold), _initial_state(rng, config))
        src = 0
        while tally["vectors"] < target:
            # Fresh activations in a quarter of the source half (the rest holds what earlier
            # layers wrote), new tables now and then.
            writes = _tables(rng, config) if rng.random() < 0.2 else []
            if rng.random() < 0.5:
                first = src + int(rng.integers(0, 4)) * (half // 4)
                writes += [(Space.ACT, (bank << config.act_depth_bits) | first,
                            _activations(rng, half // 4, config.cols))
                           for bank in range(config.rows)]
            _send((rtl, gold), writes)
            for _ in range(int(rng.integers(2, 7))):
                dst, deep = half - src, rng.random() < 0.06
                d = _layer(rng, config, src, dst, deep)
                _send((rtl, gold), _parameters(rng, config, d))
                if deep:
                    writes, wraps = _corner(config, d)
                    _send((rtl, gold), writes)
                    tally["corner_layers"] += 1
                    tally["wrapping_layers"] += wraps
                budget = 4 * d.m_tiles * d.n_tiles * d.k_steps + 10 ** 5
                tally["device_cycles"] += rtl.run(d, cycles=budget)
                gold.run(d)
                span = (d.m_tiles - 1) * d.out_stride + d.n_tiles
                got = _read_banks(rtl, config, d.out_base, span)
                want = _read_banks(gold, config, d.out_base, span)
                seen = want if tamper is None else tamper(tally["layers"], want.copy())
                if _compare(config, d, got, seen, tally):
                    for bank in range(config.rows):    # resynchronise: one fault, one count
                        rtl.write(Space.ACT, (bank << config.act_depth_bits) | d.out_base,
                                  want[bank])
                tally["layers"] += 1
                progress(tally["vectors"])
                if rng.random() < 0.6:
                    src = dst                  # the next layer reads this one's output
        every = config.rows * config.act_depth
        got, want = rtl.read_act(0, every), gold.read_act(0, every)
        tally["mismatches"] += int(np.any(got != want, axis=-1).sum())
    finally:
        tally["simulated_cycles"] += transport.cycles
        tally["harness_seconds"] += transport.loop_seconds
        transport.close()


def run_soak(vectors=1_000_000, *, configs=None, seed=0, tamper=None, progress=None,
             log=None):
    """Soak the Verilated accelerator against the golden device model (see the module).

    Parameters
    ----------
    vectors : int
        Output rows to compare at least (shared by the configurations per
        :data:`SOAK_SHARES`, equally among other configurations; a session stops after the
        layer that reaches its share).
    configs : dict, optional
        Name to :class:`~sparqforge.config.AcceleratorConfig` (default
        :data:`SOAK_CONFIGS`, shares equal when not all named there).
    tamper : callable, optional
        ``tamper(layer_index, golden_words) -> words`` changes what the golden side is
        compared as, to show that the comparison catches a wrong result.
    progress : callable, optional
        ``progress(done, total)`` in vectors.
    """
    from ..hw.accelerator import Accelerator
    from ..sim.link_model import LinkModel

    configs = SOAK_CONFIGS if configs is None else configs
    shares = {name: SOAK_SHARES.get(name, 1.0) if set(configs) <= set(SOAK_SHARES) else 1.0
              for name in configs}
    rng = np.random.default_rng(seed)
    tally = dict.fromkeys(("vectors", "mismatches", "layers", "corner_layers",
                           "wrapping_layers", "words_compared", "device_cycles",
                           "simulated_cycles", "harness_seconds", "mid_range", "bytes"), 0)
    start = time.monotonic()
    sessions = ungated = 0
    stalls, shown = [], [0]

    def report(done):
        done = min(done, vectors)
        if progress is not None and done > shown[0]:
            shown[0] = done
            progress(done, vectors)

    executables = {}
    for name, config in configs.items():   # all builds first: the progress bar then runs
        if log is not None:
            log(f"soak: {name} ({config.describe()}) in Verilator...")
        executables[name] = LinkModel(Accelerator(config, gated=True)).build()
    build_seconds = time.monotonic() - start
    for name, config in configs.items():
        quota = int(np.ceil(vectors * shares[name] / sum(shares.values())))
        # Light and heavy link stalls, and a shorter session without clock gating (which
        # simulates about five times slower).
        plans = [(float(rng.uniform(0.02, 0.2)), True, 0.45),
                 (float(rng.uniform(0.3, 0.6)), True, 0.45),
                 (float(rng.uniform(0.1, 0.5)), False, 0.1)]
        for stall, gating, fraction in plans:
            args = ["--stall", f"{stall:.3f}", "--seed", str(int(rng.integers(1, 1 << 31)))]
            args += [] if gating else ["--no-gating"]
            ungated += not gating
            stalls.append(stall)
            share = max(1, int(np.ceil(quota * fraction)))
            _session(executables[name], config, rng, share, tally, args=args, tamper=tamper,
                     progress=report)
            sessions += 1
    seconds = time.monotonic() - start - build_seconds
    report(vectors)
    mid_range, compared = tally.pop("mid_range"), tally.pop("bytes")
    return {**{f"soak.{key}": value for key, value in tally.items()},
            "soak.mid_range_fraction": mid_range / max(compared, 1),
            "soak.configs": len(configs), "soak.sessions": sessions,
            "soak.sessions_ungated": ungated, "soak.stall_min": min(stalls),
            "soak.stall_max": max(stalls), "soak.build_seconds": build_seconds,
            "soak.seconds": seconds, "soak.vectors_per_s": tally["vectors"] / seconds}


# -- faults: whole inferences over a damaged link ------------------------------------------
def _fault_bundles(epochs, seed):
    """The digits MLP, briefly trained, exported ``uniform-w8a8`` and ``power-w4``."""
    import torch

    from ..sw import digits

    torch.set_num_threads(1)
    data = digits.load_digits(seed=seed)
    model = digits.train(digits.make_model("mlp", seed=seed), data[0], data[1],
                         epochs=epochs, seed=seed)
    bundles = {scheme: digits.quantize_and_export("mlp", model, data, scheme, seed=seed)[0]
               for scheme in ("uniform-w8a8", "power-w4")}
    return bundles, data[2].numpy()


def _exchanges(config, bundle, codes):
    """Requests a clean load and inference of ``codes`` takes (on the golden device)."""
    from ..sw.runtime.device_model import DeviceModel
    from ..sw.runtime.link import Device, LoopbackTransport, RestartingTransport
    from ..sw.runtime.runner import Runner

    counter = RestartingTransport(LoopbackTransport(DeviceModel(config)), at=())
    runner = Runner(bundle, Device(counter))
    runner.load()
    runner.infer(codes)
    return counter.exchanges


def _inference(transport, bundle, codes, want, nonces):
    """One attempt: a fresh client opens the device, loads the bundle and infers ``codes``.
    Returns the outcome and the client's retransmissions and recovered restarts."""
    from ..errors import DeviceRestarted, LinkError
    from ..sw.runtime.link import Device
    from ..sw.runtime.runner import Runner

    device = Device(transport, nonces=nonces)
    runner = None
    try:
        runner = Runner(bundle, device)
        runner.load()
        got = runner.infer(codes)
    except (LinkError, DeviceRestarted):
        outcome = "clean_errors"
    except Exception as exc:           # neither a clean error nor an answer: a bug
        outcome = f"other_errors: {type(exc).__name__}: {exc}"
    else:
        outcome = "clean" if np.array_equal(got, want) else "silent_wrong"
    return outcome, device.retransmissions, runner.restarts if runner is not None else 0


def run_faults(*, backends=("golden", "verilator"), rates=FAULT_RATES, trials=3,
               restart_trials=3, images=16, epochs=4, seed=0, progress=None, log=None):
    """Inferences of the digits MLP through a faulty link (see the module): ``trials`` per
    backend (``golden``, ``verilator``: the ``demo`` accelerator), bundle and rate, and
    ``restart_trials`` per backend and bundle with one to three device restarts before
    random requests (and byte faults at the lowest rate); ``images`` per inference;
    ``progress(done, total)`` in inferences.
    """
    from collections import Counter

    from ..backends import open_device
    from ..sw import golden
    from ..sw.runtime.device_model import DeviceModel
    from ..sw.runtime.link import FaultyTransport, LoopbackTransport, RestartingTransport

    config = PRESETS["demo"]
    if log is not None:
        log(f"faults: training the digits MLP ({epochs} epochs) and exporting it...")
    bundles, x_test = _fault_bundles(epochs, seed)
    rng = np.random.default_rng(seed + 1)
    plan = [(backend, scheme, rate, False) for backend in backends for scheme in bundles
            for rate in rates for _ in range(trials)]
    plan += [(backend, scheme, min(rates), True) for backend in backends for scheme in bundles
             for _ in range(restart_trials)]
    outcomes = ("clean", "clean_errors", "silent_wrong", "other_errors")
    tally = Counter(dict.fromkeys(outcomes + ("injected_bytes", "injected_restarts",
                                              "retransmissions", "restarts_recovered"), 0))
    shared, first_other, start = {}, "", time.monotonic()
    try:
        for done, (backend, scheme, rate, restart) in enumerate(plan):
            bundle = bundles[scheme]
            codes = bundle.quantize_input(x_test[rng.choice(len(x_test), images, replace=False)])
            want = golden.run_network(bundle.layers, codes)
            if backend != "golden" and backend not in shared:
                shared[backend] = open_device(backend, config, quiet=log is None,
                                              log=log or print).transport
            base = shared.get(backend) or LoopbackTransport(DeviceModel(config))
            if restart:
                span = _exchanges(config, bundle, codes)
                at = rng.choice(np.arange(1, span), int(rng.integers(1, 4)), replace=False)
                base = RestartingTransport(base, at=sorted(at.tolist()))
            faulty = FaultyTransport(base, rate=rate, seed=int(rng.integers(1 << 31)))
            nonces = iter(rng.integers(1, 1 << 32, 16).tolist())
            outcome, resent, recovered = _inference(faulty, bundle, codes, want, nonces)
            if outcome.startswith("other_errors"):
                first_other = first_other or outcome.split(": ", 1)[1]
                outcome = "other_errors"
            restarts = base.injected if restart else 0
            key = "restart" if restart else f"rate_{rate:.0e}"
            tally.update({name: name == outcome for name in outcomes})
            tally.update({f"{key}.{name}": name == outcome for name in outcomes})
            tally.update({f"{key}.injected": faulty.injected + restarts,
                          "injected_bytes": faulty.injected, "injected_restarts": restarts,
                          "retransmissions": resent, "restarts_recovered": recovered})
            if progress is not None:
                progress(done + 1, len(plan))
    finally:
        for transport in shared.values():
            transport.close()
    report = {f"faults.{key}": int(value) for key, value in tally.items()}
    report.update({"faults.inferences": len(plan), "faults.images_per_inference": images,
                   "faults.injected": report["faults.injected_bytes"]
                   + report["faults.injected_restarts"],
                   "faults.rates": ",".join(f"{rate:g}" for rate in rates),
                   "faults.backends": ",".join(backends),
                   "faults.seconds": time.monotonic() - start})
    if first_other:
        report["faults.first_other_error"] = first_other
    return report


def bench_soak(quiet=False, vectors=1_000_000, trials=4, restart_trials=4):
    """Soak and fault-injection runs; one flat report (``soak.*``, ``faults.*``)."""
    from .outputs import progress_bar
    from .bench import _log

    log = (lambda message: _log(quiet, message))
    report = run_soak(vectors, log=log, progress=None if quiet else progress_bar("soak"))
    report.update(run_faults(trials=trials, restart_trials=restart_trials, log=log,
                             progress=None if quiet else progress_bar("faults")))
    return report
