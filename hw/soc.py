"""The board system: the accelerator behind a UART, with status LEDs."""

__all__ = ["Soc", "SocTop", "uart_divisor"]

from amaranth.hdl import Cat, ClockDomain, Module, Signal
from amaranth.lib import cdc, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .accelerator import Accelerator
from .uart import MIN_DIVISOR, UartRx, UartTx

#: Largest bit-rate error accepted between the requested baud rate and clock / divisor;
#: with the receiver sampling mid-bit, both ends together may be off by about 5 %.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_freq, baud):
    """Clock cycles per UART bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    ValueError
        When no integer divisor of at least 4 comes within 2 % of ``baud``.

    >>> uart_divisor(100e6, 115200)
    868
    >>> uart_divisor(16, 1)
    16
    """
    if not isinstance(clk_freq, (int, float)) or isinstance(clk_freq, bool) or clk_freq <= 0:
        raise TypeError(f"Clock frequency must be a positive number of Hz, not {clk_freq!r}")
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise TypeError(f"Baud rate must be a positive integer, not {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} clock cycles per bit; "
                         f"at {clk_freq:g} Hz use at most {int(clk_freq // MIN_DIVISOR)} baud")
    actual = clk_freq / divisor
    if abs(actual - baud) > MAX_BAUD_ERROR * baud:
        raise ValueError(f"{clk_freq:g} Hz cannot make {baud} baud within "
                         f"{MAX_BAUD_ERROR:.0%} (divisor {divisor} gives {actual:.0f} baud); "
                         f"choose another baud rate or clock frequency")
    return divisor


class _Stretch:
    """A one-cycle event made visible: ``led`` stays on for ``ticks`` pulses of ``tick``
    after the last one. (A count of ticks, not of cycles: the counter and its zero test
    stay a few bits wide.)"""

    def __init__(self, m, event, tick, ticks, name):
        self.count = Signal(range(ticks + 1), name=f"{name}_stretch")
        with m.If(event):
            m.d.sync += self.count.eq(ticks)
        with m.Elif(tick & (self.count != 0)):
            m.d.sync += self.count.eq(self.count - 1)
        self.led = self.count != 0


class Soc(wiring.Component):
    """An :class:`~sparqforge.hw.accelerator.Accelerator` (``gated=False``, one clock) whose
    byte link runs over an 8N1 UART, for a board.

    The host is stop-and-wait (one frame in flight) and the accelerator takes one byte per
    cycle while a frame arrives, far faster than any UART delivers them, so the link needs
    no flow control. A small receive FIFO absorbs bytes sent while a complete frame is still
    being executed (a host retry after a timeout); if even that overflows, the bytes are
    dropped, the frame's CRC fails and the host retries, as the protocol intends.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator (built with ``gated=False``: one clock domain).
    clk_freq : float
        Frequency of the ``sync`` clock domain, Hz.
    baud : int
        UART bit rate; ``clk_freq / baud`` rounded must be at least 4 and within 2 %.
    rx_fifo : int
        Receive FIFO depth, bytes.
    config : AcceleratorConfig
        The accelerator (built with ``gated=False``: one clock domain).

    Attributes
    ----------
    uart_rx : In(1)
        Serial data from the host (idle high).
    uart_tx : Out(1)
        Serial data to the host (idle high).
    leds : Out(4)
        0: heartbeat (about 1 s period); 1: busy (executing or answering a command);
        2: receiving; 3: transmitting. Events 1..3 are stretched to about 50 ms.
    idle : Out(1)
        Nothing is being received, buffered, executed or sent (for simulation).

    Raises
    ------
    TypeError, ValueError
        On a bad clock or baud rate (see :func:`uart_divisor`).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)
    idle: Out(1)

    def __init__(self, config, *, clk_freq, baud=115200, rx_fifo=16):
        if not isinstance(rx_fifo, int) or isinstance(rx_fifo, bool) or not 2 <= rx_fifo <= 4096:
            raise TypeError(f"Receive FIFO depth must be an integer in 2..4096, not {rx_fifo!r}")
        self._divisor = uart_divisor(clk_freq, baud)
        self._clk_freq = clk_freq
        self._baud = baud
        self._rx_fifo = rx_fifo
        self._accelerator = Accelerator(config, gated=False)
        super().__init__()

    accelerator = property(lambda self: self._accelerator)
    config = property(lambda self: self._accelerator.config)
    clk_freq = property(lambda self: self._clk_freq)
    baud = property(lambda self: self._baud)
    divisor = property(lambda self: self._divisor)
    info = property(lambda self: self._accelerator.info)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accelerator = accel = self._accelerator
        m.submodules.uart_rx = urx = UartRx(self._divisor)
        m.submodules.uart_tx = utx = UartTx(self._divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo)
        # The reply bytes pass a 2-deep FIFO: the frame transmitter's handshake and the
        # UART's state machine are then never in one path.
        m.submodules.tx_fifo = tx_fifo = SyncFIFOBuffered(width=8, depth=2)

        m.d.comb += [
            urx.rx.eq(self.uart_rx),
            self.uart_tx.eq(utx.tx),
            fifo.w_data.eq(urx.o.payload), fifo.w_en.eq(urx.o.valid),
            urx.o.ready.eq(fifo.w_rdy),
            accel.rx.payload.eq(fifo.r_data), accel.rx.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(accel.rx.ready),
        ]
        m.d.comb += [tx_fifo.w_data.eq(accel.tx.payload), tx_fifo.w_en.eq(accel.tx.valid),
                     accel.tx.ready.eq(tx_fifo.w_rdy),
                     utx.i.payload.eq(tx_fifo.r_data), utx.i.valid.eq(tx_fifo.r_rdy),
                     tx_fifo.r_en.eq(utx.i.ready)]
        m.d.comb += self.idle.eq(accel.idle & ~urx.busy & ~urx.o.valid & (fifo.level == 0)
                                 & (tx_fifo.level == 0) & ~utx.busy)

        # A free-running counter's top bit toggles about every half second.
        heartbeat = Signal(max(1, ceil_log2(int(self._clk_freq)) - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        # The status inputs and the LED outputs are registered: the stretch counters and
        # the LED pins sit far from the executor and the UART, and nothing here needs to
        # be timely.
        tick_bits = min(16, len(heartbeat))
        tick = Signal()
        m.d.sync += tick.eq(heartbeat[:tick_bits] == 0)
        visible = max(1, int(self._clk_freq) // 20 >> tick_bits)
        events = Signal(3)
        m.d.sync += events.eq(Cat(~accel.idle, urx.busy, utx.busy))
        stretched = [_Stretch(m, events[i], tick, visible, name)
                     for i, name in enumerate(("busy", "rx", "tx"))]
        leds = Signal(4)
        m.d.sync += leds.eq(Cat(heartbeat[-1], *(s.led for s in stretched)))
        m.d.comb += self.leds.eq(leds)
        return m


class SocTop(wiring.Component):
    """A top for simulating a :class:`Soc` as a board runs it: a ``clk`` port clocking its
    ``sync`` domain and a ``rst`` port through a
    :class:`~amaranth.lib.cdc.ResetSynchronizer` (which also keeps the reset out of every
    register's next-state logic as a simulator sees it).

    Attributes
    ----------
    clk, rst : In(1)
    uart_rx, uart_tx, leds, idle :
        The :class:`Soc`'s ports.
    """

    clk: In(1)
    rst: In(1)
    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)
    idle: Out(1)

    def __init__(self, soc):
        self._soc = soc
        super().__init__()

    soc = property(lambda self: self._soc)
    info = property(lambda self: self._soc.info)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = domain = ClockDomain(local=True)
        m.d.comb += domain.clk.eq(self.clk)
        m.submodules.reset_sync = cdc.ResetSynchronizer(self.rst, domain="sync")
        m.submodules.soc = soc = self._soc
        m.d.comb += [soc.uart_rx.eq(self.uart_rx), self.uart_tx.eq(soc.uart_tx),
                     self.leds.eq(soc.leds), self.idle.eq(soc.idle)]
        return m
