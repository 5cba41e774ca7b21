"""The executor's RUN descriptor: its registers, loaded from a frame's header or from stored
bytes (a RUNS command's, see :class:`~sparqforge.hw.executor.Executor`), the weight word
count the range checks need, the checks themselves, and the executor's states that fetch a
RUNS command's descriptors."""

__all__ = ["field", "run_descriptor", "runs_decode", "program_states"]

from amaranth.hdl import Cat, Mux, Signal

from ..protocol import ADD_TABLES, FIELDS_OFFSET, Command, Mode, RunDescriptor, Status
from .replica import replica_signal


def field(header, offset, size):
    """A little-endian header field of ``size`` bytes at byte ``offset``."""
    return Cat(*(header[offset + i] for i in range(size)))


def run_descriptor(m, s, config, desc, header):
    """The descriptor registers, the weight word count ``n_tiles * k_steps`` and the RUN
    checks (``s.checks``, then ``s.run_ok``)."""
    offsets = RunDescriptor.offsets()
    # A RUN's weight words n_tiles * k_steps, by shift and add, one bit of k_steps per
    # cycle (at most 16) from HEADER_DONE on, for every frame; RUN_SIZE waits for the
    # last bit. A multiplier would take a DSP block (the iCE40UP5K's eight are all in
    # the datapath) and, in one cycle with the checks after it, be the slowest path of
    # the whole system. The registers load on a registered pulse, not on a state.
    s.w_words = Signal(32)
    s.mul_a, s.mul_b = Signal(32), Signal(16)
    # The descriptor is loaded from the header of every frame on a pulse of its own, so
    # that its registers' enable is one flip-flop, not the executor's state and checks.
    s.load_mul = Signal()
    s.load_desc = replica_signal(1, name="load_desc")
    m.d.sync += [s.load_mul.eq(0), s.load_desc.eq(0)]
    # A RUNS command's descriptors come from the stored bytes (``s.stored``, shifted in
    # from the descriptor memory at the body's field offsets), a RUN's from its header.
    s.stored = Signal()
    s.stored_bytes = Signal(8 * RunDescriptor.SIZE, reset_less=True)
    if config.program_depth:
        stored = [None] * FIELDS_OFFSET + [s.stored_bytes.word_select(i, 8)
                                           for i in range(RunDescriptor.SIZE)]

        def source(name):
            return Mux(s.stored, field(stored, *offsets[name]),
                       field(header, *offsets[name]))
    else:
        def source(name):
            return field(header, *offsets[name])
    with m.If(s.load_mul):
        m.d.sync += [s.mul_a.eq(source("n_tiles")),
                     s.mul_b.eq(source("k_steps")), s.w_words.eq(0)]
    with m.If(s.load_desc):
        m.d.sync += [getattr(desc, name).eq(source(name))
                     for name in RunDescriptor.FIELDS]
    with m.Else():
        m.d.sync += [s.mul_a.eq(s.mul_a << 1), s.mul_b.eq(s.mul_b >> 1)]
        with m.If(s.mul_b[0]):
            m.d.sync += s.w_words.eq(s.w_words + s.mul_a)
    # The RUN checks' sums, registered every cycle: the descriptor is loaded in
    # HEADER_DONE and ``w_words`` is complete when RUN_SIZE leaves, a cycle before
    # RUN_CHECK.
    group_end, w_end = Signal(17), Signal(33)
    m.d.sync += [group_end.eq(desc.group_base + desc.n_tiles),
                 w_end.eq(desc.w_base + s.w_words)]
    sparse = config.sparse
    allowed_steps = sorted(set(config.sparsity)) if sparse else [1]
    step_ok = 0
    for value in allowed_steps:
        step_ok = step_ok | (desc.step == value)
    sparse_ok = ~desc.mode[Mode.SPARSE.bit] | (desc.step == (config.m if sparse else 0))
    # Modes this accelerator lacks, and mode bits no mode has, are refused: a RUN never
    # does something other than what its descriptor asks for.
    known_bits = (Mode.ADD if config.depthwise else Mode.CONV if config.conv
                  else Mode.WEIGHT_TABLE).bit + 1
    tables_ok = (desc.mode[known_bits:] == 0) & (
        (desc.mode[Mode.THRESHOLD.bit:Mode.WEIGHT_TABLE.bit + 1] == 0)
        if not config.tables else 1)
    zero = (desc.m_tiles == 0) | (desc.n_tiles == 0) | (desc.k_steps == 0)
    # A convolution's walk needs channels, taps and output columns, and a beat's lanes
    # in one word of one tap: a step of 1, or a power of two that divides in_c.
    conv_step_ok = desc.step == 1
    for value in allowed_steps:
        if value > 1 and value & (value - 1) == 0:
            conv_step_ok = conv_step_ok | ((desc.step == value)
                                           & (desc.in_c[:value.bit_length() - 1] == 0))
    conv_ok = ~desc.mode[Mode.CONV.bit] | (
        (desc.in_c != 0) & (desc.kw != 0) & (desc.out_w != 0) & conv_step_ok)
    # A depthwise walk is a convolution's with one channel per tap (step 1: dense).
    dw_ok = ~desc.mode[Mode.DEPTHWISE.bit] | (desc.mode[Mode.CONV.bit] & (desc.in_c == 1))
    # Each check registered in RUN_CHECK, their AND in RUN_VERDICT (the range checks
    # are carry chains of up to 33 bits).
    checks = [step_ok, sparse_ok, tables_ok, ~zero, group_end <= config.groups,
              w_end <= config.w_depth, conv_ok if config.conv else 1,
              dw_ok if config.depthwise else 1]
    if config.depthwise:
        # The add tables take a depthwise walk's accumulators, from a table that exists.
        checks.append(~desc.mode[Mode.ADD.bit]
                      | (desc.mode[Mode.CONV.bit] & desc.mode[Mode.DEPTHWISE.bit]
                         & (desc.table < ADD_TABLES)))
    s.check_values = Cat(*checks)
    s.checks = Signal(len(s.check_values))
    s.run_ok = Signal()


def runs_decode(m, s, slot, remaining, fetch):
    """DECODE's branch for RUNS (accelerators with program slots only)."""
    with m.Elif(s.is_command[Command.RUNS]):
        m.d.sync += s.last_seq.eq(s.seq)
        with m.If(s.runs_length_bad):
            m.d.sync += s.status.eq(Status.LENGTH)
            m.next = "REPLY_SEQ"
        with m.Elif(s.runs_range_bad):
            m.d.sync += s.status.eq(Status.RANGE)
            m.next = "REPLY_SEQ"
        with m.Else():
            m.d.sync += [slot.eq(s.runs_first), remaining.eq(s.runs_count - 1),
                         fetch.eq(0), s.stored.eq(1), s.layer_cycles.eq(0),
                         s.elapsed.eq(0)]
            m.next = "PROGRAM_FETCH"

def program_states(m, s, fetch):
    """A RUNS command's descriptor fetch: the slot's bytes into ``stored_bytes``, then
    the descriptor loaded from them, then the RUN states."""
    with m.State("PROGRAM_FETCH"):
        # One address a cycle; each byte is shifted in the cycle after it arrives.
        m.d.sync += [fetch.eq(fetch + 1), s.shift.eq(1)]
        with m.If(fetch == RunDescriptor.SIZE - 1):
            m.next = "PROGRAM_SHIFT"
    with m.State("PROGRAM_SHIFT"):
        # The last byte arrives and is shifted in; the descriptor loads next cycle.
        m.d.sync += [s.load_mul.eq(1), s.load_desc.eq(1)]
        m.next = "PROGRAM_LOAD"
    with m.State("PROGRAM_LOAD"):
        m.next = "RUN_SIZE"
