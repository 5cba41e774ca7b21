"""MAC array with power-exponent units: weights and activations enter as stored codes,
outputs leave as codes, integer-only throughout."""

__all__ = ["PowerMacArray", "CFG_ACT_TABLE", "CFG_WEIGHT_TABLE", "CFG_THRESHOLD"]

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .array_core import ArrayCore

#: ``cfg.target`` values.
CFG_ACT_TABLE, CFG_WEIGHT_TABLE, CFG_THRESHOLD = 0, 1, 2


class PowerMacArray(wiring.Component):
    """A dense or N:M MAC array with the power-exponent units: a :class:`DequantUnit` on each
    operand stream and a :class:`ThresholdUnit` on the accumulators (an
    :class:`~sparqforge.hw.array_core.ArrayCore` without requantizer), behind one
    configuration port.

    Activations are stored as ``act_code_bits`` codes and weights as ``w_code_bits`` codes;
    a per-layer activation table and per-channel-group weight tables turn them into the
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
        self._core = ArrayCore(rows=rows, cols=cols, a_bits=a_bits, a_signed=a_signed,
                               w_bits=w_bits, w_signed=w_signed, max_depth=max_depth,
                               groups=groups, sparsity=sparsity, tables=True,
                               act_code_bits=act_code_bits, w_code_bits=w_code_bits,
                               table_groups=groups, requant=False,
                               threshold_bits=out_code_bits)
        self._codes = (act_code_bits, w_code_bits, out_code_bits)
        core = self._core
        a_fields = {k: v for k, v in core.a.payload.shape()}
        w_fields = {k: v.shape for k, v in core.w.payload.shape() if k != "bypass"}
        threshold = core.unit("threshold")
        value_bits = max(threshold.threshold_bits, a_bits + 1, w_bits + 1)
        index_bits = max(act_code_bits, w_code_bits, out_code_bits)
        super().__init__({
            "a": In(stream.Signature(a_fields["data"].shape)),
            "w": In(stream.Signature(data.StructLayout(w_fields))),
            "o": Out(stream.Signature(core.o.payload.shape())),
            "cfg": In(stream.Signature(data.StructLayout({
                "target": unsigned(2), "lane": unsigned(ceil_log2(max(rows, cols))),
                "all": unsigned(1), "group": unsigned(core.tag_bits),
                "index": unsigned(index_bits), "value": signed(value_bits)}))),
        })

    core = property(lambda self: self._core)
    array = property(lambda self: self._core.array)
    acc_bits = property(lambda self: self._core.acc_bits)
    tag_bits = property(lambda self: self._core.tag_bits)
    latency = property(lambda self: self._core.latency)
    min_tile_beats = property(lambda self: self._core.min_tile_beats)

    @property
    def params(self):
        act, weight, out = self._codes
        return {**self.array.params, "requant": False, "sparsity": self._core.sparsity,
                "act_code_bits": act, "w_code_bits": weight, "out_code_bits": out,
                "thresholds": self._core.unit("threshold").thresholds}

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self._core
        m.d.comb += [
            core.a.valid.eq(self.a.valid), self.a.ready.eq(core.a.ready),
            core.a.payload.data.eq(self.a.payload),
            core.w.valid.eq(self.w.valid), self.w.ready.eq(core.w.ready),
            core.mode.eq(1),
        ]
        for name, _ in self.w.payload.shape():
            m.d.comb += getattr(core.w.payload, name).eq(getattr(self.w.payload, name))
        wiring.connect(m, core.o, wiring.flipped(self.o))

        cfg = self.cfg.payload
        targets = {"act": CFG_ACT_TABLE, "weight": CFG_WEIGHT_TABLE}
        for name, target in targets.items():
            port = getattr(core, f"cfg_{name}")
            m.d.comb += [
                port.valid.eq(self.cfg.valid & (cfg.target == target)),
                port.payload.lane.eq(cfg.lane), port.payload.all.eq(cfg.all),
                port.payload.group.eq(cfg.group), port.payload.code.eq(cfg.index),
                port.payload.value.eq(cfg.value),
            ]
        port = core.cfg_threshold
        m.d.comb += [
            port.valid.eq(self.cfg.valid & (cfg.target == CFG_THRESHOLD)),
            port.payload.lane.eq(cfg.lane), port.payload.group.eq(cfg.group),
            port.payload.index.eq(cfg.index), port.payload.value.eq(cfg.value),
            self.cfg.ready.eq(1),
        ]
        return m
