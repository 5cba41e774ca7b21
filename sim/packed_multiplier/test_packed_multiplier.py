"""cocotb bench of PackedMultiplier: one operand set per cycle, every lane of every set
compared with the golden model. Run from pytest through ``sim.cocotb_run``."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sparqforge.sim.cocotb_run import bench_config
from sparqforge.sim.cocotb_streams import start_and_reset
from sparqforge.sim.packed_multiplier.stimulus import pack_lanes, unpack_lanes
from sparqforge.sw import golden


@cocotb.test()
async def packed_products(dut):
    config = bench_config()
    params, latency = config["desc"]["params"], config["desc"]["latency"]
    spec = golden.packing(**params)
    a, w = np.array(config["a"], dtype=np.int64), np.array(config["w"], dtype=np.int64)
    expected = golden.packed_multiplier(a, w, **params)
    if config.get("perturb"):
        expected[0, 0] += 1     # the checker must catch one wrong product
    a_words = pack_lanes(a[:, None], params["a_bits"])
    w_words = pack_lanes(w, params["w_bits"])

    await start_and_reset(dut)
    words = []
    # Operands change at the falling edge; the products of the set driven at falling edge
    # t are read at falling edge t + latency.
    for t in range(len(a) + latency):
        await FallingEdge(dut.clk)
        if t >= latency:
            words.append(dut.p.value.to_unsigned())
        if t < len(a):
            dut.a.value = a_words[t]
            dut.w.value = w_words[t]
    got = unpack_lanes(words, spec.product_bits, spec.lanes, spec.product_signed)
    wrong = np.argwhere(got != expected)
    dut._log.info(f"{len(a)} operand sets x {spec.lanes} lanes, {len(wrong)} wrong products")
    assert not len(wrong), "; ".join(
        f"a={a[i]} w[{j}]={w[i, j]}: got {got[i, j]}, expected {expected[i, j]}"
        for i, j in wrong[:10])
