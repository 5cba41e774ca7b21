"""Build the Verilated board system (UART + accelerator) with the UART harness (cached)."""

__all__ = ["UartLinkModel"]

from .harness import VerilatedBinary, pipe_io_header


class UartLinkModel:
    """A :class:`~sparqforge.hw.soc.Soc` compiled with ``sim/harness/uart_harness.cpp``,
    which serializes the host's bytes onto ``uart_rx`` and deserializes ``uart_tx`` at the
    Soc's divisor. The executable speaks the same pipe protocol as
    :class:`~sparqforge.sim.link_model.LinkModel`'s, so
    :class:`~sparqforge.sw.runtime.link.PipeTransport` drives it unchanged; budgets are in
    clock cycles (a byte takes ``10 * divisor``).

    Parameters
    ----------
    soc : Soc
        The board system; it is wrapped in a :class:`~sparqforge.hw.soc.SocTop` (clock and
        reset ports). A small divisor (``clk_freq = 16 * baud``) keeps simulation fast.
    name : str
        Module name of the simulated top.
    jobs : int
        Parallel compile jobs.
    """

    def __init__(self, soc, name="soc", *, jobs=2):
        from ..hw.emit import to_verilog
        from ..hw.soc import SocTop

        self.divisor = soc.divisor
        self.info = soc.info
        self._binary = VerilatedBinary(to_verilog(SocTop(soc), name), name, "uart_harness.cpp",
                                       kind="uart", cflags=f"-DUART_DIVISOR={soc.divisor}",
                                       extra_files=pipe_io_header(), jobs=jobs)

    @property
    def executable(self):
        return self._binary.executable

    def build(self):
        """Compile unless cached; return the executable (see
        :class:`~sparqforge.sim.harness.VerilatedBinary`)."""
        return self._binary.build()
