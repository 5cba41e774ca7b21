"""Digilent Nexys4 DDR / Nexys A7-100T (amaranth-boards' platform, open Xray flow)."""

__all__ = ["Nexys4DDR", "NEXYS4DDR"]

from amaranth_boards.nexys4ddr import Nexys4DDRPlatform

from .board import Board, int8_reference
from .xray import XrayPlatform


class Nexys4DDR(XrayPlatform, Nexys4DDRPlatform):
    """xc7a100t-csg324-1, 100 MHz oscillator, FTDI USB-UART (rx C4, tx D4)."""


NEXYS4DDR = Board(
    name="nexys4ddr", title="Digilent Nexys4 DDR (Nexys A7-100T)", platform=Nexys4DDR,
    family="xilinx", uart=("uart", 0), leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
    notes="USB-UART on the PROG/UART micro-USB port; reset is the CPU RESET button.",
    program="openFPGALoader -b nexys_a7_100 top.bit",
    config=int8_reference(baud=3_000_000))
