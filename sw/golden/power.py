"""Golden models of the power-exponent units: ``hw.dequant_unit.DequantUnit`` and
``hw.threshold_unit.ThresholdUnit``."""

__all__ = ["dequant_unit", "threshold_unit"]

import numpy as np


def dequant_unit(codes, tables, *, code_bits, lane_axis=-1, groups=None, bypass=None,
                 out_signed=True):
    """Look codes up in per-lane tables, as the dequant unit does.

    Parameters
    ----------
    codes : int array
        Codes; only their low ``code_bits`` bits (two's-complement pattern) address the
        table, so signed and unsigned codes both work.
    tables : int array [lanes, groups, 2**code_bits] or [2**code_bits]
        Table entries (a single table serves every lane and group).
    lane_axis : int
        Axis of ``codes`` that indexes lanes (ignored for a single table).
    groups : int array, optional
        Group (tag) of each code, broadcastable to ``codes``; default 0.
    bypass : bool array, optional
        Where set (broadcastable to ``codes``), the code itself is the value: its
        ``code_bits``-bit pattern read with the output signedness ``out_signed``.

    >>> dequant_unit(np.array([-1, 0, 1]), np.array([0, 10, 0, -10]), code_bits=2).tolist()
    [-10, 0, 10]
    """
    address = np.asarray(codes, dtype=np.int64) & ((1 << code_bits) - 1)
    tables = np.asarray(tables, dtype=np.int64)
    if tables.ndim == 1:
        looked_up = tables[address]
    else:
        lanes = np.arange(address.shape[lane_axis]).reshape(
            [-1 if axis == lane_axis % address.ndim else 1 for axis in range(address.ndim)])
        group = (np.zeros_like(address) if groups is None
                 else np.broadcast_to(groups, address.shape))
        looked_up = tables[lanes, group, address]
    if bypass is None:
        return looked_up
    raw = address - ((address >> (code_bits - 1)) << code_bits) if out_signed else address
    return np.where(bypass, raw, looked_up)


def threshold_unit(acc, thresholds):
    """Number of thresholds each accumulator reaches: ``#{i : thresholds[..., i] <= acc}``.

    ``thresholds`` is ``[channels, 2**bits - 1]`` (per output channel, broadcast along the
    last axis of ``acc``) or ``[2**bits - 1]``, each row sorted ascending. This is the
    monotone integer map from an accumulator to an output code (FINN's MultiThreshold).

    >>> threshold_unit(np.array([[-5, 0, 3, 9]]), np.array([0, 3, 4])).tolist()
    [[0, 1, 2, 3]]
    """
    acc = np.asarray(acc, dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.int64)
    if np.any(np.diff(thresholds, axis=-1) < 0):
        raise ValueError("Thresholds must be sorted ascending along their last axis")
    return (thresholds <= acc[..., None]).sum(axis=-1).astype(np.int64)
