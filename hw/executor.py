"""The command executor: decodes each received frame and carries out INFO, WRITE, READ and RUN
(:mod:`sparqforge.protocol`), replying once the command has completed."""

__all__ = ["Executor"]

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..protocol import (CODE_OFFSET, CRC_BYTES, FIELDS_OFFSET, HEADER_BYTES,
                        MIN_FRAME, PROGRAM_BYTE_BITS, REQUANT_BYTES, REQUESTS, SEQ_BYTES,
                        SEQ_OFFSET, SEQUENCED, SESSION_BYTES, Command, DeviceInfo,
                        RunDescriptor, Space, Status, address_fields, address_limit,
                        max_payload)
from .address_spaces import AddressSpaces
from .feeder import descriptor_layout
from .host_link import frame_signature
from .replica import replica_signal
from .run_descriptor import field as _field, program_states, run_descriptor, runs_decode
from .sliced_memory import SlicedMemory


class Executor(wiring.Component):
    """Executes the frame the receiver holds and streams its reply.

    Every frame gets exactly one reply, ``seq | status | session | data``: ``CRC`` or
    ``LENGTH`` for a damaged or too long frame (which changes nothing), ``COMMAND`` for an
    unknown command, ``SESSION`` for a WRITE, READ or RUN before any OPEN since the device
    started, ``STALE`` for one whose sequence number is not newer than the last executed
    (neither is executed), ``LENGTH``, ``SPACE`` or ``RANGE`` for a request that does not
    fit this accelerator (``address_limit``, :func:`~sparqforge.protocol.word_bytes`), else
    ``OK`` with INFO's :class:`~sparqforge.protocol.DeviceInfo`, OPEN's last sequence number
    and ``DeviceInfo``, READ's words, RUN's cycle count or RUNS' cycle counts. RUNS runs
    stored descriptors (``Space.PROGRAM``, a memory of the executor's) one after the other,
    each fetched into a register file, checked and run as a RUN's; it stops with ``RANGE``
    at the first one refused. A WRITE commits each word as soon
    as it is complete and stops at the first word out of range (the words before it stay
    written). A RUN's descriptor is checked (step, mode, ranges, a convolution's geometry,
    a depthwise one's single channel, an add table's mode and number) before the layer
    starts; it then waits for the writeback's ``finished``.

    Parameters
    ----------
    config : AcceleratorConfig
    core_signature : wiring.Signature
        The array core's; the executor drives its ``cfg_*`` table write ports.

    Attributes
    ----------
    frame : In(frame_signature(frame_bytes, HEADER_BYTES))
        The receiver's held frame.
    reply : Out(stream)
        Reply bytes (``data``, ``last``) for the frame transmitter.
    idle : Out(1)
        Waiting for a frame, and none is held.
    working : Out(1)
        Not waiting for a frame.
    busy : Out(1)
        The core domain has work (a layer runs or one of its tables is written).
    host_read_addr, host_reading, act_data :
        The memories' host read port (see :class:`~sparqforge.hw.memories.Memories`).
    host_write, weight_write :
        The memories' host write ports.
    cfg_requant, cfg_act, cfg_weight, cfg_threshold, cfg_add : Out(stream)
        The core's table write ports (those it has).
    desc : Out(descriptor_layout())
        The RUN descriptor, loaded from the header of every frame (only a RUN uses it, and
        no frame is taken while a layer runs).
    start_feed, start_write : Out(1)
        Pulse: begin the layer (two registered copies: each drives a few hundred counter
        bits far from the executor).
    running, finished : In(1), cycles : In(32)
        The writeback's.
    """

    def __init__(self, config, *, core_signature):
        self._config = config
        self._core_signature = core_signature
        self._cfg_names = [name for name in core_signature.members if name.startswith("cfg_")]
        word = data.ArrayLayout(8, config.cols)
        depth_bits = config.act_depth_bits
        # (An ``In`` member's signature is seen from the core; its source sees it flipped.)
        cfg = {name: Out(member.signature.flip())
               for name, member in core_signature.members.items() if name.startswith("cfg_")}
        super().__init__({
            "frame": In(frame_signature(config.frame_bytes, HEADER_BYTES)),
            "reply": Out(stream.Signature(data.StructLayout({"data": 8, "last": 1}))),
            "idle": Out(1),
            "working": Out(1),
            "busy": Out(1),
            "host_read_addr": Out(depth_bits),
            "host_reading": Out(1),
            "act_data": In(data.ArrayLayout(word, config.rows)),
            "host_write": Out(wiring.Signature({"addr": Out(depth_bits), "data": Out(word),
                                                "en": Out(config.rows)})),
            "weight_write": Out(wiring.Signature({"addr": Out(16),
                                                  "data": Out(config.weight_bits),
                                                  "en": Out(1)})),
            **cfg,
            "desc": Out(descriptor_layout()),
            "start_feed": Out(1),
            "start_write": Out(1),
            "running": In(1),
            "finished": In(1),
            "cycles": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        header = self.frame.header
        # The signals the parts of the executor share.
        s = SimpleNamespace()
        s.space = header[REQUESTS[Command.WRITE].offset("space")[0]]
        s.addr = Signal(32)
        m.d.comb += s.addr.eq(_field(header, *REQUESTS[Command.WRITE].offset("addr")))
        s.count = _field(header, *REQUESTS[Command.READ].offset("count"))
        s.runs_first = _field(header, *REQUESTS[Command.RUNS].offset("first"))
        s.runs_count = _field(header, *REQUESTS[Command.RUNS].offset("count"))
        s.command = header[CODE_OFFSET]
        s.seq = _field(header, SEQ_OFFSET, SEQ_BYTES)
        # The session a host opened (0: none since the device started) and the newest
        # sequence number executed.
        s.session = Signal(8 * SESSION_BYTES)
        s.last_seq = Signal(8 * SEQ_BYTES)
        s.head_index = Signal(range(max(SEQ_BYTES, SESSION_BYTES)))
        s.status = Signal(8)
        s.target = Signal(32)
        s.commit = Signal()
        s.word = Signal(max(config.cols * 8, config.weight_bits, REQUANT_BYTES * 8, 32))
        widest = max(config.cols, config.weight_bytes, REQUANT_BYTES)
        s.byte_index = Signal(range(widest + 1))
        # A word's last byte index, registered: ``target`` (an ACT_LANES word's length) and
        # the header's space are stable from DECODE, three cycles before the first WRITE_BYTE.
        s.word_last = Signal(range(widest + 1))
        s.ptr = Signal(range(config.frame_bytes + 1))
        s.body_index = Signal(range(1 << 16))
        s.body_count = Signal(range(1 << 16))
        s.is_command = {c: Signal(name=f"is_{c.name.lower()}") for c in Command}
        # Where each committed word goes, and whether its address exists.
        m.submodules.spaces = spaces = AddressSpaces(self._config,
                                                     core_signature=self._core_signature)
        m.d.comb += [spaces.space.eq(s.space), spaces.target.eq(s.target),
                     spaces.word.eq(s.word), spaces.commit.eq(s.commit)]
        m.d.sync += s.word_last.eq(spaces.word_bytes - 1)
        s.known_space, s.target_ok = spaces.known, spaces.addressable
        wiring.connect(m, spaces.host_write, wiring.flipped(self.host_write))
        wiring.connect(m, spaces.weight_write, wiring.flipped(self.weight_write))
        for name in self._cfg_names:
            wiring.connect(m, getattr(spaces, name), wiring.flipped(getattr(self, name)))
        # Stored RUN descriptors, 64 bytes a slot (see ``_fsm``'s PROGRAM states).
        if config.program_depth:
            m.submodules.program = s.program = SlicedMemory(
                width=8, depth=address_limit(Space.PROGRAM, config), slice_bits=8)
            write = s.program.write
            m.d.comb += [write.addr.eq(spaces.program_write.addr),
                         write.data.eq(spaces.program_write.data),
                         write.en.eq(spaces.program_write.en)]
        self._frame_checks(m, s)
        run_descriptor(m, s, config, self.desc, self.frame.header)
        self._reply_bytes(m, s)
        self._fsm(m, s)
        return m

    def _frame_checks(self, m, s):
        """The checks DECODE branches on, registered: the frame is complete and no longer
        changes from the cycle IDLE sees ``done``, one cycle before HEADER_DONE. A READ's
        range check takes two registered steps (the end address, then the verdict)."""
        config, frame = self._config, self.frame
        for name in ("frame_bad", "write_short", "read_length_bad", "run_length_bad",
                     "runs_length_bad", "runs_range_bad", "open_length_bad", "space_unknown",
                     "read_space_bad", "core_space", "read_range_bad", "opened", "seq_new",
                     "nonce_zero"):
            setattr(s, name, Signal(name=name))
        read_end = Signal(33)
        m.d.sync += [
            s.frame_bad.eq(~frame.ok | frame.overflow | (frame.length < MIN_FRAME)),
            s.write_short.eq(frame.length < REQUESTS[Command.WRITE].frame_bytes),
            s.read_length_bad.eq(frame.length != REQUESTS[Command.READ].frame_bytes),
            s.run_length_bad.eq(frame.length != REQUESTS[Command.RUN].frame_bytes),
            s.open_length_bad.eq(frame.length != REQUESTS[Command.OPEN].frame_bytes),
            s.nonce_zero.eq(_field(self.frame.header,
                                   *REQUESTS[Command.OPEN].offset("session")) == 0),
            # Sessions and sequence numbers (see sparqforge.protocol).
            s.opened.eq(s.session != 0),
            s.seq_new.eq(s.seq > s.last_seq),
            s.space_unknown.eq(~s.known_space),
            s.read_space_bad.eq(s.space != Space.ACT),
            # Only tables inside the core need its clock; memories are the executor's.
            s.core_space.eq((s.space != Space.ACT) & (s.space != Space.ACT_ALL)
                            & (s.space != Space.ACT_LANES) & (s.space != Space.WEIGHT)),
            read_end.eq(s.addr + s.count),
            # count * cols > payload, as a constant comparison: with a column count that
            # is not a power of two the product was an adder in front of the comparator
            # (the slowest path of a 10x10 array on the ULX3S).
            s.read_range_bad.eq((s.count > max_payload(config) // config.cols)
                                | (read_end > address_limit(Space.ACT, config))
                                | (s.count == 0)),
        ]
        if config.program_depth:
            m.d.sync += [
                s.runs_length_bad.eq(frame.length != REQUESTS[Command.RUNS].frame_bytes),
                s.runs_range_bad.eq((s.runs_count == 0)
                                    | (s.runs_first + s.runs_count > config.program_depth))]
        m.d.sync += [flag.eq(s.command == c) for c, flag in s.is_command.items()]
        # (Without program slots RUNS is an unknown command, as to an older device.)
        s.sequenced = Signal()
        m.d.sync += s.sequenced.eq(sum(s.command == c for c in SEQUENCED
                                       if config.program_depth or c != Command.RUNS) != 0)

    def _reply_bytes(self, m, s):
        """The registers and multiplexers behind the reply bytes of INFO, RUN and READ."""
        config = self._config
        # OPEN's reply data: the last sequence number, then the INFO record; INFO's reply is
        # the same array from the record on.
        info = DeviceInfo.of(config).pack()
        s.open_bytes = Array([s.last_seq.word_select(i, 8) for i in range(SEQ_BYTES)]
                             + [Const(b, 8) for b in info])
        s.info_start = SEQ_BYTES
        s.cycle_bytes = Array(self.cycles.word_select(i, 8) for i in range(4))
        # RUNS' reply: its layers' cycles, then the cycles from DECODE to the last layer's
        # end (``elapsed`` counts while a RUNS command runs).
        s.layer_cycles, s.elapsed = Signal(32), Signal(32)
        s.runs_bytes = Array(Cat(s.layer_cycles, s.elapsed).word_select(i, 8)
                             for i in range(8))
        s.seq_bytes = Array(s.seq.word_select(i, 8) for i in range(SEQ_BYTES))
        s.session_bytes = Array(s.session.word_select(i, 8) for i in range(SESSION_BYTES))
        act = address_fields(Space.ACT, config)
        m.d.comb += self.host_read_addr.eq(s.target[:act["word"].offset + act["word"].width])
        # The bank a host READ reads, chosen in two steps (the banks sit far apart): one of
        # every four banks in READ_LATCH, then one of those in READ_PICK.
        s.bank = s.target[act["bank"].offset:][:max(2, (config.rows - 1).bit_length())]
        s.bank_groups = [list(self.act_data)[i:i + 4] for i in range(0, config.rows, 4)]
        s.picked = [Signal(data.ArrayLayout(8, config.cols), name=f"read_picked_{g}",
                           reset_less=True) for g in range(len(s.bank_groups))]
        s.read_word = Signal(data.ArrayLayout(8, config.cols))
        s.rdata_q = Signal(8, reset_less=True)
        m.d.sync += s.rdata_q.eq(self.frame.rdata)
        m.d.comb += self.frame.addr.eq(s.ptr)
        s.host_reading = Signal()    # registered: high exactly in READ_ISSUE
        m.d.sync += s.host_reading.eq(0)
        m.d.comb += self.host_reading.eq(s.host_reading)
        # Each reply byte (and its ``last``) is chosen in one cycle and offered, from
        # registers, in the next: ``fresh`` says the state and its indices have not moved
        # since (a reply state is left only when a byte is taken). The byte multiplexers and
        # the reply queue are then never in one path; a byte takes two cycles, far less than
        # any link's.
        s.next_byte, s.next_last, s.sending = Signal(8), Signal(), Signal()
        reply = self.reply
        s.accepted = reply.valid & reply.ready
        m.d.sync += [reply.payload.data.eq(s.next_byte), reply.payload.last.eq(s.next_last),
                     reply.valid.eq(s.sending & ~s.accepted)]
        # The last body byte's index, registered: ``body_count`` is set at least a reply
        # header before the body.
        s.body_last = Signal(16)
        m.d.sync += s.body_last.eq(s.body_count - 1)

    def _fsm(self, m, s):
        config, frame, reply = self._config, self.frame, self.reply
        status, target, word = s.status, s.target, s.word
        data_end = Signal.like(s.ptr)
        start_feed = replica_signal(1, name="start_feed")
        start_write = replica_signal(1, name="start_write")
        s.release = Signal()
        m.d.sync += [start_feed.eq(0), start_write.eq(0), s.release.eq(0)]
        m.d.comb += frame.release.eq(s.release)
        m.d.comb += [self.start_feed.eq(start_feed), self.start_write.eq(start_write),
                     s.commit.eq(0), self.working.eq(1)]
        # Where a WRITE's data starts in its frame.
        write_data = FIELDS_OFFSET + REQUESTS[Command.WRITE].size
        # A RUNS command: the slot it runs, the slots left after it, the descriptor byte
        # fetched, and whether the memory's byte of the last cycle is to be shifted in.
        depth = max(config.program_depth, 1)
        slot, remaining = Signal(range(depth)), Signal(16)
        fetch = Signal(PROGRAM_BYTE_BITS)
        s.shift = shift = Signal()
        m.d.sync += shift.eq(0)
        if config.program_depth:
            with m.If(s.stored):
                m.d.sync += s.elapsed.eq(s.elapsed + 1)
            read = s.program.read
            m.d.comb += read.addr.eq(Cat(fetch, slot))
            with m.If(shift):
                # Bytes enter at the top: after the descriptor's last, byte i is at i.
                m.d.sync += s.stored_bytes.eq(Cat(s.stored_bytes[8:], read.data))
        with m.FSM(name="executor"):
            with m.State("IDLE"):
                m.d.comb += [self.idle.eq(~frame.done), self.working.eq(0)]
                m.d.sync += [s.ptr.eq(0), s.body_count.eq(0)]
                with m.If(frame.done):
                    m.d.sync += [s.load_mul.eq(1), s.load_desc.eq(1)]
                    m.next = "HEADER_DONE"
            with m.State("HEADER_DONE"):
                # The header is complete; the frame checks are registered from it here.
                m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(s.frame_bad):
                    # Damaged or cut frames are retried by the host; too long ones are not.
                    m.d.sync += status.eq(Mux(frame.overflow, Status.LENGTH, Status.CRC))
                    m.next = "REPLY_SEQ"
                with m.Elif(s.is_command[Command.INFO]):
                    m.d.sync += [status.eq(Status.OK), s.body_count.eq(len(s.open_bytes)),
                                 s.body_index.eq(s.info_start)]
                    m.next = "REPLY_SEQ"
                with m.Elif(s.is_command[Command.OPEN]):
                    m.d.sync += [status.eq(Status.OK), s.body_count.eq(len(s.open_bytes)),
                                 s.body_index.eq(0)]
                    with m.If(s.open_length_bad):
                        m.d.sync += status.eq(Status.LENGTH)
                    with m.Elif(s.nonce_zero):
                        m.d.sync += status.eq(Status.RANGE)
                    with m.Else():
                        m.d.sync += s.session.eq(_field(
                            frame.header, *REQUESTS[Command.OPEN].offset("session")))
                    m.next = "REPLY_SEQ"
                with m.Elif(s.sequenced & ~s.opened):
                    m.d.sync += status.eq(Status.SESSION)
                    m.next = "REPLY_SEQ"
                with m.Elif(s.sequenced & ~s.seq_new):
                    m.d.sync += status.eq(Status.STALE)
                    m.next = "REPLY_SEQ"
                with m.Elif(s.is_command[Command.WRITE]):
                    m.d.sync += s.last_seq.eq(s.seq)
                    m.d.sync += [target.eq(s.addr), s.byte_index.eq(0), s.ptr.eq(write_data),
                                 data_end.eq(frame.length - CRC_BYTES),
                                 status.eq(Status.OK)]
                    with m.If(s.write_short):
                        m.d.sync += status.eq(Status.LENGTH)
                        m.next = "REPLY_SEQ"
                    with m.Elif(s.space_unknown):
                        m.d.sync += status.eq(Status.SPACE)
                        m.next = "REPLY_SEQ"
                    with m.Else():
                        m.next = "WRITE_FETCH"
                with m.Elif(s.is_command[Command.READ]):
                    m.d.sync += [target.eq(s.addr), s.body_count.eq(s.count), s.body_index.eq(0),
                                 status.eq(Status.OK), s.last_seq.eq(s.seq)]
                    with m.If(s.read_length_bad):
                        m.d.sync += status.eq(Status.LENGTH)
                    with m.Elif(s.read_space_bad):
                        m.d.sync += status.eq(Status.SPACE)
                    with m.Elif(s.read_range_bad):
                        m.d.sync += status.eq(Status.RANGE)
                    m.next = "REPLY_SEQ"
                with m.Elif(s.is_command[Command.RUN]):
                    m.d.sync += s.last_seq.eq(s.seq)
                    with m.If(s.run_length_bad):
                        m.d.sync += status.eq(Status.LENGTH)
                        m.next = "REPLY_SEQ"
                    with m.Else():
                        # The descriptor was loaded with ``load_desc``.
                        m.next = "RUN_SIZE"
                if config.program_depth:
                    runs_decode(m, s, slot, remaining, fetch)
                with m.Else():
                    m.d.sync += status.eq(Status.COMMAND)
                    m.next = "REPLY_SEQ"
            if config.program_depth:
                program_states(m, s, fetch)
            with m.State("RUN_SIZE"):
                # Waits for the weight word count (``w_words``, see ``load_mul``); the loop
                # bounds minus one are registered for the feeder's and writeback's loop tests.
                m.d.comb += self.busy.eq(1)
                desc = self.desc
                m.d.sync += [desc.k_last.eq(desc.k_steps - 1), desc.m_last.eq(desc.m_tiles - 1),
                             desc.n_last.eq(desc.n_tiles - 1), desc.out_w_last.eq(desc.out_w - 1),
                             desc.kw_last.eq(desc.kw - 1)]
                with m.If(s.mul_b == 0):
                    m.next = "RUN_CHECK"
            with m.State("RUN_CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += s.checks.eq(s.check_values)
                m.next = "RUN_VERDICT"
            with m.State("RUN_VERDICT"):
                m.d.comb += self.busy.eq(1)
                ok = s.checks.all()
                m.d.sync += [s.run_ok.eq(ok), start_feed.eq(ok), start_write.eq(ok)]
                m.next = "RUN_GO"
            with m.State("RUN_GO"):
                # The checks' verdict, registered; ``start_*`` pulse in this cycle when it
                # is OK and reset the whole controller.
                m.d.comb += self.busy.eq(1)
                with m.If(s.run_ok):
                    m.d.sync += status.eq(Status.OK)
                    m.next = "RUN_WAIT"
                with m.Else():
                    m.d.sync += [status.eq(Status.RANGE), s.stored.eq(0)]
                    m.next = "REPLY_SEQ"
            with m.State("RUN_WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.finished):
                    m.d.sync += [s.body_count.eq(4), s.body_index.eq(0)]
                    m.next = "REPLY_SEQ"
                    if config.program_depth:
                        with m.If(s.stored):
                            m.d.sync += [s.layer_cycles.eq(s.layer_cycles + self.cycles),
                                         s.body_count.eq(8)]
                            with m.If(remaining == 0):
                                m.d.sync += s.stored.eq(0)
                            with m.Else():
                                m.d.sync += [slot.eq(slot + 1), remaining.eq(remaining - 1),
                                             fetch.eq(0)]
                                m.next = "PROGRAM_FETCH"
            with m.State("WRITE_FETCH"):
                with m.If(s.ptr == data_end):
                    with m.If(s.byte_index != 0):
                        m.d.sync += status.eq(Status.LENGTH)
                    m.next = "REPLY_SEQ"
                with m.Else():
                    m.d.sync += s.ptr.eq(s.ptr + 1)
                    m.next = "WRITE_WAIT"
            with m.State("WRITE_WAIT"):
                # The buffer's byte lands and is registered (``rdata_q``): a block RAM's
                # output goes through no logic before a register.
                m.next = "WRITE_BYTE"
            with m.State("WRITE_BYTE"):
                m.d.sync += word.word_select(s.byte_index, 8).eq(s.rdata_q)
                with m.If(s.byte_index == s.word_last):
                    m.d.sync += s.byte_index.eq(0)
                    m.next = "WRITE_COMMIT"
                with m.Else():
                    m.d.sync += s.byte_index.eq(s.byte_index + 1)
                    m.next = "WRITE_FETCH"
            with m.State("WRITE_COMMIT"):
                m.d.comb += self.busy.eq(s.core_space)
                with m.If(s.target_ok):
                    m.d.comb += s.commit.eq(1)
                    m.d.sync += target.eq(target + 1)
                    m.next = "WRITE_FETCH"
                with m.Else():
                    m.d.sync += status.eq(Status.RANGE)
                    m.next = "REPLY_SEQ"
            with m.State("REPLY_SEQ"):
                m.d.comb += [s.next_byte.eq(s.seq_bytes[s.head_index]), s.sending.eq(1)]
                with m.If(s.accepted):
                    m.d.sync += s.head_index.eq(s.head_index + 1)
                    with m.If(s.head_index == SEQ_BYTES - 1):
                        m.d.sync += s.head_index.eq(0)
                        m.next = "REPLY_STATUS"
            with m.State("REPLY_STATUS"):
                m.d.comb += [s.next_byte.eq(status), s.sending.eq(1)]
                with m.If(s.accepted):
                    m.next = "REPLY_SESSION"
            with m.State("REPLY_SESSION"):
                no_body = (status != Status.OK) | (s.body_count == 0)
                last_session_byte = s.head_index == SESSION_BYTES - 1
                m.d.comb += [s.next_byte.eq(s.session_bytes[s.head_index]), s.sending.eq(1),
                             s.next_last.eq(no_body & last_session_byte)]
                with m.If(s.accepted):
                    m.d.sync += s.head_index.eq(s.head_index + 1)
                    with m.If(last_session_byte):
                        m.d.sync += s.head_index.eq(0)
                        with m.If(no_body):
                            m.next = "DONE"
                        with m.Elif(s.is_command[Command.READ]):
                            m.d.sync += [s.byte_index.eq(0), s.host_reading.eq(1)]
                            m.next = "READ_ISSUE"
                        with m.Else():
                            m.next = "REPLY_BODY"
            with m.State("REPLY_BODY"):
                last_byte = s.body_index == s.body_last
                other = s.open_bytes[s.body_index]
                if config.program_depth:
                    other = Mux(s.is_command[Command.RUNS], s.runs_bytes[s.body_index[:3]],
                                other)
                m.d.comb += [s.next_byte.eq(Mux(s.is_command[Command.RUN],
                                                s.cycle_bytes[s.body_index[:2]], other)),
                             s.sending.eq(1), s.next_last.eq(last_byte)]
                with m.If(s.accepted):
                    m.d.sync += s.body_index.eq(s.body_index + 1)
                    with m.If(last_byte):
                        m.next = "DONE"
            with m.State("READ_ISSUE"):
                # ``host_reading`` is set (a register: it selects every bank's address).
                m.next = "READ_ADDRESS"
            with m.State("READ_ADDRESS"):
                # The banks' address registers hold ``target``.
                m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                # The word lands in the memories' data registers.
                m.next = "READ_LATCH"
            with m.State("READ_LATCH"):
                for g, group in enumerate(s.bank_groups):
                    m.d.sync += s.picked[g].eq(
                        Array(q.as_value() for q in group)[s.bank[:2]] if len(group) > 1
                        else group[0])
                m.next = "READ_PICK"
            with m.State("READ_PICK"):
                m.d.sync += [s.read_word.eq(Array(s.picked)[s.bank[2:]] if len(s.picked) > 1
                                            else s.picked[0]),
                             s.byte_index.eq(0)]
                m.next = "READ_SEND"
            with m.State("READ_SEND"):
                last_word = s.body_index == s.body_last
                last_byte = s.byte_index == config.cols - 1
                m.d.comb += [s.next_byte.eq(s.read_word.as_value().word_select(s.byte_index, 8)),
                             s.sending.eq(1), s.next_last.eq(last_word & last_byte)]
                with m.If(s.accepted):
                    m.d.sync += s.byte_index.eq(s.byte_index + 1)
                    with m.If(last_byte):
                        m.d.sync += [s.body_index.eq(s.body_index + 1), target.eq(target + 1)]
                        m.next = "READ_NEXT"
            with m.State("READ_NEXT"):
                with m.If(s.body_index == s.body_count):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += s.host_reading.eq(1)
                    m.next = "READ_ISSUE"
            with m.State("DONE"):
                m.d.sync += s.release.eq(1)
                m.next = "RELEASE"
            with m.State("RELEASE"):
                # ``release`` is a register (it enables most of the receiver's registers);
                # the receiver takes it in this cycle, so IDLE sees the frame gone.
                m.next = "IDLE"

