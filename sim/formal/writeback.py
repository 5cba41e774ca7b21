"""Formal properties of :class:`~sparqforge.hw.writeback.Writeback`: every output row of a
layer is written exactly once, to its bank and word in the RUN descriptor's order, with its
codes zero-extended, and ``finished`` / ``running`` mark the layer's end."""

__all__ = ["WritebackHarness", "WritesWithoutRow", "writeback"]

from amaranth.hdl import Cat, Const, Signal

from ...config import AcceleratorConfig
from ...hw.array_core import ArrayCore
from ...hw.writeback import Writeback
from .layer_harness import drive_layer
from .properties import Harness, check, drive_source, held

#: Two banks of two 4-bit codes. (Without the window walk: the proofs cover matrix layers;
#: ``tests/hw/test_writeback.py`` covers convolution pixels.)
CONFIG = AcceleratorConfig(rows=2, cols=2, act_depth=64, groups=4, conv=False)
OUT_BITS = 4


def writeback(cls=Writeback):
    core = ArrayCore(rows=CONFIG.rows, cols=CONFIG.cols, max_depth=CONFIG.max_depth,
                     groups=CONFIG.groups, requant=False, threshold_bits=OUT_BITS, out_bits=8,
                     a_signed=False)
    return cls(CONFIG, o_signature=core.signature.members["o"].signature,
               out_bits=core.out_bits)


class WritesWithoutRow(Writeback):
    """Broken: the bank of the current row is written whether or not a row arrives."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.write.en.eq(Const(1, len(self.write.en)))
        return m


class WritebackHarness(Harness):
    """One write per row, to its place; ``finished`` once, the cycle after the last row."""

    def properties(self, m, dut):
        rows = CONFIG.rows
        start, started = drive_layer(m, dut)
        drive_source(m, dut.o, "o")
        desc = dut.desc
        # Rows arrive only during the layer (the core emits them after the start).
        check(m, "rows_in_layer", ~dut.o.valid | (started & dut.running), kind="assume")
        check(m, "o_always_ready", dut.o.ready)

        # Where the next row goes: bank ``r`` of row tile ``mt``, channel tile ``nt``.
        r, mt, nt = Signal(range(rows)), Signal(4), Signal(4)
        row = dut.o.valid
        with m.If(row):
            with m.If(r == rows - 1):
                m.d.sync += r.eq(0)
                with m.If(mt == desc.m_last):
                    m.d.sync += [mt.eq(0), nt.eq(nt + 1)]
                with m.Else():
                    m.d.sync += mt.eq(mt + 1)
            with m.Else():
                m.d.sync += r.eq(r + 1)
        word = Signal(16)
        with m.If(start):
            m.d.sync += word.eq(desc.out_base)
        with m.Elif(row):
            with m.If(r == rows - 1):
                with m.If(mt == desc.m_last):
                    m.d.sync += word.eq(desc.out_base + nt + 1)
                with m.Else():
                    m.d.sync += word.eq(word + desc.out_stride)
        # Lemma: the writeback's bank counter is the harness's.
        check(m, "lemma_bank", self.internal("out_r") == r)
        data = Cat(*(Cat(lane, Const(0, 8 - OUT_BITS)) for lane in dut.o.payload.data))
        check(m, "one_write_per_row", dut.write.en == (row << r))
        check(m, "write_place", ~row | ((dut.write.addr == word[:len(dut.write.addr)])
                                        & (dut.write.data.as_value() == data)))
        final = row & (r == rows - 1) & (mt == desc.m_last) & (nt == desc.n_last)
        was_final = held(m, final, "final_row")
        check(m, "finished_after_last_row", dut.finished == was_final)
        ended = Signal()
        with m.If(final):
            m.d.sync += ended.eq(1)
        check(m, "running", dut.running == (started & ~ended))
        check(m, "no_row_after_layer", ~(row & (nt > desc.n_last)))


def make(what):
    """The harness of a job: ``"pass"`` or ``"writes_without_row"``."""
    return WritebackHarness(writeback(WritesWithoutRow if what == "writes_without_row"
                                      else Writeback))
