"""Formal properties of the host link (:mod:`sparqforge.hw.host_link`).

* :class:`ReplyQueueHarness`: the reply queue is a FIFO: the pipeline properties with every
  byte and ``last`` carried in order, and ``empty`` exactly when no byte is inside.
* :class:`TransmitterHarness`: the transmitter's bytes, decoded as SLIP by the harness, are
  an opening ``END``, the frame's bytes in order, its CRC-32 (zlib's, computed bit by bit
  in the harness) and a closing ``END``; ``tx`` keeps the stream rules and the transmitter
  never takes a byte before it sent the one it holds.
* :class:`ReceiverHarness`: the frames a receiver reports are the SLIP-decoded byte
  sequences it was sent, with their length, overflow flag and bytes (read back through the
  frame port), and it holds a completed frame until it is released.
* :class:`ReceiverIdleHarness`: from *any* state (k-induction), an ``END`` completes a frame
  or leaves the receiver ready for the next one within two cycles, and after a release it
  is idle: ``rx`` ready, nothing done, length 0, no overflow.
"""

__all__ = [
    "ReceiverHarness",
    "ReceiverIdleHarness",
    "ReceiverKeepsLength",
    "ReceiverTakesWhileDone",
    "ReplyQueueHarness",
    "ReplyReadyIgnoresStage",
    "TransmitterAlwaysReady",
    "TransmitterHarness",
]

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Mux, Signal

from ...hw.host_link import FrameReceiver, FrameTransmitter, ReplyQueue
from ...protocol import CRC_INIT, END, ESC, ESC_END, ESC_ESC
from .properties import (
    Harness,
    PipelineHarness,
    assert_held,
    check,
    drive_sink,
    drive_source,
    held,
    observe,
)

#: The receiver the proofs check: a 4-byte buffer (frames past it overflow), 2 header bytes.
RECEIVER_SIZE, RECEIVER_HEADER = 4, 2


class ReplyReadyIgnoresStage(ReplyQueue):
    """Broken: ``i.ready`` forgets the byte in the register, so the FIFO can overflow."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        fifo = m.submodules.fifo
        push = self.i.valid & self.i.ready
        m.d.sync += self.i.ready.eq(fifo.level + push < fifo.depth)
        return m


class ReplyQueueHarness(PipelineHarness):
    """The FIFO properties on ``dut`` (a :class:`ReplyQueue`)."""

    def __init__(self, dut, *, fault=None):
        # The FIFO's bytes and the one in the register.
        super().__init__(dut, capacity=ReplyQueue.depth + 1, drain=ReplyQueue.depth + 3,
                         carried=lambda payload: payload.as_value(), fault=fault)

    def extra(self, m, dut, beats_in, beats_out):
        check(m, "empty", dut.empty == (beats_in == beats_out))


class TransmitterAlwaysReady(FrameTransmitter):
    """Broken: ``i`` is always ready, so a byte offered while another is being sent is taken
    and lost."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i.ready.eq(1)
        return m


class TransmitterHarness(Harness):
    """The transmitter's output, decoded, against the frames it was given."""

    def __init__(self, dut, *, fault=None):
        super().__init__(dut)
        self.fault = fault

    def properties(self, m, dut):
        drive_source(m, dut.i, "i")
        tx = observe(m, dut, "tx", self.fault)
        drive_sink(m, tx, "tx")
        assert_held(m, tx, "tx")
        i_fire = dut.i.valid & dut.i.ready
        tx_fire = tx.valid & tx.ready
        byte = tx.payload

        # The byte the transmitter owes (taken and not yet sent).
        owed, owed_byte, owed_last = Signal(), Signal(8), Signal()
        # The decoder: outside a frame, in its bytes, in the CRC (``crc_left`` to go), or
        # waiting for the closing END; ``escaped``: the previous byte was ESC.
        phase = Signal(2)   # 0 idle, 1 data, 2 crc, 3 close
        crc_left = Signal(range(5))
        crc_out = Signal(32)
        escaped = Signal()
        decoded = Mux(byte == ESC_END, END, ESC)
        data_byte = tx_fire & ((escaped & ((byte == ESC_END) | (byte == ESC_ESC)))
                               | (~escaped & (byte != END) & (byte != ESC)))
        value = Mux(escaped, decoded, byte)

        check(m, "i_not_while_owed", ~(i_fire & owed))
        check(m, "tx_escape_code", ~(tx_fire & escaped) | (byte == ESC_END) | (byte == ESC_ESC))
        check(m, "tx_framing", ~(tx_fire & (byte == END)) | (phase == 0) | (phase == 3))
        check(m, "tx_data_owed", ~(data_byte & (phase == 1)) | (owed & (value == owed_byte)))
        check(m, "tx_no_stray_byte", ~data_byte | (phase == 1) | (phase == 2))
        check(m, "tx_crc", ~(data_byte & (phase == 2)) | (value == crc_out[:8]))

        # The CRC bytes are the complement of the transmitter's CRC register once the
        # frame's last byte went in (it takes a byte the cycle after taking it, and the
        # first CRC byte leaves two cycles after the last data byte at the earliest), which
        # starts every frame at its initial value. (That the register computes zlib's CRC is
        # checked against zlib in tests/hw/test_host_link.py: an equivalence of XOR networks
        # is slow work for a SAT solver.)
        crc_register = self.internal("crc")
        started, capture = Signal(), Signal()
        with m.If(i_fire):
            m.d.sync += [owed.eq(1), owed_byte.eq(dut.i.payload.data),
                         owed_last.eq(dut.i.payload.last), started.eq(1)]
        check(m, "tx_crc_starts_fresh", ~(i_fire & ~started) | (crc_register == CRC_INIT))
        m.d.sync += capture.eq(data_byte & (phase == 1) & owed_last)
        with m.If(capture):
            m.d.sync += crc_out.eq(~crc_register)
        with m.If(tx_fire):
            m.d.sync += escaped.eq(~escaped & (byte == ESC))
            with m.If(byte == END):
                with m.If(phase == 0):
                    m.d.sync += phase.eq(1)
                with m.Elif(phase == 3):
                    m.d.sync += [phase.eq(0), started.eq(0)]
            with m.If(data_byte & (phase == 1)):
                m.d.sync += owed.eq(0)
                with m.If(owed_last):
                    m.d.sync += [phase.eq(2), crc_left.eq(4)]
            with m.If(data_byte & (phase == 2)):
                m.d.sync += [crc_left.eq(crc_left - 1), crc_out.eq(crc_out >> 8)]
                with m.If(crc_left == 1):
                    m.d.sync += phase.eq(3)


class ReceiverKeepsLength(FrameReceiver):
    """Broken: a release does not clear the length, so the next frame lands after the old
    one."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.frame.release):
            m.d.sync += self.frame.length.eq(self.frame.length)
        return m


class ReceiverTakesWhileDone(FrameReceiver):
    """Broken: ``rx`` stays ready while a completed frame waits for its release."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        held_byte = Signal()
        m.d.sync += held_byte.eq(self.rx.valid & self.rx.ready)
        m.d.comb += self.rx.ready.eq(~held_byte)
        return m


def _drive_release(m, dut):
    """``release`` at any time while a frame is done (as the executor does), never before."""
    release = Signal()
    m.d.comb += [release.eq(AnySeq(1)), dut.frame.release.eq(release)]
    check(m, "release_when_done", ~release | dut.frame.done, kind="assume")
    return release


class ReceiverHarness(Harness):
    """The frames a :class:`FrameReceiver` reports against the bytes it was sent: each
    frame's decoded length (``length`` is capped at the buffer's size, ``overflow`` set past
    it), its bytes read back through ``addr``/``rdata`` (an arbitrary index), and ``done``
    held, the buffer unchanged and ``rx`` not ready until the release."""

    def properties(self, m, dut):
        size = dut.size
        drive_source(m, dut.rx, "rx")
        release = _drive_release(m, dut)
        frame = dut.frame
        fire = dut.rx.valid & dut.rx.ready
        byte = dut.rx.payload

        # SLIP decoding of the bytes taken: ``count`` bytes of the frame so far (saturating
        # past the buffer), and the byte at the watched index.
        escaped = Signal()
        count = Signal(range(size + 2))
        index = Signal(range(size))
        m.d.comb += index.eq(AnyConst(range(size)))
        check(m, "index_in_buffer", index < size, kind="assume")
        watched, watched_seen = Signal(8), Signal()
        store = fire & (escaped | ((byte != END) & (byte != ESC)))
        value = Mux(escaped, Mux(byte == ESC_END, END, Mux(byte == ESC_ESC, ESC, byte)), byte)
        ends = fire & ~escaped & (byte == END)
        # The frame the receiver reports: the bytes up to the END that completed it.
        done_count, done_watched, done_seen = Signal.like(count), Signal(8), Signal()
        pending = Signal()   # a non-empty frame ended and is not reported yet
        with m.If(fire):
            m.d.sync += escaped.eq(~escaped & (byte == ESC))
        with m.If(store):
            with m.If(count != size + 1):
                m.d.sync += count.eq(count + 1)
            with m.If(count == index):
                m.d.sync += [watched.eq(value), watched_seen.eq(1)]
        with m.If(ends):
            m.d.sync += [count.eq(0), watched_seen.eq(0)]
            with m.If(count != 0):
                m.d.sync += [done_count.eq(count), done_watched.eq(watched),
                             done_seen.eq(watched_seen), pending.eq(1)]
        with m.If(frame.done):
            m.d.sync += pending.eq(0)

        was_done = held(m, frame.done, "done_prev")
        check(m, "rx_not_while_done", ~(frame.done & dut.rx.ready))
        check(m, "done_only_after_end", ~frame.done | was_done | pending)
        was_release = held(m, release, "release_prev")
        check(m, "done_held", ~was_done | was_release | frame.done)
        capped = Mux(done_count > size, size, done_count)
        check(m, "frame_length", ~frame.done | ((frame.length == capped)
                                               & (frame.overflow == (done_count > size))))
        # Read the watched byte back: ``rdata`` is the byte ``addr`` named a cycle before.
        m.d.comb += frame.addr.eq(index)
        check(m, "frame_bytes",
              ~(frame.done & was_done) | ~done_seen | (frame.rdata == done_watched))


class ReceiverIdleHarness(Harness):
    """From any state: within two cycles of taking an ``END`` that ends a frame (no escape
    pending; no release meanwhile), the receiver reports the frame or is ready for the next
    one with an empty buffer (``end_completes``); the cycle after a release it is idle
    (``idle_after_release``): ``rx`` ready, nothing done, length 0, no overflow, no escape
    pending and the CRC register at its initial value."""

    def properties(self, m, dut):
        drive_source(m, dut.rx, "rx")
        release = _drive_release(m, dut)
        frame = dut.frame
        fire = dut.rx.valid & dut.rx.ready
        # A byte is only taken once the one before was decoded (``rx.ready`` waits for it),
        # so the receiver's escape flag then says whether this byte is escaped.
        end = fire & (dut.rx.payload == END) & ~self.internal("escape")
        end_1, release_1 = held(m, end, "end_1"), held(m, release, "release_1")
        end_2, release_2 = held(m, end_1, "end_2"), held(m, release_1, "release_2")
        check(m, "end_completes", ~(end_2 & ~release_1 & ~release_2)
              | frame.done | (dut.rx.ready & (frame.length == 0) & ~frame.overflow))
        check(m, "idle_after_release", ~release_1
              | (dut.rx.ready & ~frame.done & (frame.length == 0) & ~frame.overflow
                 & ~self.internal("escape") & (self.internal("crc") == CRC_INIT)))


def make(what):
    """The harness of a job, by name (see ``tests/formal``)."""
    block, _, variant = what.partition(":")
    if block == "reply_queue":
        if variant == "ready":
            return ReplyQueueHarness(ReplyReadyIgnoresStage())
        return ReplyQueueHarness(ReplyQueue(), fault=variant or None)
    if block == "transmitter":
        if variant == "ready":
            return TransmitterHarness(TransmitterAlwaysReady())
        return TransmitterHarness(FrameTransmitter(), fault=variant or None)
    if block == "receiver":
        cls = {"": FrameReceiver, "keeps_length": ReceiverKeepsLength,
               "takes_while_done": ReceiverTakesWhileDone}[variant]
        return ReceiverHarness(cls(RECEIVER_SIZE, RECEIVER_HEADER))
    if block == "receiver_idle":
        cls = {"": FrameReceiver, "keeps_length": ReceiverKeepsLength}[variant]
        return ReceiverIdleHarness(cls(RECEIVER_SIZE, RECEIVER_HEADER))
    raise ValueError(f"No host link job named {what!r}")
