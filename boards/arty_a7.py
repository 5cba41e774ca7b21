"""Digilent Arty A7-35T and A7-100T (amaranth-boards' platforms, open Xray flow)."""

__all__ = ["ArtyA7_35", "ArtyA7_100", "ARTY_A7_35", "ARTY_A7_100"]

from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform

from .board import Board, int8_reference
from .xray import XrayPlatform


class ArtyA7_35(XrayPlatform, ArtyA7_35Platform):
    """xc7a35ti-csg324-1L, 100 MHz oscillator, FTDI USB-UART (rx A9, tx D10)."""


class ArtyA7_100(XrayPlatform, ArtyA7_100Platform):
    """xc7a100ti-csg324-1L, otherwise as the A7-35T."""


_LEDS = (("led", 0), ("led", 1), ("led", 2), ("led", 3))
_NOTES = ("USB-UART on the FTDI port (the JTAG cable); reset is the red RESET button.")
_PROGRAM = "openFPGALoader -b arty top.bit"

# 64 DSP48E1 for the MACs plus 4 per requantizer lane (96 of 90 for 8x8 int8) do not fit
# the 35T: an 8x4 array (32 MACs + 16 requant DSPs) leaves headroom; memories as on the 100T
# but fewer groups.
ARTY_A7_35 = Board(
    name="arty-a7-35", title="Digilent Arty A7-35T", platform=ArtyA7_35, family="xilinx",
    uart=("uart", 0), leds=_LEDS, notes=_NOTES, program=_PROGRAM,
    config=int8_reference(cols=4, baud=3_000_000))

ARTY_A7_100 = Board(
    name="arty-a7-100", title="Digilent Arty A7-100T", platform=ArtyA7_100, family="xilinx",
    uart=("uart", 0), leds=_LEDS, notes=_NOTES, program=_PROGRAM,
    config=int8_reference(baud=3_000_000))
