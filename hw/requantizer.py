"""Per-output-channel gemmlowp requantizer: int32 accumulators to low-bit output codes."""

__all__ = ["requant_param_layout", "Requantizer"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw.golden import INT32_MAX, INT32_MIN, MULTIPLIER_BITS, check_operand, operand_range
from .pipeline import stall_pipeline


def requant_param_layout(out_bits):
    """Layout of one channel's requantization parameters, as written through ``cfg``."""
    return data.StructLayout({
        "bias": signed(32),
        "multiplier": unsigned(MULTIPLIER_BITS),
        "shift": signed(6),
        "zero_point": signed(out_bits + 1),
        "relu": unsigned(1),
    })


def _saturate32(value):
    return Mux(value > INT32_MAX, INT32_MAX, Mux(value < INT32_MIN, INT32_MIN, value))


class Requantizer(wiring.Component):
    """Rescales ``lanes`` accumulators per beat to output codes, bit-exact with
    :func:`sparqforge.sw.golden.requantize` after :func:`~sparqforge.sw.golden.add_bias`.

    Lane ``l`` of a beat tagged ``g`` uses the parameters of channel ``g * lanes + l``, held
    in a per-lane table of ``groups`` entries written through ``cfg`` (write it while no beat
    is in flight). Per beat and lane: ``x = sat32(acc + bias)``; ``x = sat32(x << max(shift,
    0))``; ``SaturatingRoundingDoublingHighMul(x, multiplier)``; ``RoundingDivideByPOT(.,
    max(-shift, 0))``; ``+ zero_point``; clamp to the output range, raised to the zero point
    when ``relu`` is set. Saturation happens only at the two ``sat32`` steps and the clamp.

    Parameters
    ----------
    lanes : int
        Accumulators per beat.
    acc_bits : int
        Width of the incoming signed accumulators, at most 32.
    out_bits : int
        Output code width, 2..8.
    out_signed : bool
        Output code signedness.
    groups : int
        Parameter sets held per lane (channel groups of ``lanes`` channels).

    Attributes
    ----------
    i : In(stream)
        ``data`` (``lanes`` x ``signed(acc_bits)``), ``tag`` (parameter group), ``last``.
    o : Out(stream)
        ``data`` (``lanes`` output codes), ``last`` copied from the input beat.
    cfg : In(stream)
        Always ready; ``lane``, ``group`` and ``param`` (:func:`requant_param_layout`).

    Latency is :attr:`latency` cycles, throughput one beat per cycle; a stalled output holds
    the whole pipeline.
    """

    latency = 8

    def __init__(self, *, lanes, acc_bits, out_bits=8, out_signed=True, groups=1):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
        if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 32:
            raise TypeError(f"Accumulator width must be an integer in 2..32, not {acc_bits!r}")
        check_operand("Output", out_bits, out_signed)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise TypeError(f"Group count must be a positive integer, not {groups!r}")
        self._lanes = lanes
        self._acc_bits = acc_bits
        self._out_bits = out_bits
        self._out_signed = out_signed
        self._groups = groups
        out_shape = signed(out_bits) if out_signed else unsigned(out_bits)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(acc_bits), lanes),
                "tag": unsigned(self.tag_bits),
                "last": unsigned(1),
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(out_shape, lanes),
                "last": unsigned(1),
            }))),
            "cfg": In(stream.Signature(data.StructLayout({
                "lane": unsigned(ceil_log2(lanes)),
                "group": unsigned(self.tag_bits),
                "param": requant_param_layout(out_bits),
            }))),
        })

    lanes = property(lambda self: self._lanes)
    acc_bits = property(lambda self: self._acc_bits)
    out_bits = property(lambda self: self._out_bits)
    out_signed = property(lambda self: self._out_signed)
    groups = property(lambda self: self._groups)

    @property
    def tag_bits(self):
        return ceil_log2(self._groups)

    def elaborate(self, platform):
        m = Module()
        stages = self.latency
        en, valid = stall_pipeline(m, self.i, self.o, stages)
        # ``moves[s]``: a beat advances out of stage s (s = 0: the input). Registers only load
        # real beats, so an idle pipeline does no work (in simulation and in toggle power).
        moves = [en & self.i.valid] + [en & valid[s] for s in range(stages - 1)]
        m.d.comb += self.cfg.ready.eq(1)

        tags = [Signal(self.tag_bits, name=f"tag_{s}") for s in range(stages)]
        lasts = Signal(stages)
        with m.If(en):
            m.d.sync += lasts.eq(Cat(self.i.payload.last, lasts[:-1]))
            m.d.sync += tags[0].eq(self.i.payload.tag)
            m.d.sync += [tags[s].eq(tags[s - 1]) for s in range(1, stages)]
        m.d.comb += self.o.payload.last.eq(lasts[-1])

        qmin, qmax = operand_range(self._out_bits, self._out_signed)
        # Each lane keeps its parameters in three narrow tables, one per pipeline stage that
        # reads them, each addressed by the tag one stage ahead of its use: the parameters
        # travel with the beat without being copied down the pipeline, and no table word is
        # wider than 64 bits (which simulators handle much faster).
        param = self.cfg.payload.param
        layouts = [
            ("bias", data.StructLayout({"bias": signed(32), "shift": signed(6)}),
             {"bias": param.bias, "shift": param.shift}),
            ("mult", data.StructLayout({"multiplier": unsigned(MULTIPLIER_BITS)}),
             {"multiplier": param.multiplier}),
            ("zero", data.StructLayout({"zero_point": signed(self._out_bits + 1),
                                        "relu": unsigned(1)}),
             {"zero_point": param.zero_point, "relu": param.relu}),
        ]
        addresses = {"bias": self.i.payload.tag, "mult": tags[1], "zero": tags[5]}
        for lane in range(self._lanes):
            reads = {}
            for part, shape, fields in layouts:
                table = Memory(shape=shape, depth=self._groups, init=[])
                m.submodules[f"{part}_{lane}"] = table
                wr = table.write_port()
                m.d.comb += [wr.addr.eq(self.cfg.payload.group),
                             wr.en.eq(self.cfg.valid & (self.cfg.payload.lane == lane))]
                m.d.comb += [getattr(wr.data, name).eq(value) for name, value in fields.items()]
                rd = table.read_port()
                m.d.comb += [rd.en.eq(en), rd.addr.eq(addresses[part])]
                reads[part] = rd.data
            p_bias, p_mult, p_zero = reads["bias"], reads["mult"], reads["zero"]

            acc = Signal(signed(self._acc_bits), name=f"acc_{lane}")
            biased = Signal(signed(32), name=f"biased_{lane}")
            shift = [Signal(signed(6), name=f"shift_{lane}_{s}") for s in (2, 3, 4, 5, 6)]
            scaled = Signal(signed(32), name=f"scaled_{lane}")
            # The 32 x 31 product is split into two 32 x 16 partial products so that each maps
            # onto 18x18 multipliers with a register behind it.
            part_lo = Signal(signed(49), name=f"part_lo_{lane}")
            part_hi = Signal(signed(48), name=f"part_hi_{lane}")
            product = Signal(signed(64), name=f"product_{lane}")
            high = Signal(signed(32), name=f"high_{lane}")
            rounded = Signal(signed(32), name=f"rounded_{lane}")
            out = Signal.like(self.o.payload.data[lane], name=f"out_{lane}")

            left = Mux(shift[0] < 0, 0, shift[0][:5])
            right = Mux(shift[4] < 0, -shift[4], 0)[:5]
            multiplier = p_mult.multiplier
            # |product| < 2**62, so the nudged product still fits 64 bits (narrower than the
            # 65 bits Amaranth would infer, which simulators handle as a wide word).
            nudged = Signal(signed(64), name=f"nudged_{lane}")
            m.d.comb += nudged.eq(product + Mux(product >= 0, 1 << 30, 1 - (1 << 30)))
            mask = (Const(1, 32) << right) - 1
            remainder = high & mask
            threshold = (mask >> 1) + (high < 0)
            with_zero = rounded + p_zero.zero_point
            low = Mux(p_zero.relu & (p_zero.zero_point > qmin), p_zero.zero_point, qmin)
            steps = [
                [acc.eq(self.i.payload.data[lane])],
                [biased.eq(_saturate32(acc + p_bias.bias)), shift[0].eq(p_bias.shift)],
                [scaled.eq(_saturate32(biased << left)), shift[1].eq(shift[0])],
                [part_lo.eq(scaled * multiplier[:16]), part_hi.eq(scaled * multiplier[16:]),
                 shift[2].eq(shift[1])],
                [product.eq(part_lo + (part_hi << 16)), shift[3].eq(shift[2])],
                # C division by 2**31 truncates toward zero.
                [high.eq(Mux(nudged < 0, (nudged + ((1 << 31) - 1))[:64].as_signed() >> 31,
                             nudged >> 31)),
                 shift[4].eq(shift[3])],
                [rounded.eq((high >> right) + (remainder > threshold))],
                [out.eq(Mux(with_zero > qmax, qmax, Mux(with_zero < low, low, with_zero)))],
            ]
            for move, statements in zip(moves, steps):
                with m.If(move):
                    m.d.sync += statements
            m.d.comb += self.o.payload.data[lane].eq(out)
        return m
