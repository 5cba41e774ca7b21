"""Formal properties of :class:`~sparqforge.hw.feeder.Feeder`: for any small RUN descriptor
and any stalls of the core, ``a`` and ``w`` keep the stream rules, each carries exactly the
layer's beats (``(k_last + 1) * (m_last + 1) * (n_last + 1)``: none lost in a full FIFO,
none repeated, all out once the core takes them), and every weight beat is the word of its
address (``w_base + nt * k_steps + s``, read from memories modelled with their three-cycle
latency) with its tile's tag and ``last``."""

__all__ = ["FeederHarness", "WeightsPopWithActivations", "feeder"]

from amaranth.hdl import Signal

from ...config import AcceleratorConfig
from ...hw.array_core import ArrayCore
from ...hw.feeder import Feeder
from .layer_harness import LIMITS, drive_layer, max_beats
from .properties import Harness, assert_held, check, drained, drive_sink, held

#: A 2 x 2 dense array of 2-bit weights (a 4-bit weight word). (Without the window walk:
#: the proofs cover matrix layers; ``tests/hw/test_conv_walk.py`` and
#: ``tests/hw/test_feeder.py`` cover convolution windows.)
CONFIG = AcceleratorConfig(rows=2, cols=2, w_bits=2, act_depth=64, groups=4, conv=False)

#: Two steps per tile (every loop still wraps): up to 8 beats per layer.
FEEDER_LIMITS = {**LIMITS, "k_last": 1}

#: Cycles from an address to its word on the data inputs.
MEMORY_LATENCY = 3


def feeder(cls=Feeder):
    core = ArrayCore(rows=CONFIG.rows, cols=CONFIG.cols, a_bits=CONFIG.a_bits, a_signed=False,
                     w_bits=CONFIG.w_bits, w_signed=True, max_depth=CONFIG.max_depth,
                     groups=CONFIG.groups)
    return cls(CONFIG, a_signature=core.signature.members["a"].signature.flip(),
               w_signature=core.signature.members["w"].signature.flip(),
               tag_bits=core.tag_bits)


class WeightsPopWithActivations(Feeder):
    """Broken: the weight FIFOs are read when the core takes an activation beat, not a
    weight beat."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        for name in ("w_fifo", "side_fifo"):
            m.d.comb += m.submodules[name].r_en.eq(self.a.ready)
        return m


class FeederHarness(Harness):
    """The feeder's beats against the descriptor."""

    def properties(self, m, dut):
        start, started = drive_layer(m, dut, FEEDER_LIMITS)
        desc = dut.desc
        # The memories: a weight word is its own address, an activation lane anything.
        m.d.comb += dut.weight_data.eq(held(m, held(m, held(m, dut.weight_addr, "w_addr_1"),
                                                    "w_addr_2"), "w_addr_3"))
        for name in ("a", "w"):
            drive_sink(m, getattr(dut, name), name)
            assert_held(m, getattr(dut, name), name)
        a_fire = dut.a.valid & dut.a.ready
        w_fire = dut.w.valid & dut.w.ready

        # The layer's beats, counted by the harness: step s of row tile mt, channel tile nt.
        s, mt, nt = Signal(2), Signal(1), Signal(2)
        a_beats, w_beats = Signal(5), Signal(5)
        total = (desc.k_last + 1) * (desc.m_last + 1) * (desc.n_last + 1)
        word = Signal(8)   # w_base + nt * k_steps + s
        tile = Signal(8)   # w_base + nt * k_steps
        with m.If(start):
            m.d.sync += [word.eq(desc.w_base), tile.eq(desc.w_base)]
        with m.If(a_fire):
            m.d.sync += a_beats.eq(a_beats + 1)
        with m.If(w_fire):
            m.d.sync += w_beats.eq(w_beats + 1)
            with m.If(s == desc.k_last):
                m.d.sync += s.eq(0)
                with m.If(mt == desc.m_last):
                    m.d.sync += [mt.eq(0), nt.eq(nt + 1), tile.eq(tile + desc.k_steps),
                                 word.eq(tile + desc.k_steps)]
                with m.Else():
                    m.d.sync += [mt.eq(mt + 1), word.eq(tile)]
            with m.Else():
                m.d.sync += [s.eq(s + 1), word.eq(word + 1)]
        check(m, "k_steps", desc.k_steps == desc.k_last + 1, kind="assume")
        check(m, "a_no_extra_beat", ~dut.a.valid | (started & (a_beats < total)))
        check(m, "w_no_extra_beat", ~dut.w.valid | (started & (w_beats < total)))
        check(m, "w_beat", ~dut.w.valid | (
            (dut.w.payload.data.as_value() == word[:len(dut.weight_data)])
            & (dut.w.payload.tag == (desc.group_base + nt)[:len(dut.w.payload.tag)])
            & (dut.w.payload.last == (s == desc.k_last))))
        # Every beat is out once the core took whatever was offered for long enough (the
        # whole layer at one beat per cycle, plus the feeder's latency, the FIFO's and the
        # start's).
        quiet = dut.a.ready & dut.w.ready & started
        done = drained(m, quiet, max_beats(FEEDER_LIMITS) + Feeder.latency + 4, "layer")
        check(m, "all_beats_out", ~done | ((a_beats == total) & (w_beats == total)))


def make(what):
    """The harness of a job: ``"pass"`` or ``"pop"`` (the broken feeder)."""
    return FeederHarness(feeder(WeightsPopWithActivations if what == "pop" else Feeder))
