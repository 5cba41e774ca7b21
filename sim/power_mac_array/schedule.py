"""Schedules and golden results for the power-exponent MAC array (codes in, codes out)."""

__all__ = ["power_schedule", "power_expected", "random_power_layer"]

import numpy as np

from ...hw.power_mac_array import CFG_ACT_TABLE, CFG_THRESHOLD, CFG_WEIGHT_TABLE
from ...sw import golden, nm_format
from ..mac_array.schedule import (Schedule, dense_schedule, sparse_dense_schedule,
                                  sparse_schedule)


def _cfg(target, lane, group, index, value, all_lanes=None):
    n = len(value)
    return {"target": np.full(n, target), "lane": np.asarray(lane),
            "all": np.zeros(n, np.int64) if all_lanes is None else np.asarray(all_lanes),
            "group": np.asarray(group), "index": np.asarray(index),
            "value": np.asarray(value)}


def power_schedule(params, a_codes, w_codes, act_table, w_tables, thresholds, *,
                   mode="dense"):
    """Schedule a layer on a PowerMacArray with ``params`` (its ``params`` dict).

    ``w_codes`` is ``[K, N]``; ``act_table`` has ``2**act_code_bits`` entries (one table for
    the layer, written to all lanes at once); ``w_tables`` is ``[N, 2**w_code_bits]`` (one
    table per output channel); ``thresholds`` is ``[N, 2**out_code_bits - 1]``. ``mode`` is
    ``dense``, ``sparse`` (compressed N:M weights) or ``dense_mode`` (a sparse array running
    the layer dense).
    """
    rows, cols = params["rows"], params["cols"]
    n_dim = w_codes.shape[1]
    groups = -(-n_dim // cols)
    if mode == "dense":
        base = dense_schedule(rows, cols, a_codes, w_codes)
    else:
        n, m = params["sparsity"]
        if mode == "sparse":
            nonzero = golden.dequant_unit(w_codes.T, np.asarray(w_tables)[:, None, :],
                                          code_bits=params["w_code_bits"], lane_axis=0) != 0
            values, indices = nm_format.compress(np.where(nonzero, w_codes.T, 0), n, m)
            base = sparse_schedule(rows, cols, n, m, a_codes, values, indices)
        else:
            base = sparse_dense_schedule(rows, cols, n, m, a_codes, w_codes)
    channels = np.arange(groups * cols)
    pad_tables = np.zeros((groups * cols, np.shape(w_tables)[1]), np.int64)
    pad_tables[:n_dim] = w_tables
    pad_thresholds = np.full((groups * cols, np.shape(thresholds)[1]), 0, np.int64)
    pad_thresholds[:n_dim] = thresholds
    codes = np.arange(len(act_table))
    w_index = np.arange(pad_tables.shape[1])
    t_index = np.arange(pad_thresholds.shape[1])
    ch_w, code_w = np.meshgrid(channels, w_index, indexing="ij")
    ch_t, idx_t = np.meshgrid(channels, t_index, indexing="ij")
    parts = [
        _cfg(CFG_ACT_TABLE, np.zeros_like(codes), np.zeros_like(codes), codes, act_table,
             np.ones_like(codes)),
        _cfg(CFG_WEIGHT_TABLE, (ch_w % cols).ravel(), (ch_w // cols).ravel(), code_w.ravel(),
             pad_tables.ravel()),
        _cfg(CFG_THRESHOLD, (ch_t % cols).ravel(), (ch_t // cols).ravel(), idx_t.ravel(),
             pad_thresholds.ravel()),
    ]
    cfg = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    inputs = dict(base.inputs, cfg=cfg)
    return Schedule(inputs, dict(base.phases, cfg=0), base.out_port, base.out_beats,
                    base.assemble)


def power_expected(params, a_codes, w_codes, act_table, w_tables, thresholds):
    """Golden output codes: tables, integer matmul, thresholds."""
    a_int = golden.dequant_unit(a_codes, act_table, code_bits=params["act_code_bits"])
    w_int = golden.dequant_unit(w_codes.T, np.asarray(w_tables)[:, None, :],
                                code_bits=params["w_code_bits"], lane_axis=0).T
    acc = golden.matmul(a_int, w_int, acc_bits=params["acc_bits"])
    return golden.threshold_unit(acc, thresholds)


def random_power_layer(rng, params, *, m, k, n, boundary=0.5):
    """Random codes, tables and sorted thresholds; a fraction ``boundary`` of thresholds
    are placed exactly on accumulators the layer produces, so that ties are exercised."""
    act_bits, w_bits, out_bits = (params["act_code_bits"], params["w_code_bits"],
                                  params["out_code_bits"])
    a_lo, a_hi = golden.operand_range(params["a_bits"], params["a_signed"])
    w_lo, w_hi = golden.operand_range(params["w_bits"], params["w_signed"])
    act_table = rng.integers(a_lo, a_hi + 1, 1 << act_bits)
    w_tables = rng.integers(w_lo, w_hi + 1, (n, 1 << w_bits))
    a_codes = rng.integers(0, 1 << act_bits, (m, k))
    if params.get("sparsity"):
        nn_, mm = params["sparsity"]
        mask = np.zeros((n, -(-k // mm) * mm), bool)
        for g in range(mask.shape[1] // mm):
            for ch in range(n):
                mask[ch, g * mm + rng.permutation(mm)[:nn_]] = True
        w_codes = np.where(mask[:, :k].T, rng.integers(0, 1 << w_bits, (k, n)), 0)
        w_tables[:, 0] = 0  # code 0 means a pruned weight
    else:
        w_codes = rng.integers(0, 1 << w_bits, (k, n))
    a_int = golden.dequant_unit(a_codes, act_table, code_bits=act_bits)
    w_int = golden.dequant_unit(w_codes.T, w_tables[:, None, :], code_bits=w_bits,
                                lane_axis=0).T
    acc = golden.matmul(a_int, w_int)
    count = (1 << out_bits) - 1
    spread = max(1, int(np.abs(acc).max()))
    thresholds = rng.integers(-spread, spread + 1, (n, count))
    hit = rng.random((n, count)) < boundary
    thresholds = np.where(hit, acc[rng.integers(0, m, (n, count)), np.arange(n)[:, None]],
                          thresholds)
    return a_codes, w_codes, act_table, w_tables, np.sort(thresholds, axis=1)
