"""The byte protocol between host and accelerator (see ``docs/protocol.md``).

Frames are SLIP-delimited (``END`` = 0xC0, escaped as ``ESC ESC_END``; ``ESC`` = 0xDB as
``ESC ESC_ESC``), so a lost, corrupted or duplicated byte damages at most the frames around
it and the next ``END`` resynchronises. A frame body is
``seq | command-or-status | fields... | CRC-32 (little-endian)``, the CRC being zlib's
CRC-32 over everything before it.
"""

__all__ = ["END", "ESC", "CRC_RESIDUE", "WEIGHT_TABLE_ALL_BIT", "Command", "Status", "Space", "RunDescriptor",
           "DeviceInfo", "slip_encode", "SlipDecoder", "frame", "unframe", "FrameError"]

import enum
import struct
import zlib
from dataclasses import astuple, dataclass

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
#: zlib.crc32 over a body followed by its own CRC (little-endian) always gives this value.
CRC_RESIDUE = 0x2144DF1C


class Command(enum.IntEnum):
    INFO = 0x01
    WRITE = 0x02
    READ = 0x03
    RUN = 0x04


class Status(enum.IntEnum):
    OK = 0
    CRC = 1          # the frame was damaged or cut short (checksum mismatch): send it again
    LENGTH = 2       # frame longer than the device's buffer, or fields of the wrong size
    COMMAND = 3      # unknown command
    RANGE = 4        # address, count or descriptor out of range
    SPACE = 5        # unknown or read-only address space


class Space(enum.IntEnum):
    """Address spaces a WRITE (and for ACT, a READ) targets."""
    ACT = 0            # activation banks: (bank << act_depth_bits) | word, C bytes a word
    WEIGHT = 1         # weight beats, weight_bytes a word
    REQUANT = 2        # (group << lane_bits) | lane, 10-byte requantization records
    ACT_TABLE = 3      # code, one byte (every lane)
    WEIGHT_TABLE = 4   # lane << 8 | code (bit 15 set: every lane), one byte
    THRESHOLD = 5      # ((group << lane_bits) | lane) << 8 | index, 4 bytes


#: WEIGHT_TABLE address bit that writes the entry into every lane's table.
WEIGHT_TABLE_ALL_BIT = 15


class FrameError(ValueError):
    """A received frame is malformed (bad CRC, too short)."""


def slip_encode(body):
    """``END`` + escaped ``body`` + ``END``.

    >>> slip_encode(bytes([1, 0xC0, 0xDB])).hex()
    'c001dbdcdbddc0'
    """
    out = bytearray([END])
    for byte in body:
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


class SlipDecoder:
    """Incremental SLIP decoder: feed bytes, collect complete non-empty frames."""

    def __init__(self):
        self._buf = bytearray()
        self._escape = False

    def feed(self, data):
        frames = []
        for byte in data:
            if byte == END:
                if self._buf:
                    frames.append(bytes(self._buf))
                self._buf.clear()
                self._escape = False
            elif self._escape:
                self._buf.append(END if byte == ESC_END else ESC if byte == ESC_ESC else byte)
                self._escape = False
            elif byte == ESC:
                self._escape = True
            else:
                self._buf.append(byte)
        return frames


def frame(seq, code, payload=b""):
    """Body of a frame with its CRC (before SLIP encoding)."""
    body = bytes([seq & 0xFF, int(code)]) + bytes(payload)
    return body + struct.pack("<I", zlib.crc32(body))


def unframe(body):
    """``(seq, code, payload)`` of a received body; raises :class:`FrameError`."""
    if len(body) < 6:
        raise FrameError(f"frame of {len(body)} bytes is too short")
    if zlib.crc32(body) != CRC_RESIDUE:
        raise FrameError("frame checksum mismatch")
    return body[0], body[1], bytes(body[2:-4])


@dataclass(frozen=True)
class RunDescriptor:
    """One layer for the controller (all fields little-endian, 20 bytes).

    The layer computes ``m_tiles * rows`` output rows and ``n_tiles * cols`` channels, each
    tile taking ``k_steps`` beats of ``step`` activation lanes. Activation row ``m`` is in bank
    ``m % rows`` at word ``a_base + (m // rows) * a_stride + lane // cols``; output row ``m``,
    channel tile ``nt`` is written to bank ``m % rows``, word
    ``out_base + (m // rows) * out_stride + nt``. Weight beat ``s`` of channel tile ``nt`` is
    weight word ``w_base + nt * k_steps + s``; its parameter group is ``group_base + nt``.
    """
    m_tiles: int
    n_tiles: int
    k_steps: int
    a_base: int
    a_stride: int
    step: int
    mode: int       # bit 0: N:M sparse beats; bit 1: threshold output (else requantize);
    #                 bit 2: activation table; bit 3: weight table (else codes pass through)
    w_base: int
    out_base: int
    out_stride: int
    group_base: int

    FORMAT = "<HHHHHBBHHHH"
    SIZE = struct.calcsize(FORMAT)

    MODE_SPARSE = 1
    MODE_THRESHOLD = 2
    MODE_ACT_TABLE = 4
    MODE_WEIGHT_TABLE = 8

    def pack(self):
        return struct.pack(self.FORMAT, *astuple(self))

    @classmethod
    def unpack(cls, data):
        return cls(*struct.unpack(cls.FORMAT, data))


@dataclass(frozen=True)
class DeviceInfo:
    """What an accelerator reports to INFO: everything the compiler needs."""
    version: int
    rows: int
    cols: int
    a_bits: int
    w_bits: int
    n: int              # N:M pattern (0:0 for a dense array)
    m: int
    tables: int         # 1 when dequant tables and the threshold unit are present
    threshold_bits: int
    act_depth_bits: int
    w_depth: int
    weight_bytes: int
    groups: int
    max_payload: int
    acc_bits: int

    FORMAT = "<BBBBBBBBBBHHHHB"
    SIZE = struct.calcsize(FORMAT)

    def pack(self):
        return struct.pack(self.FORMAT, *astuple(self))

    @classmethod
    def unpack(cls, data):
        if len(data) != cls.SIZE:
            raise FrameError(f"INFO reply of {len(data)} bytes, expected {cls.SIZE}")
        return cls(*struct.unpack(cls.FORMAT, data))

    @property
    def sparsity(self):
        return None if self.m == 0 else (self.n, self.m)

    @property
    def act_depth(self):
        return 1 << self.act_depth_bits
