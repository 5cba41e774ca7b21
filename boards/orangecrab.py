"""Good Stuff Department OrangeCrab r0.2, LFE5U-25F or -85F (amaranth-boards' platforms).

The OrangeCrab has no USB-UART (its USB port goes straight to the FPGA, for the DFU
bootloader), so the host link uses the Feather header pins 0 (RX into the FPGA, N17) and
1 (TX out of it, M18), as LiteX does: connect a 3.3 V USB-serial adapter (its TX to pin 0,
its RX to pin 1, GND to GND).
"""

__all__ = ["OrangeCrab25F", "OrangeCrab85F", "ORANGECRAB_25F", "ORANGECRAB_85F"]

from amaranth.build import Attrs
from amaranth_boards.orangecrab_r0_2 import (OrangeCrabR0_2_25FPlatform,
                                             OrangeCrabR0_2_85FPlatform)
from amaranth_boards.resources import UARTResource

from .board import Board, int8_reference

_UART = UARTResource(0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33"))


class _HeaderUart:
    """Adds the header UART, and leaves out amaranth-boards' ``dfu-suffix`` step (from
    dfu-util, not installable from PyPI): run ``dfu-suffix -v 1209 -p 5af0 -a top.bit``
    before loading ``top.bit`` with ``dfu-util -D``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_resources([_UART])

    @property
    def required_tools(self):
        return [tool for tool in super().required_tools if tool != "dfu-suffix"]

    @property
    def command_templates(self):
        return [t for t in super().command_templates if "dfu-suffix" not in t]


class OrangeCrab25F(_HeaderUart, OrangeCrabR0_2_25FPlatform):
    """LFE5U-25F-8MG285C, 48 MHz oscillator."""


class OrangeCrab85F(_HeaderUart, OrangeCrabR0_2_85FPlatform):
    """LFE5U-85F-8MG285C, 48 MHz oscillator."""


_LEDS = (("rgb_led", 0, "g"), ("rgb_led", 0, "r"), ("rgb_led", 0, "b"), None)
_NOTES = ("No USB-UART: connect a 3.3 V USB-serial adapter to header pins 0 (FPGA RX) and "
          "1 (FPGA TX) and GND. RGB LED: green heartbeat, red busy, blue receiving.")
_PROGRAM = "dfu-suffix -v 1209 -p 5af0 -a top.bit && dfu-util -D top.bit"

# The 25F has 28 MULT18X18D, and yosys puts every multiplier in one: an 8x8 int8 array
# needs 64 for its MACs and 4 per requantizer lane (96), and with -nodsp its multipliers
# alone would fill the 24k LUTs. An 8x2 array needs 16 + 8 = 24.
ORANGECRAB_25F = Board(
    name="orangecrab-25f", title="OrangeCrab r0.2 (LFE5U-25F)", platform=OrangeCrab25F,
    family="ecp5", uart=("uart", 0), leds=_LEDS, notes=_NOTES, program=_PROGRAM,
    # act_depth 1024, not 512: with 512 yosys 0.70 left two flip-flops driving one net in
    # this system (see boards/build.py), and asserted in abc9 with product_stages 2.
    config=int8_reference(cols=2, groups=64, clk_freq=48e6))

ORANGECRAB_85F = Board(
    name="orangecrab-85f", title="OrangeCrab r0.2 (LFE5U-85F)", platform=OrangeCrab85F,
    family="ecp5", uart=("uart", 0), leds=_LEDS, notes=_NOTES, program=_PROGRAM,
    config=int8_reference(clk_freq=48e6, mac_multipliers="lut", product_stages=3))
