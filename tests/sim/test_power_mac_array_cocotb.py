"""cocotb 2 + Verilator benches of the power-exponent units around dense and sparse arrays."""

import numpy as np
import pytest

from sparqforge.hw.emit import description, to_verilog
from sparqforge.hw.power_mac_array import PowerMacArray
from sparqforge.sim.cocotb_run import CocotbRun
from sparqforge.sim.power_mac_array.schedule import random_power_layer

pytestmark = pytest.mark.sim

BENCH = "sparqforge.sim.power_mac_array.test_power_mac_array"

CONFIGS = {
    "dense_4x4_codes_4_4_4": dict(rows=4, cols=4, act_code_bits=4, w_code_bits=4,
                                  out_code_bits=4, modes=["dense"]),
    "sparse_2_4_3x3_codes_3_4_2": dict(rows=3, cols=3, act_code_bits=3, w_code_bits=4,
                                       out_code_bits=2, sparsity=(2, 4),
                                       modes=["sparse", "dense_mode"]),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_power_mac_array_bit_exact(name, tmp_path_factory):
    config = dict(CONFIGS[name])
    modes = config.pop("modes")
    array = PowerMacArray(**config, a_bits=8, a_signed=False, w_bits=8, max_depth=64, groups=3)
    desc = description(array, "power_mac_array")
    params = desc["params"] | {"acc_bits": array.acc_bits}
    rng = np.random.default_rng(len(name))
    cases = []
    for mode in modes:
        for layer in range(2):
            a, w, act_table, w_tables, thresholds = random_power_layer(
                rng, params, m=2 * array.array.rows + 1, k=13, n=2 * array.array.cols + 1)
            cases.append({"name": f"{mode}_layer{layer}", "mode": mode, "a": a.tolist(),
                          "w": w.tolist(), "act_table": act_table.tolist(),
                          "w_tables": w_tables.tolist(), "thresholds": thresholds.tolist()})
    run = CocotbRun(to_verilog(array, "power_mac_array"), desc, tmp_path_factory.mktemp(name))
    assert run.test(BENCH, {"params": params, "cases": cases, "stall": 0.3}) == (1, 0)
