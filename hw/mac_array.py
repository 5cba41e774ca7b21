"""Dense output-stationary integer MAC array with a per-channel requantizer."""

__all__ = ["MacArray"]

import math

from amaranth.hdl import Array, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw.golden import acc_bits as _acc_bits, check_operand, max_depth_for, packing
from .packed_multiplier import PackedMultiplier, packed_port_bits_for
from .registered_multiplier import RegisteredMultiplier
from .replica import replica, replica_signal
from .requantizer import Requantizer, requant_param_layout


def split_product(x, w, w_bits, w_signed, pieces=2):
    """``x * w`` as partial products ``[(x * w_0, 0), (x * w_1, s), ...]`` whose shifted sum
    is the product: ``w`` is cut into ``pieces`` slices of ``ceil(w_bits / pieces)`` bits
    (fewer when ``w`` is narrower), each unsigned but the top one, which has ``w``'s sign.
    Each partial is a multiplier of a slice's width; one of a slice of one or two bits is
    written as the sum of ``x`` or nothing per bit (one adder), which synthesis would
    otherwise map to a DSP block like any other multiplication."""
    width = -(-w_bits // pieces)
    partials = []
    for low in range(0, w_bits, width):
        piece = w[low:min(low + width, w_bits)]
        negative_top = low + width >= w_bits and w_signed
        if len(piece) > 2:
            partials.append((x * (piece.as_signed() if negative_top else piece), low))
            continue
        terms = [Mux(piece[i], x, 0) << i for i in range(len(piece))]
        if negative_top:
            terms[-1] = -terms[-1]
        partials.append((sum(terms), low))
    return partials


def sum_tree(m, values, levels, name):
    """The sum of ``values`` after ``levels`` register stages (``m.d.sync``), each adding
    groups of the previous stage's registers (a stage with one value just registers it)."""
    for level in range(levels):
        fan_in = max(1, math.ceil(len(values) ** (1 / (levels - level)) - 1e-9))
        sums = []
        for k in range(0, len(values), fan_in):
            total = sum(values[k:k + fan_in])
            stage = Signal(total.shape(), name=f"{name}_l{level}_{k // fan_in}",
                           reset_less=True)
            m.d.sync += stage.eq(total)
            sums.append(stage)
        values = sums
    return values[0]


def _check_count(name, value, limit):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise TypeError(f"{name} must be an integer in 1..{limit}, not {value!r}")


class MacArray(wiring.Component):
    """``rows`` x ``cols`` output-stationary array of integer multiply-accumulate elements.

    Computes one output tile ``A[rows, K] @ W[K, cols]`` per tile: every cycle it accepts one
    activation beat (one column of ``A``: ``A[r, k]`` for every row) together with one weight
    beat (one row of ``W``: ``W[k, c]`` for every column) and element ``(r, c)`` adds
    ``A[r, k] * W[k, c]`` to its accumulator. The weight beat flagged ``last`` ends the
    tile; its ``tag`` selects the requantization parameter group (the channel group ``g``
    whose channels ``g * cols + c`` the columns hold).

    Finished tiles are copied to a shadow bank and drained one row per beat (``cols``
    values) while the next tile accumulates, through the :class:`Requantizer` when
    ``requant`` is set (output codes) or as raw accumulators with their ``tag`` otherwise.

    Numerics: operands are ``a_bits`` / ``w_bits`` wide, each signed or unsigned. The
    accumulator is :attr:`acc_bits` wide, derived with
    :func:`sparqforge.sw.golden.acc_bits` so that ``max_depth`` products never overflow; a
    longer tile wraps (two's complement). Requantization is bit-exact with
    :func:`sparqforge.sw.golden.mac_array` (gemmlowp double rounding, saturation only at
    the int32 bias add and left shift, clamp at the end).

    Throughput: ``rows * cols`` MACs per cycle with no bubble between reduction steps or
    between tiles while the streams are ready and every tile has at least
    :attr:`min_tile_beats` beats (``rows + 4`` with one product stage; the drain of one tile
    overlaps the next; a shorter tile waits for the drain).
    Latency: :attr:`latency` cycles from accepting a tile's last beat to its first output
    row.

    Parameters
    ----------
    rows, cols : int
        Array shape, 1..64 each.
    a_bits, w_bits : int
        Activation and weight widths, 2..8.
    a_signed, w_signed : bool
        Operand signedness.
    max_depth : int
        Longest reduction (products per output) that must not overflow; the accumulator
        must fit 32 bits.
    groups : int
        Requantization parameter groups held per column (output channels / cols, rounded
        up); ``tag`` is ``ceil(log2(groups))`` bits.
    requant : bool
        Emit requantized codes (default) or raw accumulators.
    product_stages : int
        1: each product in one stage; 2: two half-width partial products in one stage, their
        sum in the next (one more cycle of latency), for multipliers built from LUTs, whose
        full-width product does not fit one 100 MHz cycle on an ECP5; 3: four quarter-width
        partial products (each one adder) in one stage, summed in the next two.
    packed_products : bool
        Each pair of columns ``(c, c + 1)`` of a row computes its two products with one
        :class:`~sparqforge.hw.packed_multiplier.PackedMultiplier` (two lanes) on the row's
        activation: one multiplier block per two elements, the same (exact) products. Its
        three stages (operand registers and product register, in an ECP5's MULT18X18D, then
        the unpacked products) replace the operand copies and the product stage, so a tile
        takes one more cycle, as with ``product_stages`` 2. Needs an even ``cols`` and
        ``product_stages`` 1.
    packed_port_bits : int or None
        Signed width of the packed operand (see ``PackedMultiplier``'s ``port_bits``): 18
        for an ECP5 MULT18X18D, 25 for a Xilinx DSP48E1; ``None`` (default) chooses at
        elaboration with :func:`packed_port_bits_for` the platform's. Results are the same.
    lane_operands : bool
        An activation beat carries an operand per element, ``A[r, k]`` becoming ``A[r, c,
        k]`` (depthwise convolutions: each column its own channel): element ``(r, c)``
        multiplies lane ``c`` of row ``r``. Only the beat register widens (each element
        already has its own operand copy); the timing is the same. Not with packed products.
    out_bits, out_signed :
        Output code type; default to the activation type so that layers chain.

    Attributes
    ----------
    a : In(stream)
        ``rows`` activation lanes (``rows`` x ``cols`` with ``lane_operands``).
    w : In(stream)
        ``data`` (``cols`` weight lanes), ``tag``, ``last``.
    o : Out(stream)
        ``data`` (``cols`` lanes) and ``last`` (final row of a tile); ``tag`` too when
        ``requant`` is off.
    cfg : In(stream)
        Requantization parameters (present when ``requant`` is set), see
        :class:`Requantizer`.

    Raises
    ------
    TypeError
        On a parameter of the wrong type or out of its range.
    ValueError
        If ``max_depth`` needs an accumulator wider than 32 bits, or with packed products
        an odd ``cols``, ``product_stages`` other than 1 or ``lane_operands``.
    """

    def __init__(self, *, rows, cols, a_bits=8, w_bits=8, a_signed=True, w_signed=True,
                 max_depth=4096, groups=1, requant=True, out_bits=None, out_signed=None,
                 product_stages=1, packed_products=False, packed_port_bits=None,
                 lane_operands=False):
        _check_count("Row count", rows, 64)
        if product_stages not in (1, 2, 3):
            raise TypeError(f"Product stages must be 1, 2 or 3, not {product_stages!r}")
        _check_count("Column count", cols, 64)
        check_operand("Activation", a_bits, a_signed)
        check_operand("Weight", w_bits, w_signed)
        _check_count("Group count", groups, 1 << 16)
        if not isinstance(requant, bool):
            raise TypeError(f"Requant must be a bool, not {requant!r}")
        out_bits = a_bits if out_bits is None else out_bits
        out_signed = a_signed if out_signed is None else out_signed
        check_operand("Output", out_bits, out_signed)
        width = _acc_bits(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, w_signed=w_signed,
                          max_depth=max_depth)
        if width > 32:
            limit = max_depth_for(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                                  w_signed=w_signed)
            raise ValueError(f"Maximum reduction depth {max_depth} needs a {width}-bit "
                             f"accumulator; with these operands it must be at most {limit}")
        if not isinstance(packed_products, bool):
            raise TypeError(f"Packed products must be a bool, not {packed_products!r}")
        if packed_products:
            if cols % 2:
                raise ValueError(f"Packed products pair the columns; the column count must be "
                                 f"even, not {cols}")
            if product_stages != 1:
                raise ValueError(f"Packed products have their own multiplier pipeline; "
                                 f"product stages must be 1 with them, not {product_stages}")
            if packed_port_bits is not None:
                # The port width's own check (two lanes fit 18 bits at every operand type).
                packing(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, w_signed=w_signed,
                        lanes=2, port_bits=packed_port_bits)
        elif packed_port_bits is not None:
            raise ValueError(f"A packed operand width ({packed_port_bits}) needs packed "
                             f"products")
        if not isinstance(lane_operands, bool):
            raise TypeError(f"Lane operands must be a bool, not {lane_operands!r}")
        if lane_operands and packed_products:
            raise ValueError("Lane operands need an operand per element; packed products "
                             "share one per column pair")
        self._rows, self._cols = rows, cols
        self._a_bits, self._a_signed = a_bits, a_signed
        self._w_bits, self._w_signed = w_bits, w_signed
        self._max_depth = max_depth
        self._acc_bits = width
        self._groups = groups
        self._requant = requant
        self._out_bits, self._out_signed = out_bits, out_signed
        self._product_stages = product_stages
        self._packed_products = packed_products
        self._packed_port_bits = packed_port_bits
        self._lane_operands = lane_operands

        if requant:
            out_layout = data.StructLayout({
                "data": data.ArrayLayout(self._shape(out_bits, out_signed), cols),
                "last": unsigned(1),
            })
        else:
            out_layout = self._acc_layout()
        members = {
            "a": In(stream.Signature(self._a_layout())),
            "w": In(stream.Signature(self._w_layout())),
            "o": Out(stream.Signature(out_layout)),
        }
        if requant:
            members["cfg"] = In(stream.Signature(data.StructLayout({
                "lane": unsigned(ceil_log2(cols)),
                "group": unsigned(self.tag_bits),
                "param": requant_param_layout(out_bits),
            })))
        super().__init__(members)

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    a_bits = property(lambda self: self._a_bits)
    a_signed = property(lambda self: self._a_signed)
    w_bits = property(lambda self: self._w_bits)
    w_signed = property(lambda self: self._w_signed)
    max_depth = property(lambda self: self._max_depth)
    groups = property(lambda self: self._groups)
    requant = property(lambda self: self._requant)
    out_bits = property(lambda self: self._out_bits)
    out_signed = property(lambda self: self._out_signed)
    product_stages = property(lambda self: self._product_stages)
    packed_products = property(lambda self: self._packed_products)
    packed_port_bits = property(lambda self: self._packed_port_bits)
    lane_operands = property(lambda self: self._lane_operands)

    @property
    def params(self):
        """Generator parameters, as passed to the constructor."""
        return {"rows": self._rows, "cols": self._cols, "a_bits": self._a_bits,
                "a_signed": self._a_signed, "w_bits": self._w_bits, "w_signed": self._w_signed,
                "max_depth": self._max_depth, "groups": self._groups, "requant": self._requant,
                "out_bits": self._out_bits, "out_signed": self._out_signed,
                "product_stages": self._product_stages,
                "packed_products": self._packed_products,
                "packed_port_bits": self._packed_port_bits,
                "lane_operands": self._lane_operands}

    @property
    def acc_bits(self):
        """Accumulator width; see :func:`sparqforge.sw.golden.acc_bits`."""
        return self._acc_bits

    @property
    def tag_bits(self):
        return ceil_log2(self._groups)

    @property
    def product_latency(self):
        """Cycles from the beat registers to the products: the operand copies and
        ``product_stages``, or the packed multiplier's latency."""
        if self._packed_products:
            # The operand copies, then PackedMultiplier.latency (checked in ``elaborate``):
            # the multiplier block's two registers, then the unpacked products.
            return 2 + RegisteredMultiplier.latency
        return 1 + self._product_stages

    @property
    def core_latency(self):
        """Cycles from accepting a tile's last beat to its first accumulator row: the beat
        registers, :attr:`product_latency`, the accumulators."""
        return 2 + self.product_latency

    @property
    def latency(self):
        """Cycles from accepting a tile's last beat to its first output row."""
        return self.core_latency + (Requantizer.latency if self._requant else 0)

    @property
    def min_tile_beats(self):
        """Shortest tile (in beats) that keeps the array free of bubbles."""
        return self._rows + self.core_latency

    @staticmethod
    def _shape(bits, is_signed):
        return signed(bits) if is_signed else unsigned(bits)

    def _a_layout(self):
        lane = self._shape(self._a_bits, self._a_signed)
        if self._lane_operands:
            lane = data.ArrayLayout(lane, self._cols)
        return data.ArrayLayout(lane, self._rows)

    def _w_layout(self):
        return data.StructLayout({
            "data": data.ArrayLayout(self._shape(self._w_bits, self._w_signed), self._cols),
            "tag": unsigned(self.tag_bits),
            "last": unsigned(1),
        })

    def _acc_layout(self):
        return data.StructLayout({
            "data": data.ArrayLayout(signed(self._acc_bits), self._cols),
            "tag": unsigned(self.tag_bits),
            "last": unsigned(1),
        })

    def _column_terms(self, m, w, col):
        """Per-column logic shared by the column's elements (the weight lane, here)."""
        return w.data[col]

    def _contribution(self, a, terms, row):
        """What element ``(row, col)`` adds to its accumulator for one beat pair, given its
        column's :meth:`_column_terms`."""
        return a[row] * terms

    def _partials(self, a, terms, row):
        """``(value, shift)`` pairs whose shifted sum is :meth:`_contribution`, each a
        multiplier of a ``1 / 2 ** (product_stages - 1)`` slice of the weight."""
        return split_product(a[row], terms, self._w_bits, self._w_signed, self._pieces)

    @property
    def _pieces(self):
        return 1 << (self._product_stages - 1)

    def _element_product(self, m, a_reg, terms, r, c):
        """Element ``(r, c)``'s product of its own operand copies, ``product_stages``
        later (stage 2 + ``product_stages``)."""
        a_op = replica(m, a_reg[r][c] if self._lane_operands else a_reg[r], f"a_op_{r}_{c}",
                       reset_less=True)
        terms_op = replica(m, terms, f"w_op_{r}_{c}", reset_less=True)
        contribution = self._contribution({r: a_op}, terms_op, r)
        product = Signal.like(contribution, name=f"prod_{r}_{c}", reset_less=True)
        if self._product_stages == 1:
            m.d.sync += product.eq(contribution)
            return product
        partials = []
        for k, (value, shift) in enumerate(self._partials({r: a_op}, terms_op, r)):
            partial = Signal.like(value, name=f"partial_{r}_{c}_{k}", reset_less=True)
            m.d.sync += partial.eq(value)
            partials.append(partial << shift)
        m.d.comb += product.eq(sum_tree(m, partials, self._product_stages - 1, f"sum_{r}_{c}"))
        return product

    def _packed_multipliers(self, m, platform, a_reg, w_reg):
        """One two-lane :class:`PackedMultiplier` per column pair of each row, fed by its own
        copies of the beat registers; ``[row][col]`` of the products,
        :attr:`product_latency` cycles later."""
        port_bits = self._packed_port_bits or packed_port_bits_for(platform)
        products = []
        for r in range(self._rows):
            products.append([])
            for c in range(0, self._cols, 2):
                mul = PackedMultiplier(a_bits=self._a_bits, a_signed=self._a_signed,
                                       w_bits=self._w_bits, w_signed=self._w_signed, lanes=2,
                                       port_bits=port_bits)
                assert 1 + mul.latency == self.product_latency
                m.submodules[f"mul_{r}_{c}"] = mul
                # This element pair's operand copies (replicas: yosys would merge a
                # column's, and one register would then reach every row's multiplier block
                # across the device), then the block's own operand registers.
                a_op = replica(m, a_reg[r], f"a_op_{r}_{c}", reset_less=True)
                w_op = replica(m, [w_reg.data[c], w_reg.data[c + 1]], f"w_op_{r}_{c}",
                               reset_less=True)
                m.d.comb += [mul.a.eq(a_op), mul.w[0].eq(w_op[0]), mul.w[1].eq(w_op[1])]
                products[-1] += [mul.p[0], mul.p[1]]
        return products

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        # Stage 1 registers the beats; stage 2 copies each element's operands into registers
        # of its own, so that the broadcast to a whole row / column and the route to a
        # multiplier far across the device (an 8x8 array spans every DSP column of an ECP5)
        # each get a cycle; stage 3 registers the products (stages 3 to 2 + product_stages
        # with split products); the next stage accumulates. With packed products the operand
        # copies of each column pair are stage 2, its packed multiplier's operand registers
        # (inside an ECP5 multiplier block) stage 3, its product register stage 4, its
        # unpacked products stage 5. The copies are replicas (see :mod:`.replica`), and
        # so are the control bits that reach every element: one per column at stage 2, one
        # per element from stage 3 on, so that no register drives more than a column's worth
        # of loads.
        a_reg = Signal(self._a_layout(), reset_less=True)
        w_reg = Signal(self._w_layout(), reset_less=True)
        # Control bits per stage after the beat register: operand copies, then the product
        # stage(s); the last entry is the beat being accumulated.
        depth = self.product_latency
        valid_1, last_1 = Signal(), Signal()
        valids = [Signal(name=f"valid_s{k + 2}") for k in range(depth)]
        lasts = [Signal(name=f"last_s{k + 2}") for k in range(depth)]
        tags = [Signal(self.tag_bits, name=f"tag_s{k + 2}") for k in range(depth)]
        valid_acc, last_acc, tag_acc = valids[-1], lasts[-1], tags[-1]

        acc_stream = stream.Signature(self._acc_layout()).create()
        drain_left = Signal(range(rows + 1))
        # The accumulate stage never stalls: a tile's last beat is only accepted once the
        # shadow bank is free and no other last beat is on its way to it. ``shadow_free``
        # says so, registered: it is computed from what the stages will hold in the next
        # cycle, so that the streams' ready signals (the input FIFOs' read enables) are one
        # gate from flip-flops.
        shadow_free = Signal(init=1)
        accept = ~self.w.payload.last | shadow_free
        fire = self.a.valid & self.w.valid & accept
        acc_fire = acc_stream.valid & acc_stream.ready
        # Next cycle: no last beat in the beat register or the stages before the
        # accumulators (each takes its predecessor's), and nothing left to drain (a last
        # beat reaching the accumulators refills the shadow bank).
        last_next = (fire & self.w.payload.last) | (valid_1 & last_1)
        for valid, last in zip(valids, lasts):
            last_next |= valid & last
        drained_next = (drain_left == 0) | ((drain_left == 1) & acc_fire)
        m.d.sync += shadow_free.eq(~last_next & drained_next)
        m.d.comb += [
            self.a.ready.eq(self.w.valid & accept),
            self.w.ready.eq(self.a.valid & accept),
        ]
        m.d.sync += [valids[0].eq(valid_1), lasts[0].eq(last_1), tags[0].eq(w_reg.tag)]
        m.d.sync += [valids[k].eq(valids[k - 1]) for k in range(1, depth)]
        m.d.sync += [lasts[k].eq(lasts[k - 1]) for k in range(1, depth)]
        m.d.sync += [tags[k].eq(tags[k - 1]) for k in range(1, depth)]
        # The beat registers load every cycle (``valid_1`` says whether they hold a beat):
        # an enable from the handshake would fan out to every operand bit.
        m.d.sync += [valid_1.eq(fire), a_reg.eq(self.a.payload), w_reg.eq(self.w.payload),
                     last_1.eq(self.w.payload.last)]

        shadow = [[Signal(signed(self._acc_bits), name=f"shadow_{r}_{c}", reset_less=True)
                   for c in range(cols)] for r in range(rows)]
        shadow_tag = Signal(self.tag_bits)

        # Rows leave the shadow bank through a row multiplexer rather than a shift chain, so
        # draining moves one row, not the whole bank, per beat. Each column's multiplexer
        # has its own copy of the row counter (not ``rows - drain_left``).
        drain_rows = [replica_signal(range(rows), name=f"drain_row_{c}", reset_less=True)
                      for c in range(cols)]
        # ``draining`` is ``drain_left != 0`` kept in a flip-flop: the stream's valid goes
        # straight from a register to the next unit (the add stage's load enable was the
        # slowest path of the ULX3S walk build, 9 of its 10.3 ns routing).
        draining = Signal()
        with m.If(acc_stream.valid & acc_stream.ready):
            m.d.sync += [drain_left.eq(drain_left - 1), draining.eq(drain_left != 1)]
            m.d.sync += [row.eq(row + 1) for row in drain_rows]
        with m.If(valid_acc & last_acc):
            m.d.sync += [drain_left.eq(rows), draining.eq(1), shadow_tag.eq(tag_acc)]
            m.d.sync += [row.eq(0) for row in drain_rows]

        # The registers of the elements are reset through a registered copy of the domain's
        # reset per column (``clear``), a cycle late: the reset net would otherwise reach
        # every accumulator of the array, the slowest net of the 8x8 ECP5 build. No beat
        # reaches the accumulators in that cycle (the registers before them are reset).
        reset = ResetSignal(allow_reset_less=True)
        packed = (self._packed_multipliers(m, platform, a_reg, w_reg)
                  if self._packed_products else None)
        for c in range(cols):
            terms = self._column_terms(m, w_reg, c)
            clear = replica(m, reset, f"clear_{c}", reset_less=True)
            valid_c = replica(m, valid_1, f"valid_op_{c}", reset_less=True)
            last_c = replica(m, last_1, f"last_op_{c}", reset_less=True)
            cleared = [valid_c]
            for r in range(rows):
                # Operand copies and products load every cycle (the valid bits say which
                # hold beats); only the accumulators have an enable.
                valid_rc, last_rc = valid_c, last_c
                for k in range(depth - 1):
                    valid_rc = replica(m, valid_rc, f"valid_{k + 2}_{r}_{c}", reset_less=True)
                    last_rc = replica(m, last_rc, f"last_{k + 2}_{r}_{c}", reset_less=True)
                    cleared.append(valid_rc)
                acc = Signal(signed(self._acc_bits), name=f"acc_{r}_{c}", reset_less=True)
                cleared.append(acc)
                product = (packed[r][c] if packed is not None
                           else self._element_product(m, a_reg, terms, r, c))
                total = acc + product
                # A tile's last beat moves its sum to the shadow bank and clears the
                # accumulator for the next tile.
                with m.If(valid_rc):
                    with m.If(last_rc):
                        m.d.sync += [shadow[r][c].eq(total), acc.eq(0)]
                    with m.Else():
                        m.d.sync += acc.eq(total)
            with m.If(clear):
                m.d.sync += [register.eq(0) for register in cleared]

        m.d.comb += [
            acc_stream.valid.eq(draining),
            acc_stream.payload.tag.eq(shadow_tag),
            acc_stream.payload.last.eq(drain_left == 1),
        ]
        for c in range(cols):
            column = Array(shadow[r][c] for r in range(rows))
            m.d.comb += acc_stream.payload.data[c].eq(
                column[drain_rows[c]] if rows > 1 else shadow[0][c])

        if self._requant:
            m.submodules.requantizer = requantizer = Requantizer(
                lanes=cols, acc_bits=self._acc_bits, out_bits=self._out_bits,
                out_signed=self._out_signed, groups=self._groups)
            wiring.connect(m, acc_stream, requantizer.i)
            wiring.connect(m, wiring.flipped(self.o), requantizer.o)
            wiring.connect(m, wiring.flipped(self.cfg), requantizer.cfg)
        else:
            wiring.connect(m, wiring.flipped(self.o), acc_stream)
        return m
