"""Radiona ULX3S with the LFE5U-85F (amaranth-boards' platform, yosys + nextpnr-ecp5)."""

__all__ = ["ULX3S_85F", "ULX3S"]

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board, int8_reference


class ULX3S_85F(ULX3S_85F_Platform):
    """LFE5U-85F-6BG381C, 25 MHz oscillator, FTDI FT231X USB-UART (rx M1, tx L4).

    amaranth-boards lists openFPGALoader among the tools ``build()`` needs even when
    nothing is programmed; the build flow here uses ``build(do_build=False)`` and runs the
    plan itself, so only programming needs it."""


ULX3S = Board(
    name="ulx3s-85f", title="Radiona ULX3S (LFE5U-85F)", platform=ULX3S_85F, family="ecp5",
    uart=("uart", 0), leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
    notes="USB-UART on the US1 micro-USB port (the FTDI); no reset button is used.",
    program="openFPGALoader -b ulx3s top.bit",
    # With the convolution window walk, the depthwise columns and the add stage; routed with
    # router1, which meets 100 MHz on this netlist where router2 did not (docs/boards.md).
    config=int8_reference(mac_multipliers="lut", product_stages=3, baud=3_000_000,
                          conv=True),
    router="router1")
