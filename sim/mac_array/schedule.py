"""Turn an integer matmul layer into MAC-array stream beats, and results back into a matrix.

Shared by every tier of verification (Amaranth simulator, cocotb, compiled harness) and by
``sparqforge check`` / ``bench``, so all of them exercise the array the same way: output
tiles ordered column tile outer, row tile inner; one ``cfg`` beat per output channel.
"""

__all__ = ["Schedule", "requant_cfg", "tile_schedule", "dense_schedule", "sparse_schedule",
           "sparse_dense_schedule", "chain", "random_nm_weights", "random_layer",
           "corner_layers"]

from dataclasses import dataclass, field

import numpy as np

from ...sw import golden


@dataclass
class Schedule:
    """Beats for every input stream of a block and how to read its output back.

    ``inputs`` maps stream names to ``{leaf field: array (beats, *shape)}``; ``phases`` orders
    them (configuration first). ``assemble`` turns the output stream's unpacked fields into
    the result matrix.
    """
    inputs: dict
    phases: dict
    out_port: str
    out_beats: int
    assemble: object
    counts: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, fields in self.inputs.items():
            self.counts[name] = len(next(iter(fields.values()))) if fields else 0


def requant_cfg(lanes, *, bias, multiplier, shift, zero_point, relu):
    """``cfg`` beats writing one parameter set per output channel (channel ``n`` goes to lane
    ``n % lanes``, group ``n // lanes``)."""
    n = len(bias)
    channels = np.arange(n)
    return {
        "lane": channels % lanes, "group": channels // lanes,
        "param.bias": np.asarray(bias), "param.multiplier": np.asarray(multiplier),
        "param.shift": np.asarray(shift), "param.zero_point": np.asarray(zero_point),
        "param.relu": np.asarray(relu).astype(np.int64),
    }


def _pad(x, rows, cols):
    out = np.zeros((rows, cols), dtype=np.int64)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def tile_schedule(rows, cols, m_dim, n_dim, a_steps, w_steps, requant, *, tag_offset=0):
    """Schedule for any MAC array: output tiles column-tile outer, row-tile inner.

    ``a_steps`` maps activation fields to arrays ``[m_tiles, steps, rows, ...]`` and
    ``w_steps`` weight fields to ``[n_tiles, steps, cols, ...]`` (or ``[n_tiles, steps]``
    for per-beat fields); ``tag`` and ``last`` are added here. ``requant`` is a dict of
    per-channel parameters or ``None`` for an array without requantizer. ``tag_offset``
    shifts the parameter groups the layer uses (to hold several layers' parameters).
    """
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    steps = next(iter(a_steps.values())).shape[1]
    beats = n_tiles * m_tiles * steps

    def spread(x, outer_is_n):
        x = np.asarray(x)
        x = x[:, None] if outer_is_n else x[None]
        return np.broadcast_to(x, (n_tiles, m_tiles, *x.shape[2:])).reshape(beats,
                                                                           *x.shape[3:])
    inputs = {
        "a": {name: spread(v, False) for name, v in a_steps.items()},
        "w": {name: spread(v, True) for name, v in w_steps.items()},
    }
    tags = tag_offset + np.arange(n_tiles)
    inputs["w"]["tag"] = spread(np.broadcast_to(tags[:, None], (n_tiles, steps)), True)
    inputs["w"]["last"] = spread(np.broadcast_to(np.arange(steps) == steps - 1,
                                                 (n_tiles, steps)).astype(np.int64), True)
    phases = {"a": 1, "w": 1}
    if requant is not None:
        params = {k: np.zeros(n_tiles * cols, dtype=np.int64) for k in requant}
        for k, v in requant.items():
            params[k][:n_dim] = np.broadcast_to(v, (n_dim,))
        inputs["cfg"] = requant_cfg(cols, **params)
        inputs["cfg"]["group"] = inputs["cfg"]["group"] + tag_offset
        phases["cfg"] = 0

    def assemble(fields):
        data = fields["data"].reshape(n_tiles, m_tiles, rows, cols)
        return data.transpose(1, 2, 0, 3).reshape(m_tiles * rows, n_tiles * cols)[:m_dim, :n_dim]

    return Schedule(inputs, phases, "o", n_tiles * m_tiles * rows, assemble)


def dense_schedule(rows, cols, a, w, requant=None, *, tag_offset=0):
    """Schedule ``a [M, K] @ w [K, N]`` on a ``rows`` x ``cols`` dense array, one
    reduction step per beat."""
    (m_dim, k_dim), n_dim = a.shape, w.shape[1]
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    a_steps = _pad(a, m_tiles * rows, k_dim).reshape(m_tiles, rows, k_dim).transpose(0, 2, 1)
    w_steps = _pad(w, k_dim, n_tiles * cols).reshape(k_dim, n_tiles, cols).transpose(1, 0, 2)
    return tile_schedule(rows, cols, m_dim, n_dim, {"value": a_steps}, {"data": w_steps},
                         requant, tag_offset=tag_offset)


def sparse_schedule(rows, cols, n, m, a, values, indices, requant=None, *, tag_offset=0):
    """Schedule ``a [M, K]`` times compressed N:M weights (``values`` / ``indices``
    ``[out, groups * n]``, see ``sparqforge.sw.nm_format``) on a sparse array in sparse
    mode, one group of ``m`` reduction steps per beat."""
    m_dim, n_dim = a.shape[0], values.shape[0]
    groups = values.shape[1] // n
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    a_pad = _pad(a, m_tiles * rows, groups * m)
    a_steps = a_pad.reshape(m_tiles, rows, groups, m).transpose(0, 2, 1, 3)

    def by_column(x):
        return _pad(x, n_tiles * cols, groups * n).reshape(n_tiles, cols, groups, n) \
            .transpose(0, 2, 1, 3)
    w_steps = {"data.value": by_column(values), "data.index": by_column(indices),
               "dense": np.zeros((n_tiles, groups), dtype=np.int64)}
    return tile_schedule(rows, cols, m_dim, n_dim, {"value": a_steps}, w_steps, requant,
                         tag_offset=tag_offset)


def sparse_dense_schedule(rows, cols, n, m, a, w, requant=None, *, filler=None,
                          tag_offset=0):
    """Schedule a dense layer ``a [M, K] @ w [K, N]`` on a sparse array in dense mode,
    ``n`` reduction steps per beat. Lanes the mode ignores (activation lanes ``n .. m-1``,
    weight indices) carry random values from ``filler`` (a NumPy generator) when given, so
    a test proves they are ignored."""
    (m_dim, k_dim), n_dim = a.shape, w.shape[1]
    steps = -(-k_dim // n)
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    a_pad = _pad(a, m_tiles * rows, steps * n).reshape(m_tiles, rows, steps, n)
    a_steps = np.zeros((m_tiles, steps, rows, m), dtype=np.int64)
    a_steps[..., :n] = a_pad.transpose(0, 2, 1, 3)
    w_values = _pad(w, steps * n, n_tiles * cols).reshape(steps, n, n_tiles, cols) \
        .transpose(2, 0, 3, 1)
    index = np.zeros_like(w_values)
    if filler is not None:
        a_steps[..., n:] = filler.integers(-4, 4, a_steps[..., n:].shape)
        index = filler.integers(0, m, index.shape)
    w_steps = {"data.value": w_values, "data.index": index,
               "dense": np.ones((n_tiles, steps), dtype=np.int64)}
    return tile_schedule(rows, cols, m_dim, n_dim, {"value": a_steps}, w_steps, requant,
                         tag_offset=tag_offset)


def chain(*schedules):
    """One schedule running several layers back to back on one instance (their parameter
    groups must not overlap: use ``tag_offset``); ``assemble`` returns a list of results."""
    inputs, phases = {}, {}
    for schedule in schedules:
        phases.update(schedule.phases)
        for name, fields in schedule.inputs.items():
            merged = inputs.setdefault(name, {})
            for leaf, value in fields.items():
                merged[leaf] = (value if leaf not in merged
                                else np.concatenate([merged[leaf], value]))
    bounds = np.cumsum([0] + [s.out_beats for s in schedules])

    def assemble(fields):
        return [s.assemble({k: v[lo:hi] for k, v in fields.items()})
                for s, lo, hi in zip(schedules, bounds[:-1], bounds[1:])]
    return Schedule(inputs, phases, schedules[0].out_port, int(bounds[-1]), assemble)


def random_nm_weights(rng, *, k, n_out, n, m, w_bits, w_signed, zero_groups=0.15,
                      short_groups=0.15):
    """Random ``[k, n_out]`` weights, N:M sparse along ``k`` for every output channel, with
    some all-zero groups and some holding fewer than ``n`` nonzeros."""
    lo, hi = golden.operand_range(w_bits, w_signed)
    groups = -(-k // m)
    w = rng.integers(lo, hi + 1, (n_out, groups, m))
    w[w == 0] = hi
    keep = np.argsort(rng.random((n_out, groups, m)), axis=2)[:, :, :n]
    kept = np.zeros((n_out, groups, m), dtype=bool)
    np.put_along_axis(kept, keep, True, axis=2)
    count = np.where(rng.random((n_out, groups)) < short_groups,
                     rng.integers(0, n + 1, (n_out, groups)), n)
    count = np.where(rng.random((n_out, groups)) < zero_groups, 0, count)
    rank = np.cumsum(kept, axis=2)
    kept &= rank <= count[:, :, None]
    w = np.where(kept, w, 0).reshape(n_out, groups * m)[:, :k]
    return w.T.copy()


def random_layer(rng, *, m, k, n, a_bits, a_signed, w_bits, w_signed, out_bits, out_signed,
                 a=None, w=None, ties=False):
    """A random integer layer: operands over their full range and per-channel requantization
    parameters that cover saturation, left shifts, ReLU and (with ``ties``) rounding ties."""
    a_lo, a_hi = golden.operand_range(a_bits, a_signed)
    w_lo, w_hi = golden.operand_range(w_bits, w_signed)
    a = rng.integers(a_lo, a_hi + 1, (m, k)) if a is None else np.asarray(a)
    w = rng.integers(w_lo, w_hi + 1, (k, n)) if w is None else np.asarray(w)
    p_lo, p_hi = golden.product_range(a_bits, a_signed, w_bits, w_signed)
    spread = max(1, (p_hi - p_lo) * int(np.sqrt(k)))
    q_lo, q_hi = golden.operand_range(out_bits, out_signed)
    if ties:
        multiplier = np.full(n, 1 << 30, dtype=np.int64)
        shift = -rng.integers(0, 4, n)
    else:
        real = np.exp(rng.uniform(np.log(1e-4), np.log(4.0), n)) * (q_hi - q_lo) / spread
        multiplier, shift = golden.quantize_multiplier(real)
    bias = rng.integers(-spread, spread + 1, n)
    # A few channels saturate the int32 bias add or the left shift.
    extreme = rng.random(n) < 0.1
    bias = np.where(extreme, rng.choice([golden.INT32_MIN, golden.INT32_MAX], n), bias)
    zero_point = rng.integers(q_lo, q_hi + 1, n)
    relu = rng.integers(0, 2, n)
    return a, w, {"bias": bias, "multiplier": multiplier, "shift": shift,
                  "zero_point": zero_point, "relu": relu}


def corner_layers(rng, *, max_depth, a_bits, a_signed, w_bits, w_signed, out_bits, out_signed,
                  m, n):
    """Named corner cases: most-negative products at full depth, extreme sums of both
    signs at full depth, all zeros and requantization rounding ties."""
    a_lo, a_hi = golden.operand_range(a_bits, a_signed)
    w_lo, w_hi = golden.operand_range(w_bits, w_signed)
    kw = dict(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, w_signed=w_signed,
              out_bits=out_bits, out_signed=out_signed, m=m, n=n)
    k = max_depth
    # Largest positive and most negative products, each held for the whole depth.
    a_max = np.where(np.arange(m)[:, None] % 2 == 0, a_lo, a_hi) * np.ones((m, k), np.int64)
    w_max = np.where(np.arange(n)[None, :] % 2 == 0, w_lo, w_hi) * np.ones((k, n), np.int64)
    cases = {
        "most_negative": random_layer(rng, k=k, a=np.full((m, k), a_lo),
                                      w=np.full((k, n), w_lo), **kw),
        "full_depth_extremes": random_layer(rng, k=k, a=a_max, w=w_max, **kw),
        "all_zero": random_layer(rng, k=k, a=np.zeros((m, k), np.int64),
                                 w=np.zeros((k, n), np.int64), **kw),
        "rounding_ties": random_layer(rng, k=min(k, 8), ties=True, **kw),
    }
    return cases
