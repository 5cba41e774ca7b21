"""Transports that carry protocol bytes to a device, and the client that speaks to it.

The same :class:`Device` client drives the golden model (:class:`LoopbackTransport`), the
Verilated RTL (:class:`PipeTransport`, a compiled harness that does all clocking) and a
board (:class:`SerialTransport`). Only the transport changes.
"""

__all__ = ["Transport", "LoopbackTransport", "PipeTransport", "SerialTransport",
           "FaultyTransport", "Device"]

import struct
import subprocess
import time

import numpy as np

from ...errors import LinkError, ToolError
from ...protocol import (REQUESTS, RUN_REPLY, Command, DeviceInfo, FrameError, SlipDecoder,
                         Space, Status, frame, max_payload, slip_encode, unframe,
                         write_words_per_frame)


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

    def __init__(self, port, baud=115200, *, clock_hz=100e6):
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
        self._port.reset_input_buffer()
        self._port.write(data)
        deadline = time.monotonic() + budget
        received = bytearray()
        probe = SlipDecoder()
        while time.monotonic() < deadline:
            chunk = self._port.read(4096)
            if chunk:
                received += chunk
                if probe.feed(chunk):
                    break
        return bytes(received)

    def close(self):
        self._port.close()


class FaultyTransport(Transport):
    """Wraps a transport and drops, corrupts or duplicates bytes in both directions, each
    with probability ``rate`` per byte (fault-injection tests)."""

    def __init__(self, inner, *, rate, seed=0, directions=("out", "in")):
        self._inner = inner
        self._rate = rate
        self._rng = np.random.default_rng(seed)
        self._directions = directions
        self.injected = 0

    @property
    def cycles(self):
        return self._inner.cycles

    def budget(self, cycles):
        return self._inner.budget(cycles)

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

    def close(self):
        self._inner.close()


class Device:
    """Protocol client: one method per device capability, the same for every transport.

    Every request is retried (with a new sequence number) when no valid reply with its
    sequence number arrives or the device reports a damaged frame; after ``retries``
    attempts it raises :class:`~sparqforge.errors.LinkError` instead of hanging.

    Parameters
    ----------
    transport : Transport
    budget_cycles : int
        Per-request budget in device cycles (the transport turns it into seconds for a
        board); RUN takes the budget its caller computes from the layer size.
    """

    def __init__(self, transport, *, budget_cycles=2_000_000, retries=8):
        self._transport = transport
        self._budget = transport.budget(budget_cycles)
        self._retries = retries
        self._seq = 0
        self.retransmissions = 0
        self._info = None

    @property
    def transport(self):
        return self._transport

    def _request(self, command, payload=b"", *, budget=None):
        budget = self._budget if budget is None else budget
        last_problem = "no reply"
        for _ in range(self._retries):
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
            reply = self._transport.exchange(slip_encode(frame(seq, command, payload)),
                                             budget=budget)
            for body in SlipDecoder().feed(reply):
                try:
                    got_seq, status, data = unframe(body)
                except FrameError as exc:
                    last_problem = f"damaged reply ({exc})"
                    continue
                if got_seq != seq:
                    continue  # a late reply to an earlier attempt
                if status == Status.CRC:
                    last_problem = "the device received damaged frames"
                    break
                return Status(status), data
            self.retransmissions += 1
        raise LinkError(f"{Command(command).name} failed after {self._retries} attempts: "
                        f"{last_problem}; check the link (cable, baud rate, port)")

    def _ok(self, command, payload=b"", **kw):
        status, data = self._request(command, payload, **kw)
        if status != Status.OK:
            raise LinkError(f"The device rejected {Command(command).name}: {status.name}")
        return data

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
            try:
                self._info = DeviceInfo.unpack(self._ok(Command.INFO))
            except FrameError as exc:
                raise LinkError(f"The device's INFO reply is not usable: {exc}") from None
        return self._info

    @property
    def config(self):
        """The device's :class:`~sparqforge.config.AcceleratorConfig` (from INFO)."""
        return self.info().config

    def write(self, space, addr, words):
        """Write ``words`` (``[count, word_bytes]`` uint8 or bytes) from word ``addr`` on,
        split into frames that fit the device's buffer."""
        data = np.ascontiguousarray(words, dtype=np.uint8)
        word_bytes = data.shape[-1] if data.ndim > 1 else 1
        data = data.reshape(-1, word_bytes)
        per_frame = write_words_per_frame(self.config, word_bytes)
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
        data = self._ok(Command.RUN, descriptor.pack(), budget=budget)
        return struct.unpack(RUN_REPLY, data)[0]

    def raw(self, command, payload=b""):
        """``(status, data)`` of any request, without raising on a non-OK status."""
        return self._request(command, payload)

    def close(self):
        self._transport.close()
