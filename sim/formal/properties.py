"""Building blocks of the formal harnesses: named assertions, streams driven by a free but
rule-abiding environment, the stream rules on a block's outputs, beat counters, a watched-
beat scoreboard, and the stream faults that show each rule is checked.

The stream rules (``amaranth.lib.stream``, and ``docs/formal.md``):

* **held**: while ``valid & ~ready``, the next cycle still has ``valid`` and the same
  ``payload`` (valid never drops, and the payload never changes, without a handshake);
* **no beat lost or duplicated**: a block emits as many beats as it took (counting
  handshakes only, so that an input that takes a beat while not ready, or twice, is caught),
  never more, at most its capacity fewer, all of them once it is drained, and the watched
  beat (any beat: its index is an ``AnyConst``) comes out in its place with the fields it
  carries through.

Inputs of the block under test are driven by ``AnySeq`` values constrained (``Assume``) to
the same rules, so every property holds for every environment that keeps them.
"""

__all__ = [
    "FAULTS",
    "Harness",
    "PipelineHarness",
    "StreamFault",
    "assert_held",
    "check",
    "count_beats",
    "drained",
    "drive_sink",
    "drive_source",
    "held",
    "observe",
    "watched_beat",
]

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import (
    Assert,
    Assume,
    Cover,
    Elaboratable,
    Fragment,
    Module,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def check(m, name, test, *, kind="assert"):
    """Add the property ``test`` (checked in every cycle) under ``name``: SBY reports a failed
    assertion by this name (:attr:`~sparqforge.sim.formal.sby.FormalResult.failed`).

    ``kind`` is ``"assert"``, ``"assume"`` or ``"cover"``.
    """
    statement = {"assert": Assert, "assume": Assume, "cover": Cover}[kind](test)
    # The name stands in for the source location in the RTLIL ``src`` attribute, which is
    # what SBY prints for a failed assertion.
    statement.src_loc = (name, 0)
    m.d.comb += statement


class Harness(Elaboratable):
    """A property harness: the block under test as submodule ``dut``, the ``sync`` domain's
    reset held low (every register starts at its initial value, as an FPGA's do after
    configuration), and the properties added by :meth:`properties`.

    Parameters
    ----------
    dut : Elaboratable
        The block under test (possibly a deliberately broken variant).
    """

    def __init__(self, dut):
        self.dut = dut
        self._internals = None

    def properties(self, m, dut):
        raise NotImplementedError

    def internal(self, name):
        """The signal ``name`` that the block's own ``elaborate`` assigns (not its
        submodules'), for lemmas: properties of internal registers that the solver proves
        step by step and then uses, so that it need not rediscover them at every depth.

        Raises
        ------
        KeyError
            If the block has no such signal (it was renamed: update the harness).
        """
        if name not in self._internals:
            raise KeyError(f"{type(self.dut).__name__} assigns no signal named {name!r}; "
                           f"update the harness")
        return self._internals[name]

    def elaborate(self, platform):
        m = Module()
        # The block is elaborated here, so that its internal signals can be looked up.
        fragment = Fragment.get(self.dut, platform)
        self._internals = {}
        for statements in fragment.statements.values():
            for statement in statements:
                for signal in statement._lhs_signals():
                    self._internals.setdefault(signal.name, signal)
        m.submodules.dut = fragment
        check(m, "no_reset", ~ResetSignal(), kind="assume")
        self.properties(m, self.dut)
        return m


def _bits(value):
    return Value.cast(value)


def held(m, value, name):
    """A register holding ``value`` as of the previous cycle (the initial value at first)."""
    bits = _bits(value)
    register = Signal(len(bits), name=name)
    m.d.sync += register.eq(bits)
    return register


def _waiting(m, stream, name):
    """Whether the previous cycle had ``valid & ~ready`` on ``stream``."""
    waiting = Signal(name=f"{name}_waiting")
    m.d.sync += waiting.eq(stream.valid & ~stream.ready)
    return waiting


def drive_source(m, stream, name, *, payload=None):
    """Drive the input stream ``stream`` of the block under test from a free environment
    that keeps the stream rules: ``valid`` and ``payload`` are ``AnySeq`` except that a beat
    offered and not taken is offered again, unchanged. ``payload`` (a value) replaces the
    free payload (for sources whose payload the harness constrains itself)."""
    valid = Signal(name=f"{name}_valid_any")
    m.d.comb += [valid.eq(AnySeq(1)), stream.valid.eq(valid)]
    bits = _bits(stream.payload)
    if payload is None:
        free = Signal(len(bits), name=f"{name}_payload_any")
        m.d.comb += [free.eq(AnySeq(len(bits))), bits.eq(free)]
    else:
        m.d.comb += bits.eq(payload)
    waiting = _waiting(m, stream, name)
    previous = held(m, stream.payload, f"{name}_payload_prev")
    check(m, f"{name}_source_rules", ~waiting | (stream.valid & (bits == previous)),
          kind="assume")


def drive_sink(m, stream, name):
    """Drive ``ready`` of the block's output ``stream`` freely (any stall pattern)."""
    ready = Signal(name=f"{name}_ready_any")
    m.d.comb += [ready.eq(AnySeq(1)), stream.ready.eq(ready)]
    return ready


def assert_held(m, stream, name):
    """The block's output ``stream`` keeps ``valid`` and its payload while not taken:
    properties ``{name}_valid_held`` and ``{name}_payload_held``."""
    waiting = _waiting(m, stream, name)
    previous = held(m, stream.payload, f"{name}_payload_prev")
    check(m, f"{name}_valid_held", ~waiting | stream.valid)
    check(m, f"{name}_payload_held", ~waiting | (_bits(stream.payload) == previous))


def count_beats(m, fire, name, width=8):
    """A counter of the cycles in which ``fire`` is high (handshakes)."""
    counter = Signal(width, name=name)
    with m.If(fire):
        m.d.sync += counter.eq(counter + 1)
    return counter


def watched_beat(m, name, in_fire, in_value, out_fire, out_value, *, width=6):
    """Property ``{name}_in_order``: the ``n``-th beat out carries ``out_value`` equal to the
    ``in_value`` of the ``n``-th beat in, for an arbitrary ``n`` (an ``AnyConst``): a check of
    every beat at once, with one register of state. Beats are counted by handshake; the
    watched beat may leave in the cycle it enters.

    Returns the ``(beats_in, beats_out)`` counters."""
    index = Signal(width, name=f"{name}_watched")
    m.d.comb += index.eq(AnyConst(width))
    beats_in = count_beats(m, in_fire, f"{name}_in", width + 1)
    beats_out = count_beats(m, out_fire, f"{name}_out", width + 1)
    value = _bits(in_value)
    recorded = Signal(len(value), name=f"{name}_recorded")
    seen = Signal(name=f"{name}_seen")
    entering = in_fire & (beats_in == index)
    with m.If(entering):
        m.d.sync += [recorded.eq(value), seen.eq(1)]
    check(m, f"{name}_in_order",
          ~(out_fire & (beats_out == index))
          | ((seen & (_bits(out_value) == recorded)) | (entering & (_bits(out_value) == value))))
    return beats_in, beats_out


def drained(m, quiet, cycles, name):
    """A flag: for the last ``cycles`` cycles (``cycles`` >= 1) ``quiet`` was high (no beat
    in and the output ready): a block whose latency is below ``cycles`` has emitted every
    beat by then."""
    counter = Signal(range(cycles + 1), name=f"{name}_quiet")
    with m.If(~quiet):
        m.d.sync += counter.eq(0)
    with m.Elif(counter != cycles):
        m.d.sync += counter.eq(counter + 1)
    return counter == cycles


#: What a :class:`StreamFault` does to the beats it passes on.
FAULTS = ("unstable", "valid_drop", "drop", "duplicate")


class StreamFault(wiring.Component):
    """A deliberately broken link between a block's output and its consumer, to show that
    the stream properties catch each kind of fault. Beats pass through unchanged, except:

    ``unstable``
        the payload's low bit flips in every cycle that the consumer stalls a beat;
    ``valid_drop``
        ``valid`` drops in a stalled cycle chosen by the solver (no handshake);
    ``drop``
        one beat (which one: an ``AnyConst``) is taken from the block and never offered;
    ``duplicate``
        one beat is offered twice (the block is told it was not taken the first time).

    Parameters
    ----------
    signature : stream.Signature
        The stream's signature (as the block's output, ``Out``).
    fault : str
        One of :data:`FAULTS`.
    """

    def __init__(self, signature, fault):
        if fault not in FAULTS:
            raise ValueError(f"Fault must be one of {', '.join(FAULTS)}, not {fault!r}")
        self._fault = fault
        super().__init__({"i": In(signature), "o": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        m.d.comb += [o.valid.eq(i.valid), o.payload.eq(i.payload), i.ready.eq(o.ready)]
        fault = self._fault
        if fault == "unstable":
            toggle = Signal()
            m.d.sync += toggle.eq(i.valid & ~o.ready & ~toggle)
            m.d.comb += _bits(o.payload)[0].eq(_bits(i.payload)[0] ^ toggle)
        elif fault == "valid_drop":
            stalled = Signal()
            m.d.sync += stalled.eq(i.valid & ~o.ready)
            glitch = Signal()
            m.d.comb += [glitch.eq(AnySeq(1)), o.valid.eq(i.valid & ~(stalled & glitch))]
            m.d.comb += i.ready.eq(o.ready & ~(stalled & glitch))
        else:
            victim = Signal(4)
            m.d.comb += victim.eq(AnyConst(4))
            beats = Signal(5)
            repeated = Signal()
            hit = (beats == victim) & ~repeated
            with m.If(i.valid & i.ready):
                m.d.sync += beats.eq(beats + 1)
            if fault == "drop":
                m.d.comb += [o.valid.eq(i.valid & ~hit), i.ready.eq(o.ready | hit)]
            else:
                with m.If(hit & o.valid & o.ready):
                    m.d.sync += repeated.eq(1)
                m.d.comb += i.ready.eq(o.ready & ~hit)
        return m


def observe(m, dut, name, fault=None):
    """The output stream ``name`` of ``dut`` as the harness sees it: the block's own, or
    through a :class:`StreamFault` when ``fault`` is set."""
    port = getattr(dut, name)
    if fault is None:
        return port
    shim = StreamFault(dut.signature.members[name].signature, fault)
    m.submodules[f"fault_{name}"] = shim
    wiring.connect(m, port, shim.i)
    return shim.o


class PipelineHarness(Harness):
    """The stream properties of a block that passes beats from ``i`` to ``o`` one for one
    (a pipeline or a queue): ``o`` keeps the stream rules; it never offers a beat it was
    not given (``o_no_extra_beat``); at most ``capacity`` beats are inside
    (``i_capacity``); the watched beat leaves with the ``carried`` fields it entered with
    (``o_in_order``); and every beat is out once ``i`` was idle and ``o`` ready for
    ``latency`` cycles (``o_drained``). Other input streams (configuration) are driven
    freely under the stream rules.

    Parameters
    ----------
    dut : Elaboratable
    capacity : int
        Most beats the block holds.
    drain : int
        Cycles of an idle ``i`` and a ready ``o`` within which every beat inside is out
        (more than the latency, and than the capacity: the queue drains a beat per cycle).
    carried : callable
        ``carried(payload)``: the fields of a beat that travel unchanged (``i``'s payload
        or ``o``'s: both must have them).
    fault : str or None
        A :class:`StreamFault` on ``o``.
    others : tuple of str
        Further input streams of ``dut`` to drive.
    """

    def __init__(self, dut, *, capacity, drain, carried, fault=None, others=()):
        super().__init__(dut)
        self.capacity, self.drain = capacity, drain
        self.carried, self.fault, self.others = carried, fault, others

    def extra(self, m, dut, beats_in, beats_out):
        """Block-specific properties and lemmas (none here); ``beats_out`` counts the beats
        that left ``dut.o`` itself (before any fault)."""

    def properties(self, m, dut):
        drive_source(m, dut.i, "i")
        for name in self.others:
            drive_source(m, getattr(dut, name), name)
        o = observe(m, dut, "o", self.fault)
        drive_sink(m, o, "o")
        assert_held(m, o, "o")
        i_fire = dut.i.valid & dut.i.ready
        o_fire = o.valid & o.ready
        beats_in, beats_out = watched_beat(m, "o", i_fire, self.carried(dut.i.payload),
                                           o_fire, self.carried(o.payload))
        inside = Signal(range(-64, 64), name="inside")
        m.d.comb += inside.eq(beats_in - beats_out)
        check(m, "o_no_extra_beat", ~o.valid | (inside > 0))
        check(m, "i_capacity", (inside >= 0) & (inside <= self.capacity))
        quiet = ~dut.i.valid & o.ready
        check(m, "o_drained", ~drained(m, quiet, self.drain, "o") | (inside == 0))
        left = beats_out if self.fault is None else count_beats(
            m, dut.o.valid & dut.o.ready, "dut_o_beats", len(beats_out))
        self.extra(m, dut, beats_in, left)
