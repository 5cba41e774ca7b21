"""Formal properties of :class:`~sparqforge.hw.mac_array.MacArray` (raw accumulator output,
``requant=False``; the requantizer has its own harness).

Proven by bounded model checking from the initial state, for every input the environment
may offer under the stream rules and tiles of at most ``tile_beats`` beats:

* ``o`` keeps the stream rules (``o_valid_held``, ``o_payload_held``);
* ``a`` and ``w`` are taken together (``a_w_together``);
* every output row is the exact sum of its tile's products, computed in the harness with
  a 16-bit shadow sum, with the tile's tag and ``last`` on its final row (``o_data``): a beat
  lost, duplicated, taken while not ready, or an accumulator that wraps, changes a sum;
* no row is emitted that no tile owes (``o_no_extra_row``), at most one tile's rows are
  owed at any time (``o_backlog``), and all of them are out once the array was left alone
  for its latency plus a drain (``o_drained``);
* the shadow sums stay inside the accumulator's range (``acc_in_range``): with ``o_data``,
  the array's accumulator (the shadow sum modulo ``2 ** acc_bits``) never wraps.

The ``lemma_*`` properties tie every accumulator and shadow-bank register to the harness's
sums (which the harness adds in the same cycle as the array) and bound a partial sum of ``n``
products; the solver proves them step by step and then uses them.
"""

__all__ = ["MacArrayHarness", "ReadyIgnoresShadow", "mac_array"]

from amaranth.hdl import Array, Cat, Mux, Signal, signed
from amaranth.lib import data

from ...hw.mac_array import MacArray
from ...sw.golden.numerics import product_range
from .properties import (
    Harness,
    assert_held,
    check,
    drained,
    drive_sink,
    drive_source,
    held,
    observe,
)

#: The parameters of the proofs: a 2 x 2 array of signed 3-bit operands, two tag groups.
PARAMETERS = dict(rows=2, cols=2, a_bits=3, w_bits=3, a_signed=True, w_signed=True,
                  groups=2, requant=False)


def mac_array(max_depth=5, cls=MacArray):
    """The array the proofs check (:data:`PARAMETERS`), built for ``max_depth``."""
    return cls(**PARAMETERS, max_depth=max_depth)


class ReadyIgnoresShadow(MacArray):
    """Broken: ``a`` and ``w`` are ready whenever the other stream is valid, so a tile's last
    beat is taken while the shadow bank still drains the previous tile."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += [self.a.ready.eq(self.w.valid), self.w.ready.eq(self.a.valid)]
        return m


class MacArrayHarness(Harness):
    """The properties of this module on ``dut`` (a ``requant=False`` :class:`MacArray`), with
    tiles of at most ``tile_beats`` beats (``dut.max_depth`` by default) and ``fault``
    (:data:`~sparqforge.sim.formal.properties.FAULTS`) between ``dut.o`` and the harness."""

    def __init__(self, dut, *, tile_beats=None, fault=None):
        super().__init__(dut)
        self.tile_beats = dut.max_depth if tile_beats is None else tile_beats
        self.fault = fault

    def properties(self, m, dut):
        rows, cols = dut.rows, dut.cols
        drive_source(m, dut.a, "a")
        drive_source(m, dut.w, "w")
        o = observe(m, dut, "o", self.fault)
        drive_sink(m, o, "o")
        assert_held(m, o, "o")

        a_fire = dut.a.valid & dut.a.ready
        w_fire = dut.w.valid & dut.w.ready
        o_fire = o.valid & o.ready
        check(m, "a_w_together", a_fire == w_fire)
        fire = a_fire & w_fire
        last = dut.w.payload.last

        # Tiles of at most ``tile_beats`` beats: the beat that reaches the bound is last.
        beats = Signal(range(self.tile_beats + 1))
        with m.If(fire):
            m.d.sync += beats.eq(Mux(last, 0, beats + 1))
        check(m, "tile_bound", ~dut.w.valid | last | (beats != self.tile_beats - 1),
              kind="assume")

        # The harness adds a beat's products in the cycle the array does (the beat's
        # operands and flags pass ``core_latency - 1`` registers first): an unrolled model then
        # adds the same products in the same steps as the array, which the solver matches
        # term by term instead of searching every way the beats could line up.
        delay = dut.core_latency - 1
        beat = Cat(fire, last, dut.w.payload.tag, dut.a.payload.as_value(),
                   dut.w.payload.data.as_value())
        for k in range(delay):
            beat = held(m, beat, f"beat_d{k + 1}")
        d_fire, d_last = beat[0], beat[1]
        d_tag = beat[2:2 + dut.tag_bits]
        a_width = len(dut.a.payload.as_value())
        d_a = data.View(dut.a.payload.shape(), beat[2 + dut.tag_bits:][:a_width])
        d_w = data.View(dut.w.payload.data.shape(),
                        beat[2 + dut.tag_bits + a_width:])
        # Shadow sums: exact ones (16 bits hold any tile of the harness: |sum| <= 16 * 2 ** 7),
        # and ones of the accumulator's width (wrapping as it would), which the lemmas tie to
        # the array's registers.
        low, high = -(1 << (dut.acc_bits - 1)), (1 << (dut.acc_bits - 1)) - 1
        p_low, p_high = product_range(dut.a_bits, dut.a_signed, dut.w_bits, dut.w_signed)
        # Products added so far to the tile being accumulated, as the array sees them.
        added = Signal(range(self.tile_beats + 1))
        with m.If(d_fire):
            m.d.sync += added.eq(Mux(d_last, 0, added + 1))
        sums = {}
        for kind, width in (("exact", 16), ("wrapped", dut.acc_bits)):
            partial = [[Signal(signed(width), name=f"{kind}_partial_{r}_{c}")
                        for c in range(cols)] for r in range(rows)]
            snap = [[Signal(signed(width), name=f"{kind}_snap_{r}_{c}") for c in range(cols)]
                    for r in range(rows)]
            sums[kind] = partial, snap
            for r in range(rows):
                for c in range(cols):
                    total = partial[r][c] + d_a[r] * d_w[c]
                    with m.If(d_fire):
                        with m.If(d_last):
                            m.d.sync += [snap[r][c].eq(total), partial[r][c].eq(0)]
                        with m.Else():
                            m.d.sync += partial[r][c].eq(total)
        (exact, exact_snap), (wrapped, wrapped_snap) = sums["exact"], sums["wrapped"]
        for r in range(rows):
            for c in range(cols):
                for value in (exact[r][c], exact_snap[r][c]):
                    check(m, "acc_in_range", (value >= low) & (value <= high))
                # Lemmas: each accumulator and shadow register holds the wrapped sum, which is
                # the exact one's low bits; a sum of n products is in [n * p_low, n * p_high].
                check(m, "lemma_acc", self.internal(f"acc_{r}_{c}") == wrapped[r][c])
                check(m, "lemma_shadow", self.internal(f"shadow_{r}_{c}") == wrapped_snap[r][c])
                check(m, "lemma_wrapped", (wrapped[r][c].as_unsigned()
                                           == exact[r][c][:dut.acc_bits])
                      & (wrapped_snap[r][c].as_unsigned() == exact_snap[r][c][:dut.acc_bits]))
                check(m, "lemma_partial_range", (exact[r][c] >= added * p_low)
                      & (exact[r][c] <= added * p_high))
                check(m, "lemma_snap_range", (exact_snap[r][c] >= self.tile_beats * p_low)
                      & (exact_snap[r][c] <= self.tile_beats * p_high))
        snap_tag = Signal(dut.tag_bits)
        with m.If(d_fire & d_last):
            m.d.sync += snap_tag.eq(d_tag)

        # Rows owed: a tile's last beat owes ``rows`` rows, each output beat pays one.
        owed = Signal(range(4 * rows + 2))
        m.d.sync += owed.eq(owed + Mux(fire & last, rows, 0) - o_fire)
        out_row = Signal(range(rows))
        with m.If(o_fire):
            m.d.sync += out_row.eq(Mux(out_row == rows - 1, 0, out_row + 1))
        check(m, "o_no_extra_row", ~o.valid | (owed != 0))
        check(m, "o_backlog", owed <= rows)
        # Each output row: its tile's exact sums (an accumulator that wrapped differs), tag
        # and ``last``.
        row_ok = 1
        for c in range(cols):
            row_ok &= o.payload.data[c] == Array(exact_snap[r][c] for r in range(rows))[out_row]
        check(m, "o_data", ~o.valid | (row_ok & (o.payload.tag == snap_tag)
                                       & (o.payload.last == (out_row == rows - 1))))
        quiet = ~dut.a.valid & ~dut.w.valid & o.ready
        check(m, "o_drained", ~drained(m, quiet, dut.core_latency + rows + 1, "o")
              | (owed == 0))
