"""1BitSquared iCEBreaker, iCE40UP5K (amaranth-boards' platform, yosys + nextpnr-ice40)."""

__all__ = ["ICEBreaker", "ICEBREAKER"]

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board, int8_reference


class ICEBreaker(ICEBreakerPlatform):
    """iCE40UP5K-SG48, 12 MHz oscillator, FTDI FT2232H second channel as USB-UART (rx 6,
    tx 9), with the snap-off LED/button Pmod's LEDs (2..6) as well as the red and green
    LEDs (0, 1)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_resources(self.break_off_pmod)


# iCE40UP5K: 5,280 logic cells, 30 EBR (4 kbit each), 8 SB_MAC16. With -dsp yosys puts
# every multiplier of 8 x 8 bits or more in a SB_MAC16: the requantizer needs four per lane
# and each MAC one, so a 2x1 int8 array uses six; without -dsp the multipliers do not fit the
# logic cells beside the rest of the design. A 4x1 array (all eight) no longer fits the logic
# cells since the requantizer gained the pipeline stages that the 100 MHz ECP5 build needs.
ICEBREAKER = Board(
    name="icebreaker", title="1BitSquared iCEBreaker (iCE40UP5K)", platform=ICEBreaker,
    family="ice40", uart=("uart", 0), leds=(("led", 1), ("led", 0), ("led", 2), ("led", 3)),
    notes=("USB-UART on the FTDI's second channel (the same USB port as programming). LEDs: "
           "green heartbeat, red busy, snap-off Pmod LEDs 2 and 3 receiving / sending."),
    program="iceprog top.bin", overrides={"synth_opts": "-dsp"},
    # No convolution window walk: the iCE40UP5K's 5280 LUTs hold the 1x1 system with
    # nothing to spare; convolutions are lowered by im2col on the host.
    config=int8_reference(rows=1, cols=1, act_depth=512, w_depth=1024, max_depth=256,
                          groups=16, frame_bytes=512, clk_freq=12e6, conv=False,
                          baud=1_000_000))
