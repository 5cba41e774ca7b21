"""Named pipeline stages, and handshakes for fixed-length stream pipelines: ones that stall
as a whole, and ones that never stall and queue their output."""

__all__ = ["Stages", "Carried", "StageStatements", "stall_pipeline", "queued_pipeline",
           "QUEUE_LATENCY"]

from amaranth.hdl import Cat, Shape, Signal, Value
from amaranth.lib.fifo import SyncFIFOBuffered


class Stages:
    """The stages of a fixed-length pipeline, named, in order.

    A block lists its stages once: its stage count (and so its latency and the depth of its
    output queue) is the length of that list, statements go into a stage by name
    (:meth:`statements`), and a value that travels with the beat (its tag, ``last``, a
    parameter read early) is taken as of a stage by name (:meth:`carry`). A stage inserted
    anywhere moves every later use with it, and a name that is not in the list raises.

    The registers of a stage hold the beat in that stage; its statements load them from the
    registers of the stage before (the first stage's, from the input stream).

    Parameters
    ----------
    *names : str
        The stages, first to last.
    numbered_from : int
        Number of the first stage in register names (``tag_3``), the others counting up
        from it. It names registers only: the requantizer counts its stages from 0, the
        threshold unit from 1 (its input stream being stage 0).

    Raises
    ------
    TypeError
        If a name is not a non-empty string.
    ValueError
        If there is no stage or a name is repeated.
    """

    def __init__(self, *names, numbered_from=0):
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Stage name must be a non-empty string, not {name!r}")
        if not names:
            raise ValueError("A pipeline must have at least one stage, not none")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"Stage names must be unique, not repeated: {', '.join(repeated)}")
        self._names = names
        self._positions = {name: s for s, name in enumerate(names)}
        self._numbered_from = numbered_from

    def __len__(self):
        return len(self._names)

    def __iter__(self):
        return iter(self._names)

    def __contains__(self, name):
        return name in self._positions

    def __repr__(self):
        return f"Stages({', '.join(map(repr, self._names))})"

    @property
    def first(self):
        """Name of the first stage (loaded from the input stream)."""
        return self._names[0]

    @property
    def final(self):
        """Name of the last stage (the one the output is taken from)."""
        return self._names[-1]

    def position(self, stage):
        """Where ``stage`` is in the list (0 for the first stage).

        Raises
        ------
        ValueError
            If there is no stage named ``stage``.
        """
        position = self._positions.get(stage) if isinstance(stage, str) else None
        if position is None:
            raise ValueError(f"Stage must be one of {', '.join(self._names)}, not {stage!r}")
        return position

    def number(self, stage):
        """The number of ``stage`` in register names (see ``numbered_from``)."""
        return self._numbered_from + self.position(stage)

    def distance(self, earlier, later):
        """Cycles from a beat being in stage ``earlier`` to its being in stage ``later``."""
        return self.position(later) - self.position(earlier)

    def previous(self, stage, count=1):
        """The stage ``count`` stages before ``stage``.

        Raises
        ------
        ValueError
            If either stage does not exist.
        """
        position = self.position(stage) - count
        if not 0 <= position < len(self._names):
            raise ValueError(f"Stage {stage!r} must have {count} stages before it, not "
                             f"{self.position(stage)}")
        return self._names[position]

    def carry(self, value, name, *, start=None, stop=None, packed=False, reset_less=False):
        """``value`` carried with the beat: a register in each stage from ``start`` (the
        first stage if ``None``) up to but not including ``stop`` (through the last stage
        if ``None``), the one of ``start`` loaded from ``value``.

        The caller adds :attr:`Carried.statements` to its synchronous domain (or carries
        the value with :meth:`StageStatements.carry`, which does). The registers are named
        ``{name}_{number}`` (see :meth:`number`), or with ``packed`` are slices of one
        register named ``name``.
        """
        return Carried(self, value, name, start=start, stop=stop, packed=packed,
                       reset_less=reset_less)

    def statements(self):
        """An empty :class:`StageStatements` for these stages."""
        return StageStatements(self)


class Carried:
    """A value that travels with the beat through stages of a :class:`Stages`; made by
    :meth:`Stages.carry` or :meth:`StageStatements.carry`, whose parameters these are."""

    def __init__(self, stages, value, name, *, start=None, stop=None, packed=False,
                 reset_less=False):
        self._stages = stages
        self._value = value
        self._name = name
        self._start = stages.position(stages.first if start is None else start)
        self._stop = len(stages) if stop is None else stages.position(stop)
        held = list(stages)[self._start:self._stop]
        if self._stop < self._start:
            raise ValueError(f"Stage {stop!r} must not come before "
                             f"{list(stages)[self._start]!r}")
        shape = value.shape() if hasattr(value, "shape") else Value.cast(value).shape()
        self._registers = {}
        self._loads = {}
        if packed and held:
            # One register for all stages, shifting by one copy per cycle.
            width = Shape.cast(shape).width
            register = Signal(width * len(held), name=name, reset_less=reset_less)
            self._registers = {stage: register[k * width:(k + 1) * width]
                               for k, stage in enumerate(held)}
            self._loads[held[0]] = register.eq(Cat(value, register[:-width]))
        elif not packed:
            source = value
            for stage in held:
                register = Signal(shape, name=f"{name}_{stages.number(stage)}",
                                  reset_less=reset_less)
                self._registers[stage] = register
                self._loads[stage] = register.eq(source)
                source = register

    @property
    def statements(self):
        """The loads of the registers, first stage first."""
        return list(self._loads.values())

    def statements_in(self, stage):
        """The loads of the registers that ``stage`` holds (none, or one)."""
        self._stages.position(stage)
        return [self._loads[stage]] if stage in self._loads else []

    def at(self, stage):
        """The value for the beat in ``stage``: that stage's register.

        Raises
        ------
        ValueError
            If there is no such stage, or the value is not carried in it.
        """
        if not self._start <= self._stages.position(stage) < self._stop:
            raise ValueError(f"Stage must be one that carries {self._name!r}, not {stage!r}")
        return self._registers[stage]

    def before(self, stage):
        """The value for the beat about to enter ``stage``: the register of the stage before
        it, or the value carried in when ``stage`` is where carrying starts.

        Raises
        ------
        ValueError
            If there is no such stage, or the value is not carried into it.
        """
        if self._stages.position(stage) == self._start:
            return self._value
        return self.at(self._stages.previous(stage))


class StageStatements:
    """Statements of a pipeline's stages, gathered by stage name in any order and given out
    (by iterating, as in ``m.d.sync += steps``) stage by stage: each stage's own statements
    in the order added, then the loads of the values carried with :meth:`carry`.

    Every stage must be named in :meth:`add`, with no statements if it holds only carried
    values or registers inside submodules: a stage inserted in the list and forgotten here
    raises when the statements are given out, instead of shifting the rest of the pipeline
    by a cycle.
    """

    def __init__(self, stages):
        self._stages = stages
        self._added = {}
        self._carried = []

    def add(self, stage, *statements):
        """Add ``statements`` (possibly none) to ``stage``.

        Raises
        ------
        ValueError
            If there is no such stage.
        """
        self._stages.position(stage)
        self._added.setdefault(stage, []).extend(statements)

    def carry(self, value, name, **kwargs):
        """:meth:`Stages.carry`, with the registers loaded among these stages' statements."""
        carried = Carried(self._stages, value, name, **kwargs)
        self._carried.append(carried)
        return carried

    def __iter__(self):
        missing = [stage for stage in self._stages if stage not in self._added]
        if missing:
            raise ValueError(f"Every stage must have statements added (none for one that "
                             f"holds only carried values or submodule registers), not "
                             f"{', '.join(missing)}")
        for stage in self._stages:
            yield from self._added[stage]
            for carried in self._carried:
                yield from carried.statements_in(stage)


def _stage_count(stages):
    return len(stages) if isinstance(stages, Stages) else stages


def stall_pipeline(m, i, o, stages):
    """Drive the handshake of a ``stages``-deep pipeline from stream ``i`` to stream ``o``
    (``stages``: a count, or the :class:`Stages` to count).

    Returns ``(en, valid)``: every stage register (and synchronous memory read port) must
    update only while ``en`` is high; ``valid[s]`` tells whether stage ``s + 1`` holds a beat.
    The pipeline advances when its last stage is empty or being taken, so it runs one beat
    per cycle and a stalled output freezes all stages, holding ``o.payload``.
    """
    stages = _stage_count(stages)
    en = Signal()
    valid = Signal(stages)
    m.d.comb += [
        en.eq(~o.valid | o.ready),
        i.ready.eq(en),
        o.valid.eq(valid[-1]),
    ]
    with m.If(en):
        m.d.sync += valid.eq(Cat(i.valid, valid[:-1]))
    return en, valid


#: Cycles a beat spends in :func:`queued_pipeline`'s output queue when ``o`` is ready.
QUEUE_LATENCY = 2


def queued_pipeline(m, i, o, stages, *, name="queue"):
    """Drive the handshake of a ``stages``-deep pipeline that never stalls, from stream ``i``
    to stream ``o`` through an output queue (``stages``: a count, or the :class:`Stages` to
    count).

    The stage registers load every cycle, bubbles included, so no enable reaches them: on a
    wide block a stall enable fans out to thousands of flip-flops and is the slowest net of
    the design. Beats leave the last stage into a queue that ``o`` reads; ``i`` is ready
    while the queue has room for every beat accepted and not yet read, so a stalled ``o``
    only stops new beats entering. ``i.ready`` depends on a register only, never on
    ``o.ready``.

    Returns ``(valid, payload)``: ``valid[s]`` tells whether stage ``s + 1`` holds a beat;
    the caller drives ``payload`` (laid out like ``o.payload``) from its last stage. A beat
    accepted in cycle ``t`` is on ``o`` from cycle ``t + stages + QUEUE_LATENCY`` and the
    pipeline takes one beat per cycle while ``o`` is ready.
    """
    stages = _stage_count(stages)
    # The queue holds every beat in flight at full rate (the latency plus the cycle in
    # which the occupancy count sees a read), so a ready ``o`` never throttles ``i``.
    depth = stages + QUEUE_LATENCY + 2
    layout = o.payload.shape()
    payload = Signal(layout)
    queue = SyncFIFOBuffered(width=Shape.cast(layout).width, depth=depth)
    m.submodules[name] = queue
    valid = Signal(stages)
    occupancy = Signal(range(depth + 1))
    accept = i.valid & i.ready
    taken = o.valid & o.ready
    m.d.comb += [
        i.ready.eq(occupancy != depth),
        queue.w_en.eq(valid[-1]),
        queue.w_data.eq(payload),
        o.valid.eq(queue.r_rdy),
        o.payload.eq(queue.r_data),
        queue.r_en.eq(o.ready),
    ]
    m.d.sync += [valid.eq(Cat(accept, valid[:-1])),
                 occupancy.eq(occupancy + accept - taken)]
    return valid, payload
