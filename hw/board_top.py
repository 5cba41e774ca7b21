"""The top a board runs: clock and reset, the UART pins and the LEDs around a Soc."""

__all__ = ["BoardTop"]

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io


class BoardTop(Elaboratable):
    """Connects a :class:`~sparqforge.hw.soc.Soc` to a platform's resources.

    Parameters
    ----------
    soc : Soc
        Built for the ``sync`` frequency this top makes (``soc.clk_freq``).
    clock : ~sparqforge.hw.clocking.BoardClock
        Creates the ``sync`` domain (through a PLL when ``soc.clk_freq`` is not the
        oscillator's).
    uart : (name, number)
        UART resource with ``rx`` and ``tx`` subsignals.
    leds : sequence
        Up to four LED resources for ``soc.leds`` bits 0..3, each ``(name, number)``,
        ``(name, number, subsignal)`` or ``None``.
    """

    def __init__(self, soc, *, clock, uart, leds):
        if abs(clock.f_out - soc.clk_freq) > 1e-6 * soc.clk_freq:
            raise ValueError(f"The Soc is built for {soc.clk_freq:g} Hz but the board clock "
                             f"makes {clock.f_out:g} Hz; build the Soc for the clock's "
                             f"frequency")
        self._soc = soc
        self._clock = clock
        self._uart = uart
        self._leds = tuple(leds)

    soc = property(lambda self: self._soc)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clock = self._clock
        m.submodules.soc = soc = self._soc
        uart = platform.request(*self._uart, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.uart_rx.eq(rx.i), tx.o.eq(soc.uart_tx)]
        requested = {}
        for bit, spec in enumerate(self._leds):
            if spec is None:
                continue
            if spec[:2] not in requested:     # an RGB LED's colours share one resource
                requested[spec[:2]] = platform.request(*spec[:2], dir="-")
            led = requested[spec[:2]]
            if len(spec) > 2:
                led = getattr(led, spec[2])
            m.submodules[f"led_{bit}"] = buffer = io.Buffer("o", led)
            m.d.comb += buffer.o.eq(soc.leds[bit])
        return m
