"""cocotb 2 + Verilator benches of the dense MAC array (tier b)."""

import numpy as np
import pytest

from sparqforge.hw.emit import description, to_verilog
from sparqforge.hw.mac_array import MacArray
from sparqforge.sim.cocotb_run import CocotbRun
from sparqforge.sim.mac_array.schedule import corner_layers, random_layer

pytestmark = pytest.mark.sim

BENCH = "sparqforge.sim.mac_array.test_mac_array"

CONFIGS = {
    "int8_4x4": dict(rows=4, cols=4, a_bits=8, w_bits=8),
    "int2_4x4": dict(rows=4, cols=4, a_bits=2, w_bits=2),
    "a4_w8_3x5": dict(rows=3, cols=5, a_bits=4, w_bits=8),
    "ua8_w4_4x3": dict(rows=4, cols=3, a_bits=8, a_signed=False, w_bits=4),
    "int8_16x16": dict(rows=16, cols=16, a_bits=8, w_bits=8),
    "ua3_uw3_o4u_2x3": dict(rows=2, cols=3, a_bits=3, a_signed=False, w_bits=3, w_signed=False,
                            out_bits=4, out_signed=False),
    "a8_uw2_5x2": dict(rows=5, cols=2, a_bits=8, w_bits=2, w_signed=False),
}


def cases_for(array, seed):
    rng = np.random.default_rng(seed)
    types = dict(a_bits=array.a_bits, a_signed=array.a_signed, w_bits=array.w_bits,
                 w_signed=array.w_signed, out_bits=array.out_bits, out_signed=array.out_signed)
    rows, cols = array.rows, array.cols
    named = {"random": random_layer(rng, m=2 * rows + 1, k=17, n=2 * cols + 1, **types)}
    named.update(corner_layers(rng, max_depth=array.max_depth, m=rows + 1, n=cols + 1, **types))
    cases = []
    for name, (a, w, requant) in named.items():
        cases.append({"name": name, "a": a.tolist(), "w": w.tolist(),
                      "requant": {k: np.asarray(v).tolist() for k, v in requant.items()}})
    return cases


def build(name, tmp_path_factory, max_depth=24):
    array = MacArray(**CONFIGS[name], max_depth=max_depth, groups=4)
    desc = description(array, "mac_array")
    run = CocotbRun(to_verilog(array, "mac_array"), desc, tmp_path_factory.mktemp(name))
    return array, desc, run


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mac_array_bit_exact(name, tmp_path_factory):
    array, desc, run = build(name, tmp_path_factory)
    config = {"params": desc["params"] | {"acc_bits": array.acc_bits},
              "cases": cases_for(array, seed=len(name)), "stall": 0.3}
    tests, failures = run.test(BENCH, config)
    assert (tests, failures) == (1, 0)
    if name == "int8_4x4":
        # The checker must catch a single perturbed output element.
        tests, failures = run.test(BENCH, config | {"perturb": True}, name="perturbed")
        assert (tests, failures) == (1, 1)
