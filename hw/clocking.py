"""The board clock and reset: the ``sync`` domain from the board oscillator, directly or
through a PLL, with a synchronized reset."""

__all__ = ["Ecp5PllParams", "ecp5_pll_params", "BoardClock"]

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth.lib.cdc import AsyncFFSynchronizer, ResetSynchronizer

# ECP5 EHXPLLL limits (Lattice TN1263 and ``ecppll``): VCO 400..800 MHz, phase-detector input
# 3.125..400 MHz, output 3.125..400 MHz; CLKI_DIV and CLKOP_DIV 1..128, CLKFB_DIV 1..80.
_ECP5_VCO = (400e6, 800e6)
_ECP5_PFD = (3.125e6, 400e6)
_ECP5_OUT = (3.125e6, 400e6)


@dataclass(frozen=True)
class Ecp5PllParams:
    """EHXPLLL dividers for one output with feedback from CLKOP:
    ``f_out = f_in / clki_div * clkfb_div`` and ``f_vco = f_out * clkop_div``."""
    f_in: float
    f_out: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_vco(self):
        return self.f_out * self.clkop_div


def ecp5_pll_params(f_in, f_out, *, tolerance=0.005):
    """The EHXPLLL dividers whose output is closest to ``f_out`` (ties: VCO nearest
    600 MHz, the middle of its range).

    Raises
    ------
    ValueError
        When no setting comes within ``tolerance`` (relative) of ``f_out``.

    >>> p = ecp5_pll_params(25e6, 100e6)
    >>> (p.clki_div, p.clkfb_div, p.clkop_div, p.f_out)
    (1, 4, 6, 100000000.0)
    """
    best = None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not _ECP5_PFD[0] <= pfd <= _ECP5_PFD[1]:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not _ECP5_OUT[0] <= out <= _ECP5_OUT[1]:
                continue
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if not _ECP5_VCO[0] <= vco <= _ECP5_VCO[1]:
                    continue
                score = (abs(out - f_out), abs(vco - 600e6))
                if best is None or score < best[0]:
                    best = (score, Ecp5PllParams(f_in, out, clki_div, clkfb_div, clkop_div))
    if best is None or abs(best[1].f_out - f_out) > tolerance * f_out:
        near = f"; the nearest is {best[1].f_out / 1e6:.3f} MHz" if best else ""
        raise ValueError(f"The ECP5 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz{near}: choose another clock frequency")
    return best[1]


class BoardClock(Elaboratable):
    """Clocks the ``sync`` domain (defined by its parent) at ``f_out`` from the board
    oscillator resource ``clock`` (at ``f_in``), through a PLL when they differ, and resets
    it while the PLL is unlocked or the board's reset input (when there is one) is active.

    Supported PLLs: ECP5 (EHXPLLL). Other families run at the oscillator frequency.

    Parameters
    ----------
    clock : (name, number)
        The oscillator resource.
    f_in, f_out : float
        Oscillator and ``sync`` frequencies, Hz.
    reset_button : (name, number) or None
        An active-high reset input resource (button), if the board has one.
    family : str
        ``"ecp5"``, ``"ice40"`` or ``"xilinx"``.

    Raises
    ------
    ValueError
        When ``f_out`` needs a PLL this family does not support here, or the PLL cannot make
        it.
    """

    def __init__(self, *, clock, f_in, f_out, reset_button=None, family):
        self._clock = clock
        self._reset_button = reset_button
        self._f_in = f_in
        self._family = family
        self._pll = None
        if f_out != f_in:
            if family != "ecp5":
                raise ValueError(f"This board runs at its {f_in / 1e6:g} MHz oscillator (no "
                                 f"PLL support for {family} here); set clk_freq to {f_in:g}, "
                                 f"not {f_out:g}")
            self._pll = ecp5_pll_params(f_in, f_out)
        self.f_out = self._pll.f_out if self._pll else f_in

    pll = property(lambda self: self._pll)

    def elaborate(self, platform):
        m = Module()
        clk_io = platform.request(*self._clock, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        if self._reset_button is not None:
            rst_io = platform.request(*self._reset_button, dir="-")
            m.submodules.rst_buf = rst_buf = io.Buffer("i", rst_io)
            board_reset = rst_buf.i
        else:
            board_reset = Const(0)

        if self._pll is None:
            m.d.comb += ClockSignal("sync").eq(clk_buf.i)
            locked = Const(1)
        else:
            p = self._pll
            pll_clk = Signal()
            locked = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{p.f_in / 1e6:.6f}",
                a_FREQUENCY_PIN_CLKOP=f"{p.f_out / 1e6:.6f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_CLKOP_DIV=p.clkop_div,
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_CPHASE=(p.clkop_div - 1) // 2,
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_buf.i, i_CLKFB=pll_clk, i_RST=Const(0), i_STDBY=Const(0),
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
                o_CLKOP=pll_clk, o_LOCK=locked)
            # nextpnr-ecp5 derives the output's constraint from the oscillator's and the
            # dividers (an explicit one on ``pll_clk`` would not survive flattening).
            m.d.comb += ClockSignal("sync").eq(pll_clk)
        if self._family == "ecp5":
            # The synchronized reset reaches every flip-flop of the design through a global
            # buffer: over general routing its deassertion took 10 ns to the far slices.
            reset = Signal()
            m.submodules.reset_sync = AsyncFFSynchronizer(board_reset | ~locked, reset,
                                                          o_domain="sync")
            reset_global = Signal()
            m.submodules.reset_buffer = Instance("DCCA", i_CLKI=reset, i_CE=Const(1),
                                                 o_CLKO=reset_global)
            m.d.comb += ResetSignal("sync").eq(reset_global)
        else:
            m.submodules.reset_sync = ResetSynchronizer(board_reset | ~locked, domain="sync")
        return m
