"""The golden accelerator: the command protocol executed on NumPy with the golden model.

It holds the same memories as ``hw.accelerator.Accelerator`` and gives every command the
same meaning, computing a layer with :mod:`sparqforge.sw.golden` on whole matrices instead
of tile by tile. The ``golden`` runtime backend talks to it through the same framed byte
protocol as to the RTL, so the runtime, the protocol and the controller's addressing are
all checked against an independent implementation.
"""

__all__ = ["DeviceModel"]

import struct

import numpy as np

from ... import protocol
from ...protocol import (HEADER_BYTES, OPEN_REPLY, REQUANT_RECORD, REQUESTS, RUN_REPLY,
                         RUNS_REPLY, SEQUENCED, TABLE_SPACES, Command, DeviceInfo, FrameError,
                         Mode, RunDescriptor, Space, Status, reply_frame, unframe)
from .. import golden
from . import layouts


class DeviceModel:
    """A golden accelerator with the configuration ``config`` (an
    :class:`~sparqforge.config.AcceleratorConfig`)."""

    def __init__(self, config):
        self.config = info = config
        r, c = info.rows, info.cols
        self.act = np.zeros((r, info.act_depth, c), dtype=np.int64)
        self.weights = np.zeros((info.w_depth, info.weight_bytes), dtype=np.uint8)
        self.requant = {k: np.zeros((info.groups, c), dtype=np.int64)
                        for k, _, _ in REQUANT_RECORD}
        self.act_table = np.zeros(256, dtype=np.int64)
        self.weight_table = np.zeros((c, 256), dtype=np.int64)
        self.thresholds = np.zeros((info.groups, c, info.thresholds), dtype=np.int64)
        #: Residual add tables [table, input, code] (``depthwise`` accelerators).
        self.add_tables = np.zeros((protocol.ADD_TABLES, 2, 256), dtype=np.int64)
        #: Stored RUN descriptors (``Space.PROGRAM``), 64 bytes a slot.
        self.program = np.zeros(info.program_depth << protocol.PROGRAM_BYTE_BITS,
                                dtype=np.uint8)
        self.lane_bits = info.lane_bits
        self.session = 0       # no host has opened the device since it started
        self.last_seq = 0      # the newest sequence number executed
        # The frame header as the hardware's receiver keeps it: bytes past a short frame's
        # end are what an earlier frame left there.
        self._header = bytearray(HEADER_BYTES)

    # -- protocol ---------------------------------------------------------------------
    def handle(self, body):
        """Execute one received frame body; return the reply body (or ``None`` when the
        frame is empty)."""
        if not body:
            return None
        kept = body[:HEADER_BYTES]
        self._header[:len(kept)] = kept
        seq = int.from_bytes(self._header[:4], "little")
        if len(body) > self.config.frame_bytes:
            # Longer than the receive buffer: cut, and answered LENGTH (not retried).
            return reply_frame(seq, Status.LENGTH, self.session)
        try:
            seq, command, payload = unframe(body)
        except FrameError:
            return reply_frame(seq, Status.CRC, self.session)
        try:
            status, data = self._execute(seq, command, payload)
        except _Reject as exc:
            status, data = exc.status, b""
        return reply_frame(seq, status, self.session, data)

    def _execute(self, seq, command, payload):
        if command == Command.INFO:
            return Status.OK, DeviceInfo.of(self.config).pack()
        if command == Command.OPEN:
            request = REQUESTS[Command.OPEN]
            if len(payload) != request.size:
                raise _Reject(Status.LENGTH)
            session, = struct.unpack(request.fields, payload)
            if session == 0:
                raise _Reject(Status.RANGE)
            self.session = session
            return Status.OK, struct.pack(OPEN_REPLY, self.last_seq) \
                + DeviceInfo.of(self.config).pack()
        if command == Command.RUNS and not self.config.program_depth:
            raise _Reject(Status.COMMAND)      # unknown to an accelerator without slots
        if command in SEQUENCED:
            if self.session == 0:
                raise _Reject(Status.SESSION)
            if seq <= self.last_seq:
                raise _Reject(Status.STALE)
            self.last_seq = seq
        if command == Command.WRITE:
            request = REQUESTS[Command.WRITE]
            if len(payload) < request.size:
                raise _Reject(Status.LENGTH)
            space, addr = struct.unpack_from(request.fields, payload)
            self.write(space, addr, payload[request.size:])
            return Status.OK, b""
        if command == Command.READ:
            request = REQUESTS[Command.READ]
            if len(payload) != request.size:
                raise _Reject(Status.LENGTH)
            return Status.OK, self.read(*struct.unpack(request.fields, payload))
        if command == Command.RUN:
            if len(payload) != RunDescriptor.SIZE:
                raise _Reject(Status.LENGTH)
            self.run(RunDescriptor.unpack(payload))
            return Status.OK, struct.pack(RUN_REPLY, 0)
        if command == Command.RUNS:             # (one with program slots: see above)
            request = REQUESTS[Command.RUNS]
            if len(payload) != request.size:
                raise _Reject(Status.LENGTH)
            first, count = struct.unpack(request.fields, payload)
            if count == 0 or first + count > self.config.program_depth:
                raise _Reject(Status.RANGE)
            # Slot by slot, each checked as a RUN: the first refused stops the command (the
            # slots before it have run).
            for slot in range(first, first + count):
                start = slot << protocol.PROGRAM_BYTE_BITS
                self.run(RunDescriptor.unpack(bytes(self.program[start:start
                                                                 + RunDescriptor.SIZE])))
            return Status.OK, struct.pack(RUNS_REPLY, 0, 0)
        raise _Reject(Status.COMMAND)

    # -- memories -----------------------------------------------------------------------
    def _word_bytes(self, space, addr):
        if (space not in set(Space) or (not self.config.tables and space in TABLE_SPACES)
                or (not self.config.depthwise and space == Space.ADD_TABLE)
                or (not self.config.program_depth and space == Space.PROGRAM)):
            raise _Reject(Status.SPACE)
        return protocol.word_bytes(space, self.config, addr)

    def _limit(self, space):
        return protocol.address_limit(space, self.config)

    def _addressable(self, space, addrs):
        """Whether each word address of ``space`` names a word that exists."""
        info, lanes = self.config, (1 << self.lane_bits) - 1
        ok = addrs < self._limit(space)
        if space == Space.REQUANT:
            ok &= (addrs & lanes) < info.cols
        elif space == Space.WEIGHT_TABLE:
            every = ((addrs >> protocol.WEIGHT_TABLE_ALL_BIT) & 1).astype(bool)
            lane = (addrs >> protocol.CODE_BITS) & ((1 << protocol.TABLE_LANE_BITS) - 1)
            ok &= every | (lane < info.cols)
        elif space == Space.THRESHOLD:
            ok &= ((addrs & 0xFF) < info.thresholds) & (((addrs >> 8) & lanes) < info.cols)
        elif space == Space.ACT_LANES:
            ok &= (addrs & ((1 << protocol.ACT_LANES_WORD_BITS) - 1)) < info.act_depth
        return ok

    def write(self, space, addr, data):
        """Commit whole words in order, as the hardware does: stop with RANGE at the first
        word that does not exist (the words before it stay written), and answer LENGTH after
        the whole words when bytes of a partial word are left."""
        size = self._word_bytes(space, addr)
        whole = len(data) // size
        words = np.frombuffer(bytes(data[:whole * size]), dtype=np.uint8).reshape(-1, size)
        addrs = addr + np.arange(whole, dtype=np.int64)
        bad = np.flatnonzero(~self._addressable(space, addrs))
        count = int(bad[0]) if bad.size else whole
        self._commit(space, addrs[:count], words[:count])
        if count < whole:
            raise _Reject(Status.RANGE)
        if len(data) % size:
            raise _Reject(Status.LENGTH)

    def _commit(self, space, addrs, words):
        info = self.config
        lanes = (1 << self.lane_bits) - 1
        if space == Space.ACT:
            self.act[addrs >> info.act_depth_bits, addrs & (info.act_depth - 1)] = words
        elif space == Space.ACT_ALL:
            self.act[:, addrs] = words[None]
        elif space == Space.ACT_LANES:
            count = words.shape[1]
            addrs = addrs & ((1 << protocol.ACT_LANES_WORD_BITS) - 1)
            self.act[:, addrs] = 0
            self.act[:, addrs, :count] = words[None]
        elif space == Space.WEIGHT:
            self.weights[addrs] = words
        elif space == Space.REQUANT:
            for key, value in layouts.unpack_requant(words).items():
                self.requant[key][addrs >> self.lane_bits, addrs & lanes] = value
        elif space == Space.ACT_TABLE:
            self.act_table[addrs] = _reinterpret(words[:, 0], info.a_bits, False)
        elif space == Space.WEIGHT_TABLE:
            values = _reinterpret(words[:, 0], info.w_bits, True)
            every = (addrs >> protocol.WEIGHT_TABLE_ALL_BIT) & 1
            for address, value, all_lanes in zip(addrs, values, every):
                lane = slice(None) if all_lanes else (address >> protocol.CODE_BITS) & lanes
                self.weight_table[lane, address & 0xFF] = value
        elif space == Space.ADD_TABLE:
            values = words.view("<i4")[:, 0].astype(np.int64)
            self.add_tables.reshape(-1)[addrs] = values
        elif space == Space.PROGRAM:
            self.program[addrs] = words[:, 0]
        elif space == Space.THRESHOLD:
            values = words.view("<i4")[:, 0].astype(np.int64)
            self.thresholds[addrs >> (8 + self.lane_bits), (addrs >> 8) & lanes,
                            addrs & 0xFF] = values

    def read(self, space, addr, count):
        if space != Space.ACT:
            raise _Reject(Status.SPACE)
        info = self.config
        if (count == 0 or count * info.cols > protocol.max_payload(info)
                or addr + count > self._limit(space)):
            raise _Reject(Status.RANGE)
        addrs = addr + np.arange(count)
        words = self.act[addrs >> info.act_depth_bits, addrs & (info.act_depth - 1)]
        return words.astype(np.uint8).tobytes()

    # -- a layer ------------------------------------------------------------------------
    def run(self, d):
        info = self.config
        rows, cols = info.rows, info.cols
        sparse_array = info.m != 0
        n_kept = info.n if sparse_array else 1
        conv = bool(d.mode & Mode.CONV)
        depthwise = bool(d.mode & Mode.DEPTHWISE)
        known = 0x7F if info.depthwise else 0x1F if info.conv else 0xF
        if (d.step not in ((1,) if not sparse_array else (info.n, info.m))
                or cols % d.step or d.group_base + d.n_tiles > info.groups
                or 0 in (d.m_tiles, d.n_tiles, d.k_steps)
                or d.mode & ~known or (not info.tables and d.mode & 0xE)):
            raise _Reject(Status.RANGE)
        if conv and (0 in (d.in_c, d.kw, d.out_w)
                     or (d.step != 1 and (d.step & (d.step - 1) or d.in_c % d.step))):
            raise _Reject(Status.RANGE)
        if depthwise and (not conv or d.in_c != 1):
            raise _Reject(Status.RANGE)
        add = bool(d.mode & Mode.ADD)
        if add and (not depthwise or d.table >= protocol.ADD_TABLES):
            raise _Reject(Status.RANGE)
        sparse = bool(d.mode & RunDescriptor.MODE_SPARSE)
        if sparse and (not sparse_array or d.step != info.m):
            raise _Reject(Status.RANGE)
        a = self._windows(d) if conv else self._rows(d)
        a = (self.act_table[a] if d.mode & RunDescriptor.MODE_ACT_TABLE
             else _reinterpret(a, info.a_bits, False))
        if depthwise:
            # a [m, nt, s, column]: each column its own lane of its tile's word.
            a = a.reshape(len(a), d.k_steps, d.n_tiles, cols).transpose(0, 2, 1, 3)
        # Weight beats [n_tiles, k_steps, cols, n_kept].
        first = d.w_base
        last = d.w_base + d.n_tiles * d.k_steps
        if last > info.w_depth:
            raise _Reject(Status.RANGE)
        w_codes, w_index = layouts.unpack_weight_words(self.weights[first:last], info)
        w_codes = w_codes.reshape(d.n_tiles, d.k_steps, cols, n_kept)
        w_index = w_index.reshape(d.n_tiles, d.k_steps, cols, n_kept)
        if d.mode & RunDescriptor.MODE_WEIGHT_TABLE:
            lane = np.arange(cols)[None, None, :, None]
            w_vals = self.weight_table[np.broadcast_to(lane, w_codes.shape), w_codes & 0xFF]
        else:
            w_vals = w_codes
        # Reduction position of each kept weight: index (sparse) or its slot (dense).
        slot = w_index if sparse else np.arange(n_kept)[None, None, None, :]
        k_pos = np.arange(d.k_steps)[None, :, None, None] * d.step + slot
        acc = np.zeros((d.m_tiles * rows, d.n_tiles, cols), dtype=np.int64)
        if depthwise:
            acc += np.einsum("mtsc,tsc->mtc", a, w_vals[..., 0])
        for j in range(0 if depthwise else n_kept):
            # gathered[m, nt, s, c] = a[m, k_pos[nt, s, c, j]]
            gathered = a[:, np.broadcast_to(k_pos[..., j], w_vals.shape[:3])]
            acc += np.einsum("mtsc,tsc->mtc", gathered, w_vals[..., j])
        acc = golden.wrap_signed(acc, info.acc_bits)
        if add:
            # Each byte of the accumulator indexes one input of the add table.
            table = self.add_tables[d.table]
            acc = golden.wrap_signed(table[0][acc & 0xFF] + table[1][(acc >> 8) & 0xFF], 32)
        groups = d.group_base + np.arange(d.n_tiles)
        if d.mode & RunDescriptor.MODE_THRESHOLD:
            if not info.tables:
                raise _Reject(Status.RANGE)
            t = self.thresholds[groups]                                  # [nt, cols, L]
            out = (t[None] <= acc[..., None]).sum(axis=-1)
        else:
            p = {key: value[groups][None] for key, value in self.requant.items()}
            # The requantizer keeps a zero point of a_bits + 1 signed bits (the record's
            # low bits), enough for every code of its output type.
            p["zero_point"] = golden.wrap_signed(p["zero_point"], info.a_bits + 1)
            out = golden.requantize_layer(acc, bias=p["bias"], multiplier=p["multiplier"],
                                          shift=p["shift"], zero_point=p["zero_point"],
                                          relu=p["relu"].astype(bool), out_bits=info.a_bits,
                                          out_signed=False)
        m = np.arange(d.m_tiles * rows)
        if conv:
            # Pixel m of channel tile nt -> word out_base + m * stride + nt of every bank.
            words = d.out_base + m[:, None] * d.out_stride + np.arange(d.n_tiles)[None]
            if np.any(words >= info.act_depth):
                raise _Reject(Status.RANGE)
            self.act[:, words] = out[None]
            return
        # Row m of channel tile nt -> bank m % rows, word out_base + (m // rows) * stride + nt.
        words = d.out_base + (m[:, None] // rows) * d.out_stride + np.arange(d.n_tiles)[None]
        if np.any(words >= info.act_depth):
            raise _Reject(Status.RANGE)
        self.act[(m % rows)[:, None], words] = out

    def _rows(self, d):
        """Activations ``A[m, k]`` of a matrix RUN: bank ``m % rows``, word ``a_base +
        (m // rows) * a_stride + k // cols``, lane ``k % cols``."""
        rows, cols = self.config.rows, self.config.cols
        mt = np.arange(d.m_tiles)[:, None, None]
        r = np.arange(rows)[None, :, None]
        k = np.arange(d.k_steps * d.step)[None, None, :]
        bank, word, lane = np.broadcast_arrays(r, d.a_base + mt * d.a_stride + k // cols,
                                               k % cols)
        if np.any(word >= self.config.act_depth):
            raise _Reject(Status.RANGE)
        return self.act[bank, word, lane].reshape(d.m_tiles * rows, -1)

    def _windows(self, d):
        """Activations ``A[m, e]`` of a convolution RUN: element ``e`` of output pixel ``m``'s
        window, by the walk of :class:`~sparqforge.protocol.RunDescriptor`."""
        rows, cols = self.config.rows, self.config.cols
        m = np.arange(d.m_tiles * rows)
        oy, ox = m // d.out_w, m % d.out_w
        steps = np.where(ox[:-1] < d.out_w - 1, d.x_step, d.row_step)
        pb = (d.origin + np.concatenate([[0], np.cumsum(steps)])) % (1 << 16)
        e = np.arange(d.k_steps * d.step)
        tap, c = e // d.in_c, e % d.in_c
        if d.mode & Mode.DEPTHWISE:
            # Element (s, nt, j): tap s, word nt of the pixel, lane j.
            tiles, lanes = np.arange(d.n_tiles), np.arange(cols)
            tap = np.repeat(e, d.n_tiles * cols)
            c = np.tile((tiles[:, None] * cols + lanes[None]).ravel(), len(e))
        ky, kx = tap // d.kw, tap % d.kw
        iy = (oy * d.sh - d.ph)[:, None] + ky[None]
        ix = (ox * d.sw - d.pw)[:, None] + kx[None]
        inside = (iy >= 0) & (iy < d.in_h) & (ix >= 0) & (ix < d.in_w)
        word = (pb[:, None] + (ky * d.tap_row + kx * d.a_stride + c // cols)[None]) % (1 << 16)
        if np.any(word[inside] >= self.config.act_depth):
            raise _Reject(Status.RANGE)
        bank = np.broadcast_to((m % rows)[:, None], word.shape)
        lane = np.broadcast_to((c % cols)[None], word.shape)
        codes = self.act[bank, np.where(inside, word, 0), lane]
        return np.where(inside, codes, d.pad_code)


class _Reject(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


def _reinterpret(values, bits, is_signed):
    """Low ``bits`` of stored bytes as the MAC operand type."""
    v = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v) if is_signed else v
