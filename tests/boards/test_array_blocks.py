"""The MAC array's multiplier blocks as the board reports count them (``macs_per_dsp``): a
packed array takes one block per two MACs on the ECP5 and on Xilinx, an unpacked one a block
per MAC, and LUT multipliers none (real yosys runs of the array alone)."""

import pytest
from sparqforge.boards.synth import array_multiplier_blocks
from sparqforge.cli.blocks import ArrayConfig, build_array
from sparqforge.config import AcceleratorConfig
from sparqforge.errors import ConfigError


@pytest.mark.parametrize("family", ["ecp5", "xilinx"])
def test_packed_array_takes_a_block_per_two_macs(family):
    packed = array_multiplier_blocks(
        AcceleratorConfig(rows=2, cols=4, max_depth=256, groups=4, packed_products=True),
        family)
    assert (packed["macs_per_cycle"], packed["blocks"], packed["macs_per_dsp"]) == (8, 4, 2.0)
    plain = array_multiplier_blocks(AcceleratorConfig(rows=2, cols=4, max_depth=256, groups=4),
                                    family)
    assert (plain["blocks"], plain["macs_per_dsp"]) == (8, 1.0)


def test_lut_multipliers_take_no_blocks_but_packed_ones_stay_in_blocks():
    lut = array_multiplier_blocks(AcceleratorConfig(rows=2, cols=4, max_depth=256, groups=4),
                                  "ecp5", lut_multipliers=True)
    assert (lut["blocks"], lut["macs_per_dsp"]) == (0, None)
    packed = array_multiplier_blocks(
        AcceleratorConfig(rows=2, cols=4, max_depth=256, groups=4, packed_products=True),
        "ecp5", lut_multipliers=True)
    assert packed["blocks"] == 4


def test_cli_array_config_refuses_packed_sparse():
    with pytest.raises(ConfigError, match="packed products need a dense array"):
        build_array(ArrayConfig(rows=2, cols=4, sparsity=(2, 4), packed_products=True))
