"""DequantUnit and ThresholdUnit in Amaranth's simulator against the golden model, with
random stalls, table reloads between layers and accumulators exactly on thresholds."""

import numpy as np
import pytest

from sparqforge.hw.dequant_unit import DequantUnit
from sparqforge.hw.emit import description
from sparqforge.hw.threshold_unit import ThresholdUnit
from sparqforge.sim.check import compare
from sparqforge.sim.ports import pack, unpack
from sparqforge.sim.pysim import run_streams
from sparqforge.sw import golden


def concat(*parts):
    """Merge field dicts of consecutive beat batches."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run(unit, name, inputs, phases, out_beats, seed=1):
    desc = description(unit, name)
    words = {port: pack(desc["ports"][port], fields, len(next(iter(fields.values()))))
             for port, fields in inputs.items()}
    out, _ = run_streams(unit, desc, words, {"o": out_beats}, phases=phases, seed=seed)
    return unpack(desc["ports"]["o"], out["o"])


def dequant_tables(rng, unit):
    lo, hi = golden.operand_range(unit.out_bits, unit.out_signed)
    return rng.integers(lo, hi + 1, (unit.lanes, unit.groups, 1 << unit.code_bits))


def dequant_cfg(tables, broadcast=False):
    lanes, groups, depth = tables.shape
    lane, group, code = np.meshgrid(np.arange(lanes), np.arange(groups), np.arange(depth),
                                    indexing="ij")
    if broadcast:
        return {"lane": np.zeros(groups * depth), "all": np.ones(groups * depth),
                "group": group[0].ravel(), "code": code[0].ravel(), "value": tables[0].ravel()}
    return {"lane": lane.ravel(), "all": np.zeros(lane.size), "group": group.ravel(),
            "code": code.ravel(), "value": tables.ravel()}


@pytest.mark.parametrize("lanes,elems,code_bits,out_bits,out_signed,groups", [
    (3, 1, 4, 8, True, 2), (2, 2, 2, 3, False, 1), (4, 2, 8, 8, True, 1), (1, 3, 3, 4, True, 3),
])
def test_dequant_unit_with_table_reload(lanes, elems, code_bits, out_bits, out_signed, groups):
    rng = np.random.default_rng(lanes * 7 + code_bits)
    unit = DequantUnit(lanes=lanes, elems=elems, code_bits=code_bits, out_bits=out_bits,
                       out_signed=out_signed, groups=groups, side_bits=5)
    layers = []
    for layer in range(2):  # the second layer reloads every table
        tables = dequant_tables(rng, unit)
        if layer == 1 and groups == 1:
            tables[:] = tables[0]  # one table per layer, written to all lanes at once
        beats = 40
        codes = rng.integers(0, 1 << code_bits, (beats, lanes, elems))
        tags = rng.integers(0, groups, beats)
        side = rng.integers(0, 32, beats)
        bypass = rng.random(beats) < 0.25
        layers.append((tables, codes, tags, side, bypass))
    for number, (tables, codes, tags, side, bypass) in enumerate(layers):
        cfg = dequant_cfg(tables, broadcast=number == 1 and groups == 1)
        got = run(unit, "dequant", {"cfg": cfg, "i": {"codes": codes, "tag": tags, "side": side,
                                                      "bypass": bypass}},
                  {"cfg": 0, "i": 1}, len(codes), seed=number)
        want = golden.dequant_unit(codes, tables, code_bits=code_bits, lane_axis=1,
                                   groups=tags[:, None, None], bypass=bypass[:, None, None],
                                   out_signed=out_signed)
        assert not (r := compare(want, got["values"])), r
        assert np.array_equal(got["side"], side) and np.array_equal(got["tag"], tags)


def sorted_thresholds(rng, channels, count, acc_bits):
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1))  # hi = acc_max + 1: never reached
    t = np.sort(rng.integers(lo // 4, hi // 4, (channels, count)), axis=1)
    t[0, :] = np.sort(rng.choice([lo, hi, 0, 5], count))       # extremes and duplicates
    if count > 2:
        t[-1, 1] = t[-1, 2]                                      # a repeated threshold
    return t


def threshold_cfg(thresholds, lanes):
    channels, count = thresholds.shape
    ch, idx = np.meshgrid(np.arange(channels), np.arange(count), indexing="ij")
    return {"lane": (ch % lanes).ravel(), "group": (ch // lanes).ravel(), "index": idx.ravel(),
            "value": thresholds.ravel()}


@pytest.mark.parametrize("lanes,acc_bits,code_bits,groups", [
    (3, 12, 4, 2), (2, 20, 1, 1), (2, 9, 3, 3), (1, 32, 8, 1), (4, 16, 2, 1),
])
def test_threshold_unit_boundaries_and_reload(lanes, acc_bits, code_bits, groups):
    rng = np.random.default_rng(acc_bits * 10 + code_bits)
    unit = ThresholdUnit(lanes=lanes, acc_bits=acc_bits, code_bits=code_bits, groups=groups)
    channels = lanes * groups
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    for layer in range(2):  # reload all thresholds between layers
        t = sorted_thresholds(rng, channels, unit.thresholds, acc_bits)
        beats = 60
        tags = rng.integers(0, groups, beats)
        channel = tags[:, None] * lanes + np.arange(lanes)[None, :]
        acc = rng.integers(lo, hi + 1, (beats, lanes)) // rng.choice([1, 64, 4096], (beats, 1))
        # Accumulators exactly on a threshold, one below it, and the range ends.
        pick = rng.integers(0, unit.thresholds, (beats, lanes))
        on = np.clip(t[channel, pick] + rng.choice([0, 0, -1], (beats, lanes)), lo, hi)
        acc = np.where(rng.random((beats, lanes)) < 0.6, on, acc)
        acc[0], acc[1] = lo, hi
        last = (np.arange(beats) % 5 == 4).astype(np.int64)
        got = run(unit, "threshold", {"cfg": threshold_cfg(t, lanes),
                                      "i": {"data": acc, "tag": tags, "last": last}},
                  {"cfg": 0, "i": 1}, beats, seed=layer)
        want = np.stack([golden.threshold_unit(acc[:, lane], t[channel[:, lane]])
                         for lane in range(lanes)], axis=1)
        assert not (r := compare(want, got["data"])), r
        assert np.array_equal(got["last"], last)


def test_unit_parameter_errors():
    with pytest.raises(TypeError, match=r"Code width must be an integer in 1\.\.8, not 9"):
        ThresholdUnit(lanes=2, acc_bits=16, code_bits=9)
    with pytest.raises(TypeError, match=r"Code width must be an integer in 2\.\.8, not 1"):
        DequantUnit(lanes=2, code_bits=1)
    with pytest.raises(TypeError, match=r"Accumulator width must be an integer in 2\.\.32"):
        ThresholdUnit(lanes=2, acc_bits=40)


@pytest.mark.parametrize("sparsity,mode", [(None, "dense"), ((2, 4), "sparse"),
                                           ((2, 4), "dense_mode")])
def test_power_mac_array_codes_in_codes_out(sparsity, mode):
    from sparqforge.hw.power_mac_array import PowerMacArray
    from sparqforge.sim.power_mac_array.schedule import (power_expected, power_schedule,
                                                         random_power_layer)
    from sparqforge.sim.run import run_schedule

    array = PowerMacArray(rows=2, cols=3, a_bits=8, a_signed=False, w_bits=8, max_depth=32,
                          groups=2, sparsity=sparsity, act_code_bits=4, w_code_bits=4,
                          out_code_bits=3)
    params = array.params | {"acc_bits": array.acc_bits}
    rng = np.random.default_rng(len(mode))
    for layer in range(2):  # tables and thresholds reloaded for the second layer
        layer_data = random_power_layer(rng, params, m=3, k=9, n=5)
        schedule = power_schedule(params, *layer_data, mode=mode)
        got, _ = run_schedule(schedule, description(array, "power"), dut=array, seed=layer)
        assert not (r := compare(power_expected(params, *layer_data), got)), r
