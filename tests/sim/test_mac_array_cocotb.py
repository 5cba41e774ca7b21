"""cocotb 2 + Verilator benches of the dense MAC array (tier b)."""

import pytest

from sparqforge.hw.emit import description, to_verilog
from sparqforge.hw.mac_array import MacArray
from sparqforge.sim.cocotb_run import CocotbRun

from .cases import dense_cases

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
    # Two columns' products from one packed multiplier (the accelerator's operand types).
    "packed_ua8_w8_4x4": dict(rows=4, cols=4, a_bits=8, a_signed=False, w_bits=8,
                              packed_products=True),
}


#: Configurations whose cocotb run takes over a minute here (a Verilator build of its own for
#: every run, then Python every cycle): in the slow tier. The 16x16 array is also checked
#: with the compiled stream harness below, whose build is cached.
SLOW = {"int8_16x16"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in sorted(CONFIGS)])
def test_mac_array_bit_exact(name, tmp_path_factory):
    array = MacArray(**CONFIGS[name], max_depth=24, groups=4)
    desc = description(array, "mac_array")
    run = CocotbRun(to_verilog(array, "mac_array"), desc, tmp_path_factory.mktemp(name))
    config = {"params": desc["params"] | {"acc_bits": array.acc_bits},
              "cases": dense_cases(array, seed=len(name)), "stall": 0.3}
    assert run.test(BENCH, config) == (1, 0)
    if name == "int8_4x4":
        # The checker must catch a single perturbed output element.
        assert run.test(BENCH, config | {"perturb": True}, name="perturbed") == (1, 1)


def test_16x16_array_in_the_compiled_harness():
    # The compiled stream harness: random stalls on every stream, every element compared.
    from sparqforge.cli.blocks import ArrayConfig
    from sparqforge.cli.check import check_array

    report = check_array(ArrayConfig(rows=16, cols=16, max_depth=64, groups=4), (40, 64, 48),
                         seed=5, stall=0.3, quiet=True)
    assert report["bit_exact"] and report["mismatches"] == 0
