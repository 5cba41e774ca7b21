"""The compute core of the accelerator: optional operand tables, a dense or N:M MAC array,
optional residual add tables, and a requantizer and/or a threshold unit on its
accumulators."""

__all__ = ["ArrayCore"]

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..protocol import ADD_TABLES
from .dequant_unit import DequantUnit
from .mac_array import MacArray
from .requantizer import Requantizer
from .residual_add import ResidualAdd
from .sparse_mac_array import SparseMacArray
from .threshold_unit import ThresholdUnit


class ArrayCore(wiring.Component):
    """Operand streams in (stored codes), output codes out.

    With ``tables`` a :class:`DequantUnit` sits on each operand stream (one table per layer
    for activations, ``table_groups`` per lane for weights); a beat's ``bypass`` bit passes
    its codes through unchanged. The array runs without its own requantizer; its
    accumulators go to a :class:`Requantizer` (``requant``), a :class:`ThresholdUnit`
    (``threshold_bits``), or both, chosen by ``mode`` (1: thresholds), which must stay
    constant while tiles are in flight. Output lanes are ``out_bits`` wide; threshold codes
    are zero-extended.

    With ``lane_operands`` (the depthwise walk's array) and the requantizer, a
    :class:`~.residual_add.ResidualAdd` stage (``"add"``) sits between the array's
    accumulators and the requantizer, which then takes 32-bit accumulators: with ``add``
    set, each accumulator goes through add table ``add_table`` (``Mode.ADD``); with it
    clear rows pass unchanged, with no added latency. ``add`` and ``add_table`` must stay
    constant while tiles are in flight (and for a cycle before the first).

    Parameters
    ----------
    rows, cols, a_bits, a_signed, w_bits, w_signed, max_depth, groups :
        As for :class:`~sparqforge.hw.mac_array.MacArray`.
    sparsity : (int, int) or None
        N:M pattern for a :class:`~sparqforge.hw.sparse_mac_array.SparseMacArray`.
    tables : bool
        Operand tables (power-exponent codes).
    act_code_bits, w_code_bits : int
        Stored code widths with ``tables`` (else the operand widths).
    table_groups : int
        Weight tables per lane (1: one table per layer).
    requant : bool
        Include the requantizer.
    threshold_bits : int or None
        Include a threshold unit with codes of this width.
    out_bits, out_signed :
        Requantizer output type.
    product_stages, packed_products, packed_port_bits, lane_operands :
        As for :class:`~sparqforge.hw.mac_array.MacArray` (packed products and lane
        operands with a dense array only; with ``tables`` and lane operands the activation
        table is read for every lane of a row).

    Attributes
    ----------
    a : In(stream)
        ``data`` (``rows`` codes, or ``rows`` x ``m``, or ``rows`` x ``cols`` with lane
        operands), ``bypass`` (with tables).
    w : In(stream)
        ``data`` (``cols`` codes, or ``cols`` x ``n`` of ``value`` and ``index``), ``dense``
        (sparse), ``tag``, ``last``, ``bypass`` (with tables).
    o : Out(stream)
        ``data`` (``cols`` codes), ``last``.
    mode : In(1)
        Output selection when both output units exist.
    add : In(1), add_table : In(range(ADD_TABLES))
        With the add stage: accumulators through the add tables, and which table.
    cfg_requant, cfg_act, cfg_weight, cfg_threshold, cfg_add : In(stream)
        The units' table write ports (see each unit; those the core has).
    """

    def __init__(self, *, rows, cols, a_bits=8, a_signed=False, w_bits=8, w_signed=True,
                 max_depth=4096, groups=1, sparsity=None, tables=False, act_code_bits=None,
                 w_code_bits=None, table_groups=1, requant=True, threshold_bits=None,
                 out_bits=8, out_signed=False, product_stages=1, packed_products=False,
                 packed_port_bits=None, lane_operands=False):
        kw = dict(rows=rows, cols=cols, a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                  w_signed=w_signed, max_depth=max_depth, groups=groups, requant=False,
                  product_stages=product_stages, packed_products=packed_products,
                  packed_port_bits=packed_port_bits, lane_operands=lane_operands)
        if sparsity is None:
            self._array = MacArray(**kw)
        else:
            n, m = sparsity
            self._array = SparseMacArray(n=n, m=m, **kw)
        if not requant and threshold_bits is None:
            raise ValueError("An array core needs a requantizer, a threshold unit or both")
        self._sparsity = sparsity
        self._tables = tables
        # Activation codes per row: a group (sparse), a lane per column (lane operands).
        self._a_elems = sparsity[1] if sparsity is not None else cols if lane_operands else 1
        self._a_nested = sparsity is not None or lane_operands
        self._w_elems = 1 if sparsity is None else sparsity[0]
        act_code_bits = a_bits if act_code_bits is None else act_code_bits
        w_code_bits = w_bits if w_code_bits is None else w_code_bits
        self._codes = (act_code_bits, w_code_bits)
        # Weight ``side``: ``last``, and ``dense`` plus every kept weight's index when sparse,
        # and the tag when the tables are not per group.
        index_bits = 0 if sparsity is None else self._array.index_bits
        self._side_bits = (1 + (0 if sparsity is None else 1 + cols * self._w_elems * index_bits)
                           + (self._array.tag_bits if table_groups == 1 else 0))
        self._units = {}
        if tables:
            self._units["act"] = DequantUnit(lanes=rows, elems=self._a_elems,
                                             code_bits=act_code_bits, out_bits=a_bits,
                                             out_signed=a_signed)
            self._units["weight"] = DequantUnit(lanes=cols, elems=self._w_elems,
                                                code_bits=w_code_bits, out_bits=w_bits,
                                                out_signed=w_signed, groups=table_groups,
                                                side_bits=self._side_bits)
        if requant and lane_operands:
            self._units["add"] = ResidualAdd(lanes=cols, acc_bits=self._array.acc_bits,
                                             tag_bits=self._array.tag_bits)
        if requant:
            # After the add stage the accumulators are its 32-bit sums.
            acc_bits = max(self._array.acc_bits, 32) if "add" in self._units \
                else self._array.acc_bits
            self._units["requant"] = Requantizer(lanes=cols, acc_bits=acc_bits,
                                                 out_bits=out_bits, out_signed=out_signed,
                                                 groups=groups)
        if threshold_bits is not None:
            self._units["threshold"] = ThresholdUnit(lanes=cols, acc_bits=self._array.acc_bits,
                                                     code_bits=threshold_bits, groups=groups)
        self._table_groups = table_groups
        self._threshold_bits = threshold_bits
        self._out_bits = max(out_bits if requant else 0, threshold_bits or 0)
        self._out_signed = out_signed and requant

        a_lane = unsigned(act_code_bits) if tables else self._array.a.payload.shape().elem_shape
        if self._a_nested:
            a_lane = data.ArrayLayout(unsigned(act_code_bits), self._a_elems) if tables \
                else a_lane
        w_code = unsigned(w_code_bits) if tables else None
        w_layout = self._array.w.payload.shape()
        w_data = w_layout["data"].shape
        if tables:
            if sparsity is None:
                w_data = data.ArrayLayout(w_code, cols)
            else:
                w_data = data.ArrayLayout(data.ArrayLayout(data.StructLayout({
                    "value": w_code, "index": unsigned(index_bits)}), self._w_elems), cols)
        a_fields = {"data": data.ArrayLayout(a_lane, rows)}
        w_fields = {"data": w_data}
        if sparsity is not None:
            w_fields["dense"] = unsigned(1)
        w_fields.update(tag=unsigned(self._array.tag_bits), last=unsigned(1))
        if tables:
            a_fields["bypass"] = w_fields["bypass"] = unsigned(1)
        out_shape = (signed if self._out_signed else unsigned)(self._out_bits)
        members = {
            "a": In(stream.Signature(data.StructLayout(a_fields))),
            "w": In(stream.Signature(data.StructLayout(w_fields))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(out_shape, cols), "last": unsigned(1)}))),
            "mode": In(1),
        }
        if "add" in self._units:
            members["add"] = In(1)
            members["add_table"] = In(range(ADD_TABLES))
        for name in ("requant", "act", "weight", "threshold", "add"):
            if name in self._units:
                members[f"cfg_{name}"] = In(self._units[name].cfg.signature.flip())
        super().__init__(members)

    array = property(lambda self: self._array)
    acc_bits = property(lambda self: self._array.acc_bits)
    tag_bits = property(lambda self: self._array.tag_bits)
    sparsity = property(lambda self: self._sparsity)
    tables = property(lambda self: self._tables)
    threshold_bits = property(lambda self: self._threshold_bits)
    out_bits = property(lambda self: self._out_bits)

    def unit(self, name):
        """The ``"act"``, ``"weight"``, ``"add"``, ``"requant"`` or ``"threshold"``
        submodule."""
        return self._units[name]

    @property
    def residual_add(self):
        """Whether the core has the add stage (``cfg_add``, ``add``, ``add_table``)."""
        return "add" in self._units

    @property
    def latency(self):
        """Cycles from a tile's last beat to its first output row (the slower output, and
        with the add stage the slower mode: through the add tables)."""
        out = max(unit.latency for name, unit in self._units.items()
                  if name in ("requant", "threshold"))
        add = self._units["add"].latency if "add" in self._units else 0
        return ((DequantUnit.latency if self._tables else 0) + self._array.core_latency + add
                + out)

    @property
    def min_tile_beats(self):
        return self._array.min_tile_beats

    @property
    def params(self):
        act, weight = self._codes
        return {**self._array.params, "requant": "requant" in self._units,
                "sparsity": self._sparsity, "tables": self._tables, "act_code_bits": act,
                "w_code_bits": weight, "table_groups": self._table_groups,
                "threshold_bits": self._threshold_bits, "out_bits": self._out_bits}

    def elaborate(self, platform):
        m = Module()
        array = self._array
        m.submodules.array = array
        for name, unit in self._units.items():
            m.submodules[name] = unit
            wiring.connect(m, wiring.flipped(getattr(self, f"cfg_{name}")), unit.cfg)
        sparse = self._sparsity is not None
        rows, cols = array.rows, array.cols

        if self._tables:
            act, weight = self._units["act"], self._units["weight"]
            m.d.comb += [act.i.valid.eq(self.a.valid), self.a.ready.eq(act.i.ready),
                         array.a.valid.eq(act.o.valid), act.o.ready.eq(array.a.ready),
                         act.i.payload.bypass.eq(self.a.payload.bypass)]
            nested = self._a_nested
            for r in range(rows):
                for e in range(self._a_elems):
                    code = self.a.payload.data[r][e] if nested else self.a.payload.data[r]
                    value = array.a.payload[r][e] if nested else array.a.payload[r]
                    m.d.comb += [act.i.payload.codes[r][e].eq(code),
                                 value.eq(act.o.payload.values[r][e])]

            # Weight codes -> tables -> array; everything else rides in ``side``.
            w_in, w_out = self.w.payload, array.w.payload
            m.d.comb += [weight.i.valid.eq(self.w.valid), self.w.ready.eq(weight.i.ready),
                         array.w.valid.eq(weight.o.valid), weight.o.ready.eq(array.w.ready),
                         weight.i.payload.bypass.eq(w_in.bypass)]
            side_in, side_out = [w_in.last], [w_out.last]
            for c in range(cols):
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
            if self._table_groups == 1:
                side_in.append(w_in.tag)
                side_out.append(w_out.tag)
            else:
                m.d.comb += [weight.i.payload.tag.eq(w_in.tag),
                             w_out.tag.eq(weight.o.payload.tag)]
            assert len(Cat(*side_in)) == self._side_bits
            m.d.comb += [weight.i.payload.side.eq(Cat(*side_in)),
                         Cat(*side_out).eq(weight.o.payload.side)]
        else:
            m.d.comb += [array.a.valid.eq(self.a.valid), self.a.ready.eq(array.a.ready),
                         array.a.payload.eq(self.a.payload.data),
                         array.w.valid.eq(self.w.valid), self.w.ready.eq(array.w.ready),
                         array.w.payload.eq(self.w.payload)]

        # Accumulators to the selected output unit; the other sees no beats. The
        # requantizer's go through the add stage when there is one.
        requant_i = self._units["requant"].i if "requant" in self._units else None
        if "add" in self._units:
            add = self._units["add"]
            m.d.comb += [add.add.eq(self.add), add.table.eq(self.add_table)]
            wiring.connect(m, add.o, self._units["requant"].i)
            requant_i = add.i
        inputs = {"requant": requant_i}
        outputs = [(name, self._units[name]) for name in ("requant", "threshold")
                   if name in self._units]
        if len(outputs) == 1:
            (name, unit), = outputs
            wiring.connect(m, array.o, inputs.get(name, unit.i))
            m.d.comb += [self.o.valid.eq(unit.o.valid), unit.o.ready.eq(self.o.ready),
                         self.o.payload.last.eq(unit.o.payload.last)]
            m.d.comb += [self.o.payload.data[c].eq(unit.o.payload.data[c]) for c in range(cols)]
        else:
            requant, threshold = self._units["requant"], self._units["threshold"]
            use_t = self.mode
            for unit_i, selected in ((requant_i, ~use_t), (threshold.i, use_t)):
                m.d.comb += [unit_i.payload.eq(array.o.payload),
                             unit_i.valid.eq(array.o.valid & selected)]
            m.d.comb += [
                array.o.ready.eq(Mux(use_t, threshold.i.ready, requant_i.ready)),
                self.o.valid.eq(Mux(use_t, threshold.o.valid, requant.o.valid)),
                self.o.payload.last.eq(Mux(use_t, threshold.o.payload.last,
                                           requant.o.payload.last)),
                requant.o.ready.eq(self.o.ready & ~use_t),
                threshold.o.ready.eq(self.o.ready & use_t),
            ]
            m.d.comb += [self.o.payload.data[c].eq(Mux(use_t, threshold.o.payload.data[c],
                                                       requant.o.payload.data[c]))
                         for c in range(cols)]
        return m
