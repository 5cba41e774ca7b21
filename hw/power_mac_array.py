"""MAC array with power-exponent units: weights and activations enter as stored codes,
outputs leave as codes, integer-only throughout."""

__all__ = ["PowerMacArray", "CFG_ACT_TABLE", "CFG_WEIGHT_TABLE", "CFG_THRESHOLD"]

from amaranth.hdl import Cat, Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .dequant_unit import DequantUnit
from .mac_array import MacArray
from .sparse_mac_array import SparseMacArray
from .threshold_unit import ThresholdUnit

#: ``cfg.target`` values.
CFG_ACT_TABLE, CFG_WEIGHT_TABLE, CFG_THRESHOLD = 0, 1, 2


class PowerMacArray(wiring.Component):
    """A :class:`DequantUnit` on each operand stream, a dense or N:M
    :class:`~sparqforge.hw.mac_array.MacArray` without requantizer, and a
    :class:`ThresholdUnit` on its accumulators.

    Activations are stored as ``act_code_bits`` codes and weights as ``w_code_bits`` codes;
    per-layer activation tables and per-channel-group weight tables turn them into the
    ``a_bits`` / ``w_bits`` integers the array multiplies, and thresholds turn each
    accumulator into the next layer's ``out_code_bits`` code (see ``docs/numerics.md``).

    Parameters
    ----------
    rows, cols, a_bits, a_signed, w_bits, w_signed, max_depth, groups :
        As for :class:`~sparqforge.hw.mac_array.MacArray`.
    sparsity : (int, int) or None
        N:M pattern for a :class:`~sparqforge.hw.sparse_mac_array.SparseMacArray`.
    act_code_bits, w_code_bits, out_code_bits : int
        Stored activation, weight and output code widths.

    Attributes
    ----------
    a : In(stream)
        Activation codes (``rows``, or ``rows`` x ``m`` when sparse).
    w : In(stream)
        ``data`` (``cols`` codes, or ``cols`` x ``n`` of ``value`` code and ``index``),
        ``dense`` (sparse only), ``tag``, ``last``.
    o : Out(stream)
        ``data`` (``cols`` output codes), ``last``.
    cfg : In(stream)
        Always ready: ``target`` (activation table, weight table or thresholds), ``lane``,
        ``all`` (tables: every lane), ``group``, ``index`` (code or threshold index),
        ``value``.
    """

    def __init__(self, *, rows, cols, a_bits=8, a_signed=False, w_bits=8, w_signed=True,
                 max_depth=4096, groups=1, sparsity=None, act_code_bits=4, w_code_bits=4,
                 out_code_bits=4):
        kw = dict(rows=rows, cols=cols, a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                  w_signed=w_signed, max_depth=max_depth, groups=groups, requant=False)
        if sparsity is None:
            self._array = MacArray(**kw)
        else:
            n, m = sparsity
            self._array = SparseMacArray(n=n, m=m, **kw)
        self._sparsity = sparsity
        self._a_elems = 1 if sparsity is None else sparsity[1]
        self._w_elems = 1 if sparsity is None else sparsity[0]
        # ``last``, plus ``dense`` and every kept weight's index when sparse.
        self._side_bits = 1 + (0 if sparsity is None else
                               1 + cols * self._w_elems * self._array.index_bits)
        self._act = DequantUnit(lanes=rows, elems=self._a_elems, code_bits=act_code_bits,
                                out_bits=a_bits, out_signed=a_signed)
        self._weight = DequantUnit(lanes=cols, elems=self._w_elems, code_bits=w_code_bits,
                                   out_bits=w_bits, out_signed=w_signed, groups=groups,
                                   side_bits=self._side_bits)
        self._threshold = ThresholdUnit(lanes=cols, acc_bits=self._array.acc_bits,
                                        code_bits=out_code_bits, groups=groups)
        self._codes = (act_code_bits, w_code_bits, out_code_bits)

        code = unsigned(act_code_bits)
        a_lane = code if sparsity is None else data.ArrayLayout(code, self._a_elems)
        w_code = unsigned(w_code_bits)
        if sparsity is None:
            w_lane = w_code
            w_fields = {}
        else:
            w_lane = data.ArrayLayout(data.StructLayout({
                "value": w_code, "index": unsigned(self._array.index_bits)}), self._w_elems)
            w_fields = {"dense": unsigned(1)}
        value_bits = max(self._threshold.threshold_bits, a_bits + 1, w_bits + 1)
        index_bits = max(act_code_bits, w_code_bits, out_code_bits)
        super().__init__({
            "a": In(stream.Signature(data.ArrayLayout(a_lane, rows))),
            "w": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(w_lane, cols), **w_fields,
                "tag": unsigned(self._array.tag_bits), "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(unsigned(out_code_bits), cols),
                "last": unsigned(1)}))),
            "cfg": In(stream.Signature(data.StructLayout({
                "target": unsigned(2), "lane": unsigned(ceil_log2(max(rows, cols))),
                "all": unsigned(1), "group": unsigned(self._array.tag_bits),
                "index": unsigned(index_bits), "value": signed(value_bits)}))),
        })

    array = property(lambda self: self._array)
    acc_bits = property(lambda self: self._array.acc_bits)
    tag_bits = property(lambda self: self._array.tag_bits)

    @property
    def latency(self):
        """Cycles from a tile's last beat to its first output row."""
        return (DequantUnit.latency + self._array.latency + self._threshold.latency)

    @property
    def min_tile_beats(self):
        return self._array.min_tile_beats

    @property
    def params(self):
        act, weight, out = self._codes
        return {**self._array.params, "requant": False, "sparsity": self._sparsity,
                "act_code_bits": act, "w_code_bits": weight, "out_code_bits": out,
                "thresholds": self._threshold.thresholds}

    def elaborate(self, platform):
        m = Module()
        m.submodules.act_dequant = act = self._act
        m.submodules.weight_dequant = weight = self._weight
        m.submodules.array = array = self._array
        m.submodules.threshold = threshold = self._threshold
        sparse = self._sparsity is not None

        # Activation codes -> table -> array.
        m.d.comb += [act.i.valid.eq(self.a.valid), self.a.ready.eq(act.i.ready),
                     array.a.valid.eq(act.o.valid), act.o.ready.eq(array.a.ready)]
        for r in range(self._array.rows):
            for e in range(self._a_elems):
                code = self.a.payload[r][e] if sparse else self.a.payload[r]
                value = array.a.payload[r][e] if sparse else array.a.payload[r]
                m.d.comb += [act.i.payload.codes[r][e].eq(code),
                             value.eq(act.o.payload.values[r][e])]

        # Weight codes -> table -> array; indices, mode and last ride in ``side``.
        w_in, w_out = self.w.payload, array.w.payload
        m.d.comb += [weight.i.valid.eq(self.w.valid), self.w.ready.eq(weight.i.ready),
                     array.w.valid.eq(weight.o.valid), weight.o.ready.eq(array.w.ready),
                     weight.i.payload.tag.eq(w_in.tag), w_out.tag.eq(weight.o.payload.tag)]
        side_in, side_out = [w_in.last], [w_out.last]
        for c in range(self._array.cols):
            for e in range(self._w_elems):
                if sparse:
                    m.d.comb += [weight.i.payload.codes[c][e].eq(w_in.data[c][e].value),
                                 w_out.data[c][e].value.eq(weight.o.payload.values[c][e])]
                    side_in.append(w_in.data[c][e].index)
                    side_out.append(w_out.data[c][e].index)
                else:
                    m.d.comb += [weight.i.payload.codes[c][e].eq(w_in.data[c]),
                                 w_out.data[c].eq(weight.o.payload.values[c][e])]
        if sparse:
            side_in.append(w_in.dense)
            side_out.append(w_out.dense)
        assert len(Cat(*side_in)) == self._side_bits
        m.d.comb += [weight.i.payload.side.eq(Cat(*side_in)),
                     Cat(*side_out).eq(weight.o.payload.side)]

        # Accumulators -> thresholds -> output codes.
        wiring.connect(m, array.o, threshold.i)
        wiring.connect(m, threshold.o, wiring.flipped(self.o))

        cfg = self.cfg.payload
        for unit, target in ((act, CFG_ACT_TABLE), (weight, CFG_WEIGHT_TABLE)):
            m.d.comb += [
                unit.cfg.valid.eq(self.cfg.valid & (cfg.target == target)),
                unit.cfg.payload.lane.eq(cfg.lane), unit.cfg.payload.all.eq(cfg.all),
                unit.cfg.payload.group.eq(cfg.group), unit.cfg.payload.code.eq(cfg.index),
                unit.cfg.payload.value.eq(cfg.value),
            ]
        m.d.comb += [
            threshold.cfg.valid.eq(self.cfg.valid & (cfg.target == CFG_THRESHOLD)),
            threshold.cfg.payload.lane.eq(cfg.lane), threshold.cfg.payload.group.eq(cfg.group),
            threshold.cfg.payload.index.eq(cfg.index), threshold.cfg.payload.value.eq(cfg.value),
            self.cfg.ready.eq(1),
        ]
        return m
