"""cocotb 2 + Verilator bench of the packed multiplier (tier b): random and corner operand
sets against the golden model."""

import pytest

from sparqforge.hw.emit import description, to_verilog
from sparqforge.hw.packed_multiplier import PackedMultiplier
from sparqforge.sim.cocotb_run import CocotbRun
from sparqforge.sim.packed_multiplier.stimulus import operand_sets

pytestmark = pytest.mark.sim

BENCH = "sparqforge.sim.packed_multiplier.test_packed_multiplier"

CONFIGS = {
    # Two int8 lanes in an 18-bit input: overlapping products (7 low bits beside).
    "s8_s8_x2": dict(a_bits=8, w_bits=8),
    "u8_s8_x2": dict(a_bits=8, a_signed=False, w_bits=8),
    # The DSP48E1's 25-bit input: no overlap, the offset-binary fields alone.
    "s8_u8_x2_p25": dict(a_bits=8, w_bits=8, w_signed=False, port_bits=25),
    "u4_s4_x4": dict(a_bits=4, a_signed=False, w_bits=4, lanes=4),
}

#: In the slow tier: each configuration is a Verilator build and run of its own (6-8 s
#: here), and the simulator tests cover these points too.
SLOW = {"u8_s8_x2", "s8_u8_x2_p25"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in sorted(CONFIGS)])
def test_packed_multiplier_bit_exact(name, tmp_path_factory):
    mul = PackedMultiplier(**CONFIGS[name])
    desc = description(mul, "packed_multiplier")
    run = CocotbRun(to_verilog(mul, "packed_multiplier"), desc, tmp_path_factory.mktemp(name))
    a, w = operand_sets(desc["params"], seed=len(name), count=3000,
                        inner=mul.lanes == 2)
    config = {"a": a.tolist(), "w": w.tolist()}
    assert run.test(BENCH, config) == (1, 0)
    if name == "s8_s8_x2":
        # The checker must catch a single wrong product.
        assert run.test(BENCH, config | {"perturb": True}, name="perturbed") == (1, 1)
