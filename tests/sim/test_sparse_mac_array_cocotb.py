"""cocotb 2 + Verilator benches of the N:M sparse MAC array (tier b)."""

import pytest

from sparqforge.hw.emit import description, to_verilog
from sparqforge.hw.sparse_mac_array import SparseMacArray
from sparqforge.sim.cocotb_run import CocotbRun

from .cases import sparse_cases

pytestmark = pytest.mark.sim

BENCH = "sparqforge.sim.sparse_mac_array.test_sparse_mac_array"

CONFIGS = {
    "2_4_int8_4x4": dict(n=2, m=4, rows=4, cols=4, a_bits=8, w_bits=8),
    "1_2_int4_3x2": dict(n=1, m=2, rows=3, cols=2, a_bits=4, w_bits=4),
    "1_4_a2_w8_2x3": dict(n=1, m=4, rows=2, cols=3, a_bits=2, w_bits=8),
    "2_8_int8_4x4": dict(n=2, m=8, rows=4, cols=4, a_bits=8, w_bits=8),
    "4_8_ua8_w3_3x3": dict(n=4, m=8, rows=3, cols=3, a_bits=8, a_signed=False, w_bits=3),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sparse_mac_array_bit_exact(name, tmp_path_factory):
    array = SparseMacArray(**CONFIGS[name], max_depth=16, groups=4)
    desc = description(array, "sparse_mac_array")
    run = CocotbRun(to_verilog(array, "sparse_mac_array"), desc, tmp_path_factory.mktemp(name))
    config = {"params": desc["params"] | {"acc_bits": array.acc_bits},
              "cases": sparse_cases(array, seed=len(name)), "stall": 0.3}
    assert run.test(BENCH, config) == (1, 0)
