"""The writeback: a layer's output rows from the array core into the activation banks."""

__all__ = ["Writeback"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..protocol import Mode
from .feeder import descriptor_layout


class Writeback(wiring.Component):
    """Writes each output row the core emits into its bank and counts the layer's cycles.

    Output row ``m`` of channel tile ``nt`` goes to bank ``m % rows``, word ``out_base +
    (m // rows) * out_stride + nt`` (the order the core emits rows in: every row of a row
    tile, row tiles, then channel tiles); in ``Mode.CONV`` (on accelerators with ``conv``)
    output row ``m`` (a pixel) goes to word ``out_base + m * out_stride + nt`` of every bank.
    Output codes narrower than a byte are stored zero-extended. The core's output is always
    taken (``ready`` is high): the banks accept a row every cycle.

    Parameters
    ----------
    config : AcceleratorConfig
    o_signature : stream.Signature
        The array core's ``o`` stream.
    out_bits : int
        Width of the core's output codes.

    Attributes
    ----------
    start : In(1)
        Pulse: begin the layer in ``desc``.
    desc : In(descriptor_layout())
    o : In(stream)
        Output rows.
    write : Out(addr, data, en)
        The banks' write port (``en`` one bit per bank).
    running : Out(1)
        From ``start`` until the last row was written.
    finished : Out(1)
        Pulse in the cycle after the last row was written.
    cycles : Out(32)
        Cycles from ``start`` to the last row (held until the next ``start``).
    """

    def __init__(self, config, *, o_signature, out_bits):
        self._config = config
        self._out_bits = out_bits
        super().__init__({
            "start": In(1),
            "desc": In(descriptor_layout()),
            "o": In(o_signature),
            "write": Out(wiring.Signature({
                "addr": Out(config.act_depth_bits),
                "data": Out(data.ArrayLayout(8, config.cols)),
                "en": Out(config.rows)})),
            "running": Out(1),
            "finished": Out(1),
            "cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        config, desc = self._config, self.desc
        rows = config.rows
        out_r = Signal(range(rows))
        out_mt, out_nt = Signal(16), Signal(16)
        # The loop tests, registered with their counters (as in the feeder).
        out_r_last, out_mt_last, out_nt_last = Signal(), Signal(), Signal()
        # ``out_col`` is out_base + out_nt; ``out_word`` the current output row's word. Each
        # is updated by one addition.
        out_col, out_word = Signal(16), Signal(16)
        m.d.comb += self.o.ready.eq(1)
        m.d.comb += [self.write.addr.eq(out_word),
                     self.write.data.eq(Cat(*(lane.as_unsigned() if self._out_bits == 8 else
                                              Cat(lane, Const(0, 8 - self._out_bits))
                                              for lane in self.o.payload.data)))]
        # A convolution's pixels are rows of every bank, one word per pixel.
        conv = desc.mode[Mode.CONV.bit] if config.conv else 0
        with m.If(self.o.valid):
            m.d.comb += self.write.en.eq(Mux(conv, (1 << rows) - 1, 1 << out_r))
        m.d.sync += self.finished.eq(0)
        with m.If(self.start):
            m.d.sync += [out_r.eq(0), out_mt.eq(0), out_nt.eq(0),
                         out_r_last.eq(rows == 1), out_mt_last.eq(desc.m_last == 0),
                         out_nt_last.eq(desc.n_last == 0),
                         out_col.eq(desc.out_base), out_word.eq(desc.out_base),
                         self.running.eq(1), self.cycles.eq(0)]
        with m.Elif(self.running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.o.valid):
            with m.If(out_r_last):
                m.d.sync += [out_r.eq(0), out_r_last.eq(rows == 1)]
                with m.If(out_mt_last):
                    m.d.sync += [out_mt.eq(0), out_nt.eq(out_nt + 1),
                                 out_col.eq(out_col + 1), out_word.eq(out_col + 1),
                                 out_mt_last.eq(desc.m_last == 0),
                                 out_nt_last.eq(out_nt + 1 == desc.n_last)]
                    with m.If(out_nt_last):
                        m.d.sync += [self.running.eq(0), self.finished.eq(1)]
                with m.Else():
                    m.d.sync += [out_mt.eq(out_mt + 1),
                                 out_word.eq(out_word + desc.out_stride),
                                 out_mt_last.eq(out_mt + 1 == desc.m_last)]
            with m.Else():
                m.d.sync += [out_r.eq(out_r + 1), out_r_last.eq(out_r + 1 == rows - 1)]
                with m.If(conv):
                    m.d.sync += out_word.eq(out_word + desc.out_stride)
        return m
