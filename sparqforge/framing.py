"""Frames of the host link: SLIP delimiting, the body's fixed fields and its CRC-32 (see
:mod:`sparqforge.protocol`, which re-exports everything here, for the requests, replies and
their meaning)."""

__all__ = ["END", "ESC", "ESC_END", "ESC_ESC", "CRC_POLY", "CRC_INIT", "CRC_REGISTER_RESIDUE",
           "CRC_RESIDUE", "SEQ_OFFSET", "CODE_OFFSET", "FIELDS_OFFSET", "SEQ_BYTES",
           "SESSION_BYTES", "REPLY_DATA_OFFSET", "CRC_BYTES", "MIN_FRAME", "FrameError",
           "slip_encode", "SlipDecoder", "frame", "unframe", "reply_frame", "unframe_reply"]

import struct
import zlib

# ---- framing --------------------------------------------------------------------------------
END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

#: zlib's CRC-32: reflected polynomial, the register's initial value, the register after a
#: body followed by its own CRC (little-endian), and zlib's value for the same (the complement).
CRC_POLY, CRC_INIT, CRC_REGISTER_RESIDUE = 0xEDB88320, 0xFFFFFFFF, 0xDEBB20E3
CRC_RESIDUE = CRC_REGISTER_RESIDUE ^ 0xFFFFFFFF

#: Byte offsets in a frame body: the sequence number (``SEQ_BYTES``, little-endian), the
#: command (request) or status (reply), and the first byte of a request's fields. A reply's
#: session follows its status; its data start at ``REPLY_DATA_OFFSET``.
SEQ_BYTES = 4
SESSION_BYTES = 4
SEQ_OFFSET, CODE_OFFSET = 0, SEQ_BYTES
FIELDS_OFFSET = CODE_OFFSET + 1
REPLY_DATA_OFFSET = FIELDS_OFFSET + SESSION_BYTES
CRC_BYTES = 4
#: The shortest body: sequence number, code and CRC.
MIN_FRAME = FIELDS_OFFSET + CRC_BYTES



class FrameError(ValueError):
    """A received frame is malformed (bad CRC, too short)."""


# ---- SLIP and frames ------------------------------------------------------------------------
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
    """Incremental SLIP decoder: feed bytes, collect complete non-empty frames.

    >>> SlipDecoder().feed(bytes([0xC0, 1, 0xDB, 0xDC, 0xC0, 0xC0]))
    [b'\\x01\\xc0']
    """

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


def _with_crc(body):
    return body + struct.pack("<I", zlib.crc32(body))


def frame(seq, code, payload=b""):
    """A request body with its CRC (before SLIP encoding).

    >>> frame(7, 0x01).hex()   # INFO
    '07000000019b1b0503'
    """
    return _with_crc(struct.pack("<IB", seq & 0xFFFFFFFF, int(code)) + bytes(payload))


def reply_frame(seq, status, session, data=b""):
    """A reply body with its CRC."""
    return _with_crc(struct.pack("<IBI", seq & 0xFFFFFFFF, int(status), session) + bytes(data))


def _checked(body, minimum):
    if len(body) < minimum:
        raise FrameError(f"frame of {len(body)} bytes is too short")
    if zlib.crc32(body) != CRC_RESIDUE:
        raise FrameError("frame checksum mismatch")


def unframe(body):
    """``(seq, code, payload)`` of a received request body; raises :class:`FrameError`."""
    _checked(body, MIN_FRAME)
    seq, code = struct.unpack_from("<IB", body)
    return seq, code, bytes(body[FIELDS_OFFSET:-CRC_BYTES])


def unframe_reply(body):
    """``(seq, status, session, data)`` of a received reply body; raises
    :class:`FrameError`.

    >>> unframe_reply(reply_frame(9, 0, 0x1234, b"ab"))   # OK
    (9, 0, 4660, b'ab')
    """
    _checked(body, REPLY_DATA_OFFSET + CRC_BYTES)
    seq, status, session = struct.unpack_from("<IBI", body)
    return seq, status, session, bytes(body[REPLY_DATA_OFFSET:-CRC_BYTES])
