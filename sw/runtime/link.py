"""Transports that carry protocol bytes to a device, and the client that speaks to it.

The same :class:`Device` client drives the golden model (:class:`LoopbackTransport`), the
Verilated RTL (:class:`PipeTransport`, a compiled harness that does all clocking) and a
board (:class:`SerialTransport`). Only the transport changes.
"""

__all__ = ["Transport", "LoopbackTransport", "PipeTransport", "SerialTransport",
           "WrappedTransport", "FaultyTransport", "RestartingTransport", "CountingTransport",
           "Device"]

import os
import struct
import subprocess
import time

import numpy as np

from ...errors import DeviceRestarted, LinkError, RunInterrupted, ToolError
from ...protocol import (OPEN_REPLY, PROGRAM_BYTE_BITS, REQUESTS, RUN_REPLY, RUNS_REPLY,
                         SEQ_BYTES, SEQUENCED, Command, DeviceInfo, FrameError, Mode,
                         RunDescriptor, SlipDecoder, Space, Status, frame, max_payload,
                         slip_encode, unframe_reply, word_bytes, write_words_per_frame)


class Transport:
    """Moves bytes to a device and returns the bytes it sends back."""

    #: Simulated cycles so far, for transports that count them (else ``None``).
    cycles = None

    def budget(self, cycles):
        """The ``exchange`` budget for a request that keeps the device busy for about
        ``cycles`` clock cycles (a simulator counts cycles; a board needs seconds)."""
        return cycles

    def exchange(self, data, *, budget):
        """Send ``data``; return every byte received until the device has answered (or the
        ``budget`` ran out: seconds on a real link, cycles in a simulator).

        Raises
        ------
        LinkError
            When the link itself fails (process died, port closed).
        """
        raise NotImplementedError

    def close(self):
        pass


class LoopbackTransport(Transport):
    """The golden device model in this process."""

    def __init__(self, model):
        self._model = model
        self._decoder = SlipDecoder()

    @property
    def model(self):
        return self._model

    def restart(self):
        """A device restart: a fresh golden device (session closed, memories cleared, as
        after a reconfiguration)."""
        self._model = type(self._model)(self._model.config)
        self._decoder = SlipDecoder()

    def exchange(self, data, *, budget):
        replies = []
        for body in self._decoder.feed(data):
            reply = self._model.handle(body)
            if reply is not None:
                replies.append(slip_encode(reply))
        return b"".join(replies)


class PipeTransport(Transport):
    """A compiled Verilator harness (``sim/harness/link_harness.cpp``) over pipes."""

    def __init__(self, executable, args=()):
        try:
            self._proc = subprocess.Popen([str(executable), *args], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE)
        except OSError as exc:
            raise ToolError(f"Cannot start the Verilator model {executable}: {exc}") from None
        self.cycles = 0
        self.loop_seconds = 0.0

    def exchange(self, data, *, budget):
        try:
            self._proc.stdin.write(struct.pack("<IQ", len(data), int(budget)) + data)
            self._proc.stdin.flush()
            head = self._read(29)
        except (BrokenPipeError, OSError) as exc:
            raise LinkError(f"The Verilator model stopped: {exc}") from None
        status, _, total, loop_ns, count = struct.unpack("<BQQQI", head)
        self.cycles = total
        self.loop_seconds = loop_ns * 1e-9
        return self._read(count)

    def restart(self):
        """Reset the simulated device, as a power cycle or reconfiguration would (its
        registers return to their reset values; memories keep their words, as block RAMs
        do across a reset)."""
        try:
            self._proc.stdin.write(struct.pack("<IQ", 0xFFFFFFFF, 0))
            self._proc.stdin.flush()
            head = self._read(29)
        except (BrokenPipeError, OSError) as exc:
            raise LinkError(f"The Verilator model stopped: {exc}") from None
        self.cycles = struct.unpack("<BQQQI", head)[2]

    def _read(self, size):
        chunks, got = [], 0
        while got < size:
            chunk = self._proc.stdout.read(size - got)
            if not chunk:
                raise LinkError("The Verilator model closed its output")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)


class SerialTransport(Transport):
    """A board on a serial port (pyserial), at ``baud`` 8N1."""

    def __init__(self, port, baud=3_000_000, *, clock_hz=100e6):
        try:
            import serial
        except ImportError:
            raise ToolError("The serial backend needs pyserial: pip install pyserial") from None
        try:
            self._port = serial.Serial(port, baud, timeout=0.05)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"Cannot open serial port {port}: {exc}") from None
        self._baud = baud
        self._clock_hz = clock_hz

    def budget(self, cycles):
        # Seconds: the device's work with a wide margin, plus a full frame each way.
        return 0.5 + 4 * cycles / self._clock_hz + 2 * 4096 * 10 / self._baud

    def exchange(self, data, *, budget):
        """Send ``data`` (one SLIP-encoded request) and read until a frame with the request's
        sequence number arrives or ``budget`` seconds pass. Frames with another sequence
        number (late replies to earlier attempts, which a board sends after a long RUN)
        are read past, not taken for the answer."""
        sent = SlipDecoder().feed(data)
        awaited = sent[-1][:SEQ_BYTES] if sent else None
        self._port.reset_input_buffer()
        self._port.write(data)
        deadline = time.monotonic() + budget
        received = bytearray()
        probe = SlipDecoder()
        while time.monotonic() < deadline:
            chunk = self._port.read(4096)
            if chunk:
                received += chunk
                if any(body[:SEQ_BYTES] == awaited for body in probe.feed(chunk)):
                    break
        return bytes(received)

    def close(self):
        self._port.close()


class WrappedTransport(Transport):
    """A transport around another (``inner``): the device's cycles, the budgets and closing
    are the inner transport's; a subclass changes what ``exchange`` does."""

    def __init__(self, inner):
        self._inner = inner

    @property
    def cycles(self):
        return self._inner.cycles

    def budget(self, cycles):
        return self._inner.budget(cycles)

    def exchange(self, data, *, budget):
        return self._inner.exchange(data, budget=budget)

    def close(self):
        self._inner.close()


class FaultyTransport(WrappedTransport):
    """Wraps a transport and drops, corrupts or duplicates bytes in both directions, each
    with probability ``rate`` per byte (fault-injection tests)."""

    def __init__(self, inner, *, rate, seed=0, directions=("out", "in")):
        super().__init__(inner)
        self._rate = rate
        self._rng = np.random.default_rng(seed)
        self._directions = directions
        self.injected = 0

    def _damage(self, data):
        out = bytearray()
        for byte in data:
            roll = self._rng.random()
            if roll < self._rate / 3:
                self.injected += 1                                   # dropped
            elif roll < 2 * self._rate / 3:
                out.append(byte ^ (1 << int(self._rng.integers(0, 8))))  # one bit flipped
                self.injected += 1
            elif roll < self._rate:
                out += bytes([byte, byte])                           # duplicated
                self.injected += 1
            else:
                out.append(byte)
        return bytes(out)

    def exchange(self, data, *, budget):
        if "out" in self._directions:
            data = self._damage(data)
        reply = self._inner.exchange(data, budget=budget)
        return self._damage(reply) if "in" in self._directions else reply


class RestartingTransport(WrappedTransport):
    """Wraps a transport whose device can restart (``restart()``) and restarts it before the
    exchanges numbered in ``at`` (0-based), as a power cycle or reconfiguration between two
    requests would (fault-injection tests)."""

    def __init__(self, inner, *, at):
        super().__init__(inner)
        self._at = set(at)
        self.exchanges = 0
        self.injected = 0

    def exchange(self, data, *, budget):
        if self.exchanges in self._at:
            self._inner.restart()
            self.injected += 1
        self.exchanges += 1
        return self._inner.exchange(data, budget=budget)


class CountingTransport(WrappedTransport):
    """Wraps a transport and counts the bytes that cross the link each way (SLIP framing,
    headers and CRCs included): what a board's UART would carry."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sent = 0
        self.received = 0

    def exchange(self, data, *, budget):
        self.sent += len(data)
        reply = self._inner.exchange(data, budget=budget)
        self.received += len(reply)
        return reply


class Device:
    """Protocol client: one method per device capability, the same for every transport.

    The client OPENs the device on first use with a random session nonce and checks the
    session in every reply: a device that restarted (or that another host opened) since then
    raises :class:`~sparqforge.errors.DeviceRestarted` at the first reply that shows it,
    instead of running requests on memories that no longer hold what was loaded. Sequence
    numbers are 32 bits and grow with every attempt, from above the last one the device
    executed, so the device never executes a stale or replayed request.

    Every request is retried (with a new sequence number) when no valid reply with its
    sequence number arrives or the device reports a damaged frame; after ``retries``
    attempts it raises :class:`~sparqforge.errors.LinkError` instead of hanging.

    Parameters
    ----------
    transport : Transport
    budget_cycles : int
        Per-request budget in device cycles (the transport turns it into seconds for a
        board); RUN takes the budget its caller computes from the layer size.
    nonces : iterable of int, optional
        Session nonces to open with (default: random); for reproducible simulations.
    """

    def __init__(self, transport, *, budget_cycles=2_000_000, retries=8, nonces=None):
        self._nonces = iter(nonces) if nonces is not None else None
        self._transport = transport
        self._budget = transport.budget(budget_cycles)
        self._retries = retries
        self._seq = 0
        self._session = None
        self.retransmissions = 0
        self.opens = 0
        self._info = None
        #: Runs of descriptors stored in the device's program slots (``run_list``):
        #: ``{descriptors' bytes: (first slot, each one's cycles)}``, and the next free slot.
        #: A new session forgets them (a restarted device has lost them).
        self._stored, self._next_slot = {}, 0
        #: RUNS commands sent, and the cycles they took beyond their layers' (fetching and
        #: checking each descriptor).
        self.runs_commands = self.runs_overhead_cycles = 0
        #: RUN commands sent.
        self.run_commands = 0

    @property
    def transport(self):
        return self._transport

    @property
    def session(self):
        """This host's session nonce (``None`` before the device was opened)."""
        return self._session

    def _request(self, command, payload=b"", *, budget=None, once=False):
        """``once``: the request must not run twice (a RUNS, or a RUN that writes over
        its own input): when no usable reply comes, it may have run, so it is not sent
        again; :class:`~sparqforge.errors.RunInterrupted` tells the runner to repeat the
        batch instead. (A ``CRC`` status says the device did not execute it: sent again.)"""
        budget = self._budget if budget is None else budget
        last_problem = "no reply"
        for _ in range(self._retries):
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            reply = self._transport.exchange(slip_encode(frame(seq, command, payload)),
                                             budget=budget)
            for body in SlipDecoder().feed(reply):
                try:
                    got_seq, status, session, data = unframe_reply(body)
                except FrameError as exc:
                    last_problem = f"damaged reply ({exc})"
                    continue
                if got_seq != seq:
                    continue  # a late reply to an earlier attempt
                if status == Status.CRC:
                    last_problem = "the device received damaged frames"
                    break
                if command != Command.OPEN and self._session is not None \
                        and session != self._session:
                    self._session = None
                    raise DeviceRestarted(
                        f"The device restarted (or another host opened it) before "
                        f"{Command(command).name}: what was loaded into it is gone; open it "
                        f"again and reload")
                return Status(status), data
            else:
                if once:
                    raise RunInterrupted(f"{Command(command).name} got no usable reply "
                                         f"({last_problem}): it may have run and overwritten "
                                         f"its inputs; the batch runs again")
            self.retransmissions += 1
        raise LinkError(f"{Command(command).name} failed after {self._retries} attempts: "
                        f"{last_problem}; check the link (cable, baud rate, port)")

    def _ok(self, command, payload=b"", **kw):
        if command in SEQUENCED and self._session is None:
            self.open()
        status, data = self._request(command, payload, **kw)
        if status == Status.SESSION:
            self._session = None
            raise DeviceRestarted(f"The device has no open session for "
                                  f"{Command(command).name}: it restarted since this host "
                                  f"opened it; open it again and reload")
        if status == Status.STALE:
            raise LinkError(f"The device refused {Command(command).name} as stale: it has "
                            f"executed newer requests, so another host is using it")
        if status != Status.OK:
            raise LinkError(f"The device rejected {Command(command).name}: {status.name}")
        return data

    def open(self):
        """Start a session: OPEN with a fresh random nonce; sequence numbers continue above
        the last one the device executed. Returns the device's
        :class:`~sparqforge.protocol.DeviceInfo`.

        Raises
        ------
        LinkError
            When the device does not answer, speaks another protocol version or reports a
            configuration this host derives other widths from.
        """
        session = 0
        while session == 0:
            session = (next(self._nonces) if self._nonces is not None
                       else int.from_bytes(os.urandom(4), "little"))
        data = self._ok(Command.OPEN, REQUESTS[Command.OPEN].pack(session))
        size = struct.calcsize(OPEN_REPLY)
        last, = struct.unpack(OPEN_REPLY, data[:size])
        self._seq = max(self._seq, last)
        self._info = self._unpack_info(data[size:])
        self._session = session
        self._stored, self._next_slot = {}, 0
        self.opens += 1
        return self._info

    @staticmethod
    def _unpack_info(data):
        try:
            return DeviceInfo.unpack(data)
        except FrameError as exc:
            raise LinkError(f"The device's INFO reply is not usable: {exc}") from None

    def info(self):
        """What the device reports (:class:`~sparqforge.protocol.DeviceInfo`); its
        ``config`` is the device's :class:`~sparqforge.config.AcceleratorConfig`.

        Raises
        ------
        LinkError
            When the device speaks another protocol version or reports a configuration this
            host derives other widths from.
        """
        if self._info is None:
            self._info = self._unpack_info(self._ok(Command.INFO))
        return self._info

    @property
    def config(self):
        """The device's :class:`~sparqforge.config.AcceleratorConfig` (from INFO)."""
        return self.info().config

    def write(self, space, addr, words):
        """Write ``words`` (``[count, word_bytes]`` uint8) from word ``addr`` on, split into
        frames that fit the device's buffer. The words must have the length the device
        takes for ``space`` at ``addr`` (:func:`~sparqforge.protocol.word_bytes`): it cuts
        the data into words of that length whatever was meant."""
        data = np.ascontiguousarray(words, dtype=np.uint8)
        size = data.shape[-1] if data.ndim > 1 else 1
        if space in set(Space) and size != word_bytes(space, self.config, addr):
            raise ValueError(f"{Space(space).name} words at address {addr:#x} are "
                             f"{word_bytes(space, self.config, addr)} bytes on this device, "
                             f"not {size}")
        data = data.reshape(-1, size)
        per_frame = write_words_per_frame(self.config, size)
        request = REQUESTS[Command.WRITE]
        for start in range(0, len(data), per_frame):
            chunk = data[start:start + per_frame]
            self._ok(Command.WRITE, request.pack(int(space), addr + start) + chunk.tobytes())

    def read_act(self, addr, count):
        """``count`` activation words from ``addr`` as ``[count, cols]`` uint8."""
        config = self.config
        per_frame = max(1, max_payload(config) // config.cols)
        parts = []
        for start in range(0, count, per_frame):
            n = min(per_frame, count - start)
            data = self._ok(Command.READ, REQUESTS[Command.READ].pack(Space.ACT, addr + start, n))
            parts.append(np.frombuffer(data, dtype=np.uint8).reshape(n, config.cols))
        return np.concatenate(parts) if parts else np.zeros((0, config.cols), np.uint8)

    def run(self, descriptor, *, cycles=None):
        """Execute one layer expected to take at most about ``cycles`` cycles; return the
        device's cycle count (0 from the golden model)."""
        budget = None if cycles is None else self._transport.budget(cycles)
        self.run_commands += 1
        # A residual add writes its output over an input it reads (docs/design.md).
        data = self._ok(Command.RUN, descriptor.pack(), budget=budget,
                        once=bool(descriptor.mode & Mode.ADD))
        return struct.unpack(RUN_REPLY, data)[0]

    @property
    def stored_lists(self):
        """The lists of descriptors this host stored in the device's program slots, by
        first slot."""
        size = RunDescriptor.SIZE
        return {first: [RunDescriptor.unpack(key[i:i + size])
                        for i in range(0, len(key), size)]
                for key, (first, _) in self._stored.items()}

    def run_list(self, descriptors, cycles):
        """Execute layers one after the other (``cycles``: each one's budget, as for
        :meth:`run`); return each one's cycle count. On a device with program slots, a list
        met for the first time runs as RUNs and is then stored in free slots (when they hold
        it); after that each time it is one RUNS command, whose layers must take the cycles
        they took as RUNs.

        Raises
        ------
        LinkError
            When stored layers take other cycles than they did as RUNs: the slots do not
            hold what this host stored there.
        """
        key = b"".join(d.pack() for d in descriptors)
        stored = self._stored.get(key)
        if stored is None:
            counts = [self.run(d, cycles=c) for d, c in zip(descriptors, cycles)]
            slots = len(descriptors)
            if self._next_slot + slots <= self.config.program_depth:
                words = np.zeros((slots, 1 << PROGRAM_BYTE_BITS), dtype=np.uint8)
                words[:, :RunDescriptor.SIZE] = np.frombuffer(key, dtype=np.uint8).reshape(
                    slots, RunDescriptor.SIZE)
                self.write(Space.PROGRAM, self._next_slot << PROGRAM_BYTE_BITS,
                           words.reshape(-1, 1))
                self._stored[key] = (self._next_slot, counts)
                self._next_slot += slots
            return counts
        first, counts = stored
        budget = self._transport.budget(sum(cycles))
        data = self._ok(Command.RUNS, REQUESTS[Command.RUNS].pack(first, len(descriptors)),
                        budget=budget, once=True)
        layers, elapsed = struct.unpack(RUNS_REPLY, data)
        if layers != sum(counts):
            raise LinkError(f"Stored layers in program slots {first} to "
                            f"{first + len(descriptors) - 1} took {layers} cycles, as RUNs "
                            f"{sum(counts)}: the slots do not hold what this host stored; "
                            f"open the device again and reload")
        self.runs_commands += 1
        self.runs_overhead_cycles += elapsed - layers
        return counts

    def raw(self, command, payload=b""):
        """``(status, data)`` of any request, without raising on a non-OK status."""
        return self._request(command, payload)

    def close(self):
        self._transport.close()
