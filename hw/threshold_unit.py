"""Monotone threshold unit: integer accumulators to output codes with integers only."""

__all__ = ["ThresholdUnit"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .pipeline import QUEUE_LATENCY, Stages, queued_pipeline


class ThresholdUnit(wiring.Component):
    """Maps each accumulator to the number of its channel's thresholds it reaches,
    ``code = #{i : t[i] <= acc}``, with ``2**code_bits - 1`` thresholds sorted ascending.

    Any monotone map from an integer accumulator to a ``code_bits`` output code is such a
    count (FINN's MultiThreshold), so the power transform, scales, bias and ReLU of a
    power-exponent activation quantizer all fold into thresholds computed on the host, and
    the unit is exact. Thresholds are ``acc_bits + 1`` wide so that "never reached"
    (``acc_max + 1``) is representable; unused codes get that value.

    The count is found by a pipelined binary search, one output bit per stage, MSB first:
    stage ``s`` holds the ``2**s`` thresholds its comparison can need (indices ``j - 1`` with
    ``j`` an odd multiple of ``2**(code_bits-1-s)``), so the channel's thresholds are stored
    once, split over ``code_bits`` small memories per lane. Lane ``l`` of a beat tagged ``g``
    uses the thresholds of channel ``g * lanes + l``.

    Parameters
    ----------
    lanes : int
        Accumulators per beat.
    acc_bits : int
        Accumulator width (signed), at most 32.
    code_bits : int
        Output code width, 1..8 (unsigned codes ``0 .. 2**code_bits - 1``).
    out_bits : int
        Width of the output lanes (``>= code_bits``; codes are zero-extended).
    groups : int
        Threshold sets per lane, selected by ``tag``.

    Attributes
    ----------
    i : In(stream)
        ``data`` (``lanes`` x ``signed(acc_bits)``), ``tag``, ``last``.
    o : Out(stream)
        ``data`` (``lanes`` codes), ``last``.
    cfg : In(stream)
        Always ready: ``lane``, ``group``, ``index`` (``0 .. 2**code_bits - 2``), ``value``.
        Write thresholds while no beat is in flight.

    Latency :attr:`latency` = ``code_bits + 1`` stages (:attr:`pipeline_stages`: a
    comparison per code bit, then the code) plus the output queue's ``QUEUE_LATENCY``, one
    beat per cycle; the stages never stall, the output queue does.
    """

    def __init__(self, *, lanes, acc_bits, code_bits=4, out_bits=None, groups=1):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
        if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 32:
            raise TypeError(f"Accumulator width must be an integer in 2..32, not {acc_bits!r}")
        if not isinstance(code_bits, int) or not 1 <= code_bits <= 8:
            raise TypeError(f"Code width must be an integer in 1..8, not {code_bits!r}")
        out_bits = code_bits if out_bits is None else out_bits
        if not isinstance(out_bits, int) or not code_bits <= out_bits <= 8:
            raise TypeError(f"Output width must be an integer in {code_bits}..8, not "
                            f"{out_bits!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise TypeError(f"Group count must be a positive integer, not {groups!r}")
        self._lanes, self._acc_bits = lanes, acc_bits
        self._code_bits, self._out_bits = code_bits, out_bits
        self._groups = groups
        tag = unsigned(self.tag_bits)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(acc_bits), lanes), "tag": tag,
                "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(unsigned(out_bits), lanes), "last": unsigned(1)}))),
            "cfg": In(stream.Signature(data.StructLayout({
                "lane": unsigned(ceil_log2(lanes)), "group": tag,
                "index": unsigned(code_bits), "value": signed(self.threshold_bits)}))),
        })

    lanes = property(lambda self: self._lanes)
    acc_bits = property(lambda self: self._acc_bits)
    code_bits = property(lambda self: self._code_bits)
    out_bits = property(lambda self: self._out_bits)
    groups = property(lambda self: self._groups)

    @property
    def tag_bits(self):
        return ceil_log2(self._groups)

    @property
    def threshold_bits(self):
        return self._acc_bits + 1

    @property
    def thresholds(self):
        """Thresholds per channel: ``2**code_bits - 1``."""
        return (1 << self._code_bits) - 1

    @property
    def pipeline_stages(self):
        """The pipeline, stage by stage: ``compare_{s}`` holds the accumulator and the
        ``s`` code bits decided so far, with the threshold read for it, and decides bit
        ``code_bits - 1 - s``; ``code`` holds the output code. Register names number the
        stages from 1 (the input stream being stage 0)."""
        return Stages(*(f"compare_{s}" for s in range(self._code_bits)), "code",
                      numbered_from=1)

    @property
    def stages(self):
        return len(self.pipeline_stages)

    @property
    def latency(self):
        return self.stages + QUEUE_LATENCY

    @property
    def params(self):
        return {"lanes": self._lanes, "acc_bits": self._acc_bits,
                "code_bits": self._code_bits, "out_bits": self._out_bits,
                "groups": self._groups}

    def elaborate(self, platform):
        m = Module()
        bits = self._code_bits
        stages = self.pipeline_stages
        _, out = queued_pipeline(m, self.i, self.o, stages)
        m.d.comb += self.cfg.ready.eq(1)

        # The tag addresses the threshold reads, so it travels only as far as the last
        # comparison's read needs it; ``last`` travels to the output.
        tag = stages.carry(self.i.payload.tag, "tag", stop=f"compare_{bits - 1}")
        last = stages.carry(self.i.payload.last, "last")
        m.d.sync += [*tag.statements, *last.statements]
        m.d.comb += out.last.eq(last.at(stages.final))

        cfg = self.cfg.payload
        j = Signal(bits + 1)
        m.d.comb += j.eq(cfg.index + 1)
        for lane in range(self._lanes):
            memories = []
            for s in range(bits):
                table = Memory(shape=signed(self.threshold_bits), depth=self._groups << s,
                               init=[])
                m.submodules[f"thresholds_{lane}_{s}"] = table
                step = 1 << (bits - 1 - s)
                write = table.write_port()
                m.d.comb += [
                    write.addr.eq(Cat(j[bits - s:bits], cfg.group)),
                    write.data.eq(cfg.value),
                    write.en.eq(self.cfg.valid & (cfg.lane == lane)
                                & (j[:bits - s] == step)),
                ]
                memories.append(table.read_port())

            steps = stages.statements()
            first = stages.first
            acc = Signal(signed(self._acc_bits), name=f"acc_{lane}_{stages.number(first)}")
            count = Const(0, bits)
            steps.add(first, acc.eq(self.i.payload.data[lane]))
            m.d.comb += memories[0].addr.eq(tag.before(first))
            # Stage compare_s compares with the threshold read for it and decides bit
            # bits - 1 - s of the count; the decided prefix addresses the next stage's read
            # (with the tag one stage before that stage), which lands with the beat in it.
            for s in range(bits):
                stage = f"compare_{s}"
                step = 1 << (bits - 1 - s)
                decided = Signal(bits, name=f"count_{lane}_{stages.number(stage)}")
                m.d.comb += decided.eq(Mux(acc >= memories[s].data, count | step, count))
                if s + 1 < bits:
                    following = f"compare_{s + 1}"
                    number = stages.number(following)
                    next_acc = Signal.like(acc, name=f"acc_{lane}_{number}")
                    next_count = Signal(bits, name=f"prefix_{lane}_{number}")
                    read = memories[s + 1]
                    m.d.comb += read.addr.eq(Cat(decided[bits - 1 - s:bits],
                                                 tag.before(following)))
                    steps.add(following, next_acc.eq(acc), next_count.eq(decided))
                    acc, count = next_acc, next_count
                else:
                    steps.add("code", out.data[lane].eq(decided))
            m.d.sync += steps
        return m
