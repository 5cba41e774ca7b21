"""Per-output-channel gemmlowp requantizer: int32 accumulators to low-bit output codes."""

__all__ = ["requant_param_layout", "Requantizer"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw.golden import INT32_MAX, INT32_MIN, MULTIPLIER_BITS, check_operand, operand_range
from .pipeline import QUEUE_LATENCY, Stages, queued_pipeline
from .registered_multiplier import RegisteredMultiplier
from .replica import replica


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
    """``value`` (signed, wider than 32 bits) clamped to int32. The overflow test looks at
    the bits above bit 31 only (they must all equal the sign), which is a few LUTs where a
    comparison with the int32 limits would be two more carry chains."""
    sign = value[-1]
    upper = value[31:len(value) - 1]
    too_high = ~sign & upper.any()
    too_low = sign & ~upper.all()
    return Mux(too_high, INT32_MAX, Mux(too_low, INT32_MIN, value[:32].as_signed()))


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
        Always ready; ``lane``, ``group`` and ``param`` (:func:`requant_param_layout`). A
        write reaches its table one cycle after it is offered.

    Latency is :attr:`latency` cycles (the :attr:`pipeline_stages` and the output queue),
    throughput one beat per cycle; the pipeline never stalls, its output queue does (``i``
    waits while the queue is full). Every stage has at most one carry chain of 64 bits, half
    a barrel shifter or one multiplier behind its registers (about 100 MHz on an ECP5-6).
    """

    #: The pipeline, stage by stage: what each stage's registers hold, per lane, besides the
    #: beat's tag and ``last`` (every stage) and its shift (from ``bias`` on). A table read
    #: lands in the stage after its address register's.
    pipeline_stages = Stages(
        "acc",                  # the accumulator; the bias table's address
        "bias_read",            # the accumulator again; the bias and shift, read
        "bias",                 # acc + bias (33 bits)
        "bias_saturate",        # sat32(acc + bias)
        "left_low",             # shifted left by 0..7
        "left_high",            # shifted left by 0, 8, 16 or 24 more; the multiplier's address
        "left_saturate",        # sat32(x << max(shift, 0)); the multiplier, read
        "multiplier_operands",  # only the multipliers' operand registers
        "multiplier_products",  # only the multipliers' 16 x 16 products
        "partial_products",     # the two 32 x 16 partial products
        "product",              # the 64-bit product
        "nudge",                # product + nudge; the right shift amount
        "high",                 # the high word (x * m / 2**31); right shift and its mask
        "divide",               # shifted right, remainder and rounding threshold
        "round_decide",         # whether to round up; the zero point's address
        "round",                # rounded; the zero point and ReLU flag, read
        "zero_point",           # + zero point; the clamp's lower bound
        "clamp",                # the output code
    )

    #: Number of pipeline stages; see :attr:`latency`.
    stages = len(pipeline_stages)

    #: Cycles from accepting a beat to offering its codes on ``o`` (when ``o`` is ready).
    latency = stages + QUEUE_LATENCY

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
        stages = self.pipeline_stages
        # ``latency`` is a class constant, which the blocks around this one schedule by
        # without elaborating it: it must count the stages built here.
        assert self.latency == len(stages) + QUEUE_LATENCY, "latency must count every stage"
        # Every stage loads every cycle, bubbles included (``valid`` says which stages hold
        # beats) and the output queue absorbs stalls: a stall enable would fan out to every
        # register of every lane, the slowest net of an 8-lane ECP5 build.
        _, out_payload = queued_pipeline(m, self.i, self.o, stages)
        m.d.comb += self.cfg.ready.eq(1)

        # ``last`` and the tag travel with the beat through every stage (those of the last
        # stages are unused; the timing-closed netlists were built with them).
        last = stages.carry(self.i.payload.last, "lasts", packed=True, reset_less=True)
        tag = stages.carry(self.i.payload.tag, "tag", reset_less=True)
        m.d.sync += [*last.statements, *tag.statements]
        m.d.comb += out_payload.last.eq(last.at(stages.final))

        qmin, qmax = operand_range(self._out_bits, self._out_signed)
        # Each lane keeps its parameters in three narrow tables, one per pipeline stage that
        # reads them, each addressed by the tag one stage ahead of its use: the parameters
        # travel with the beat without being copied down the pipeline, and no table word is
        # wider than 64 bits (which simulators handle much faster).
        # Configuration writes are registered, with a write enable per lane and table: the
        # tables are spread over the lanes, and a write decoded from the command executor's
        # state would otherwise reach each of their write enables in the same cycle.
        cfg = Signal.like(self.cfg.payload, reset_less=True)
        m.d.sync += cfg.eq(self.cfg.payload)
        param = cfg.param
        layouts = [
            ("bias", data.StructLayout({"bias": signed(32), "shift": signed(6)}),
             {"bias": param.bias, "shift": param.shift}),
            ("mult", data.StructLayout({"multiplier": unsigned(MULTIPLIER_BITS)}),
             {"multiplier": param.multiplier}),
            ("zero", data.StructLayout({"zero_point": signed(self._out_bits + 1),
                                        "relu": unsigned(1)}),
             {"zero_point": param.zero_point, "relu": param.relu}),
        ]
        # Each lane's tables are read through an address register of its own (a replica:
        # one tag register would drive every table of every lane). The word that the
        # statements of a stage use is read in the stage before (the read port is
        # synchronous, so that the tables can be block RAM where there is no LUT RAM), from
        # an address register that belongs to the stage before that: it loads the tag one
        # stage before its own.
        def read_address(stage):
            return tag.before(stages.previous(stage, 2))
        addresses = {"bias": read_address("bias"),
                     "mult": read_address("multiplier_operands"),
                     "zero": read_address("zero_point")}
        for lane in range(self._lanes):
            reads = {}
            for part, shape, fields in layouts:
                table = Memory(shape=shape, depth=self._groups, init=[])
                m.submodules[f"{part}_{lane}"] = table
                wr = table.write_port()
                write = Signal(name=f"{part}_write_{lane}")
                m.d.sync += write.eq(self.cfg.valid & (self.cfg.payload.lane == lane))
                # Each table's write address is a register of its own, too.
                m.d.comb += [wr.addr.eq(replica(m, self.cfg.payload.group,
                                                f"{part}_write_addr_{lane}", reset_less=True)),
                             wr.en.eq(write)]
                m.d.comb += [getattr(wr.data, name).eq(value) for name, value in fields.items()]
                rd = table.read_port()
                m.d.comb += rd.addr.eq(replica(m, addresses[part], f"{part}_addr_{lane}",
                                               reset_less=True))
                reads[part] = rd.data
            p_bias, p_mult, p_zero = reads["bias"], reads["mult"], reads["zero"]
            steps = stages.statements()

            acc = Signal(signed(self._acc_bits), reset_less=True, name=f"acc_{lane}")
            # The accumulator waits a stage for its bias (see the table addresses).
            acc_1 = Signal(signed(self._acc_bits), reset_less=True, name=f"acc_1_{lane}")
            biased_sum = Signal(signed(33), reset_less=True, name=f"biased_sum_{lane}")
            biased = Signal(signed(32), reset_less=True, name=f"biased_{lane}")
            # The shift is read with the bias and travels with the beat from there (through
            # the last stage, as the tag).
            shift = steps.carry(p_bias.shift, f"shift_{lane}", start="bias", reset_less=True)
            half_left = Signal(signed(39), reset_less=True, name=f"half_left_{lane}")
            shifted_left = Signal(signed(63), reset_less=True, name=f"shifted_left_{lane}")
            scaled = Signal(signed(32), reset_less=True, name=f"scaled_{lane}")
            # The 32 x 31 product is built from four 16 x 16 products, each from a
            # multiplier with registered operands and product (on an ECP5 the DSP block's
            # own registers: stages multiplier_operands and multiplier_products), then two
            # 32 x 16 partial products.
            assert stages.distance("left_saturate", "multiplier_products") \
                == RegisteredMultiplier.latency
            multipliers = {}
            for a in ("lo", "hi"):
                for b in ("lo", "hi"):
                    multipliers[a, b] = RegisteredMultiplier(
                        unsigned(16) if a == "lo" else signed(16), unsigned(16))
                    m.submodules[f"multiplier_{lane}_{a}{b}"] = multipliers[a, b]
            quarters = {key: mul.p for key, mul in multipliers.items()}
            part_lo = Signal(signed(49), reset_less=True, name=f"part_lo_{lane}")
            part_hi = Signal(signed(48), reset_less=True, name=f"part_hi_{lane}")
            product = Signal(signed(64), reset_less=True, name=f"product_{lane}")
            nudged = Signal(signed(64), reset_less=True, name=f"nudged_{lane}")
            high = Signal(signed(32), reset_less=True, name=f"high_{lane}")
            shifted = Signal(signed(32), reset_less=True, name=f"shifted_{lane}")
            remainder = Signal(32, reset_less=True, name=f"remainder_{lane}")
            threshold = Signal(33, reset_less=True, name=f"threshold_{lane}")
            truncated = Signal(signed(32), reset_less=True, name=f"truncated_{lane}")
            round_up = Signal(reset_less=True, name=f"round_up_{lane}")
            rounded = Signal(signed(32), reset_less=True, name=f"rounded_{lane}")
            out = Signal.like(self.o.payload.data[lane], reset_less=True, name=f"out_{lane}")

            # The left shift by 0..31 in two stages: by 0..7, then by 0, 8, 16 or 24.
            shift_low, shift_high = shift.before("left_low"), shift.before("left_high")
            left_low = Mux(shift_low < 0, 0, shift_low[:3])
            left_high = Cat(Const(0, 3), Mux(shift_high < 0, 0, shift_high[3:5]))
            # The right shift and its mask are decoded a stage early, beside ``high``; the
            # mask is a thermometer code (one small comparison per bit, no carry chain).
            # (The shift amount itself a stage before that, so that each bit of the mask is
            # one comparison of a register.)
            right_early = Signal(5, reset_less=True, name=f"right_early_{lane}")
            shift_right = shift.before("nudge")
            right = Signal(5, reset_less=True, name=f"right_{lane}")
            mask = Signal(32, reset_less=True, name=f"mask_{lane}")
            multiplier = p_mult.multiplier
            # |product| < 2**62, so the nudged product still fits 64 bits (narrower than the
            # 65 bits Amaranth would infer, which simulators handle as a wide word).
            nudge = Mux(product >= 0, 1 << 30, 1 - (1 << 30))
            # The zero point is added in one stage and the result clamped in the next.
            with_zero = Signal(signed(33), reset_less=True, name=f"with_zero_{lane}")
            low = Signal(signed(self._out_bits + 1), reset_less=True, name=f"low_{lane}")
            steps.add("acc", acc.eq(self.i.payload.data[lane]))
            steps.add("bias_read", acc_1.eq(acc))
            steps.add("bias", biased_sum.eq(acc_1 + p_bias.bias))
            steps.add("bias_saturate", biased.eq(_saturate32(biased_sum)))
            steps.add("left_low", half_left.eq(biased << left_low))
            steps.add("left_high", shifted_left.eq(half_left << left_high))
            steps.add("left_saturate", scaled.eq(_saturate32(shifted_left)))
            # scaled * m = (scaled[16:] * 2**16 + scaled[:16]) * m, scaled[:16] unsigned.
            # The multipliers register their operands and products themselves: these two
            # stages have no statements of their own.
            for a, part in (("lo", scaled[:16]), ("hi", scaled[16:].as_signed())):
                for b, factor in (("lo", multiplier[:16]), ("hi", multiplier[16:])):
                    m.d.comb += [multipliers[a, b].a.eq(part), multipliers[a, b].b.eq(factor)]
            steps.add("multiplier_operands")
            steps.add("multiplier_products")
            steps.add("partial_products",
                      part_lo.eq(quarters["lo", "lo"] + (quarters["hi", "lo"] << 16)),
                      part_hi.eq(quarters["lo", "hi"] + (quarters["hi", "hi"] << 16)))
            steps.add("product", product.eq(part_lo + (part_hi << 16)))
            steps.add("nudge", nudged.eq(product + nudge),
                      right_early.eq(Mux(shift_right < 0, -shift_right, 0)[:5]))
            # C division by 2**31 truncates toward zero.
            steps.add("high",
                      high.eq(Mux(nudged < 0, (nudged + ((1 << 31) - 1))[:64].as_signed() >> 31,
                                  nudged >> 31)),
                      right.eq(right_early), mask.eq(Cat(*(right_early > i for i in range(32)))))
            # RoundingDivideByPOT in two steps: shift, remainder and threshold first...
            steps.add("divide", shifted.eq(high >> right), remainder.eq(high & mask),
                      threshold.eq((mask >> 1) + (high < 0)))
            # ... then whether to round up, and the increment.
            steps.add("round_decide", truncated.eq(shifted), round_up.eq(remainder > threshold))
            steps.add("round", rounded.eq(truncated + round_up))
            steps.add("zero_point", with_zero.eq(rounded + p_zero.zero_point),
                      low.eq(Mux(p_zero.relu & (p_zero.zero_point > qmin), p_zero.zero_point,
                                 qmin)))
            steps.add("clamp",
                      out.eq(Mux(with_zero > qmax, qmax, Mux(with_zero < low, low, with_zero))))
            m.d.sync += steps
            m.d.comb += out_payload.data[lane].eq(out)
        return m
