"""Turn an integer matmul layer into MAC-array stream beats, and results back into a matrix.

Shared by every tier of verification (Amaranth simulator, cocotb, compiled harness) and by
``sparqforge check`` / ``bench``, so all of them exercise the array the same way: output
tiles ordered column tile outer, row tile inner; one ``cfg`` beat per output channel.
"""

__all__ = ["Schedule", "requant_cfg", "dense_schedule", "random_layer", "corner_layers"]

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


def dense_schedule(rows, cols, a, w, requant=None):
    """Schedule ``a [M, K] @ w [K, N]`` on a ``rows`` x ``cols`` dense array.

    ``requant`` is a dict of per-channel parameters (``bias``, ``multiplier``, ``shift``,
    ``zero_point``, ``relu``), or ``None`` for an array without requantizer.
    """
    m_dim, k_dim = a.shape
    n_dim = w.shape[1]
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    a_pad = _pad(a, m_tiles * rows, k_dim)
    w_pad = _pad(w, k_dim, n_tiles * cols)
    # Beat t of tile (nt, mt) is reduction step k = t; tiles are nt-major.
    a_beats = a_pad.reshape(m_tiles, rows, k_dim).transpose(0, 2, 1)          # mt, k, r
    a_beats = np.broadcast_to(a_beats, (n_tiles, m_tiles, k_dim, rows))
    w_beats = w_pad.reshape(k_dim, n_tiles, cols).transpose(1, 0, 2)          # nt, k, c
    w_beats = np.broadcast_to(w_beats[:, None], (n_tiles, m_tiles, k_dim, cols))
    beats = n_tiles * m_tiles * k_dim
    tags = np.broadcast_to(np.arange(n_tiles)[:, None, None], (n_tiles, m_tiles, k_dim))
    lasts = np.broadcast_to(np.arange(k_dim) == k_dim - 1, (n_tiles, m_tiles, k_dim))
    inputs = {
        "a": {"value": a_beats.reshape(beats, rows)},
        "w": {"data": w_beats.reshape(beats, cols), "tag": tags.reshape(beats),
              "last": lasts.reshape(beats).astype(np.int64)},
    }
    phases = {"a": 1, "w": 1}
    if requant is not None:
        params = {k: np.zeros(n_tiles * cols, dtype=np.int64) for k in requant}
        for k, v in requant.items():
            params[k][:n_dim] = np.broadcast_to(v, (n_dim,))
        inputs["cfg"] = requant_cfg(cols, **params)
        phases["cfg"] = 0

    def assemble(fields):
        data = fields["data"].reshape(n_tiles, m_tiles, rows, cols)
        return data.transpose(1, 2, 0, 3).reshape(m_tiles * rows, n_tiles * cols)[:m_dim, :n_dim]

    return Schedule(inputs, phases, "o", n_tiles * m_tiles * rows, assemble)


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
