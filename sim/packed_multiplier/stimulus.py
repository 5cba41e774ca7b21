"""Operand sets for ``hw.packed_multiplier.PackedMultiplier`` (every set, corners, random)
and the lane packing of its ``w`` and ``p`` ports, shared by the simulator tests and the
cocotb bench. ``params`` is the block's ``params`` dict."""

__all__ = ["every_set", "corner_sets", "random_sets", "operand_sets", "pack_lanes",
           "unpack_lanes"]

import numpy as np

from ...sw.golden import operand_range


def _grid(a_values, w_values, lanes):
    grids = np.meshgrid(a_values, *[w_values] * lanes, indexing="ij")
    return grids[0].ravel(), np.stack([g.ravel() for g in grids[1:]], axis=-1)


def _ranges(params):
    return (operand_range(params["a_bits"], params["a_signed"]),
            operand_range(params["w_bits"], params["w_signed"]))


def every_set(params):
    """Every operand set: ``a`` and each lane operand over their whole ranges."""
    (a_lo, a_hi), (w_lo, w_hi) = _ranges(params)
    return _grid(np.arange(a_lo, a_hi + 1), np.arange(w_lo, w_hi + 1), params["lanes"])


def _corners(lo, hi, inner):
    values = {lo, -1, 0, 1, hi} | ({lo + 1, hi - 1} if inner else set())
    return np.array(sorted(v for v in values if lo <= v <= hi))


def corner_sets(params, *, inner=True):
    """Every combination of the corner values of each operand: the extremes (most negative
    times most negative, maximum times maximum, and mixed), zero and +-1, and with
    ``inner`` the values next to the extremes."""
    (a_lo, a_hi), (w_lo, w_hi) = _ranges(params)
    return _grid(_corners(a_lo, a_hi, inner), _corners(w_lo, w_hi, inner), params["lanes"])


def random_sets(params, rng, count):
    """``count`` uniformly random operand sets."""
    (a_lo, a_hi), (w_lo, w_hi) = _ranges(params)
    return (rng.integers(a_lo, a_hi + 1, count),
            rng.integers(w_lo, w_hi + 1, (count, params["lanes"])))


def operand_sets(params, *, seed, count, inner=True):
    """The corner sets followed by ``count`` random ones."""
    sets = [corner_sets(params, inner=inner),
            random_sets(params, np.random.default_rng(seed), count)]
    return tuple(np.concatenate(parts) for parts in zip(*sets))


def pack_lanes(values, bits):
    """``[..., lanes]`` integers as words holding lane ``j`` in bits ``j * bits`` up (two's
    complement), as a port of ``data.ArrayLayout(..., lanes)`` holds them; Python ints."""
    values = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    return [sum(int(v) << (j * bits) for j, v in enumerate(row))
            for row in values.reshape(-1, values.shape[-1])]


def unpack_lanes(words, bits, lanes, signed):
    """The inverse of :func:`pack_lanes`: ``[len(words), lanes]`` int64."""
    out = np.array([[(int(word) >> (j * bits)) & ((1 << bits) - 1) for j in range(lanes)]
                    for word in words], dtype=np.int64).reshape(-1, lanes)
    if signed:
        out = np.where(out >> (bits - 1), out - (1 << bits), out)
    return out

