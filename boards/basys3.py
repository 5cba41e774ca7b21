"""Digilent Basys 3 (xc7a35t-cpg236-1): not in amaranth-boards, so its platform is here.

Pins from Digilent's Basys-3 master XDC (rev B): 100 MHz oscillator on W5; USB-UART
through the FTDI FT2232 (RsRx B18 into the FPGA, RsTx A18 out of it); 16 LEDs, 16
switches, five push buttons, a four-digit seven-segment display (segments and anodes
active low), VGA, PS/2 (USB HID host) and four Pmod headers. There is no reset button;
the centre button (btnC, U18) serves as the design reset.
"""

__all__ = ["Basys3Platform", "Basys3", "BASYS3"]

from amaranth.build import Attrs, Clock, Connector, Pins, PinsN, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import (ButtonResources, Display7SegResource, LEDResources,
                                       PS2Resource, SwitchResources, UARTResource,
                                       VGAResource)

from .board import Board, int8_reference
from .xray import XrayPlatform

_IO = Attrs(IOSTANDARD="LVCMOS33")


class Basys3Platform(XilinxPlatform):
    device = "xc7a35t"
    package = "cpg236"
    speed = "1"
    default_clk = "clk100"
    default_rst = "rst"
    resources = [
        Resource("clk100", 0, Pins("W5", dir="i"), Clock(100e6), _IO),
        Resource("rst", 0, Pins("U18", dir="i"), _IO),                # btnC

        *LEDResources(pins="U16 E19 U19 V19 W18 U15 U14 V14 V13 V3 W3 U3 P3 N3 P1 L1",
                      attrs=_IO),
        *SwitchResources(pins="V17 V16 W16 W17 W15 V15 W14 W13 V2 T3 T2 R3 W2 U1 T1 R2",
                         attrs=_IO),
        # btnC, btnU, btnL, btnR, btnD
        *ButtonResources(pins="U18 T18 W19 T17 U17", attrs=_IO),
        Resource("button_center", 0, Pins("U18", dir="i"), _IO),
        Resource("button_up", 0, Pins("T18", dir="i"), _IO),
        Resource("button_left", 0, Pins("W19", dir="i"), _IO),
        Resource("button_right", 0, Pins("T17", dir="i"), _IO),
        Resource("button_down", 0, Pins("U17", dir="i"), _IO),

        Display7SegResource(0, a="W7", b="W6", c="U8", d="V8", e="U5", f="V5", g="U7",
                            dp="V7", invert=True, attrs=_IO),
        Resource("display_7seg_an", 0, PinsN("U2 U4 V4 W4", dir="o"), _IO),

        UARTResource(0, rx="B18", tx="A18", attrs=_IO),

        VGAResource(0, r="G19 H19 J19 N19", g="J17 H17 G17 D17", b="N18 L18 K18 J18",
                    hs="P19", vs="R19", attrs=_IO),
        PS2Resource(0, clk="C17", dat="B17", attrs=Attrs(IOSTANDARD="LVCMOS33",
                                                         PULLUP="TRUE")),
    ]
    connectors = [
        Connector("pmod", 0, "J1  L2  J2  G2  - - H1  K2  H2  G3  - -"),   # JA
        Connector("pmod", 1, "A14 A16 B15 B16 - - A15 A17 C15 C16 - -"),  # JB
        Connector("pmod", 2, "K17 M18 N17 P18 - - L17 M19 P17 R18 - -"),  # JC
        Connector("pmod", 3, "J3  L3  M2  N2  - - K3  M3  M1  N1  - -"),   # JXADC
    ]


class Basys3(XrayPlatform, Basys3Platform):
    """The Basys 3 with the fixed open Xray flow."""


# xc7a35t: 90 DSP48E1, 50 RAMB36, 20,800 LUTs; the same configuration as the Arty A7-35T.
BASYS3 = Board(
    name="basys3", title="Digilent Basys 3", platform=Basys3, family="xilinx",
    uart=("uart", 0), leds=(("led", 0), ("led", 1), ("led", 2), ("led", 3)),
    notes="USB-UART on the PROG/UART micro-USB port; btnC (centre button) is the reset.",
    program="openFPGALoader -b basys3 top.bit",
    config=int8_reference(cols=4, baud=3_000_000))
